//! Circuit ends: the originator's set-up, the exit's responder, and the
//! pumps that turn a [`CircuitStream`] into e2e records in DATA cells.
//!
//! The application holds one half of a bounded `DuplexStream`; two local
//! tasks drive the other half. Upstream: bytes → records of at most
//! `MAX_RECORD_PLAINTEXT` → DATA bodies, one per unit of credit. Downstream:
//! bodies are taken from the core (which returns credit) only after the
//! previous batch was written to the application, so an application that
//! stops reading stops the sender after one window.
//!
//! End of stream: an empty record is FIN. When a side has sent and
//! received FIN it closes the circuit (BREAK(destroyed)); relays forward a
//! BREAK only behind the DATA queued ahead of it in its direction, so the
//! other side has read our FIN before our BREAK reaches it. Each direction
//! of the application's stream ends on its own: reads end cleanly (EOF)
//! after every byte that arrived if FIN was received, with an error
//! otherwise; writes fail once the circuit ends before our FIN was sent.
//! A clean close (both FINs) is never an error, whichever side breaks.

use super::{peel_blocking, CircuitError, EpIo, Inner};
use crate::core::relay::{CircKey, EndpointError};
use anomos_common::api::CircuitGrant;
use anomos_common::cell::{BreakReason, CELL_BODY_LEN, CREATE_CODE_LEN};
use anomos_common::crypto::CircuitSecret;
use anomos_common::e2e::{Channel, Initiator, Responder, MAX_RECORD_PLAINTEXT, RECORD_OVERHEAD};
use anomos_common::onion::Peeled;
use anomos_common::relay_crypto::{DataBody, OriginLayers};
use anomos_common::InfoHash;
use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

/// Bytes buffered between the application and the pump, each way.
const DUPLEX_BUF: usize = 256 * 1024;
/// Bodies taken from the core per batch.
const RECV_BATCH: usize = 64;
/// Status of one direction: open (or ended cleanly), or `BROKEN + reason`.
const OPEN: u8 = 0;
const BROKEN: u8 = 16;

/// How each direction of a stream ended, shared with the pumps.
#[derive(Debug, Default)]
struct Status {
    /// Broken if the circuit ended before FIN arrived.
    read: AtomicU8,
    /// Broken if the circuit ended before our FIN went out.
    write: AtomicU8,
}

/// Mark one direction broken, unless it already is.
fn set_broken(dir: &AtomicU8, reason: BreakReason) {
    let broken = BROKEN + reason as u8;
    let _ = dir.compare_exchange(OPEN, broken, Ordering::AcqRel, Ordering::Acquire);
}

/// One open circuit end: an ordered, reliable, flow-controlled byte stream.
#[derive(Debug)]
pub struct CircuitStream {
    /// The torrent the circuit serves.
    pub infohash: InfoHash,
    /// Relays between the two ends (originator only; 0 at the exit).
    pub relays: usize,
    inner: DuplexStream,
    status: Arc<Status>,
}

impl CircuitStream {
    /// The BREAK reason if the circuit was broken without an orderly end
    /// of either direction.
    pub fn broken(&self) -> Option<&'static str> {
        self.read_broken().or_else(|| self.write_broken())
    }

    /// Reads end with this error (after every byte that arrived).
    fn read_broken(&self) -> Option<&'static str> {
        broken_reason(self.status.read.load(Ordering::Acquire))
    }

    /// Writes fail with this error.
    fn write_broken(&self) -> Option<&'static str> {
        broken_reason(self.status.write.load(Ordering::Acquire))
    }
}

fn broken_reason(status: u8) -> Option<&'static str> {
    let code = status.checked_sub(BROKEN)?;
    Some(BreakReason::from_byte(code).map_or("broken", BreakReason::name))
}

fn broken_error(reason: &'static str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        format!("circuit broken: {reason}"),
    )
}

impl AsyncRead for CircuitStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let want = buf.remaining() > 0;
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if want && buf.filled().len() == before => match self.read_broken()
            {
                Some(reason) => Poll::Ready(Err(broken_error(reason))),
                None => Poll::Ready(Ok(())),
            },
            other => other,
        }
    }
}

