//! The application's half of a circuit end: [`CircuitStream`], and the
//! [`Pipe`] it shares with the data path's pump.
//!
//! The pipe holds two bounded byte buffers (plaintext): `down` (circuit →
//! application) and `up` (application → circuit). The pump opens e2e
//! records straight into `down` and seals records straight out of `up`
//! into cells in the link's outbound buffer, so between a cell and the
//! application's own buffer there is one copy each way (the application's
//! read or write) instead of a detour through a duplex stream and its
//! pump's buffers. The application may live on another thread (the stream
//! is `Send`), so the buffers sit behind a mutex, held only for the copy.
//!
//! Wake-ups are kept to one per batch: the pump sleeps on [`Pipe::pump`]
//! and is woken only when it asked for it (`want_bytes`: `up` was empty;
//! `want_room`: `down` was full, and then only once a quarter of it is
//! free again). The application's tasks are woken through their wakers.

use crate::core::copy;
use anomos_common::cell::BreakReason;
use anomos_common::InfoHash;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Bytes buffered between the application and the circuit, each way.
pub(super) const PIPE_BUF: usize = 256 * 1024;
/// Free bytes in `down` before a pump waiting for room is woken.
const ROOM_WAKE: usize = PIPE_BUF / 4;

/// A bounded byte buffer: appended at the tail, taken from the head. The
/// storage is allocated on first use (idle circuits hold none) and keeps
/// its size while the stream lives.
#[derive(Default)]
pub(super) struct ByteBuf {
    buf: Vec<u8>,
    head: usize,
    tail: usize,
}

impl ByteBuf {
    /// Bytes held.
    pub(super) fn len(&self) -> usize {
        self.tail - self.head
    }

    pub(super) fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    /// Bytes that still fit.
    pub(super) fn space(&self) -> usize {
        PIPE_BUF - self.len()
    }

    /// The bytes held, oldest first.
    pub(super) fn filled(&self) -> &[u8] {
        &self.buf[self.head..self.tail]
    }

    /// Free space at the tail, contiguous, at least `min(want, space())`
    /// bytes (the held bytes move to the front if that is needed).
    pub(super) fn tail_mut(&mut self, want: usize) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; PIPE_BUF];
        }
        if PIPE_BUF - self.tail < want && self.head > 0 {
            copy::to_front(&mut self.buf[..self.tail], self.head);
            self.tail -= self.head;
            self.head = 0;
        }
        &mut self.buf[self.tail..]
    }

    /// `n` bytes were written into [`ByteBuf::tail_mut`].
    pub(super) fn commit(&mut self, n: usize) {
        self.tail = (self.tail + n).min(self.buf.len());
    }

    /// Drop the first `n` bytes (clamped).
    pub(super) fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        }
    }
}

/// Everything both sides touch, under [`Pipe::state`].
#[derive(Default)]
pub(super) struct PipeState {
    /// Plaintext that arrived and the application has not read.
    pub down: ByteBuf,
    /// Set once nothing more arrives: `Ok` after FIN (reads end cleanly
    /// once `down` is empty), `Err(reason)` if the circuit ended first.
    pub down_end: Option<Result<(), BreakReason>>,
    pub reader: Option<Waker>,
    /// Plaintext the application wrote and the pump has not sealed.
    pub up: ByteBuf,
    /// The application shut its writing down: FIN follows `up`.
    pub up_closed: bool,
    /// Writes fail with this: the circuit ended before our FIN went out.
    pub up_err: Option<BreakReason>,
    pub writer: Option<Waker>,
    /// The application dropped its stream.
    pub dropped: bool,
    /// The pump waits for room in `down`.
    pub want_room: bool,
    /// The pump waits for bytes in `up` (or shutdown, or drop).
    pub want_bytes: bool,
}

impl PipeState {
    /// Why the circuit ended before our side read FIN, once known.
    fn read_broken(&self) -> Option<BreakReason> {
        self.down_end.and_then(Result::err)
    }
}

/// The state shared by a [`CircuitStream`] and its pump.
#[derive(Default)]
pub(super) struct Pipe {
    state: Mutex<PipeState>,
    /// Wakes the pump (it asked with `want_room` / `want_bytes`).
    pub pump: Notify,
}

