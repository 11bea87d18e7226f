//! Relay layers on whole circuits, with the real crypto.

use super::*;
use crate::testvec::Vector;
use proptest::prelude::*;

fn keys(forward: [u8; 32], backward: [u8; 32]) -> LayerKeys {
    LayerKeys { forward, backward }
}

/// A circuit of `hops` layer holders (relays, then the exit), as the
/// originator and as each hop see it.
fn circuit(all: &[LayerKeys]) -> (OriginLayers, Vec<RelayLayer>) {
    let origin = OriginLayers::new(all).expect("layers");
    let hops = all
        .iter()
        .map(|k| RelayLayer::new(k).expect("layer"))
        .collect();
    (origin, hops)
}

/// Send one body forward; return the bytes on every link (link i enters hop
/// i) followed by what the exit ends with.
fn forward(
    origin: &mut OriginLayers,
    hops: &mut [RelayLayer],
    body: &[u8; CELL_BODY_LEN],
) -> Vec<[u8; CELL_BODY_LEN]> {
    let mut b = *body;
    origin.wrap_forward(&mut b).expect("wrap");
    let mut seen = Vec::new();
    for h in hops.iter_mut() {
        seen.push(b);
        h.remove_forward(&mut b).expect("remove");
    }
    seen.push(b);
    seen
}

/// Send one body backward from the exit; return the bytes on every link
/// (link i leaves hop i towards the originator) and what the originator ends with.
fn backward(
    origin: &mut OriginLayers,
    hops: &mut [RelayLayer],
    body: &[u8; CELL_BODY_LEN],
) -> Vec<[u8; CELL_BODY_LEN]> {
    let mut b = *body;
    let mut seen = vec![[0u8; CELL_BODY_LEN]; hops.len()];
    for (i, h) in hops.iter_mut().enumerate().rev() {
        h.add_backward(&mut b).expect("add");
        seen[i] = b;
    }
    origin.unwrap_backward(&mut b).expect("unwrap");
    seen.push(b);
    seen
}

fn assert_pairwise_distinct(bodies: &[[u8; CELL_BODY_LEN]]) {
    for i in 0..bodies.len() {
        for j in i + 1..bodies.len() {
            assert_ne!(bodies[i], bodies[j], "bodies {i} and {j} equal");
            // Not just different somewhere: different almost everywhere.
            let same = bodies[i]
                .iter()
                .zip(&bodies[j])
                .filter(|(a, b)| a == b)
                .count();
            assert!(same < 20, "bodies {i} and {j} share {same} bytes");
        }
    }
}

#[test]
fn three_relay_circuit_bytes_differ_on_every_link() {
    // Originator → R1 → R2 → R3 → exit: four layers, four links.
    let all: Vec<LayerKeys> = (0..4u8).map(|i| keys([i; 32], [0x80 | i; 32])).collect();
    let (mut origin, mut hops) = circuit(&all);
    for round in 0..3u8 {
        let mut plain = [0u8; CELL_BODY_LEN];
        DataBody::encode(b"piece 7, block 3", &mut plain);
        let seen = forward(&mut origin, &mut hops, &plain);
        let (links, exit) = seen.split_at(4);
        assert_eq!(exit[0], plain, "round {round}: exit recovers the plaintext");
        assert_eq!(DataBody::decode(&exit[0]), Ok(&b"piece 7, block 3"[..]));
        let mut all_views = links.to_vec();
        all_views.push(plain);
        assert_pairwise_distinct(&all_views);

        let mut reply = [0u8; CELL_BODY_LEN];
        DataBody::encode(&[round; 600], &mut reply);
        let seen = backward(&mut origin, &mut hops, &reply);
        let (links, end) = seen.split_at(4);
        assert_eq!(
            end[0], reply,
            "round {round}: originator recovers the reply"
        );
        let mut all_views = links.to_vec();
        all_views.push(reply);
        assert_pairwise_distinct(&all_views);
    }
}

#[test]
fn streams_continue_across_cells() {
    let all = [keys([1; 32], [2; 32])];
    let (mut origin, mut hops) = circuit(&all);
    let plain = [0u8; CELL_BODY_LEN];
    let first = forward(&mut origin, &mut hops, &plain);
    let second = forward(&mut origin, &mut hops, &plain);
    assert_ne!(
        first[0], second[0],
        "same body, different keystream position"
    );
    assert_eq!(second[1], plain);
}

#[test]
fn batch_variants_match_per_cell() {
    let k = keys([3; 32], [4; 32]);
    let mut one = RelayLayer::new(&k).expect("layer");
    let mut many = RelayLayer::new(&k).expect("layer");
    let mut bodies = vec![0x5au8; CELL_BODY_LEN * 3 + 7];
    let mut expect = bodies.clone();
    for chunk in expect[..CELL_BODY_LEN * 3].chunks_exact_mut(CELL_BODY_LEN) {
        let body: &mut [u8; CELL_BODY_LEN] = chunk.try_into().expect("len");
        one.remove_forward(body).expect("fwd");
        one.add_backward(body).expect("bwd");
    }
    many.remove_forward_many(&mut bodies).expect("fwd");
    many.add_backward_many(&mut bodies).expect("bwd");
    assert_eq!(bodies, expect, "partial trailing body untouched");
}

fn vector_keys(v: &Vector) -> Vec<LayerKeys> {
    (0..v.u64("hops"))
        .map(|i| {
            keys(
                v.array(&format!("hop{i}_forward")),
                v.array(&format!("hop{i}_backward")),
            )
        })
        .collect()
}