impl AsyncWrite for CircuitStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(reason) = self.write_broken() {
            return Poll::Ready(Err(broken_error(reason)));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Wait for the next body (one only: records may follow a handshake
/// message in the same queue) or the circuit's end.
async fn recv_one(inner: &Rc<Inner>, key: CircKey, ep: &EpIo) -> Result<Vec<u8>, CircuitError> {
    loop {
        let mut body = Vec::new();
        let got = inner.core.borrow_mut().endpoint_recv(key, 1, &mut body);
        inner.pump();
        match got {
            Ok(1) => {
                let body: &[u8; CELL_BODY_LEN] = body[..].try_into().map_err(|_| bad("body"))?;
                let data = DataBody::decode(body).map_err(|_| bad("handshake body"))?;
                return Ok(data.to_vec());
            }
            Ok(_) => ep.wake.notified().await,
            Err(_) => return Err(closed_error(ep)),
        }
    }
}

fn bad(what: &'static str) -> CircuitError {
    CircuitError::BadGrant(what)
}

fn closed_error(ep: &EpIo) -> CircuitError {
    let reason = ep.closed.borrow().as_ref().map(|(r, _)| *r);
    CircuitError::Broken(reason.unwrap_or(BreakReason::Destroyed))
}

/// Send one handshake message in a DATA body (credit is a full window).
fn send_plain(inner: &Rc<Inner>, key: CircKey, msg: &[u8]) -> Result<(), CircuitError> {
    let mut body = [0u8; CELL_BODY_LEN];
    DataBody::encode(msg, &mut body);
    let sent = inner.core.borrow_mut().endpoint_send(key, &mut body);
    inner.pump();
    sent.map_err(|_| CircuitError::Broken(BreakReason::Destroyed))
}

/// The originator's set-up.
pub(super) async fn originate(
    inner: &Rc<Inner>,
    grant: CircuitGrant,
) -> Result<CircuitStream, CircuitError> {
    if grant.layer_keys.is_empty() {
        return Err(bad("no hops"));
    }
    let Peeled::Relay {
        next_nid,
        next_code,
        ..
    } = peel_blocking(inner, &grant.code).await?
    else {
        return Err(bad("own layer is an exit layer"));
    };
    let layers = OriginLayers::new(&grant.layer_keys).map_err(|_| bad("layer keys"))?;
    let mut code = [0u8; CREATE_CODE_LEN];
    code.copy_from_slice(next_code.as_bytes());
    let key = inner
        .core
        .borrow_mut()
        .originate(Instant::now(), next_nid, &code, layers)?;
    let ep = Rc::new(EpIo::default());
    inner.endpoints.borrow_mut().insert(key, ep.clone());
    inner.pump();
    let setup = async {
        while !ep.confirmed.get() {
            if ep.closed.borrow().is_some() {
                return Err(closed_error(&ep));
            }
            ep.wake.notified().await;
        }
        let (initiator, init) = Initiator::new(&mut rand::rng(), &grant.circuit_secret)?;
        send_plain(inner, key, &init)?;
        let accept = recv_one(inner, key, &ep).await?;
        Ok(initiator.finish(&accept)?)
    };
    let timeout = inner.cfg.setup_timeout;
    let channel = match tokio::time::timeout(timeout, setup).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(fail(inner, key, e)),
        Err(_) => return Err(fail(inner, key, CircuitError::Timeout)),
    };
    let relays = grant.layer_keys.len() - 1;
    Ok(spawn_pumps(inner, key, ep, channel, grant.infohash, relays))
}

/// Close a circuit whose set-up failed.
fn fail(inner: &Rc<Inner>, key: CircKey, e: CircuitError) -> CircuitError {
    inner.core.borrow_mut().endpoint_close(Instant::now(), key);
    inner.endpoints.borrow_mut().remove(&key);
    inner.pump();
    e
}

/// The exit's side: answer INIT, then hand the stream to whoever serves
/// the torrent (or close the circuit if nobody takes it).
pub(super) async fn exit_task(
    inner: Rc<Inner>,
    key: CircKey,
    ep: Rc<EpIo>,
    infohash: InfoHash,
    secret: CircuitSecret,
) {
    let handshake = async {
        let init = recv_one(&inner, key, &ep).await?;
        let (channel, accept) = Responder::accept(&mut rand::rng(), &secret, &init)?;
        send_plain(&inner, key, &accept)?;
        Ok::<_, CircuitError>(channel)
    };
    let channel = match tokio::time::timeout(inner.cfg.setup_timeout, handshake).await {
        Ok(Ok(c)) => c,
        _ => {
            fail(&inner, key, CircuitError::Timeout);
            return;
        }
    };
    let stream = spawn_pumps(&inner, key, ep, channel, infohash, 0);
    let tx = inner.served.borrow().get(&infohash).cloned();
    if tx.is_none_or(|tx| tx.try_send(stream).is_err()) {
        fail(&inner, key, CircuitError::Timeout);
    }
}

/// Shared state of one end's two pumps.
struct Pump {
    inner: Rc<Inner>,
    key: CircKey,
    ep: Rc<EpIo>,
    channel: RefCell<Channel>,
    status: Arc<Status>,
    fin_sent: Cell<bool>,
    fin_received: Cell<bool>,
}

impl Pump {
    /// Both FINs done: the circuit has served its purpose.
    fn maybe_finish(&self) {
        if self.fin_sent.get() && self.fin_received.get() {
            self.inner
                .core
                .borrow_mut()
                .endpoint_close(Instant::now(), self.key);
            self.inner.endpoints.borrow_mut().remove(&self.key);
            self.inner.pump();
        }
    }

