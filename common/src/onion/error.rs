//! Why a code could not be built or peeled.
//!
//! Peel errors are what a hop sees from the network, so each has a coarse
//! [`PeelError::kind`] for a metric label; none carries key material or
//! code bytes. Build errors are the tracker's own mistakes (a bad path) or
//! a hop that published a low-order onion key.

use crate::crypto::CryptoError;
use crate::replay::ReplayError;
use thiserror::Error;

/// Why [`super::build`] refused a path.
#[derive(Debug, Error)]
pub enum OnionError {
    /// A path has 1 to `MAX_HOPS` hops.
    #[error("a path needs 1 to {max} hops, got {0}", max = super::MAX_HOPS)]
    BadHopCount(usize),
    /// Every hop but the last must name the NID it forwards on.
    #[error("hop {0} is not the exit but has no next NID")]
    MissingNextNid(usize),
    /// The last hop is the exit and forwards nowhere.
    #[error("the exit hop has a next NID")]
    ExitWithNextNid,
    /// `build_with` got the wrong number of ephemerals or padding bytes.
    #[error("wrong number of ephemeral keys or padding bytes")]
    BadRandomness,
    /// The hop's onion public key is a low-order point.
    #[error("hop {0} has a low-order onion key")]
    WeakKey(usize),
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl OnionError {
    /// Coarse kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            OnionError::BadHopCount(_) => "bad_hop_count",
            OnionError::MissingNextNid(_) => "missing_next_nid",
            OnionError::ExitWithNextNid => "exit_with_next_nid",
            OnionError::BadRandomness => "bad_randomness",
            OnionError::WeakKey(_) => "weak_key",
            OnionError::Crypto(_) => "crypto",
        }
    }
}

/// Why a hop refused a code. The checks run in the order of `PROTOCOL.md`
/// §3.5, so the first failing one is reported.
#[derive(Debug, Error)]
pub enum PeelError {
    /// The decrypted block is not a valid block (unknown kind, nonzero
    /// reserved bytes, an exit block with next-hop fields). Only the tracker
    /// can produce such a block under a valid MAC.
    #[error("malformed tracking code: {0}")]
    Malformed(&'static str),
    /// `alpha` is a low-order point (the agreement would be all zeros).
    #[error("tracking code with a low-order alpha")]
    WeakKey,
    /// `gamma` does not verify: the code was tampered with or is not for us.
    #[error("tracking code MAC does not verify")]
    BadMac,
    /// This hop already accepted this code.
    #[error("replayed tracking code")]
    Replayed,
    /// `now` is past the code's expiry.
    #[error("tracking code expired")]
    Expired,
    /// The code expires more than `MAX_CODE_LIFETIME` after `now`.
    #[error("tracking code expires too far in the future")]
    ExpiryTooFar,
    /// The replay cache is full of live tags (it fails closed).
    #[error("replay cache full")]
    ReplayCacheFull,
    /// The exit payload did not open or parse.
    #[error("bad exit payload: {0}")]
    BadPayload(&'static str),
    /// The crypto library failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl PeelError {
    /// Coarse kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeelError::Malformed(_) => "malformed",
            PeelError::WeakKey => "weak_key",
            PeelError::BadMac => "bad_mac",
            PeelError::Replayed => "replayed",
            PeelError::Expired => "expired",
            PeelError::ExpiryTooFar => "expiry_too_far",
            PeelError::ReplayCacheFull => "replay_cache_full",
            PeelError::BadPayload(_) => "bad_payload",
            PeelError::Crypto(_) => "crypto",
        }
    }
}

impl From<ReplayError> for PeelError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Replayed => PeelError::Replayed,
            ReplayError::Full => PeelError::ReplayCacheFull,
        }
    }
}
