//! The replay cache a hop keeps for tracking codes.
//!
//! Every tracking code carries, per hop, a 16-byte replay tag derived from
//! that hop's shared secret (see `onion`). A hop remembers each tag it has
//! accepted until the code expires, and refuses a code whose tag it already
//! holds: otherwise an observer could resend a recorded CREATE and watch which
//! link the hop forwards it on, and so trace a circuit hop by hop.
//!
//! The cache is bounded. Entries leave only when their code expires, so the
//! memory is `capacity` tags whatever arrives. When every slot holds an
//! unexpired tag the cache **fails closed** (`ReplayError::Full`): evicting a
//! live tag to make room would let exactly that code be replayed, which is
//! what the cache exists to prevent. A full cache costs availability (new
//! circuits through this hop fail until tags expire) and never anonymity;
//! peel caps code lifetimes (`onion::MAX_CODE_LIFETIME`) so a flood of codes
//! clears within that time.
//!
//! Purging is cheap: a `BTreeSet` ordered by expiry lets each call drop the
//! expired prefix in `O(k log n)` for `k` expired tags; a `HashSet` answers
//! membership in `O(1)`.

use std::collections::{BTreeSet, HashSet};
use thiserror::Error;

/// Length of a replay tag.
pub const REPLAY_TAG_LEN: usize = 16;

/// A replay tag: derived from a hop's shared secret, unique per code and hop.
pub type ReplayTag = [u8; REPLAY_TAG_LEN];

/// Why the cache refused a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// The tag is already held: the code was seen before.
    #[error("replayed tracking code")]
    Replayed,
    /// Every slot holds an unexpired tag; the cache fails closed.
    #[error("replay cache full")]
    Full,
}

impl ReplayError {
    /// Coarse kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReplayError::Replayed => "replayed",
            ReplayError::Full => "replay_cache_full",
        }
    }
}

/// A bounded set of replay tags, each kept until its expiry (Unix seconds).
pub struct ReplayCache {
    tags: HashSet<ReplayTag>,
    by_expiry: BTreeSet<(u64, ReplayTag)>,
    capacity: usize,
}

impl std::fmt::Debug for ReplayCache {
    // Tags are linkable to codes: print only the sizes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplayCache({}/{})", self.len(), self.capacity)
    }
}

impl ReplayCache {
    /// An empty cache that holds at most `capacity` tags. Each tag costs
    /// roughly 100 bytes across both indexes.
    pub fn new(capacity: usize) -> Self {
        Self {
            tags: HashSet::new(),
            by_expiry: BTreeSet::new(),
            capacity,
        }
    }

    /// Tags currently held (including expired ones not yet purged).
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Whether no tag is held.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The most tags this cache will hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `tag` is held. Peel asks this before it spends work on the
    /// rest of the code; a held tag whose expiry has passed belongs to a
    /// code that is rejected as expired anyway.
    pub fn contains(&self, tag: &ReplayTag) -> bool {
        self.tags.contains(tag)
    }

    /// Drop every tag whose expiry is before `now` (a tag is live while
    /// `now <= expiry`, the same rule peel applies to codes).
    pub fn purge(&mut self, now: u64) {
        while let Some(&(expiry, tag)) = self.by_expiry.first() {
            if expiry >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.tags.remove(&tag);
        }
    }

    /// Record `tag` until `expiry`, or refuse it. Purges expired tags first.
    ///
    /// A tag whose expiry is already past is accepted without being stored:
    /// any code carrying it is rejected as expired before it gets here, and
    /// storing it would only take a slot.
    pub fn check_and_insert(
        &mut self,
        tag: ReplayTag,
        expiry: u64,
        now: u64,
    ) -> Result<(), ReplayError> {
        self.purge(now);
        if self.tags.contains(&tag) {
            return Err(ReplayError::Replayed);
        }
        if expiry < now {
            return Ok(());
        }
        if self.tags.len() >= self.capacity {
            return Err(ReplayError::Full);
        }
        self.tags.insert(tag);
        self.by_expiry.insert((expiry, tag));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(i: u8) -> ReplayTag {
        [i; REPLAY_TAG_LEN]
    }

    #[test]
    fn second_insert_is_a_replay() {
        let mut c = ReplayCache::new(4);
        assert_eq!(c.check_and_insert(tag(1), 100, 10), Ok(()));
        assert!(c.contains(&tag(1)));
        assert_eq!(
            c.check_and_insert(tag(1), 100, 11),
            Err(ReplayError::Replayed)
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c.capacity(), 4);
    }

    #[test]
    fn full_cache_fails_closed_until_a_tag_expires() {
        let mut c = ReplayCache::new(2);
        c.check_and_insert(tag(1), 50, 0).expect("insert");
        c.check_and_insert(tag(2), 60, 0).expect("insert");
        assert_eq!(c.check_and_insert(tag(3), 70, 0), Err(ReplayError::Full));
        // Still full at the first tag's expiry second (it is live then)…
        assert_eq!(c.check_and_insert(tag(3), 70, 50), Err(ReplayError::Full));
        // …and no live tag was evicted to make room.
        assert_eq!(
            c.check_and_insert(tag(1), 50, 50),
            Err(ReplayError::Replayed)
        );
        // One second later tag 1 is purged and its slot is free.
        assert_eq!(c.check_and_insert(tag(3), 70, 51), Ok(()));
        assert!(!c.contains(&tag(1)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn expired_tags_are_not_stored() {
        let mut c = ReplayCache::new(1);
        assert_eq!(c.check_and_insert(tag(9), 5, 10), Ok(()));
        assert!(c.is_empty());
        assert_eq!(c.check_and_insert(tag(1), 10, 10), Ok(()));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn zero_capacity_refuses_everything_live() {
        let mut c = ReplayCache::new(0);
        assert_eq!(c.check_and_insert(tag(1), 10, 0), Err(ReplayError::Full));
        assert_eq!(ReplayError::Full.kind(), "replay_cache_full");
        assert_eq!(ReplayError::Replayed.kind(), "replayed");
        assert_eq!(format!("{c:?}"), "ReplayCache(0/0)");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Against a naive model: the cache never exceeds its capacity,
        /// never forgets a live tag, and answers exactly like the model.
        #[test]
        fn matches_a_naive_model(
            ops in proptest::collection::vec((0u8..12, 0u64..40, 0u64..4), 1..80),
            capacity in 0usize..8,
        ) {
            let mut c = ReplayCache::new(capacity);
            let mut model: Vec<(ReplayTag, u64)> = Vec::new();
            let mut now = 0u64;
            for (t, ttl, step) in ops {
                now += step;
                let expiry = now + ttl;
                model.retain(|&(_, e)| e >= now);
                let want = if model.iter().any(|&(m, _)| m == tag(t)) {
                    Err(ReplayError::Replayed)
                } else if model.len() >= capacity {
                    Err(ReplayError::Full)
                } else {
                    model.push((tag(t), expiry));
                    Ok(())
                };
                prop_assert_eq!(c.check_and_insert(tag(t), expiry, now), want);
                prop_assert_eq!(c.len(), model.len());
                prop_assert!(c.len() <= capacity);
            }
        }
    }
}
