//! A small cache of whole pieces for uploading.
//!
//! Peers request a piece block by block, usually several blocks at once.
//! Reading the whole piece on the first request and serving the following
//! blocks from memory turns many small positioned reads into one large
//! sequential one. Each slot is a `OnceCell`, so concurrent requests for
//! blocks of the same piece share one read instead of racing to load it;
//! a failed load leaves the slot empty and the next request tries again.
//!
//! Eviction is least-recently-used over a handful of slots (the default is
//! 8), so a linear scan beats any fancier structure. An evicted slot that is
//! still loading stays alive for the requests already waiting on it.

use std::sync::Arc;
use tokio::sync::OnceCell;

/// One cached piece: loaded at most once, shared by its readers.
pub(crate) type Slot = Arc<OnceCell<Arc<Vec<u8>>>>;

/// Recently read pieces, most recently used last.
#[derive(Debug)]
pub(crate) struct PieceCache {
    capacity: usize,
    slots: Vec<(u32, Slot)>,
}

impl PieceCache {
    /// A cache of at most `capacity` pieces (0 disables caching).
    pub(crate) fn new(capacity: usize) -> PieceCache {
        PieceCache {
            capacity,
            slots: Vec::with_capacity(capacity),
        }
    }

    /// The slot for `piece`, created (evicting the oldest) if absent and
    /// marked most recently used; `None` when caching is disabled.
    pub(crate) fn slot(&mut self, piece: u32) -> Option<Slot> {
        if self.capacity == 0 {
            return None;
        }
        let slot = match self.slots.iter().position(|(p, _)| *p == piece) {
            Some(i) => self.slots.remove(i).1,
            None => {
                if self.slots.len() >= self.capacity {
                    self.slots.remove(0);
                }
                Arc::new(OnceCell::new())
            }
        };
        self.slots.push((piece, slot.clone()));
        Some(slot)
    }

    /// Drop `piece` (its data on disk changed).
    pub(crate) fn forget(&mut self, piece: u32) {
        self.slots.retain(|(p, _)| *p != piece);
    }

    /// Pieces cached, oldest first.
    #[cfg(test)]
    pub(crate) fn pieces(&self) -> Vec<u32> {
        self.slots.iter().map(|(p, _)| *p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{album, make_album, stream};
    use crate::storage::{Storage, StorageOptions, Target};

    #[test]
    fn evicts_least_recently_used() {
        let mut c = PieceCache::new(2);
        let a = c.slot(1).expect("slot");
        assert!(a.set(Arc::new(vec![1])).is_ok());
        c.slot(2);
        // Touching 1 makes 2 the oldest.
        let again = c.slot(1).expect("slot");
        assert_eq!(again.get().map(|v| v[0]), Some(1));
        c.slot(3);
        assert_eq!(c.pieces(), vec![1, 3]);
        c.forget(1);
        assert_eq!(c.pieces(), vec![3]);
        assert!(c.slot(1).expect("slot").get().is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let mut c = PieceCache::new(0);
        assert!(c.slot(0).is_none());
        assert!(c.pieces().is_empty());
    }

    #[tokio::test]
    async fn concurrent_loads_share_one_read() {
        let mut c = PieceCache::new(4);
        let (s1, s2) = (c.slot(7).expect("slot"), c.slot(7).expect("slot"));
        let loads = std::sync::atomic::AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok::<_, ()>(Arc::new(vec![9u8; 4]))
        };
        let (a, b) = tokio::join!(s1.get_or_try_init(load), s2.get_or_try_init(load));
        assert_eq!(a.expect("a"), b.expect("b"));
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A failed load leaves the slot empty for the next try.
        let s3 = c.slot(8).expect("slot");
        assert!(s3.get_or_try_init(|| async { Err(()) }).await.is_err());
        assert!(s3.get().is_none());
    }

    #[tokio::test]
    async fn repeat_blocks_come_from_memory() {
        let (_t, root, meta) = make_album();
        let opts = StorageOptions {
            max_jobs: 2,
            cache_pieces: 1,
        };
        let s = Storage::open(&meta, Target::Seed { data: root.clone() }, opts).expect("open");
        let all = stream(&album());
        assert_eq!(s.read_block(0, 0, 100).await.expect("read"), all[..100]);
        // Change the data underneath: piece 0 is cached, piece 1 is not.
        std::fs::write(root.join("a.txt"), vec![0u8; 70_000]).expect("write");
        let again = s.read_block(0, 100, 100).await.expect("read");
        assert_eq!(again, all[100..200]);
        let fresh = s.read_block(1, 0, 100).await.expect("read");
        assert_eq!(fresh, [0u8; 100]);
        // Piece 1 evicted piece 0, which is read anew.
        assert_eq!(s.read_block(0, 0, 100).await.expect("read"), [0u8; 100]);
        // Concurrent requests for one piece agree.
        let (a, b, c) = tokio::join!(
            s.read_block(2, 0, 16),
            s.read_block(2, 16, 16),
            s.read_block(2, 0, 32)
        );
        let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
        assert_eq!([a, b].concat(), c);
    }

    #[tokio::test]
    async fn read_block_checks_ranges_and_works_uncached() {
        let (_t, root, meta) = make_album();
        let opts = StorageOptions {
            max_jobs: 1,
            cache_pieces: 0,
        };
        let s = Storage::open(&meta, Target::Seed { data: root }, opts).expect("open");
        let all = stream(&album());
        let last = meta.layout().piece_count() - 1;
        let last_len = meta.layout().piece_len(last).expect("len");
        let tail = s.read_block(last, 0, last_len).await.expect("read");
        assert_eq!(tail, all[all.len() - last_len as usize..]);
        let mid = s.read_block(1, 100, 1000).await.expect("read");
        assert_eq!(mid, all[16384 + 100..16384 + 1100]);
        for (p, o, l) in [
            (last, 0, last_len + 1),
            (last + 1, 0, 1),
            (0, 0, 0),
            (0, u32::MAX, 2),
        ] {
            let e = s.read_block(p, o, l).await.expect_err("range");
            assert_eq!(e.kind(), "out_of_range");
        }
    }
}
