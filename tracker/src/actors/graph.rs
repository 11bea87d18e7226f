//! The Graph actor: sole writer of the overlay graph and swarm index.
//!
//! It owns the [`Topology`] behind an `Arc<RwLock<…>>`: every mutation goes
//! through this actor's mailbox (so mutations are serialized and each handler
//! is a few calls into the pure core), while the planner's worker threads
//! take short read locks for path search. A read lock is held only for the
//! microseconds a search takes; public-key work happens after it is released.
//!
//! Load accounting: each planned circuit counts on its vertices and edges
//! for `load_window` (the circuit's expected life), then is uncounted by a
//! periodic tick, which also expires one-sided restart claims.
//!
//! Set-up health: planned paths are recorded with their circuit ids, and
//! an announce's `failed_circuits` are attributed to the relays on them
//! (`core::health`); a relay that fails clearly more often than its peers
//! is flagged on its vertex, which the planner skips for relay hops.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use actix::prelude::*;
use anomos_common::{InfoHash, Nid, PeerId};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::core::graph::{GraphConfig, NeighbourEntry, NeighbourGraph};
use crate::core::health::{Changes, HealthConfig, SetupHealth};
use crate::core::swarms::Swarms;
use crate::metrics::Metrics;
use crate::unix_now;

/// The graph, the swarms and the peers' onion keys.
#[derive(Debug)]
pub struct Topology {
    /// Vertices, edges and NIDs.
    pub graph: NeighbourGraph,
    /// Torrent membership.
    pub swarms: Swarms,
    /// X25519 onion public key of each registered peer.
    pub onion_keys: HashMap<PeerId, [u8; 32]>,
}

/// Shared read access to the topology (the planner's view).
#[derive(Debug, Clone)]
pub struct TopologyReader(Arc<RwLock<Topology>>);

impl TopologyReader {
    /// A read guard; `None` only if a writer panicked.
    pub fn read(&self) -> Option<RwLockReadGuard<'_, Topology>> {
        self.0.read().ok()
    }
}

/// Sent by a Session actor for every accepted announce, after its
/// reachability check (if one was due) finished.
#[derive(Debug, Message)]
#[rtype(result = "NeighbourView")]
pub struct PeerAnnounced {
    /// The announcing peer.
    pub peer: PeerId,
    /// Its link listener.
    pub addr: SocketAddr,
    /// Its onion key.
    pub onion_public: [u8; 32],
    /// Outcome of a reachability check made for this announce, if any.
    pub reachable: Option<bool>,
    /// Relay rate since its previous announce (MiB/s).
    pub relay_rate: f64,
    /// Links it reports as failed.
    pub failed_nids: Vec<Nid>,
    /// Circuits granted to it that failed to open (`core::health`).
    pub failed_circuits: Vec<u64>,
    /// Links it holds (restart reconciliation).
    pub held_links: Vec<(Nid, PeerId)>,
    /// Torrents it is in, with whether it can serve.
    pub active: Vec<(InfoHash, bool)>,
    /// Torrents it left.
    pub left: Vec<InfoHash>,
}

/// What the announcing peer is told about its links.
#[derive(Debug, Clone, Default, MessageResponse)]
pub struct NeighbourView {
    /// The full current neighbour set.
    pub neighbours: Vec<NeighbourEntry>,
    /// NIDs dropped since the peer was last told.
    pub dropped: Vec<Nid>,
    /// Whether the peer passed its reachability check (may originate/relay).
    pub eligible: bool,
}

/// Sent by a Session actor when a background reachability retry finished.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReachabilityChecked {
    /// The peer.
    pub peer: PeerId,
    /// The address that was dialled.
    pub addr: SocketAddr,
    /// Whether it presented the right certificate.
    pub ok: bool,
}

/// Sent by a Session actor when it ends (expiry or `stopped`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PeerRemoved {
    /// The peer.
    pub peer: PeerId,
}

/// Sent by the planner after it built codes for these paths.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CircuitsPlanned {
    /// Each circuit's id and path, originator first.
    pub paths: Vec<(u64, Vec<PeerId>)>,
}

/// Sent by the operator `/status` handler.
#[derive(Debug, Message)]
#[rtype(result = "GraphStats")]
pub struct GetGraphStats;

/// Sizes only: the graph itself is never exposed.
#[derive(Debug, Clone, Copy, Default, MessageResponse)]
pub struct GraphStats {
    /// Registered peers.
    pub vertices: usize,
    /// Links.
    pub edges: usize,
    /// Torrents with members.
    pub torrents: usize,
}

/// The Graph actor.
#[derive(Debug)]
pub struct GraphActor {
    topo: Arc<RwLock<Topology>>,
    rng: StdRng,
    load_window: Duration,
    loads: VecDeque<(u64, Vec<PeerId>)>,
    health: SetupHealth,
    metrics: Metrics,
}

impl GraphActor {
    /// A new actor over an empty graph; also returns the planner's reader.
    pub fn new(
        cfg: GraphConfig,
        load_window: Duration,
        health: HealthConfig,
        metrics: Metrics,
    ) -> (Self, TopologyReader) {
        let topo = Arc::new(RwLock::new(Topology {
            graph: NeighbourGraph::new(cfg),
            swarms: Swarms::default(),
            onion_keys: HashMap::new(),
        }));
        let reader = TopologyReader(topo.clone());
        let actor = GraphActor {
            topo,
            rng: StdRng::from_os_rng(),
            load_window,
            loads: VecDeque::new(),
            health: SetupHealth::new(health),
            metrics,
        };
        (actor, reader)
    }

