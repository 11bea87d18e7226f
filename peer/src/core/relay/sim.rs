//! Deterministic simulation: the tracker's own cores (neighbour graph and
//! path planner, `tracker::core::{graph, planner}`, codes from
//! `onion::build` as the planner actor builds them) and N `RelayCore` peers
//! wired through an in-memory network with simulated time. No tokio; one
//! seeded RNG drives the tracker, the network and the endpoints.
//!
//! The endpoints follow the stream convention of `datapath/stream.rs`:
//! each end sends its bodies, then FIN (a marker body); an end that has
//! sent and received FIN closes the circuit (BREAK(destroyed)). An end
//! that gets `Closed` after its peer closed that way must have received
//! every body and the FIN first: a BREAK never overtakes data.

mod scenarios;

use super::tests::{key, UNIX};
use super::*;
use anomos_common::cell::{CELL_BODY_LEN, CREATE_CODE_LEN};
use anomos_common::crypto::{CircuitSecret, X25519Secret};
use anomos_common::onion::{build, peel, ExitPayload, HopSpec, Peeled, TrackingCode};
use anomos_common::relay_crypto::{DataBody, OriginLayers};
use anomos_common::replay::ReplayCache;
use anomos_common::PeerId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use tracker::core::graph::{GraphConfig, NeighbourGraph};
use tracker::core::planner::{plan, PlanConfig, PlannedPath};

const W: u16 = 8;
/// The body sequence number that marks FIN.
const FIN: u32 = u32::MAX;

struct Peer {
    id: PeerId,
    core: RelayCore,
    onion: X25519Secret,
    replay: ReplayCache,
    /// Our link → (other peer, its link).
    wires: HashMap<LinkId, (usize, LinkId)>,
}

/// One circuit as the test sees it. Index 0 of the arrays is the
/// originator → exit direction, 1 the way back; an end sends in its own
/// direction and receives in the other.
#[derive(Default)]
struct Circ {
    path: Vec<usize>,
    origin: Option<(usize, CircKey)>,
    exit: Option<(usize, CircKey)>,
    open: bool,
    /// Bodies to send before FIN.
    quota: [u32; 2],
    sent: [u32; 2],
    recv: [u32; 2],
    fin_sent: [bool; 2],
    fin_recv: [bool; 2],
    /// This end closed after both FINs (a clean close).
    clean: [bool; 2],
    /// This end does not read (a stalled application).
    stalled: [bool; 2],
    /// Still counted in the tracker graph's load.
    accounted: bool,
}

struct Net {
    rng: ChaCha20Rng,
    now: Instant,
    graph: NeighbourGraph,
    plan_cfg: PlanConfig,
    peers: Vec<Peer>,
    /// Linked edges `(dialer, other, nid)`, as the graph assigned them.
    edges: BTreeSet<(usize, usize, u16)>,
    circs: Vec<Circ>,
    deferred: Vec<(usize, CircKey, Box<[u8; CREATE_CODE_LEN]>)>,
    /// When set, every DATA cell delivered is recorded as (from, to, cell).
    capture: Option<Vec<(usize, usize, Vec<u8>)>>,
    /// Bodies each end may send per step.
    burst: usize,
}

impl Net {
    /// `n` peers registered with the tracker graph, each refilled to its
    /// minimum degree, and a link for every edge the graph assigned.
    fn new(seed: u64, n: usize, min_degree: usize, relays: (usize, usize)) -> Net {
        let cfg = CoreConfig {
            window: W,
            setup_timeout: Duration::from_secs(3),
            link_wait: Duration::from_secs(1),
            break_timeout: Duration::from_secs(3),
            max_pending_peels: 64,
            max_circuits: 1000,
            violation_limit: 1,
            max_ctrl_cells: 100_000,
            swallow_creates: false,
        };
        let peers: Vec<Peer> = (0..n)
            .map(|i| Peer {
                id: PeerId([i as u8 + 1; 32]),
                core: RelayCore::new(cfg.clone(), Metrics::new().expect("metrics")),
                onion: key(100 + i as u8),
                replay: ReplayCache::new(100_000),
                wires: HashMap::new(),
            })
            .collect();
        let graph = NeighbourGraph::new(GraphConfig {
            min_degree,
            max_degree: min_degree + 2,
            allow_same_ip: false,
            claim_ttl_secs: 120,
        });
        let mut net = Net {
            rng: ChaCha20Rng::seed_from_u64(seed),
            now: Instant::now(),
            graph,
            plan_cfg: PlanConfig {
                min_relays: relays.0,
                max_relays: relays.1,
                max_expansions: 400,
            },
            peers,
            edges: BTreeSet::new(),
            circs: Vec::new(),
            deferred: Vec::new(),
            capture: None,
            burst: 3,
        };
        for i in 0..n {
            let id = net.peers[i].id;
            let addr = SocketAddr::from(([10, 0, (i / 200) as u8, (i % 200) as u8 + 1], 7000));
            net.graph.upsert(id, addr);
            net.graph.set_reachable(id, addr, true);
        }
        for i in 0..n {
            net.graph.refill(net.peers[i].id, &mut net.rng);
        }
        net.sync_links();
        net
    }

