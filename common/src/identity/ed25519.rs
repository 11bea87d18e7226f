//! Ed25519 verification of announce signatures, on `ed25519-dalek`.
//!
//! Verification is the tracker's per-heartbeat cost. openssl 3.0 verifies an
//! Ed25519 signature in ~115 µs on the build machine; `ed25519-dalek` (with
//! its precomputed base-point tables and the AVX2 backend it picks at run
//! time) does the same check several times faster (BENCHMARKS.md, "Ed25519
//! verification"). Signing stays in openssl: it is rare (one per announce on
//! the peer) and keeps private keys in one library.
//!
//! The verdicts must stay openssl's, so a signature that one side of the
//! protocol accepts is never refused by the other. openssl 3.0
//! (`ossl_ed25519_verify`) implements RFC 8032 §5.1.7 cofactorless:
//! it refuses S ≥ L, decodes A (refusing encodings that are not on the
//! curve), recomputes R' = [S]B − [k]A and compares its encoding with the
//! signature's R byte for byte. It does *not* refuse small-order A or R.
//! `VerifyingKey::verify` (the `Verifier` trait) is exactly that check;
//! `verify_strict` additionally refuses small-order A and R, so it would
//! refuse signatures openssl accepts. We use `verify`, without the crate's
//! `legacy_compatibility` feature (which would accept S ≥ L). The tests
//! below compare both libraries on the edge cases.

use super::{IdentityError, ANNOUNCE_SIG_CONTEXT, SIGNATURE_LEN};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// Length of a raw Ed25519 public key (RFC 8032 §5.1.5 encoding).
pub const PUBLIC_KEY_LEN: usize = 32;

/// Verify an announce signature under a raw Ed25519 public key: `sig` must
/// be the Ed25519 signature of `ANNOUNCE_SIG_CONTEXT ‖ msg` under `public`.
///
/// For callers that already hold the key (the tracker's key cache); with a
/// certificate use [`super::verify_signature`]. Every failure, including a
/// key that is not a curve point, is [`IdentityError::BadSignature`].
pub fn verify_signature_raw(
    public: &[u8; PUBLIC_KEY_LEN],
    msg: &[u8],
    sig: &[u8],
) -> Result<(), IdentityError> {
    let mut signed = Vec::with_capacity(ANNOUNCE_SIG_CONTEXT.len() + msg.len());
    signed.extend_from_slice(ANNOUNCE_SIG_CONTEXT);
    signed.extend_from_slice(msg);
    if verify_exact(public, &signed, sig) {
        Ok(())
    } else {
        Err(IdentityError::BadSignature)
    }
}