impl Pipe {
    /// The state. A panic while it was held does not stop the other side:
    /// the buffers are consistent after every step.
    pub(super) fn lock(&self) -> MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open circuit end: an ordered, reliable, flow-controlled byte stream.
pub struct CircuitStream {
    /// The torrent the circuit serves.
    pub infohash: InfoHash,
    /// Relays between the two ends (originator only; 0 at the exit).
    pub relays: usize,
    /// The originator's credit tier as the tracker sealed it for the exit
    /// (exit only; 0 at the originator).
    pub credit: u8,
    /// The id of the tracker's grant the circuit was opened from
    /// (originator only).
    pub grant: Option<u64>,
    pipe: Arc<Pipe>,
}

impl std::fmt::Debug for CircuitStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitStream")
            .field("infohash", &self.infohash)
            .field("relays", &self.relays)
            .finish_non_exhaustive()
    }
}

impl CircuitStream {
    pub(super) fn new(
        infohash: InfoHash,
        relays: usize,
        credit: u8,
        pipe: Arc<Pipe>,
    ) -> CircuitStream {
        CircuitStream {
            infohash,
            relays,
            credit,
            grant: None,
            pipe,
        }
    }

    /// The BREAK reason if the circuit was broken without an orderly end
    /// of either direction.
    pub fn broken(&self) -> Option<&'static str> {
        let st = self.pipe.lock();
        st.read_broken().or(st.up_err).map(BreakReason::name)
    }
}

fn broken_error(reason: BreakReason) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("circuit broken: {}", reason.name()),
    )
}

/// Keep `waker` in `slot` (cloning only if it would not wake the same task).
fn park(slot: &mut Option<Waker>, waker: &Waker) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

impl AsyncRead for CircuitStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = self.pipe.lock();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if !st.down.is_empty() {
            let n = buf.remaining().min(st.down.len());
            for piece in st.down.filled()[..n].chunks(copy::PIECE) {
                buf.put_slice(piece);
            }
            st.down.consume(n);
            let wake = st.want_room && st.down.space() >= ROOM_WAKE;
            if wake {
                st.want_room = false;
            }
            drop(st);
            if wake {
                self.pipe.pump.notify_one();
            }
            return Poll::Ready(Ok(()));
        }
        match st.down_end {
            // After every byte that arrived: EOF if FIN came, else the error.
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(reason)) => Poll::Ready(Err(broken_error(reason))),
            None => {
                park(&mut st.reader, cx.waker());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for CircuitStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = self.pipe.lock();
        if let Some(reason) = st.up_err {
            return Poll::Ready(Err(broken_error(reason)));
        }
        if st.up_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = data.len().min(st.up.space());
        if n == 0 {
            park(&mut st.writer, cx.waker());
            return Poll::Pending;
        }
        copy::copy(&mut st.up.tail_mut(n)[..n], &data[..n]);
        st.up.commit(n);
        let wake = std::mem::take(&mut st.want_bytes);
        drop(st);
        if wake {
            self.pipe.pump.notify_one();
        }
        Poll::Ready(Ok(n))
    }

    /// Written bytes are already on their way: the pump seals them as soon
    /// as credit allows, whatever the application does next.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// FIN goes out after the bytes written before it.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = self.pipe.lock();
        st.up_closed = true;
        let wake = std::mem::take(&mut st.want_bytes);
        drop(st);
        if wake {
            self.pipe.pump.notify_one();
        }
        Poll::Ready(Ok(()))
    }
}

/// Dropping the stream sends what was written and FIN; data arriving after
/// that breaks the circuit (nobody reads it), a FIN closes it cleanly.
impl Drop for CircuitStream {
    fn drop(&mut self) {
        self.pipe.lock().dropped = true;
        self.pipe.pump.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The application may move its stream to another thread or task, as
    /// it could the duplex stream this replaced.
    #[test]
    fn the_stream_is_send_sync_and_unpin() {
        fn check<T: Send + Sync + Unpin + 'static>() {}
        check::<CircuitStream>();
    }

    #[test]
    fn byte_buf_wraps_by_moving_the_tail_to_the_front() {
        let mut b = ByteBuf::default();
        assert_eq!((b.len(), b.space()), (0, PIPE_BUF));
        let n = PIPE_BUF - 10;
        b.tail_mut(n)[..n].fill(1);
        b.commit(n);
        b.consume(n - 5);
        assert_eq!(b.filled(), [1; 5]);
        // 20 bytes do not fit after the tail: the 5 held move to the front.
        let t = b.tail_mut(20);
        assert!(t.len() >= 20);
        t[..20].fill(2);
        b.commit(20);
        assert_eq!(b.filled(), [[1u8; 5].as_slice(), &[2; 20]].concat());
        b.consume(100);
        assert!(b.is_empty());
        assert_eq!(b.space(), PIPE_BUF);
    }
}
