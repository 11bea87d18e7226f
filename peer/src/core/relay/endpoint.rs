//! The local ends of circuits: the originator (which holds every hop's
//! layer) and the exit (which holds the last layer).
//!
//! An endpoint sends by wrapping a plaintext DATA body in its layers and
//! appending the cell to its link's outbound buffer, one cell per unit of
//! credit; it receives plaintext bodies from the queue of its link side,
//! and taking them is what returns credit upstream. So a reader that stops
//! taking stops the sender after one window.

use super::table::{Circuit, Crypto, Dir, End, Flow, Side, Stage};
use super::{take_credit, CircKey, RelayCore};
use anomos_common::cell::{
    BreakReason, CellMsg, Command, CELL_BODY_LEN, CELL_HEADER_LEN, CELL_LEN, CREATE_CODE_LEN,
};
use anomos_common::relay_crypto::OriginLayers;
use anomos_common::Nid;
use std::time::Instant;

/// Why an endpoint operation did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No credit: wait for `Output::Writable`.
    #[error("no credit")]
    NoCredit,
    /// The circuit is not open yet.
    #[error("circuit not open")]
    NotOpen,
    /// The circuit is gone.
    #[error("circuit closed")]
    Closed,
}

/// Why a circuit could not be originated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    /// Every circuit id of our side of that link is in use, or the table is full.
    #[error("no room for another circuit")]
    Full,
}

impl RelayCore {
    /// Open a circuit from a grant whose own layer the shell already peeled:
    /// CREATE(`code`) on the link named `nid`. Resolves with
    /// `Output::Confirmed` or `Output::Closed`. A grant often comes with the
    /// announce answer that assigned that neighbour, so its link may still
    /// be being dialled: then the circuit waits for it like a relay's does
    /// (`AwaitingLink`, at most `link_wait`, then `Closed` with
    /// BREAK(refused)) rather than fail a set-up that was never tried.
    pub fn originate(
        &mut self,
        now: Instant,
        nid: Nid,
        code: &[u8; CREATE_CODE_LEN],
        layers: OriginLayers,
    ) -> Result<CircKey, OriginateError> {
        if self.circuits.len() >= self.cfg.max_circuits {
            return Err(OriginateError::Full);
        }
        let key = CircKey(self.fresh_id());
        self.circuits.insert(
            key,
            Circuit {
                back: Side {
                    end: End::Local,
                    flow: Flow::new(self.cfg.window),
                },
                fwd: None,
                stage: Stage::AwaitingLink {
                    nid,
                    deadline: now + self.cfg.link_wait,
                },
                crypto: Crypto::Origin(Box::new(layers)),
            },
        );
        let link = self
            .link_of(nid)
            .filter(|l| self.links.get(l).is_some_and(|s| !s.closing));
        let code = Box::new(*code);
        match link {
            Some(link) => {
                if !self.create_on(now, key, link, code) {
                    self.circuits.remove(&key);
                    return Err(OriginateError::Full);
                }
            }
            None => self.awaiting.entry(nid).or_default().push((key, code)),
        }
        self.metrics.circuits_active.set(self.circuits.len() as i64);
        Ok(key)
    }

    /// DATA cells the endpoint may send now.
    pub fn endpoint_credit(&self, key: CircKey) -> Result<u32, EndpointError> {
        let c = self.circuits.get(&key).ok_or(EndpointError::Closed)?;
        let dir = c.endpoint_dir().ok_or(EndpointError::Closed)?;
        if c.stage != Stage::Open {
            return Err(EndpointError::NotOpen);
        }
        Ok(c.side(dir).map_or(0, |s| s.flow.send_credit))
    }

    /// Send one plaintext DATA body (encrypted in place with the endpoint's
    /// layers). Uses one unit of credit.
    pub fn endpoint_send(
        &mut self,
        key: CircKey,
        body: &mut [u8; CELL_BODY_LEN],
    ) -> Result<(), EndpointError> {
        if self.endpoint_credit(key)? == 0 {
            return Err(EndpointError::NoCredit);
        }
        let sent = self.send_bodies(key, 1, |b| {
            b.copy_from_slice(&body[..]);
            true
        });
        match sent {
            Ok(1) => Ok(()),
            Ok(_) | Err(None) => Err(EndpointError::Closed),
            Err(Some(e)) => Err(e),
        }
    }

    /// Send up to `max` DATA bodies, as many as credit allows, writing each
    /// straight into the link's outbound buffer: `fill` gets a zeroed body
    /// there and writes the plaintext (returning `false` to stop: that body
    /// is not sent), then the endpoint's layers go over every body of the
    /// batch at once. Returns how many were sent (each uses one unit of
    /// credit); 0 with no credit. The bulk path of a circuit end, with no
    /// copy of the body and one table look-up per batch. If the layers
    /// cannot be applied the batch is dropped and the circuit broken
    /// (BREAK(protocol), `Output::Closed`): the bodies `fill` wrote are
    /// lost, so the circuit could not go on.
    pub fn endpoint_send_with(
        &mut self,
        now: Instant,
        key: CircKey,
        max: usize,
        fill: impl FnMut(&mut [u8; CELL_BODY_LEN]) -> bool,
    ) -> Result<usize, EndpointError> {
        match self.send_bodies(key, max, fill) {
            Ok(n) => Ok(n),
            Err(Some(e)) => Err(e),
            Err(None) => {
                self.kill(now, key, BreakReason::Protocol, None);
                Err(EndpointError::Closed)
            }
        }
    }

