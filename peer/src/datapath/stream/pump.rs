//! The data path's side of a circuit end: opens arriving records into the
//! pipe, seals the application's bytes into cells, and ends the stream.
//!
//! Downstream, bodies are opened straight from the core's queue into the
//! pipe's `down` buffer, and taken from the core (which returns credit)
//! only as far as `down` has room; so an application that stops reading
//! stops the sender after one window plus one buffer. The data path does
//! this inline when the core reports the circuit readable, without waking
//! any task. Upstream, the pump task seals `up` into DATA bodies written
//! directly into the link's outbound buffer, one per unit of credit.
//!
//! End of stream: an empty record is FIN; when a side has sent and received
//! FIN it closes the circuit (BREAK(destroyed)). See the parent module for
//! how each direction of the application's stream ends.

use super::pipe::{Pipe, PipeState};
use crate::core::relay::CircKey;
use crate::datapath::{EpIo, Inner};
use anomos_common::cell::{BreakReason, CELL_BODY_LEN, CELL_HEADER_LEN, CELL_LEN};
use anomos_common::e2e::{Channel, MAX_RECORD_PLAINTEXT};
use anomos_common::relay_crypto::DataBody;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

/// Why the stream must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// A record did not open, had bad framing, or followed FIN; or ours
    /// could not be sealed.
    Protocol,
    /// Data arrived for an application that dropped its stream.
    Unread,
}

/// The data path's state of one circuit end.
pub(crate) struct Pump {
    inner: Rc<Inner>,
    key: CircKey,
    ep: Rc<EpIo>,
    channel: RefCell<Channel>,
    pipe: Arc<Pipe>,
    fin_sent: Cell<bool>,
    fin_received: Cell<bool>,
    /// Set once the stream failed (handled by the task).
    failure: Cell<Option<Failure>>,
    /// Bodies that arrived before the circuit ended (`CELL_BODY_LEN`
    /// each), still to be opened, and how far.
    leftover: RefCell<Option<(BreakReason, Vec<u8>, usize)>>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("key", &self.key)
            .field("fin_sent", &self.fin_sent.get())
            .field("fin_received", &self.fin_received.get())
            .finish_non_exhaustive()
    }
}

impl Pump {
    pub(super) fn new(
        inner: Rc<Inner>,
        key: CircKey,
        ep: Rc<EpIo>,
        channel: Channel,
        pipe: Arc<Pipe>,
    ) -> Pump {
        Pump {
            inner,
            key,
            ep,
            channel: RefCell::new(channel),
            pipe,
            fin_sent: Cell::new(false),
            fin_received: Cell::new(false),
            failure: Cell::new(None),
            leftover: RefCell::new(None),
        }
    }

    /// Open what the core holds for us into `down`, as far as it has room,
    /// and take it from the core. Returns `true` if the task must look
    /// (FIN arrived or the downstream failed). Never calls back into
    /// [`Inner::pump`], so the data path may call it while acting on
    /// outputs.
    pub(crate) fn fill_down(&self) -> bool {
        if self.failure.get().is_some() {
            return true;
        }
        let fin_before = self.fin_received.get();
        let mut st = self.pipe.lock();
        let mut core = self.inner.core.borrow_mut();
        let mut opened_any = false;
        let mut failed = None;
        loop {
            let room = st.down.space() / MAX_RECORD_PLAINTEXT;
            if room == 0 {
                st.want_room = true;
                break;
            }
            let Ok(cells) = core.endpoint_peek(self.key, room) else {
                break;
            };
            if cells.is_empty() {
                break;
            }
            let bodies = cells.chunks_exact(CELL_LEN).map(|c| &c[CELL_HEADER_LEN..]);
            let (n, result) = self.open_bodies(&mut st, bodies);
            opened_any |= n > 0;
            let _ = core.endpoint_consume(self.key, n);
            if let Err(e) = result {
                failed = Some(e);
                break;
            }
        }
        drop(core);
        let reader = opened_any.then(|| st.reader.take()).flatten();
        drop(st);
        if let Some(w) = reader {
            w.wake();
        }
        if failed.is_some() {
            self.failure.set(failed);
        }
        failed.is_some() || self.fin_received.get() != fin_before
    }

