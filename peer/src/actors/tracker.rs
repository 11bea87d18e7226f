//! The Tracker actor (the peer's tracker client): periodic and early
//! announces, and applying the answers.
//!
//! Announces follow the interval the tracker returns and are spaced at
//! least `min_gap` apart (the tracker rate-limits identities). An early
//! announce is asked for when a link fails ([`LinkFailed`], from a Neighbor
//! actor), a circuit fails or a neighbour misbehaves ([`CircuitFailed`],
//! [`NeighbourMisbehaved`], from the Relay actor), an incoming link names a
//! NID we do not know yet ([`UnknownNidSeen`], from the listener), or a
//! download wants circuits ([`WantCircuits`]); an answer that granted
//! fewer circuits than wanted is followed by another after a short delay
//! (`core::reask`: 1 s by default, doubling while answers grant nothing,
//! up to the interval). An unreachable tracker is
//! retried with exponential back-off and jitter, and early requests wait
//! for that retry. A response starts and stops Neighbor actors and sends
//! each circuit grant to the Relay actor.
//!
//! Architecture invariant: this actor never waits on another inside a
//! handler. It asks the Relay with `send(..).into_actor(self)`
//! continuations; the Relay and the Neighbors only `do_send` events back.

mod announce;

#[cfg(test)]
mod tests;

pub use announce::{unix_now, Announcer, HttpsAnnouncer, Progress, Torrents};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anomos_common::api::{AnnounceRequest, AnnounceResponse, HeldLink, Neighbour, PeerEvent};
use anomos_common::identity::PeerIdentity;
use anomos_common::{InfoHash, Nid};
use tokio::sync::{mpsc, watch};

use super::neighbor::UpdateNeighbour;
use super::neighbor::{DropNeighbour, LinkAccepted, LinkFailed, Neighbor, NeighborDeps};
use super::relay::{
    CircuitFailed, GetStats, NeighbourMisbehaved, Originate, Relay, RelayStats, ServingChanged,
    Shutdown,
};
use super::Plane;
use crate::core::backoff::Backoff;
use crate::core::reask::Reask;
use crate::error::TrackerError;
use crate::metrics::Metrics;
use crate::net::NeighbourTable;

/// Events and requests queued at most (the listener uses `try_send`).
const MAILBOX: usize = 64;
/// Grant ids kept for the next announce at most, per kind of report
/// (failed circuits, bad sources); the body stays far under its limit.
const MAX_REPORTED_GRANTS: usize = 256;

/// Keep grant `id` for the next announce. Bounded while the tracker is
/// away: ids are random, so the smallest is an arbitrary one to drop.
fn report_grant(ids: &mut BTreeSet<u64>, id: u64) {
    ids.insert(id);
    while ids.len() > MAX_REPORTED_GRANTS {
        ids.pop_first();
    }
}

/// Whether a grant that failed with `why` (`CircuitError::kind`) went
/// silent on its path: CREATE went out and nothing came back in time (our
/// set-up timeout, or a hop's BREAK(setup_timeout) from further on). Those
/// are reported so the tracker can find relays that swallow set-ups. Not
/// reported: grants we could not send (no room on the first link, bad
/// grant, our own layer), a dead link (`link_lost`, reported by its NID),
/// and refusals (`refused`, `overloaded`, …): an honest hop answers those
/// too, e.g. when its link to the next hop did not come up in time (and so
/// do we, when our own first hop's link did not), and one that is merely
/// busy is not lying.
pub fn failed_on_path(why: &str) -> bool {
    matches!(why, "timeout" | "setup_timeout")
}

/// An incoming link named a NID the neighbour table does not hold yet (the
/// tracker may have told the other end first). Sent by the link listener;
/// asks for an early announce.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UnknownNidSeen {
    /// The NID.
    pub nid: Nid,
}

/// Ask the tracker for `n` circuits to sources of `infohash`; opened ones go
/// to `deliver`. Sent by `RunningPeer::want_circuits`.
pub struct WantCircuits<S> {
    /// The torrent.
    pub infohash: InfoHash,
    /// How many circuits.
    pub n: u16,
    /// Where the opened circuits go.
    pub deliver: mpsc::Sender<S>,
}

impl<S> std::fmt::Debug for WantCircuits<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WantCircuits({})", self.n)
    }
}

impl<S: 'static> Message for WantCircuits<S> {
    type Result = ();
}

/// A swarm's counters for one torrent, carried by the next announce. Sent
/// by `RunningPeer::report_progress`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct TorrentProgress {
    /// The torrent.
    pub infohash: InfoHash,
    /// Its counters.
    pub progress: Progress,
}

