//! The types of the contract with the Swarm actor: tunables, conn ids,
//! actions, counters and the fixed set of reasons the core closes conns
//! with.
//!
//! The reasons become metric labels, so they are a small closed set of
//! `&'static str` that never carries anything about the remote; the stats
//! likewise hold only counts keyed by the actor's own ids.

use anomos_common::peerwire::{Handshake, Message};
use std::time::Duration;

/// Why the core closed a conn: a fixed set, safe as a metric label.
pub mod reason {
    /// A message arrived before the remote's handshake.
    pub const BEFORE_HANDSHAKE: &str = "before_handshake";
    /// A second handshake.
    pub const HANDSHAKE_TWICE: &str = "handshake_twice";
    /// The handshake names another torrent.
    pub const WRONG_INFOHASH: &str = "wrong_infohash";
    /// The handshake names another protocol version.
    pub const WRONG_VERSION: &str = "wrong_version";
    /// A bitfield that was not the first message after the handshake.
    pub const BITFIELD_LATE: &str = "bitfield_late";
    /// A bitfield of the wrong size or with spare bits set.
    pub const BAD_BITFIELD: &str = "bad_bitfield";
    /// A have naming a piece outside the torrent.
    pub const HAVE_OUT_OF_RANGE: &str = "have_out_of_range";
    /// A request or cancel that is not exactly one block of the torrent.
    pub const BAD_REQUEST: &str = "bad_request";
    /// A request for a piece we have not announced.
    pub const REQUEST_MISSING_PIECE: &str = "request_missing_piece";
    /// A request while we choke the remote, beyond the grace period.
    pub const REQUEST_WHILE_CHOKED: &str = "request_while_choked";
    /// More requests waiting for storage than the protocol allows.
    pub const REQUEST_FLOOD: &str = "request_flood";
    /// A piece message that is not exactly one block of the torrent.
    pub const BAD_BLOCK: &str = "bad_block";
    /// Too many blocks we never asked for.
    pub const UNREQUESTED_PIECE: &str = "unrequested_piece";
    /// Took part in pieces that failed their hash (banned for good).
    pub const BAD_PIECE: &str = "bad_piece";
    /// Nothing received for `idle_timeout`.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// `add_conn` with an id that was banned.
    pub const BANNED: &str = "banned";
    /// We verified our last piece and the remote has every piece too:
    /// nothing left to exchange, and an idle circuit only costs its
    /// relays. Not a violation.
    pub const BOTH_COMPLETE: &str = "both_complete";
    /// Every reason above, for pre-registering metric labels.
    pub const ALL: [&str; 17] = [
        BEFORE_HANDSHAKE,
        HANDSHAKE_TWICE,
        WRONG_INFOHASH,
        WRONG_VERSION,
        BITFIELD_LATE,
        BAD_BITFIELD,
        HAVE_OUT_OF_RANGE,
        BAD_REQUEST,
        REQUEST_MISSING_PIECE,
        REQUEST_WHILE_CHOKED,
        REQUEST_FLOOD,
        BAD_BLOCK,
        UNREQUESTED_PIECE,
        BAD_PIECE,
        IDLE_TIMEOUT,
        BANNED,
        BOTH_COMPLETE,
    ];
}

/// Tunables of the core. The defaults match the protocol limits of
/// PROTOCOL.md §9 (64 outstanding requests, 10 s choke grace).
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// Most block requests outstanding per conn. Must not exceed the
    /// remote's `max_uploads_queued` (64 by protocol).
    pub pipeline: usize,
    /// Regular unchoke slots (the optimistic one comes on top).
    pub unchoke_slots: usize,
    /// Period of the choke round.
    pub choke_round: Duration,
    /// The optimistic unchoke moves every this many rounds.
    pub optimistic_rounds: u32,
    /// A request unanswered this long is cancelled and asked elsewhere.
    pub request_timeout: Duration,
    /// Send a keep-alive after this long without sending anything.
    pub keepalive: Duration,
    /// Close a conn after this long without receiving anything.
    pub idle_timeout: Duration,
    /// Requests of one conn waiting for storage (`ReadBlock`) at most; one
    /// more is a violation (`request_flood`).
    pub max_uploads_queued: usize,
    /// Hash failures a conn may take part in before it is banned.
    pub strikes_to_ban: u32,
    /// A request arriving this soon after we choked its sender crossed the
    /// choke and is ignored; later it is a violation.
    pub request_grace: Duration,
    /// Bytes of pieces held in memory (assembling or being hashed) beyond
    /// which no new piece is started. One piece may always be in flight.
    pub max_in_flight_bytes: u64,
}

