//! Tracking codes: the onion the tracker writes for each circuit.
//!
//! A tracking code names a path through the neighbour graph without naming
//! anyone on it. It is a Sphinx-style packet (Danezis & Goldberg, 2009) of a
//! constant `CODE_LEN` bytes at every hop: `alpha` (an X25519 public key),
//! `beta` (`MAX_HOPS` encrypted routing blocks), `gamma` (a MAC) and `delta`
//! (the exit's sealed payload). Each hop removes exactly one layer with its
//! onion key and learns only: relay or exit, the NID to forward on, its
//! relay-layer keys and the expiry. Because the size never changes and the
//! header is refilled with pseudo-random "filler", a hop cannot tell its
//! position or the path length.
//!
//! Hops are numbered `0 … n−1`. Hop 0 is the originator (usually the
//! downloader): it peels its own layer first and learns the first NID like
//! every other hop, so the code it is handed looks like any other. Hop
//! `n−1` is the exit (the source), which opens the payload (infohash,
//! circuit secret, expiry).
//!
//! Integrity is per hop: `gamma` authenticates the whole code (alpha, beta
//! and the payload) under a key only that hop can derive, so a relay that
//! flips any bit to "tag" a code for a colluder further on sees it dropped at
//! the very next hop. Replays are caught by a per-hop
//! [`ReplayCache`](crate::replay::ReplayCache) keyed by a tag derived from the
//! shared secret.
//!
//! Costs (the design budget): peeling is one X25519 agreement plus
//! symmetric work; building is two X25519 operations per hop (the
//! ephemeral's public key and the agreement).
//!
//! Every byte is specified in `PROTOCOL.md` §3, with test vectors.

mod build;
mod error;
mod format;
mod kdf;
mod peel;
mod schedule;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use build::{build, build_with};
pub use error::{OnionError, PeelError};
pub use peel::{peel, peel_with};

use crate::crypto::{CircuitSecret, LayerKeys};
use crate::{DecodeError, InfoHash, Nid};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Layers in a tracking code, counting the originator's own.
pub const MAX_HOPS: usize = 8;
/// One routing block of the header.
pub const BLOCK_LEN: usize = 64;
/// The header's routing blocks: `MAX_HOPS × BLOCK_LEN`.
pub const BETA_LEN: usize = MAX_HOPS * BLOCK_LEN;
/// The exit payload before sealing.
pub const EXIT_PAYLOAD_LEN: usize = 80;
/// The exit payload after sealing: plaintext plus a 16-byte GCM tag.
pub const SEALED_PAYLOAD_LEN: usize = EXIT_PAYLOAD_LEN + 16;
/// `alpha`: an X25519 public key.
pub const ALPHA_LEN: usize = 32;
/// `gamma`: a truncated HMAC-SHA256.
pub const GAMMA_LEN: usize = 16;
/// A whole code: `alpha ‖ beta ‖ gamma ‖ delta`.
pub const CODE_LEN: usize = ALPHA_LEN + BETA_LEN + GAMMA_LEN + SEALED_PAYLOAD_LEN;
/// The furthest in the future (seconds after `now`) a code may expire. A hop
/// keeps each accepted tag until the code expires; without a cap, anyone who
/// knows its onion public key could pin its replay cache full for years.
pub const MAX_CODE_LIFETIME: u64 = 3600;

const BETA_OFF: usize = ALPHA_LEN;
const GAMMA_OFF: usize = BETA_OFF + BETA_LEN;
const DELTA_OFF: usize = GAMMA_OFF + GAMMA_LEN;

/// A tracking code: exactly `CODE_LEN` bytes, opaque to everyone but the hop
/// whose layer is on top. Its `Debug` hides the bytes (they link hops).
#[derive(Clone, PartialEq, Eq)]
pub struct TrackingCode(Box<[u8; CODE_LEN]>);

impl std::fmt::Debug for TrackingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackingCode([opaque])")
    }
}

