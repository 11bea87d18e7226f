//! The state the core keeps per circuit.
//!
//! A conn is created by `add_conn` (our handshake queued), becomes
//! *handshaken* when the remote's valid handshake arrives, and is dropped on
//! close. In between it carries the four BitTorrent flags, what the remote
//! has, our requests to it and its requests to us, and traffic counters for
//! the choker. Nothing here identifies the remote beyond the actor's id.

use anomos_common::piece::Bitfield;
use std::collections::VecDeque;
use std::time::Instant;

/// One of our block requests to a conn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OutRequest {
    pub piece: u32,
    pub block: u32,
    pub sent: Instant,
}

/// A request of the remote we accepted: a `ReadBlock` is out for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct InRequest {
    pub piece: u32,
    pub offset: u32,
    pub len: u32,
}

/// Most blocks remembered as cancelled per conn; a block answering one of
/// them is waste but no violation.
pub(super) const DROPPED_MEMORY: usize = 256;
/// Blocks answering nothing we asked (nor recently cancelled) that a conn
/// may send before it is closed.
pub(super) const UNSOLICITED_LIMIT: u32 = 8;

#[derive(Debug)]
pub(super) struct Conn {
    /// Share-ratio tier 0..=3 (higher is better), from the actor.
    pub credit: u8,
    pub handshaken: bool,
    /// Messages received after the handshake (a bitfield must be first).
    pub messages: u64,
    /// The pieces the remote announced.
    pub pieces: Bitfield,
    /// How many of `pieces` we lack: we are interested exactly while > 0.
    pub wanted: u32,
    pub am_choking: bool,
    pub am_interested: bool,
    pub peer_choking: bool,
    pub peer_interested: bool,
    /// When we last choked it (requests within the grace are ignored);
    /// `None` until we have unchoked it once.
    pub choked_at: Option<Instant>,
    /// Our requests to it, oldest first.
    pub requests: Vec<OutRequest>,
    /// `(piece, block)` of requests we withdrew (cancel, timeout, choke).
    pub dropped: VecDeque<(u32, u32)>,
    /// Its requests waiting for storage.
    pub uploads: VecDeque<InRequest>,
    pub last_recv: Instant,
    pub last_send: Instant,
    /// Bytes of blocks from it that went into pieces, and that we sent it.
    pub downloaded: u64,
    pub uploaded: u64,
    /// The same during the current choke round, and the last full round.
    pub round_down: u64,
    pub round_up: u64,
    pub rate_down: u64,
    pub rate_up: u64,
    /// A request to it timed out and it has not delivered since: it gets
    /// one request at a time and adopts no orphaned piece.
    pub snubbed: bool,
    /// Failed pieces it contributed to.
    pub strikes: u32,
    /// Blocks it sent that we never asked for.
    pub unsolicited: u32,
}

impl Conn {
    pub fn new(now: Instant, credit: u8, piece_count: u32) -> Conn {
        Conn {
            credit,
            handshaken: false,
            messages: 0,
            pieces: Bitfield::new(piece_count),
            wanted: 0,
            am_choking: true,
            am_interested: false,
            peer_choking: true,
            peer_interested: false,
            choked_at: None,
            requests: Vec::new(),
            dropped: VecDeque::new(),
            uploads: VecDeque::new(),
            last_recv: now,
            last_send: now,
            downloaded: 0,
            uploaded: 0,
            round_down: 0,
            round_up: 0,
            rate_down: 0,
            rate_up: 0,
            snubbed: false,
            strikes: 0,
            unsolicited: 0,
        }
    }

    /// Remember a withdrawn request so its late block is not a violation.
    pub fn remember_dropped(&mut self, piece: u32, block: u32) {
        if self.dropped.len() >= DROPPED_MEMORY {
            self.dropped.pop_front();
        }
        self.dropped.push_back((piece, block));
    }

    /// Forget a withdrawn request if it is remembered; whether it was.
    pub fn take_dropped(&mut self, piece: u32, block: u32) -> bool {
        match self.dropped.iter().position(|&d| d == (piece, block)) {
            Some(i) => {
                self.dropped.remove(i);
                true
            }
            None => false,
        }
    }

    /// Remove our request for `(piece, block)`; whether it was outstanding.
    pub fn take_request(&mut self, piece: u32, block: u32) -> bool {
        match self
            .requests
            .iter()
            .position(|r| (r.piece, r.block) == (piece, block))
        {
            Some(i) => {
                self.requests.remove(i);
                true
            }
            None => false,
        }
    }

    /// Close the choke round: the round's bytes become the rate.
    pub fn roll_round(&mut self) {
        self.rate_down = std::mem::take(&mut self.round_down);
        self.rate_up = std::mem::take(&mut self.round_up);
    }
}