impl Default for SwarmConfig {
    fn default() -> Self {
        SwarmConfig {
            pipeline: 64,
            unchoke_slots: 4,
            choke_round: Duration::from_secs(10),
            optimistic_rounds: 3,
            request_timeout: Duration::from_secs(60),
            keepalive: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_uploads_queued: 64,
            strikes_to_ban: 2,
            request_grace: Duration::from_secs(10),
            max_in_flight_bytes: 64 << 20,
        }
    }
}

/// Names one circuit of this torrent; chosen by the actor, never reused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Something the actor must do.
#[derive(PartialEq, Eq)]
pub enum Action {
    /// Write our handshake on `conn` (before any `Send` for it).
    SendHandshake { conn: ConnId, hs: Handshake },
    /// Write `msg` on `conn`.
    Send { conn: ConnId, msg: Message },
    /// Read this block from storage and call [`SwarmCore::block_read`](super::SwarmCore::block_read).
    ReadBlock {
        conn: ConnId,
        piece: u32,
        offset: u32,
        len: u32,
    },
    /// Every block of `piece` arrived: hash it and, if it matches, write it;
    /// then call [`SwarmCore::piece_checked`](super::SwarmCore::piece_checked).
    CheckPiece { piece: u32, data: Vec<u8> },
    /// Close the circuit. The core has already forgotten `conn`.
    Close { conn: ConnId, reason: &'static str },
    /// `piece` was verified and written.
    Have { piece: u32 },
    /// Every piece is verified (emitted once).
    Complete,
}

/// Piece data is torrent content and the handshake names the torrent:
/// print only the shape.
impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::SendHandshake { conn, .. } => write!(f, "SendHandshake({})", conn.0),
            Action::Send { conn, msg } => write!(f, "Send({}, {msg:?})", conn.0),
            Action::ReadBlock {
                conn,
                piece,
                offset,
                len,
            } => write!(f, "ReadBlock({}, {piece}, {offset}, {len})", conn.0),
            Action::CheckPiece { piece, data } => {
                write!(f, "CheckPiece({piece}, {} bytes)", data.len())
            }
            Action::Close { conn, reason } => write!(f, "Close({}, {reason})", conn.0),
            Action::Have { piece } => write!(f, "Have({piece})"),
            Action::Complete => f.write_str("Complete"),
        }
    }
}

/// Traffic of one conn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnStats {
    /// The conn, by the actor's id.
    pub conn: ConnId,
    /// Bytes of blocks from it that went into a piece.
    pub downloaded: u64,
    /// Bytes of blocks we sent it.
    pub uploaded: u64,
}

/// A snapshot of the core's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmStats {
    /// Verified pieces, and pieces in the torrent.
    pub pieces_have: u32,
    pub pieces_total: u32,
    /// Bytes of pieces that passed their hash.
    pub downloaded: u64,
    /// Bytes of blocks sent.
    pub uploaded: u64,
    /// Bytes thrown away: failed pieces, duplicate and unrequested blocks.
    pub wasted: u64,
    /// Live conns, and how many of them unchoke us.
    pub conns: usize,
    pub unchoking_us: usize,
    /// Pieces being assembled, and bytes held for them and for pieces
    /// being hashed (bounded by `max_in_flight_bytes`, or one piece).
    pub in_flight_pieces: usize,
    pub buffered_bytes: u64,
    /// Duplicate requests sent in endgame mode.
    pub endgame_requests: u64,
    /// Conn ids banned for bad pieces.
    pub banned: usize,
    /// Traffic of each live conn, in id order.
    pub per_conn: Vec<ConnStats>,
}
