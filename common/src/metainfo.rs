//! `.atorrent` metainfo files (PROTOCOL.md §7).
//!
//! Bencoded like BitTorrent, with SHA-256 piece hashes and an infohash that is
//! SHA-256 of the bencoded `info` dictionary, so an Anomos infohash never
//! equals a public BitTorrent one.
//!
//! Parsing uses `serde_bencode` (already the workspace's pinned bencode crate)
//! through its generic `Value`, and accepts **canonical files only**: the
//! parsed value must re-encode to exactly the input bytes (its serializer sorts
//! dictionary keys). That makes "the bytes of `info` as they appear in the
//! file" and "the canonical encoding of `info`" the same thing, so the
//! infohash is unambiguous, while unknown keys (`comment`, `created by`, …)
//! survive and are covered by the infohash. Because that parser recurses
//! without limit, a cheap scan bounds the nesting depth first.

mod create;
mod parse;

pub use create::{default_piece_length, PieceHasher};

use crate::ids::{InfoHash, Pin};
use crate::piece::Layout;
use thiserror::Error;

/// Smallest allowed piece length: one block.
pub const MIN_PIECE_LENGTH: u32 = 16 * 1024;
/// Largest allowed piece length.
pub const MAX_PIECE_LENGTH: u32 = 64 * 1024 * 1024;
/// Largest `.atorrent` accepted (a terabyte at 16 MiB pieces needs 2 MiB of
/// hashes).
pub const MAX_METAINFO_LEN: usize = 16 * 1024 * 1024;
/// Deepest list/dictionary nesting accepted (a valid file needs 4).
pub const MAX_DEPTH: usize = 32;
/// Longest path component, in bytes (common file-system limit).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Length of one piece hash (SHA-256).
pub const HASH_LEN: usize = 32;

/// Why a `.atorrent` was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetainfoError {
    /// The file is larger than [`MAX_METAINFO_LEN`].
    #[error("metainfo larger than {MAX_METAINFO_LEN} bytes")]
    TooLarge,
    /// Not bencode, or nested deeper than [`MAX_DEPTH`].
    #[error("not a bencoded file: {0}")]
    NotBencode(&'static str),
    /// Valid bencode, but not in canonical form (unsorted or duplicate keys,
    /// leading zeros, trailing bytes).
    #[error("bencode is not canonical")]
    NonCanonical,
    /// A required key is absent.
    #[error("missing key `{0}`")]
    MissingKey(&'static str),
    /// A key holds the wrong type of value (or a string is not UTF-8).
    #[error("key `{0}` has the wrong type")]
    WrongType(&'static str),
    /// `announce` is not an `https://` URL with a host.
    #[error("announce URL must be https:// with a host")]
    AnnounceNotHttps,
    /// `pin` is not 32 bytes.
    #[error("tracker pin must be 32 bytes")]
    BadPin,
    /// `piece length` is not a power of two in the allowed range.
    #[error("piece length {0} is not a power of two between 16 KiB and 64 MiB")]
    BadPieceLength(i64),
    /// `pieces` is not a whole number of 32-byte hashes.
    #[error("pieces is not a multiple of 32 bytes")]
    BadPiecesLength,
    /// The number of hashes does not match the total size.
    #[error("{got} piece hashes for a torrent of {expected} pieces")]
    PieceCount {
        /// Pieces the total size needs.
        expected: u64,
        /// Hashes present.
        got: u64,
    },
    /// Both `length` and `files`, or neither.
    #[error("info must have exactly one of `length` and `files`")]
    LengthOrFiles,
    /// A negative file length.
    #[error("negative file length")]
    NegativeLength,
    /// A name or path component that could escape the download directory or
    /// is unusable as a file name.
    #[error("bad path component: {0}")]
    BadPath(&'static str),
    /// Two files with the same path, or a file used as another's directory.
    #[error("duplicate or conflicting file paths")]
    DuplicatePath,
    /// `files` is an empty list.
    #[error("torrent has no files")]
    NoFiles,
    /// All files are empty.
    #[error("torrent has total size 0")]
    Empty,
    /// The total size does not fit in 64 bits.
    #[error("total size overflows")]
    Overflow,
}

impl MetainfoError {
    /// Coarse kind for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MetainfoError::TooLarge => "too_large",
            MetainfoError::NotBencode(_) | MetainfoError::NonCanonical => "encoding",
            MetainfoError::MissingKey(_) | MetainfoError::WrongType(_) => "structure",
            MetainfoError::AnnounceNotHttps | MetainfoError::BadPin => "tracker",
            _ => "content",
        }
    }
}

/// One file of a torrent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileEntry {
    /// Path components below the torrent's directory; for a single-file
    /// torrent, just `[name]`.
    pub path: Vec<String>,
    /// Size in bytes.
    pub length: u64,
}

/// A parsed, validated `.atorrent`.
#[derive(Clone, PartialEq, Eq)]
pub struct Metainfo {
    announce: String,
    pin: Option<Pin>,
    name: String,
    piece_length: u32,
    pieces: Vec<[u8; HASH_LEN]>,
    /// False for a single-file torrent (its one file is `[name]`).
    multi: bool,
    files: Vec<FileEntry>,
    layout: Layout,
    info_hash: InfoHash,
    /// The canonical file bytes: `to_bytes` returns them unchanged, unknown
    /// keys included.
    raw: Vec<u8>,
}

impl std::fmt::Debug for Metainfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No name or infohash: both identify what a user downloads.
        write!(
            f,
            "Metainfo(files={}, pieces={}, piece_length={})",
            self.files.len(),
            self.pieces.len(),
            self.piece_length
        )
    }
}

impl Metainfo {
    /// Parse and validate a `.atorrent`. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetainfoError> {
        parse::parse(bytes)
    }

    /// The file bytes (canonical bencode).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.raw.clone()
    }

    /// SHA-256 of the bencoded `info` dictionary.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// The tracker's base URL (`https://…`); the API paths of §8 are appended.
    pub fn announce(&self) -> &str {
        &self.announce
    }

    /// The tracker certificate pin, if the torrent carries one.
    pub fn pin(&self) -> Option<Pin> {
        self.pin
    }

    /// Suggested name of the file (single-file) or directory (multi-file).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes per piece (the last piece may be shorter).
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// SHA-256 of every piece, in order.
    pub fn piece_hashes(&self) -> &[[u8; HASH_LEN]] {
        &self.pieces
    }

    /// Whether this is a multi-file torrent (files live under `name/`).
    pub fn is_multi_file(&self) -> bool {
        self.multi
    }

    /// The files in storage order.
    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    /// Sum of all file lengths.
    pub fn total_length(&self) -> u64 {
        self.layout.total_length()
    }

    /// The piece geometry of this torrent.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}
