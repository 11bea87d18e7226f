//! The Neighbor actor: one per NID the tracker lists for us.
//!
//! States: `Dialing` (a dial is in flight), `Waiting` (the other end dials
//! us; inbound links arrive as [`LinkAccepted`]), `Up` (a verified link is
//! attached to the data path and watched), `Backoff` (a dial failed or the
//! link ended; the next dial is scheduled with exponential back-off and
//! jitter). A link that ends, or a streak of failed dials, is reported to
//! the Tracker actor ([`LinkFailed`] → early re-announce with the NID in
//! `failed_nids`); the actor keeps re-dialling while the tracker lists the
//! NID. [`DropNeighbour`] stops it: the link closes and the Relay actor
//! drops the NID at the data path.
//!
//! Architecture invariant: a link only reaches the data path after TLS, the
//! pin the tracker gave for this NID and the hello all checked out; a failed
//! attempt never touches the link that is up.

use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use anomos_common::api::Neighbour;
use anomos_common::{Nid, PeerId};
use openssl::ssl::SslConnector;

use super::relay::DropNid;
use super::{LinkWatch, Plane};
use crate::core::backoff::Backoff;
use crate::error::LinkError;
use crate::link::EstablishedLink;
use crate::metrics::Metrics;
use crate::net::dial::dial;
use crate::net::listen::report;

/// A Neighbor's mailbox: a few messages per announce and per link.
const MAILBOX: usize = 16;

/// The tracker lists the NID again (its address or dial flag may change).
/// Sent by the Tracker actor for every listed NID after each announce.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpdateNeighbour {
    /// The tracker's entry.
    pub neighbour: Neighbour,
}

/// An incoming link passed TLS, pin and hello checks for this NID. Sent by
/// the link listener to the Tracker actor, which forwards it to the NID's
/// Neighbor actor (it alone knows the Neighbor addresses).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LinkAccepted {
    /// The verified link.
    pub link: EstablishedLink,
}

/// The tracker no longer lists the NID: close the link and stop. Sent by
/// the Tracker actor (dropped NID, changed pin or address, or shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DropNeighbour;

/// The attached link ended. Sent by the actor to itself from the watch on
/// the link handle; `seq` tells a stale report from a replaced link.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct LinkClosed {
    /// Which attached link (counts up per attach).
    pub seq: u64,
    /// Why it ended, a fixed kind.
    pub reason: &'static str,
}

/// Query: the actor's state. Sent by tests and status pages.
#[derive(Debug, Message)]
#[rtype(result = "NeighborStatus")]
pub struct GetState;

/// Where a Neighbor actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborState {
    /// A dial is in flight.
    Dialing,
    /// Waiting for the neighbour to dial us.
    Waiting,
    /// A verified link is attached.
    Up,
    /// The next dial is scheduled.
    Backoff,
}

/// The answer to [`GetState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct NeighborStatus {
    /// The state.
    pub state: NeighborState,
    /// Failed dials in a row.
    pub failures: u32,
}

/// A failed link or a streak of failed dials. Sent by a Neighbor actor to
/// the Tracker actor, which reports the NID in `failed_nids` of an early
/// announce.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct LinkFailed {
    /// The NID.
    pub nid: Nid,
}

/// Shared by every Neighbor actor of a peer.
pub struct NeighborDeps<P: Plane> {
    /// The data path (links are attached here directly: one call per link).
    pub plane: P,
    /// Our peer id (for our hello).
    pub me: PeerId,
    /// TLS context for dialling.
    pub connector: SslConnector,
    /// Dial time budget.
    pub handshake_timeout: Duration,
    /// First re-dial delay.
    pub retry: Duration,
    /// Longest re-dial delay.
    pub retry_max: Duration,
    /// Failed dials in a row before the NID is reported.
    pub failures_reported: u32,
    /// Gauges and counters.
    pub metrics: Metrics,
    /// Where failures go (the Tracker actor).
    pub tracker: Recipient<LinkFailed>,
    /// Where a dropped NID goes (the Relay actor).
    pub relay: Recipient<DropNid>,
}

impl<P: Plane> std::fmt::Debug for NeighborDeps<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeighborDeps")
    }
}

/// The actor (see module docs).
pub struct Neighbor<P: Plane> {
    deps: Rc<NeighborDeps<P>>,
    n: Neighbour,
    state: NeighborState,
    link: Option<P::Link>,
    /// Counts attached links; a [`LinkClosed`] names the one it is about.
    seq: u64,
    /// The dial in flight or the scheduled re-dial.
    pending: Option<SpawnHandle>,
    backoff: Backoff,
}

impl<P: Plane> std::fmt::Debug for Neighbor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Neighbor({:?})", self.state)
    }
}

impl<P: Plane> Neighbor<P> {
    /// An actor for the tracker's entry `n`.
    pub fn new(deps: Rc<NeighborDeps<P>>, n: Neighbour) -> Self {
        let backoff = Backoff::new(deps.retry, deps.retry_max);
        Neighbor {
            deps,
            n,
            state: NeighborState::Waiting,
            link: None,
            seq: 0,
            pending: None,
            backoff,
        }
    }

