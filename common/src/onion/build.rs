//! Building a code (the tracker's side).
//!
//! The tracker draws a fresh ephemeral X25519 key per hop; the next hop's
//! `alpha` rides inside the previous hop's block, so no Sphinx blinding
//! maths is needed and each hop costs two X25519 operations (the
//! ephemeral's public key and the agreement with the hop's onion key).
//!
//! The header is built backwards from the exit. Sphinx's filler makes the
//! bytes a hop shifts in at the end of its `beta` (its keystream over the
//! appended zero block) exactly the bytes the builder had put there, so every
//! later hop's MAC still verifies.

use super::format::Block;
use super::schedule::{HopKeys, HS_LEN};
use super::{
    BuiltCode, ExitPayload, HopSpec, OnionError, TrackingCode, BETA_LEN, BLOCK_LEN, MAX_HOPS,
};
use crate::crypto::{X25519Secret, X25519_LEN};
use rand::CryptoRng;
use zeroize::Zeroize;

/// Build a tracking code for the path `hops` (originator first, exit last)
/// carrying `payload` to the exit.
///
/// Randomness is drawn from `rng` in this order: one 32-byte ephemeral
/// secret per hop (hop 0 first), then `(MAX_HOPS − n) × BLOCK_LEN` bytes of
/// padding; [`build_with`] given the same bytes produces the same code.
pub fn build<R: CryptoRng + ?Sized>(
    rng: &mut R,
    hops: &[HopSpec],
    payload: &ExitPayload,
) -> Result<BuiltCode, OnionError> {
    validate(hops)?;
    let mut ephemerals = vec![[0u8; X25519_LEN]; hops.len()];
    for x in ephemerals.iter_mut() {
        rng.fill_bytes(x);
    }
    let mut padding = vec![0u8; (MAX_HOPS - hops.len()) * BLOCK_LEN];
    rng.fill_bytes(&mut padding);
    let built = build_with(&ephemerals, &padding, hops, payload);
    ephemerals.zeroize();
    built
}

/// Build deterministically from explicit ephemeral secrets (one per hop)
/// and padding (`(MAX_HOPS − n) × BLOCK_LEN` bytes). For test vectors and
/// cross-implementation checks; real codes come from [`build`], because a
/// reused ephemeral links codes and zero padding reveals the path length to
/// the exit.
pub fn build_with(
    ephemerals: &[[u8; X25519_LEN]],
    padding: &[u8],
    hops: &[HopSpec],
    payload: &ExitPayload,
) -> Result<BuiltCode, OnionError> {
    validate(hops)?;
    let n = hops.len();
    if ephemerals.len() != n || padding.len() != (MAX_HOPS - n) * BLOCK_LEN {
        return Err(OnionError::BadRandomness);
    }
    let (r, b) = (MAX_HOPS, BLOCK_LEN);

    // Per hop: alpha_i, the key schedule of s_i, and the header keystream.
    let mut alphas = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut streams = Vec::with_capacity(n);
    for (i, (x, hop)) in ephemerals.iter().zip(hops).enumerate() {
        let secret = X25519Secret::from_bytes(*x)?;
        let s = secret
            .agree(&hop.onion_public)
            .map_err(|_| OnionError::WeakKey(i))?;
        let k = HopKeys::derive(&s);
        alphas.push(secret.public());
        streams.push(k.header_stream()?);
        keys.push(k);
    }

    // Filler: phi_{i+1} = (phi_i ‖ 0^b) XOR HS_i[(r−i)·b .. (r+1)·b].
    let mut filler = Vec::with_capacity((n - 1) * b);
    for (i, hs) in streams.iter().enumerate().take(n - 1) {
        filler.extend_from_slice(&[0u8; BLOCK_LEN]);
        xor(&mut filler, &hs[(r - i) * b..(r + 1) * b]);
    }

    // Payload: delta_n = GCM seal under the exit's keys.
    let mut plain = payload.encode();
    let sealed = keys[n - 1].seal_exit(&plain);
    plain.zeroize();
    let mut delta = sealed?;

    // The exit's beta: ((block ‖ padding) XOR HS[0 .. (r−n+1)·b]) ‖ filler.
    let expiry = payload.expiry;
    let head = (r - n + 1) * b;
    let mut beta = [0u8; BETA_LEN];
    beta[..b].copy_from_slice(&Block::Exit { expiry }.encode());
    beta[b..head].copy_from_slice(padding);
    xor(&mut beta[..head], &streams[n - 1][..head]);
    beta[head..].copy_from_slice(&filler);
    keys[n - 1].xor_payload(&mut delta)?;
    let mut gamma = keys[n - 1].gamma(&alphas[n - 1], &beta, &delta);

    // Backwards: beta_i = (block_i ‖ beta_{i+1}[0 .. (r−1)·b]) XOR HS_i[0 .. r·b].
    for i in (0..n - 1).rev() {
        let next_nid = hops[i].next_nid.ok_or(OnionError::MissingNextNid(i))?;
        let block = Block::Relay {
            next_nid,
            expiry,
            next_alpha: alphas[i + 1],
            next_gamma: gamma,
        };
        let mut prev = [0u8; BETA_LEN];
        prev[..b].copy_from_slice(&block.encode());
        prev[b..].copy_from_slice(&beta[..(r - 1) * b]);
        xor(&mut prev, &streams[i][..r * b]);
        beta = prev;
        keys[i].xor_payload(&mut delta)?;
        gamma = keys[i].gamma(&alphas[i], &beta, &delta);
    }

    for hs in streams.iter_mut() {
        hs.zeroize();
    }
    Ok(BuiltCode {
        code: TrackingCode::from_parts(&alphas[0], &beta, &gamma, &delta),
        layer_keys: keys[1..].iter().map(|k| k.layer.clone()).collect(),
        expiry,
    })
}

/// 1 ≤ n ≤ MAX_HOPS; every hop but the last names a next NID, the last none.
fn validate(hops: &[HopSpec]) -> Result<(), OnionError> {
    let n = hops.len();
    if n == 0 || n > MAX_HOPS {
        return Err(OnionError::BadHopCount(n));
    }
    if let Some(i) = hops[..n - 1].iter().position(|h| h.next_nid.is_none()) {
        return Err(OnionError::MissingNextNid(i));
    }
    if hops[n - 1].next_nid.is_some() {
        return Err(OnionError::ExitWithNextNid);
    }
    Ok(())
}

/// `dst ^= src` over `dst.len()` bytes (`src` at least as long).
fn xor(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

// Keeps `HS_LEN` and the slice arithmetic above in step.
const _: () = assert!(HS_LEN == (MAX_HOPS + 1) * BLOCK_LEN && BETA_LEN == MAX_HOPS * BLOCK_LEN);
