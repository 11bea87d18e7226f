//! Thin wrappers over the openssl primitives the protocol is built from.
//!
//! One place decides how a primitive is called, so the onion, the relay
//! layers and the end-to-end channel cannot drift apart, and so the expensive
//! part of each (cipher contexts, key schedules) is created once and reused:
//! creating a cipher context per 509-byte cell costs ten times the cipher.
//!
//! Secrets are zeroized on drop and compared in constant time.

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use openssl::derive::Deriver;
use openssl::error::ErrorStack;
use openssl::hash::{Hasher, MessageDigest};
use openssl::md::Md;
use openssl::pkey::{Id, PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::sign::Signer;
use rand::CryptoRng;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A failure inside the crypto library, or a check that did not pass.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// openssl reported an error (bad key encoding, allocation failure…).
    #[error("crypto library error: {0}")]
    Library(#[from] ErrorStack),
    /// An X25519 agreement produced the all-zero secret (a low-order point).
    #[error("key agreement with a low-order point")]
    WeakKey,
    /// An AEAD tag or a MAC did not verify.
    #[error("authentication failed")]
    BadTag,
}

/// Length of X25519 keys and shared secrets.
pub const X25519_LEN: usize = 32;
/// Length of an AES-GCM / HMAC tag as used on the wire.
pub const TAG_LEN: usize = 16;
/// Length of an AES-GCM nonce.
pub const GCM_NONCE_LEN: usize = 12;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&openssl::sha::sha256(data));
    out
}

/// SHA-256 over several parts, without concatenating them first.
pub fn sha256_parts(parts: &[&[u8]]) -> Result<[u8; 32], CryptoError> {
    let mut h = Hasher::new(MessageDigest::sha256())?;
    for p in parts {
        h.update(p)?;
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finish()?);
    Ok(out)
}

/// Constant-time equality. Slices of different lengths are unequal (the
/// length itself is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// HKDF-SHA256 (RFC 5869, extract then expand) filling `out`.
pub fn hkdf_sha256(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
    ctx.derive_init()?;
    ctx.set_hkdf_md(Md::sha256())?;
    ctx.set_hkdf_salt(salt)?;
    ctx.set_hkdf_key(ikm)?;
    ctx.add_hkdf_info(info)?;
    ctx.derive(Some(out))?;
    Ok(())
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], CryptoError> {
    let pkey = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    for p in parts {
        signer.update(p)?;
    }
    let mut out = [0u8; 32];
    signer.sign(&mut out)?;
    Ok(out)
}

/// Fill `out` with bytes from a cryptographic RNG.
pub fn random_bytes<const N: usize, R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; N] {
    let mut out = [0u8; N];
    rng.fill_bytes(&mut out);
    out
}

/// The per-circuit secret the tracker makes and hands to both endpoints
/// (the originator in its announce response, the exit inside the tracking
/// code). Mixed with an ephemeral X25519 exchange to key the end-to-end
/// channel, so the tracker alone cannot decrypt content. Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, serde::Serialize, serde::Deserialize)]
pub struct CircuitSecret(pub [u8; 32]);

impl std::fmt::Debug for CircuitSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CircuitSecret([secret])")
    }
}

/// One hop's relay-layer key material, shared by that hop and the circuit's
/// originator: AES-128-CTR key ‖ initial counter block, one per direction.
/// Derived from the hop's tracking-code secret (see `onion`). Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, serde::Serialize, serde::Deserialize)]
pub struct LayerKeys {
    /// Originator → exit direction: key (16 bytes) ‖ IV (16 bytes).
    pub forward: [u8; 32],
    /// Exit → originator direction: key (16 bytes) ‖ IV (16 bytes).
    pub backward: [u8; 32],
}

impl std::fmt::Debug for LayerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerKeys([secret])")
    }
}

/// A shared secret from an X25519 agreement. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SharedSecret(pub [u8; X25519_LEN]);

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret([secret])")
    }
}

