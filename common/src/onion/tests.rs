//! Test vectors from `PROTOCOL.md` §3.8 (both directions), an independent
//! recomputation of one layer from the documented bytes, and the error paths.

use super::format::Block;
use super::proptests::{random_path, NOW};
use super::schedule::HopKeys;
use super::*;
use crate::crypto::{ct_eq, hkdf_sha256, hmac_sha256, AesCtr, X25519Secret};
use crate::replay::ReplayCache;
use crate::testvec::Vector;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The hops, ephemerals, padding and payload a vector documents.
struct Documented {
    secrets: Vec<X25519Secret>,
    ephemerals: Vec<[u8; 32]>,
    padding: Vec<u8>,
    hops: Vec<HopSpec>,
    payload: ExitPayload,
}

fn documented(v: &Vector, n: usize) -> Documented {
    let secrets: Vec<X25519Secret> = (0..n)
        .map(|i| X25519Secret::from_bytes(v.array(&format!("hop{i}_secret"))).expect("key"))
        .collect();
    let hops = secrets
        .iter()
        .enumerate()
        .map(|(i, k)| {
            assert_eq!(k.public(), v.array::<32>(&format!("hop{i}_public")));
            HopSpec {
                onion_public: k.public(),
                next_nid: (i + 1 < n)
                    .then(|| Nid(u16::try_from(v.u64(&format!("hop{i}_next_nid"))).expect("u16"))),
            }
        })
        .collect();
    Documented {
        ephemerals: (0..n).map(|i| v.array(&format!("ephemeral{i}"))).collect(),
        padding: v.bytes("padding"),
        payload: ExitPayload {
            infohash: InfoHash(v.array("infohash")),
            circuit_secret: CircuitSecret(v.array("circuit_secret")),
            expiry: v.u64("expiry"),
            credit: 0,
        },
        secrets,
        hops,
    }
}

fn layer_keys(v: &Vector, i: usize) -> LayerKeys {
    LayerKeys {
        forward: v.array(&format!("hop{i}_forward")),
        backward: v.array(&format!("hop{i}_backward")),
    }
}

/// Build from the documented inputs and compare; then peel the documented
/// bytes hop by hop and compare every output.
fn check_vector(name: &str, n: usize) {
    let v = Vector::load(name);
    let d = documented(&v, n);
    let now = v.u64("now");

    let built = build_with(&d.ephemerals, &d.padding, &d.hops, &d.payload).expect("build");
    assert_eq!(hex::encode(built.code.as_bytes()), v.str("code0"));
    let want: Vec<LayerKeys> = (1..n).map(|i| layer_keys(&v, i)).collect();
    assert_eq!(built.layer_keys, want);
    assert_eq!(built.expiry, d.payload.expiry);

    for (i, key) in d.secrets.iter().enumerate() {
        let code = TrackingCode::from_bytes(&v.bytes(&format!("code{i}"))).expect("code");
        let mut cache = ReplayCache::new(1);
        let want = if i + 1 < n {
            Peeled::Relay {
                next_nid: d.hops[i].next_nid.expect("nid"),
                next_code: TrackingCode::from_bytes(&v.bytes(&format!("code{}", i + 1)))
                    .expect("code"),
                layer_keys: layer_keys(&v, i),
                expiry: d.payload.expiry,
            }
        } else {
            Peeled::Exit {
                payload: d.payload.clone(),
                layer_keys: layer_keys(&v, i),
            }
        };
        assert_eq!(peel(key, &code, now, &mut cache).expect("peel"), want);
    }
}

#[test]
fn vector_onion_3hop() {
    check_vector("onion-3hop", 3);
}

#[test]
fn vector_onion_1hop() {
    check_vector("onion-1hop", 1);
}

