//! Verified announce keys, so a heartbeat costs one signature check and
//! not three certificate decodings.
//!
//! Every announce carries its peer's certificate. [`SignedAnnounce::verify`]
//! decodes it twice (once for the pin, once for the key) and re-encodes
//! the SubjectPublicKeyInfo; on openssl 3.0 each decode goes through the
//! provider decoder machinery, and the load test measured this at about
//! three times the cost of the Ed25519 verification itself — two thirds of
//! the tracker's CPU per heartbeat. A peer sends the same certificate every
//! time, so after the first full verification the tracker remembers, under
//! SHA-256 of the certificate's exact DER bytes, the pin and the raw
//! Ed25519 key it proved, and later announces with those bytes skip the
//! decoding. The checks and their order are the same as in
//! `SignedAnnounce::verify`: version, body, skew, pin = peer id, signature.
//!
//! The signature check on a cached key is `verify_signature_raw`
//! (ed25519-dalek with openssl's acceptance rules, about four times faster
//! than openssl 3.0's Ed25519; BENCHMARKS.md) and needs no openssl key object.
//!
//! Only certificates that passed a full verification are stored, and the
//! map is bounded: when it reaches its capacity it is emptied and refills
//! from the announces that follow, so a flood of fresh certificates can
//! cost memory up to the bound and then only the uncached speed.

use anomos_common::api::{AnnounceRequest, ApiError, Message, SignedAnnounce, API_VERSION};
use anomos_common::crypto::sha256;
use anomos_common::identity::verify_signature_raw;
use anomos_common::PeerId;
use dashmap::DashMap;
use openssl::x509::X509;

/// Default capacity: room for every peer of a large tracker (about 100
/// bytes per entry, so ~25 MiB when full).
pub const DEFAULT_KEY_CACHE: usize = 1 << 18;

/// What a verified certificate proved.
#[derive(Debug, Clone, Copy)]
struct KnownKey {
    peer: PeerId,
    ed25519: [u8; 32],
}

/// Certificates already verified, by SHA-256 of their DER.
#[derive(Debug)]
pub struct KeyCache {
    map: DashMap<[u8; 32], KnownKey>,
    cap: usize,
}

impl KeyCache {
    /// An empty cache holding at most `cap` certificates.
    pub fn new(cap: usize) -> Self {
        KeyCache {
            map: DashMap::new(),
            cap: cap.max(1),
        }
    }

    /// Certificates remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Exactly [`SignedAnnounce::verify`], faster for known certificates.
    pub fn verify(
        &self,
        s: &SignedAnnounce,
        now: u64,
        max_skew_secs: u64,
    ) -> Result<(PeerId, AnnounceRequest), ApiError> {
        let digest = sha256(&s.cert_der);
        let Some(known) = self.map.get(&digest).map(|k| *k) else {
            let (peer, req) = s.verify(now, max_skew_secs)?;
            self.remember(digest, peer, &s.cert_der);
            return Ok((peer, req));
        };
        if s.version != API_VERSION {
            return Err(ApiError::Unsupported(s.version));
        }
        let req = AnnounceRequest::decode(&s.body)?;
        if req.timestamp.abs_diff(now) > max_skew_secs {
            return Err(ApiError::Stale);
        }
        if req.peer_id != known.peer {
            return Err(ApiError::PeerIdMismatch);
        }
        verify_ed25519(&known.ed25519, &s.body, &s.signature)?;
        Ok((req.peer_id, req))
    }

    /// Store the key of a certificate that just verified as `peer`'s.
    fn remember(&self, digest: [u8; 32], peer: PeerId, cert_der: &[u8]) {
        let raw = X509::from_der(cert_der)
            .and_then(|c| c.public_key())
            .and_then(|k| k.raw_public_key());
        let Ok(raw) = raw else { return };
        let Ok(ed25519) = <[u8; 32]>::try_from(raw.as_slice()) else {
            return;
        };
        if self.map.len() >= self.cap {
            self.map.clear();
        }
        self.map.insert(digest, KnownKey { peer, ed25519 });
    }
}

/// `sig` is the Ed25519 signature of `ANNOUNCE_SIG_CONTEXT ‖ body` under `key`.
fn verify_ed25519(key: &[u8; 32], body: &[u8], sig: &[u8]) -> Result<(), ApiError> {
    verify_signature_raw(key, body, sig).map_err(|_| ApiError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anomos_common::api::PeerEvent;
    use anomos_common::identity::PeerIdentity;

    const NOW: u64 = 1_800_000_000;

    fn request(id: &PeerIdentity, timestamp: u64) -> AnnounceRequest {
        AnnounceRequest {
            peer_id: id.peer_id(),
            timestamp,
            nonce: [3; 16],
            onion_public: id.onion_public(),
            listen_port: 7000,
            listen_ip: None,
            event: PeerEvent::Heartbeat,
            torrents: Vec::new(),
            relayed_bytes: 0,
            failed_nids: Vec::new(),
            failed_circuits: Vec::new(),
            bad_sources: Vec::new(),
            held_links: Vec::new(),
        }
    }

    /// Same verdict as `SignedAnnounce::verify`, cold and warm.
    fn agrees(cache: &KeyCache, s: &SignedAnnounce) -> bool {
        let want = s.verify(NOW, 60).map_err(|e| e.kind());
        let got = cache.verify(s, NOW, 60).map_err(|e| e.kind());
        want == got
    }

    #[test]
    fn cached_verification_matches_the_full_one() {
        let (a, b) = (
            PeerIdentity::generate().unwrap(),
            PeerIdentity::generate().unwrap(),
        );
        let cache = KeyCache::new(16);
        let good = SignedAnnounce::sign(&a, &request(&a, NOW)).unwrap();
        assert!(agrees(&cache, &good), "cold");
        assert_eq!(cache.len(), 1);
        assert!(agrees(&cache, &good), "warm");

        let mut bad_sig = good.clone();
        bad_sig.signature[5] ^= 1;
        let mut bad_body = good.clone();
        bad_body.body = request(&a, NOW + 1).encode().unwrap();
        let stale = SignedAnnounce::sign(&a, &request(&a, NOW - 61)).unwrap();
        let mut old_version = good.clone();
        old_version.version += 1;
        // b's announce under a's certificate: the pin does not match.
        let mut stolen = SignedAnnounce::sign(&b, &request(&b, NOW)).unwrap();
        stolen.cert_der = good.cert_der.clone();
        let mut garbage = good.clone();
        garbage.body = vec![0xff; 10];
        for (name, s) in [
            ("signature", &bad_sig),
            ("body", &bad_body),
            ("stale", &stale),
            ("version", &old_version),
            ("pin", &stolen),
            ("garbage", &garbage),
        ] {
            assert!(cache.verify(s, NOW, 60).is_err(), "{name} accepted");
            assert!(agrees(&cache, s), "{name}");
        }
        assert_eq!(cache.len(), 1, "failures are never cached");
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = KeyCache::new(2);
        for _ in 0..5 {
            let id = PeerIdentity::generate().unwrap();
            let s = SignedAnnounce::sign(&id, &request(&id, NOW)).unwrap();
            assert_eq!(cache.verify(&s, NOW, 60).unwrap().0, id.peer_id());
            assert!(cache.len() <= 2);
        }
        assert!(!cache.is_empty());
    }
}
