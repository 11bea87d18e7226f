//! The uploading half of the core: the remote's requests, our answers, and
//! whom we unchoke.
//!
//! A request is served only if we unchoke its sender, it is exactly one
//! block of a piece we have, and its sender has fewer than
//! `max_uploads_queued` requests waiting for storage. A sender keeps at most
//! that many requests outstanding by protocol (PROTOCOL.md §9.3), and the
//! queue here only ever holds a subset of its outstanding requests, so an
//! honest remote never overflows it: the excess is a violation, not a drop,
//! which keeps storage reads bounded without silently stalling anyone.
//! Choking a conn drops its queue; a read that comes back for a dropped
//! or cancelled request is discarded.
//!
//! Choke rounds: every `choke_round` the interested conns are ranked by
//! credit tier (the tracker's coarse share-ratio tier, so relaying for
//! others pays off), then by the bytes they sent us in the round just ended — or, once we are a
//! seed and download nothing, by the bytes we sent them, which favours the
//! conns that can take data fastest. The best `unchoke_slots` are unchoked,
//! ties broken at random. On top, one *optimistic* unchoke, drawn at random
//! from the rest and kept for `optimistic_rounds` rounds, gives newcomers
//! (who have nothing to trade yet) a way in. Everyone else is choked.
//! Between rounds a slot that falls free (its holder closed or wants
//! nothing more) goes to the next in line at once (`fill_free_slots`).

use super::conn::InRequest;
use super::{reason, Action, ConnId, SwarmCore};
use anomos_common::peerwire::Message;
use rand::Rng;
use std::time::{Duration, Instant};

impl SwarmCore {
    /// The remote asked for a block.
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        id: ConnId,
        piece: u32,
        offset: u32,
        len: u32,
    ) {
        if self.layout.block_index(piece, offset, len).is_none() {
            return self.close(now, id, reason::BAD_REQUEST);
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.am_choking {
            // A request that crossed our choke is harmless; one sent long
            // after it, or before we ever unchoked, is not.
            let crossed = c
                .choked_at
                .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.request_grace);
            if !crossed {
                self.close(now, id, reason::REQUEST_WHILE_CHOKED);
            }
            return;
        }
        if !self.have.get(piece) {
            return self.close(now, id, reason::REQUEST_MISSING_PIECE);
        }
        let req = InRequest { piece, offset, len };
        if c.uploads.contains(&req) {
            return;
        }
        if c.uploads.len() >= self.cfg.max_uploads_queued {
            return self.close(now, id, reason::REQUEST_FLOOD);
        }
        c.uploads.push_back(req);
        self.actions.push_back(Action::ReadBlock {
            conn: id,
            piece,
            offset,
            len,
        });
    }

    /// The remote withdrew a request.
    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        id: ConnId,
        piece: u32,
        offset: u32,
        len: u32,
    ) {
        if self.layout.block_index(piece, offset, len).is_none() {
            return self.close(now, id, reason::BAD_REQUEST);
        }
        if let Some(c) = self.conns.get_mut(&id) {
            let req = InRequest { piece, offset, len };
            c.uploads.retain(|r| *r != req);
        }
    }

    /// Storage read the block of a request we accepted (`ReadBlock`). It is
    /// sent unless the request was cancelled or dropped by a choke, or the
    /// conn closed, meanwhile. Data of the wrong length (a storage fault) is
    /// not sent: the requester times out and asks elsewhere.
    pub fn block_read(&mut self, conn: ConnId, piece: u32, offset: u32, data: Vec<u8>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(i) = c
            .uploads
            .iter()
            .position(|r| r.piece == piece && r.offset == offset)
        else {
            return;
        };
        let Some(req) = c.uploads.remove(i) else {
            return;
        };
        if c.am_choking || data.len() != req.len as usize {
            return;
        }
        let len = u64::from(req.len);
        c.uploaded += len;
        c.round_up += len;
        self.uploaded += len;
        self.send(
            conn,
            Message::Piece {
                piece,
                offset,
                data,
            },
        );
    }

    /// The remote says whether it wants what we have. A newly interested
    /// conn is unchoked at once if a regular slot is free, rather than
    /// waiting for the next round; one we unchoke that wants nothing more
    /// (it completed) is choked and its slot goes to the next in line.
    pub(super) fn on_interested(&mut self, now: Instant, id: ConnId, interested: bool) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        c.peer_interested = interested;
        let choking = c.am_choking;
        if interested && choking && self.regular_unchoked() < self.cfg.unchoke_slots {
            self.set_choking(now, id, false);
        } else if !interested && !choking {
            self.set_choking(now, id, true);
            self.choker.forget(id);
            self.fill_free_slots(now);
        }
    }

    /// Give the slots that fell free between rounds (a conn we unchoked
    /// closed, or wants nothing more) to the best interested conns we
    /// choke, ranked as in a round, and draw a new optimistic unchoke if
    /// its holder went. When many downloads complete together, the rest
    /// would otherwise wait up to a whole round (10 s) for a slot.
    pub(super) fn fill_free_slots(&mut self, now: Instant) {
        let waiting = self.ranked(|c| c.am_choking);
        let free = self
            .cfg
            .unchoke_slots
            .saturating_sub(self.regular_unchoked());
        let (regular, rest) = waiting.split_at(free.min(waiting.len()));
        let optimistic = match self.choker.optimistic {
            None => self.draw(rest),
            Some(_) => None,
        };
        for &id in regular {
            self.set_choking(now, id, false);
        }
        if let Some(id) = optimistic {
            self.choker.optimistic = Some(id);
            self.set_choking(now, id, false);
        }
    }

    /// Handshaken interested conns that pass `filter`, best first: credit
    /// tier, then rate (bytes they sent us last round, or, once we are a
    /// seed, bytes we sent them), ties broken at random.
    fn ranked(&mut self, filter: impl Fn(&super::conn::Conn) -> bool) -> Vec<ConnId> {
        let seed = self.have.is_complete();
        let mut ranked: Vec<(u8, u64, u32, ConnId)> = Vec::new();
        for (&id, c) in &self.conns {
            if c.handshaken && c.peer_interested && filter(c) {
                let rate = if seed { c.rate_up } else { c.rate_down };
                ranked.push((c.credit, rate, self.rng.random(), id));
            }
        }
        ranked.sort_unstable_by_key(|r| std::cmp::Reverse((r.0, r.1, r.2)));
        ranked.into_iter().map(|r| r.3).collect()
    }

    /// One of `from` at random, if any.
    fn draw(&mut self, from: &[ConnId]) -> Option<ConnId> {
        (!from.is_empty()).then(|| from[self.rng.random_range(0..from.len())])
    }

    /// Choke or unchoke `id`, sending the message if the flag changes.
    /// Choking drops the requests waiting for storage.
    pub(super) fn set_choking(&mut self, now: Instant, id: ConnId, choke: bool) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.am_choking == choke {
            return;
        }
        c.am_choking = choke;
        if choke {
            c.uploads.clear();
            c.choked_at = Some(now);
            self.send(id, Message::Choke);
        } else {
            self.send(id, Message::Unchoke);
        }
    }

    /// Conns we unchoke, not counting the optimistic one.
    fn regular_unchoked(&self) -> usize {
        self.conns
            .iter()
            .filter(|(&id, c)| !c.am_choking && Some(id) != self.choker.optimistic)
            .count()
    }
}