/// Independent recomputation of link bytes: fresh one-shot keystreams at
/// the documented offset, XORed in one by one.
fn one_shot(plain: &[u8; CELL_BODY_LEN], layers: &[&[u8; 32]], cell_index: usize) -> Vec<u8> {
    let mut out = vec![0u8; CELL_BODY_LEN * (cell_index + 1)];
    out[CELL_BODY_LEN * cell_index..].copy_from_slice(plain);
    for key_iv in layers {
        let mut stream = vec![0u8; out.len()];
        let key: [u8; 16] = key_iv[..16].try_into().expect("key");
        let iv: [u8; 16] = key_iv[16..].try_into().expect("iv");
        AesCtr::xor_once(&key, &iv, &mut stream).expect("ctr");
        out.iter_mut().zip(&stream).for_each(|(o, s)| *o ^= s);
    }
    out.split_off(CELL_BODY_LEN * cell_index)
}

#[test]
fn vector_relay_layers() {
    let v = Vector::load("relay_layers");
    let all = vector_keys(&v);
    let n = all.len();
    let (mut origin, mut hops) = circuit(&all);
    let check = |label: &str, body: &[u8; CELL_BODY_LEN]| {
        assert_eq!(hex::encode(&body[..32]), v.str(label), "{label}");
        let digest = hex::encode(crate::crypto::sha256(body));
        assert_eq!(digest, v.str(&format!("{label}_sha256")), "{label}");
    };
    let mut plain = [0u8; CELL_BODY_LEN];
    DataBody::encode(&v.bytes("forward_data"), &mut plain);
    check("forward_plain", &plain);
    for cell in 0..2 {
        let seen = forward(&mut origin, &mut hops, &plain);
        for (link, body) in seen[..n].iter().enumerate() {
            check(&format!("fwd{cell}_link{link}"), body);
            // Link `link` still carries the layers of hops link..n.
            let layers: Vec<&[u8; 32]> = all[link..].iter().map(|k| &k.forward).collect();
            assert_eq!(&one_shot(&plain, &layers, cell)[..], &body[..]);
        }
        assert_eq!(seen[n], plain);
    }
    let mut reply = [0u8; CELL_BODY_LEN];
    DataBody::encode(&v.bytes("backward_data"), &mut reply);
    let seen = backward(&mut origin, &mut hops, &reply);
    for (link, body) in seen[..n].iter().enumerate() {
        check(&format!("bwd0_link{link}"), body);
        let layers: Vec<&[u8; 32]> = all[link..].iter().map(|k| &k.backward).collect();
        assert_eq!(&one_shot(&reply, &layers, 0)[..], &body[..]);
    }
    assert_eq!(seen[n], reply);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_circuit_round_trips(
        raw in prop::collection::vec(any::<([u8; 32], [u8; 32])>(), 1..8),
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1100), 1..5),
    ) {
        let all: Vec<LayerKeys> = raw.into_iter().map(|(f, b)| keys(f, b)).collect();
        let (mut origin, mut hops) = circuit(&all);
        prop_assert_eq!(origin.hops(), all.len());
        for m in &msgs {
            let mut plain = [0u8; CELL_BODY_LEN];
            let n = DataBody::encode(m, &mut plain);
            let seen = forward(&mut origin, &mut hops, &plain);
            prop_assert_eq!(DataBody::decode(&seen[all.len()]), Ok(&m[..n]));
            let seen = backward(&mut origin, &mut hops, &plain);
            prop_assert_eq!(seen[all.len()], plain);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The run methods over cells laid out in a link buffer equal the
    /// per-body methods applied cell by cell, leave headers (and a partial
    /// trailing cell) alone, and continue the same keystreams: runs and
    /// single bodies may be mixed on one circuit.
    #[test]
    fn cell_runs_equal_body_by_body(
        raw in prop::collection::vec(any::<([u8; 32], [u8; 32])>(), 1..4),
        runs in prop::collection::vec(0usize..20, 1..5),
        fill in any::<u8>(),
    ) {
        let all: Vec<LayerKeys> = raw.into_iter().map(|(f, b)| keys(f, b)).collect();
        let (mut o1, mut h1) = circuit(&all);
        let (mut o2, mut h2) = circuit(&all);
        for (i, &n) in runs.iter().enumerate() {
            let mut cells: Vec<u8> = (0..n * CELL_LEN + 7).map(|j| fill ^ (j as u8)).collect();
            let orig = cells.clone();
            let mut bodies: Vec<[u8; CELL_BODY_LEN]> = cells
                .chunks_exact(CELL_LEN)
                .map(|c| c[CELL_HEADER_LEN..].try_into().expect("body"))
                .collect();
            match i % 4 {
                0 => {
                    o1.wrap_forward_cells(&mut cells).expect("run");
                    bodies.iter_mut().for_each(|b| o2.wrap_forward(b).expect("body"));
                }
                1 => {
                    o1.unwrap_backward_cells(&mut cells).expect("run");
                    bodies.iter_mut().for_each(|b| o2.unwrap_backward(b).expect("body"));
                }
                2 => {
                    h1[0].remove_forward_cells(&mut cells).expect("run");
                    bodies.iter_mut().for_each(|b| h2[0].remove_forward(b).expect("body"));
                }
                _ => {
                    h1[0].add_backward_cells(&mut cells).expect("run");
                    bodies.iter_mut().for_each(|b| h2[0].add_backward(b).expect("body"));
                }
            }
            for (k, c) in cells.chunks_exact(CELL_LEN).enumerate() {
                prop_assert_eq!(&c[..CELL_HEADER_LEN], &orig[k * CELL_LEN..k * CELL_LEN + CELL_HEADER_LEN]);
                prop_assert_eq!(&c[CELL_HEADER_LEN..], &bodies[k][..]);
            }
            prop_assert_eq!(&cells[n * CELL_LEN..], &orig[n * CELL_LEN..]);
        }
    }
}
