//! TLS identities, pins and announce signatures (PROTOCOL.md §2).
//!
//! Every party is known by the [`Pin`] of its certificate: the SHA-256 of the
//! certificate's SubjectPublicKeyInfo (DER). Hashing the SPKI rather than the
//! whole certificate means an identity survives re-issuing its certificate
//! (new validity dates, new serial) as long as the key stays, which is what a
//! ratio history keyed by peer id needs.
//!
//! Peers use Ed25519 keys with self-signed certificates; a tracker may load an
//! operator certificate of any key type (ECDSA, RSA), so [`pin_of_x509`] works
//! for every key type while announce signatures ([`verify_signature`]) accept
//! Ed25519 only: one signature scheme means one verification path to audit.
//!
//! Nothing here reads files: the peer and tracker load and store PEM bytes.

mod ed25519;
mod peer;

pub use ed25519::{verify_signature_raw, PUBLIC_KEY_LEN};
pub use peer::{IdentityFiles, PeerIdentity};

use crate::ids::Pin;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, PKeyRef, Private};
use openssl::sign::Signer;
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509Name, X509Ref, X509};
use rand::CryptoRng;
use thiserror::Error;
use zeroize::Zeroizing;

/// Prefix of every message an identity key signs. It keeps an announce
/// signature from ever being valid as a signature in another protocol (or a
/// later version of this one) that happens to use the same key.
pub const ANNOUNCE_SIG_CONTEXT: &[u8] = b"anomos-announce-v1\0";

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Self-signed certificates start one hour in the past, so a peer whose clock
/// runs a little behind its neighbour's is not rejected as "not yet valid".
const NOT_BEFORE_SLACK_SECS: u64 = 3600;
/// Ten years: identities are long-lived; the pin, not the dates, is the trust.
const VALIDITY_SECS: u64 = 10 * 365 * 24 * 3600;

/// Why an identity could not be built, loaded or used.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// openssl failed (bad PEM/DER, allocation failure…).
    #[error("crypto library error: {0}")]
    Library(#[from] ErrorStack),
    /// The key type is not allowed here (announces need Ed25519).
    #[error("unsupported key type (need Ed25519)")]
    UnsupportedKey,
    /// The private key does not belong to the certificate.
    #[error("private key does not match certificate")]
    KeyMismatch,
    /// The signature does not verify under the certificate's key.
    #[error("bad signature")]
    BadSignature,
    /// A time does not fit the certificate encoding.
    #[error("time out of range")]
    TimeRange,
}

impl IdentityError {
    /// Coarse kind for metrics and logs (a fixed set of strings).
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityError::Library(_) => "library",
            IdentityError::UnsupportedKey => "unsupported_key",
            IdentityError::KeyMismatch => "key_mismatch",
            IdentityError::BadSignature => "bad_signature",
            IdentityError::TimeRange => "time_range",
        }
    }
}

/// The pin of a certificate given as DER.
pub fn pin_of_cert_der(der: &[u8]) -> Result<Pin, IdentityError> {
    let cert = X509::from_der(der)?;
    pin_of_x509(&cert)
}

/// The pin of a parsed certificate: SHA-256 of its SubjectPublicKeyInfo DER.
/// Works for any key type (Ed25519, ECDSA, RSA).
pub fn pin_of_x509(cert: &X509Ref) -> Result<Pin, IdentityError> {
    let spki = cert.public_key()?.public_key_to_der()?;
    Ok(Pin(crate::crypto::sha256(&spki)))
}

/// Verify an announce signature: `sig` must be the Ed25519 signature of
/// `ANNOUNCE_SIG_CONTEXT ‖ msg` under the key of the certificate `cert_der`.
///
/// Only the key is checked, not the certificate's dates or self-signature:
/// the pin of the key is the identity, and a certificate is just its carrier.
/// openssl decodes the certificate; the signature check itself runs on
/// `ed25519-dalek` with openssl's acceptance rules ([`verify_signature_raw`]).
pub fn verify_signature(cert_der: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), IdentityError> {
    let cert = X509::from_der(cert_der)?;
    let key = cert.public_key()?;
    if key.id() != Id::ED25519 {
        return Err(IdentityError::UnsupportedKey);
    }
    if sig.len() != SIGNATURE_LEN {
        return Err(IdentityError::BadSignature);
    }
    let raw = key.raw_public_key()?;
    let raw = <&[u8; PUBLIC_KEY_LEN]>::try_from(raw.as_slice())
        .map_err(|_| IdentityError::UnsupportedKey)?;
    verify_signature_raw(raw, msg, sig)
}