    fn index_of(&self, id: PeerId) -> usize {
        self.peers
            .iter()
            .position(|p| p.id == id)
            .expect("known peer")
    }

    /// Make the links match the graph: drop the edges it no longer has
    /// (as a peer does for a dropped NID) and connect the new ones.
    fn sync_links(&mut self) {
        let mut want = BTreeSet::new();
        for i in 0..self.peers.len() {
            for nb in self.graph.neighbours(self.peers[i].id) {
                if nb.dial {
                    want.insert((i, self.index_of(nb.peer), nb.nid.0));
                }
            }
            self.graph.take_dropped(self.peers[i].id);
        }
        for &(a, b, nid) in self
            .edges
            .difference(&want)
            .copied()
            .collect::<Vec<_>>()
            .iter()
        {
            self.unlink(a, b, nid);
        }
        for &(a, b, nid) in want.difference(&self.edges.clone()) {
            let la = self.peers[a]
                .core
                .add_link(self.now, Nid(nid), true)
                .expect("NID free");
            let lb = self.peers[b]
                .core
                .add_link(self.now, Nid(nid), false)
                .expect("NID free");
            self.peers[a].wires.insert(la, (b, lb));
            self.peers[b].wires.insert(lb, (a, la));
        }
        self.edges = want;
    }

    /// Both ends lose the link of edge `(a, b, nid)`.
    fn unlink(&mut self, a: usize, b: usize, nid: u16) {
        let la = self.peers[a].core.link_of(Nid(nid)).expect("linked");
        let (_, lb) = self.peers[a].wires.remove(&la).expect("wired");
        self.peers[b].wires.remove(&lb);
        self.peers[a].core.link_lost(self.now, la);
        self.peers[b].core.link_lost(self.now, lb);
    }

    /// A link dies: both ends report the NID as failed (the early
    /// re-announce), the tracker drops the edge and refills both.
    fn cut(&mut self) {
        let Some(&(a, b, nid)) = self
            .edges
            .iter()
            .nth(self.rng.random_range(0..self.edges.len()))
        else {
            return;
        };
        self.unlink(a, b, nid);
        self.edges.remove(&(a, b, nid));
        for v in [a, b] {
            let id = self.peers[v].id;
            // As the Graph actor does: the announce shows its sender alive
            // before its failed NIDs make the other end suspect.
            if let Some(addr) = self.graph.vertex(id).map(|x| x.addr) {
                self.graph.upsert(id, addr);
            }
            self.graph.fail_links(id, &[Nid(nid)]);
        }
        for v in [a, b] {
            let id = self.peers[v].id;
            self.graph.refill(id, &mut self.rng);
        }
        self.sync_links();
    }