    /// Open `bodies` in order into `down` (the caller checked the room).
    /// Returns how many were used (a failed one counts) and the outcome.
    fn open_bodies<'a>(
        &self,
        st: &mut PipeState,
        bodies: impl Iterator<Item = &'a [u8]>,
    ) -> (usize, Result<(), Failure>) {
        let mut channel = self.channel.borrow_mut();
        let mut used = 0;
        for body in bodies {
            used += 1;
            let record = match body.try_into().map(DataBody::decode) {
                Ok(Ok(r)) if !self.fin_received.get() => r,
                _ => return (used, Err(Failure::Protocol)),
            };
            let out = st.down.tail_mut(record.len());
            let Ok(n) = channel.open_into(record, out) else {
                return (used, Err(Failure::Protocol));
            };
            if n == 0 {
                self.fin_received.set(true);
                if st.down_end.is_none() {
                    st.down_end = Some(Ok(()));
                }
            } else if st.dropped {
                return (used, Err(Failure::Unread));
            } else {
                st.down.commit(n);
            }
        }
        (used, Ok(()))
    }

    /// Open the bodies left over from a circuit that ended, as far as
    /// `down` has room. `true` once all are done.
    fn drain_leftover(&self) -> bool {
        let mut slot = self.leftover.borrow_mut();
        let Some((_, bodies, at)) = slot.as_mut() else {
            return true;
        };
        let mut st = self.pipe.lock();
        let room = st.down.space() / MAX_RECORD_PLAINTEXT;
        let todo = bodies[*at..].chunks_exact(CELL_BODY_LEN);
        let (n, result) = self.open_bodies(&mut st, todo.take(room));
        *at += n * CELL_BODY_LEN;
        let reader = (n > 0).then(|| st.reader.take()).flatten();
        let done = result.is_err() || *at >= bodies.len();
        if !done {
            st.want_room = true;
        }
        drop(st);
        if let Some(w) = reader {
            w.wake();
        }
        done
    }

    /// Seal `up` (then FIN, once the application shut down or dropped its
    /// stream) into DATA bodies while there is credit. Returns `false` if
    /// the circuit is gone.
    fn send_up(&self) -> bool {
        let mut st = self.pipe.lock();
        let mut core = self.inner.core.borrow_mut();
        let mut channel = self.channel.borrow_mut();
        let before = st.up.len();
        let mut alive = true;
        loop {
            let fin_due = (st.up_closed || st.dropped) && !self.fin_sent.get();
            if st.up.is_empty() && !fin_due {
                st.want_bytes = true;
                break;
            }
            let bodies = st.up.len().div_ceil(MAX_RECORD_PLAINTEXT) + usize::from(fin_due);
            let sent = core.endpoint_send_with(Instant::now(), self.key, bodies, |body| {
                let take = st.up.len().min(MAX_RECORD_PLAINTEXT);
                if take == 0 && (!fin_due || self.fin_sent.get()) {
                    return false;
                }
                let Ok(len) = channel.seal_into(&st.up.filled()[..take], &mut body[2..]) else {
                    self.failure.set(Some(Failure::Protocol));
                    return false;
                };
                body[..2].copy_from_slice(&(len as u16).to_be_bytes());
                st.up.consume(take);
                if take == 0 {
                    self.fin_sent.set(true);
                }
                true
            });
            match sent {
                Ok(n) if n > 0 => {}
                // No credit (wait for `Writable`), or a seal failed.
                Ok(_) => break,
                Err(_) => {
                    alive = false;
                    break;
                }
            }
        }
        drop((core, channel));
        let writer = (st.up.len() < before).then(|| st.writer.take()).flatten();
        drop(st);
        if let Some(w) = writer {
            w.wake();
        }
        alive
    }

    /// The circuit ended with `reason`: each direction that had not ended
    /// with its FIN ends with an error (reads after the bytes that arrived).
    fn mark_ended(&self, reason: BreakReason) {
        let mut st = self.pipe.lock();
        if !self.fin_received.get() && st.down_end.is_none() {
            st.down_end = Some(Err(reason));
        }
        if !self.fin_sent.get() && st.up_err.is_none() {
            st.up_err = Some(reason);
        }
        let wakers = [st.reader.take(), st.writer.take()];
        drop(st);
        wakers.into_iter().flatten().for_each(Waker::wake);
    }

    /// Close the circuit ourselves (BREAK(destroyed) on the link).
    fn close(&self) {
        self.inner
            .core
            .borrow_mut()
            .endpoint_close(Instant::now(), self.key);
        self.inner.endpoints.borrow_mut().remove(&self.key);
        self.inner.pump();
    }

    /// End the stream with an error (unless it already ended cleanly) and
    /// close the circuit.
    fn break_with(&self, reason: BreakReason) {
        self.ep.reason.set(Some(reason));
        self.mark_ended(reason);
        self.close();
    }

    /// The task: runs until the stream has ended both ways.
    pub(super) async fn run(self: Rc<Self>) {
        loop {
            if let Some((reason, leftover)) = self.ep.closed.borrow_mut().take() {
                // The write side ends now; reads after what arrived.
                if !self.fin_sent.get() {
                    let mut st = self.pipe.lock();
                    st.up_err.get_or_insert(reason);
                    let w = st.writer.take();
                    drop(st);
                    w.into_iter().for_each(Waker::wake);
                }
                *self.leftover.borrow_mut() = Some((reason, leftover, 0));
            }
            if self.leftover.borrow().is_some() {
                if self.drain_leftover() {
                    let reason = self.leftover.borrow().as_ref().map(|l| l.0);
                    let reason = reason.unwrap_or(BreakReason::Destroyed);
                    let clean = self.fin_sent.get() && self.fin_received.get();
                    self.inner
                        .circuit_ended(self.ep.originated.get(), reason, clean);
                    return self.mark_ended(reason);
                }
            } else {
                self.fill_down();
                if !self.send_up() {
                    // Gone without a `Closed` of its own: wait for it.
                    self.ep.wake.notified().await;
                    continue;
                }
                self.inner.pump();
                match self.failure.get() {
                    Some(Failure::Protocol) => return self.break_with(BreakReason::Protocol),
                    Some(Failure::Unread) => return self.break_with(BreakReason::Destroyed),
                    None => {}
                }
                if self.fin_sent.get() && self.fin_received.get() {
                    return self.close();
                }
            }
            tokio::select! {
                _ = self.pipe.pump.notified() => {}
                _ = self.ep.writable.notified() => {}
                _ = self.ep.wake.notified() => {}
            }
        }
    }
}
