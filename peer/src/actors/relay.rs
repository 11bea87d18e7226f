//! The Relay actor: the control side of the data path.
//!
//! The data path (`DataPath`) moves cells between link tasks by itself; this
//! actor owns it for everything that is not a cell: originating circuits
//! from the tracker's grants, serving infohashes at the exit, dropping NIDs,
//! the statistics the announce carries, and the ordered shutdown (BREAK every
//! circuit before the tracker hears `stopped`). It also consumes the data
//! path's events and turns them into messages to the Tracker actor, which
//! re-announces early with the failed NIDs.
//!
//! Architecture invariant: no handler here runs per cell, and none waits on
//! another actor; long operations (originate, shutdown) are futures whose
//! results go back to the sender, so the mailbox keeps moving.

use std::collections::HashMap;
use std::pin::Pin as StdPin;
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use anomos_common::api::CircuitGrant;
use anomos_common::{InfoHash, Nid, PeerId};
use tokio::sync::mpsc;

use super::{Plane, PlaneEvent};

/// Control messages queued at most; senders that may flood use `try_send`.
const MAILBOX: usize = 64;

/// Open a circuit from a grant and hand the stream to `deliver`. Sent by
/// the Tracker actor for each grant in an announce response; answers
/// `Err(kind)` when the circuit did not open or nobody took it.
pub struct Originate<S> {
    /// The tracker's grant.
    pub grant: CircuitGrant,
    /// The requester's receiving end (from `want_circuits`).
    pub deliver: mpsc::Sender<S>,
}

impl<S> std::fmt::Debug for Originate<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Originate({:?})", self.grant)
    }
}

impl<S: 'static> Message for Originate<S> {
    type Result = Result<(), &'static str>;
}

/// Accept circuits for `infohash` at the exit and hand them to `deliver`.
/// Sent by `RunningPeer::serve`; the Relay then tells the Tracker actor, so
/// the torrent is announced only once circuits for it are accepted.
pub struct Serve<S> {
    /// The torrent.
    pub infohash: InfoHash,
    /// Where accepted circuits go; dropping the receiver unserves.
    pub deliver: mpsc::Sender<S>,
}

impl<S> std::fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Serve")
    }
}

impl<S: 'static> Message for Serve<S> {
    type Result = ();
}

/// Refuse new circuits for `infohash` (open ones stay). Sent by
/// `RunningPeer::unserve`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unserve {
    /// The torrent.
    pub infohash: InfoHash,
}

/// The tracker dropped this NID: BREAK its circuits and close the link.
/// Sent by a Neighbor actor when it stops.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DropNid {
    /// The NID.
    pub nid: Nid,
}

/// Query: relayed bytes, links and circuits. Sent by the Tracker actor
/// before every announce (and by anyone wanting a status line).
#[derive(Debug, Message)]
#[rtype(result = "RelayStats")]
pub struct GetStats;

/// The answer to [`GetStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, MessageResponse)]
pub struct RelayStats {
    /// Bytes relayed for others, cumulative.
    pub relayed_bytes: u64,
    /// Links held now.
    pub links: Vec<(Nid, PeerId)>,
    /// Live circuits.
    pub circuits: usize,
}

/// BREAK every circuit, wait (bounded) for the acks, close the links, then
/// stop. Sent by the Tracker actor while it stops; answered when done.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A circuit this peer originated failed. Sent by the Relay actor to the
/// Tracker actor for each data path `CircuitFailed` event.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct CircuitFailed {
    /// The first hop's NID, if known.
    pub nids: Vec<Nid>,
}

/// A neighbour crossed the violation limit. Sent by the Relay actor to the
/// Tracker actor for each data path `Misbehaving` event.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct NeighbourMisbehaved {
    /// Its NID.
    pub nid: Nid,
}

/// The exit started or stopped serving a torrent. Sent by the Relay actor
/// to the Tracker actor after `Serve` / `Unserve` (or when the consumer of
/// a served torrent went away).
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ServingChanged {
    /// The torrent.
    pub infohash: InfoHash,
    /// Whether circuits for it are accepted now.
    pub serving: bool,
}

/// Where the Relay actor's reports go (the Tracker actor; recorders in tests).
#[derive(Clone)]
pub struct RelayReports {
    /// Failed originated circuits.
    pub circuit_failed: Recipient<CircuitFailed>,
    /// Misbehaving neighbours.
    pub misbehaved: Recipient<NeighbourMisbehaved>,
    /// Served torrents.
    pub serving: Recipient<ServingChanged>,
}