/// An X25519 secret key, kept both as raw bytes (for persistence and test
/// vectors) and as a ready openssl key (so agreements do not re-parse it).
pub struct X25519Secret {
    raw: [u8; X25519_LEN],
    pkey: PKey<Private>,
    public: [u8; X25519_LEN],
}

impl std::fmt::Debug for X25519Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X25519Secret(public={})", hex::encode(&self.public[..4]))
    }
}

impl Drop for X25519Secret {
    fn drop(&mut self) {
        self.raw.zeroize();
    }
}

impl Clone for X25519Secret {
    fn clone(&self) -> Self {
        // Re-parsing our own valid bytes cannot fail.
        Self::from_bytes(self.raw).unwrap_or_else(|_| unreachable!("valid X25519 key"))
    }
}

impl X25519Secret {
    /// Wrap 32 raw secret bytes (clamping is done by X25519 itself).
    pub fn from_bytes(raw: [u8; X25519_LEN]) -> Result<Self, CryptoError> {
        let pkey = PKey::private_key_from_raw_bytes(&raw, Id::X25519)?;
        let mut public = [0u8; X25519_LEN];
        public.copy_from_slice(&pkey.raw_public_key()?);
        Ok(Self { raw, pkey, public })
    }

    /// A fresh key from `rng` (injected so test vectors are reproducible).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<Self, CryptoError> {
        let mut raw = random_bytes::<X25519_LEN, R>(rng);
        let key = Self::from_bytes(raw);
        raw.zeroize();
        key
    }

    /// The raw secret bytes, for persistence.
    pub fn to_bytes(&self) -> [u8; X25519_LEN] {
        self.raw
    }

    /// The matching public key.
    pub fn public(&self) -> [u8; X25519_LEN] {
        self.public
    }

    /// X25519 agreement with `peer_public`. Rejects the all-zero result, so a
    /// low-order point cannot force a known secret.
    pub fn agree(&self, peer_public: &[u8; X25519_LEN]) -> Result<SharedSecret, CryptoError> {
        let peer = PKey::public_key_from_raw_bytes(peer_public, Id::X25519)?;
        let mut deriver = Deriver::new(&self.pkey)?;
        deriver.set_peer(&peer)?;
        let mut out = SharedSecret([0u8; X25519_LEN]);
        let n = deriver.derive(&mut out.0)?;
        if n != X25519_LEN || ct_eq(&out.0, &[0u8; X25519_LEN]) {
            return Err(CryptoError::WeakKey);
        }
        Ok(out)
    }
}

/// An AES-128-CTR keystream that continues across calls: the relay layers
/// and the onion streams. The context (and its key schedule) lives as long
/// as the stream.
pub struct AesCtr {
    ctx: CipherCtx,
}

impl std::fmt::Debug for AesCtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesCtr")
    }
}

impl AesCtr {
    /// Key length in bytes.
    pub const KEY_LEN: usize = 16;
    /// IV (initial counter block) length in bytes.
    pub const IV_LEN: usize = 16;

    /// A stream starting at counter block `iv`.
    pub fn new(key: &[u8; 16], iv: &[u8; 16]) -> Result<Self, CryptoError> {
        let mut ctx = CipherCtx::new()?;
        ctx.encrypt_init(Some(Cipher::aes_128_ctr()), Some(key), Some(iv))?;
        Ok(Self { ctx })
    }

    /// XOR the next `data.len()` keystream bytes into `data`.
    pub fn apply(&mut self, data: &mut [u8]) -> Result<(), CryptoError> {
        let len = data.len();
        self.ctx.cipher_update_inplace(data, len)?;
        Ok(())
    }

    /// XOR the keystream of a fresh `(key, iv)` stream into `data` (one shot).
    pub fn xor_once(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) -> Result<(), CryptoError> {
        Self::new(key, iv)?.apply(data)
    }
}

/// AES-256-GCM with a context kept alive across messages: only the nonce is
/// reset per message, so the key schedule is computed once per key.
pub struct AesGcm {
    ctx: CipherCtx,
    seal: bool,
}

