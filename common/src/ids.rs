//! Small identifier types shared by every layer.
//!
//! They are newtypes so that a neighbour id can never be passed where a
//! circuit id is expected. Their `Debug` output is deliberately terse; wrap
//! them in [`crate::Sensitive`] before logging at info level or above.

use serde::{Deserialize, Serialize};
use std::fmt;

/// SHA-256 of a certificate's SubjectPublicKeyInfo (DER): how a TLS key is pinned.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pin(pub [u8; 32]);

/// A peer's identity: the [`Pin`] of its TLS certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

/// SHA-256 of the bencoded `info` dictionary of a `.atorrent`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InfoHash(pub [u8; 32]);

/// Neighbour id: names one link of a peer. The tracker gives both ends of a
/// link the same NID, and never two links of one peer the same NID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Nid(pub u16);

/// Circuit id, local to one link. The side that dialled the link allocates
/// odd ids, the side that accepted it even ids; 0 is the link itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct CircuitId(pub u32);

impl CircuitId {
    /// Id 0 addresses the link, not a circuit (PADDING).
    pub const LINK: CircuitId = CircuitId(0);

    /// Whether the side that dialled the link (`dialer == true`) may allocate this id.
    pub fn belongs_to(self, dialer: bool) -> bool {
        self.0 != 0 && (self.0 % 2 == 1) == dialer
    }
}

macro_rules! hex_id {
    ($ty:ident) => {
        impl $ty {
            /// Lower-case hex of all 32 bytes.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parse 64 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut out).ok()?;
                Some(Self(out))
            }

            /// First 8 hex digits: enough to tell ids apart in debug output.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({}…)"), self.short())
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

hex_id!(Pin);
hex_id!(PeerId);
hex_id!(InfoHash);

impl From<Pin> for PeerId {
    fn from(pin: Pin) -> Self {
        PeerId(pin.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_id_sides_split_odd_even() {
        assert!(CircuitId(1).belongs_to(true));
        assert!(!CircuitId(1).belongs_to(false));
        assert!(CircuitId(2).belongs_to(false));
        assert!(!CircuitId(0).belongs_to(true));
        assert!(!CircuitId(0).belongs_to(false));
    }

    #[test]
    fn hex_round_trip() {
        let pin = Pin([0xab; 32]);
        assert_eq!(Pin::from_hex(&pin.to_hex()), Some(pin));
        assert_eq!(Pin::from_hex("abc"), None);
        assert_eq!(pin.short(), "abababab");
    }
}
