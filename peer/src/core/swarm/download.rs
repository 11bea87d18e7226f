//! The downloading half of the core: what remotes have, our interest, our
//! requests, received blocks and hash results.
//!
//! Requests are refilled whenever something may have freed room or work: an
//! unchoke, a received block, a new have, a conn gone, a hash failure. A
//! request leaves the pool only while it is outstanding; a choke, a timeout
//! or a close puts it back (remembered as *dropped*, so the block arriving
//! late is waste, not a violation).

use super::conn::UNSOLICITED_LIMIT;
use super::picker::{PickCtx, Received};
use super::{reason, Action, ConnId, SwarmCore};
use anomos_common::peerwire::Message;
use anomos_common::piece::Bitfield;
use rand::Rng;
use std::time::Instant;

impl SwarmCore {
    /// The remote announced every piece it has.
    pub(super) fn on_bitfield(&mut self, now: Instant, id: ConnId, bytes: &[u8], first: bool) {
        if !first {
            return self.close(now, id, reason::BITFIELD_LATE);
        }
        let Ok(bits) = Bitfield::from_bytes(bytes, self.layout.piece_count()) else {
            return self.close(now, id, reason::BAD_BITFIELD);
        };
        for p in bits.iter_set() {
            self.picker.add_avail(p);
        }
        let wanted = bits.iter_set().filter(|&p| !self.have.get(p)).count();
        if let Some(c) = self.conns.get_mut(&id) {
            c.wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
            c.pieces = bits;
        }
        self.update_interest(id);
        self.fill(now, id);
    }

    /// The remote verified one more piece.
    pub(super) fn on_have(&mut self, now: Instant, id: ConnId, piece: u32) {
        if piece >= self.layout.piece_count() {
            return self.close(now, id, reason::HAVE_OUT_OF_RANGE);
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.pieces.set(piece) {
            return;
        }
        self.picker.add_avail(piece);
        if !self.have.get(piece) {
            c.wanted += 1;
            self.update_interest(id);
            self.fill(now, id);
        }
    }

    /// The remote choked us: every request to it is void.
    pub(super) fn on_choke(&mut self, now: Instant, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.peer_choking = true;
        let requests = std::mem::take(&mut c.requests);
        for r in &requests {
            c.remember_dropped(r.piece, r.block);
            self.picker.unrequest(r.piece, r.block, id);
        }
        self.picker.orphan(id);
        self.fill_all(now);
    }

    pub(super) fn on_unchoke(&mut self, now: Instant, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.peer_choking = false;
        }
        self.fill(now, id);
    }

    /// Send interested / not interested if our want of the remote changed.
    pub(super) fn update_interest(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let want = c.wanted > 0;
        if want != c.am_interested {
            c.am_interested = want;
            let msg = if want {
                Message::Interested
            } else {
                Message::NotInterested
            };
            self.send(id, msg);
        }
    }

    /// Request blocks from `id` until its pipeline is full or there is
    /// nothing it can give us.
    pub(super) fn fill(&mut self, now: Instant, id: ConnId) {
        loop {
            let Some(c) = self.conns.get(&id) else {
                return;
            };
            let pipeline = if c.snubbed { 1 } else { self.cfg.pipeline };
            if !c.handshaken || c.peer_choking || !c.am_interested || c.requests.len() >= pipeline {
                return;
            }
            let ctx = PickCtx {
                layout: &self.layout,
                have: &self.have,
                conns: &self.conns,
                max_in_flight_bytes: self.cfg.max_in_flight_bytes,
                rng: &mut self.rng,
            };
            let Some((piece, block, _endgame)) = self.picker.pick(id, ctx) else {
                return;
            };
            let Some((offset, len)) = self.layout.block(piece, block) else {
                return;
            };
            if let Some(c) = self.conns.get_mut(&id) {
                c.requests.push(super::conn::OutRequest {
                    piece,
                    block,
                    sent: now,
                });
            }
            self.send(id, Message::Request { piece, offset, len });
        }
    }

    /// [`SwarmCore::fill`] every conn, starting from a random one so that
    /// no conn always gets the first pick of the memory budget.
    pub(super) fn fill_all(&mut self, now: Instant) {
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        if ids.len() > 1 {
            let k = self.rng.random_range(0..ids.len());
            ids.rotate_left(k);
        }
        for id in ids {
            self.fill(now, id);
        }
    }

