//! Benchmarks of the link data path: relay layers, the end-to-end channel
//! against raw AES-GCM, and the cell-size measurement behind `CELL_LEN`.
//!
//! A module of the `crypto` bench (`mod channel_bench;`), not a bench of its
//! own, so the crate keeps one bench binary. Every group reports bytes per
//! second (`Throughput::Bytes`); targets: a relay layer ≥ 2 GB/s, the e2e
//! channel ≥ 0.8 × raw AES-256-GCM over the same record sizes.

use anomos_common::cell::{CellMut, Command, CELL_BODY_LEN, CELL_HEADER_LEN, CELL_LEN};
use anomos_common::crypto::{AesCtr, AesGcm, LayerKeys};
use anomos_common::e2e::{Channel, ChannelKeys, Role, MAX_RECORD_PLAINTEXT};
use anomos_common::relay_crypto::{OriginLayers, RelayLayer};
use anomos_common::CircuitId;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use std::collections::HashMap;
use std::hint::black_box;

/// 16 KiB: the unit the e2e groups and the raw baseline process.
const SIXTEEN_K: usize = 16 * 1024;
/// The batch the cell pipeline forwards per iteration.
const PIPELINE_BATCH: usize = 1 << 20;
/// Circuits interleaved in the pipeline batch (one keystream and one table
/// entry each), so the lookup and cipher-context switches are realistic.
const PIPELINE_CIRCUITS: u32 = 64;

/// All benchmarks of this module.
pub fn bench(c: &mut Criterion) {
    relay_layer(c);
    e2e(c);
    raw_gcm(c);
    cell_pipeline(c);
}

fn layer_keys(seed: u8) -> LayerKeys {
    LayerKeys {
        forward: [seed; 32],
        backward: [seed ^ 0xff; 32],
    }
}

fn channel_keys() -> ChannelKeys {
    ChannelKeys {
        key_ox: [1; 32],
        key_xo: [2; 32],
        prefix_ox: [3; 4],
        prefix_xo: [4; 4],
        confirm: [5; 32],
    }
}

fn channel(role: Role) -> Channel {
    Channel::new(&channel_keys(), role).expect("channel")
}

/// 16 KiB of DATA bodies (16 whole bodies, 16,304 bytes) through one hop's
/// forward layer: per cell as a relay does it, and as one contiguous call.
fn relay_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay_layer_16k");
    let cells = SIXTEEN_K / CELL_BODY_LEN;
    g.throughput(Throughput::Bytes((cells * CELL_BODY_LEN) as u64));
    let mut layer = RelayLayer::new(&layer_keys(7)).expect("layer");
    let mut bodies = vec![[0x5au8; CELL_BODY_LEN]; cells];
    g.bench_function("per_cell", |b| {
        b.iter(|| {
            for body in bodies.iter_mut() {
                layer.remove_forward(body).expect("layer");
            }
            black_box(&bodies);
        })
    });
    let mut flat = vec![0x5au8; cells * CELL_BODY_LEN];
    g.bench_function("contiguous", |b| {
        b.iter(|| {
            layer.remove_forward_many(&mut flat).expect("layer");
            black_box(&flat);
        })
    });
    // As the relay's run path does it: 16 whole cells as they lie in a
    // link buffer.
    let mut run = vec![0x5au8; cells * CELL_LEN];
    g.bench_function("cell_run", |b| {
        b.iter(|| {
            layer.remove_forward_cells(&mut run).expect("layer");
            black_box(&run);
        })
    });
    g.finish();
    // The originator removes three hops' layers from every body: per body,
    // or on the run path (keystream for 8 bodies per call, one XOR pass).
    let mut g = c.benchmark_group("origin_3_layers_16k");
    g.throughput(Throughput::Bytes((cells * CELL_BODY_LEN) as u64));
    let keys: Vec<_> = (1..4).map(layer_keys).collect();
    let mut origin = OriginLayers::new(&keys).expect("layers");
    g.bench_function("per_cell", |b| {
        b.iter(|| {
            for body in bodies.iter_mut() {
                origin.unwrap_backward(body).expect("layer");
            }
            black_box(&bodies);
        })
    });
    g.bench_function("cell_run", |b| {
        b.iter(|| {
            origin.unwrap_backward_cells(&mut run).expect("layer");
            black_box(&run);
        })
    });
    g.finish();
}

