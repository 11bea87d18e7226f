//! Deterministic simulation: a toy tracker (graph, random paths, codes from
//! `onion::build`) and N `RelayCore` peers wired through an in-memory
//! network with simulated time. No tokio; one seeded RNG drives everything.

use super::tests::{key, UNIX};
use super::*;
use anomos_common::cell::{CELL_BODY_LEN, CELL_HEADER_LEN, CREATE_CODE_LEN};
use anomos_common::crypto::{CircuitSecret, X25519Secret};
use anomos_common::onion::{build, peel, ExitPayload, HopSpec, Peeled, TrackingCode};
use anomos_common::relay_crypto::{DataBody, OriginLayers};
use anomos_common::replay::ReplayCache;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const W: u16 = 8;

struct Peer {
    core: RelayCore,
    onion: X25519Secret,
    replay: ReplayCache,
    /// Our link → (other peer, its link).
    wires: HashMap<LinkId, (usize, LinkId)>,
}

/// One circuit as the test sees it: both ends and the sequence numbers of
/// the bodies sent and received each way.
#[derive(Default)]
struct Circ {
    origin: Option<(usize, CircKey)>,
    exit: Option<(usize, CircKey)>,
    open: bool,
    sent: [u32; 2],
    recv: [u32; 2],
}

struct Net {
    rng: ChaCha20Rng,
    now: Instant,
    peers: Vec<Peer>,
    /// Edges `(a, b, nid)`; the NID is the same at both ends.
    edges: Vec<(usize, usize, u16)>,
    circs: Vec<Circ>,
    deferred: Vec<(usize, CircKey, Box<[u8; CREATE_CODE_LEN]>)>,
    /// When set, every DATA cell delivered is recorded as (from, to, cell).
    capture: Option<Vec<(usize, usize, Vec<u8>)>>,
}

impl Net {
    fn new(seed: u64, n: usize, edges: Vec<(usize, usize, u16)>) -> Net {
        let cfg = CoreConfig {
            window: W,
            setup_timeout: Duration::from_secs(3),
            break_timeout: Duration::from_secs(3),
            max_pending_peels: 64,
            max_circuits: 1000,
            violation_limit: 1,
            max_ctrl_cells: 100_000,
        };
        let peers = (0..n)
            .map(|i| Peer {
                core: RelayCore::new(cfg.clone(), Metrics::new().expect("metrics")),
                onion: key(100 + i as u8),
                replay: ReplayCache::new(100_000),
                wires: HashMap::new(),
            })
            .collect();
        let mut net = Net {
            rng: ChaCha20Rng::seed_from_u64(seed),
            now: Instant::now(),
            peers,
            edges,
            circs: Vec::new(),
            deferred: Vec::new(),
            capture: None,
        };
        for e in 0..net.edges.len() {
            net.connect(e);
        }
        net
    }

    fn connect(&mut self, e: usize) {
        let (a, b, nid) = self.edges[e];
        let la = self.peers[a].core.add_link(Nid(nid), true).expect("link");
        let lb = self.peers[b].core.add_link(Nid(nid), false).expect("link");
        self.peers[a].wires.insert(la, (b, lb));
        self.peers[b].wires.insert(lb, (a, la));
    }

    /// Both ends lose the link of edge `e`; it comes back as a new link.
    fn cut(&mut self, e: usize) {
        let (a, _, nid) = self.edges[e];
        let Some(la) = self.peers[a].core.link_of(Nid(nid)) else {
            return;
        };
        let Some((b, lb)) = self.peers[a].wires.remove(&la) else {
            return;
        };
        self.peers[b].wires.remove(&lb);
        self.peers[a].core.link_lost(self.now, la);
        self.peers[b].core.link_lost(self.now, lb);
        self.connect(e);
    }

    fn neighbours(&self, v: usize) -> Vec<(usize, u16)> {
        let mut out = Vec::new();
        for &(a, b, nid) in &self.edges {
            if a == v {
                out.push((b, nid));
            } else if b == v {
                out.push((a, nid));
            }
        }
        out
    }

    /// The toy tracker: a random simple walk with `relays` relays, a code
    /// for it, and the originator's own peel and CREATE.
    fn plan(&mut self, relays: usize) -> bool {
        let origin = self.rng.random_range(0..self.peers.len());
        self.plan_at(origin, relays)
    }

