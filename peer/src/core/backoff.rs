//! Exponential back-off with jitter, sans-IO.
//!
//! Used for re-dialling a neighbour and for re-trying an unreachable tracker.
//! Jitter matters because every peer of a swarm sees the same failure at the
//! same moment (a tracker restart, a relay going away): without it they would
//! all retry in lock-step and hit the tracker as one burst. "Full jitter" is
//! used: the delay is drawn uniformly from `[cap/2, cap]`, where `cap` doubles
//! with every consecutive failure up to `max`. The lower bound of `cap/2`
//! keeps a retry from coming back immediately after a failure.

use rand::Rng;
use std::time::Duration;

/// Consecutive-failure counter that turns into retry delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Delays start around `base` and never exceed `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The upper bound of the next delay: `base · 2^failures`, capped.
    pub fn cap(&self) -> Duration {
        let shift = self.failures.min(20);
        self.base.saturating_mul(1u32 << shift).min(self.max)
    }

    /// Record a failure and return how long to wait before the next try.
    pub fn fail<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Duration {
        let cap = self.cap();
        self.failures = self.failures.saturating_add(1);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        let low = cap_ms / 2;
        Duration::from_millis(rng.random_range(low..=cap_ms))
    }

    /// A success: the next failure starts again from `base`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(1)
    }

    #[test]
    fn delays_double_within_jitter_and_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut r = rng();
        let expect_caps = [100, 200, 400, 800, 1600, 2000, 2000];
        for cap in expect_caps {
            let d = b.fail(&mut r).as_millis() as u64;
            assert!(
                d >= cap / 2 && d <= cap,
                "delay {d} outside [{}, {cap}]",
                cap / 2
            );
        }
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.cap(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut r = rng();
        let delays: std::collections::HashSet<u128> = (0..32)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
                b.fail(&mut r).as_millis()
            })
            .collect();
        assert!(delays.len() > 16, "only {} distinct delays", delays.len());
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut r = rng();
        for _ in 0..100 {
            assert!(b.fail(&mut r) <= Duration::from_secs(30));
        }
        let z = Backoff::new(Duration::ZERO, Duration::ZERO).fail(&mut r);
        assert_eq!(z, Duration::ZERO);
    }
}
