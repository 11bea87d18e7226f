//! Protocol-core benchmarks, all in one run so the ratios compare numbers
//! measured on the same machine at the same time:
//!
//! * onion: one X25519 agreement (the baseline), peel of one layer, build
//!   cost per hop;
//! * channel: relay-layer throughput, end-to-end seal/open against raw
//!   AES-256-GCM on the same bytes, and the cell-size pipeline that fixed
//!   `CELL_LEN`;
//! * identity: announce signature verification, openssl against
//!   ed25519-dalek (`cargo bench -p anomos-common --bench crypto -- ed25519`
//!   runs this group alone).
//!
//! Run with `cargo bench -p anomos-common --bench crypto`. Not run in CI.

use criterion::{criterion_group, criterion_main, Criterion};

#[path = "crypto/channel_bench.rs"]
mod channel_bench;
#[path = "crypto/identity_bench.rs"]
mod identity_bench;
#[path = "crypto/onion_bench.rs"]
mod onion_bench;

fn all(c: &mut Criterion) {
    onion_bench::bench(c);
    channel_bench::bench(c);
    identity_bench::bench(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
