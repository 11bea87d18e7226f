//! The signed envelope of an announce.
//!
//! The signature covers the exact body bytes (not a re-encoding), prefixed
//! with [`crate::identity::ANNOUNCE_SIG_CONTEXT`], and the certificate rides
//! along so the tracker needs no prior registration: the body's `peer_id` must
//! be the pin of that certificate, so nobody can announce as somebody else,
//! and the TLS connection that carried the request is irrelevant (a
//! TLS-terminating proxy in front of the tracker changes nothing).

use super::{AnnounceRequest, ApiError, Message, API_VERSION};
use crate::identity::{pin_of_cert_der, verify_signature, PeerIdentity, SIGNATURE_LEN};
use crate::ids::PeerId;
use serde::{Deserialize, Serialize};

/// Default tolerated difference between a peer's and the tracker's clocks.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;

/// The body of `POST /v1/announce`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAnnounce {
    /// [`API_VERSION`] of the sender.
    pub version: u16,
    /// The peer's certificate (DER); its SPKI pin is the peer id.
    #[serde(with = "serde_bytes")]
    pub cert_der: Vec<u8>,
    /// The bincode-encoded [`AnnounceRequest`].
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Ed25519 signature of `ANNOUNCE_SIG_CONTEXT ‖ body`.
    #[serde(with = "serde_bytes")]
    pub signature: [u8; SIGNATURE_LEN],
}

impl SignedAnnounce {
    /// Encode `req` and sign it with `identity`. Fails if `req.peer_id` is
    /// not the identity's own (the tracker would refuse it anyway).
    pub fn sign(identity: &PeerIdentity, req: &AnnounceRequest) -> Result<Self, ApiError> {
        if req.peer_id != identity.peer_id() {
            return Err(ApiError::PeerIdMismatch);
        }
        let body = req.encode()?;
        let signature = identity.sign(&body)?;
        Ok(Self {
            version: API_VERSION,
            cert_der: identity.tls().cert_der().to_vec(),
            body,
            signature,
        })
    }