    fn tick(&mut self) {
        let now = unix_now();
        let Ok(mut t) = self.topo.write() else { return };
        let changes = self.health.tick(now);
        apply_health(&mut t.graph, &changes, &self.health, &self.metrics);
        t.graph.expire_claims(now);
        while self.loads.front().is_some_and(|(exp, _)| *exp <= now) {
            if let Some((_, path)) = self.loads.pop_front() {
                t.graph.account_path(&path, false);
            }
        }
    }
}

/// Apply exclusions that began or ended to the graph the planner reads.
fn apply_health(g: &mut NeighbourGraph, c: &Changes, h: &SetupHealth, m: &Metrics) {
    for r in &c.excluded {
        g.set_excluded(*r, true);
    }
    for r in &c.restored {
        g.set_excluded(*r, false);
    }
    m.relays_excluded.set(h.excluded() as i64);
}

impl Actor for GraphActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(1), |act, _| act.tick());
    }
}

impl Handler<PeerAnnounced> for GraphActor {
    type Result = NeighbourView;

    fn handle(&mut self, m: PeerAnnounced, _: &mut Self::Context) -> NeighbourView {
        let now = unix_now();
        let Ok(mut guard) = self.topo.write() else {
            return NeighbourView::default();
        };
        let t = &mut *guard;
        t.graph.upsert(m.peer, m.addr);
        t.onion_keys.insert(m.peer, m.onion_public);
        if let Some(ok) = m.reachable {
            t.graph.set_reachable(m.peer, m.addr, ok);
        }
        t.graph.set_relay_rate(m.peer, m.relay_rate);
        let orphans: Vec<PeerId> = t
            .graph
            .neighbours(m.peer)
            .into_iter()
            .filter(|n| m.failed_nids.contains(&n.nid))
            .map(|n| n.peer)
            .collect();
        t.graph.fail_links(m.peer, &m.failed_nids);
        if !m.failed_circuits.is_empty() {
            let before = self.health.accepted();
            let changes = self.health.failed(now, m.peer, &m.failed_circuits);
            let counted = self.health.accepted() - before;
            self.metrics.setup_failures.inc_by(counted);
            apply_health(&mut t.graph, &changes, &self.health, &self.metrics);
        }
        // Links restored as retiring (a restart forgot they were) count one
        // circuit for a load window, like a planned path; then they go.
        let expiry = now.saturating_add(self.load_window.as_secs());
        for pair in t.graph.hold_links(m.peer, &m.held_links, now) {
            self.loads.push_back((expiry, pair.to_vec()));
        }
        for (h, serve) in m.active {
            t.swarms.join(m.peer, h, serve);
        }
        for h in m.left {
            t.swarms.leave(m.peer, h);
        }
        for o in orphans {
            t.graph.refill(o, &mut self.rng);
        }
        t.graph.refill(m.peer, &mut self.rng);
        NeighbourView {
            neighbours: t.graph.neighbours(m.peer),
            dropped: t.graph.take_dropped(m.peer),
            eligible: t.graph.vertex(m.peer).is_some_and(|v| v.reachable),
        }
    }
}

impl Handler<ReachabilityChecked> for GraphActor {
    type Result = ();

    fn handle(&mut self, m: ReachabilityChecked, _: &mut Self::Context) {
        let Ok(mut t) = self.topo.write() else { return };
        t.graph.set_reachable(m.peer, m.addr, m.ok);
        t.graph.refill(m.peer, &mut self.rng);
    }
}

impl Handler<PeerRemoved> for GraphActor {
    type Result = ();

    fn handle(&mut self, m: PeerRemoved, _: &mut Self::Context) {
        let Ok(mut guard) = self.topo.write() else {
            return;
        };
        let t = &mut *guard;
        let orphans: Vec<PeerId> = t.graph.neighbours(m.peer).iter().map(|n| n.peer).collect();
        t.graph.remove(m.peer);
        t.onion_keys.remove(&m.peer);
        for h in t.swarms.torrents_of(m.peer) {
            t.swarms.leave(m.peer, h);
        }
        for o in orphans {
            t.graph.refill(o, &mut self.rng);
        }
    }
}

impl Handler<CircuitsPlanned> for GraphActor {
    type Result = ();

    fn handle(&mut self, m: CircuitsPlanned, _: &mut Self::Context) {
        let expiry = unix_now().saturating_add(self.load_window.as_secs());
        let now = unix_now();
        let Ok(mut t) = self.topo.write() else { return };
        for (id, p) in m.paths {
            t.graph.account_path(&p, true);
            if let [origin, relays @ .., _] = &p[..] {
                self.health.planned(now, id, *origin, relays.to_vec());
            }
            self.loads.push_back((expiry, p));
        }
    }
}

impl Handler<GetGraphStats> for GraphActor {
    type Result = GraphStats;

    fn handle(&mut self, _: GetGraphStats, _: &mut Self::Context) -> GraphStats {
        let Ok(t) = self.topo.read() else {
            return GraphStats::default();
        };
        let (vertices, edges) = t.graph.size();
        GraphStats {
            vertices,
            edges,
            torrents: t.swarms.torrent_count(),
        }
    }
}

/// Sent by `RunningTracker::stop` once the listeners are closed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StopGraph;

impl Handler<StopGraph> for GraphActor {
    type Result = ();

    fn handle(&mut self, _: StopGraph, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
