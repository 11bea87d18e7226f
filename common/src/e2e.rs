//! The end-to-end channel between a circuit's originator and its exit.
//!
//! Both ends get the same [`CircuitSecret`] from the tracker (the originator
//! in its announce response, the exit inside the tracking code). Keying the
//! channel with that secret alone would let anyone who logs the tracker's
//! secrets decrypt recorded traffic, so the ends also run an ephemeral X25519
//! exchange through the circuit and mix both into the keys:
//!
//! * `INIT   = 1 ‖ version ‖ e_o_pub` (originator → exit),
//! * `ACCEPT = 2 ‖ version ‖ e_x_pub ‖ confirm tag` (exit → originator).
//!
//! The confirm tag is an HMAC under a key derived from the circuit secret,
//! so a relay (which lacks the secret) cannot substitute its own ephemeral
//! key in either direction without the originator noticing; the tracker,
//! which has the secret but never sees `dh`, learns nothing from passively
//! recorded cells. After the handshake, [`Channel`] seals records with
//! AES-256-GCM, a key and nonce prefix per direction and an implicit
//! sequence number, so reordering, replay, drops and tampering all fail.
//!
//! Everything is sans-IO: messages in, messages out, RNG injected.
//! PROTOCOL.md §6 has the byte layout and vectors.

mod channel;

pub use channel::{Channel, MAX_RECORD_LEN, MAX_RECORD_PLAINTEXT, RECORD_OVERHEAD};

use crate::crypto::{
    ct_eq, hkdf_sha256, hmac_sha256, CircuitSecret, CryptoError, SharedSecret, X25519Secret,
    TAG_LEN, X25519_LEN,
};
use rand::CryptoRng;
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Version byte of the e2e handshake.
pub const E2E_VERSION: u8 = 1;
/// Type byte of INIT.
pub const INIT_TYPE: u8 = 1;
/// Type byte of ACCEPT.
pub const ACCEPT_TYPE: u8 = 2;
/// `type ‖ version ‖ e_o_pub`.
pub const INIT_LEN: usize = 2 + X25519_LEN;
/// `type ‖ version ‖ e_x_pub ‖ confirm tag`.
pub const ACCEPT_LEN: usize = 2 + X25519_LEN + TAG_LEN;
/// HKDF info label; the two public keys follow it.
pub const KDF_LABEL: &[u8] = b"anomos-e2e-v1";
/// HMAC prefix of the exit's confirm tag.
pub const CONFIRM_LABEL: &[u8] = b"exit";
/// Total HKDF output: two keys, two nonce prefixes, the confirm key.
const OKM_LEN: usize = 32 + 32 + 4 + 4 + 32;

/// Why the handshake or a record failed.
#[derive(Debug, Error)]
pub enum E2eError {
    /// A handshake message has the wrong length or type byte.
    #[error("malformed e2e message: {0}")]
    Malformed(&'static str),
    /// The other end speaks a version we do not.
    #[error("unsupported e2e version {0}")]
    UnsupportedVersion(u8),
    /// The exit's confirm tag did not verify: wrong circuit secret, or
    /// somebody on the path replaced a key.
    #[error("e2e key confirmation failed")]
    BadConfirm,
    /// A record did not authenticate (tampered, reordered, replayed, or one
    /// was dropped before it).
    #[error("e2e record failed authentication")]
    BadRecord,
    /// A plaintext longer than [`MAX_RECORD_PLAINTEXT`] or a record longer
    /// than [`MAX_RECORD_LEN`].
    #[error("e2e record too long")]
    TooLong,
    /// A previous record failed; the channel accepts nothing more.
    #[error("e2e channel closed after a failed record")]
    Closed,
    /// 2^64 − 1 records were sent in one direction.
    #[error("e2e sequence numbers exhausted")]
    Exhausted,
    /// A crypto library failure or a low-order public key.
    #[error("e2e crypto: {0}")]
    Crypto(#[from] CryptoError),
}

impl E2eError {
    /// Coarse kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            E2eError::Malformed(_) => "malformed",
            E2eError::UnsupportedVersion(_) => "version",
            E2eError::BadConfirm => "bad_confirm",
            E2eError::BadRecord => "bad_record",
            E2eError::TooLong => "too_long",
            E2eError::Closed => "closed",
            E2eError::Exhausted => "exhausted",
            E2eError::Crypto(_) => "crypto",
        }
    }
}