    /// Check everything the announce can prove on its own, cheapest first:
    /// the version, the body's encoding, the timestamp (`|timestamp − now| ≤
    /// max_skew_secs`), that the body's peer id is the certificate's pin, and
    /// last the signature. Returns the authenticated peer id and request.
    ///
    /// Not checked here: replays. The tracker keeps, per identity, the newest
    /// accepted timestamp and the nonces seen within the skew window.
    pub fn verify(
        &self,
        now: u64,
        max_skew_secs: u64,
    ) -> Result<(PeerId, AnnounceRequest), ApiError> {
        if self.version != API_VERSION {
            return Err(ApiError::Unsupported(self.version));
        }
        let req = AnnounceRequest::decode(&self.body)?;
        if req.timestamp.abs_diff(now) > max_skew_secs {
            return Err(ApiError::Stale);
        }
        let pin = pin_of_cert_der(&self.cert_der).map_err(|_| ApiError::BadSignature)?;
        if req.peer_id.0 != pin.0 {
            return Err(ApiError::PeerIdMismatch);
        }
        verify_signature(&self.cert_der, &self.body, &self.signature)
            .map_err(|_| ApiError::BadSignature)?;
        Ok((req.peer_id, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        AnnounceResponse, CircuitGrant, HeldLink, Neighbour, PeerEvent, Role, TorrentAnnounce,
        TorrentEvent,
    };
    use crate::crypto::{CircuitSecret, LayerKeys, X25519Secret};
    use crate::identity::TlsIdentity;
    use crate::ids::{InfoHash, Nid, Pin};
    use crate::testvec::Vector;
    use openssl::pkey::{Id, PKey};
    use openssl::x509::X509;
    use proptest::prelude::*;

    /// The fixed identity of the vectors (`identity_peer`).
    fn vector_identity() -> PeerIdentity {
        let v = Vector::load("identity_peer");
        let key =
            PKey::private_key_from_raw_bytes(&v.bytes("ed25519_seed"), Id::ED25519).expect("key");
        let cert = X509::from_der(&v.bytes("cert_der")).expect("cert");
        let tls = TlsIdentity::from_parts(cert, key).expect("identity");
        let onion = X25519Secret::from_bytes(v.array("onion_secret")).expect("onion");
        PeerIdentity::new(tls, onion).expect("peer identity")
    }

    fn vector_request(v: &Vector, id: &PeerIdentity) -> AnnounceRequest {
        AnnounceRequest {
            peer_id: id.peer_id(),
            timestamp: v.u64("timestamp"),
            nonce: v.array("nonce"),
            onion_public: id.onion_public(),
            listen_port: 6881,
            listen_ip: Some("127.0.0.1".parse().expect("ip")),
            event: PeerEvent::Started,
            torrents: vec![TorrentAnnounce {
                infohash: InfoHash([0x01; 32]),
                role: Role::Leeching,
                event: TorrentEvent::Started,
                uploaded: 0,
                downloaded: 0,
                left: 1_048_576,
                circuits_wanted: 2,
            }],
            relayed_bytes: 12345,
            failed_nids: vec![Nid(3)],
            held_links: vec![HeldLink {
                nid: Nid(1),
                peer: PeerId([0x02; 32]),
            }],
            failed_circuits: vec![0x0102_0304_0506_0708],
            bad_sources: vec![0x1112_1314_1516_1718],
        }
    }

    #[test]
    fn announce_signed_vector() {
        let v = Vector::load("announce_signed");
        let id = vector_identity();
        let req = vector_request(&v, &id);
        // Encode direction: exact body, signature and envelope bytes.
        let signed = SignedAnnounce::sign(&id, &req).expect("sign");
        assert_eq!(hex::encode(&signed.body), v.str("body"));
        assert_eq!(hex::encode(signed.signature), v.str("signature"));
        assert_eq!(
            hex::encode(signed.encode().expect("encode")),
            v.str("signed_announce")
        );
        // Decode direction, with an independent signature check through
        // openssl directly over context ‖ body.
        let decoded = SignedAnnounce::decode(&v.bytes("signed_announce")).expect("decode");
        let (peer, back) = decoded.verify(v.u64("timestamp"), 0).expect("verify");
        assert_eq!(peer, id.peer_id());
        assert_eq!(back, req);
        let mut msg = crate::identity::ANNOUNCE_SIG_CONTEXT.to_vec();
        msg.extend_from_slice(&v.bytes("body"));
        let pk = id.tls().cert().public_key().expect("pk");
        let mut verifier = openssl::sign::Verifier::new_without_digest(&pk).expect("verifier");
        assert!(verifier
            .verify_oneshot(&v.bytes("signature"), &msg)
            .expect("verify"));
    }

    #[test]
    fn announce_response_vector() {
        let v = Vector::load("announce_response");
        let resp = AnnounceResponse {
            interval_secs: 60,
            neighbours: vec![
                Neighbour {
                    nid: Nid(1),
                    addr: "127.0.0.1:7000".parse().expect("addr"),
                    pin: Pin([0x03; 32]),
                    dial: true,
                },
                Neighbour {
                    nid: Nid(300),
                    addr: "[::1]:7001".parse().expect("addr"),
                    pin: Pin([0x04; 32]),
                    dial: false,
                },
            ],
            dropped_nids: vec![Nid(5)],
            circuits: vec![CircuitGrant {
                infohash: InfoHash([0x01; 32]),
                code: (0u8..16).collect(),
                layer_keys: vec![LayerKeys {
                    forward: [0x05; 32],
                    backward: [0x06; 32],
                }],
                circuit_secret: CircuitSecret([0x07; 32]),
                expiry: 1_700_000_600,
                id: 258,
            }],
        };
        let bytes = v.bytes("response");
        assert_eq!(
            hex::encode(resp.encode().expect("encode")),
            v.str("response")
        );
        assert_eq!(AnnounceResponse::decode(&bytes).expect("decode"), resp);
    }

    fn fixed_identity() -> PeerIdentity {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
        PeerIdentity::generate_at(&mut rng, 1_700_000_000).expect("identity")
    }

    #[test]
    fn verify_refuses_each_failure() {
        let v = Vector::load("announce_signed");
        let id = vector_identity();
        let req = vector_request(&v, &id);
        let now = req.timestamp;
        let good = SignedAnnounce::sign(&id, &req).expect("sign");
        assert!(good.verify(now + 300, 300).is_ok());
        assert!(good.verify(now - 300, 300).is_ok());
        assert!(matches!(good.verify(now + 301, 300), Err(ApiError::Stale)));
        assert!(matches!(good.verify(now - 301, 300), Err(ApiError::Stale)));

        let mut bad = good.clone();
        bad.version = 2;
        assert!(matches!(
            bad.verify(now, 300),
            Err(ApiError::Unsupported(2))
        ));

        let mut bad = good.clone();
        bad.signature[0] ^= 1;
        assert!(matches!(bad.verify(now, 300), Err(ApiError::BadSignature)));

        // Someone else's certificate with this peer's body: pin mismatch.
        let other = fixed_identity();
        let mut bad = good.clone();
        bad.cert_der = other.tls().cert_der().to_vec();
        assert!(matches!(
            bad.verify(now, 300),
            Err(ApiError::PeerIdMismatch)
        ));

        // Someone else claiming this peer's id, signing with their own key.
        assert!(matches!(
            SignedAnnounce::sign(&other, &req),
            Err(ApiError::PeerIdMismatch)
        ));

        let mut bad = good.clone();
        bad.body.push(0);
        assert!(matches!(bad.verify(now, 300), Err(ApiError::Decode(_))));

        let mut bad = good;
        bad.cert_der = b"junk".to_vec();
        assert!(matches!(bad.verify(now, 300), Err(ApiError::BadSignature)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn signed_round_trips_and_verifies(mut req in crate::api::messages::tests::arb_request()) {
            let id = fixed_identity();
            req.peer_id = id.peer_id();
            let signed = SignedAnnounce::sign(&id, &req).expect("sign");
            let bytes = signed.encode().expect("encode");
            let back = SignedAnnounce::decode(&bytes).expect("decode");
            prop_assert_eq!(&back, &signed);
            let (peer, got) = back.verify(req.timestamp, 0).expect("verify");
            prop_assert_eq!(peer, id.peer_id());
            prop_assert_eq!(got, req);
            for cut in 0..bytes.len() {
                prop_assert!(SignedAnnounce::decode(&bytes[..cut]).is_err());
            }
        }
    }
}
