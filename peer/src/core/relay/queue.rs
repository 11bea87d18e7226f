//! The queue of DATA cells waiting on one side of a circuit.
//!
//! Whole cells (`CELL_LEN` bytes each) lie back to back in one buffer, so
//! a run of cells that arrived together is queued with one copy and leaves
//! with one copy (straight into a link's outbound buffer), where a queue of
//! per-cell arrays costs a copy per cell each way. Taken cells are
//! reclaimed by moving the unread tail to the front only once at least
//! half of the buffer has been taken, so each byte is moved at most about
//! once. Like the per-cell queue it replaces, the buffer keeps its capacity
//! while the circuit lives (bounded by the credit window).

use crate::core::copy;
use anomos_common::cell::CELL_LEN;

/// Whole cells in arrival order (see module docs).
#[derive(Debug, Default)]
pub(crate) struct CellQueue {
    buf: Vec<u8>,
    /// First untaken byte; always a multiple of `CELL_LEN`.
    head: usize,
}

impl CellQueue {
    /// Cells queued.
    pub(crate) fn len(&self) -> usize {
        (self.buf.len() - self.head) / CELL_LEN
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head == self.buf.len()
    }

    /// Append whole cells (`cells.len()` a multiple of `CELL_LEN`; a
    /// trailing partial cell is not queued).
    pub(crate) fn push(&mut self, cells: &[u8]) {
        let whole = cells.len() / CELL_LEN * CELL_LEN;
        if self.head > 0 && self.head >= self.buf.len() - self.head {
            let keep = self.buf.len() - self.head;
            copy::to_front(&mut self.buf, self.head);
            self.buf.truncate(keep);
            self.head = 0;
        }
        copy::extend(&mut self.buf, &cells[..whole]);
    }

    /// The first `n` cells (fewer if fewer are queued) as one slice.
    pub(crate) fn front(&self, n: usize) -> &[u8] {
        let len = n.min(self.len()) * CELL_LEN;
        &self.buf[self.head..self.head + len]
    }

    /// Drop the first `n` cells (clamped to those queued).
    pub(crate) fn pop(&mut self, n: usize) {
        self.head += n.min(self.len()) * CELL_LEN;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
    }

    /// Drop every cell.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn cell(tag: u8) -> [u8; CELL_LEN] {
        [tag; CELL_LEN]
    }

    #[test]
    fn runs_in_runs_out_in_order() {
        let mut q = CellQueue::default();
        assert!(q.is_empty());
        q.push(&[cell(1), cell(2), cell(3)].concat());
        q.push(&[&cell(4)[..], &[9; 10]].concat()); // the partial tail is not queued
        assert_eq!(q.len(), 4);
        assert_eq!(q.front(2), [cell(1), cell(2)].concat());
        q.pop(3);
        assert_eq!(q.front(9), cell(4));
        q.pop(9);
        assert!(q.is_empty());
        assert_eq!(q.front(1), &[] as &[u8]);
        q.push(&cell(5));
        q.clear();
        assert_eq!(q.len(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any interleaving of pushes and pops matches a per-cell queue,
        /// and the buffer never holds more than twice the queued cells
        /// (plus the last run pushed).
        #[test]
        fn matches_a_per_cell_queue(ops in prop::collection::vec((any::<bool>(), 0usize..20), 0..60)) {
            let mut q = CellQueue::default();
            let mut model: VecDeque<u8> = VecDeque::new();
            let mut next = 0u8;
            for (push, n) in ops {
                if push {
                    let run: Vec<u8> = (0..n).flat_map(|i| cell(next.wrapping_add(i as u8))).collect();
                    for i in 0..n {
                        model.push_back(next.wrapping_add(i as u8));
                    }
                    next = next.wrapping_add(n as u8);
                    q.push(&run);
                    prop_assert!(q.buf.len() <= 2 * q.len() * CELL_LEN + run.len());
                } else {
                    let k = n.min(model.len());
                    let expect: Vec<u8> = model.iter().take(k).flat_map(|t| cell(*t)).collect();
                    prop_assert_eq!(q.front(n), &expect[..]);
                    q.pop(n);
                    model.drain(..k);
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