    /// The tracker plans a circuit from `origin` to one of `servers`; the
    /// originator peels its own layer and sends CREATE.
    fn plan_from(&mut self, origin: usize, servers: &[usize]) -> Option<usize> {
        let servers: Vec<PeerId> = servers.iter().map(|&s| self.peers[s].id).collect();
        let o = self.peers[origin].id;
        let paths = plan(&self.graph, &mut self.rng, &self.plan_cfg, o, &servers, 1);
        let p: PlannedPath = paths.into_iter().next()?;
        self.graph.account_path(&p.hops, true);
        let path: Vec<usize> = p.hops.iter().map(|h| self.index_of(*h)).collect();
        let idx = self.circs.len();
        let mut ih = [0u8; 32];
        ih[..8].copy_from_slice(&(idx as u64).to_be_bytes());
        let hops: Vec<HopSpec> = (0..path.len())
            .map(|i| HopSpec {
                onion_public: self.peers[path[i]].onion.public(),
                next_nid: p.nids.get(i).copied(),
            })
            .collect();
        let payload = ExitPayload {
            infohash: InfoHash(ih),
            circuit_secret: CircuitSecret(self.rng.random()),
            expiry: UNIX + 600,
            credit: 0,
        };
        let exit = path[path.len() - 1];
        self.peers[exit].core.set_served(InfoHash(ih), true);
        let built = build(&mut self.rng, &hops, &payload).expect("build");
        let p = &mut self.peers[origin];
        let Ok(Peeled::Relay {
            next_nid,
            next_code,
            ..
        }) = peel(&p.onion, &built.code, UNIX, &mut p.replay)
        else {
            panic!("own layer")
        };
        let layers = OriginLayers::new(&built.layer_keys).expect("layers");
        let code: &[u8; CREATE_CODE_LEN] = next_code.as_bytes().try_into().expect("len");
        let key = p
            .core
            .originate(self.now, next_nid, code, layers)
            .expect("originate");
        let quota = [self.rng.random_range(0..60), self.rng.random_range(0..60)];
        self.circs.push(Circ {
            path,
            origin: Some((origin, key)),
            quota,
            accounted: true,
            ..Circ::default()
        });
        Some(idx)
    }

    /// A random originator, any other peer may serve.
    fn plan_random(&mut self) -> Option<usize> {
        let origin = self.rng.random_range(0..self.peers.len());
        let servers: Vec<usize> = (0..self.peers.len()).filter(|&s| s != origin).collect();
        self.plan_from(origin, &servers)
    }

    fn circ_of(&self, peer: usize, key: CircKey) -> Option<usize> {
        self.circs
            .iter()
            .position(|c| c.origin == Some((peer, key)) || c.exit == Some((peer, key)))
    }

    /// Forget an end; once both are gone, the tracker stops counting the
    /// circuit's load.
    fn end_gone(&mut self, c: usize, dir: usize) {
        let circ = &mut self.circs[c];
        if dir == 0 {
            circ.origin = None;
        } else {
            circ.exit = None;
        }
        if circ.origin.is_none() && circ.exit.is_none() && circ.accounted {
            circ.accounted = false;
            let hops: Vec<PeerId> = circ.path.iter().map(|&i| self.peers[i].id).collect();
            self.graph.account_path(&hops, false);
        }
    }

    /// An end closes its circuit without FIN (an aborted transfer).
    fn abort(&mut self, c: usize, dir: usize) {
        let end = if dir == 0 {
            self.circs[c].origin
        } else {
            self.circs[c].exit
        };
        if let Some((peer, key)) = end {
            self.peers[peer].core.endpoint_close(self.now, key);
            self.end_gone(c, dir);
        }
    }

    /// Check and count received bodies of circuit `c` in direction `from`.
    fn take_bodies(&mut self, c: usize, from: usize, bodies: &[u8]) {
        for body in bodies.chunks_exact(CELL_BODY_LEN) {
            let body: &[u8; CELL_BODY_LEN] = body.try_into().expect("len");
            let msg = DataBody::decode(body).expect("plaintext body");
            let circ = &mut self.circs[c];
            assert_eq!(msg[..4], (c as u32).to_be_bytes(), "circuit");
            assert_eq!(msg[4..8], (from as u32).to_be_bytes(), "direction");
            assert!(!circ.fin_recv[from], "nothing after FIN");
            let seq = u32::from_be_bytes(msg[8..].try_into().expect("4"));
            if seq == FIN {
                assert_eq!(circ.recv[from], circ.quota[from], "FIN after every body");
                circ.fin_recv[from] = true;
            } else {
                assert_eq!(seq, circ.recv[from], "in order, nothing lost");
                circ.recv[from] += 1;
            }
        }
    }

