//! When to ask the tracker again for circuits it did not grant, sans-IO.
//!
//! A download asks for several circuits, but one announce may grant fewer:
//! the tracker plans at most one circuit per source per announce, caps
//! grants by the share-ratio policy, and finds no path while the overlay
//! is still linking up. Waiting a whole announce interval (a minute by
//! default) for the rest leaves a new download crawling on one circuit, so
//! the peer asks again sooner — but never so often that the tracker's
//! per-identity rate limit refuses it, and more slowly while the tracker
//! keeps granting nothing (no source or no path: asking harder does not
//! help).
//!
//! The rule: after an answer that leaves circuits still wanted, ask again
//! after `base · 2^misses`, capped at the interval, where `misses` counts
//! the answers in a row that granted nothing. An answer that granted
//! something starts again from `base`; one that leaves nothing wanted
//! clears the count. The actor never announces closer than its minimum
//! gap, so with `base` ≥ 1 s re-asks alone stay at or under one per
//! second, half the tracker's default per-identity rate (2/s, burst 10).

use std::time::Duration;

/// Re-ask delays (see module docs).
#[derive(Debug, Clone)]
pub struct Reask {
    base: Duration,
    misses: u32,
}

impl Reask {
    /// Re-asks start `base` after a short answer.
    pub fn new(base: Duration) -> Self {
        Reask { base, misses: 0 }
    }

    /// Answers in a row that granted nothing while circuits were wanted.
    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// An announce was answered: `granted` circuits came with it, and
    /// `short` says whether circuits are still wanted beyond those being
    /// opened. Returns the delay until the next announce: sooner than
    /// `interval` only when circuits are still wanted.
    pub fn answered(&mut self, short: bool, granted: usize, interval: Duration) -> Duration {
        if !short {
            self.misses = 0;
            return interval;
        }
        if granted > 0 {
            self.misses = 0;
        }
        let delay = self
            .base
            .saturating_mul(1u32 << self.misses.min(20))
            .min(interval);
        if granted == 0 {
            self.misses = self.misses.saturating_add(1);
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn nothing_wanted_waits_the_interval() {
        let mut r = Reask::new(S);
        assert_eq!(r.answered(false, 0, MIN), MIN);
        assert_eq!(r.answered(false, 3, MIN), MIN);
        assert_eq!(r.misses(), 0);
    }

    #[test]
    fn empty_answers_double_the_delay_up_to_the_interval() {
        let mut r = Reask::new(S);
        let delays: Vec<u64> = (0..8).map(|_| r.answered(true, 0, MIN).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(r.misses(), 8);
    }

    #[test]
    fn a_grant_resets_to_the_base_delay() {
        let mut r = Reask::new(S);
        r.answered(true, 0, MIN);
        r.answered(true, 0, MIN);
        assert_eq!(r.answered(true, 0, MIN), 4 * S);
        // Progress: the tracker grants one per source; ask again soon.
        assert_eq!(r.answered(true, 1, MIN), S);
        assert_eq!(r.answered(true, 1, MIN), S);
        assert_eq!(r.answered(true, 0, MIN), S);
        assert_eq!(r.answered(true, 0, MIN), 2 * S);
        // Satisfied, then short again: from the base.
        assert_eq!(r.answered(false, 2, MIN), MIN);
        assert_eq!(r.answered(true, 0, MIN), S);
    }

    #[test]
    fn a_short_interval_caps_the_delay_and_many_misses_do_not_overflow() {
        let mut r = Reask::new(S);
        for _ in 0..100 {
            assert!(r.answered(true, 0, 3 * S) <= 3 * S);
        }
        assert_eq!(r.answered(true, 0, Duration::MAX), S * (1 << 20));
    }
}
