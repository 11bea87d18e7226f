//! Piece maths: how a torrent's bytes split into pieces and blocks, and how a
//! piece maps onto the files that store it (PROTOCOL.md §7).
//!
//! The torrent is one byte stream: its files concatenated in `info` order.
//! Piece `i` covers stream bytes `[i × piece_length, min((i+1) × piece_length,
//! total))`; block `j` of a piece covers piece bytes `[j × BLOCK_LEN,
//! min((j+1) × BLOCK_LEN, piece_len))`. A block is the unit of a request.
//!
//! Invariants (property-tested): piece lengths sum to the total; a piece's
//! blocks tile it; a piece's file spans tile it, and over all pieces every
//! file is covered exactly once, in order.

mod bitfield;

pub use bitfield::Bitfield;

use thiserror::Error;

/// Bytes per block (the unit of a request), 16 KiB as in BitTorrent.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// Why a layout could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// The piece length is not a power of two of at least [`BLOCK_LEN`].
    #[error("piece length must be a power of two of at least 16 KiB")]
    BadPieceLength,
    /// The total length is 0.
    #[error("total length is zero")]
    Empty,
    /// The total length overflows u64, or the piece count u32.
    #[error("total length or piece count overflows")]
    Overflow,
}

/// A part of a piece stored in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileSpan {
    /// Index of the file in the torrent's file list.
    pub file_index: usize,
    /// Offset of the span inside that file.
    pub file_offset: u64,
    /// Offset of the span inside the piece.
    pub piece_offset: u32,
    /// Length of the span (never 0).
    pub len: u32,
}

/// The geometry of a torrent: piece length, total length, file boundaries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    piece_length: u32,
    total: u64,
    piece_count: u32,
    file_lengths: Vec<u64>,
    /// Stream offset where each file starts (same length as `file_lengths`).
    file_starts: Vec<u64>,
}

impl Layout {
    /// A layout for files of `file_lengths` bytes (in storage order; empty
    /// files are allowed) cut into pieces of `piece_length` bytes.
    pub fn new(piece_length: u32, file_lengths: Vec<u64>) -> Result<Self, LayoutError> {
        if !piece_length.is_power_of_two() || piece_length < BLOCK_LEN {
            return Err(LayoutError::BadPieceLength);
        }
        let mut file_starts = Vec::with_capacity(file_lengths.len());
        let mut total = 0u64;
        for &len in &file_lengths {
            file_starts.push(total);
            total = total.checked_add(len).ok_or(LayoutError::Overflow)?;
        }
        if total == 0 {
            return Err(LayoutError::Empty);
        }
        let piece_count = u32::try_from(total.div_ceil(u64::from(piece_length)))
            .map_err(|_| LayoutError::Overflow)?;
        Ok(Self {
            piece_length,
            total,
            piece_count,
            file_lengths,
            file_starts,
        })
    }

    /// Bytes per piece (all but the last piece).
    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    /// Total bytes in the torrent.
    pub fn total_length(&self) -> u64 {
        self.total
    }

    /// Number of pieces.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// Lengths of the files, in storage order.
    pub fn file_lengths(&self) -> &[u64] {
        &self.file_lengths
    }

    /// Stream offset of the first byte of `piece`.
    pub fn piece_offset(&self, piece: u32) -> Option<u64> {
        (piece < self.piece_count).then(|| u64::from(piece) * u64::from(self.piece_length))
    }

    /// Length of `piece` (the last one may be short); `None` out of range.
    pub fn piece_len(&self, piece: u32) -> Option<u32> {
        let start = self.piece_offset(piece)?;
        let len = (self.total - start).min(u64::from(self.piece_length));
        // len ≤ piece_length, a u32.
        u32::try_from(len).ok()
    }

    /// Number of blocks in `piece`.
    pub fn block_count(&self, piece: u32) -> Option<u32> {
        Some(self.piece_len(piece)?.div_ceil(BLOCK_LEN))
    }

    /// `(offset in piece, length)` of block `block` of `piece`.
    pub fn block(&self, piece: u32, block: u32) -> Option<(u32, u32)> {
        let len = self.piece_len(piece)?;
        let offset = block.checked_mul(BLOCK_LEN).filter(|&o| o < len)?;
        Some((offset, (len - offset).min(BLOCK_LEN)))
    }

    /// Which block a request `(offset, len)` inside `piece` names, if it is
    /// exactly one block. Peers refuse any other request shape.
    pub fn block_index(&self, piece: u32, offset: u32, len: u32) -> Option<u32> {
        let index = offset / BLOCK_LEN;
        (self.block(piece, index)? == (offset, len)).then_some(index)
    }