    /// Act on every peer's outputs; returns whether anything happened.
    fn outputs(&mut self, defer_some: bool) -> bool {
        let mut busy = false;
        for i in 0..self.peers.len() {
            while let Some(o) = self.peers[i].core.poll_output() {
                busy = true;
                match o {
                    Output::Peel { key, code } => self.deferred.push((i, key, code)),
                    Output::ExitOpened { key, infohash, .. } => {
                        let idx =
                            u64::from_be_bytes(infohash.0[..8].try_into().expect("8")) as usize;
                        self.circs[idx].exit = Some((i, key));
                    }
                    Output::Confirmed { key } => {
                        let c = self.circ_of(i, key).expect("confirmed circuit");
                        self.circs[c].open = true;
                    }
                    Output::Closed {
                        key,
                        reason,
                        leftover,
                        ..
                    } => self.closed(i, key, reason, &leftover),
                    Output::CloseLink { reason, .. } => panic!("honest link closed: {reason}"),
                    Output::Misbehaving { .. } => panic!("honest neighbour misbehaving"),
                    Output::Readable { .. } | Output::Writable { .. } => {}
                }
            }
        }
        let mut later = Vec::new();
        for (i, key, code) in std::mem::take(&mut self.deferred) {
            if defer_some && self.rng.random_bool(0.1) {
                later.push((i, key, code));
                continue;
            }
            busy = true;
            let p = &mut self.peers[i];
            let code = TrackingCode::from_bytes(&code[..]).expect("len");
            let r = peel(&p.onion, &code, UNIX, &mut p.replay);
            p.core.peel_done(self.now, key, r);
        }
        self.deferred = later;
        busy
    }

    /// A local end learns its circuit is gone: the bodies that arrived
    /// before the BREAK are read first. If the other end closed cleanly,
    /// its FIN must be among them.
    fn closed(&mut self, peer: usize, key: CircKey, reason: BreakReason, leftover: &[u8]) {
        let Some(c) = self.circ_of(peer, key) else {
            return;
        };
        let dir = usize::from(self.circs[c].origin != Some((peer, key)));
        let from = 1 - dir;
        self.take_bodies(c, from, leftover);
        // (A link lost on the path meanwhile may end it first: `link_lost`.)
        if self.circs[c].clean[from] && reason == BreakReason::Destroyed {
            assert!(
                self.circs[c].fin_recv[from],
                "circuit {c}: BREAK overtook FIN"
            );
        }
        self.end_gone(c, dir);
    }

    /// Move outbound bytes across links (each with probability `p`).
    fn deliver(&mut self, p: f64) -> bool {
        let mut busy = false;
        for i in 0..self.peers.len() {
            let mut dirty = Vec::new();
            self.peers[i].core.take_dirty(&mut dirty);
            let mut links: Vec<LinkId> = self.peers[i].wires.keys().copied().collect();
            links.sort();
            for link in links {
                if self.peers[i].core.outbound_len(link) == 0 || !self.rng.random_bool(p) {
                    continue;
                }
                check_outbound(&self.peers[i].core, link);
                let mut buf = Vec::new();
                self.peers[i].core.take_outbound(link, &mut buf);
                let (j, lj) = self.peers[i].wires[&link];
                if let Some(cap) = self.capture.as_mut() {
                    let data = buf
                        .chunks_exact(CELL_LEN)
                        .filter(|c| c[4] == Command::Data as u8);
                    cap.extend(data.map(|cell| (i, j, cell.to_vec())));
                }
                self.peers[j].core.handle_cells(self.now, lj, &mut buf);
                busy = true;
            }
        }
        busy
    }

    /// Every end sends up to `burst` bodies, then FIN once its quota is
    /// sent, and (with probability `p_read`, unless stalled) reads what
    /// arrived. An end that has sent and received FIN closes the circuit.
    fn endpoints(&mut self, p_read: f64) {
        for c in 0..self.circs.len() {
            for dir in 0..2 {
                let end = if dir == 0 {
                    self.circs[c].origin
                } else {
                    self.circs[c].exit
                };
                let Some((peer, key)) = end else { continue };
                if dir == 0 && !self.circs[c].open {
                    continue;
                }
                self.send(c, dir, peer, key);
                if self.circs[c].stalled[dir] || !self.rng.random_bool(p_read) {
                    continue;
                }
                let mut got = Vec::new();
                let _ = self.peers[peer].core.endpoint_recv(key, 64, &mut got);
                self.take_bodies(c, 1 - dir, &got);
                let circ = &self.circs[c];
                if circ.fin_sent[dir] && circ.fin_recv[1 - dir] {
                    self.circs[c].clean[dir] = true;
                    self.peers[peer].core.endpoint_close(self.now, key);
                    self.end_gone(c, dir);
                }
            }
        }
    }

