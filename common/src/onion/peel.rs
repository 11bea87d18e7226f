//! Peeling one layer (every hop's side, the originator and exit included).
//!
//! The order of the checks is part of the design (`PROTOCOL.md` §3.5):
//! nothing is decrypted or believed before the MAC verifies, and the replay
//! cache is only written once every other check has passed, so neither a
//! forged code nor a bad block can take a cache slot.

use super::format::Block;
use super::schedule::{HopKeys, HS_LEN};
use super::{ExitPayload, PeelError, Peeled, TrackingCode, BETA_LEN, BLOCK_LEN, MAX_CODE_LIFETIME};
use crate::crypto::{ct_eq, CryptoError, X25519Secret};
use crate::replay::{ReplayCache, ReplayError, ReplayTag};
use zeroize::Zeroize;

/// Remove this hop's layer from `code`.
///
/// `now` is the hop's clock (Unix seconds); a code is live while
/// `now <= expiry` and accepted only if `expiry <= now + MAX_CODE_LIFETIME`.
/// On success the code's replay tag is in `replay` until its expiry.
pub fn peel(
    onion_secret: &X25519Secret,
    code: &TrackingCode,
    now: u64,
    replay: &mut ReplayCache,
) -> Result<Peeled, PeelError> {
    let (peeled, tag, expiry) = peel_layer(onion_secret, code, now, |t| replay.contains(t))?;
    replay.check_and_insert(tag, expiry, now)?;
    Ok(peeled)
}

/// [`peel`] with the replay cache behind the caller's own lock: `seen(tag)`
/// is the early check (step 4) and `record(tag, expiry)` the final
/// check-and-insert (step 9), each called at most once. A cache shared by
/// several threads is then locked only for those two look-ups, not for the
/// X25519 and the rest of the peel, so peels run in parallel; two peels of
/// the same code still cannot both succeed, because `record` decides.
pub fn peel_with(
    onion_secret: &X25519Secret,
    code: &TrackingCode,
    now: u64,
    seen: impl FnOnce(&ReplayTag) -> bool,
    record: impl FnOnce(ReplayTag, u64) -> Result<(), ReplayError>,
) -> Result<Peeled, PeelError> {
    let (peeled, tag, expiry) = peel_layer(onion_secret, code, now, seen)?;
    record(tag, expiry)?;
    Ok(peeled)
}

/// Every step but the cache write: the peeled layer, its replay tag and its
/// expiry, for the caller to record.
fn peel_layer(
    onion_secret: &X25519Secret,
    code: &TrackingCode,
    now: u64,
    seen: impl FnOnce(&ReplayTag) -> bool,
) -> Result<(Peeled, ReplayTag, u64), PeelError> {
    // 1–2. Agree on s; openssl itself refuses the all-zero result.
    let alpha = code.alpha();
    let s = onion_secret.agree(&alpha).map_err(|_| PeelError::WeakKey)?;
    let keys = HopKeys::derive(&s);

    // 3. The MAC, in constant time, before anything else is used.
    let mut delta = code.delta();
    let gamma = keys.gamma(&alpha, code.beta(), &delta);
    if !ct_eq(&gamma, code.gamma()) {
        return Err(PeelError::BadMac);
    }

    // 4. Seen before? (Checked again, atomically, when inserting.)
    if seen(&keys.replay_tag) {
        return Err(PeelError::Replayed);
    }

    // 5. Decrypt: (beta ‖ 0^BLOCK) XOR HS = block ‖ next beta.
    let mut header = [0u8; HS_LEN];
    header[..BETA_LEN].copy_from_slice(code.beta());
    keys.xor_header(&mut header)?;
    let block = Block::decode(&header[..BLOCK_LEN])?;

    // 6. Expiry: live, and not absurdly far ahead.
    let expiry = block.expiry();
    if now > expiry {
        return Err(PeelError::Expired);
    }
    if expiry > now.saturating_add(MAX_CODE_LIFETIME) {
        return Err(PeelError::ExpiryTooFar);
    }

    // 7. Strip this hop's payload keystream.
    keys.xor_payload(&mut delta)?;

    let peeled = match block {
        Block::Relay {
            next_nid,
            next_alpha,
            next_gamma,
            ..
        } => Peeled::Relay {
            next_nid,
            next_code: TrackingCode::from_parts(
                &next_alpha,
                &header[BLOCK_LEN..],
                &next_gamma,
                &delta,
            ),
            layer_keys: keys.layer.clone(),
            expiry,
        },
        Block::Exit { .. } => {
            // 8. The exit opens and parses the payload; its expiry must be
            // the one every hop saw.
            let mut plain = keys.open_exit(&delta).map_err(|e| match e {
                CryptoError::BadTag => PeelError::BadPayload("does not open"),
                other => PeelError::Crypto(other),
            })?;
            let payload = ExitPayload::decode(&plain);
            plain.zeroize();
            let payload = payload?;
            if payload.expiry != expiry {
                return Err(PeelError::BadPayload("expiry differs from the header"));
            }
            Peeled::Exit {
                payload,
                layer_keys: keys.layer.clone(),
            }
        }
    };

    // 9. Only now may the caller take a cache slot (fails closed when full).
    Ok((peeled, keys.replay_tag, expiry))
}
