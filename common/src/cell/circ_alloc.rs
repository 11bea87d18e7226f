//! Circuit-id allocation for one side of one link.
//!
//! Ids are split by who dialled the link (odd for the dialler, even for the
//! acceptor, see [`CircuitId::belongs_to`]), so both ends can open circuits
//! at the same moment without a collision. Ids are handed out in increasing
//! order and wrap around, so a freed id is not reused until the whole space
//! has been walked: a late cell for a torn-down circuit then finds no
//! circuit instead of a new, unrelated one.

use crate::CircuitId;
use std::collections::HashSet;

/// Number of ids each side owns: half of `1..=u32::MAX`, rounded down for
/// the acceptor (even ids `2..=u32::MAX-1`), which never matters in practice.
const IDS_PER_SIDE: usize = (u32::MAX / 2) as usize;

/// Hands out the free circuit ids of one side of a link.
#[derive(Debug, Clone)]
pub struct CircuitIdAllocator {
    dialer: bool,
    /// Next candidate id, always of our parity.
    next: u32,
    in_use: HashSet<u32>,
}

impl CircuitIdAllocator {
    /// An allocator for the side that dialled the link (`dialer == true`,
    /// odd ids) or accepted it (even ids).
    pub fn new(dialer: bool) -> Self {
        CircuitIdAllocator {
            dialer,
            next: Self::first(dialer),
            in_use: HashSet::new(),
        }
    }

    fn first(dialer: bool) -> u32 {
        if dialer {
            1
        } else {
            2
        }
    }

    /// Whether this allocator serves the dialling side.
    pub fn is_dialer(&self) -> bool {
        self.dialer
    }

    /// Ids currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// Whether `id` is currently allocated here.
    pub fn contains(&self, id: CircuitId) -> bool {
        self.in_use.contains(&id.0)
    }

    /// A free id of our side, never 0. `None` only when every id of our side
    /// is in use.
    pub fn allocate(&mut self) -> Option<CircuitId> {
        if self.in_use.len() >= IDS_PER_SIDE {
            return None;
        }
        // At most `in_use.len() + 1` candidates are tried: every skipped one
        // is in use.
        loop {
            let id = self.next;
            self.next = match self.next.checked_add(2) {
                Some(n) => n,
                None => Self::first(self.dialer),
            };
            if CircuitId(id).belongs_to(self.dialer) && self.in_use.insert(id) {
                return Some(CircuitId(id));
            }
        }
    }

    /// Give `id` back. Returns false if it was not allocated here (including
    /// ids of the other side), so the caller can count a protocol error.
    pub fn free(&mut self, id: CircuitId) -> bool {
        self.in_use.remove(&id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_get_their_parity_and_never_zero() {
        for dialer in [true, false] {
            let mut a = CircuitIdAllocator::new(dialer);
            for _ in 0..100 {
                let id = a.allocate().expect("id");
                assert!(id.belongs_to(dialer), "{id:?}");
                assert_ne!(id, CircuitId::LINK);
            }
            assert_eq!(a.in_use(), 100);
        }
    }

    #[test]
    fn freed_ids_are_not_reused_at_once_and_free_is_checked() {
        let mut a = CircuitIdAllocator::new(true);
        let x = a.allocate().expect("id");
        assert!(a.free(x));
        assert!(!a.free(x), "double free is reported");
        assert!(!a.free(CircuitId(2)), "other side's id is not ours");
        let y = a.allocate().expect("id");
        assert_ne!(x, y);
        assert!(a.contains(y) && !a.contains(x));
    }

    #[test]
    fn wraps_around_and_skips_ids_in_use() {
        for dialer in [true, false] {
            let mut a = CircuitIdAllocator::new(dialer);
            let low = a.allocate().expect("id");
            // Jump to the end of the space.
            a.next = if dialer { u32::MAX } else { u32::MAX - 1 };
            let last = a.allocate().expect("id");
            assert!(last.belongs_to(dialer));
            // Wrapped: the first id is still in use, so the second is next.
            let wrapped = a.allocate().expect("id");
            assert_eq!(wrapped.0, low.0 + 2);
            assert!(a.free(low));
        }
    }
}