    fn start_dial(&mut self, ctx: &mut Context<Self>) {
        self.state = NeighborState::Dialing;
        let (d, target) = (self.deps.clone(), self.n);
        let dialing = async move { dial(&d.connector, d.me, &target, d.handshake_timeout).await };
        let fut = dialing
            .into_actor(self)
            .map(|res, act, ctx| act.dialed(res, ctx));
        self.pending = Some(ctx.spawn(fut));
    }

    fn dialed(&mut self, res: Result<EstablishedLink, LinkError>, ctx: &mut Context<Self>) {
        self.pending = None;
        match res {
            Ok(link) if self.link.is_none() => self.attach(link, ctx),
            // An accepted link won the race: keep it.
            Ok(_) => {}
            Err(e) => {
                report(&self.deps.metrics, &e, "outgoing");
                let delay = self.backoff.fail(&mut rand::rng());
                if self.backoff.failures() == self.deps.failures_reported {
                    self.deps.tracker.do_send(LinkFailed { nid: self.n.nid });
                }
                self.retry_in(delay, ctx);
            }
        }
    }

    fn retry_in(&mut self, delay: Duration, ctx: &mut Context<Self>) {
        if !self.n.dial {
            self.state = NeighborState::Waiting;
            return;
        }
        self.state = NeighborState::Backoff;
        self.pending = Some(ctx.run_later(delay, |act, ctx| act.start_dial(ctx)));
    }

    fn attach(&mut self, link: EstablishedLink, ctx: &mut Context<Self>) {
        if let Some(p) = self.pending.take() {
            ctx.cancel_future(p);
        }
        let handle = self.deps.plane.attach_link(link);
        self.seq += 1;
        let seq = self.seq;
        let watch = handle.closed().into_actor(self);
        ctx.spawn(watch.map(move |reason, _, ctx| ctx.notify(LinkClosed { seq, reason })));
        self.link = Some(handle);
        self.state = NeighborState::Up;
        self.backoff.reset();
        tracing::debug!("neighbour link up");
    }
}

impl<P: Plane> Actor for Neighbor<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        if self.n.dial {
            self.start_dial(ctx);
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(link) = self.link.take() {
            link.close();
        }
        self.deps.relay.do_send(DropNid { nid: self.n.nid });
    }
}

impl<P: Plane> Handler<UpdateNeighbour> for Neighbor<P> {
    type Result = ();

    fn handle(&mut self, m: UpdateNeighbour, ctx: &mut Context<Self>) {
        self.n = m.neighbour;
        if self.n.dial && self.state == NeighborState::Waiting {
            self.start_dial(ctx);
        }
    }
}

impl<P: Plane> Handler<LinkAccepted> for Neighbor<P> {
    type Result = ();

    fn handle(&mut self, m: LinkAccepted, ctx: &mut Context<Self>) {
        if m.link.peer.0 != self.n.pin.0 {
            return;
        }
        let Some(old) = self.link.take() else {
            return self.attach(m.link, ctx);
        };
        // A verified link from the pinned peer while ours is up: the other
        // end saw ours die first. The data path refuses a second link for a
        // NID it holds, so wait (bounded, this actor only) until it has
        // forgotten the old one; later messages queue behind.
        old.close();
        let (closed, plane, nid) = (old.closed(), self.deps.plane.clone(), self.n.nid);
        let settled = async move {
            closed.await;
            settle(&plane, nid).await;
        };
        ctx.wait(
            settled
                .into_actor(self)
                .map(|(), act, ctx| act.attach(m.link, ctx)),
        );
    }
}

impl<P: Plane> Handler<LinkClosed> for Neighbor<P> {
    type Result = ();

    fn handle(&mut self, m: LinkClosed, ctx: &mut Context<Self>) {
        if m.seq != self.seq || self.link.is_none() {
            return;
        }
        self.link = None;
        tracing::info!(reason = m.reason, "neighbour link closed");
        self.deps.tracker.do_send(LinkFailed { nid: self.n.nid });
        let delay = self.backoff.fail(&mut rand::rng());
        self.retry_in(delay, ctx);
    }
}

impl<P: Plane> Handler<DropNeighbour> for Neighbor<P> {
    type Result = ();

    fn handle(&mut self, _: DropNeighbour, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl<P: Plane> Handler<GetState> for Neighbor<P> {
    type Result = NeighborStatus;

    fn handle(&mut self, _: GetState, _: &mut Context<Self>) -> NeighborStatus {
        NeighborStatus {
            state: self.state,
            failures: self.backoff.failures(),
        }
    }
}

/// Wait (bounded) until the data path no longer holds a link for `nid`:
/// it forgets a closed link in its own task.
async fn settle<P: Plane>(plane: &P, nid: Nid) {
    for _ in 0..200 {
        if !plane.links().iter().any(|(n, _)| *n == nid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
mod tests;
