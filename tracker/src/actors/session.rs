//! The Session actor: one per registered peer.
//!
//! It owns the peer's [`Session`] core (address, onion key, torrents,
//! counters, last seen), feeds ledger deltas, runs the reachability check
//! for a new or changed address (and retries failures in the background
//! with exponential back-off), and ends itself when the peer goes silent
//! for the session TTL or announces `stopped`, telling the Graph actor.
//!
//! Announces of one peer are handled strictly one at a time
//! (`AtomicResponse`), so two concurrent announces can never interleave
//! their graph updates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anomos_common::{InfoHash, Nid, PeerId};
use dashmap::DashMap;

use super::graph::{GraphActor, PeerAnnounced, PeerRemoved, ReachabilityChecked};
use super::planner::{PlanCircuits, PlannedCircuit, PlannerActor};
use crate::core::graph::NeighbourEntry;
use crate::core::planner::RatioPolicy;
use crate::core::session::{AnnounceInput, Session};
use crate::core::sources::BadSources;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::net::reachability::{retry_delay, Prober};
use crate::unix_now;

/// Live sessions by peer id.
pub type SessionRegistry = Arc<DashMap<PeerId, Addr<SessionActor>>>;

/// Everything a session needs besides its own state; shared by all.
#[derive(Debug)]
pub struct SessionDeps {
    /// The Graph actor.
    pub graph: Addr<GraphActor>,
    /// The planner pool.
    pub planner: Addr<PlannerActor>,
    /// The ratio ledger.
    pub ledger: Arc<Ledger>,
    /// Reachability dialer.
    pub prober: Prober,
    /// Metrics.
    pub metrics: Metrics,
    /// Where sessions are registered (an ending session removes itself).
    pub registry: SessionRegistry,
    /// Circuit caps by share ratio.
    pub ratio: RatioPolicy,
    /// Silence after which a session ends.
    pub ttl: u64,
    /// First reachability retry delay.
    pub retry_base: Duration,
    /// Longest reachability retry delay.
    pub retry_max: Duration,
}

/// Sent by the announce handler for each verified, fresh, in-rate announce.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<AnnounceOutcome, MailboxError>")]
pub struct Announce {
    /// Session-level content.
    pub input: AnnounceInput,
    /// Links the peer reports as failed.
    pub failed_nids: Vec<Nid>,
    /// Ids of circuits granted to it that failed to open.
    pub failed_circuits: Vec<u64>,
    /// Ids of circuits granted to it whose source broke the piece protocol.
    pub bad_sources: Vec<u64>,
    /// Links the peer holds.
    pub held_links: Vec<(Nid, PeerId)>,
    /// Circuits wanted per torrent.
    pub wanted: Vec<(InfoHash, u32)>,
    /// The peer is leaving: answer, then end the session.
    pub stopping: bool,
}

/// What goes back to the peer.
#[derive(Debug, Default)]
pub struct AnnounceOutcome {
    /// Full neighbour set.
    pub neighbours: Vec<NeighbourEntry>,
    /// NIDs dropped since the last announce.
    pub dropped: Vec<Nid>,
    /// Circuits planned for this announce.
    pub circuits: Vec<PlannedCircuit>,
}

/// The per-peer actor.
#[derive(Debug)]
pub struct SessionActor {
    core: Session,
    deps: Arc<SessionDeps>,
    /// Where this peer's recent grants lead; sources it reported.
    sources: BadSources,
    verified: Option<SocketAddr>,
    failures: u32,
    retry: Option<SpawnHandle>,
}

impl SessionActor {
    /// A session for `peer`.
    pub fn new(peer: PeerId, deps: Arc<SessionDeps>) -> Self {
        // Resume from what the ledger kept: this may be the first announce
        // to a restarted tracker in the middle of the peer's run.
        let core = Session::resume(peer, deps.ttl, deps.ledger.reported(&peer));
        SessionActor {
            core,
            deps,
            sources: BadSources::default(),
            verified: None,
            failures: 0,
            retry: None,
        }
    }

