//! Token-bucket rate limiting keyed by identity or address.
//!
//! Two limiters guard the announce endpoint: one per client address, checked
//! before any expensive work (decoding, signature checks), and one per peer
//! identity, checked only after the signature verified — otherwise anyone
//! could drain an honest peer's bucket by sending forged announces in its
//! name. Buckets of keys not seen for a while are pruned, so memory stays
//! bounded by the set of recently active keys.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Refill rate and burst of one bucket.
#[derive(Debug, Clone, Copy)]
pub struct RateConfig {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Bucket capacity (largest burst).
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets for many keys.
#[derive(Debug)]
pub struct RateLimiter<K> {
    cfg: RateConfig,
    buckets: HashMap<K, Bucket>,
    last_prune: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// Empty limiter.
    pub fn new(cfg: RateConfig) -> Self {
        RateLimiter {
            cfg,
            buckets: HashMap::new(),
            last_prune: None,
        }
    }

    /// Take one token for `key` at `now`; false means "rate limited".
    pub fn check(&mut self, key: &K, now: Instant) -> bool {
        self.prune(now);
        let cfg = self.cfg;
        let b = self.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: cfg.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * cfg.per_sec).min(cfg.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forget buckets that would be full again anyway (at most every 10 s).
    fn prune(&mut self, now: Instant) {
        let every = Duration::from_secs(10);
        if self
            .last_prune
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return;
        }
        self.last_prune = Some(now);
        let refill = if self.cfg.per_sec > 0.0 {
            self.cfg.burst / self.cfg.per_sec
        } else {
            3600.0
        };
        let idle = Duration::from_secs_f64(refill.clamp(0.0, 86_400.0));
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_then_refilled() {
        let mut rl = RateLimiter::new(RateConfig {
            per_sec: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        assert!((0..3).all(|_| rl.check(&"a", t0)));
        assert!(!rl.check(&"a", t0));
        assert!(rl.check(&"b", t0), "other keys are unaffected");
        assert!(rl.check(&"a", t0 + Duration::from_millis(500)));
        assert!(!rl.check(&"a", t0 + Duration::from_millis(500)));
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let mut rl = RateLimiter::new(RateConfig {
            per_sec: 1.0,
            burst: 2.0,
        });
        let t0 = Instant::now();
        for i in 0..100 {
            rl.check(&i, t0);
        }
        assert_eq!(rl.len(), 100);
        rl.check(&1000, t0 + Duration::from_secs(30));
        assert_eq!(rl.len(), 1);
    }
}
