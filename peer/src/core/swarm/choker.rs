//! Choke rounds: whom we upload to.
//!
//! Every `choke_round` the interested conns are ranked by credit tier (the
//! tracker's coarse share-ratio tier, so relaying for others pays off), then
//! by the bytes they sent us in the round just ended — or, once we are a
//! seed and download nothing, by the bytes we sent them, which favours the
//! conns that can take data fastest. The best `unchoke_slots` are unchoked,
//! ties broken at random. On top, one *optimistic* unchoke, drawn at random
//! from the rest and kept for `optimistic_rounds` rounds, gives newcomers
//! (who have nothing to trade yet) a way in. Everyone else is choked.

use super::{ConnId, SwarmCore};
use rand::Rng;
use std::time::{Duration, Instant};

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
        let seed = self.have.is_complete();
        // Rank interested conns: tier, rate, random tie-break.
        let mut ranked: Vec<(u8, u64, u32, ConnId)> = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            c.roll_round();
            if c.handshaken && c.peer_interested {
                let rate = if seed { c.rate_up } else { c.rate_down };
                ranked.push((c.credit, rate, self.rng.random(), id));
            }
        }
        ranked.sort_unstable_by_key(|r| std::cmp::Reverse((r.0, r.1, r.2)));
        let regular: Vec<ConnId> = ranked
            .iter()
            .take(self.cfg.unchoke_slots)
            .map(|r| r.3)
            .collect();
        let rest: Vec<ConnId> = ranked
            .iter()
            .skip(self.cfg.unchoke_slots)
            .map(|r| r.3)
            .collect();
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
            None if rest.is_empty() => None,
            None => rest.get(self.rng.random_range(0..rest.len())).copied(),
        };
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let unchoke = regular.contains(&id) || self.choker.optimistic == Some(id);
            self.set_choking(now, id, !unchoke);
        }
    }
}