/// Which end of the circuit a [`Channel`] serves: it seals with its own
/// direction's key and opens with the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The peer that received the tracking code (usually the downloader).
    Originator,
    /// The circuit's last hop (usually the source).
    Exit,
}

/// All key material of one channel, from
/// `HKDF(salt = circuit secret, ikm = dh, info = label ‖ e_o_pub ‖ e_x_pub, 104)`.
/// Public so a harness can build a [`Channel`] from fixed keys; normal code
/// only meets it inside the handshake. Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ChannelKeys {
    /// AES-256-GCM key, originator → exit (OKM bytes 0..32).
    pub key_ox: [u8; 32],
    /// AES-256-GCM key, exit → originator (OKM bytes 32..64).
    pub key_xo: [u8; 32],
    /// Nonce prefix, originator → exit (OKM bytes 64..68).
    pub prefix_ox: [u8; 4],
    /// Nonce prefix, exit → originator (OKM bytes 68..72).
    pub prefix_xo: [u8; 4],
    /// HMAC key of the exit's confirm tag (OKM bytes 72..104).
    pub confirm: [u8; 32],
}

impl std::fmt::Debug for ChannelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelKeys([secret])")
    }
}

impl ChannelKeys {
    /// Derive the channel keys (PROTOCOL.md §6).
    pub fn derive(
        secret: &CircuitSecret,
        dh: &SharedSecret,
        e_o_pub: &[u8; X25519_LEN],
        e_x_pub: &[u8; X25519_LEN],
    ) -> Result<ChannelKeys, CryptoError> {
        let mut info = [0u8; KDF_LABEL.len() + 2 * X25519_LEN];
        info[..KDF_LABEL.len()].copy_from_slice(KDF_LABEL);
        info[KDF_LABEL.len()..KDF_LABEL.len() + X25519_LEN].copy_from_slice(e_o_pub);
        info[KDF_LABEL.len() + X25519_LEN..].copy_from_slice(e_x_pub);
        let mut okm = [0u8; OKM_LEN];
        hkdf_sha256(&secret.0, &dh.0, &info, &mut okm)?;
        let mut keys = ChannelKeys {
            key_ox: [0; 32],
            key_xo: [0; 32],
            prefix_ox: [0; 4],
            prefix_xo: [0; 4],
            confirm: [0; 32],
        };
        keys.key_ox.copy_from_slice(&okm[..32]);
        keys.key_xo.copy_from_slice(&okm[32..64]);
        keys.prefix_ox.copy_from_slice(&okm[64..68]);
        keys.prefix_xo.copy_from_slice(&okm[68..72]);
        keys.confirm.copy_from_slice(&okm[72..]);
        okm.zeroize();
        Ok(keys)
    }

    /// The exit's confirm tag over `transcript = INIT ‖ ACCEPT without tag`.
    fn confirm_tag(&self, init: &[u8], accept_head: &[u8]) -> Result<[u8; TAG_LEN], CryptoError> {
        let mac = hmac_sha256(&self.confirm, &[CONFIRM_LABEL, init, accept_head])?;
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&mac[..TAG_LEN]);
        Ok(tag)
    }
}

/// Check type, version and length of a handshake message; return the
/// public key in it.
fn parse(msg: &[u8], ty: u8, len: usize) -> Result<[u8; X25519_LEN], E2eError> {
    if msg.len() != len {
        return Err(E2eError::Malformed("wrong handshake message length"));
    }
    if msg[0] != ty {
        return Err(E2eError::Malformed("wrong handshake message type"));
    }
    if msg[1] != E2E_VERSION {
        return Err(E2eError::UnsupportedVersion(msg[1]));
    }
    let mut public = [0u8; X25519_LEN];
    public.copy_from_slice(&msg[2..2 + X25519_LEN]);
    Ok(public)
}