/// A source broke the piece protocol on the circuit opened from grant
/// `grant`: the next announce (an early one) names the grant, and the
/// tracker plans no more circuits from us to that source for a while.
/// Sent by a torrent's Swarm through `PeerHandle::report_bad_source`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct BadSource {
    /// The grant's id.
    pub grant: u64,
}

/// Break every circuit, announce `stopped`, stop the Neighbors, then stop.
/// Sent by `RunningPeer::stop`; answered when all that is done.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Settings of the actor.
#[derive(Debug, Clone)]
pub struct TrackerSettings {
    /// The port the link listener actually bound.
    pub listen_port: u16,
    /// Shortest gap between announces.
    pub min_gap: Duration,
    /// Back-off when the tracker is unreachable.
    pub retry: Duration,
    /// Longest back-off.
    pub retry_max: Duration,
    /// First delay before asking again for circuits not granted.
    pub reask: Duration,
}

/// The actor (see module docs).
pub struct Tracker<P: Plane> {
    announcer: Rc<dyn Announcer>,
    id: Rc<PeerIdentity>,
    set: TrackerSettings,
    metrics: Metrics,
    relay: Addr<Relay<P>>,
    deps: Rc<NeighborDeps<P>>,
    table: watch::Sender<NeighbourTable>,
    neighbours: HashMap<Nid, (Neighbour, Addr<Neighbor<P>>)>,
    failed: BTreeSet<Nid>,
    /// Ids of grants that failed on their path, for the next announce.
    failed_circuits: BTreeSet<u64>,
    /// Ids of grants whose source broke the piece protocol, likewise.
    bad_sources: BTreeSet<u64>,
    torrents: Torrents<P::Stream>,
    /// The tracker took our `started` announce.
    started: bool,
    backoff: Backoff,
    /// When to ask again for circuits an answer did not grant.
    reask: Reask,
    /// The next scheduled announce.
    timer: Option<(Instant, SpawnHandle)>,
    /// An announce is in flight; `early` asks for another when it ends.
    announcing: bool,
    early: bool,
    last: Option<Instant>,
    stopping: bool,
}

/// What an announce reported: forgotten once the tracker took it, kept
/// for the next one otherwise.
struct Reports {
    nids: Vec<Nid>,
    circuits: Vec<u64>,
    sources: Vec<u64>,
}

impl<P: Plane> std::fmt::Debug for Tracker<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tracker({} neighbours)", self.neighbours.len())
    }
}

