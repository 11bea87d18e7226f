//! Circuit planning cost against its physical bound, in one run.
//!
//! * `x25519_keygen`, `x25519_agree`: one ephemeral key and one agreement —
//!   what each hop of a tracking code costs at least;
//! * `plan_path_10k/near`: choosing one path on a 10,000-peer overlay of
//!   degree 4–6 (the pure `core::planner`, no crypto) to a destination 2–3
//!   hops away, so that a 3–5-edge path exists;
//! * `plan_path_10k/random_swarm`: the same with 20 destinations drawn
//!   from the whole overlay, as a swarm spread over the network offers —
//!   most are farther than 5 edges, and the summary prints how often a
//!   path is found at all;
//! * `plan_and_build_10k/near`: path plus tracking code for 2–4 relays,
//!   what the CircuitPlanner actor does per circuit;
//! * `join_leave_10k`: one peer joining the overlay (refill) and leaving,
//!   the Graph actor's per-registration work.
//!
//! After criterion's output it prints circuits/s per core for
//! `plan_and_build_10k`, the bound `1 / (hops × (keygen + agree))` for the
//! average hop count (originator and exit included: each gets a layer), and
//! their ratio (target ≥ 0.8). Means come from criterion's own samples.
//!
//! Run with `cargo bench -p tracker --bench planner`. Not run in CI.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anomos_common::crypto::{random_bytes, CircuitSecret, X25519Secret};
use anomos_common::onion::{self, ExitPayload, HopSpec};
use anomos_common::{InfoHash, PeerId};
use criterion::Criterion;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracker::core::graph::{GraphConfig, NeighbourGraph};
use tracker::core::planner::{plan, PlanConfig, PlannedPath};

/// Peers in the benchmark overlay.
const PEERS: u32 = 10_000;
/// Candidate destinations per request (a swarm's servers).
const SERVERS: usize = 20;

/// (iterations, total time) per benchmark, from criterion's samples.
static TIMES: Mutex<Vec<(&'static str, u64, Duration)>> = Mutex::new(Vec::new());

fn record(name: &'static str, iters: u64, d: Duration) {
    if let Ok(mut t) = TIMES.lock() {
        t.push((name, iters, d));
    }
}

fn mean(name: &str) -> Option<Duration> {
    let t = TIMES.lock().ok()?;
    let (n, d) = t
        .iter()
        .filter(|(k, ..)| *k == name)
        .fold((0u64, Duration::ZERO), |(n, d), (_, i, x)| (n + i, d + *x));
    (n > 0).then(|| d / u32::try_from(n).unwrap_or(u32::MAX))
}

fn pid(i: u32) -> PeerId {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    PeerId(b)
}

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7000))
}

/// The overlay as the Graph actor builds it: every peer joins, passes its
/// check and is refilled to `min_degree`, with distinct IPs.
struct Overlay {
    graph: NeighbourGraph,
    keys: HashMap<PeerId, [u8; 32]>,
}

fn overlay(rng: &mut StdRng) -> Overlay {
    let started = Instant::now();
    let mut graph = NeighbourGraph::new(GraphConfig::default());
    let mut keys = HashMap::new();
    for i in 0..PEERS {
        graph.upsert(pid(i), addr(i));
        graph.set_reachable(pid(i), addr(i), true);
        graph.refill(pid(i), rng);
        let k = X25519Secret::generate(rng).expect("x25519 key");
        keys.insert(pid(i), k.public());
    }
    let degrees: Vec<usize> = graph.peers().map(|v| v.degree()).collect();
    let (lo, hi) = (degrees.iter().min(), degrees.iter().max());
    println!(
        "overlay: {} peers, {} edges, degree {:?}..={:?}, built in {:.1} s",
        graph.size().0,
        graph.size().1,
        lo,
        hi,
        started.elapsed().as_secs_f64()
    );
    Overlay { graph, keys }
}

/// Which destinations a request offers the planner.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dests {
    /// `SERVERS` peers drawn uniformly from the whole overlay (a swarm
    /// spread over the network).
    Random,
    /// One peer 2–3 hops from the origin, so 3–5-edge paths exist: the
    /// cost of a circuit that can be built.
    Near,
}

fn request(o: &Overlay, rng: &mut StdRng, dests: Dests) -> (PeerId, Vec<PeerId>) {
    let origin = pid(rng.random_range(0..PEERS));
    let s = match dests {
        Dests::Random => (0..SERVERS)
            .map(|_| pid(rng.random_range(0..PEERS)))
            .collect(),
        Dests::Near => {
            let ring = ball(&o.graph, origin, 3);
            vec![ring[rng.random_range(0..ring.len())]]
        }
    };
    (origin, s)
}

/// Peers at distance 2..=`r` from `origin` (breadth-first).
fn ball(g: &NeighbourGraph, origin: PeerId, r: usize) -> Vec<PeerId> {
    let mut seen = HashMap::from([(origin, 0usize)]);
    let mut frontier = vec![origin];
    let mut out = Vec::new();
    for d in 1..=r {
        let mut next = Vec::new();
        for v in frontier {
            for (u, _) in g.adjacent(v) {
                if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(u) {
                    e.insert(d);
                    next.push(u);
                    if d >= 2 {
                        out.push(u);
                    }
                }
            }
        }
        frontier = next;
    }
    out
}

/// Requests drawn before timing, so drawing them is not measured.
fn requests(o: &Overlay, rng: &mut StdRng, dests: Dests) -> Vec<(PeerId, Vec<PeerId>)> {
    (0..4096).map(|_| request(o, rng, dests)).collect()
}

