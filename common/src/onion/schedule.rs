//! The per-hop key schedule: everything a hop derives from its shared secret.
//!
//! One HKDF call yields all keys, so each hop pays for one extract and seven
//! expand blocks, not one HKDF per key. HKDF and HMAC run on the low-level
//! SHA-256 (see `kdf`): openssl's per-call context set-up would otherwise
//! cost more than the hashing. The order of the output is part of the
//! protocol (`PROTOCOL.md` §3.2).

use super::kdf::{hkdf, Hmac};
use super::{ALPHA_LEN, BETA_LEN, BLOCK_LEN, EXIT_PAYLOAD_LEN, MAX_HOPS, SEALED_PAYLOAD_LEN};
use crate::crypto::{AesCtr, AesGcm, CryptoError, LayerKeys, SharedSecret, GCM_NONCE_LEN, TAG_LEN};
use crate::replay::ReplayTag;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HKDF salt: names the construction and its version.
pub(super) const KDF_SALT: &[u8] = b"anomos-onion-v1";
/// HKDF info of the single expand.
pub(super) const KDF_INFO: &[u8] = b"keys";
/// Additional data of the exit payload's GCM seal.
pub(super) const EXIT_AAD: &[u8] = b"anomos-exit-v1";
/// Header keystream: enough for `beta ‖ 0^BLOCK_LEN`.
pub(super) const HS_LEN: usize = (MAX_HOPS + 1) * BLOCK_LEN;
/// Bytes of HKDF output (see the offsets in `derive`).
pub(super) const OKM_LEN: usize = 220;

/// Everything one hop derives from its shared secret. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(super) struct HopKeys {
    mac: [u8; 32],
    header_key: [u8; 16],
    header_iv: [u8; 16],
    payload_key: [u8; 16],
    payload_iv: [u8; 16],
    /// What the hop's replay cache stores for this code.
    pub(super) replay_tag: ReplayTag,
    exit_key: [u8; 32],
    exit_nonce: [u8; GCM_NONCE_LEN],
    /// The hop's relay-layer keys for the circuit.
    pub(super) layer: LayerKeys,
}

/// Copy `N` bytes of `okm` from `*at`, advancing `*at`.
fn take<const N: usize>(okm: &[u8; OKM_LEN], at: &mut usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&okm[*at..*at + N]);
    *at += N;
    out
}

impl HopKeys {
    /// `HKDF(salt "anomos-onion-v1", ikm s, info "keys", 220)`, split in
    /// order: mac 32, header key 16, header iv 16, payload key 16, payload
    /// iv 16, replay tag 16, exit key 32, exit nonce 12, forward 32, backward 32.
    pub(super) fn derive(s: &SharedSecret) -> Self {
        let mut okm = [0u8; OKM_LEN];
        hkdf(KDF_SALT, &s.0, KDF_INFO, &mut okm);
        let at = &mut 0;
        let keys = HopKeys {
            mac: take(&okm, at),
            header_key: take(&okm, at),
            header_iv: take(&okm, at),
            payload_key: take(&okm, at),
            payload_iv: take(&okm, at),
            replay_tag: take(&okm, at),
            exit_key: take(&okm, at),
            exit_nonce: take(&okm, at),
            layer: LayerKeys {
                forward: take(&okm, at),
                backward: take(&okm, at),
            },
        };
        debug_assert_eq!(*at, OKM_LEN);
        okm.zeroize();
        keys
    }

    /// XOR the header keystream `HS` into `buf` (`beta ‖ 0^BLOCK_LEN` at a hop).
    pub(super) fn xor_header(&self, buf: &mut [u8; HS_LEN]) -> Result<(), CryptoError> {
        AesCtr::xor_once(&self.header_key, &self.header_iv, buf)
    }

    /// The header keystream itself (the builder needs slices of it).
    pub(super) fn header_stream(&self) -> Result<[u8; HS_LEN], CryptoError> {
        let mut hs = [0u8; HS_LEN];
        self.xor_header(&mut hs)?;
        Ok(hs)
    }

    /// XOR the payload keystream `PS` into `delta`.
    pub(super) fn xor_payload(
        &self,
        delta: &mut [u8; SEALED_PAYLOAD_LEN],
    ) -> Result<(), CryptoError> {
        AesCtr::xor_once(&self.payload_key, &self.payload_iv, delta)
    }

    /// `gamma = HMAC(mac, alpha ‖ beta ‖ delta)[0..16]`.
    pub(super) fn gamma(
        &self,
        alpha: &[u8; ALPHA_LEN],
        beta: &[u8],
        delta: &[u8; SEALED_PAYLOAD_LEN],
    ) -> [u8; 16] {
        let mut full = Hmac::new(&self.mac).mac(&[alpha, &beta[..BETA_LEN], delta]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        full.zeroize();
        out
    }

    /// Seal the exit payload: `ciphertext (80) ‖ tag (16)`.
    pub(super) fn seal_exit(
        &self,
        plaintext: &[u8; EXIT_PAYLOAD_LEN],
    ) -> Result<[u8; SEALED_PAYLOAD_LEN], CryptoError> {
        let mut sealed = [0u8; SEALED_PAYLOAD_LEN];
        sealed[..EXIT_PAYLOAD_LEN].copy_from_slice(plaintext);
        let tag = AesGcm::sealer(&self.exit_key)?.seal_in_place(
            &self.exit_nonce,
            EXIT_AAD,
            &mut sealed[..EXIT_PAYLOAD_LEN],
        )?;
        sealed[EXIT_PAYLOAD_LEN..].copy_from_slice(&tag);
        Ok(sealed)
    }

    /// Open a sealed exit payload; `CryptoError::BadTag` if it does not verify.
    pub(super) fn open_exit(
        &self,
        sealed: &[u8; SEALED_PAYLOAD_LEN],
    ) -> Result<[u8; EXIT_PAYLOAD_LEN], CryptoError> {
        let mut plain = [0u8; EXIT_PAYLOAD_LEN];
        plain.copy_from_slice(&sealed[..EXIT_PAYLOAD_LEN]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&sealed[EXIT_PAYLOAD_LEN..]);
        if let Err(e) = AesGcm::opener(&self.exit_key)?.open_in_place(
            &self.exit_nonce,
            EXIT_AAD,
            &mut plain,
            &tag,
        ) {
            plain.zeroize();
            return Err(e);
        }
        Ok(plain)
    }
}
