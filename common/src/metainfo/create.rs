//! Making `.atorrent` files: piece hashing and canonical encoding.
//!
//! Hashing file data is I/O-bound, so the caller (the peer's `make-torrent`)
//! reads the files and feeds their bytes, in storage order, to a
//! [`PieceHasher`]; [`Metainfo::create`] then only encodes.

use super::parse::{check_announce, check_component, check_unique};
use super::{FileEntry, Metainfo, MetainfoError, HASH_LEN, MAX_PIECE_LENGTH, MIN_PIECE_LENGTH};
use crate::ids::Pin;
use openssl::sha::Sha256;
use serde_bencode::value::Value;
use std::collections::HashMap;

/// Largest piece length [`default_piece_length`] picks.
const DEFAULT_MAX_PIECE: u32 = 16 * 1024 * 1024;
/// [`default_piece_length`] keeps the piece count at or below this.
const TARGET_MAX_PIECES: u64 = 2000;

/// A piece length for a torrent of `total` bytes: the smallest power of two
/// between 16 KiB and 16 MiB that gives at most 2000 pieces, so a torrent
/// has 1000–2000 pieces unless it is very small or very large. Fewer pieces
/// mean a smaller file and bitfield; more mean finer-grained swarming.
pub fn default_piece_length(total: u64) -> u32 {
    let mut pl = MIN_PIECE_LENGTH;
    while pl < DEFAULT_MAX_PIECE && total.div_ceil(u64::from(pl)) > TARGET_MAX_PIECES {
        pl *= 2;
    }
    pl
}

/// Consumes a byte stream and emits one SHA-256 per `piece_length` bytes
/// (the last piece may be shorter).
#[derive(Clone)]
pub struct PieceHasher {
    piece_length: u64,
    current: Sha256,
    filled: u64,
    total: u64,
    hashes: Vec<[u8; HASH_LEN]>,
}

impl std::fmt::Debug for PieceHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PieceHasher(pieces={}, total={})",
            self.hashes.len(),
            self.total
        )
    }
}

impl PieceHasher {
    /// A hasher cutting pieces of `piece_length` bytes.
    pub fn new(piece_length: u32) -> Self {
        Self {
            piece_length: u64::from(piece_length.max(1)),
            current: Sha256::new(),
            filled: 0,
            total: 0,
            hashes: Vec::new(),
        }
    }

    /// Feed the next bytes of the stream (any chunking gives the same result).
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.piece_length - self.filled;
            let take = usize::try_from(room).map_or(data.len(), |r| r.min(data.len()));
            let (now, rest) = data.split_at(take);
            self.current.update(now);
            self.filled += take as u64;
            self.total += take as u64;
            data = rest;
            if self.filled == self.piece_length {
                let done = std::mem::replace(&mut self.current, Sha256::new());
                self.hashes.push(done.finish());
                self.filled = 0;
            }
        }
    }

    /// Bytes fed so far.
    pub fn total_length(&self) -> u64 {
        self.total
    }

    /// The piece hashes, including a short last piece.
    pub fn finish(mut self) -> Vec<[u8; HASH_LEN]> {
        if self.filled > 0 {
            self.hashes.push(self.current.finish());
        }
        self.hashes
    }
}

fn bytes(s: &[u8]) -> Value {
    Value::Bytes(s.to_vec())
}

/// Bencode integers are signed 64-bit.
fn int(v: u64) -> Result<Value, MetainfoError> {
    i64::try_from(v)
        .map(Value::Int)
        .map_err(|_| MetainfoError::Overflow)
}