impl std::fmt::Debug for RelayReports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayReports")
    }
}

/// The actor (see module docs).
pub struct Relay<P: Plane> {
    plane: P,
    reports: RelayReports,
    /// The forwarding task of each served torrent.
    served: HashMap<InfoHash, SpawnHandle>,
}

impl<P: Plane> std::fmt::Debug for Relay<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Relay({} served)", self.served.len())
    }
}

impl<P: Plane> Relay<P> {
    /// An actor owning `plane`, reporting to `reports`.
    pub fn new(plane: P, reports: RelayReports) -> Self {
        Relay {
            plane,
            reports,
            served: HashMap::new(),
        }
    }
}

impl<P: Plane> Actor for Relay<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.add_stream(Events(self.plane.events()));
    }
}

/// The data path's event channel as a `Stream`.
struct Events(mpsc::UnboundedReceiver<PlaneEvent>);

impl Stream for Events {
    type Item = PlaneEvent;
    fn poll_next(
        mut self: StdPin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

impl<P: Plane> StreamHandler<PlaneEvent> for Relay<P> {
    fn handle(&mut self, ev: PlaneEvent, _: &mut Context<Self>) {
        match ev {
            PlaneEvent::CircuitFailed { nids } => {
                self.reports.circuit_failed.do_send(CircuitFailed { nids });
            }
            PlaneEvent::Misbehaving { nid } => {
                self.reports.misbehaved.do_send(NeighbourMisbehaved { nid });
            }
            // The link's Neighbor actor watches its own handle and reports
            // the loss; the event may also be about a link already replaced.
            PlaneEvent::LinkClosed { reason, .. } => tracing::debug!(reason, "link closed"),
        }
    }

    /// The data path went away (shutdown): keep serving queries.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl<P: Plane> Handler<Originate<P::Stream>> for Relay<P> {
    type Result = ResponseFuture<Result<(), &'static str>>;

    fn handle(&mut self, m: Originate<P::Stream>, _: &mut Context<Self>) -> Self::Result {
        let opening = self.plane.originate(m.grant);
        Box::pin(async move {
            let stream = opening.await?;
            m.deliver.send(stream).await.map_err(|_| "undelivered")
        })
    }
}

impl<P: Plane> Handler<Serve<P::Stream>> for Relay<P> {
    type Result = ();

    fn handle(&mut self, m: Serve<P::Stream>, ctx: &mut Context<Self>) {
        let Serve { infohash, deliver } = m;
        let mut accepted = self.plane.serve(infohash);
        let forward = async move {
            while let Some(s) = accepted.recv().await {
                if deliver.send(s).await.is_err() {
                    break;
                }
            }
        };
        // The consumer went away: stop accepting circuits nobody reads.
        let fwd = forward.into_actor(self).map(move |(), act, _| {
            act.served.remove(&infohash);
            act.plane.unserve(infohash);
            act.reports.serving.do_send(ServingChanged {
                infohash,
                serving: false,
            });
        });
        if let Some(old) = self.served.insert(infohash, ctx.spawn(fwd)) {
            ctx.cancel_future(old);
        }
        self.reports.serving.do_send(ServingChanged {
            infohash,
            serving: true,
        });
    }
}

impl<P: Plane> Handler<Unserve> for Relay<P> {
    type Result = ();

    fn handle(&mut self, m: Unserve, ctx: &mut Context<Self>) {
        if let Some(fwd) = self.served.remove(&m.infohash) {
            ctx.cancel_future(fwd);
        }
        self.plane.unserve(m.infohash);
        self.reports.serving.do_send(ServingChanged {
            infohash: m.infohash,
            serving: false,
        });
    }
}

impl<P: Plane> Handler<DropNid> for Relay<P> {
    type Result = ();

    fn handle(&mut self, m: DropNid, _: &mut Context<Self>) {
        self.plane.drop_nid(m.nid);
    }
}

impl<P: Plane> Handler<GetStats> for Relay<P> {
    type Result = RelayStats;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> RelayStats {
        RelayStats {
            relayed_bytes: self.plane.relayed_bytes(),
            links: self.plane.links(),
            circuits: self.plane.circuits(),
        }
    }
}

impl<P: Plane> Handler<Shutdown> for Relay<P> {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let breaking = self.plane.shutdown();
        Box::pin(breaking.into_actor(self).map(|(), _, ctx| ctx.stop()))
    }
}

#[cfg(test)]
mod tests;
