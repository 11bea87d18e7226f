//! SwarmCore: the piece protocol of one torrent over many circuits.
//!
//! One `SwarmCore` per torrent holds every circuit ("conn") trading it: what
//! each remote has, the four choke/interest flags, our requests to it and
//! its requests to us, and the pieces being assembled in memory. The Swarm
//! actor feeds it decoded frames ([`SwarmCore::handle_handshake`],
//! [`SwarmCore::handle`]), storage results ([`SwarmCore::block_read`],
//! [`SwarmCore::piece_checked`]) and the clock ([`SwarmCore::tick`]), and
//! drains [`Action`]s with [`SwarmCore::poll_action`]. Everything slow —
//! reading a block, hashing and writing a piece — leaves as an action and
//! comes back as an input, so the core never blocks and tests drive it
//! deterministically (`now` and the RNG seed are injected).
//!
//! The remotes are anonymous: a conn is only a [`ConnId`] the actor chose,
//! and nothing the core sends names us. See `swarm/STATE.md` for states,
//! transitions and invariants, and PROTOCOL.md §9 for the wire rules.

mod choker;
mod conn;
mod download;
mod picker;
mod upload;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use anomos_common::peerwire::{Handshake, Message, PW_VERSION};
use anomos_common::piece::{Bitfield, Layout};
use anomos_common::InfoHash;
use conn::Conn;
use picker::Picker;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

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
    /// Every reason above, for pre-registering metric labels.
    pub const ALL: [&str; 16] = [
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
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Write our handshake on `conn` (before any `Send` for it).
    SendHandshake { conn: ConnId, hs: Handshake },
    /// Write `msg` on `conn`.
    Send { conn: ConnId, msg: Message },
    /// Read this block from storage and call [`SwarmCore::block_read`].
    ReadBlock {
        conn: ConnId,
        piece: u32,
        offset: u32,
        len: u32,
    },
    /// Every block of `piece` arrived: hash it and, if it matches, write it;
    /// then call [`SwarmCore::piece_checked`].
    CheckPiece { piece: u32, data: Vec<u8> },
    /// Close the circuit. The core has already forgotten `conn`.
    Close { conn: ConnId, reason: &'static str },
    /// `piece` was verified and written.
    Have { piece: u32 },
    /// Every piece is verified (emitted once).
    Complete,
}

/// Traffic of one conn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnStats {
    pub conn: ConnId,
    /// Bytes of blocks from it that went into a piece.
    pub downloaded: u64,
    /// Bytes of blocks we sent it.
    pub uploaded: u64,
}

/// A snapshot of the core's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmStats {
    pub pieces_have: u32,
    pub pieces_total: u32,
    /// Bytes of pieces that passed their hash.
    pub downloaded: u64,
    pub uploaded: u64,
    /// Bytes thrown away: failed pieces, duplicate and unrequested blocks.
    pub wasted: u64,
    pub conns: usize,
    pub unchoking_us: usize,
    /// Pieces being assembled, and bytes held for them and for pieces
    /// being hashed (bounded by `max_in_flight_bytes`, or one piece).
    pub in_flight_pieces: usize,
    pub buffered_bytes: u64,
    /// Duplicate requests sent in endgame mode.
    pub endgame_requests: u64,
    pub banned: usize,
    pub per_conn: Vec<ConnStats>,
}

/// The swarm state machine of one torrent.
#[derive(Debug)]
pub struct SwarmCore {
    cfg: SwarmConfig,
    layout: Layout,
    infohash: InfoHash,
    have: Bitfield,
    rng: StdRng,
    /// The latest `now` seen, for inputs that carry none (`block_read`).
    now: Option<Instant>,
    conns: BTreeMap<ConnId, Conn>,
    banned: BTreeSet<ConnId>,
    picker: Picker,
    choker: choker::Choker,
    actions: VecDeque<Action>,
    downloaded: u64,
    uploaded: u64,
    wasted: u64,
    complete_sent: bool,
}

impl SwarmCore {
    /// A core for the torrent `layout`/`infohash` holding the pieces in
    /// `have` (resized to the layout if its length differs), with its RNG
    /// seeded from `seed`.
    pub fn new(
        cfg: SwarmConfig,
        layout: Layout,
        infohash: InfoHash,
        have: Bitfield,
        seed: u64,
    ) -> Self {
        let n = layout.piece_count();
        let have = if have.len() == n {
            have
        } else {
            let mut b = Bitfield::new(n);
            have.iter_set().for_each(|p| {
                b.set(p);
            });
            b
        };
        SwarmCore {
            picker: Picker::new(n),
            choker: choker::Choker::default(),
            cfg,
            layout,
            infohash,
            // Already complete: nothing to announce.
            complete_sent: have.is_complete(),
            have,
            rng: StdRng::seed_from_u64(seed),
            now: None,
            conns: BTreeMap::new(),
            banned: BTreeSet::new(),
            actions: VecDeque::new(),
            downloaded: 0,
            uploaded: 0,
            wasted: 0,
        }
    }

