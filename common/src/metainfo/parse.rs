//! Parsing and validation of `.atorrent` bytes.
//!
//! Order of checks: size, nesting depth, bencode syntax, canonical form,
//! then structure and content. Every failure is a typed [`MetainfoError`].

use super::{
    FileEntry, Metainfo, MetainfoError, HASH_LEN, MAX_COMPONENT_LEN, MAX_DEPTH, MAX_METAINFO_LEN,
    MAX_PIECE_LENGTH, MIN_PIECE_LENGTH,
};
use crate::ids::{InfoHash, Pin};
use crate::piece::{Layout, LayoutError};
use serde_bencode::value::Value;
use std::collections::HashMap;

type Dict = HashMap<Vec<u8>, Value>;

pub(super) fn parse(bytes: &[u8]) -> Result<Metainfo, MetainfoError> {
    if bytes.len() > MAX_METAINFO_LEN {
        return Err(MetainfoError::TooLarge);
    }
    check_depth(bytes)?;
    let value: Value =
        serde_bencode::from_bytes(bytes).map_err(|_| MetainfoError::NotBencode("syntax"))?;
    let again = serde_bencode::to_bytes(&value).map_err(|_| MetainfoError::NonCanonical)?;
    if again != bytes {
        return Err(MetainfoError::NonCanonical);
    }
    let Value::Dict(top) = &value else {
        return Err(MetainfoError::WrongType("<root>"));
    };

    let announce = text(top, "announce")?;
    check_announce(&announce)?;
    let pin = match top.get(b"pin".as_slice()) {
        None => None,
        Some(Value::Bytes(b)) => Some(Pin(b
            .as_slice()
            .try_into()
            .map_err(|_| MetainfoError::BadPin)?)),
        Some(_) => return Err(MetainfoError::BadPin),
    };

    let info_value = top
        .get(b"info".as_slice())
        .ok_or(MetainfoError::MissingKey("info"))?;
    let Value::Dict(info) = info_value else {
        return Err(MetainfoError::WrongType("info"));
    };
    // The file is canonical, so this is exactly the `info` bytes in the file.
    let info_bytes =
        serde_bencode::to_bytes(info_value).map_err(|_| MetainfoError::NonCanonical)?;
    let info_hash = InfoHash(crate::crypto::sha256(&info_bytes));

    let name = text(info, "name")?;
    check_component(&name)?;
    let piece_length = int(info, "piece length")?;
    let piece_length = u32::try_from(piece_length)
        .ok()
        .filter(|p| p.is_power_of_two() && (MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(p))
        .ok_or(MetainfoError::BadPieceLength(piece_length))?;
    let pieces = match info.get(b"pieces".as_slice()) {
        Some(Value::Bytes(b)) => b,
        Some(_) => return Err(MetainfoError::WrongType("pieces")),
        None => return Err(MetainfoError::MissingKey("pieces")),
    };
    if pieces.len() % HASH_LEN != 0 {
        return Err(MetainfoError::BadPiecesLength);
    }
    let pieces: Vec<[u8; HASH_LEN]> = pieces
        .chunks_exact(HASH_LEN)
        .map(|c| {
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(c);
            h
        })
        .collect();

    let (multi, files) = match (
        info.get(b"length".as_slice()),
        info.get(b"files".as_slice()),
    ) {
        (Some(_), None) => {
            let length = length_of(int(info, "length")?)?;
            (
                false,
                vec![FileEntry {
                    path: vec![name.clone()],
                    length,
                }],
            )
        }
        (None, Some(Value::List(list))) => (true, parse_files(list)?),
        (None, Some(_)) => return Err(MetainfoError::WrongType("files")),
        _ => return Err(MetainfoError::LengthOrFiles),
    };

    let layout = Layout::new(piece_length, files.iter().map(|f| f.length).collect()).map_err(
        |e| match e {
            LayoutError::Empty => MetainfoError::Empty,
            LayoutError::Overflow => MetainfoError::Overflow,
            LayoutError::BadPieceLength => MetainfoError::BadPieceLength(piece_length.into()),
        },
    )?;
    if u64::from(layout.piece_count()) != pieces.len() as u64 {
        return Err(MetainfoError::PieceCount {
            expected: layout.piece_count().into(),
            got: pieces.len() as u64,
        });
    }

    Ok(Metainfo {
        announce,
        pin,
        name,
        piece_length,
        pieces,
        multi,
        files,
        layout,
        info_hash,
        raw: bytes.to_vec(),
    })
}

/// The `files` list of a multi-file torrent.
fn parse_files(list: &[Value]) -> Result<Vec<FileEntry>, MetainfoError> {
    if list.is_empty() {
        return Err(MetainfoError::NoFiles);
    }
    let mut files = Vec::with_capacity(list.len());
    for entry in list {
        let Value::Dict(d) = entry else {
            return Err(MetainfoError::WrongType("files"));
        };
        let length = length_of(int(d, "length")?)?;
        let Some(Value::List(parts)) = d.get(b"path".as_slice()) else {
            return Err(match d.get(b"path".as_slice()) {
                None => MetainfoError::MissingKey("path"),
                Some(_) => MetainfoError::WrongType("path"),
            });
        };
        if parts.is_empty() {
            return Err(MetainfoError::BadPath("empty path"));
        }
        let mut path = Vec::with_capacity(parts.len());
        for p in parts {
            let Value::Bytes(b) = p else {
                return Err(MetainfoError::WrongType("path"));
            };
            let s = String::from_utf8(b.clone()).map_err(|_| MetainfoError::WrongType("path"))?;
            check_component(&s)?;
            path.push(s);
        }
        files.push(FileEntry { path, length });
    }
    check_unique(&files)?;
    Ok(files)
}

/// No two files share a path, and no file is another one's directory.
/// After sorting, any conflict shows up between neighbours.
pub(super) fn check_unique(files: &[FileEntry]) -> Result<(), MetainfoError> {
    let mut paths: Vec<&[String]> = files.iter().map(|f| f.path.as_slice()).collect();
    paths.sort();
    for pair in paths.windows(2) {
        if let [a, b] = pair {
            if b.starts_with(a) {
                return Err(MetainfoError::DuplicatePath);
            }
        }
    }
    Ok(())
}

/// A name or path component must stay inside the download directory and be
/// a usable file name on common systems.
pub(super) fn check_component(c: &str) -> Result<(), MetainfoError> {
    if c.is_empty() {
        return Err(MetainfoError::BadPath("empty component"));
    }
    if c == "." || c == ".." {
        return Err(MetainfoError::BadPath("dot component"));
    }
    if c.contains(['/', '\\']) {
        return Err(MetainfoError::BadPath("path separator"));
    }
    if c.chars().any(char::is_control) {
        return Err(MetainfoError::BadPath("control character"));
    }
    if c.len() > MAX_COMPONENT_LEN {
        return Err(MetainfoError::BadPath("component too long"));
    }
    Ok(())
}

/// `https://` followed by a non-empty host, no whitespace or controls.
pub(super) fn check_announce(url: &str) -> Result<(), MetainfoError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or(MetainfoError::AnnounceNotHttps)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty()
        || host.starts_with(':')
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(MetainfoError::AnnounceNotHttps);
    }
    Ok(())
}