impl<P: Plane> Tracker<P> {
    /// An actor announcing through `announcer` as `id`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        announcer: Rc<dyn Announcer>,
        id: Rc<PeerIdentity>,
        set: TrackerSettings,
        metrics: Metrics,
        relay: Addr<Relay<P>>,
        deps: Rc<NeighborDeps<P>>,
        table: watch::Sender<NeighbourTable>,
    ) -> Self {
        let backoff = Backoff::new(set.retry, set.retry_max);
        let reask = Reask::new(set.reask);
        Tracker {
            announcer,
            id,
            set,
            metrics,
            relay,
            deps,
            table,
            neighbours: HashMap::new(),
            failed: BTreeSet::new(),
            failed_circuits: BTreeSet::new(),
            bad_sources: BTreeSet::new(),
            torrents: Torrents::default(),
            started: false,
            backoff,
            reask,
            timer: None,
            announcing: false,
            early: false,
            last: None,
            stopping: false,
        }
    }

    /// Announce at `at` instead of whenever was planned.
    fn schedule(&mut self, at: Instant, ctx: &mut Context<Self>) {
        if let Some((_, old)) = self.timer.take() {
            ctx.cancel_future(old);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| act.announce(ctx));
        self.timer = Some((at, handle));
    }

    /// Announce as early as the gap and any back-off allow.
    fn announce_soon(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        if self.announcing {
            self.early = true;
            return;
        }
        // Unreachable: the scheduled retry comes first.
        if self.backoff.failures() > 0 && self.timer.is_some() {
            return;
        }
        let now = Instant::now();
        let at = self.last.map_or(now, |l| l + self.set.min_gap).max(now);
        if self.timer.as_ref().is_none_or(|(t, _)| *t > at) {
            self.schedule(at, ctx);
        }
    }

    fn announce(&mut self, ctx: &mut Context<Self>) {
        self.timer = None;
        if self.stopping || self.announcing {
            return;
        }
        self.announcing = true;
        self.early = false;
        self.last = Some(Instant::now());
        let event = if self.started {
            PeerEvent::Heartbeat
        } else {
            PeerEvent::Started
        };
        let fut = self
            .relay
            .send(GetStats)
            .into_actor(self)
            .then(move |stats, act, _| {
                let req = act.request(event, stats.unwrap_or_default());
                let failed = Reports {
                    nids: req.failed_nids.clone(),
                    circuits: req.failed_circuits.clone(),
                    sources: req.bad_sources.clone(),
                };
                let held: BTreeSet<Nid> = req.held_links.iter().map(|h| h.nid).collect();
                let exchange = act.announcer.announce(req);
                async move { (failed, held, exchange.await) }.into_actor(act)
            })
            .map(|(failed, held, res), act, ctx| act.answered(failed, &held, res, ctx));
        ctx.spawn(fut);
    }

    fn answered(
        &mut self,
        sent: Reports,
        held: &BTreeSet<Nid>,
        res: Result<AnnounceResponse, TrackerError>,
        ctx: &mut Context<Self>,
    ) {
        self.announcing = false;
        if self.stopping {
            return;
        }
        let next = match res {
            Ok(resp) => {
                self.metrics.announces.with_label_values(&["ok"]).inc();
                self.backoff.reset();
                self.started = true;
                for nid in &sent.nids {
                    self.failed.remove(nid);
                }
                for id in &sent.circuits {
                    self.failed_circuits.remove(id);
                }
                for id in &sent.sources {
                    self.bad_sources.remove(id);
                }
                self.torrents.announced();
                let interval = Duration::from_secs(u64::from(resp.interval_secs).max(1));
                let granted = resp.circuits.len();
                self.apply(resp, held, ctx);
                // Fewer circuits than wanted: ask again well before the
                // interval, never closer than the minimum gap.
                let short = self.torrents.short();
                let delay = self.reask.answered(short, granted, interval);
                Instant::now() + delay.max(self.set.min_gap)
            }
            Err(e) => {
                self.metrics.announces.with_label_values(&[e.kind()]).inc();
                tracing::warn!(error = %e, "announce failed");
                Instant::now() + self.backoff.fail(&mut rand::rng())
            }
        };
        self.schedule(next, ctx);
        if std::mem::take(&mut self.early) {
            self.announce_soon(ctx);
        }
    }

    fn request(&self, event: PeerEvent, stats: RelayStats) -> AnnounceRequest {
        let held = if event == PeerEvent::Stopped {
            Vec::new()
        } else {
            stats.links
        };
        AnnounceRequest {
            peer_id: self.id.peer_id(),
            timestamp: unix_now(),
            nonce: rand::random(),
            onion_public: self.id.onion_public(),
            listen_port: self.set.listen_port,
            listen_ip: None,
            event,
            torrents: self.torrents.announce(event),
            relayed_bytes: stats.relayed_bytes,
            failed_nids: self.failed.iter().copied().collect(),
            held_links: held
                .into_iter()
                .map(|(nid, peer)| HeldLink { nid, peer })
                .collect(),
            failed_circuits: self.failed_circuits.iter().copied().collect(),
            bad_sources: self.bad_sources.iter().copied().collect(),
        }
    }

    /// Apply the tracker's view: dropped NIDs first, then the full set,
    /// then the grants. A link this announce reported as held that the
    /// tracker neither lists nor drops is waiting for the other end to
    /// confirm it (a restarted tracker rebuilds its graph from links both
    /// ends claim): it stays, with its circuits, until the tracker lists or
    /// drops it. Any other unlisted neighbour goes.
    fn apply(&mut self, resp: AnnounceResponse, held: &BTreeSet<Nid>, ctx: &mut Context<Self>) {
        for nid in &resp.dropped_nids {
            if let Some((_, a)) = self.neighbours.remove(nid) {
                a.do_send(DropNeighbour);
            }
        }
        let mut listed: BTreeMap<Nid, Neighbour> =
            resp.neighbours.iter().map(|n| (n.nid, *n)).collect();
        let mut pending = BTreeMap::new();
        self.neighbours.retain(|nid, (old, a)| {
            let keep = match listed.get(nid) {
                Some(n) => n.pin == old.pin && n.addr == old.addr,
                None if held.contains(nid) => {
                    pending.insert(*nid, *old);
                    true
                }
                None => false,
            };
            if !keep {
                a.do_send(DropNeighbour);
            }
            keep
        });
        for n in listed.values() {
            match self.neighbours.get_mut(&n.nid) {
                Some((old, a)) => {
                    *old = *n;
                    a.do_send(UpdateNeighbour { neighbour: *n });
                }
                None => {
                    let a = Neighbor::new(self.deps.clone(), *n).start();
                    self.neighbours.insert(n.nid, (*n, a));
                }
            }
        }
        listed.append(&mut pending);
        self.table.send_replace(Arc::new(listed));
        for grant in resp.circuits {
            self.originate(grant, ctx);
        }
    }

    fn originate(&mut self, grant: anomos_common::api::CircuitGrant, ctx: &mut Context<Self>) {
        let (infohash, id) = (grant.infohash, grant.id);
        let Some(deliver) = self.torrents.grant(infohash) else {
            return;
        };
        let opening = self.relay.send(Originate { grant, deliver });
        let fut = opening.into_actor(self).map(move |res, act, ctx| {
            let ok = matches!(res, Ok(Ok(())));
            if let Ok(Err(why)) = res {
                tracing::info!(why, "circuit failed to open");
                if failed_on_path(why) {
                    report_grant(&mut act.failed_circuits, id);
                }
            }
            // A failed circuit is asked for again at once.
            if act.torrents.settled(infohash, ok) {
                act.announce_soon(ctx);
            }
        });
        ctx.spawn(fut);
    }
}