/// One circuit the way `PlannerActor` makes it: a path, then its code.
fn plan_and_build(
    o: &Overlay,
    rng: &mut StdRng,
    cfg: &PlanConfig,
    (origin, servers): &(PeerId, Vec<PeerId>),
) -> Option<PlannedPath> {
    let path = plan(&o.graph, rng, cfg, *origin, servers, 1).pop()?;
    let hops: Vec<HopSpec> = path
        .hops
        .iter()
        .enumerate()
        .map(|(i, h)| HopSpec {
            onion_public: o.keys[h],
            next_nid: path.nids.get(i).copied(),
        })
        .collect();
    let payload = ExitPayload {
        infohash: InfoHash([7; 32]),
        circuit_secret: CircuitSecret(random_bytes::<32, _>(rng)),
        expiry: 1_900_000_000,
        credit: 0,
    };
    black_box(onion::build(rng, &hops, &payload).ok()?);
    Some(path)
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(7);
    let peer = X25519Secret::generate(&mut rng).expect("key").public();
    let eph = X25519Secret::generate(&mut rng).expect("key");
    c.bench_function("x25519_keygen", |b| {
        b.iter_custom(|n| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(X25519Secret::generate(&mut rng).expect("key"));
            }
            let d = t.elapsed();
            record("keygen", n, d);
            d
        })
    });
    c.bench_function("x25519_agree", |b| {
        b.iter_custom(|n| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(eph.agree(black_box(&peer)).expect("agree"));
            }
            let d = t.elapsed();
            record("agree", n, d);
            d
        })
    });

    let o = overlay(&mut rng);
    let cfg = PlanConfig::default();
    let near = requests(&o, &mut rng, Dests::Near);
    let random = requests(&o, &mut rng, Dests::Random);
    for (name, key, reqs) in [
        ("plan_path_10k/near", "plan_near", &near),
        ("plan_path_10k/random_swarm", "plan_random", &random),
    ] {
        let mut i = 0;
        c.bench_function(name, |b| {
            b.iter_custom(|n| {
                let t = Instant::now();
                for _ in 0..n {
                    let (origin, servers) = &reqs[i % reqs.len()];
                    i += 1;
                    black_box(plan(&o.graph, &mut rng, &cfg, *origin, servers, 1));
                }
                let d = t.elapsed();
                record(key, n, d);
                d
            })
        });
    }
    let mut i = 0;
    c.bench_function("plan_and_build_10k/near", |b| {
        b.iter_custom(|n| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(plan_and_build(&o, &mut rng, &cfg, &near[i % near.len()]));
                i += 1;
            }
            let d = t.elapsed();
            record("plan_build", n, d);
            d
        })
    });

    let mut o = o;
    let mut next = PEERS;
    c.bench_function("join_leave_10k", |b| {
        b.iter_custom(|n| {
            let t = Instant::now();
            for _ in 0..n {
                let (id, a) = (pid(next), addr(next));
                next += 1;
                o.graph.upsert(id, a);
                o.graph.set_reachable(id, a, true);
                let others = o.graph.refill(id, &mut rng);
                o.graph.remove(id);
                for p in others {
                    black_box(o.graph.take_dropped(p));
                }
            }
            let d = t.elapsed();
            record("join_leave", n, d);
            d
        })
    });
    summary(&o, &mut rng, &cfg, &near, &random);
}

/// Share of requests that got a path, and the mean layers per code.
fn success(
    o: &Overlay,
    rng: &mut StdRng,
    cfg: &PlanConfig,
    reqs: &[(PeerId, Vec<PeerId>)],
) -> (f64, f64) {
    let (mut hops, mut built) = (0usize, 0usize);
    for r in reqs {
        if let Some(p) = plan(&o.graph, rng, cfg, r.0, &r.1, 1).pop() {
            hops += p.hops.len();
            built += 1;
        }
    }
    (
        built as f64 / reqs.len().max(1) as f64,
        hops as f64 / built.max(1) as f64,
    )
}

/// Circuits/s per core against the X25519 bound, from the means above.
fn summary(
    o: &Overlay,
    rng: &mut StdRng,
    cfg: &PlanConfig,
    near: &[(PeerId, Vec<PeerId>)],
    random: &[(PeerId, Vec<PeerId>)],
) {
    let (Some(keygen), Some(agree), Some(p_near), Some(p_random), Some(pb)) = (
        mean("keygen"),
        mean("agree"),
        mean("plan_near"),
        mean("plan_random"),
        mean("plan_build"),
    ) else {
        return;
    };
    let (ok_near, avg_hops) = success(o, rng, cfg, near);
    let (ok_random, _) = success(o, rng, cfg, random);
    let per_circuit = pb.as_secs_f64() / ok_near.max(1e-9);
    let bound = 1.0 / (avg_hops * (keygen + agree).as_secs_f64());
    let rate = 1.0 / per_circuit;
    println!("\n== planner summary (one core) ==");
    println!(
        "x25519 keygen {:.1} µs, agree {:.1} µs",
        us(keygen),
        us(agree)
    );
    println!(
        "path planning alone: {:.1} µs per request to a near destination ({:.0} % found a path), {:.1} µs per request to {SERVERS} random swarm members ({:.0} % found a path, {:.0} µs per path found)",
        us(p_near),
        ok_near * 100.0,
        us(p_random),
        ok_random * 100.0,
        us(p_random) / ok_random.max(1e-9)
    );
    println!(
        "plan + build (near): {:.1} µs per circuit, {:.2} layers per code",
        per_circuit * 1e6,
        avg_hops
    );
    println!(
        "circuits/s per core {:.0}; bound 1/(hops × (keygen + agree)) = {:.0}; ratio {:.2} (target ≥ 0.8)",
        rate,
        bound,
        rate / bound
    );
    if let Some(j) = mean("join_leave") {
        println!(
            "join + leave of one peer in a {PEERS}-peer overlay: {:.1} µs",
            us(j)
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