fn length_of(v: i64) -> Result<u64, MetainfoError> {
    u64::try_from(v).map_err(|_| MetainfoError::NegativeLength)
}

fn text(d: &Dict, key: &'static str) -> Result<String, MetainfoError> {
    match d.get(key.as_bytes()) {
        Some(Value::Bytes(b)) => {
            String::from_utf8(b.clone()).map_err(|_| MetainfoError::WrongType(key))
        }
        Some(_) => Err(MetainfoError::WrongType(key)),
        None => Err(MetainfoError::MissingKey(key)),
    }
}

fn int(d: &Dict, key: &'static str) -> Result<i64, MetainfoError> {
    match d.get(key.as_bytes()) {
        Some(Value::Int(i)) => Ok(*i),
        Some(_) => Err(MetainfoError::WrongType(key)),
        None => Err(MetainfoError::MissingKey(key)),
    }
}

/// Bound the nesting depth before handing bytes to the recursive parser.
/// A light scan: it skips strings and integers and counts `l`/`d`/`e`; it
/// does not validate (the real parser does), it only refuses what would
/// nest too deep or is obviously not bencode.
fn check_depth(bytes: &[u8]) -> Result<(), MetainfoError> {
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'l' | b'd' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(MetainfoError::NotBencode("nested too deep"));
                }
                i += 1;
            }
            b'e' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'i' => {
                let end = bytes[i..].iter().position(|&c| c == b'e');
                i = end.map_or(bytes.len(), |e| i + e + 1);
            }
            b'0'..=b'9' => {
                let colon = bytes[i..]
                    .iter()
                    .take(21)
                    .position(|&c| c == b':')
                    .ok_or(MetainfoError::NotBencode("syntax"))?;
                let len: usize = std::str::from_utf8(&bytes[i..i + colon])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(MetainfoError::NotBencode("syntax"))?;
                i = i.saturating_add(colon + 1).saturating_add(len);
            }
            _ => return Err(MetainfoError::NotBencode("syntax")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A bencoded string.
    fn s(b: &[u8]) -> Vec<u8> {
        let mut out = format!("{}:", b.len()).into_bytes();
        out.extend_from_slice(b);
        out
    }

    /// A single-file torrent with `info` entries given as already-encoded
    /// `(key, value)` pairs (sorted by the caller).
    fn file(announce: &str, info: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"d8:announce".to_vec();
        out.extend(s(announce.as_bytes()));
        out.extend(b"4:infod");
        for (k, v) in info {
            out.extend(s(k.as_bytes()));
            out.extend(v);
        }
        out.extend(b"ee");
        out
    }

    fn good_info(length: &str) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("length", format!("i{length}e").into_bytes()),
            ("name", s(b"f")),
            ("piece length", b"i16384e".to_vec()),
            ("pieces", s(&[0u8; 32])),
        ]
    }

    fn err(bytes: &[u8]) -> MetainfoError {
        Metainfo::from_bytes(bytes).expect_err("must be refused")
    }

    #[test]
    fn minimal_file_parses() {
        let m = Metainfo::from_bytes(&file("https://t", &good_info("5"))).expect("parse");
        assert_eq!(m.total_length(), 5);
        assert_eq!(m.pin(), None);
    }

    #[test]
    fn each_rule_has_its_error() {
        use MetainfoError as E;
        assert_eq!(err(b"not bencode"), E::NotBencode("syntax"));
        assert_eq!(err(&[b'l'; 100]), E::NotBencode("nested too deep"));
        assert_eq!(err(b"le"), E::WrongType("<root>"));
        assert_eq!(err(b"de"), E::MissingKey("announce"));
        assert_eq!(err(&file("http://t", &good_info("5"))), E::AnnounceNotHttps);
        assert_eq!(err(&file("https://", &good_info("5"))), E::AnnounceNotHttps);
        assert_eq!(
            err(&file("https:// t", &good_info("5"))),
            E::AnnounceNotHttps
        );
        // Non-canonical: unsorted keys, leading zero, trailing bytes.
        let mut info = good_info("5");
        info.swap(0, 1);
        assert_eq!(err(&file("https://t", &info)), E::NonCanonical);
        assert_eq!(err(&file("https://t", &good_info("05"))), E::NonCanonical);
        let mut trailing = file("https://t", &good_info("5"));
        trailing.push(b'e');
        assert!(Metainfo::from_bytes(&trailing).is_err());
        assert_eq!(err(&file("https://t", &good_info("-5"))), E::NegativeLength);
        assert_eq!(err(&file("https://t", &good_info("0"))), E::Empty);
        assert_eq!(
            err(&file("https://t", &good_info("16385"))),
            E::PieceCount {
                expected: 2,
                got: 1
            }
        );
        let mut info = good_info("5");
        info[2].1 = b"i20000e".to_vec();
        assert_eq!(err(&file("https://t", &info)), E::BadPieceLength(20000));
        let mut info = good_info("5");
        info[2].1 = b"i8192e".to_vec();
        assert_eq!(err(&file("https://t", &info)), E::BadPieceLength(8192));
        let mut info = good_info("5");
        info[3].1 = s(&[0u8; 33]);
        assert_eq!(err(&file("https://t", &info)), E::BadPiecesLength);
        for bad in [&b".."[..], b".", b"", b"a/b", b"a\\b", b"a\nb"] {
            let mut info = good_info("5");
            info[1].1 = s(bad);
            assert!(
                matches!(err(&file("https://t", &info)), E::BadPath(_)),
                "{bad:?}"
            );
        }
        let mut info = good_info("5");
        info[1].1 = s(&[0xff]);
        assert_eq!(err(&file("https://t", &info)), E::WrongType("name"));
        let mut info = good_info("5");
        info.remove(0);
        assert_eq!(err(&file("https://t", &info)), E::LengthOrFiles);
        assert_eq!(err(&file("https://t", &info[..2])), E::MissingKey("pieces"));
    }

    fn multi(files: &str) -> Vec<u8> {
        let info = vec![
            ("files", files.as_bytes().to_vec()),
            ("name", s(b"d")),
            ("piece length", b"i16384e".to_vec()),
            ("pieces", s(&[0u8; 32])),
        ];
        file("https://t", &info)
    }

    #[test]
    fn multi_file_rules() {
        use MetainfoError as E;
        assert!(
            Metainfo::from_bytes(&multi("ld6:lengthi1e4:pathl1:aeed6:lengthi1e4:pathl1:beee"))
                .is_ok()
        );
        assert_eq!(err(&multi("le")), E::NoFiles);
        assert_eq!(
            err(&multi("ld6:lengthi1e4:pathleee")),
            E::BadPath("empty path")
        );
        assert_eq!(
            err(&multi("ld6:lengthi1e4:pathl2:..eee")),
            E::BadPath("dot component")
        );
        assert_eq!(
            err(&multi("ld6:lengthi1e4:pathl1:aeed6:lengthi1e4:pathl1:aeee")),
            E::DuplicatePath
        );
        assert_eq!(
            err(&multi(
                "ld6:lengthi1e4:pathl1:aeed6:lengthi1e4:pathl1:a1:beee"
            )),
            E::DuplicatePath
        );
        assert_eq!(
            err(&multi("ld6:lengthi9223372036854775807e4:pathl1:aeed6:lengthi9223372036854775807e4:pathl1:beed6:lengthi9e4:pathl1:ceee")),
            E::Overflow
        );
        assert_eq!(err(&multi("ld4:pathl1:aeee")), E::MissingKey("length"));
        assert_eq!(err(&multi("i1e")), E::WrongType("files"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Metainfo::from_bytes(&bytes);
        }

        #[test]
        fn mutated_files_never_panic(pos in any::<usize>(), byte in any::<u8>()) {
            let mut f = file("https://t", &good_info("5"));
            let i = pos % f.len();
            f[i] = byte;
            if let Ok(m) = Metainfo::from_bytes(&f) {
                prop_assert_eq!(m.to_bytes(), f);
            }
        }
    }
}