/// Hop 0 of both vectors recomputed with the primitives only, following
/// the prose of §3.2–§3.6 rather than this module's code.
#[test]
fn vectors_match_an_independent_reading_of_the_spec() {
    for (name, n) in [("onion-3hop", 3), ("onion-1hop", 1)] {
        let v = Vector::load(name);
        let code = v.bytes("code0");
        let (alpha, beta, gamma, delta) =
            (&code[..32], &code[32..544], &code[544..560], &code[560..]);
        let k = X25519Secret::from_bytes(v.array("hop0_secret")).expect("key");
        let s = k.agree(&alpha.try_into().expect("32")).expect("agree");
        assert_eq!(hex::encode(s.0), v.str("hop0_shared"));
        let mut okm = [0u8; 220];
        hkdf_sha256(b"anomos-onion-v1", &s.0, b"keys", &mut okm).expect("hkdf");
        assert_eq!(hex::encode(okm), v.str("hop0_okm"));
        assert_eq!(&okm[156..188], &v.array::<32>("hop0_forward"));
        assert_eq!(&okm[188..220], &v.array::<32>("hop0_backward"));
        let mac = hmac_sha256(&okm[..32], &[alpha, beta, delta]).expect("hmac");
        assert!(ct_eq(&mac[..16], gamma));

        let key = |at: usize| -> [u8; 16] { okm[at..at + 16].try_into().expect("16") };
        let mut header = beta.to_vec();
        header.extend_from_slice(&[0u8; 64]);
        AesCtr::xor_once(&key(32), &key(48), &mut header).expect("ctr");
        let mut payload = delta.to_vec();
        AesCtr::xor_once(&key(64), &key(80), &mut payload).expect("ctr");
        let expiry = v.u64("expiry").to_be_bytes();
        assert_eq!(&header[8..16], &expiry);
        assert_eq!(&header[3..8], &[0u8; 5]);
        if n > 1 {
            let next = v.bytes("code1");
            assert_eq!(header[0], 1);
            assert_eq!(
                u64::from(u16::from_be_bytes([header[1], header[2]])),
                v.u64("hop0_next_nid")
            );
            assert_eq!(&header[16..48], &next[..32]);
            assert_eq!(&header[48..64], &next[544..560]);
            assert_eq!(&header[64..], &next[32..544]);
            assert_eq!(&payload[..], &next[560..]);
        } else {
            assert_eq!(header[0], 2);
            assert_eq!(&header[16..64], &[0u8; 48]);
            // The padding, decrypted at the exit, is the documented bytes.
            assert_eq!(&header[64..512], &v.bytes("padding")[..]);
        }
    }
}

fn some_path(n: usize) -> (super::proptests::Path, BuiltCode) {
    let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
    let path = random_path(&mut rng, n);
    let built = build(&mut rng, &path.hops, &path.payload).expect("build");
    (path, built)
}

#[test]
fn build_draws_ephemerals_then_padding_from_the_rng() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let path = random_path(&mut rng, 4);
    let mut copy = rng.clone();
    let built = build(&mut rng, &path.hops, &path.payload).expect("build");
    let ephemerals: Vec<[u8; 32]> = (0..4)
        .map(|_| crate::crypto::random_bytes(&mut copy))
        .collect();
    let mut padding = vec![0u8; 4 * BLOCK_LEN];
    rand::RngCore::fill_bytes(&mut copy, &mut padding);
    let again = build_with(&ephemerals, &padding, &path.hops, &path.payload).expect("build");
    assert_eq!(built.code, again.code);
    assert_eq!(built.layer_keys, again.layer_keys);
}

#[test]
fn build_validates_the_path() {
    let (path, _) = some_path(3);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let try_build = |hops: &[HopSpec], rng: &mut ChaCha20Rng| {
        build(rng, hops, &path.payload).expect_err("invalid").kind()
    };
    assert_eq!(try_build(&[], &mut rng), "bad_hop_count");
    let mut nine = vec![path.hops[0].clone(); 8];
    nine.push(path.hops[2].clone());
    assert_eq!(try_build(&nine, &mut rng), "bad_hop_count");
    let mut hops = path.hops.clone();
    hops[1].next_nid = None;
    assert!(matches!(
        build(&mut rng, &hops, &path.payload),
        Err(OnionError::MissingNextNid(1))
    ));
    let mut hops = path.hops.clone();
    hops[2].next_nid = Some(Nid(1));
    assert_eq!(try_build(&hops, &mut rng), "exit_with_next_nid");
    let mut hops = path.hops.clone();
    hops[1].onion_public = [0u8; 32];
    assert!(matches!(
        build(&mut rng, &hops, &path.payload),
        Err(OnionError::WeakKey(1))
    ));
    let bad = build_with(
        &[[1u8; 32]; 2],
        &[0u8; 5 * BLOCK_LEN],
        &path.hops,
        &path.payload,
    );
    assert_eq!(
        bad.expect_err("two ephemerals for three hops").kind(),
        "bad_randomness"
    );
    let bad = build_with(&[[1u8; 32]; 3], &[0u8; 64], &path.hops, &path.payload);
    assert_eq!(bad.expect_err("short padding").kind(), "bad_randomness");
}

