//! The sans-IO protocol core of Anomos.
//!
//! Everything both the tracker and the peer must agree on byte for byte lives
//! here: identities and pins, tracking codes (the onion), link cells and the
//! hello, relay-layer and end-to-end crypto, `.atorrent` metainfo and piece
//! maths, and the tracker API types.
//!
//! Architecture invariant: this crate performs no I/O and knows nothing of
//! actix, tokio, sockets or Prometheus. Callers feed it bytes, keys, a clock
//! (`now` as Unix seconds) and an RNG, and get typed values back. CI checks the
//! dependency tree.

pub mod api;
pub mod cell;
pub mod crypto;
pub mod e2e;
pub mod hello;
pub mod identity;
pub mod ids;
pub mod metainfo;
pub mod onion;
pub mod peerwire;
pub mod piece;
pub mod relay_crypto;
pub mod replay;
pub mod sensitive;
pub mod wire;

#[cfg(test)]
pub(crate) mod testvec;

pub use ids::{CircuitId, InfoHash, Nid, PeerId, Pin};
pub use sensitive::Sensitive;
pub use wire::DecodeError;