    /// A circuit opened. `credit` is a coarse 0..=3 share-ratio tier of the
    /// remote (0 = unknown; higher values count as 3). Queues our handshake
    /// and, if we have any piece, our bitfield. A banned or live id is
    /// refused (closed, respectively ignored).
    pub fn add_conn(&mut self, now: Instant, conn: ConnId, credit: u8) {
        self.now = Some(now);
        if self.banned.contains(&conn) {
            self.actions.push_back(Action::Close {
                conn,
                reason: reason::BANNED,
            });
            return;
        }
        if self.conns.contains_key(&conn) {
            return;
        }
        let c = Conn::new(now, credit.min(3), self.layout.piece_count());
        self.conns.insert(conn, c);
        self.actions.push_back(Action::SendHandshake {
            conn,
            hs: Handshake::new(self.infohash),
        });
        if self.have.count() > 0 {
            self.send(conn, Message::Bitfield(self.have.as_bytes().to_vec()));
        }
    }

    /// The remote's handshake arrived.
    pub fn handle_handshake(&mut self, now: Instant, conn: ConnId, hs: Handshake) {
        self.now = Some(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_recv = now;
        let violation = if c.handshaken {
            reason::HANDSHAKE_TWICE
        } else if hs.version != PW_VERSION {
            reason::WRONG_VERSION
        } else if hs.infohash != self.infohash {
            reason::WRONG_INFOHASH
        } else {
            c.handshaken = true;
            return;
        };
        self.close(now, conn, violation);
    }

    /// A message from `conn`. Messages for unknown (or already closed)
    /// conns are ignored; any violation closes the conn.
    pub fn handle(&mut self, now: Instant, conn: ConnId, msg: Message) {
        self.now = Some(now);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_recv = now;
        if !c.handshaken {
            return self.close(now, conn, reason::BEFORE_HANDSHAKE);
        }
        let first = c.messages == 0;
        c.messages += 1;
        match msg {
            Message::KeepAlive => {}
            Message::Choke => self.on_choke(now, conn),
            Message::Unchoke => self.on_unchoke(now, conn),
            Message::Interested => self.on_interested(now, conn, true),
            Message::NotInterested => self.on_interested(now, conn, false),
            Message::Have { piece } => self.on_have(now, conn, piece),
            Message::Bitfield(bytes) => self.on_bitfield(now, conn, &bytes, first),
            Message::Request { piece, offset, len } => {
                self.on_request(now, conn, piece, offset, len)
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => self.on_piece(now, conn, piece, offset, data),
            Message::Cancel { piece, offset, len } => self.on_cancel(now, conn, piece, offset, len),
        }
    }

    /// The circuit closed (or the actor closed it after an `Action::Close`).
    /// Its requests go back to the pool; unknown ids are ignored.
    pub fn remove_conn(&mut self, now: Instant, conn: ConnId) {
        self.now = Some(now);
        self.drop_conn(now, conn);
    }

    /// Choke rounds, request timeouts, keep-alives and idle conns. Call at
    /// least every second or so; the first call runs a choke round.
    pub fn tick(&mut self, now: Instant) {
        self.now = Some(now);
        if self.choker.due(now, self.cfg.choke_round) {
            self.choke_round(now);
        }
        self.expire_requests(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(c) = self.conns.get(&id) else {
                continue;
            };
            if now.saturating_duration_since(c.last_recv) >= self.cfg.idle_timeout {
                self.close(now, id, reason::IDLE_TIMEOUT);
            } else if now.saturating_duration_since(c.last_send) >= self.cfg.keepalive {
                self.send(id, Message::KeepAlive);
            }
        }
    }

    /// The next thing the actor must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether every piece is verified.
    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
    }

    /// The verified pieces.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SwarmStats {
        SwarmStats {
            pieces_have: self.have.count(),
            pieces_total: self.have.len(),
            downloaded: self.downloaded,
            uploaded: self.uploaded,
            wasted: self.wasted,
            conns: self.conns.len(),
            unchoking_us: self.conns.values().filter(|c| !c.peer_choking).count(),
            in_flight_pieces: self.picker.in_flight_count(),
            buffered_bytes: self.picker.buffered_bytes(),
            endgame_requests: self.picker.endgame_requests,
            banned: self.banned.len(),
            per_conn: self
                .conns
                .iter()
                .map(|(&conn, c)| ConnStats {
                    conn,
                    downloaded: c.downloaded,
                    uploaded: c.uploaded,
                })
                .collect(),
        }
    }

    /// Queue `msg` for `conn` and note the write for the keep-alive timer.
    fn send(&mut self, conn: ConnId, msg: Message) {
        if let (Some(c), Some(now)) = (self.conns.get_mut(&conn), self.now) {
            c.last_send = now;
        }
        self.actions.push_back(Action::Send { conn, msg });
    }

    /// Close `conn` for `reason`: forget it now, tell the actor.
    fn close(&mut self, now: Instant, conn: ConnId, reason: &'static str) {
        if self.drop_conn(now, conn) {
            self.actions.push_back(Action::Close { conn, reason });
        }
    }

    /// Forget `conn`: availability, requests both ways, choker slot. Returns
    /// whether it was known.
    fn drop_conn(&mut self, now: Instant, conn: ConnId) -> bool {
        let Some(c) = self.conns.remove(&conn) else {
            return false;
        };
        self.picker.forget_conn(conn, &c);
        self.choker.forget(conn);
        self.fill_all(now);
        true
    }
}