/// Round state.
#[derive(Debug, Default)]
pub(super) struct Choker {
    /// When the last round ran; `None` before the first.
    last: Option<Instant>,
    /// Rounds run so far.
    rounds: u64,
    /// The optimistic unchoke, if any.
    pub optimistic: Option<ConnId>,
}

impl Choker {
    /// Whether a round is due at `now`.
    pub fn due(&self, now: Instant, period: Duration) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= period)
    }

    /// `id` is gone.
    pub fn forget(&mut self, id: ConnId) {
        if self.optimistic == Some(id) {
            self.optimistic = None;
        }
    }
}

impl SwarmCore {
    /// Run one choke round.
    pub(super) fn choke_round(&mut self, now: Instant) {
        self.choker.last = Some(now);
        self.choker.rounds += 1;
        for c in self.conns.values_mut() {
            c.roll_round();
        }
        let ranked = self.ranked(|_| true);
        let (regular, rest) = ranked.split_at(self.cfg.unchoke_slots.min(ranked.len()));
        // Rotate the optimistic slot on schedule, or when its holder left,
        // lost interest or earned a regular slot.
        let period = u64::from(self.cfg.optimistic_rounds.max(1));
        let rotate = (self.choker.rounds - 1) % period == 0;
        let keep = self
            .choker
            .optimistic
            .filter(|o| !rotate && rest.contains(o));
        self.choker.optimistic = match keep {
            Some(o) => Some(o),
            None => self.draw(rest),
        };
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let unchoke = regular.contains(&id) || self.choker.optimistic == Some(id);
            self.set_choking(now, id, !unchoke);
        }
    }
}
