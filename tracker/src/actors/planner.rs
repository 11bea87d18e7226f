//! The CircuitPlanner actor: runs on a `SyncArbiter` thread pool, because
//! building a tracking code costs two X25519 operations per hop.
//!
//! For each request it takes a short read lock on the topology to choose
//! paths (pure `core::planner`) and copy the hops' onion keys, releases it,
//! then builds the codes, draws a fresh circuit secret per circuit and
//! reports the paths to the Graph actor for load accounting.

use std::time::Instant;

use actix::prelude::*;
use anomos_common::crypto::{random_bytes, CircuitSecret, LayerKeys};
use anomos_common::onion::{self, ExitPayload, HopSpec, TrackingCode};
use anomos_common::{InfoHash, PeerId};
use rand::Rng;

use super::graph::{CircuitsPlanned, GraphActor, TopologyReader};
use crate::core::planner::{plan, PlanConfig, PlannedPath};
use crate::metrics::Metrics;

/// Sent by a Session actor for each torrent whose announce asked for
/// circuits (after the ratio policy capped `wanted`).
#[derive(Debug, Message)]
#[rtype(result = "Vec<PlannedCircuit>")]
pub struct PlanCircuits {
    /// The originator (the announcing peer).
    pub origin: PeerId,
    /// The torrent.
    pub infohash: InfoHash,
    /// How many circuits at most.
    pub wanted: usize,
    /// Tracker clock (Unix seconds).
    pub now: u64,
    /// The originator's credit tier, sealed for the exit.
    pub credit: u8,
    /// Sources the originator reported for breaking the piece protocol
    /// (`core::sources`): no circuits to them.
    pub avoid: Vec<PeerId>,
}

/// One circuit ready for the originator.
#[derive(Debug)]
pub struct PlannedCircuit {
    /// The torrent.
    pub infohash: InfoHash,
    /// The tracking code for hop 0 (the originator).
    pub code: TrackingCode,
    /// Relay-layer keys of hops 1…n−1.
    pub layer_keys: Vec<LayerKeys>,
    /// Shared with the exit through the code.
    pub circuit_secret: CircuitSecret,
    /// When the code expires.
    pub expiry: u64,
    /// Random id naming the planned path, if the originator reports the
    /// circuit as failed or its source as bad.
    pub id: u64,
    /// The destination (stays at the tracker: `core::sources`).
    pub source: PeerId,
}

/// The planner worker (one instance per pool thread).
#[derive(Debug)]
pub struct PlannerActor {
    topo: TopologyReader,
    cfg: PlanConfig,
    code_lifetime: u64,
    graph: Addr<GraphActor>,
    metrics: Metrics,
}

impl PlannerActor {
    /// A worker; `code_lifetime` is the seconds a code stays valid.
    pub fn new(
        topo: TopologyReader,
        cfg: PlanConfig,
        code_lifetime: u64,
        graph: Addr<GraphActor>,
        metrics: Metrics,
    ) -> Self {
        PlannerActor {
            topo,
            cfg,
            code_lifetime,
            graph,
            metrics,
        }
    }

    /// Paths plus each hop's onion key, under one short read lock.
    fn choose(&self, m: &PlanCircuits) -> Vec<(PlannedPath, Vec<[u8; 32]>)> {
        let Some(t) = self.topo.read() else {
            return Vec::new();
        };
        let mut servers = t.swarms.servers(&m.infohash);
        servers.retain(|s| !m.avoid.contains(s));
        let mut rng = rand::rng();
        plan(&t.graph, &mut rng, &self.cfg, m.origin, &servers, m.wanted)
            .into_iter()
            .filter_map(|p| {
                let keys = p
                    .hops
                    .iter()
                    .map(|h| t.onion_keys.get(h).copied())
                    .collect::<Option<Vec<_>>>()?;
                Some((p, keys))
            })
            .collect()
    }

    fn build(
        &self,
        m: &PlanCircuits,
        p: &PlannedPath,
        keys: &[[u8; 32]],
    ) -> Option<PlannedCircuit> {
        let hops: Vec<HopSpec> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| HopSpec {
                onion_public: *k,
                next_nid: p.nids.get(i).copied(),
            })
            .collect();
        let mut rng = rand::rng();
        let secret = CircuitSecret(random_bytes::<32, _>(&mut rng));
        let expiry = m.now.saturating_add(self.code_lifetime);
        let payload = ExitPayload {
            infohash: m.infohash,
            circuit_secret: secret.clone(),
            expiry,
            credit: m.credit,
        };
        match onion::build(&mut rng, &hops, &payload) {
            Ok(b) => Some(PlannedCircuit {
                infohash: m.infohash,
                code: b.code,
                layer_keys: b.layer_keys,
                circuit_secret: secret,
                expiry: b.expiry,
                id: rng.random(),
                source: *p.hops.last()?,
            }),
            Err(e) => {
                tracing::warn!(kind = e.kind(), "tracking code build failed");
                None
            }
        }
    }
}

impl Actor for PlannerActor {
    type Context = SyncContext<Self>;
}

impl Handler<PlanCircuits> for PlannerActor {
    type Result = MessageResult<PlanCircuits>;

    fn handle(&mut self, m: PlanCircuits, _: &mut Self::Context) -> Self::Result {
        let started = Instant::now();
        let mut out = Vec::new();
        let mut paths = Vec::new();
        for (p, keys) in self.choose(&m) {
            if let Some(c) = self.build(&m, &p, &keys) {
                self.metrics.path_relays.observe(p.relays() as f64);
                self.metrics.circuits_planned.inc();
                paths.push((c.id, p.hops));
                out.push(c);
            }
        }
        if !paths.is_empty() {
            self.graph.do_send(CircuitsPlanned { paths });
        }
        self.metrics
            .plan_seconds
            .observe(started.elapsed().as_secs_f64());
        MessageResult(out)
    }
}