impl<P: Plane> Actor for Tracker<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX);
        self.announce(ctx);
    }
}

impl<P: Plane> Handler<LinkFailed> for Tracker<P> {
    type Result = ();
    fn handle(&mut self, m: LinkFailed, ctx: &mut Context<Self>) {
        self.failed.insert(m.nid);
        self.announce_soon(ctx);
    }
}

impl<P: Plane> Handler<CircuitFailed> for Tracker<P> {
    type Result = ();
    fn handle(&mut self, m: CircuitFailed, ctx: &mut Context<Self>) {
        self.failed.extend(m.nids);
        self.announce_soon(ctx);
    }
}

impl<P: Plane> Handler<BadSource> for Tracker<P> {
    type Result = ();
    fn handle(&mut self, m: BadSource, ctx: &mut Context<Self>) {
        report_grant(&mut self.bad_sources, m.grant);
        self.announce_soon(ctx);
    }
}

impl<P: Plane> Handler<NeighbourMisbehaved> for Tracker<P> {
    type Result = ();
    fn handle(&mut self, m: NeighbourMisbehaved, ctx: &mut Context<Self>) {
        self.failed.insert(m.nid);
        self.announce_soon(ctx);
    }
}

impl<P: Plane> Handler<UnknownNidSeen> for Tracker<P> {
    type Result = ();
    fn handle(&mut self, _: UnknownNidSeen, ctx: &mut Context<Self>) {
        self.announce_soon(ctx);
    }
}

impl<P: Plane> Handler<LinkAccepted> for Tracker<P> {
    type Result = ();
    /// Route to the NID's Neighbor; a link for a NID dropped meanwhile closes.
    fn handle(&mut self, m: LinkAccepted, _: &mut Context<Self>) {
        if let Some((_, a)) = self.neighbours.get(&m.link.nid) {
            a.do_send(m);
        }
    }
}

impl<P: Plane> Handler<ServingChanged> for Tracker<P> {
    type Result = ();
    fn handle(&mut self, m: ServingChanged, ctx: &mut Context<Self>) {
        self.torrents.set_seeding(m.infohash, m.serving);
        self.announce_soon(ctx);
    }
}

impl<P: Plane> Handler<TorrentProgress> for Tracker<P> {
    type Result = ();
    fn handle(&mut self, m: TorrentProgress, _: &mut Context<Self>) {
        self.torrents.progress(m.infohash, m.progress);
    }
}

impl<P: Plane> Handler<WantCircuits<P::Stream>> for Tracker<P> {
    type Result = ();
    fn handle(&mut self, m: WantCircuits<P::Stream>, ctx: &mut Context<Self>) {
        self.torrents.want(m.infohash, m.n, m.deliver);
        self.announce_soon(ctx);
    }
}

impl<P: Plane> Handler<Stop> for Tracker<P> {
    type Result = ResponseActFuture<Self, ()>;

    /// Stop announcing → Relay shutdown (BREAK every circuit) → announce
    /// `stopped` → Neighbors stop → this actor stops.
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        if let Some((_, t)) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let fut = self
            .relay
            .send(GetStats)
            .into_actor(self)
            .then(|stats, act, _| {
                let stats = stats.unwrap_or_default();
                let breaking = act.relay.send(Shutdown);
                async move {
                    let _ = breaking.await;
                    stats
                }
                .into_actor(act)
            })
            .then(|stats, act, _| {
                let req = act.request(PeerEvent::Stopped, stats);
                act.announcer.announce(req).into_actor(act)
            })
            .map(|res, act, ctx| {
                let result = res.as_ref().map_or_else(|e| e.kind(), |_| "ok");
                act.metrics.announces.with_label_values(&[result]).inc();
                for (_, (_, a)) in act.neighbours.drain() {
                    a.do_send(DropNeighbour);
                }
                act.table.send_replace(Arc::new(BTreeMap::new()));
                ctx.stop();
            });
        Box::pin(fut)
    }
}