#[test]
fn low_order_alpha_is_a_weak_key() {
    let (path, built) = some_path(2);
    let mut bytes = built.code.as_bytes().to_vec();
    bytes[..32].fill(0);
    let code = TrackingCode::from_bytes(&bytes).expect("length");
    let err = peel(&path.secrets[0], &code, NOW, &mut ReplayCache::new(1)).expect_err("weak");
    assert_eq!(err.kind(), "weak_key");
}

/// X25519 ignores bit 255 of a public key, so without `alpha` under the
/// MAC this flip would give the same `s` and pass (§3.5).
#[test]
fn alpha_is_covered_by_the_mac() {
    let (path, built) = some_path(2);
    let mut bytes = built.code.as_bytes().to_vec();
    bytes[31] ^= 0x80;
    let code = TrackingCode::from_bytes(&bytes).expect("length");
    let err = peel(&path.secrets[0], &code, NOW, &mut ReplayCache::new(1)).expect_err("flip");
    assert_eq!(err.kind(), "bad_mac");
}

#[test]
fn only_valid_codes_take_cache_slots_and_a_full_cache_fails_closed() {
    let (path, built) = some_path(2);
    let mut cache = ReplayCache::new(1);
    let mut bytes = built.code.as_bytes().to_vec();
    bytes[600] ^= 1;
    let tampered = TrackingCode::from_bytes(&bytes).expect("length");
    for _ in 0..3 {
        let err = peel(&path.secrets[0], &tampered, NOW, &mut cache).expect_err("bad mac");
        assert_eq!(err.kind(), "bad_mac");
    }
    assert!(cache.is_empty());
    peel(&path.secrets[0], &built.code, NOW, &mut cache).expect("valid code fits");
    // Another valid code for the same hop: no slot left, and none evicted.
    let mut hops = path.hops.clone();
    hops[0].onion_public = path.secrets[0].public();
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let second = build(&mut rng, &hops, &path.payload).expect("build");
    assert_ne!(second.code, built.code);
    let err = peel(&path.secrets[0], &second.code, NOW, &mut cache).expect_err("full");
    assert_eq!(err.kind(), "replay_cache_full");
    let err = peel(&path.secrets[0], &built.code, NOW, &mut cache).expect_err("replay");
    assert_eq!(err.kind(), "replayed");
}

/// `peel_with` is `peel` with the cache behind the caller's lock: same
/// result, one record per valid code, nothing recorded for a bad one, and
/// of two threads peeling the same code at once exactly one succeeds.
#[test]
fn peel_with_records_once_and_a_shared_cache_lets_one_of_two_racers_win() {
    use std::sync::{Arc, Mutex};
    let (path, built) = some_path(3);
    let mut own = ReplayCache::new(8);
    let want = peel(&path.secrets[0], &built.code, NOW, &mut own).expect("peel");
    let mut recorded = Vec::new();
    let got = peel_with(
        &path.secrets[0],
        &built.code,
        NOW,
        |_| false,
        |tag, expiry| {
            recorded.push((tag, expiry));
            Ok(())
        },
    )
    .expect("peel_with");
    assert_eq!(got, want);
    assert_eq!(recorded.len(), 1);
    assert!(own.contains(&recorded[0].0), "the same tag peel recorded");
    assert_eq!(recorded[0].1, built.expiry);
    // A tampered code is refused before either closure runs.
    let mut bytes = built.code.as_bytes().to_vec();
    bytes[600] ^= 1;
    let bad = TrackingCode::from_bytes(&bytes).expect("length");
    let err = peel_with(
        &path.secrets[0],
        &bad,
        NOW,
        |_| panic!("no look-up for a bad MAC"),
        |_, _| panic!("no record for a bad MAC"),
    )
    .expect_err("bad mac");
    assert_eq!(err.kind(), "bad_mac");
    // Two racers, one shared cache locked only for the look-ups.
    let cache = Arc::new(Mutex::new(ReplayCache::new(8)));
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, secret, code) =
                (cache.clone(), path.secrets[0].clone(), built.code.clone());
            std::thread::spawn(move || {
                let seen = |t: &_| cache.lock().expect("lock").contains(t);
                let record = |t, e| cache.lock().expect("lock").check_and_insert(t, e, NOW);
                peel_with(&secret, &code, NOW, seen, record).map_err(|e| e.kind())
            })
        })
        .collect();
    let results: Vec<_> = racers
        .into_iter()
        .map(|r| r.join().expect("join"))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results.contains(&Err("replayed")));
}

