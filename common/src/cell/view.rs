//! Zero-copy views of cells inside a receive buffer, and a sans-IO reader
//! that cuts a byte stream into whole cells.
//!
//! The relay data path must not copy or allocate per cell: a link reads
//! into a [`CellReader`], the relay walks the whole cells in place with
//! [`CellReader::next_mut`], removes or adds its layer over
//! [`CellMut::body_mut`], rewrites the circuit id for the next link and
//! copies the 1024 bytes once, into the outbound link's batch.

use super::{parse_cell, Cell, Command, CELL_BODY_LEN, CELL_HEADER_LEN, CELL_LEN};
use crate::{CircuitId, DecodeError};

/// Circuit id and command of the cell at the front of `buf`, without looking
/// at (or validating) the body. `NeedMore` until the header is complete.
pub fn peek_header(buf: &[u8]) -> Result<(CircuitId, Command), DecodeError> {
    match buf.first_chunk::<CELL_HEADER_LEN>() {
        Some(h) => Ok((
            CircuitId(u32::from_be_bytes([h[0], h[1], h[2], h[3]])),
            Command::from_byte(h[4])?,
        )),
        None => Err(DecodeError::NeedMore(CELL_HEADER_LEN - buf.len())),
    }
}

/// Split a cell-sized prefix of `buf` into header and body arrays.
fn split(buf: &[u8]) -> Result<(&[u8; CELL_HEADER_LEN], &[u8; CELL_BODY_LEN]), DecodeError> {
    let need = DecodeError::NeedMore(CELL_LEN.saturating_sub(buf.len()));
    let (header, rest) = buf
        .split_first_chunk::<CELL_HEADER_LEN>()
        .ok_or(need.clone())?;
    Ok((header, rest.first_chunk::<CELL_BODY_LEN>().ok_or(need)?))
}

/// A read-only view of one cell at the front of a buffer.
#[derive(Clone, Copy, Debug)]
pub struct CellRef<'a> {
    header: &'a [u8; CELL_HEADER_LEN],
    body: &'a [u8; CELL_BODY_LEN],
}

impl<'a> CellRef<'a> {
    /// View the first [`CELL_LEN`] bytes of `buf`; `NeedMore` if shorter.
    /// Nothing is validated yet: [`CellRef::command`] checks the command,
    /// [`CellRef::to_cell`] checks everything.
    pub fn new(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let (header, body) = split(buf)?;
        Ok(CellRef { header, body })
    }

    /// The circuit id.
    pub fn circ(&self) -> CircuitId {
        let h = self.header;
        CircuitId(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
    }

    /// The command, if known.
    pub fn command(&self) -> Result<Command, DecodeError> {
        Command::from_byte(self.header[4])
    }

    /// The body, unvalidated.
    pub fn body(&self) -> &'a [u8; CELL_BODY_LEN] {
        self.body
    }

    /// Fully validate and copy out an owned [`Cell`].
    pub fn to_cell(&self) -> Result<Cell, DecodeError> {
        parse_cell(self.circ(), self.header[4], self.body)
    }
}

/// A mutable view of one cell inside a buffer: the relay's in-place path.
#[derive(Debug)]
pub struct CellMut<'a> {
    header: &'a mut [u8; CELL_HEADER_LEN],
    body: &'a mut [u8; CELL_BODY_LEN],
}

impl<'a> CellMut<'a> {
    /// View the first [`CELL_LEN`] bytes of `buf`; `NeedMore` if shorter.
    pub fn new(buf: &'a mut [u8]) -> Result<Self, DecodeError> {
        let short = CELL_LEN.saturating_sub(buf.len());
        let (header, rest) = buf
            .split_first_chunk_mut::<CELL_HEADER_LEN>()
            .ok_or(DecodeError::NeedMore(short))?;
        let body = rest
            .first_chunk_mut::<CELL_BODY_LEN>()
            .ok_or(DecodeError::NeedMore(short))?;
        Ok(CellMut { header, body })
    }

    /// The circuit id.
    pub fn circ(&self) -> CircuitId {
        let h = &self.header;
        CircuitId(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
    }

    /// The command, if known.
    pub fn command(&self) -> Result<Command, DecodeError> {
        Command::from_byte(self.header[4])
    }

    /// Rewrite the circuit id, as a relay does when it forwards the cell
    /// onto the next link (ids are local to a link).
    pub fn set_circ(&mut self, circ: CircuitId) {
        self.header[..4].copy_from_slice(&circ.0.to_be_bytes());
    }

    /// The body, for in-place relay crypto.
    pub fn body_mut(&mut self) -> &mut [u8; CELL_BODY_LEN] {
        self.body
    }

    /// A read-only view of the same cell.
    pub fn as_ref(&self) -> CellRef<'_> {
        CellRef {
            header: self.header,
            body: self.body,
        }
    }
}

/// Sans-IO stream decoder: feed it the bytes a link receives, in any
/// chunking, and take whole cells out, owned or in place.
///
/// Bytes live in one growable buffer; consumed cells are reclaimed by
/// moving the unread tail to the front only when that tail is short, so
/// the amortised cost per cell is a fraction of one copy.
#[derive(Debug, Default)]
pub struct CellReader {
    buf: Vec<u8>,
    /// First unread byte.
    start: usize,
    /// One past the last received byte; `buf[end..]` is scratch space.
    end: usize,
}

impl CellReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes received and not yet taken out as cells.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whole cells ready to be taken out.
    pub fn whole_cells(&self) -> usize {
        self.buffered() / CELL_LEN
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.spare_mut(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// At least `at_least` bytes of writable space after the buffered ones,
    /// so a socket can read straight into the reader; report how many bytes
    /// were written with [`CellReader::commit`].
    pub fn spare_mut(&mut self, at_least: usize) -> &mut [u8] {
        self.reclaim();
        let want = self.end + at_least;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Mark `n` bytes written into [`CellReader::spare_mut`] as received
    /// (clamped to the space that exists).
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Take the next cell out, validated and owned. `None` until a whole cell
    /// is buffered. A malformed cell is consumed too, so the caller can count
    /// it and go on (or close the link).
    pub fn next_cell(&mut self) -> Option<Result<Cell, DecodeError>> {
        let cell = CellRef::new(&self.buf[self.start..self.end]).ok()?;
        let result = cell.to_cell();
        self.start += CELL_LEN;
        Some(result)
    }

    /// Take the next cell out as an in-place mutable view. `None` until a
    /// whole cell is buffered.
    pub fn next_mut(&mut self) -> Option<CellMut<'_>> {
        let at = self.start;
        if self.end - at < CELL_LEN {
            return None;
        }
        self.start += CELL_LEN;
        CellMut::new(&mut self.buf[at..at + CELL_LEN]).ok()
    }

    /// All whole buffered cells as one slice, for batch processing with
    /// `chunks_exact_mut(CELL_LEN)`; mark them used with
    /// [`CellReader::consume_cells`].
    pub fn whole_cells_mut(&mut self) -> &mut [u8] {
        let n = self.whole_cells() * CELL_LEN;
        &mut self.buf[self.start..self.start + n]
    }

    /// Drop the first `n` whole cells (clamped to those buffered).
    pub fn consume_cells(&mut self, n: usize) {
        self.start += n.min(self.whole_cells()) * CELL_LEN;
    }

    /// Move the unread tail to the front when that is cheap (it is shorter
    /// than one cell or than what was already consumed).
    fn reclaim(&mut self) {
        if self.start == 0 {
            return;
        }
        let tail = self.end - self.start;
        if tail == 0 || tail < CELL_LEN || tail <= self.start {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = tail;
        }
    }
}