    fn plan_at(&mut self, origin: usize, relays: usize) -> bool {
        let mut path = vec![(origin, 0u16)];
        while path.len() < relays + 2 {
            let here = path[path.len() - 1].0;
            let next: Vec<_> = self
                .neighbours(here)
                .into_iter()
                .filter(|(v, _)| path.iter().all(|(p, _)| p != v))
                .collect();
            if next.is_empty() {
                return false;
            }
            path.push(next[self.rng.random_range(0..next.len())]);
        }
        let idx = self.circs.len();
        let mut ih = [0u8; 32];
        ih[..8].copy_from_slice(&(idx as u64).to_be_bytes());
        let hops: Vec<HopSpec> = (0..path.len())
            .map(|i| HopSpec {
                onion_public: self.peers[path[i].0].onion.public(),
                next_nid: path.get(i + 1).map(|(_, nid)| Nid(*nid)),
            })
            .collect();
        let payload = ExitPayload {
            infohash: InfoHash(ih),
            circuit_secret: CircuitSecret([1; 32]),
            expiry: UNIX + 600,
        };
        let exit = path[path.len() - 1].0;
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
        self.circs.push(Circ {
            origin: Some((origin, key)),
            ..Circ::default()
        });
        true
    }

    fn circ_of(&self, peer: usize, key: CircKey) -> Option<usize> {
        self.circs
            .iter()
            .position(|c| c.origin == Some((peer, key)) || c.exit == Some((peer, key)))
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
                    Output::Closed { key, .. } => {
                        if let Some(c) = self.circ_of(i, key) {
                            let circ = &mut self.circs[c];
                            if circ.origin == Some((i, key)) {
                                circ.origin = None;
                            } else {
                                circ.exit = None;
                            }
                        }
                    }
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
                    for cell in buf
                        .chunks_exact(CELL_LEN)
                        .filter(|c| c[4] == Command::Data as u8)
                    {
                        cap.push((i, j, cell.to_vec()));
                    }
                }
                self.peers[j].core.handle_cells(self.now, lj, &mut buf);
                busy = true;
            }
        }
        busy
    }

    /// Endpoints send up to `n` bodies each way (credit permitting) and, with
    /// probability `p_read`, take what arrived and check its order.
    fn endpoints(&mut self, n: usize, p_read: f64) {
        for c in 0..self.circs.len() {
            let ends = [(self.circs[c].origin, 0usize), (self.circs[c].exit, 1usize)];
            for (end, dir) in ends {
                let Some((peer, key)) = end else { continue };
                if !self.circs[c].open && dir == 0 {
                    continue;
                }
                for _ in 0..n {
                    let mut msg = [0u8; 12];
                    msg[..4].copy_from_slice(&(c as u32).to_be_bytes());
                    msg[4..8].copy_from_slice(&(dir as u32).to_be_bytes());
                    msg[8..].copy_from_slice(&self.circs[c].sent[dir].to_be_bytes());
                    let mut body = [0u8; CELL_BODY_LEN];
                    DataBody::encode(&msg, &mut body);
                    if self.peers[peer].core.endpoint_send(key, &mut body).is_err() {
                        break;
                    }
                    self.circs[c].sent[dir] += 1;
                }
                if !self.rng.random_bool(p_read) {
                    continue;
                }
                let mut got = Vec::new();
                let _ = self.peers[peer]
                    .core
                    .endpoint_recv(key, (4 * n).max(64), &mut got);
                for body in got.chunks_exact(CELL_BODY_LEN) {
                    let body: &[u8; CELL_BODY_LEN] = body.try_into().expect("len");
                    let msg = DataBody::decode(body).expect("plaintext body");
                    let from = 1 - dir;
                    let want = self.circs[c].recv[from];
                    assert_eq!(msg[..4], (c as u32).to_be_bytes(), "circuit");
                    assert_eq!(msg[8..], want.to_be_bytes(), "in order, nothing lost");
                    self.circs[c].recv[from] += 1;
                }
            }
        }
    }

    fn check_bounds(&self) {
        for p in &self.peers {
            assert!(
                p.core.max_queue() <= usize::from(W),
                "queue over one window"
            );
        }
    }

    fn tick(&mut self, dt: Duration) {
        self.now += dt;
        for p in &mut self.peers {
            p.core.handle_timeout(self.now);
        }
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

fn mesh(n: usize) -> Vec<(usize, usize, u16)> {
    let mut edges = Vec::new();
    for i in 0..n {
        edges.push((i, (i + 1) % n, edges.len() as u16 + 1));
        edges.push((i, (i + 3) % n, edges.len() as u16 + 1));
    }
    edges
}

#[test]
fn many_circuits_with_breaks_and_link_losses_leave_nothing_behind() {
    let mut net = Net::new(7, 8, mesh(8));
    for step in 0..600 {
        let roll = net.rng.random_range(0..100);
        if roll < 20 {
            let relays = net.rng.random_range(2..=4);
            net.plan(relays);
        } else if roll < 24 {
            // A random end closes its circuit.
            let c = net.rng.random_range(0..net.circs.len().max(1));
            if let Some(circ) = net.circs.get_mut(c) {
                let end = if step % 2 == 0 {
                    circ.origin.take()
                } else {
                    circ.exit.take()
                };
                if let Some((peer, key)) = end {
                    net.peers[peer].core.endpoint_close(net.now, key);
                }
            }
        } else if roll < 26 {
            let e = net.rng.random_range(0..net.edges.len());
            net.cut(e);
        }
        net.endpoints(3, 0.7);
        net.outputs(true);
        net.deliver(0.8);
        net.outputs(true);
        net.check_bounds();
        net.tick(Duration::from_millis(50));
    }
    // Wind down: every end closes, everything is delivered and read.
    for c in 0..net.circs.len() {
        for end in [net.circs[c].origin.take(), net.circs[c].exit.take()]
            .into_iter()
            .flatten()
        {
            net.peers[end.0].core.endpoint_close(net.now, end.1);
        }
    }
    for _ in 0..200 {
        let a = net.outputs(false);
        let b = net.deliver(1.0);
        net.endpoints(0, 1.0);
        if !a && !b {
            net.tick(Duration::from_secs(1));
        }
    }
    let built = net.circs.len();
    let opened = net.circs.iter().filter(|c| c.open).count();
    let cells: u32 = net.circs.iter().map(|c| c.recv[0] + c.recv[1]).sum();
    assert!(
        built > 80 && opened > 40 && cells > 1000,
        "{built} {opened} {cells}"
    );
    for (i, p) in net.peers.iter().enumerate() {
        assert_eq!(p.core.circuit_count(), 0, "peer {i} circuits");
        assert_eq!(p.core.half_count(), 0, "peer {i} halves");
        assert_eq!(p.core.pending_peels(), 0, "peer {i} peels");
        for link in p.wires.keys() {
            assert_eq!(p.core.ids_in_use(*link), 0, "peer {i} ids");
            assert_eq!(p.core.outbound_len(*link), 0, "peer {i} outbound");
        }
    }
}

#[test]
fn data_cell_bytes_differ_on_every_link_of_a_three_relay_circuit() {
    // A line 0 — 1 — 2 — 3 — 4: originator 0, relays 1..=3, exit 4.
    let edges = (0..4).map(|i| (i, i + 1, i as u16 + 1)).collect();
    let mut net = Net::new(1, 5, edges);
    assert!(net.plan_at(0, 3));
    for _ in 0..10 {
        net.outputs(false);
        net.deliver(1.0);
    }
    assert!(net.circs[0].open && net.circs[0].exit.is_some());
    net.capture = Some(Vec::new());
    net.endpoints(1, 0.0);
    for _ in 0..10 {
        net.deliver(1.0);
    }
    let cap = net.capture.take().expect("capture");
    let fwd: Vec<&Vec<u8>> = cap
        .iter()
        .filter(|(a, b, _)| b > a)
        .map(|(_, _, c)| c)
        .collect();
    let bwd: Vec<&Vec<u8>> = cap
        .iter()
        .filter(|(a, b, _)| b < a)
        .map(|(_, _, c)| c)
        .collect();
    assert_eq!(
        (fwd.len(), bwd.len()),
        (4, 4),
        "one cell each way on each of 4 links"
    );
    for cells in [fwd, bwd] {
        for i in 0..cells.len() {
            for j in i + 1..cells.len() {
                assert_ne!(cells[i][CELL_HEADER_LEN..], cells[j][CELL_HEADER_LEN..]);
            }
        }
    }
    net.endpoints(0, 1.0);
    assert_eq!(net.circs[0].recv, [1, 1], "both ends read the plaintext");
}

#[test]
fn a_stalled_reader_slows_the_sender_and_relays_hold_one_window() {
    let edges = (0..3).map(|i| (i, i + 1, i as u16 + 1)).collect();
    let mut net = Net::new(2, 4, edges);
    assert!(net.plan_at(0, 2));
    for _ in 0..10 {
        net.outputs(false);
        net.deliver(1.0);
    }
    // The exit never reads: the originator can send only what the windows allow.
    for _ in 0..50 {
        net.endpoints(16, 0.0);
        net.deliver(1.0);
        net.check_bounds();
    }
    let sent = net.circs[0].sent[0];
    // Exit queue W + one window in flight per relay queue and outbound buffer.
    assert!(
        sent <= 1 + 4 * u32::from(W) && sent >= u32::from(W),
        "sent {sent}"
    );
    let (o, key) = net.circs[0].origin.expect("origin");
    assert_eq!(
        net.peers[o].core.endpoint_credit(key),
        Ok(0),
        "sender is stalled"
    );
    // Reading resumes the flow.
    net.endpoints(0, 1.0);
    for _ in 0..5 {
        net.deliver(1.0);
        net.endpoints(0, 1.0);
    }
    net.endpoints(16, 0.0);
    assert!(net.circs[0].sent[0] > sent);
}