impl Metainfo {
    /// Build a `.atorrent`. `files` lists `(path components, length)` in
    /// storage order; a single entry with an **empty** path makes a
    /// single-file torrent whose file is called `name`. `piece_hashes` come
    /// from a [`PieceHasher`] fed the files' bytes in the same order.
    /// The result is validated exactly like a parsed file.
    pub fn create(
        files: &[(Vec<String>, u64)],
        name: &str,
        piece_length: u32,
        piece_hashes: Vec<[u8; HASH_LEN]>,
        announce: &str,
        pin: Option<Pin>,
    ) -> Result<Metainfo, MetainfoError> {
        check_announce(announce)?;
        check_component(name)?;
        if !piece_length.is_power_of_two()
            || !(MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&piece_length)
        {
            return Err(MetainfoError::BadPieceLength(piece_length.into()));
        }
        let mut info: HashMap<Vec<u8>, Value> = HashMap::new();
        info.insert(b"name".to_vec(), bytes(name.as_bytes()));
        info.insert(b"piece length".to_vec(), int(piece_length.into())?);
        info.insert(b"pieces".to_vec(), Value::Bytes(piece_hashes.concat()));
        match files {
            [] => return Err(MetainfoError::NoFiles),
            [(path, length)] if path.is_empty() => {
                info.insert(b"length".to_vec(), int(*length)?);
            }
            _ => {
                let mut list = Vec::with_capacity(files.len());
                let mut entries = Vec::with_capacity(files.len());
                for (path, length) in files {
                    if path.is_empty() {
                        return Err(MetainfoError::BadPath("empty path"));
                    }
                    for c in path {
                        check_component(c)?;
                    }
                    let mut d = HashMap::new();
                    d.insert(b"length".to_vec(), int(*length)?);
                    d.insert(
                        b"path".to_vec(),
                        Value::List(path.iter().map(|c| bytes(c.as_bytes())).collect()),
                    );
                    list.push(Value::Dict(d));
                    entries.push(FileEntry {
                        path: path.clone(),
                        length: *length,
                    });
                }
                check_unique(&entries)?;
                info.insert(b"files".to_vec(), Value::List(list));
            }
        }
        let mut top: HashMap<Vec<u8>, Value> = HashMap::new();
        top.insert(b"announce".to_vec(), bytes(announce.as_bytes()));
        top.insert(b"info".to_vec(), Value::Dict(info));
        if let Some(pin) = pin {
            top.insert(b"pin".to_vec(), bytes(&pin.0));
        }
        let encoded =
            serde_bencode::to_bytes(&Value::Dict(top)).map_err(|_| MetainfoError::NonCanonical)?;
        Metainfo::from_bytes(&encoded)
    }

