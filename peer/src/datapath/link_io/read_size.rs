//! How much buffer a link's reader offers the socket per read.
//!
//! `CellReader::spare_mut(n)` zero-fills its buffer up to `n` bytes past
//! the unread ones, and a `Vec` never gives pages back: asking a fixed
//! 256 KiB made every link end hold 256 KiB resident even when idle (956
//! link ends, ~239 MiB of a 200-peer process). TLS hands over at most a
//! record or two (16 KiB each) per read, so the reader starts at
//! [`MIN_READ`], doubles while reads fill what it offers (up to
//! [`MAX_READ`]), halves while they use under a quarter, and drops its
//! buffer for a fresh one once it is empty and several times larger than
//! the current size, so a link that went quiet gives its memory back.

/// The smallest offer (and the size of a fresh link's buffer).
pub(crate) const MIN_READ: usize = 16 * 1024;
/// The largest offer.
pub(crate) const MAX_READ: usize = 256 * 1024;

/// The reader's read size and an upper bound of its buffer's length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadSize {
    chunk: usize,
    /// Upper bound of the reader's buffer: unread bytes plus every offer.
    held: usize,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize {
            chunk: MIN_READ,
            held: 0,
        }
    }
}

impl ReadSize {
    /// Bytes to offer for the next read, with `buffered` unread bytes held.
    pub(crate) fn offer(&mut self, buffered: usize) -> usize {
        self.held = self.held.max(buffered + self.chunk);
        self.chunk
    }

    /// A read of `offered` bytes returned `got`; `buffered` bytes are left
    /// unread after the cells were handled. Returns `true` when the caller
    /// should replace its (empty) reader by a fresh one to free memory.
    pub(crate) fn after_read(&mut self, offered: usize, got: usize, buffered: usize) -> bool {
        if got >= offered {
            self.chunk = (self.chunk * 2).min(MAX_READ);
        } else if got < offered / 4 {
            self.chunk = (self.chunk / 2).max(MIN_READ);
        }
        let shrink = buffered == 0 && self.held > 4 * self.chunk;
        if shrink {
            self.held = 0;
        }
        shrink
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_link_offers_the_minimum() {
        let mut r = ReadSize::default();
        assert_eq!(r.offer(0), MIN_READ);
        assert!(!r.after_read(MIN_READ, 1024, 0), "nothing to free");
        assert_eq!(r.offer(0), MIN_READ);
    }

    #[test]
    fn full_reads_grow_to_the_maximum_and_quiet_ones_shrink_and_free() {
        let mut r = ReadSize::default();
        let mut sizes = Vec::new();
        for _ in 0..8 {
            let n = r.offer(0);
            sizes.push(n);
            assert!(!r.after_read(n, n, 512));
        }
        assert_eq!(sizes[..5], [16, 32, 64, 128, 256].map(|k| k * 1024));
        assert_eq!(r.offer(512), MAX_READ, "capped");
        // The link goes quiet: one PADDING cell per read.
        let mut freed = 0;
        for _ in 0..8 {
            let n = r.offer(0);
            if r.after_read(n, 1024, 0) {
                freed += 1;
            }
        }
        assert_eq!(r.offer(0), MIN_READ);
        assert_eq!(freed, 1, "the big buffer is dropped once");
    }

    #[test]
    fn a_buffer_with_unread_bytes_is_never_dropped() {
        let mut r = ReadSize::default();
        for _ in 0..5 {
            let n = r.offer(0);
            r.after_read(n, n, 0);
        }
        for _ in 0..8 {
            let n = r.offer(100);
            assert!(!r.after_read(n, 100, 100));
        }
    }
}