impl std::fmt::Debug for AesGcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AesGcm({})", if self.seal { "seal" } else { "open" })
    }
}

impl AesGcm {
    /// Key length in bytes.
    pub const KEY_LEN: usize = 32;

    /// A context that only seals.
    pub fn sealer(key: &[u8; 32]) -> Result<Self, CryptoError> {
        let mut ctx = CipherCtx::new()?;
        ctx.encrypt_init(Some(Cipher::aes_256_gcm()), Some(key), None)?;
        Ok(Self { ctx, seal: true })
    }

    /// A context that only opens.
    pub fn opener(key: &[u8; 32]) -> Result<Self, CryptoError> {
        let mut ctx = CipherCtx::new()?;
        ctx.decrypt_init(Some(Cipher::aes_256_gcm()), Some(key), None)?;
        Ok(Self { ctx, seal: false })
    }

    /// Encrypt `buf` in place and return the tag. Panics if this is an opener
    /// (a programming error, not an input error).
    pub fn seal_in_place(
        &mut self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        assert!(self.seal, "AesGcm::seal_in_place on an opener");
        self.ctx.encrypt_init(None, None, Some(nonce))?;
        if !aad.is_empty() {
            self.ctx.cipher_update(aad, None)?;
        }
        let len = buf.len();
        self.ctx.cipher_update_inplace(buf, len)?;
        self.finish_seal()
    }

    /// Encrypt `input` into `out` (the first `input.len()` bytes) and return
    /// the tag: sealing straight into its destination saves the copy that
    /// [`AesGcm::seal_in_place`] needs. Panics if `out` is shorter than
    /// `input` or this is an opener (programming errors).
    pub fn seal_into(
        &mut self,
        nonce: &[u8; GCM_NONCE_LEN],
        input: &[u8],
        out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        assert!(self.seal, "AesGcm::seal_into on an opener");
        self.ctx.encrypt_init(None, None, Some(nonce))?;
        self.ctx
            .cipher_update(input, Some(&mut out[..input.len()]))?;
        self.finish_seal()
    }

    /// Decrypt `input` into `out` (the first `input.len()` bytes) if `tag`
    /// verifies (no AAD). On failure `out` holds garbage and must be
    /// discarded. Panics if `out` is shorter than `input` or this is a
    /// sealer.
    pub fn open_into(
        &mut self,
        nonce: &[u8; GCM_NONCE_LEN],
        input: &[u8],
        out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        assert!(!self.seal, "AesGcm::open_into on a sealer");
        self.ctx.decrypt_init(None, None, Some(nonce))?;
        self.ctx
            .cipher_update(input, Some(&mut out[..input.len()]))?;
        self.finish_open(tag)
    }