    fn send(&mut self, c: usize, dir: usize, peer: usize, key: CircKey) {
        for _ in 0..self.burst {
            let circ = &self.circs[c];
            if circ.fin_sent[dir] {
                return;
            }
            let seq = if circ.sent[dir] < circ.quota[dir] {
                circ.sent[dir]
            } else {
                FIN
            };
            let mut msg = [0u8; 12];
            msg[..4].copy_from_slice(&(c as u32).to_be_bytes());
            msg[4..8].copy_from_slice(&(dir as u32).to_be_bytes());
            msg[8..].copy_from_slice(&seq.to_be_bytes());
            let mut body = [0u8; CELL_BODY_LEN];
            DataBody::encode(&msg, &mut body);
            if self.peers[peer].core.endpoint_send(key, &mut body).is_err() {
                return;
            }
            if seq == FIN {
                self.circs[c].fin_sent[dir] = true;
            } else {
                self.circs[c].sent[dir] += 1;
            }
        }
    }

    /// Memory bounds: no per-circuit queue above one window.
    fn check_bounds(&self) {
        for p in &self.peers {
            assert!(
                p.core.max_queue() <= usize::from(W),
                "queue over one window"
            );
            let gauge = p.core.metrics.queued_cells.get();
            assert_eq!(gauge, p.core.queued_cells() as i64, "queued-cells gauge");
        }
    }

    fn tick(&mut self, dt: Duration) {
        self.now += dt;
        for p in &mut self.peers {
            p.core.handle_timeout(self.now);
        }
    }

    /// Deliver and act until nothing moves (no timers run); the endpoints
    /// send and read too unless `p_read` is `None`.
    fn settle(&mut self, p_read: Option<f64>) {
        for _ in 0..500 {
            if let Some(p) = p_read {
                self.endpoints(p);
            }
            let a = self.outputs(false);
            let b = self.deliver(1.0);
            if !a && !b {
                return;
            }
        }
        panic!("the network did not settle");
    }

    /// Every table of every peer is empty, and so is the tracker's load.
    fn check_empty(&self) {
        for (i, p) in self.peers.iter().enumerate() {
            assert_eq!(p.core.circuit_count(), 0, "peer {i} circuits");
            assert_eq!(p.core.half_count(), 0, "peer {i} halves");
            assert_eq!(p.core.pending_peels(), 0, "peer {i} peels");
            assert_eq!(p.core.max_queue(), 0, "peer {i} queues");
            assert_eq!(p.core.metrics.queued_cells.get(), 0, "peer {i} gauge");
            assert_eq!(p.core.poll_timeout(), None, "peer {i} timers");
            for link in p.wires.keys() {
                assert_eq!(p.core.ids_in_use(*link), 0, "peer {i} ids");
                assert_eq!(p.core.outbound_len(*link), 0, "peer {i} outbound");
            }
        }
        for v in self.graph.peers() {
            assert_eq!(v.circuits, 0, "tracker load left on a vertex");
        }
        self.graph
            .check_invariants()
            .expect("tracker graph invariants");
    }
}

/// At most W DATA cells per circuit id wait in an outbound buffer: the
/// sender never has more than a window unacknowledged.
fn check_outbound(core: &RelayCore, link: LinkId) {
    let out = &core.links[&link].out;
    let mut per: HashMap<[u8; 4], usize> = HashMap::new();
    for cell in out
        .chunks_exact(CELL_LEN)
        .filter(|c| c[4] == Command::Data as u8)
    {
        *per.entry(cell[..4].try_into().expect("4")).or_default() += 1;
    }
    assert!(
        per.values().all(|&n| n <= usize::from(W)),
        "outbound over one window"
    );
}
