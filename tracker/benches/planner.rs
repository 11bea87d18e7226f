//! Circuit planning cost against its physical bound, in one run.
//!
//! * `x25519_keygen`, `x25519_agree`: one ephemeral key and one agreement —
//!   what each hop of a tracking code costs at least;
//! * `plan_path_10k`: choosing one path on a 10,000-peer overlay of degree
//!   4–6 (the pure `core::planner`, no crypto);
//! * `plan_and_build_10k`: path plus tracking code for 2–4 relays, what the
//!   CircuitPlanner actor does per circuit;
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

fn servers(rng: &mut StdRng) -> (PeerId, Vec<PeerId>) {
    let origin = pid(rng.random_range(0..PEERS));
    let s = (0..SERVERS)
        .map(|_| pid(rng.random_range(0..PEERS)))
        .collect();
    (origin, s)
}

/// One circuit the way `PlannerActor` makes it: a path, then its code.
fn plan_and_build(o: &Overlay, rng: &mut StdRng, cfg: &PlanConfig) -> Option<PlannedPath> {
    let (origin, servers) = servers(rng);
    let path = plan(&o.graph, rng, cfg, origin, &servers, 1).pop()?;
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
    c.bench_function("plan_path_10k", |b| {
        b.iter_custom(|n| {
            let t = Instant::now();
            for _ in 0..n {
                let (origin, servers) = servers(&mut rng);
                black_box(plan(&o.graph, &mut rng, &cfg, origin, &servers, 1));
            }
            let d = t.elapsed();
            record("plan", n, d);
            d
        })
    });
    c.bench_function("plan_and_build_10k", |b| {
        b.iter_custom(|n| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(plan_and_build(&o, &mut rng, &cfg));
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
    summary(&o, &mut rng, &cfg);
}

/// Circuits/s per core against the X25519 bound, from the means above.
fn summary(o: &Overlay, rng: &mut StdRng, cfg: &PlanConfig) {
    let (Some(keygen), Some(agree), Some(plan_only), Some(pb)) = (
        mean("keygen"),
        mean("agree"),
        mean("plan"),
        mean("plan_build"),
    ) else {
        return;
    };
    // Average layers per code over the same request mix (failed plans skip).
    let (mut hops, mut built, tries) = (0usize, 0usize, 2000);
    for _ in 0..tries {
        if let Some(p) = plan_and_build(o, rng, cfg) {
            hops += p.hops.len();
            built += 1;
        }
    }
    let avg_hops = hops as f64 / built.max(1) as f64;
    let per_circuit = pb.as_secs_f64() * tries as f64 / built.max(1) as f64;
    let bound = 1.0 / (avg_hops * (keygen + agree).as_secs_f64());
    let rate = 1.0 / per_circuit;
    println!("\n== planner summary (one core) ==");
    println!(
        "x25519 keygen {:.1} µs, agree {:.1} µs; path planning alone {:.1} µs",
        us(keygen),
        us(agree),
        us(plan_only)
    );
    println!(
        "plan + build: {:.1} µs per circuit ({built}/{tries} requests found a path), {:.2} layers per code",
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
