//! Circuit ends: the originator's set-up, the exit's responder, and
//! turning an open circuit into a [`CircuitStream`].
//!
//! After the e2e handshake (run here with single DATA bodies) each end
//! gets a [`pipe::Pipe`] shared with the application's [`CircuitStream`]
//! and a [`pump::Pump`] on the data path's thread: records of at most
//! `MAX_RECORD_PLAINTEXT` bytes, one per DATA body and unit of credit,
//! sealed from and opened into the pipe's buffers directly.
//!
//! End of stream: an empty record is FIN. When a side has sent and
//! received FIN it closes the circuit (BREAK(destroyed)); relays forward a
//! BREAK only behind the DATA queued ahead of it in its direction, so the
//! other side has read our FIN before our BREAK reaches it. Each direction
//! of the application's stream ends on its own: reads end cleanly (EOF)
//! after every byte that arrived if FIN was received, with an error
//! otherwise; writes fail once the circuit ends before our FIN was sent.
//! A clean close (both FINs) is never an error, whichever side breaks.

mod pipe;
mod pump;

pub use pipe::CircuitStream;
pub(crate) use pump::Pump;

use super::peel::peel;
use super::{CircuitError, EpIo, Inner};
use crate::core::relay::CircKey;
use anomos_common::api::CircuitGrant;
use anomos_common::cell::{BreakReason, CELL_BODY_LEN, CREATE_CODE_LEN};
use anomos_common::crypto::CircuitSecret;
use anomos_common::e2e::{Channel, Initiator, Responder};
use anomos_common::onion::Peeled;
use anomos_common::relay_crypto::{DataBody, OriginLayers};
use anomos_common::InfoHash;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

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
    } = peel(inner, &grant.code).await?
    else {
        return Err(bad("own layer is an exit layer"));
    };
    let mut code = [0u8; CREATE_CODE_LEN];
    code.copy_from_slice(next_code.as_bytes());
    let layers = OriginLayers::new(&grant.layer_keys).map_err(|_| bad("layer keys"))?;
    // A first hop whose link is still being dialled is waited for in the
    // core (`AwaitingLink`), like a relay's next hop.
    let key = inner
        .core
        .borrow_mut()
        .originate(Instant::now(), next_nid, &code, layers)?;
    let ep = Rc::new(EpIo::default());
    ep.originated.set(true);
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
    let mut stream = spawn_pumps(inner, key, ep, channel, grant.infohash, relays, 0);
    stream.grant = Some(grant.id);
    Ok(stream)
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
    credit: u8,
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
    let stream = spawn_pumps(&inner, key, ep, channel, infohash, 0, credit);
    let tx = inner.served.borrow().get(&infohash).cloned();
    if tx.is_none_or(|tx| tx.try_send(stream).is_err()) {
        fail(&inner, key, CircuitError::Timeout);
    }
}

/// Hand an open channel to a pipe and its pump; the application's end.
fn spawn_pumps(
    inner: &Rc<Inner>,
    key: CircKey,
    ep: Rc<EpIo>,
    channel: Channel,
    infohash: InfoHash,
    relays: usize,
    credit: u8,
) -> CircuitStream {
    let pipe = Arc::new(pipe::Pipe::default());
    let pump = Rc::new(Pump::new(
        inner.clone(),
        key,
        ep.clone(),
        channel,
        pipe.clone(),
    ));
    *ep.pump.borrow_mut() = Rc::downgrade(&pump);
    tokio::task::spawn_local(pump.run());
    CircuitStream::new(infohash, relays, credit, pipe)
}