    /// Decrypt `buf` in place if `tag` verifies. On failure `buf` holds
    /// garbage and must be discarded.
    pub fn open_in_place(
        &mut self,
        nonce: &[u8; GCM_NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        assert!(!self.seal, "AesGcm::open_in_place on a sealer");
        self.ctx.decrypt_init(None, None, Some(nonce))?;
        if !aad.is_empty() {
            self.ctx.cipher_update(aad, None)?;
        }
        let len = buf.len();
        self.ctx.cipher_update_inplace(buf, len)?;
        self.finish_open(tag)
    }

    /// End a sealing pass (GCM writes no bytes at the end) and read the tag.
    fn finish_seal(&mut self) -> Result<[u8; TAG_LEN], CryptoError> {
        let mut scratch = [0u8; 16];
        self.ctx.cipher_final(&mut scratch)?;
        let mut tag = [0u8; TAG_LEN];
        self.ctx.tag(&mut tag)?;
        Ok(tag)
    }

    /// End an opening pass: the tag must verify.
    fn finish_open(&mut self, tag: &[u8; TAG_LEN]) -> Result<(), CryptoError> {
        self.ctx.set_tag(tag)?;
        let mut scratch = [0u8; 16];
        self.ctx
            .cipher_final(&mut scratch)
            .map_err(|_| CryptoError::BadTag)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        hex::decode_to_slice(s, &mut out).expect("hex");
        out
    }

    #[test]
    fn x25519_rfc7748_vector() {
        // RFC 7748 §6.1.
        let a = X25519Secret::from_bytes(unhex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ))
        .expect("key");
        let b = X25519Secret::from_bytes(unhex(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ))
        .expect("key");
        assert_eq!(
            hex::encode(a.public()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let s1 = a.agree(&b.public()).expect("agree");
        let s2 = b.agree(&a.public()).expect("agree");
        assert_eq!(
            hex::encode(s1.0),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
        assert_eq!(s1.0, s2.0);
    }

    #[test]
    fn x25519_rejects_low_order_point() {
        let a = X25519Secret::from_bytes([7u8; 32]).expect("key");
        assert!(matches!(
            a.agree(&[0u8; 32]),
            Err(CryptoError::WeakKey) | Err(CryptoError::Library(_))
        ));
    }

    #[test]
    fn hkdf_rfc5869_case1() {
        let ikm = [0x0bu8; 22];
        let salt: [u8; 13] = unhex("000102030405060708090a0b0c");
        let info: [u8; 10] = unhex("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        hkdf_sha256(&salt, &ikm, &info, &mut okm).expect("hkdf");
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn hmac_rfc4231_case2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]).expect("hmac");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ctr_stream_continues_across_calls() {
        let (key, iv) = ([1u8; 16], [2u8; 16]);
        let mut whole = [0u8; 100];
        AesCtr::xor_once(&key, &iv, &mut whole).expect("ctr");
        let mut parts = [0u8; 100];
        let mut s = AesCtr::new(&key, &iv).expect("ctr");
        s.apply(&mut parts[..33]).expect("ctr");
        s.apply(&mut parts[33..]).expect("ctr");
        assert_eq!(whole, parts);
        assert_ne!(whole, [0u8; 100]);
    }

    #[test]
    fn gcm_round_trip_and_tamper() {
        let key = [9u8; 32];
        let mut sealer = AesGcm::sealer(&key).expect("gcm");
        let mut opener = AesGcm::opener(&key).expect("gcm");
        for i in 0..3u8 {
            let nonce = [i; 12];
            let mut buf = *b"hello, anonymous world";
            let tag = sealer
                .seal_in_place(&nonce, b"aad", &mut buf)
                .expect("seal");
            let mut tampered = buf;
            tampered[0] ^= 1;
            assert!(opener
                .open_in_place(&nonce, b"aad", &mut tampered, &tag)
                .is_err());
            opener
                .open_in_place(&nonce, b"aad", &mut buf, &tag)
                .expect("open");
            assert_eq!(&buf, b"hello, anonymous world");
        }
    }

    #[test]
    fn gcm_into_matches_in_place() {
        let key = [3u8; 32];
        let nonce = [5u8; 12];
        let plain = *b"sealed straight into the cell body";
        let mut in_place = plain;
        let tag = AesGcm::sealer(&key)
            .expect("gcm")
            .seal_in_place(&nonce, &[], &mut in_place)
            .expect("seal");
        let mut out = [0u8; 40];
        let tag2 = AesGcm::sealer(&key)
            .expect("gcm")
            .seal_into(&nonce, &plain, &mut out)
            .expect("seal");
        assert_eq!((&out[..plain.len()], tag2), (&in_place[..], tag));
        assert_eq!(out[plain.len()..], [0u8; 6], "nothing past the input");
        let mut opener = AesGcm::opener(&key).expect("gcm");
        let mut back = [0u8; 34];
        opener
            .open_into(&nonce, &in_place, &mut back, &tag)
            .expect("open");
        assert_eq!(back, plain);
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(opener
            .open_into(&nonce, &in_place, &mut back, &bad)
            .is_err());
    }
}