/// A one-hop code with an arbitrary block and payload plaintext under a
/// valid MAC: what only a (buggy or hostile) builder could make.
fn craft(
    hop: &X25519Secret,
    block: [u8; BLOCK_LEN],
    plain: [u8; EXIT_PAYLOAD_LEN],
) -> TrackingCode {
    let eph = X25519Secret::from_bytes([0x33; 32]).expect("key");
    let keys = HopKeys::derive(&eph.agree(&hop.public()).expect("agree"));
    let mut beta = [0u8; BETA_LEN];
    beta[..BLOCK_LEN].copy_from_slice(&block);
    let hs = keys.header_stream().expect("ctr");
    for (b, k) in beta.iter_mut().zip(hs.iter()) {
        *b ^= k;
    }
    let mut delta = keys.seal_exit(&plain).expect("seal");
    keys.xor_payload(&mut delta).expect("ctr");
    let gamma = keys.gamma(&eph.public(), &beta, &delta);
    TrackingCode::from_parts(&eph.public(), &beta, &gamma, &delta)
}

#[test]
fn bad_blocks_and_payloads_under_a_valid_mac_are_refused_without_a_slot() {
    let hop = X25519Secret::from_bytes([0x44; 32]).expect("key");
    let payload = ExitPayload {
        infohash: InfoHash([1; 32]),
        circuit_secret: CircuitSecret([2; 32]),
        expiry: NOW + 60,
        credit: 0,
    };
    let exit = Block::Exit { expiry: NOW + 60 }.encode();
    let mut cache = ReplayCache::new(4);
    let ok = craft(&hop, exit, payload.encode());
    assert!(matches!(
        peel(&hop, &ok, NOW, &mut cache),
        Ok(Peeled::Exit { .. })
    ));
    cache = ReplayCache::new(4);

    let mut kind3 = exit;
    kind3[0] = 3;
    let mut reserved = exit;
    reserved[4] = 1;
    let mut stray_nid = exit;
    stray_nid[2] = 9;
    let mut other_expiry = payload.clone();
    other_expiry.expiry += 1;
    let mut version2 = payload.encode();
    version2[0] = 2;
    let cases = [
        (craft(&hop, kind3, payload.encode()), "malformed"),
        (craft(&hop, reserved, payload.encode()), "malformed"),
        (craft(&hop, stray_nid, payload.encode()), "malformed"),
        (craft(&hop, exit, other_expiry.encode()), "bad_payload"),
        (craft(&hop, exit, version2), "bad_payload"),
    ];
    for (code, kind) in cases {
        let err = peel(&hop, &code, NOW, &mut cache).expect_err(kind);
        assert_eq!(err.kind(), kind, "{err}");
    }
    assert!(cache.is_empty());
}

#[test]
fn codes_serialize_as_bytes_and_never_print_them() {
    let (_, built) = some_path(3);
    let cfg = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&built.code, cfg).expect("encode");
    let (back, _): (TrackingCode, usize) =
        bincode::serde::decode_from_slice(&bytes, cfg).expect("decode");
    assert_eq!(back, built.code);
    let short =
        bincode::serde::encode_to_vec(serde_bytes::Bytes::new(&[0u8; 10]), cfg).expect("encode");
    assert!(bincode::serde::decode_from_slice::<TrackingCode, _>(&short, cfg).is_err());

    let shown = format!("{built:?}");
    assert!(shown.contains("TrackingCode([opaque])"), "{shown}");
    assert!(!shown.contains(&hex::encode(&built.code.as_bytes()[..4])));
    assert_eq!(
        TrackingCode::from_bytes(&[0u8; 10]),
        Err(DecodeError::NeedMore(CODE_LEN - 10))
    );
    assert!(matches!(
        TrackingCode::from_bytes(&[0u8; CODE_LEN + 1]),
        Err(DecodeError::Malformed(_))
    ));
}