/// The originator's half-finished handshake: it sent INIT and waits for ACCEPT.
#[derive(Debug)]
pub struct Initiator {
    ephemeral: X25519Secret,
    secret: CircuitSecret,
    init: [u8; INIT_LEN],
}

impl Initiator {
    /// Start a handshake with a fresh ephemeral key; send the returned INIT.
    pub fn new<R: CryptoRng + ?Sized>(
        rng: &mut R,
        secret: &CircuitSecret,
    ) -> Result<(Initiator, [u8; INIT_LEN]), E2eError> {
        Ok(Self::with_ephemeral(X25519Secret::generate(rng)?, secret))
    }

    /// Start a handshake with a given ephemeral key (test vectors, fuzzing).
    /// The key must be fresh: reusing it would link circuits.
    pub fn with_ephemeral(
        ephemeral: X25519Secret,
        secret: &CircuitSecret,
    ) -> (Initiator, [u8; INIT_LEN]) {
        let mut init = [0u8; INIT_LEN];
        init[0] = INIT_TYPE;
        init[1] = E2E_VERSION;
        init[2..].copy_from_slice(&ephemeral.public());
        let me = Initiator {
            ephemeral,
            secret: secret.clone(),
            init,
        };
        (me, init)
    }

    /// Verify the exit's ACCEPT and open the channel.
    pub fn finish(self, accept: &[u8]) -> Result<Channel, E2eError> {
        let e_x = parse(accept, ACCEPT_TYPE, ACCEPT_LEN)?;
        let dh = self.ephemeral.agree(&e_x)?;
        let keys = ChannelKeys::derive(&self.secret, &dh, &self.ephemeral.public(), &e_x)?;
        let (head, tag) = accept.split_at(ACCEPT_LEN - TAG_LEN);
        let expected = keys.confirm_tag(&self.init, head)?;
        if !ct_eq(&expected, tag) {
            return Err(E2eError::BadConfirm);
        }
        Channel::new(&keys, Role::Originator)
    }
}

/// The exit's side of the handshake (one step, so no state is kept).
#[derive(Debug, Clone, Copy)]
pub struct Responder;

impl Responder {
    /// Answer an INIT with a fresh ephemeral key: the open channel and the
    /// ACCEPT to send back.
    pub fn accept<R: CryptoRng + ?Sized>(
        rng: &mut R,
        secret: &CircuitSecret,
        init: &[u8],
    ) -> Result<(Channel, [u8; ACCEPT_LEN]), E2eError> {
        // Reject garbage before spending a key generation on it.
        parse(init, INIT_TYPE, INIT_LEN)?;
        Self::accept_with_ephemeral(X25519Secret::generate(rng)?, secret, init)
    }

    /// Answer an INIT with a given ephemeral key (test vectors, fuzzing).
    pub fn accept_with_ephemeral(
        ephemeral: X25519Secret,
        secret: &CircuitSecret,
        init: &[u8],
    ) -> Result<(Channel, [u8; ACCEPT_LEN]), E2eError> {
        let e_o = parse(init, INIT_TYPE, INIT_LEN)?;
        let e_x = ephemeral.public();
        let dh = ephemeral.agree(&e_o)?;
        let keys = ChannelKeys::derive(secret, &dh, &e_o, &e_x)?;
        let mut accept = [0u8; ACCEPT_LEN];
        accept[0] = ACCEPT_TYPE;
        accept[1] = E2E_VERSION;
        accept[2..2 + X25519_LEN].copy_from_slice(&e_x);
        let tag = keys.confirm_tag(init, &accept[..ACCEPT_LEN - TAG_LEN])?;
        accept[ACCEPT_LEN - TAG_LEN..].copy_from_slice(&tag);
        Ok((Channel::new(&keys, Role::Exit)?, accept))
    }
}

#[cfg(test)]
mod tests;
