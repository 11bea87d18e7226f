//! Handshake and record vectors (PROTOCOL.md §6), attacks, round trips.

use super::*;
use crate::crypto::{hkdf_sha256, AesGcm};
use crate::testvec::Vector;
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn secret(b: u8) -> CircuitSecret {
    CircuitSecret([b; 32])
}

/// A fresh pair of channels (originator, exit) from a seeded handshake.
fn pair(seed: u64) -> (Channel, Channel) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let s = secret(9);
    let (init, msg) = Initiator::new(&mut rng, &s).expect("init");
    let (exit, accept) = Responder::accept(&mut rng, &s, &msg).expect("accept");
    (init.finish(&accept).expect("finish"), exit)
}

fn key(v: &Vector, name: &str) -> X25519Secret {
    X25519Secret::from_bytes(v.array(name)).expect("key")
}

#[test]
fn vector_handshake_and_records() {
    let v = Vector::load("e2e_handshake");
    let s = CircuitSecret(v.array("circuit_secret"));
    let (initiator, init) = Initiator::with_ephemeral(key(&v, "e_o_secret"), &s);
    assert_eq!(hex::encode(init), v.str("init"));
    let (mut exit, accept) =
        Responder::accept_with_ephemeral(key(&v, "e_x_secret"), &s, &init).expect("accept");
    assert_eq!(hex::encode(accept), v.str("accept"));
    let mut orig = initiator.finish(&v.bytes("accept")).expect("finish");

    // Independent recomputation of the key schedule from the documented parts.
    let dh = key(&v, "e_o_secret")
        .agree(&v.array("e_x_public"))
        .expect("dh");
    assert_eq!(hex::encode(&dh.0), v.str("dh"));
    let info = [KDF_LABEL, &v.bytes("e_o_public"), &v.bytes("e_x_public")].concat();
    let mut okm = [0u8; 104];
    hkdf_sha256(&v.bytes("circuit_secret"), &dh.0, &info, &mut okm).expect("hkdf");
    let keys = ChannelKeys::derive(&s, &dh, &v.array("e_o_public"), &v.array("e_x_public"))
        .expect("derive");
    assert_eq!(hex::encode(okm), v.str("okm"));
    assert_eq!(hex::encode(keys.key_ox), v.str("key_ox"));
    assert_eq!(hex::encode(keys.key_xo), v.str("key_xo"));
    assert_eq!(hex::encode(keys.prefix_ox), v.str("prefix_ox"));
    assert_eq!(hex::encode(keys.prefix_xo), v.str("prefix_xo"));
    assert_eq!(hex::encode(keys.confirm), v.str("confirm_key"));
    let mac =
        crate::crypto::hmac_sha256(&keys.confirm, &[b"exit", &init, &accept[..34]]).expect("hmac");
    assert_eq!(&mac[..16], &accept[34..]);

    // Records: seq 0 in each direction, then seq 1 originator → exit.
    let r = Vector::load("e2e_record");
    for (label, to_exit) in [("ox0", true), ("xo0", false), ("ox1", true)] {
        let (sender, receiver) = if to_exit {
            (&mut orig, &mut exit)
        } else {
            (&mut exit, &mut orig)
        };
        let plain = r.bytes(&format!("{label}_plaintext"));
        let mut sealed = Vec::new();
        sender.seal(&plain, &mut sealed).expect("seal");
        assert_eq!(
            hex::encode(&sealed),
            r.str(&format!("{label}_record")),
            "{label}"
        );
        assert_eq!(receiver.open(&sealed).expect("open"), plain, "{label}");
    }
    // The same records through the copy-free variants, from fresh channels.
    let mut orig2 = Channel::new(&keys, Role::Originator).expect("channel");
    let mut exit2 = Channel::new(&keys, Role::Exit).expect("channel");
    for (label, to_exit) in [("ox0", true), ("xo0", false), ("ox1", true)] {
        let (sender, receiver) = if to_exit {
            (&mut orig2, &mut exit2)
        } else {
            (&mut exit2, &mut orig2)
        };
        let plain = r.bytes(&format!("{label}_plaintext"));
        let mut body = [0u8; MAX_RECORD_LEN];
        let n = sender.seal_into(&plain, &mut body).expect("seal");
        assert_eq!(hex::encode(&body[..n]), r.str(&format!("{label}_record")));
        let mut out = [0u8; MAX_RECORD_LEN];
        let m = receiver.open_into(&body[..n], &mut out).expect("open");
        assert_eq!(&out[..m], &plain[..], "{label}");
    }
    // The documented nonce layout, checked with the raw primitive.
    let mut raw = AesGcm::opener(&keys.key_ox).expect("gcm");
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&keys.prefix_ox);
    nonce[11] = 1;
    let mut rec = r.bytes("ox1_record");
    let (body, tag) = rec.split_at_mut(r.bytes("ox1_plaintext").len());
    let tag: [u8; 16] = (&*tag).try_into().expect("tag");
    raw.open_in_place(&nonce, &[], body, &tag)
        .expect("raw open");
    assert_eq!(body, &r.bytes("ox1_plaintext")[..]);
}

#[test]
fn relay_substituting_a_key_is_detected() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let s = secret(1);
    let (init, msg) = Initiator::new(&mut rng, &s).expect("init");
    // A relay swaps in its own INIT towards the exit…
    let (_, relay_msg) = Initiator::new(&mut rng, &secret(2)).expect("relay");
    let (_, accept) = Responder::accept(&mut rng, &s, &relay_msg).expect("accept");
    // …and relays the exit's answer: the transcript no longer matches.
    assert!(matches!(init.finish(&accept), Err(E2eError::BadConfirm)));
    // Or answers itself without the circuit secret.
    let (init, msg2) = Initiator::new(&mut rng, &s).expect("init");
    let (_, forged) = Responder::accept(&mut rng, &secret(2), &msg2).expect("forged");
    let e = init.finish(&forged).expect_err("forged");
    assert_eq!(e.kind(), "bad_confirm");
    assert_ne!(msg, msg2, "fresh ephemerals");
}