/// The key type of an identity, for callers that must refuse some.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// Ed25519: what peers use, and the only type that may sign announces.
    Ed25519,
    /// ECDSA over P-256 (prime256v1).
    P256,
    /// Anything else openssl can load (RSA, other curves).
    Other,
}

/// A private key and its certificate, ready to build TLS acceptors and
/// connectors from, with the pin computed once.
#[derive(Clone)]
pub struct TlsIdentity {
    key: PKey<Private>,
    cert: X509,
    cert_der: Vec<u8>,
    pin: Pin,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsIdentity(pin={}…)", self.pin.short())
    }
}

impl TlsIdentity {
    /// A fresh Ed25519 identity with a self-signed certificate for
    /// `common_name`, valid from one hour ago for ten years. Uses the
    /// thread RNG and the system clock; see [`TlsIdentity::generate_at`].
    pub fn generate(common_name: &str) -> Result<Self, IdentityError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::generate_at(&mut rand::rng(), common_name, now)
    }

    /// Like [`TlsIdentity::generate`] with the RNG and clock injected: the
    /// RNG supplies the 32-byte Ed25519 seed, then the 16-byte serial.
    pub fn generate_at<R: CryptoRng + ?Sized>(
        rng: &mut R,
        common_name: &str,
        now: u64,
    ) -> Result<Self, IdentityError> {
        let seed = Zeroizing::new(crate::crypto::random_bytes::<32, R>(rng));
        let key = PKey::private_key_from_raw_bytes(seed.as_ref(), Id::ED25519)?;
        let mut serial = crate::crypto::random_bytes::<16, R>(rng);
        // A positive, non-zero 128-bit serial (RFC 5280 §4.1.2.2).
        serial[0] = (serial[0] & 0x7f) | 0x01;
        let cert = self_signed(&key, common_name, &serial, now)?;
        Self::from_parts(cert, key)
    }

    /// Pair a certificate with its private key; fails if they do not match.
    pub fn from_parts(cert: X509, key: PKey<Private>) -> Result<Self, IdentityError> {
        if !cert.public_key()?.public_eq(&key) {
            return Err(IdentityError::KeyMismatch);
        }
        let cert_der = cert.to_der()?;
        let pin = pin_of_x509(&cert)?;
        Ok(Self {
            key,
            cert,
            cert_der,
            pin,
        })
    }

    /// Load a PEM certificate and a PEM private key (PKCS#8 or the
    /// traditional formats). Any key type is accepted.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, IdentityError> {
        let cert = X509::from_pem(cert_pem)?;
        let key = PKey::private_key_from_pem(key_pem)?;
        Self::from_parts(cert, key)
    }

    /// The certificate and the private key (PKCS#8) as PEM. The key bytes are
    /// zeroized when dropped.
    pub fn to_pem(&self) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), IdentityError> {
        let cert = self.cert.to_pem()?;
        let key = Zeroizing::new(self.key.private_key_to_pem_pkcs8()?);
        Ok((cert, key))
    }

    /// SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub fn pin(&self) -> Pin {
        self.pin
    }

    /// The certificate, DER-encoded (what a signed announce carries).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate, for TLS acceptors and connectors.
    pub fn cert(&self) -> &X509Ref {
        &self.cert
    }

    /// The private key, for TLS acceptors and connectors.
    pub fn key(&self) -> &PKeyRef<Private> {
        &self.key
    }

    /// Which kind of key this identity holds.
    pub fn key_type(&self) -> KeyType {
        match self.key.id() {
            Id::ED25519 => KeyType::Ed25519,
            Id::EC => match self.key.ec_key().ok().and_then(|k| k.group().curve_name()) {
                Some(openssl::nid::Nid::X9_62_PRIME256V1) => KeyType::P256,
                _ => KeyType::Other,
            },
            _ => KeyType::Other,
        }
    }

    /// Ed25519-sign `ANNOUNCE_SIG_CONTEXT ‖ msg`. Ed25519 signatures are
    /// deterministic, so a fixed key and message give fixed bytes.
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; SIGNATURE_LEN], IdentityError> {
        if self.key.id() != Id::ED25519 {
            return Err(IdentityError::UnsupportedKey);
        }
        let mut signer = Signer::new_without_digest(&self.key)?;
        let mut signed = Vec::with_capacity(ANNOUNCE_SIG_CONTEXT.len() + msg.len());
        signed.extend_from_slice(ANNOUNCE_SIG_CONTEXT);
        signed.extend_from_slice(msg);
        let mut sig = [0u8; SIGNATURE_LEN];
        let n = signer.sign_oneshot(&mut sig, &signed)?;
        if n != SIGNATURE_LEN {
            return Err(IdentityError::UnsupportedKey);
        }
        Ok(sig)
    }
}

