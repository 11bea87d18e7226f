//! HMAC-SHA256 and HKDF-SHA256 on openssl's low-level SHA-256, for the
//! onion's per-hop hot path.
//!
//! `crypto::hkdf_sha256` and `crypto::hmac_sha256` go through openssl 3's
//! EVP layer, which fetches the algorithm and builds a context on every
//! call: about 7 µs each, while the hashing itself takes under 1 µs. A hop
//! does one HKDF and one HMAC per peel, so those set-ups alone cost a third
//! of an X25519 agreement and pushed peel past its 1.5× budget. Here HMAC
//! is computed from its definition (RFC 2104) over `openssl::sha::Sha256`,
//! with each key's pad blocks hashed once and the state cloned per message,
//! so HKDF-Expand's blocks cost two compressions each. The outputs are
//! identical to the `crypto` functions (checked by the tests below and by
//! the independent test-vector check, which uses those).

use openssl::sha::{sha256, Sha256};
use zeroize::Zeroize;

/// SHA-256 block size: the HMAC pad length.
const BLOCK: usize = 64;

/// An HMAC-SHA256 key with its inner and outer pad blocks already hashed.
#[derive(Clone)]
pub(super) struct Hmac {
    inner: Sha256,
    outer: Sha256,
}

impl Hmac {
    /// Key the MAC (keys longer than a block are hashed first, per RFC 2104).
    pub(super) fn new(key: &[u8]) -> Self {
        let mut pad = [0u8; BLOCK];
        if key.len() > BLOCK {
            pad[..32].copy_from_slice(&sha256(key));
        } else {
            pad[..key.len()].copy_from_slice(key);
        }
        for p in pad.iter_mut() {
            *p ^= 0x36;
        }
        let mut inner = Sha256::new();
        inner.update(&pad);
        for p in pad.iter_mut() {
            *p ^= 0x36 ^ 0x5c;
        }
        let mut outer = Sha256::new();
        outer.update(&pad);
        pad.zeroize();
        Self { inner, outer }
    }

    /// The MAC of the concatenation of `parts`.
    pub(super) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        for p in parts {
            inner.update(p);
        }
        let mut digest = inner.finish();
        let mut outer = self.outer.clone();
        outer.update(&digest);
        digest.zeroize();
        outer.finish()
    }
}

/// HKDF-SHA256 (RFC 5869): extract with `salt`, then expand `info` into
/// `out` (at most 255 blocks of 32 bytes; the onion asks for 7).
pub(super) fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    let mut prk = Hmac::new(salt).mac(&[ikm]);
    let expand = Hmac::new(&prk);
    prk.zeroize();
    let mut t = [0u8; 32];
    let mut t_len = 0;
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        // The counter is one byte; 255 blocks are never asked for here.
        let counter = [(i + 1) as u8];
        t = expand.mac(&[&t[..t_len], info, &counter]);
        t_len = 32;
        chunk.copy_from_slice(&t[..chunk.len()]);
    }
    t.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{hkdf_sha256, hmac_sha256};
    use proptest::prelude::*;

    #[test]
    fn rfc4231_case_6_long_key() {
        let mac = Hmac::new(&[0xaa; 131])
            .mac(&[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Same bytes as the EVP-based primitives, for any key, salt, input
        /// and output length (openssl refuses an empty HMAC key, so keys
        /// start at one byte; the onion's are 15 and 32).
        #[test]
        fn matches_the_crypto_module(
            key in prop::collection::vec(any::<u8>(), 1..150),
            msg in prop::collection::vec(any::<u8>(), 0..300),
            info in prop::collection::vec(any::<u8>(), 0..40),
            len in 1usize..300,
        ) {
            let (a, b) = msg.split_at(msg.len() / 2);
            prop_assert_eq!(Hmac::new(&key).mac(&[a, b]), hmac_sha256(&key, &[&msg]).expect("hmac"));
            let mut ours = vec![0u8; len];
            hkdf(&key, &msg, &info, &mut ours);
            let mut theirs = vec![0u8; len];
            hkdf_sha256(&key, &msg, &info, &mut theirs).expect("hkdf");
            prop_assert_eq!(ours, theirs);
        }
    }
}
