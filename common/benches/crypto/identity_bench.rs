//! Announce signature verification: openssl 3.0's Ed25519 against
//! `ed25519-dalek`, on the same 64-byte signatures over a 300-byte body
//! (the size of a heartbeat announce with a few torrents).
//!
//! A module of the `crypto` bench (`mod identity_bench;`). The group
//! measures each way the project has verified a signature, so the choice of
//! library in `common/src/identity/ed25519.rs` rests on one run:
//!
//! * `openssl_cert`: decode the certificate, then openssl verify — what
//!   `identity::verify_signature` did before it moved to dalek;
//! * `openssl_raw_key`: `PKey` from the raw 32-byte key, then verify — what
//!   the tracker's key cache did;
//! * `openssl_ready_pkey`: verify only, with a `PKey` built beforehand (the
//!   floor for openssl);
//! * `dalek_cert`: `identity::verify_signature` now (openssl decodes the
//!   certificate, dalek verifies);
//! * `dalek_raw_key`: `identity::verify_signature_raw` (what the key cache
//!   does now: point decompression plus verify);
//! * `dalek_ready_key`: verify only with a decompressed `VerifyingKey`.

use anomos_common::identity::{
    verify_signature, verify_signature_raw, TlsIdentity, ANNOUNCE_SIG_CONTEXT,
};
use criterion::{BenchmarkId, Criterion};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use openssl::pkey::{Id, PKey};
use openssl::sign::Verifier;
use openssl::x509::X509;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;

/// Bytes of announce body signed (the context is added in front).
const BODY_LEN: usize = 300;

/// All benchmarks of this module.
pub fn bench(c: &mut Criterion) {
    let id = TlsIdentity::generate_at(&mut ChaCha20Rng::seed_from_u64(11), "anomos peer", 1)
        .expect("identity");
    let body: Vec<u8> = (0..BODY_LEN).map(|i| (i * 7) as u8).collect();
    let sig = id.sign(&body).expect("sign");
    let cert_der = id.cert_der().to_vec();
    let raw: [u8; 32] = id
        .key()
        .raw_public_key()
        .expect("raw key")
        .try_into()
        .expect("32 bytes");
    let pkey = PKey::public_key_from_raw_bytes(&raw, Id::ED25519).expect("pkey");
    let vk = VerifyingKey::from_bytes(&raw).expect("dalek key");
    let dsig = Signature::from_bytes(&sig);
    let signed = [ANNOUNCE_SIG_CONTEXT, &body].concat();

    let mut g = c.benchmark_group("ed25519_verify_300b");
    g.bench_function(BenchmarkId::from_parameter("openssl_cert"), |b| {
        b.iter(|| {
            let cert = X509::from_der(black_box(&cert_der)).expect("cert");
            let key = cert.public_key().expect("key");
            let mut v = Verifier::new_without_digest(&key).expect("verifier");
            let mut m = Vec::with_capacity(ANNOUNCE_SIG_CONTEXT.len() + body.len());
            m.extend_from_slice(ANNOUNCE_SIG_CONTEXT);
            m.extend_from_slice(black_box(&body));
            assert!(v.verify_oneshot(black_box(&sig), &m).expect("verify"));
        })
    });
    g.bench_function(BenchmarkId::from_parameter("openssl_raw_key"), |b| {
        b.iter(|| {
            let key = PKey::public_key_from_raw_bytes(black_box(&raw), Id::ED25519).expect("key");
            let mut v = Verifier::new_without_digest(&key).expect("verifier");
            let mut m = Vec::with_capacity(ANNOUNCE_SIG_CONTEXT.len() + body.len());
            m.extend_from_slice(ANNOUNCE_SIG_CONTEXT);
            m.extend_from_slice(black_box(&body));
            assert!(v.verify_oneshot(black_box(&sig), &m).expect("verify"));
        })
    });
    g.bench_function(BenchmarkId::from_parameter("openssl_ready_pkey"), |b| {
        b.iter(|| {
            let mut v = Verifier::new_without_digest(&pkey).expect("verifier");
            assert!(v
                .verify_oneshot(black_box(&sig), black_box(&signed))
                .expect("verify"));
        })
    });
    g.bench_function(BenchmarkId::from_parameter("dalek_cert"), |b| {
        b.iter(|| verify_signature(black_box(&cert_der), black_box(&body), &sig).expect("verify"))
    });
    g.bench_function(BenchmarkId::from_parameter("dalek_raw_key"), |b| {
        b.iter(|| verify_signature_raw(black_box(&raw), black_box(&body), &sig).expect("verify"))
    });
    g.bench_function(BenchmarkId::from_parameter("dalek_ready_key"), |b| {
        b.iter(|| {
            vk.verify(black_box(&signed), black_box(&dsig))
                .expect("verify")
        })
    });
    g.finish();
}