    /// The parts of `piece` stored in each file, in order. Empty files are
    /// skipped; an out-of-range piece yields nothing.
    pub fn file_spans(&self, piece: u32) -> impl Iterator<Item = FileSpan> + '_ {
        let (start, len) = match (self.piece_offset(piece), self.piece_len(piece)) {
            (Some(s), Some(l)) => (s, l),
            _ => (0, 0),
        };
        let end = start + u64::from(len);
        // First file whose end lies beyond `start`.
        let first = self
            .file_starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        (first..self.file_lengths.len())
            .map_while(move |i| {
                let f_start = self.file_starts[i];
                (f_start < end).then_some((i, f_start))
            })
            .filter_map(move |(i, f_start)| {
                let f_end = f_start + self.file_lengths[i];
                let s = f_start.max(start);
                let e = f_end.min(end);
                (s < e).then(|| FileSpan {
                    file_index: i,
                    file_offset: s - f_start,
                    // Both are below `len`, a u32.
                    piece_offset: (s - start) as u32,
                    len: (e - s) as u32,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn small_multi_file_example() {
        // Files of 20000 and 30000 bytes, pieces of 16 KiB: 4 pieces, the
        // second straddles the file boundary at 20000.
        let l = Layout::new(16384, vec![20000, 0, 30000]).expect("layout");
        assert_eq!(l.piece_count(), 4);
        assert_eq!(l.piece_len(3), Some(50000 - 3 * 16384));
        assert_eq!(l.piece_len(4), None);
        let spans: Vec<_> = l.file_spans(1).collect();
        assert_eq!(
            spans,
            vec![
                FileSpan {
                    file_index: 0,
                    file_offset: 16384,
                    piece_offset: 0,
                    len: 3616
                },
                FileSpan {
                    file_index: 2,
                    file_offset: 0,
                    piece_offset: 3616,
                    len: 12768
                },
            ]
        );
        assert_eq!(l.file_spans(9).count(), 0);
        assert_eq!(l.block(3, 0), Some((0, 848)));
        assert_eq!(l.block(3, 1), None);
        assert_eq!(l.block_index(0, 0, 16384), Some(0));
        assert_eq!(l.block_index(3, 0, 848), Some(0));
        assert_eq!(l.block_index(3, 0, 849), None);
        assert_eq!(l.block_index(0, 1, 16384), None);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(
            Layout::new(16383, vec![1]),
            Err(LayoutError::BadPieceLength)
        );
        assert_eq!(Layout::new(8192, vec![1]), Err(LayoutError::BadPieceLength));
        assert_eq!(Layout::new(16384, vec![0, 0]), Err(LayoutError::Empty));
        assert_eq!(Layout::new(16384, vec![]), Err(LayoutError::Empty));
        assert_eq!(
            Layout::new(16384, vec![u64::MAX, 1]),
            Err(LayoutError::Overflow)
        );
        // 2^32 pieces do not fit a u32 piece index.
        assert_eq!(
            Layout::new(16384, vec![(u64::from(u32::MAX) + 1) * 16384]),
            Err(LayoutError::Overflow)
        );
    }

    fn arb_layout() -> impl Strategy<Value = Layout> {
        (
            14u32..=20,
            proptest::collection::vec(prop_oneof![Just(0u64), 1u64..5000, 1u64..3_000_000], 1..8),
        )
            .prop_filter_map("empty", |(shift, files)| {
                Layout::new(1 << shift, files).ok()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn pieces_blocks_and_spans_tile(l in arb_layout()) {
            let mut sum = 0u64;
            let mut covered = vec![0u64; l.file_lengths().len()];
            for p in 0..l.piece_count() {
                let len = l.piece_len(p).expect("len");
                prop_assert!(len > 0 && len <= l.piece_length());
                prop_assert_eq!(l.piece_offset(p), Some(sum));
                sum += u64::from(len);
                // Blocks tile the piece.
                let mut off = 0;
                for b in 0..l.block_count(p).expect("count") {
                    let (o, bl) = l.block(p, b).expect("block");
                    prop_assert_eq!(o, off);
                    prop_assert!(bl > 0 && bl <= BLOCK_LEN);
                    prop_assert_eq!(l.block_index(p, o, bl), Some(b));
                    off += bl;
                }
                prop_assert_eq!(off, len);
                // Spans tile the piece and continue each file where the
                // previous span stopped.
                let mut off = 0;
                for s in l.file_spans(p) {
                    prop_assert_eq!(s.piece_offset, off);
                    prop_assert!(s.len > 0);
                    prop_assert_eq!(s.file_offset, covered[s.file_index]);
                    covered[s.file_index] += u64::from(s.len);
                    off += s.len;
                }
                prop_assert_eq!(off, len);
            }
            prop_assert_eq!(sum, l.total_length());
            prop_assert_eq!(&covered[..], l.file_lengths());
            prop_assert_eq!(l.piece_len(l.piece_count()), None);
        }
    }
}