    /// After a failed check, try again later; success tells the Graph actor.
    fn schedule_retry(&mut self, ctx: &mut Context<Self>, addr: SocketAddr) {
        if let Some(h) = self.retry.take() {
            ctx.cancel_future(h);
        }
        let delay = retry_delay(self.deps.retry_base, self.deps.retry_max, self.failures);
        let h = ctx.run_later(delay, move |act, ctx| {
            act.retry = None;
            let (prober, peer) = (act.deps.prober.clone(), act.core.peer());
            let check = async move { prober.check(addr, peer).await.is_ok() };
            ctx.spawn(fut::wrap_future::<_, Self>(check).map(move |ok, act, ctx| {
                act.record_check(ctx, addr, ok);
                act.deps.graph.do_send(ReachabilityChecked {
                    peer: act.core.peer(),
                    addr,
                    ok,
                });
            }));
        });
        self.retry = Some(h);
    }

    fn record_check(&mut self, ctx: &mut Context<Self>, addr: SocketAddr, ok: bool) {
        if ok {
            self.verified = Some(addr);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.schedule_retry(ctx, addr);
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = Duration::from_secs((self.deps.ttl / 4).clamp(1, 30));
        ctx.run_interval(every, |act, ctx| {
            if act.core.expires_at() <= unix_now() {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address();
        let peer = self.core.peer();
        if self
            .deps
            .registry
            .remove_if(&peer, |_, a| *a == me)
            .is_some()
        {
            self.deps.metrics.peers.dec();
        }
        self.deps.graph.do_send(PeerRemoved { peer });
    }
}

impl Handler<Announce> for SessionActor {
    type Result = AtomicResponse<Self, Result<AnnounceOutcome, MailboxError>>;

    fn handle(&mut self, m: Announce, _: &mut Self::Context) -> Self::Result {
        let peer = self.core.peer();
        let update = self.core.apply(&m.input);
        let reported = update.reported.clone();
        self.deps
            .ledger
            .record(peer, update.delta, reported, m.input.now);
        let addr = m.input.addr;
        let check_due = self.verified != Some(addr) && (update.moved || self.retry.is_none());
        let totals = self.deps.ledger.totals(&peer).unwrap_or_default();
        let bad = self.sources.report(m.input.now, &m.bad_sources);
        self.deps.metrics.bad_sources.inc_by(bad as u64);
        let avoid = self.sources.avoided(m.input.now);
        let ratio = self.deps.ratio.clone();
        let deps = self.deps.clone();
        let now = m.input.now;
        let stopping = m.stopping;
        let work = async move {
            let reachable = match check_due {
                true => Some(deps.prober.check(addr, peer).await.is_ok()),
                false => None,
            };
            let view = deps
                .graph
                .send(PeerAnnounced {
                    peer,
                    addr,
                    onion_public: m.input.onion_public,
                    reachable,
                    relay_rate: update.relay_rate,
                    failed_nids: m.failed_nids,
                    failed_circuits: m.failed_circuits,
                    held_links: m.held_links,
                    active: update.active,
                    left: update.left,
                })
                .await?;
            let mut circuits = Vec::new();
            if view.eligible && !stopping {
                for (infohash, want) in m.wanted {
                    let wanted =
                        ratio.allowance(want, totals.uploaded, totals.downloaded, totals.relayed);
                    if wanted > 0 {
                        let plan = PlanCircuits {
                            origin: peer,
                            infohash,
                            wanted,
                            now,
                            credit: ratio.tier(totals.uploaded, totals.downloaded, totals.relayed),
                            avoid: avoid.clone(),
                        };
                        circuits.extend(deps.planner.send(plan).await?);
                    }
                }
            }
            let outcome = AnnounceOutcome {
                neighbours: view.neighbours,
                dropped: view.dropped,
                circuits,
            };
            Ok((reachable, outcome))
        };
        AtomicResponse::new(Box::pin(fut::wrap_future::<_, Self>(work).map(
            move |res: Result<_, MailboxError>, act, ctx| {
                let (reachable, outcome) = res?;
                for c in &outcome.circuits {
                    act.sources.granted(c.id, c.source);
                }
                if let Some(ok) = reachable {
                    act.record_check(ctx, addr, ok);
                }
                if stopping {
                    ctx.stop();
                }
                Ok(outcome)
            },
        )))
    }
}