/// Plain RFC 8032 Ed25519 verification of `signed` (no context added).
fn verify_exact(public: &[u8; PUBLIC_KEY_LEN], signed: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = <&[u8; SIGNATURE_LEN]>::try_from(sig) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(public) else {
        return false;
    };
    key.verify(signed, &Signature::from_bytes(sig)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testvec::Vector;
    use openssl::pkey::{Id, PKey};
    use openssl::sign::{Signer, Verifier as OsslVerifier};
    use proptest::prelude::*;

    /// The group order L, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    /// Encodings of the eight points of small order (the identity, one point
    /// of order 2, two of order 4, four of order 8), then non-canonical
    /// encodings of some of them (sign bit on x = 0, y ≥ p).
    const SMALL_ORDER: [&str; 12] = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];

    /// openssl's verdict, the way `verify_signature` reached it before.
    fn openssl_verify(public: &[u8; 32], signed: &[u8], sig: &[u8]) -> bool {
        let Ok(key) = PKey::public_key_from_raw_bytes(public, Id::ED25519) else {
            return false;
        };
        let Ok(mut v) = OsslVerifier::new_without_digest(&key) else {
            return false;
        };
        matches!(v.verify_oneshot(sig, signed), Ok(true))
    }

    /// Both verdicts, which must agree; returns the common one.
    fn both(public: &[u8; 32], signed: &[u8], sig: &[u8]) -> bool {
        let dalek = verify_exact(public, signed, sig);
        let ossl = openssl_verify(public, signed, sig);
        assert_eq!(
            dalek,
            ossl,
            "disagree: pk={} sig={} msg={}",
            hex::encode(public),
            hex::encode(sig),
            hex::encode(signed)
        );
        dalek
    }

    /// An openssl key pair from a seed: (public key, signer of raw messages).
    fn openssl_sign(seed: &[u8; 32], signed: &[u8]) -> ([u8; 32], [u8; 64]) {
        let key = PKey::private_key_from_raw_bytes(seed, Id::ED25519).expect("key");
        let public: [u8; 32] = key
            .raw_public_key()
            .expect("pk")
            .try_into()
            .expect("32 bytes");
        let mut s = Signer::new_without_digest(&key).expect("signer");
        let sig: [u8; 64] = s
            .sign_oneshot_to_vec(signed)
            .expect("sign")
            .try_into()
            .expect("64 bytes");
        (public, sig)
    }

    /// `s + L` as 32 little-endian bytes (no overflow: s < L < 2^253).
    fn add_l(s: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s[i]) + u16::from(L[i]) + carry;
            out[i] = v as u8;
            carry = v >> 8;
        }
        out
    }

    #[test]
    fn rfc8032_vectors_verify_in_both() {
        // RFC 8032 §7.1 TEST 1 (empty message) and TEST 2 (one byte).
        for (seed, public, msg, sig) in [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                 5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                 085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
        ] {
            let seed: [u8; 32] = hex::decode(seed).expect("hex").try_into().expect("32");
            let public: [u8; 32] = hex::decode(public).expect("hex").try_into().expect("32");
            let msg = hex::decode(msg).expect("hex");
            let sig = hex::decode(sig).expect("hex");
            // Independent check of the pasted bytes: openssl re-derives them.
            assert_eq!(
                openssl_sign(&seed, &msg),
                (public, sig.clone().try_into().expect("64"))
            );
            assert!(both(&public, &msg, &sig));
            let mut bad = sig.clone();
            bad[63] ^= 0x01;
            assert!(!both(&public, &msg, &bad));
        }
    }

    #[test]
    fn announce_signed_vector_verifies_in_both() {
        let id = Vector::load("identity_peer");
        let v = Vector::load("announce_signed");
        let public = id.array::<32>("ed25519_public");
        let body = v.bytes("body");
        let sig = v.bytes("signature");
        verify_signature_raw(&public, &body, &sig).expect("dalek");
        super::super::verify_signature(&id.bytes("cert_der"), &body, &sig).expect("cert path");
        let signed = [ANNOUNCE_SIG_CONTEXT, &body].concat();
        assert!(both(&public, &signed, &sig));
        // The context is part of what is signed.
        assert!(!both(&public, &body, &sig));
    }

    #[test]
    fn non_canonical_s_is_refused_by_both() {
        let (public, sig) = openssl_sign(&[5; 32], b"message");
        assert!(both(&public, b"message", &sig));
        let mut high = sig;
        high[32..].copy_from_slice(&add_l(&sig[32..]));
        let mut exactly_l = sig;
        exactly_l[32..].copy_from_slice(&L);
        let mut all_ones = sig;
        all_ones[32..].fill(0xff);
        let mut top_bit = sig;
        top_bit[63] |= 0x80;
        for bad in [high, exactly_l, all_ones, top_bit] {
            assert!(!both(&public, b"message", &bad));
        }
    }

    #[test]
    fn small_order_keys_and_r_get_the_same_verdict() {
        let points: Vec<[u8; 32]> = SMALL_ORDER
            .iter()
            .map(|h| hex::decode(h).expect("hex").try_into().expect("32"))
            .collect();
        let mut accepted = 0;
        for a in &points {
            for r in &points {
                for msg in [&b""[..], b"a", b"anomos", &[0x5a; 300]] {
                    // S = 0, so R' = -[k]A: small-order A and R can match.
                    let mut sig = [0u8; 64];
                    sig[..32].copy_from_slice(r);
                    accepted += usize::from(both(a, msg, &sig));
                }
            }
        }
        // Cofactorless verification accepts some of these (A = R = identity
        // with S = 0 verifies for every message), as openssl does; the
        // strict variant would refuse them all.
        assert!(accepted >= 4, "accepted {accepted}");
        let identity = points[0];
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        let key = VerifyingKey::from_bytes(&identity).expect("point");
        assert!(key
            .verify_strict(b"x", &Signature::from_bytes(&sig))
            .is_err());
        assert!(both(&identity, b"x", &sig));
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let (public, sig) = openssl_sign(&[9; 32], b"m");
        assert!(both(&public, b"m", &sig));
        assert!(!both(&public, b"m", &sig[..63]));
        assert!(!both(&public, b"m", &[&sig[..], &[0]].concat()));
        assert!(matches!(
            verify_signature_raw(&public, b"m", &sig[..63]),
            Err(IdentityError::BadSignature)
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn both_libraries_agree_on_valid_and_bit_flipped(
            seed in any::<[u8; 32]>(),
            msg in proptest::collection::vec(any::<u8>(), 0..400),
            sig_bit in 0usize..512,
            msg_bit in any::<usize>(),
            key_bit in 0usize..256,
        ) {
            let (public, sig) = openssl_sign(&seed, &msg);
            prop_assert!(both(&public, &msg, &sig));
            let mut bad_sig = sig;
            bad_sig[sig_bit / 8] ^= 1 << (sig_bit % 8);
            prop_assert!(!both(&public, &msg, &bad_sig));
            if !msg.is_empty() {
                let bit = msg_bit % (msg.len() * 8);
                let mut bad_msg = msg.clone();
                bad_msg[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(!both(&public, &bad_msg, &sig));
            }
            let mut bad_key = public;
            bad_key[key_bit / 8] ^= 1 << (key_bit % 8);
            prop_assert!(!both(&bad_key, &msg, &sig));
        }
    }
}
