//! Tracking-code costs, measured against the X25519 agreement they are
//! budgeted in (BENCHMARKS.md): peeling one layer should cost at most 1.5×
//! one agreement, building at most 2.5× one agreement per hop.
//!
//! A module, not a bench of its own: `crypto.rs` includes it with
//! `mod onion_bench;` and calls [`bench`] from its criterion group. It uses
//! only the public API.

use anomos_common::crypto::{CircuitSecret, X25519Secret};
use anomos_common::onion::{build, peel, ExitPayload, HopSpec, MAX_HOPS};
use anomos_common::replay::ReplayCache;
use anomos_common::{InfoHash, Nid};
use criterion::{BatchSize, Criterion};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;
use std::time::Instant;

/// The hops' clock; codes expire ten minutes later.
const NOW: u64 = 1_700_000_000;

/// Benchmarks `x25519_agree`, `onion_peel_one_layer` and
/// `onion_build_per_hop` (a `MAX_HOPS` code, time divided by `MAX_HOPS`).
pub fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(0x0a1e);
    let keys: Vec<X25519Secret> = (0..MAX_HOPS)
        .map(|_| X25519Secret::generate(&mut rng).expect("key"))
        .collect();
    let hops: Vec<HopSpec> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| HopSpec {
            onion_public: k.public(),
            next_nid: (i + 1 < MAX_HOPS).then_some(Nid(i as u16 + 1)),
        })
        .collect();
    let payload = ExitPayload {
        infohash: InfoHash([0xab; 32]),
        circuit_secret: CircuitSecret([0xcd; 32]),
        expiry: NOW + 600,
        credit: 0,
    };

    let peer = keys[1].public();
    c.bench_function("x25519_agree", |b| {
        b.iter(|| keys[0].agree(black_box(&peer)).expect("agree"))
    });

    // Hop 0 of a full-length code: a relay layer, the common case. A fresh
    // cache per iteration (made outside the timing) so it is never a replay.
    let built = build(&mut rng, &hops, &payload).expect("build");
    c.bench_function("onion_peel_one_layer", |b| {
        b.iter_batched(
            || ReplayCache::new(1),
            |mut cache| peel(&keys[0], black_box(&built.code), NOW, &mut cache).expect("peel"),
            BatchSize::SmallInput,
        )
    });

    c.bench_function("onion_build_per_hop", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(build(&mut rng, black_box(&hops), &payload).expect("build"));
            }
            start.elapsed() / MAX_HOPS as u32
        })
    });
}