#[test]
fn handshake_rejects_bad_messages() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let s = secret(3);
    let (_, msg) = Initiator::new(&mut rng, &s).expect("init");
    let mut bad = msg;
    bad[1] = 2;
    let e = Responder::accept(&mut rng, &s, &bad).expect_err("version");
    assert!(matches!(e, E2eError::UnsupportedVersion(2)));
    bad[0] = ACCEPT_TYPE;
    assert_eq!(
        Responder::accept(&mut rng, &s, &bad)
            .expect_err("type")
            .kind(),
        "malformed"
    );
    assert!(Responder::accept(&mut rng, &s, &msg[..33]).is_err());
    let mut zero = msg;
    zero[2..].fill(0);
    assert_eq!(
        Responder::accept(&mut rng, &s, &zero)
            .expect_err("weak")
            .kind(),
        "crypto"
    );
}

#[test]
fn limits_and_closing() {
    let (mut o, mut x) = pair(3);
    let mut out = Vec::new();
    o.seal(&[1; MAX_RECORD_PLAINTEXT], &mut out)
        .expect("max fits");
    assert_eq!(out.len(), MAX_RECORD_LEN);
    assert_eq!(
        o.seal(&[1; MAX_RECORD_PLAINTEXT + 1], &mut out)
            .expect_err("too long")
            .kind(),
        "too_long"
    );
    assert_eq!(out.len(), MAX_RECORD_LEN, "nothing appended on error");
    assert_eq!(x.open(&out).expect("open").len(), MAX_RECORD_PLAINTEXT);
    // A short record fails and closes the channel for good.
    assert!(matches!(x.open(&[0; 15]), Err(E2eError::BadRecord)));
    let mut next = Vec::new();
    o.seal(b"fine", &mut next).expect("seal");
    assert!(matches!(x.open(&next), Err(E2eError::Closed)));
    assert_eq!((o.sent(), x.received()), (2, 1));
    assert!(!format!(
        "{o:?} {:?}",
        ChannelKeys::derive(
            &secret(1),
            &crate::crypto::SharedSecret([1; 32]),
            &[2; 32],
            &[3; 32]
        )
        .expect("keys")
    )
    .contains("0101"));
}

#[derive(Debug, Clone)]
enum Attack {
    Swap(usize),
    Replay(usize),
    Drop(usize),
    Flip(usize, usize),
}

fn seal_all(ch: &mut Channel, msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    msgs.iter()
        .map(|m| {
            let mut out = Vec::new();
            ch.seal(m, &mut out).expect("seal");
            out
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_round_trip_in_order(
        seed in any::<u64>(),
        msgs in prop::collection::vec((any::<bool>(), prop::collection::vec(any::<u8>(), 0..=MAX_RECORD_PLAINTEXT)), 0..12),
    ) {
        let (mut o, mut x) = pair(seed);
        for (to_exit, m) in &msgs {
            let (tx, rx) = if *to_exit { (&mut o, &mut x) } else { (&mut x, &mut o) };
            let mut rec = Vec::new();
            tx.seal(m, &mut rec).expect("seal");
            prop_assert_eq!(rec.len(), m.len() + RECORD_OVERHEAD);
            if !m.is_empty() {
                prop_assert_ne!(&rec[..m.len()], &m[..], "encrypted");
            }
            let mut copy = rec.clone();
            prop_assert_eq!(&rx.open_in_place(&mut copy).expect("open")[..], &m[..]);
        }
    }

    #[test]
    fn attacks_fail(
        seed in any::<u64>(),
        msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 3..6),
        attack in prop_oneof![
            (0usize..5).prop_map(Attack::Swap),
            (0usize..5).prop_map(Attack::Replay),
            (0usize..5).prop_map(Attack::Drop),
            (0usize..5, any::<usize>()).prop_map(|(i, b)| Attack::Flip(i, b)),
        ],
    ) {
        let (mut o, mut x) = pair(seed);
        let mut recs = seal_all(&mut o, &msgs);
        let n = recs.len();
        let at = match &attack {
            Attack::Swap(i) => {
                let i = i % (n - 1);
                prop_assume!(recs[i] != recs[i + 1]);
                recs.swap(i, i + 1);
                i
            }
            Attack::Replay(i) => {
                let i = i % n;
                let r = recs[i].clone();
                recs.insert(i + 1, r);
                i + 1
            }
            Attack::Drop(i) => {
                let i = i % (n - 1);
                recs.remove(i);
                i
            }
            Attack::Flip(i, bit) => {
                let i = i % n;
                let bit = bit % (recs[i].len() * 8);
                recs[i][bit / 8] ^= 1 << (bit % 8);
                i
            }
        };
        for (k, r) in recs.iter().enumerate() {
            let got = x.open(r);
            if k < at {
                prop_assert_eq!(got.expect("before the attack"), msgs[k].clone());
            } else {
                prop_assert!(got.is_err(), "record {} after {:?} opened", k, attack);
            }
        }
    }

    #[test]
    fn handshake_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..80), fix in any::<bool>()) {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut input = bytes;
        if fix && input.len() >= 2 {
            input[0] = INIT_TYPE;
            input[1] = E2E_VERSION;
        }
        let _ = Responder::accept(&mut rng, &secret(1), &input);
        let (init, _) = Initiator::new(&mut rng, &secret(1)).expect("init");
        prop_assert!(init.finish(&input).is_err(), "a random ACCEPT never verifies");
    }
}