    /// A block arrived.
    pub(super) fn on_piece(
        &mut self,
        now: Instant,
        id: ConnId,
        piece: u32,
        offset: u32,
        data: Vec<u8>,
    ) {
        let len = data.len() as u32;
        let Some(block) = self.layout.block_index(piece, offset, len) else {
            return self.close(now, id, reason::BAD_BLOCK);
        };
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if !c.take_request(piece, block) {
            self.wasted += u64::from(len);
            if !c.take_dropped(piece, block) {
                c.unsolicited += 1;
                if c.unsolicited > UNSOLICITED_LIMIT {
                    self.close(now, id, reason::UNREQUESTED_PIECE);
                }
            }
            return;
        }
        match self.picker.receive(piece, block, offset, &data, id) {
            Received::Stale | Received::Duplicate => self.wasted += u64::from(len),
            Received::Stored { cancel, complete } => {
                c.snubbed = false;
                c.downloaded += u64::from(len);
                c.round_down += u64::from(len);
                for other in cancel {
                    if let Some(o) = self.conns.get_mut(&other) {
                        if o.take_request(piece, block) {
                            o.remember_dropped(piece, block);
                            self.send(other, Message::Cancel { piece, offset, len });
                        }
                    }
                }
                if let Some(data) = complete {
                    self.actions.push_back(Action::CheckPiece { piece, data });
                }
            }
        }
        self.fill_all(now);
    }

    /// Storage hashed `piece`; if `ok` it is written.
    pub fn piece_checked(&mut self, now: Instant, piece: u32, ok: bool) {
        self.now = Some(now);
        let Some(contributors) = self.picker.checked(piece, ok) else {
            return;
        };
        let len = u64::from(self.layout.piece_len(piece).unwrap_or(0));
        if ok {
            self.have.set(piece);
            self.downloaded += len;
            self.actions.push_back(Action::Have { piece });
            let ids: Vec<ConnId> = self.conns.keys().copied().collect();
            for id in ids {
                self.send(id, Message::Have { piece });
                if let Some(c) = self.conns.get_mut(&id) {
                    if c.pieces.get(piece) {
                        c.wanted = c.wanted.saturating_sub(1);
                    }
                }
                self.update_interest(id);
            }
            if self.have.is_complete() && !self.complete_sent {
                self.complete_sent = true;
                self.actions.push_back(Action::Complete);
                // Nothing left to exchange with a remote that has every
                // piece too. Only the side that completes closes: the
                // other sees an orderly end, not a broken circuit (an
                // originator counts any circuit the far end breaks as
                // failed and asks for repairs).
                let done: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.pieces.is_complete())
                    .map(|(id, _)| *id)
                    .collect();
                for id in done {
                    self.close(now, id, reason::BOTH_COMPLETE);
                }
            }
        } else {
            self.wasted += len;
            // A conn banned already explains the failure (its blocks were
            // in the piece before it was found out): nobody else is blamed.
            let explained = contributors.iter().any(|id| self.banned.contains(id));
            let sole = contributors.len() == 1;
            for id in contributors.into_iter().filter(|_| !explained) {
                let strikes = self.conns.get_mut(&id).map(|c| {
                    c.strikes += 1;
                    c.strikes
                });
                if sole || strikes.is_some_and(|s| s >= self.cfg.strikes_to_ban) {
                    self.ban(now, id);
                }
            }
        }
        self.fill_all(now);
    }

    /// Ban `id` for bad pieces: close it, and drop every block it gave to
    /// pieces still being assembled.
    fn ban(&mut self, now: Instant, id: ConnId) {
        self.banned.insert(id);
        for (piece, block) in self.picker.untrust(id) {
            let len = self.layout.block(piece, block).map_or(0, |(_, len)| len);
            self.wasted += u64::from(len);
        }
        self.close(now, id, reason::BAD_PIECE);
    }

    /// Cancel requests unanswered for `request_timeout`; the conn loses
    /// its pieces' ownership so others can finish them.
    pub(super) fn expire_requests(&mut self, now: Instant) {
        let timeout = self.cfg.request_timeout;
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        let mut any = false;
        for id in ids {
            let Some(c) = self.conns.get_mut(&id) else {
                continue;
            };
            let (late, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut c.requests)
                .into_iter()
                .partition(|r| now.saturating_duration_since(r.sent) >= timeout);
            c.requests = keep;
            if late.is_empty() {
                continue;
            }
            c.snubbed = true;
            any = true;
            for r in late {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.remember_dropped(r.piece, r.block);
                }
                self.picker.unrequest(r.piece, r.block, id);
                if let Some((offset, len)) = self.layout.block(r.piece, r.block) {
                    let piece = r.piece;
                    self.send(id, Message::Cancel { piece, offset, len });
                }
            }
            self.picker.orphan(id);
        }
        if any {
            self.fill_all(now);
        }
    }
}
