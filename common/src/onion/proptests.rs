//! Property tests: any path of 1–8 hops peels back into exactly the route,
//! keys and payload it was built from; any single flipped bit is caught at
//! the next hop; replays and stale codes are refused; no input panics.

use super::*;
use crate::crypto::X25519Secret;
use crate::replay::ReplayCache;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The hops' clock in these tests.
pub(super) const NOW: u64 = 1_700_000_000;

/// A random path of `n` hops: onion secrets, specs and a payload.
pub(super) struct Path {
    pub secrets: Vec<X25519Secret>,
    pub hops: Vec<HopSpec>,
    pub payload: ExitPayload,
}

pub(super) fn random_path(rng: &mut ChaCha20Rng, n: usize) -> Path {
    let secrets: Vec<X25519Secret> = (0..n)
        .map(|_| X25519Secret::generate(rng).expect("key"))
        .collect();
    let hops = secrets
        .iter()
        .enumerate()
        .map(|(i, k)| HopSpec {
            onion_public: k.public(),
            next_nid: (i + 1 < n).then(|| Nid(rng.random())),
        })
        .collect();
    let payload = ExitPayload {
        infohash: InfoHash(rng.random()),
        circuit_secret: CircuitSecret(rng.random()),
        expiry: NOW + rng.random_range(0..=MAX_CODE_LIFETIME),
        credit: 0,
    };
    Path {
        secrets,
        hops,
        payload,
    }
}

/// The code each hop receives: `codes[i]` is what hop `i` peels.
pub(super) fn codes_along(path: &Path, first: &TrackingCode) -> Vec<TrackingCode> {
    let mut codes = vec![first.clone()];
    for (i, key) in path.secrets.iter().enumerate().take(path.secrets.len() - 1) {
        let mut cache = ReplayCache::new(4);
        match peel(key, &codes[i], NOW, &mut cache).expect("peel") {
            Peeled::Relay { next_code, .. } => codes.push(next_code),
            Peeled::Exit { .. } => panic!("hop {i} is not the exit"),
        }
    }
    codes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn peeling_returns_the_planned_route(seed: u64, n in 1usize..=MAX_HOPS) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let path = random_path(&mut rng, n);
        let built = build(&mut rng, &path.hops, &path.payload).expect("build");
        prop_assert_eq!(built.layer_keys.len(), n - 1);
        prop_assert_eq!(built.expiry, path.payload.expiry);

        let mut code = built.code.clone();
        for (i, key) in path.secrets.iter().enumerate() {
            prop_assert_eq!(code.as_bytes().len(), CODE_LEN);
            // Only the hop whose layer is on top can peel it.
            let other = &path.secrets[(i + 1) % n];
            if n > 1 {
                let mut c = ReplayCache::new(4);
                prop_assert!(matches!(peel(other, &code, NOW, &mut c), Err(PeelError::BadMac)));
            }
            let mut cache = ReplayCache::new(4);
            let peeled = peel(key, &code, NOW, &mut cache).expect("peel");
            prop_assert_eq!(cache.len(), 1);
            let keys = match peeled {
                Peeled::Relay { next_nid, next_code, layer_keys, expiry } => {
                    prop_assert!(i + 1 < n, "hop {} relays but is the exit", i);
                    prop_assert_eq!(Some(next_nid), path.hops[i].next_nid);
                    prop_assert_eq!(expiry, path.payload.expiry);
                    prop_assert_ne!(&next_code, &code);
                    code = next_code;
                    layer_keys
                }
                Peeled::Exit { payload, layer_keys } => {
                    prop_assert_eq!(i, n - 1);
                    prop_assert_eq!(&payload, &path.payload);
                    layer_keys
                }
            };
            if i > 0 {
                prop_assert_eq!(&keys, &built.layer_keys[i - 1]);
            }
        }
    }

    #[test]
    fn any_flipped_bit_is_rejected_by_the_next_hop(
        seed: u64,
        n in 1usize..=MAX_HOPS,
        at: prop::sample::Index,
        bit in 0usize..CODE_LEN * 8,
    ) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let path = random_path(&mut rng, n);
        let built = build(&mut rng, &path.hops, &path.payload).expect("build");
        let codes = codes_along(&path, &built.code);
        let hop = at.index(n);
        let mut bytes = codes[hop].as_bytes().to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let tampered = TrackingCode::from_bytes(&bytes).expect("length");
        let mut cache = ReplayCache::new(4);
        let err = peel(&path.secrets[hop], &tampered, NOW, &mut cache).expect_err("tampered");
        prop_assert!(
            matches!(err, PeelError::BadMac | PeelError::WeakKey),
            "bit {} at hop {}: {:?}", bit, hop, err
        );
        // A rejected code takes no replay-cache slot.
        prop_assert!(cache.is_empty());
    }

    #[test]
    fn replays_and_stale_codes_are_refused(seed: u64, n in 1usize..=MAX_HOPS, late in 1u64..1_000_000) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let path = random_path(&mut rng, n);
        let built = build(&mut rng, &path.hops, &path.payload).expect("build");
        let codes = codes_along(&path, &built.code);
        let expiry = path.payload.expiry;
        for (key, code) in path.secrets.iter().zip(&codes) {
            let mut cache = ReplayCache::new(4);
            let too_late = peel(key, code, expiry + late, &mut cache);
            prop_assert!(matches!(too_late, Err(PeelError::Expired)));
            let too_early = peel(key, code, expiry - MAX_CODE_LIFETIME - late, &mut cache);
            prop_assert!(matches!(too_early, Err(PeelError::ExpiryTooFar)));
            prop_assert!(cache.is_empty());
            // The last live second is accepted, once.
            prop_assert!(peel(key, code, expiry, &mut cache).is_ok());
            prop_assert!(matches!(peel(key, code, expiry, &mut cache), Err(PeelError::Replayed)));
            prop_assert!(matches!(peel(key, code, NOW, &mut cache), Err(PeelError::Replayed)));
            prop_assert_eq!(cache.len(), 1);
        }
    }

    #[test]
    fn random_bytes_are_an_error_never_a_panic(
        bytes in prop::collection::vec(any::<u8>(), CODE_LEN..=CODE_LEN),
        other in prop::collection::vec(any::<u8>(), 0..2 * CODE_LEN),
        now: u64,
        key: [u8; 32],
    ) {
        let key = X25519Secret::from_bytes(key).expect("key");
        let code = TrackingCode::from_bytes(&bytes).expect("length");
        let mut cache = ReplayCache::new(4);
        prop_assert!(peel(&key, &code, now, &mut cache).is_err());
        prop_assert!(cache.is_empty());
        if other.len() != CODE_LEN {
            prop_assert!(TrackingCode::from_bytes(&other).is_err());
        }
    }
}
