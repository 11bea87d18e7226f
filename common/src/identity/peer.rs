//! A peer's identity: an Ed25519 TLS identity (its peer id and announce
//! signing key) plus the X25519 onion key that peels tracking codes.
//!
//! The two keys have different jobs and are never derived from each other:
//! the TLS key authenticates links and announces, the onion key is only ever
//! used for key agreement with the tracker's per-hop ephemeral keys.

use super::{IdentityError, KeyType, TlsIdentity, SIGNATURE_LEN};
use crate::crypto::{X25519Secret, X25519_LEN};
use crate::ids::PeerId;
use rand::CryptoRng;
use zeroize::Zeroizing;

/// Common name written into peer certificates. Deliberately the same for
/// every peer, so the certificate says nothing beyond the key.
pub const PEER_COMMON_NAME: &str = "anomos peer";

/// A peer identity: Ed25519 TLS identity + X25519 onion key.
#[derive(Clone)]
pub struct PeerIdentity {
    tls: TlsIdentity,
    onion: X25519Secret,
}

impl std::fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerIdentity(pin={}…)", self.tls.pin().short())
    }
}

/// The persisted form of a [`PeerIdentity`], as bytes: the peer writes them
/// to its data directory (so its ratio history survives restarts) and reads
/// them back. Secret parts are zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// The certificate, PEM.
    pub cert_pem: Vec<u8>,
    /// The Ed25519 private key, PKCS#8 PEM.
    pub key_pem: Zeroizing<Vec<u8>>,
    /// The raw 32-byte X25519 onion secret key.
    pub onion_key: Zeroizing<[u8; X25519_LEN]>,
}

impl std::fmt::Debug for IdentityFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityFiles([secret])")
    }
}

impl PeerIdentity {
    /// A fresh identity (thread RNG, system clock).
    pub fn generate() -> Result<Self, IdentityError> {
        let tls = TlsIdentity::generate(PEER_COMMON_NAME)?;
        let onion = X25519Secret::generate(&mut rand::rng()).map_err(crypto_err)?;
        Self::new(tls, onion)
    }

    /// A fresh identity from an injected RNG and clock (reproducible in
    /// tests): the TLS identity first, then the onion key.
    pub fn generate_at<R: CryptoRng + ?Sized>(
        rng: &mut R,
        now: u64,
    ) -> Result<Self, IdentityError> {
        let tls = TlsIdentity::generate_at(rng, PEER_COMMON_NAME, now)?;
        let onion = X25519Secret::generate(rng).map_err(crypto_err)?;
        Self::new(tls, onion)
    }

    /// Combine a TLS identity and an onion key. The TLS key must be Ed25519,
    /// because it signs announces.
    pub fn new(tls: TlsIdentity, onion: X25519Secret) -> Result<Self, IdentityError> {
        if tls.key_type() != KeyType::Ed25519 {
            return Err(IdentityError::UnsupportedKey);
        }
        Ok(Self { tls, onion })
    }

    /// The peer id: the pin of the TLS certificate.
    pub fn peer_id(&self) -> PeerId {
        PeerId(self.tls.pin().0)
    }

    /// The TLS identity (certificate, key, pin).
    pub fn tls(&self) -> &TlsIdentity {
        &self.tls
    }

    /// The onion key that peels tracking codes.
    pub fn onion(&self) -> &X25519Secret {
        &self.onion
    }

    /// The onion public key, as announced to the tracker.
    pub fn onion_public(&self) -> [u8; X25519_LEN] {
        self.onion.public()
    }

    /// Ed25519 signature of `ANNOUNCE_SIG_CONTEXT ‖ msg`.
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; SIGNATURE_LEN], IdentityError> {
        self.tls.sign(msg)
    }

    /// The identity as bytes to persist.
    pub fn to_files(&self) -> Result<IdentityFiles, IdentityError> {
        let (cert_pem, key_pem) = self.tls.to_pem()?;
        Ok(IdentityFiles {
            cert_pem,
            key_pem,
            onion_key: Zeroizing::new(self.onion.to_bytes()),
        })
    }

    /// Load a persisted identity. Fails if the key does not match the
    /// certificate or is not Ed25519.
    pub fn from_files(files: &IdentityFiles) -> Result<Self, IdentityError> {
        let tls = TlsIdentity::from_pem(&files.cert_pem, &files.key_pem)?;
        let onion = X25519Secret::from_bytes(*files.onion_key).map_err(crypto_err)?;
        Self::new(tls, onion)
    }
}

/// `X25519Secret` reports [`crate::crypto::CryptoError`]; the only variant its
/// constructors produce is a library error.
fn crypto_err(e: crate::crypto::CryptoError) -> IdentityError {
    match e {
        crate::crypto::CryptoError::Library(stack) => IdentityError::Library(stack),
        _ => IdentityError::UnsupportedKey,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::verify_signature;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn files_round_trip() {
        let id = PeerIdentity::generate_at(&mut ChaCha20Rng::seed_from_u64(1), 1_700_000_000)
            .expect("identity");
        let files = id.to_files().expect("files");
        assert_eq!(format!("{files:?}"), "IdentityFiles([secret])");
        let back = PeerIdentity::from_files(&files).expect("load");
        assert_eq!(back.peer_id(), id.peer_id());
        assert_eq!(back.onion_public(), id.onion_public());
        assert_eq!(back.to_files().expect("files"), files);
        let sig = back.sign(b"m").expect("sign");
        verify_signature(id.tls().cert_der(), b"m", &sig).expect("verify");
    }

    #[test]
    fn generation_is_reproducible_from_the_rng() {
        let a = PeerIdentity::generate_at(&mut ChaCha20Rng::seed_from_u64(2), 1).expect("id");
        let b = PeerIdentity::generate_at(&mut ChaCha20Rng::seed_from_u64(2), 1).expect("id");
        assert_eq!(a.tls().cert_der(), b.tls().cert_der());
        assert_eq!(a.onion_public(), b.onion_public());
        let c = PeerIdentity::generate().expect("id");
        assert_ne!(a.peer_id(), c.peer_id());
    }

    #[test]
    fn corrupt_files_are_refused() {
        let id = PeerIdentity::generate().expect("id");
        let mut files = id.to_files().expect("files");
        files.key_pem = Zeroizing::new(b"garbage".to_vec());
        assert!(PeerIdentity::from_files(&files).is_err());
        let other = PeerIdentity::generate()
            .expect("id")
            .to_files()
            .expect("files");
        let mixed = IdentityFiles {
            cert_pem: id.to_files().expect("files").cert_pem,
            ..other
        };
        assert!(matches!(
            PeerIdentity::from_files(&mixed),
            Err(IdentityError::KeyMismatch)
        ));
    }
}