/// Build a v3 self-signed certificate for `key`.
fn self_signed(
    key: &PKey<Private>,
    common_name: &str,
    serial: &[u8; 16],
    now: u64,
) -> Result<X509, IdentityError> {
    let not_before = now.saturating_sub(NOT_BEFORE_SLACK_SECS);
    let not_after = now
        .checked_add(VALIDITY_SECS)
        .ok_or(IdentityError::TimeRange)?;
    let to_time = |t: u64| -> Result<Asn1Time, IdentityError> {
        let t = i64::try_from(t).map_err(|_| IdentityError::TimeRange)?;
        Ok(Asn1Time::from_unix(t)?)
    };
    let mut name = X509Name::builder()?;
    name.append_entry_by_text("CN", common_name)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    b.set_serial_number(BigNum::from_slice(serial)?.to_asn1_integer()?.as_ref())?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    b.set_not_before(to_time(not_before)?.as_ref())?;
    b.set_not_after(to_time(not_after)?.as_ref())?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    // Ed25519 signs the message itself: no separate digest.
    b.sign(key, MessageDigest::null())?;
    Ok(b.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn test_identity() -> TlsIdentity {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        TlsIdentity::generate_at(&mut rng, "anomos peer", 1_700_000_000).expect("identity")
    }

    #[test]
    fn generated_certificate_has_the_documented_shape() {
        let id = test_identity();
        let cert = id.cert();
        assert_eq!(cert.version(), 2);
        let cn = cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .next()
            .expect("cn");
        assert_eq!(cn.data().as_slice(), b"anomos peer");
        let serial = cert.serial_number().to_bn().expect("bn");
        assert!(serial.num_bits() > 100 && serial.num_bits() <= 128);
        let nb = Asn1Time::from_unix(1_700_000_000 - 3600).expect("time");
        assert_eq!(
            cert.not_before().compare(&nb).expect("cmp"),
            std::cmp::Ordering::Equal
        );
        assert!(cert
            .verify(&cert.public_key().expect("pk"))
            .expect("verify"));
        assert_eq!(id.key_type(), KeyType::Ed25519);
    }

    #[test]
    fn pem_round_trip_keeps_the_pin() {
        let id = test_identity();
        let (cert, key) = id.to_pem().expect("pem");
        assert!(key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let back = TlsIdentity::from_pem(&cert, &key).expect("load");
        assert_eq!(back.pin(), id.pin());
        assert_eq!(back.cert_der(), id.cert_der());
        assert_eq!(pin_of_cert_der(id.cert_der()).expect("pin"), id.pin());
    }

    #[test]
    fn identity_peer_vector() {
        let v = crate::testvec::Vector::load("identity_peer");
        let key =
            PKey::private_key_from_raw_bytes(&v.bytes("ed25519_seed"), Id::ED25519).expect("key");
        assert_eq!(key.raw_public_key().expect("pk"), v.bytes("ed25519_public"));
        assert_eq!(key.public_key_to_der().expect("spki"), v.bytes("spki"));
        // The SPKI of an Ed25519 key is a fixed 12-byte prefix and the key.
        let mut spki = hex::decode("302a300506032b6570032100").expect("hex");
        spki.extend_from_slice(&v.bytes("ed25519_public"));
        assert_eq!(spki, v.bytes("spki"));
        let id = TlsIdentity::from_parts(X509::from_der(&v.bytes("cert_der")).expect("cert"), key)
            .expect("identity");
        assert_eq!(id.pin().0, v.array::<32>("pin"));
        assert_eq!(id.pin().0, crate::crypto::sha256(&spki));
        assert_eq!(
            pin_of_cert_der(&v.bytes("cert_der")).expect("pin").0,
            v.array::<32>("pin")
        );
        let onion = crate::crypto::X25519Secret::from_bytes(v.array("onion_secret")).expect("x");
        assert_eq!(onion.public(), v.array::<32>("onion_public"));
        // The documented context bytes.
        assert_eq!(
            hex::encode(ANNOUNCE_SIG_CONTEXT),
            "616e6f6d6f732d616e6e6f756e63652d763100"
        );
    }

    #[test]
    fn pin_is_sha256_of_spki() {
        let id = test_identity();
        let spki = id.key().public_key_to_der().expect("spki");
        assert_eq!(id.pin().0, crate::crypto::sha256(&spki));
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = test_identity();
        let b = TlsIdentity::generate("anomos peer").expect("identity");
        let (cert, _) = a.to_pem().expect("pem");
        let (_, key) = b.to_pem().expect("pem");
        assert!(matches!(
            TlsIdentity::from_pem(&cert, &key),
            Err(IdentityError::KeyMismatch)
        ));
        assert_ne!(a.pin(), b.pin());
    }

    #[test]
    fn p256_operator_certificate_loads_and_pins_but_cannot_sign() {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)
            .expect("group");
        let key =
            PKey::from_ec_key(openssl::ec::EcKey::generate(&group).expect("ec")).expect("pkey");
        let mut b = X509::builder().expect("builder");
        let mut name = X509Name::builder().expect("name");
        name.append_entry_by_text("CN", "tracker.example")
            .expect("cn");
        let name = name.build();
        b.set_subject_name(&name).expect("subject");
        b.set_issuer_name(&name).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(Asn1Time::days_from_now(0).expect("t").as_ref())
            .expect("nb");
        b.set_not_after(Asn1Time::days_from_now(1).expect("t").as_ref())
            .expect("na");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        let cert = b.build();
        let id = TlsIdentity::from_pem(
            &cert.to_pem().expect("pem"),
            &key.private_key_to_pem_pkcs8().expect("pem"),
        )
        .expect("load");
        assert_eq!(id.key_type(), KeyType::P256);
        let spki = key.public_key_to_der().expect("spki");
        assert_eq!(id.pin().0, crate::crypto::sha256(&spki));
        assert!(matches!(id.sign(b"x"), Err(IdentityError::UnsupportedKey)));
        assert!(matches!(
            verify_signature(id.cert_der(), b"x", &[0u8; 64]),
            Err(IdentityError::UnsupportedKey)
        ));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let id = test_identity();
        let sig = id.sign(b"body").expect("sign");
        verify_signature(id.cert_der(), b"body", &sig).expect("verify");
        assert!(verify_signature(id.cert_der(), b"bodx", &sig).is_err());
        assert!(verify_signature(id.cert_der(), b"body", &sig[..63]).is_err());
        let other = TlsIdentity::generate("anomos peer").expect("identity");
        assert!(verify_signature(other.cert_der(), b"body", &sig).is_err());
        assert!(verify_signature(b"not a cert", b"body", &sig).is_err());
        // The context is part of what is signed: a bare Ed25519 signature of
        // the body does not verify.
        let mut bare = Signer::new_without_digest(id.key()).expect("signer");
        let bare = bare.sign_oneshot_to_vec(b"body").expect("sign");
        assert!(verify_signature(id.cert_der(), b"body", &bare).is_err());
    }
}