    /// Whether `data` is piece `index` (by its SHA-256).
    pub fn check_piece(&self, index: u32, data: &[u8]) -> bool {
        let expected_len = self.layout().piece_len(index);
        match (self.pieces.get(index as usize), expected_len) {
            (Some(h), Some(len)) => {
                data.len() as u64 == u64::from(len) && crate::crypto::sha256(data) == *h
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testvec::Vector;
    use proptest::prelude::*;

    /// Hash `data` fed in uneven chunks.
    fn hash(piece_length: u32, data: &[u8]) -> Vec<[u8; HASH_LEN]> {
        let mut h = PieceHasher::new(piece_length);
        for chunk in data.chunks(7919) {
            h.update(chunk);
        }
        assert_eq!(h.total_length(), data.len() as u64);
        h.finish()
    }

    /// SHA-256 of the `info` value, located in the raw bytes independently
    /// of the parser: it starts after `4:info` and ends where the next
    /// top-level key (`3:pin`) or the closing `e` begins.
    fn raw_info_hash(file: &[u8], has_pin: bool) -> [u8; 32] {
        let start = file.windows(6).position(|w| w == b"4:info").expect("info") + 6;
        let end = if has_pin {
            file.windows(5).rposition(|w| w == b"3:pin").expect("pin")
        } else {
            file.len() - 1
        };
        crate::crypto::sha256(&file[start..end])
    }

    #[test]
    fn single_file_vector() {
        let v = Vector::load("atorrent_single");
        let data = b"hello, anomos\n";
        let hashes = hash(16384, data);
        assert_eq!(hashes, vec![crate::crypto::sha256(data)]);
        let m = Metainfo::create(
            &[(vec![], data.len() as u64)],
            "hello.txt",
            16384,
            hashes,
            "https://tracker.example:8443",
            Some(Pin([0xab; 32])),
        )
        .expect("create");
        assert_eq!(hex::encode(m.to_bytes()), v.str("torrent"));
        assert_eq!(m.info_hash().to_hex(), v.str("infohash"));
        // Decode direction.
        let file = v.bytes("torrent");
        let back = Metainfo::from_bytes(&file).expect("parse");
        assert_eq!(back, m);
        assert_eq!(back.info_hash().0, raw_info_hash(&file, true));
        assert_eq!(back.name(), "hello.txt");
        assert!(!back.is_multi_file());
        assert_eq!(back.pin(), Some(Pin([0xab; 32])));
        assert_eq!(back.announce(), "https://tracker.example:8443");
        assert_eq!(back.total_length(), 14);
        assert!(back.check_piece(0, data));
        assert!(!back.check_piece(0, b"hello, anomos?"));
        assert!(!back.check_piece(1, data));
    }

    fn multi_data() -> Vec<u8> {
        let mut data = vec![b'a'; 20000];
        data.extend(vec![b'b'; 30000]);
        data
    }

    #[test]
    fn multi_file_vector() {
        let v = Vector::load("atorrent_multi");
        let data = multi_data();
        let files = vec![
            (vec!["a.txt".to_string()], 20000),
            (vec!["sub".to_string(), "b.bin".to_string()], 30000),
        ];
        let m = Metainfo::create(
            &files,
            "album",
            16384,
            hash(16384, &data),
            "https://tracker.example",
            None,
        )
        .expect("create");
        assert_eq!(hex::encode(m.to_bytes()), v.str("torrent"));
        assert_eq!(m.info_hash().to_hex(), v.str("infohash"));
        let file = v.bytes("torrent");
        let back = Metainfo::from_bytes(&file).expect("parse");
        assert_eq!(back, m);
        assert_eq!(back.info_hash().0, raw_info_hash(&file, false));
        assert!(back.is_multi_file());
        assert_eq!(back.files()[1].path, vec!["sub", "b.bin"]);
        assert_eq!(back.layout().piece_count(), 4);
        for (i, piece) in data.chunks(16384).enumerate() {
            assert!(back.check_piece(i as u32, piece));
        }
    }

    #[test]
    fn default_piece_length_targets_1000_to_2000_pieces() {
        assert_eq!(default_piece_length(0), 16384);
        assert_eq!(default_piece_length(1), 16384);
        assert_eq!(default_piece_length(2000 * 16384), 16384);
        assert_eq!(default_piece_length(2000 * 16384 + 1), 32768);
        assert_eq!(default_piece_length(u64::MAX), 16 * 1024 * 1024);
        for total in [100u64 << 20, 700 << 20, 4 << 30, 20 << 30] {
            let pl = default_piece_length(total);
            let n = total.div_ceil(u64::from(pl));
            assert!(
                pl.is_power_of_two() && (1000..=2000).contains(&n),
                "{total}: {pl} {n}"
            );
        }
    }

    #[test]
    fn hasher_cuts_exact_pieces() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let hashes = hash(16384, &data);
        let direct: Vec<_> = data.chunks(16384).map(crate::crypto::sha256).collect();
        assert_eq!(hashes, direct);
        assert!(PieceHasher::new(16384).finish().is_empty());
    }

    fn arb_component() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 _.-]{1,12}".prop_filter("dot names", |s| s != "." && s != "..")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn create_parse_round_trip(
            name in arb_component(),
            shift in 14u32..17,
            files in proptest::collection::btree_map(
                proptest::collection::vec(arb_component(), 1..3), 0u64..100_000, 1..5),
            single in any::<bool>(),
            pin in proptest::option::of(any::<[u8; 32]>()),
        ) {
            let pl = 1u32 << shift;
            let mut files: Vec<(Vec<String>, u64)> = files.into_iter().collect();
            if single {
                files.truncate(1);
                files[0].0.clear();
            }
            let total: u64 = files.iter().map(|f| f.1).sum();
            let hashes = vec![[7u8; 32]; total.div_ceil(u64::from(pl)) as usize];
            let made = Metainfo::create(&files, &name, pl, hashes, "https://t.example/x", pin.map(Pin));
            let m = match made {
                Ok(m) => m,
                Err(e) => {
                    // Only legitimately refused inputs: nothing to share, or
                    // one path used as another's directory.
                    prop_assert!(matches!(e, MetainfoError::Empty | MetainfoError::DuplicatePath), "{e:?}");
                    return Ok(());
                }
            };
            let bytes = m.to_bytes();
            let back = Metainfo::from_bytes(&bytes).expect("parse");
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.total_length(), total);
            prop_assert_eq!(back.files().len(), files.len());
            for cut in (0..bytes.len()).step_by(7) {
                prop_assert!(Metainfo::from_bytes(&bytes[..cut]).is_err());
            }
        }
    }
}