    /// The circuit ended with `reason`: each direction that had not ended
    /// with its FIN ends with an error.
    fn mark_ended(&self, reason: BreakReason) {
        if !self.fin_received.get() {
            set_broken(&self.status.read, reason);
        }
        if !self.fin_sent.get() {
            set_broken(&self.status.write, reason);
        }
    }

    /// End the stream with an error (unless it already ended cleanly) and
    /// close the circuit.
    fn break_with(&self, reason: BreakReason) {
        self.ep.reason.set(Some(reason));
        self.mark_ended(reason);
        self.inner
            .core
            .borrow_mut()
            .endpoint_close(Instant::now(), self.key);
        self.inner.endpoints.borrow_mut().remove(&self.key);
        if let Some(tx) = self.ep.closed_tx.borrow().as_ref() {
            let _ = tx.send(true);
        }
        self.ep.writable.notify_one();
        self.inner.pump();
    }
}

fn spawn_pumps(
    inner: &Rc<Inner>,
    key: CircKey,
    ep: Rc<EpIo>,
    channel: Channel,
    infohash: InfoHash,
    relays: usize,
) -> CircuitStream {
    let (app, pump_side) = tokio::io::duplex(DUPLEX_BUF);
    let (rd, wr) = tokio::io::split(pump_side);
    let status = Arc::new(Status::default());
    let (closed_tx, closed_rx) = tokio::sync::watch::channel(ep.closed.borrow().is_some());
    *ep.closed_tx.borrow_mut() = Some(closed_tx);
    let pump = Rc::new(Pump {
        inner: inner.clone(),
        key,
        ep,
        channel: RefCell::new(channel),
        status: status.clone(),
        fin_sent: Cell::new(false),
        fin_received: Cell::new(false),
    });
    tokio::task::spawn_local(upstream(pump.clone(), rd, closed_rx));
    tokio::task::spawn_local(downstream(pump, wr));
    CircuitStream {
        infohash,
        relays,
        inner: app,
        status,
    }
}

/// Application → circuit.
async fn upstream<R: AsyncRead + Unpin>(
    p: Rc<Pump>,
    mut rd: R,
    closed: tokio::sync::watch::Receiver<bool>,
) {
    if send_all(&p, &mut rd, closed).await {
        return p.maybe_finish();
    }
    // The circuit ended before our FIN: writes fail from now on. Keep
    // reading (and dropping) so a write blocked on a full buffer wakes up
    // and sees the error instead of waiting for ever.
    let reason = p.ep.reason.get().unwrap_or(BreakReason::Destroyed);
    set_broken(&p.status.write, reason);
    let mut sink = vec![0u8; 16 * 1024];
    while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Seal what the application writes into DATA bodies; `true` once FIN is
/// sent, `false` if the circuit ended first.
async fn send_all<R: AsyncRead + Unpin>(
    p: &Pump,
    rd: &mut R,
    mut closed: tokio::sync::watch::Receiver<bool>,
) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = rd.read(&mut buf) => r.unwrap_or(0),
            _ = closed.wait_for(|c| *c) => return false,
        };
        let fin: [&[u8]; 1] = [&[]];
        let chunks: Vec<&[u8]> = if n == 0 {
            fin.to_vec()
        } else {
            buf[..n].chunks(MAX_RECORD_PLAINTEXT).collect()
        };
        for chunk in chunks {
            loop {
                let credit = p.inner.core.borrow().endpoint_credit(p.key);
                match credit {
                    Ok(c) if c > 0 => break,
                    Ok(_) => {
                        p.inner.pump();
                        tokio::select! {
                            _ = p.ep.writable.notified() => {}
                            _ = closed.wait_for(|c| *c) => return false,
                        }
                    }
                    Err(_) => return false,
                }
            }
            let mut body = [0u8; CELL_BODY_LEN];
            let len = chunk.len();
            body[2..2 + len].copy_from_slice(chunk);
            let Ok(tag) = p.channel.borrow_mut().seal_in_place(&mut body[2..2 + len]) else {
                p.break_with(BreakReason::Protocol);
                return false;
            };
            body[2 + len..2 + len + RECORD_OVERHEAD].copy_from_slice(&tag);
            body[..2].copy_from_slice(&((len + RECORD_OVERHEAD) as u16).to_be_bytes());
            let sent = p.inner.core.borrow_mut().endpoint_send(p.key, &mut body);
            if sent.is_err() {
                return false;
            }
        }
        p.inner.pump();
        if n == 0 {
            p.fin_sent.set(true);
            return true;
        }
    }
}

