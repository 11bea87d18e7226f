//! Freshness and replay checks for signed announces.
//!
//! An announce carries a timestamp and a random nonce under its signature.
//! The tracker accepts it only when the timestamp is within `max_skew` of its
//! own clock, it is not older than the newest announce already accepted from
//! that identity, and the (peer, nonce) pair was not seen in the last
//! `2 × max_skew`: anything older than that is rejected as stale anyway, so
//! the cache never needs to remember more than one window of nonces.
//! (PROTOCOL.md §8: an older timestamp or a seen nonce is `Replayed`.)

use std::collections::{HashMap, HashSet, VecDeque};

use anomos_common::PeerId;

/// Why an announce is not fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Timestamp too far from the tracker's clock.
    Stale,
    /// Same peer and nonce seen within the window.
    Replayed,
}

/// Seen nonces within the acceptance window.
#[derive(Debug)]
pub struct ReplayGuard {
    max_skew: u64,
    seen: HashSet<(PeerId, Nonce)>,
    order: VecDeque<(u64, PeerId, Nonce)>,
    newest: HashMap<PeerId, u64>,
}

/// The random per-announce nonce.
pub type Nonce = [u8; 16];

impl ReplayGuard {
    /// Guard accepting timestamps within `max_skew` seconds of now.
    pub fn new(max_skew: u64) -> Self {
        ReplayGuard {
            max_skew,
            seen: HashSet::new(),
            order: VecDeque::new(),
            newest: HashMap::new(),
        }
    }

    /// Only checks the timestamp (cheap, before signature verification).
    pub fn check_time(&self, now: u64, timestamp: u64) -> Result<(), Freshness> {
        if now.abs_diff(timestamp) > self.max_skew {
            Err(Freshness::Stale)
        } else {
            Ok(())
        }
    }

    /// Check and record a (verified) announce's timestamp and nonce.
    pub fn check_and_record(
        &mut self,
        now: u64,
        peer: PeerId,
        timestamp: u64,
        nonce: Nonce,
    ) -> Result<(), Freshness> {
        self.check_time(now, timestamp)?;
        if self.newest.get(&peer).is_some_and(|t| timestamp < *t) {
            return Err(Freshness::Replayed);
        }
        let window = self.max_skew.saturating_mul(2);
        while let Some(&(t, p, n)) = self.order.front() {
            if now.saturating_sub(t) <= window {
                break;
            }
            self.seen.remove(&(p, n));
            self.order.pop_front();
            if self
                .newest
                .get(&p)
                .is_some_and(|ts| now.saturating_sub(*ts) > window)
            {
                self.newest.remove(&p);
            }
        }
        if !self.seen.insert((peer, nonce)) {
            return Err(Freshness::Replayed);
        }
        self.order.push_back((now, peer, nonce));
        let newest = self.newest.entry(peer).or_insert(timestamp);
        *newest = (*newest).max(timestamp);
        Ok(())
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_replayed_are_rejected() {
        let mut g = ReplayGuard::new(120);
        let p = PeerId([1; 32]);
        assert_eq!(
            g.check_and_record(1000, p, 800, [1; 16]),
            Err(Freshness::Stale)
        );
        assert_eq!(
            g.check_and_record(1000, p, 1200, [1; 16]),
            Err(Freshness::Stale)
        );
        assert_eq!(g.check_and_record(1000, p, 1000, [1; 16]), Ok(()));
        assert_eq!(
            g.check_and_record(1001, p, 1000, [1; 16]),
            Err(Freshness::Replayed)
        );
        assert_eq!(
            g.check_and_record(1001, p, 1000, [2; 16]),
            Ok(()),
            "same second, new nonce"
        );
        assert_eq!(
            g.check_and_record(1001, p, 999, [3; 16]),
            Err(Freshness::Replayed),
            "older"
        );
        assert_eq!(
            g.check_and_record(1001, PeerId([2; 32]), 1000, [1; 16]),
            Ok(())
        );
    }

    #[test]
    fn window_forgets_old_nonces() {
        let mut g = ReplayGuard::new(10);
        let p = PeerId([1; 32]);
        g.check_and_record(100, p, 100, [7; 16]).unwrap();
        g.check_and_record(121, p, 121, [8; 16]).unwrap();
        assert_eq!(g.len(), 1);
    }
}