impl TrackingCode {
    /// Accept exactly `CODE_LEN` bytes; the contents are checked by [`peel`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.len() {
            CODE_LEN => {
                let mut code = Box::new([0u8; CODE_LEN]);
                code.copy_from_slice(bytes);
                Ok(Self(code))
            }
            n if n < CODE_LEN => Err(DecodeError::NeedMore(CODE_LEN - n)),
            _ => Err(DecodeError::Malformed("tracking code too long")),
        }
    }

    /// The `CODE_LEN` bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0[..]
    }

    fn from_parts(
        alpha: &[u8; ALPHA_LEN],
        beta: &[u8],
        gamma: &[u8; GAMMA_LEN],
        delta: &[u8; SEALED_PAYLOAD_LEN],
    ) -> Self {
        let mut code = Box::new([0u8; CODE_LEN]);
        code[..BETA_OFF].copy_from_slice(alpha);
        code[BETA_OFF..GAMMA_OFF].copy_from_slice(&beta[..BETA_LEN]);
        code[GAMMA_OFF..DELTA_OFF].copy_from_slice(gamma);
        code[DELTA_OFF..].copy_from_slice(delta);
        Self(code)
    }

    fn alpha(&self) -> [u8; ALPHA_LEN] {
        let mut out = [0u8; ALPHA_LEN];
        out.copy_from_slice(&self.0[..BETA_OFF]);
        out
    }

    fn beta(&self) -> &[u8] {
        &self.0[BETA_OFF..GAMMA_OFF]
    }

    fn gamma(&self) -> &[u8] {
        &self.0[GAMMA_OFF..DELTA_OFF]
    }

    fn delta(&self) -> [u8; SEALED_PAYLOAD_LEN] {
        let mut out = [0u8; SEALED_PAYLOAD_LEN];
        out.copy_from_slice(&self.0[DELTA_OFF..]);
        out
    }
}

impl Serialize for TrackingCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de> Deserialize<'de> for TrackingCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// One hop of a path to build, as the tracker knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopSpec {
    /// The hop's X25519 onion public key.
    pub onion_public: [u8; 32],
    /// The NID this hop forwards the code on; `None` for the exit (last hop)
    /// and only for it.
    pub next_nid: Option<Nid>,
}

/// What the exit learns: which torrent, the circuit secret it shares with
/// the originator, when the circuit's code expires, and the originator's
/// coarse credit tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitPayload {
    /// The torrent the circuit is for.
    pub infohash: InfoHash,
    /// Mixed into the end-to-end handshake (see `e2e`).
    pub circuit_secret: CircuitSecret,
    /// Unix seconds; also the expiry written into every hop's block.
    pub expiry: u64,
    /// The originator's share-ratio tier as the tracker's ledger sees it,
    /// `0..=MAX_CREDIT` (0 = nothing on record). Relaying counts toward it,
    /// so a source's choker can favour peers that carry others' traffic
    /// without learning who they are: two bits, attested by the tracker.
    pub credit: u8,
}

/// Highest credit tier an exit payload may carry.
pub const MAX_CREDIT: u8 = 3;

/// A freshly built code and what the originator needs to use it.
#[derive(Clone, Debug)]
pub struct BuiltCode {
    /// The code to hand to hop 0 (the originator).
    pub code: TrackingCode,
    /// Relay-layer keys of hops `1 … n−1`, in path order (the originator's
    /// own layer carries no relay crypto).
    pub layer_keys: Vec<LayerKeys>,
    /// When the code expires (the payload's expiry).
    pub expiry: u64,
}

/// The result of peeling one layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peeled {
    /// Forward `next_code` on the link named `next_nid`.
    Relay {
        /// The link to forward on.
        next_nid: Nid,
        /// The code for the next hop (same size, one layer fewer).
        next_code: TrackingCode,
        /// This hop's relay-layer keys for the circuit.
        layer_keys: LayerKeys,
        /// When the code (and so the circuit set-up) expires.
        expiry: u64,
    },
    /// This hop is the exit.
    Exit {
        /// The opened payload.
        payload: ExitPayload,
        /// This hop's relay-layer keys for the circuit.
        layer_keys: LayerKeys,
    },
}