/// 16 KiB of plaintext in records of `MAX_RECORD_PLAINTEXT` (16 full records
/// and one of 368 bytes), sealed and opened by the e2e channel.
fn e2e(c: &mut Criterion) {
    let plain = vec![0xa5u8; SIXTEEN_K];
    let mut g = c.benchmark_group("e2e_seal_16k");
    g.throughput(Throughput::Bytes(SIXTEEN_K as u64));
    let mut tx = channel(Role::Originator);
    let mut out = Vec::with_capacity(2 * SIXTEEN_K);
    g.bench_function("seal", |b| {
        b.iter(|| {
            out.clear();
            for chunk in plain.chunks(MAX_RECORD_PLAINTEXT) {
                tx.seal(chunk, &mut out).expect("seal");
            }
            black_box(&out);
        })
    });
    let mut buf = plain.clone();
    g.bench_function("seal_in_place", |b| {
        b.iter(|| {
            for chunk in buf.chunks_mut(MAX_RECORD_PLAINTEXT) {
                black_box(tx.seal_in_place(chunk).expect("seal"));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("e2e_open_16k");
    g.throughput(Throughput::Bytes(SIXTEEN_K as u64));
    // Records only open in sequence, so each iteration gets a fresh pair of
    // channels and freshly sealed records, built outside the timing.
    let setup = || {
        let mut tx = channel(Role::Originator);
        let rx = channel(Role::Exit);
        let records: Vec<Vec<u8>> = plain
            .chunks(MAX_RECORD_PLAINTEXT)
            .map(|chunk| {
                let mut r = Vec::new();
                tx.seal(chunk, &mut r).expect("seal");
                r
            })
            .collect();
        (rx, records)
    };
    g.bench_function("open_in_place", |b| {
        b.iter_batched_ref(
            setup,
            |(rx, records)| {
                for r in records.iter_mut() {
                    black_box(rx.open_in_place(r).expect("open"));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("open", |b| {
        b.iter_batched_ref(
            setup,
            |(rx, records)| {
                for r in records.iter() {
                    black_box(rx.open(r).expect("open"));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The fair baseline: the same AES-256-GCM contexts on the same 16 KiB in
/// the same record sizes, with no channel logic; and the one-record ideal.
fn raw_gcm(c: &mut Criterion) {
    let key = [1u8; 32];
    let mut g = c.benchmark_group("aes256gcm_raw_16k");
    g.throughput(Throughput::Bytes(SIXTEEN_K as u64));
    let mut sealer = AesGcm::sealer(&key).expect("gcm");
    let mut buf = vec![0xa5u8; SIXTEEN_K];
    let mut counter = 0u64;
    g.bench_function("seal", |b| {
        b.iter(|| {
            for chunk in buf.chunks_mut(MAX_RECORD_PLAINTEXT) {
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                counter += 1;
                black_box(sealer.seal_in_place(&nonce, &[], chunk).expect("seal"));
            }
        })
    });
    let mut sealed = vec![0xa5u8; SIXTEEN_K];
    let tags: Vec<[u8; 16]> = sealed
        .chunks_mut(MAX_RECORD_PLAINTEXT)
        .enumerate()
        .map(|(i, chunk)| {
            let mut nonce = [0u8; 12];
            nonce[11] = i as u8;
            sealer.seal_in_place(&nonce, &[], chunk).expect("seal")
        })
        .collect();
    let mut opener = AesGcm::opener(&key).expect("gcm");
    g.bench_function("open", |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |records| {
                for (i, (chunk, tag)) in records
                    .chunks_mut(MAX_RECORD_PLAINTEXT)
                    .zip(&tags)
                    .enumerate()
                {
                    let mut nonce = [0u8; 12];
                    nonce[11] = i as u8;
                    opener.open_in_place(&nonce, &[], chunk, tag).expect("open");
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("aes256gcm_raw_16k_one_record");
    g.throughput(Throughput::Bytes(SIXTEEN_K as u64));
    g.bench_function("seal", |b| {
        b.iter(|| {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_be_bytes());
            counter += 1;
            black_box(sealer.seal_in_place(&nonce, &[], &mut buf).expect("seal"));
        })
    });
    g.finish();
}

/// A 1 MiB batch of DATA cells of `cell_len` bytes, spread over the circuits.
fn pipeline_batch(cell_len: usize) -> Vec<u8> {
    let mut batch = vec![0x3cu8; PIPELINE_BATCH];
    for (i, cell) in batch.chunks_exact_mut(cell_len).enumerate() {
        let circ = 1 + 2 * (i as u32 % PIPELINE_CIRCUITS);
        cell[..4].copy_from_slice(&circ.to_be_bytes());
        cell[4] = Command::Data as u8;
    }
    batch
}

/// The relay's forwarding table: inbound circuit → (outbound circuit, layer).
fn pipeline_table() -> HashMap<u32, (u32, usize)> {
    (0..PIPELINE_CIRCUITS)
        .map(|i| (1 + 2 * i, (2 + 2 * i, i as usize)))
        .collect()
}

/// Forward one batch of `cell_len`-byte cells as a relay does: read the
/// header, look the circuit up, remove one CTR layer from the body in place,
/// append the cell to the outbound batch and rewrite its circuit id there
/// (so the inbound batch keeps its ids and can be replayed every iteration).
/// Written over slices so the four sizes run the very same code.
fn forward_batch(
    cell_len: usize,
    batch: &mut [u8],
    table: &HashMap<u32, (u32, usize)>,
    layers: &mut [AesCtr],
    out: &mut Vec<u8>,
) {
    out.clear();
    for cell in batch.chunks_exact_mut(cell_len) {
        let circ = u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]);
        if Command::from_byte(cell[4]) != Ok(Command::Data) {
            continue;
        }
        let Some(&(next, layer)) = table.get(&circ) else {
            continue;
        };
        layers[layer]
            .apply(&mut cell[CELL_HEADER_LEN..])
            .expect("ctr");
        let at = out.len();
        out.extend_from_slice(cell);
        out[at..at + 4].copy_from_slice(&next.to_be_bytes());
    }
}

/// The cell-size measurement: decode + relay layer + encode over 1 MiB.
fn cell_pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("cell_pipeline");
    g.throughput(Throughput::Bytes(PIPELINE_BATCH as u64));
    let table = pipeline_table();
    let mut out = Vec::with_capacity(PIPELINE_BATCH);
    for cell_len in [512usize, 1024, 2048, 4096] {
        let mut batch = pipeline_batch(cell_len);
        let mut layers: Vec<AesCtr> = (0..PIPELINE_CIRCUITS)
            .map(|i| AesCtr::new(&[i as u8; 16], &[0; 16]).expect("ctr"))
            .collect();
        g.bench_with_input(
            BenchmarkId::new("slices", cell_len),
            &cell_len,
            |b, &len| {
                b.iter(|| {
                    forward_batch(len, &mut batch, &table, &mut layers, &mut out);
                    black_box(&out);
                })
            },
        );
    }
    // The same work through the crate's own zero-copy API, at the real
    // CELL_LEN, to show the slice simulation matches it.
    let mut batch = pipeline_batch(CELL_LEN);
    let mut layers: Vec<RelayLayer> = (0..PIPELINE_CIRCUITS)
        .map(|i| RelayLayer::new(&layer_keys(i as u8)).expect("layer"))
        .collect();
    g.bench_with_input(BenchmarkId::new("api", CELL_LEN), &CELL_LEN, |b, _| {
        b.iter(|| {
            out.clear();
            for chunk in batch.chunks_exact_mut(CELL_LEN) {
                let mut cell = CellMut::new(chunk).expect("whole cell");
                if cell.command() != Ok(Command::Data) {
                    continue;
                }
                let Some(&(next, layer)) = table.get(&cell.circ().0) else {
                    continue;
                };
                layers[layer]
                    .remove_forward(cell.body_mut())
                    .expect("layer");
                let at = out.len();
                out.extend_from_slice(chunk);
                CellMut::new(&mut out[at..])
                    .expect("whole cell")
                    .set_circ(CircuitId(next));
            }
            black_box(&out);
        })
    });
    g.finish();
}
