//! Peel must never panic, whatever bytes arrive in a CREATE cell.
//!
//! Random bytes almost never pass the MAC, so half the inputs are turned
//! into codes that do: the input picks the path length, ephemerals and
//! padding of a real code for a fixed set of hop keys, then XORs the rest of
//! the input into it. That reaches the block, payload and replay-cache code
//! behind the MAC, with and without tampering.
#![no_main]

use anomos_common::crypto::{CircuitSecret, X25519Secret};
use anomos_common::onion::{
    build_with, peel, ExitPayload, HopSpec, Peeled, TrackingCode, BLOCK_LEN, CODE_LEN, MAX_HOPS,
};
use anomos_common::replay::ReplayCache;
use anomos_common::{InfoHash, Nid};

const NOW: u64 = 1_700_000_000;

fn hop_key(i: usize) -> X25519Secret {
    X25519Secret::from_bytes([0x10 + i as u8; 32]).expect("valid key")
}

/// Peel `code` along the fixed hops, starting at hop 0, until it fails or exits.
fn peel_along(mut code: TrackingCode, now: u64) {
    for i in 0..MAX_HOPS {
        let mut cache = ReplayCache::new(2);
        match peel(&hop_key(i), &code, now, &mut cache) {
            Ok(Peeled::Relay { next_code, .. }) => {
                assert_eq!(next_code.as_bytes().len(), CODE_LEN);
                // The same code again must be a replay.
                assert!(peel(&hop_key(i), &code, now, &mut cache).is_err());
                code = next_code;
            }
            Ok(Peeled::Exit { .. }) | Err(_) => return,
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Raw bytes, as a neighbour could send them.
        if let Ok(code) = TrackingCode::from_bytes(rest) {
            let mut cache = ReplayCache::new(2);
            let _ = peel(&hop_key(0), &code, NOW, &mut cache);
        }
        return;
    }
    // A valid code steered by the input, then tampered with by the rest.
    let n = 1 + usize::from(mode >> 1) % MAX_HOPS;
    let mut bytes = rest.iter().copied().chain(std::iter::repeat(0));
    let mut take = |len: usize| -> Vec<u8> { bytes.by_ref().take(len).collect() };
    let ephemerals: Vec<[u8; 32]> = (0..n)
        .map(|_| take(32).try_into().expect("32 bytes"))
        .collect();
    let padding = take((MAX_HOPS - n) * BLOCK_LEN);
    let lifetime = u64::from(take(1)[0]) * 16;
    let hops: Vec<HopSpec> = (0..n)
        .map(|i| HopSpec {
            onion_public: hop_key(i).public(),
            next_nid: (i + 1 < n).then_some(Nid(i as u16)),
        })
        .collect();
    let payload = ExitPayload {
        infohash: InfoHash([0xab; 32]),
        circuit_secret: CircuitSecret([0xcd; 32]),
        expiry: NOW + lifetime,
        credit: 0,
    };
    let Ok(built) = build_with(&ephemerals, &padding, &hops, &payload) else {
        return;
    };
    let mut code = built.code.as_bytes().to_vec();
    for (c, x) in code.iter_mut().zip(take(CODE_LEN)) {
        *c ^= x;
    }
    if let Ok(code) = TrackingCode::from_bytes(&code) {
        peel_along(code, NOW);
    }
});