/// Circuit → application.
async fn downstream<W: AsyncWrite + Unpin>(p: Rc<Pump>, mut wr: W) {
    let mut bodies = Vec::new();
    let mut plain = Vec::new();
    loop {
        bodies.clear();
        plain.clear();
        let got = p
            .inner
            .core
            .borrow_mut()
            .endpoint_recv(p.key, RECV_BATCH, &mut bodies);
        p.inner.pump();
        let closed = match got {
            Ok(0) => {
                p.ep.wake.notified().await;
                continue;
            }
            Ok(_) => None,
            Err(EndpointError::Closed) => {
                let (reason, leftover) =
                    p.ep.closed
                        .borrow_mut()
                        .take()
                        .unwrap_or((BreakReason::Destroyed, Vec::new()));
                bodies = leftover;
                Some(reason)
            }
            Err(_) => {
                p.ep.wake.notified().await;
                continue;
            }
        };
        if open_bodies(&p, &bodies, &mut plain).is_err() {
            return p.break_with(BreakReason::Protocol);
        }
        if !plain.is_empty() && wr.write_all(&plain).await.is_err() {
            // The application dropped its stream.
            return p.break_with(BreakReason::Destroyed);
        }
        if let Some(reason) = closed {
            p.mark_ended(reason);
            if let Some(tx) = p.ep.closed_tx.borrow().as_ref() {
                let _ = tx.send(true);
            }
            let _ = wr.shutdown().await;
            return;
        }
        if p.fin_received.get() {
            let _ = wr.shutdown().await;
            return p.maybe_finish();
        }
    }
}

/// Open each body's record; an empty record is FIN.
fn open_bodies(p: &Pump, bodies: &[u8], plain: &mut Vec<u8>) -> Result<(), ()> {
    for body in bodies.chunks_exact(CELL_BODY_LEN) {
        let body: &[u8; CELL_BODY_LEN] = body.try_into().map_err(|_| ())?;
        let record = DataBody::decode(body).map_err(|_| ())?;
        let mut record = record.to_vec();
        let opened = p
            .channel
            .borrow_mut()
            .open_in_place(&mut record)
            .map_err(|_| ())?
            .len();
        if p.fin_received.get() {
            return Err(()); // Nothing may follow FIN.
        }
        if opened == 0 {
            p.fin_received.set(true);
        }
        plain.extend_from_slice(&record[..opened]);
    }
    Ok(())
}