    /// [`RelayCore::endpoint_send_with`] without the break: `Err(None)` if
    /// the layers failed (nothing was sent).
    fn send_bodies(
        &mut self,
        key: CircKey,
        max: usize,
        mut fill: impl FnMut(&mut [u8; CELL_BODY_LEN]) -> bool,
    ) -> Result<usize, Option<EndpointError>> {
        let c = self.circuits.get_mut(&key).ok_or(EndpointError::Closed)?;
        let dir = c.endpoint_dir().ok_or(EndpointError::Closed)?;
        if c.stage != Stage::Open {
            return Err(Some(EndpointError::NotOpen));
        }
        // Checked before `fill` seals anything that could not be sent.
        let wraps = matches!(
            (&c.crypto, dir),
            (Crypto::Origin(_), Dir::Fwd) | (Crypto::Relay(_), Dir::Back)
        );
        let side = c.side(dir).filter(|_| wraps).ok_or(EndpointError::Closed)?;
        let End::Link(link, circ) = side.end else {
            return Err(Some(EndpointError::Closed));
        };
        let want = max.min(side.flow.send_credit as usize);
        let out = self.links.get_mut(&link).filter(|l| !l.closing);
        let out = &mut out.ok_or(EndpointError::Closed)?.out;
        let start = out.len();
        let mut header = [0u8; CELL_HEADER_LEN];
        header[..4].copy_from_slice(&circ.0.to_be_bytes());
        header[4] = Command::Data as u8;
        let mut sent = 0;
        while sent < want {
            let at = out.len();
            out.extend_from_slice(&header);
            out.resize(at + CELL_LEN, 0);
            let body: &mut [u8; CELL_BODY_LEN] = (&mut out[at + CELL_HEADER_LEN..])
                .try_into()
                .map_err(|_| EndpointError::Closed)?;
            if !fill(body) {
                out.truncate(at);
                break;
            }
            sent += 1;
        }
        let wrapped = match (&mut c.crypto, dir) {
            (Crypto::Origin(o), Dir::Fwd) => o.wrap_forward_cells(&mut out[start..]).is_ok(),
            (Crypto::Relay(l), Dir::Back) => l.add_backward_cells(&mut out[start..]).is_ok(),
            _ => false,
        };
        if !wrapped {
            // Never half-wrapped cells on the wire.
            out.truncate(start);
            return Err(None);
        }
        if sent > 0 {
            if let Some(s) = c.side_mut(dir) {
                s.flow.send_credit -= sent as u32;
            }
            if let Some(l) = self.links.get_mut(&link) {
                if !l.dirty {
                    l.dirty = true;
                    self.dirty.push(link);
                }
            }
        }
        Ok(sent)
    }

    /// Take up to `max` received plaintext bodies (`CELL_BODY_LEN` bytes
    /// each, appended to `out`); returns how many. Returns credit upstream.
    pub fn endpoint_recv(
        &mut self,
        key: CircKey,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, EndpointError> {
        let cells = self.endpoint_peek(key, max)?;
        let n = cells.len() / CELL_LEN;
        for cell in cells.chunks_exact(CELL_LEN) {
            out.extend_from_slice(&cell[CELL_HEADER_LEN..]);
        }
        self.endpoint_consume(key, n)?;
        Ok(n)
    }

    /// Up to `max` received cells at the front of the endpoint's queue, back
    /// to back (`CELL_LEN` bytes each, the plaintext body at
    /// `CELL_HEADER_LEN..`), without taking them: the shell opens the
    /// records straight from here, then calls
    /// [`RelayCore::endpoint_consume`].
    pub fn endpoint_peek(&self, key: CircKey, max: usize) -> Result<&[u8], EndpointError> {
        let c = self.circuits.get(&key).ok_or(EndpointError::Closed)?;
        let dir = c.endpoint_dir().ok_or(EndpointError::Closed)?;
        let side = c.side(dir).ok_or(EndpointError::Closed)?;
        Ok(side.flow.queue.front(max))
    }

    /// Take the first `n` received cells (clamped to those queued): they
    /// left the queue, so credit goes back upstream once half a window has.
    pub fn endpoint_consume(&mut self, key: CircKey, n: usize) -> Result<(), EndpointError> {
        let window = self.cfg.window;
        let c = self.circuits.get_mut(&key).ok_or(EndpointError::Closed)?;
        let dir = c.endpoint_dir().ok_or(EndpointError::Closed)?;
        let side = c.side_mut(dir).ok_or(EndpointError::Closed)?;
        let n = n.min(side.flow.queue.len());
        side.flow.queue.pop(n);
        self.metrics.queued_cells.sub(n as i64);
        side.flow.uncredited += n as u32;
        let credit = take_credit(&mut side.flow, window);
        if let (Some(credit), End::Link(link, circ)) = (credit, side.end) {
            self.send_ctrl(link, circ, CellMsg::Credit(credit));
        }
        Ok(())
    }

    /// Close a local endpoint's circuit (BREAK(destroyed) on its link). No
    /// `Closed` output follows for it.
    pub fn endpoint_close(&mut self, now: Instant, key: CircKey) {
        if self
            .circuits
            .get(&key)
            .and_then(|c| c.endpoint_dir())
            .is_none()
        {
            return;
        }
        self.kill(now, key, BreakReason::Destroyed, None);
        // The caller asked for it: drop the `Closed` for its own end.
        self.outputs
            .retain(|o| !matches!(o, super::Output::Closed { key: k, .. } if *k == key));
    }
}
