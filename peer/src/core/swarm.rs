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
//! Driving it, per circuit: `add_conn`; a `peerwire::MessageReader` built
//! with [`SwarmCore::max_message_len`], whose frames go to
//! `handle_handshake` / `handle` (a decode error closes the circuit);
//! `SendHandshake` and `Send` are encoded with `Handshake::encode` and
//! `Message::encode`, in order; `Close` closes the circuit (the core has
//! already forgotten it, `remove_conn` is then a no-op); a circuit that
//! closes on its own is reported with `remove_conn`. `tick` about once a
//! second.
//!
//! The remotes are anonymous: a conn is only a [`ConnId`] the actor chose,
//! and nothing the core sends names us. See `swarm/STATE.md` for states,
//! transitions and invariants, and PROTOCOL.md §9 for the wire rules.

mod api;
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

use anomos_common::peerwire::{max_len_for, Handshake, Message, PW_VERSION};
use anomos_common::piece::{Bitfield, Layout};
use anomos_common::InfoHash;
pub use api::{reason, Action, ConnId, ConnStats, SwarmConfig, SwarmStats};
use conn::Conn;
use picker::Picker;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

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
    choker: upload::Choker,
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
            choker: upload::Choker::default(),
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

    /// The length limit for a `MessageReader` on this torrent's circuits
    /// (room for a full block, or for our bitfield if that is larger).
    pub fn max_message_len(&self) -> u32 {
        max_len_for(self.layout.piece_count())
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
        if !c.am_choking {
            self.fill_free_slots(now);
        }
        self.fill_all(now);
        true
    }
}
