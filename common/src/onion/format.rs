//! The plaintext layouts inside a code: the routing block and the exit
//! payload (`PROTOCOL.md` §3.3 and §3.4).
//!
//! Decoders are strict: reserved bytes must be zero and kinds known, so
//! these fields stay usable by a later version (an old hop rejects what it
//! does not understand instead of misreading it).

use super::{
    ExitPayload, PeelError, ALPHA_LEN, BLOCK_LEN, EXIT_PAYLOAD_LEN, GAMMA_LEN, MAX_CREDIT,
};
use crate::crypto::CircuitSecret;
use crate::{InfoHash, Nid};

/// Block kind: forward the code.
const KIND_RELAY: u8 = 1;
/// Block kind: this hop is the exit.
const KIND_EXIT: u8 = 2;
/// Exit payload format version.
const PAYLOAD_VERSION: u8 = 1;

/// One decrypted routing block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Block {
    /// Forward on `next_nid` with the next layer's `alpha` and `gamma`.
    Relay {
        next_nid: Nid,
        expiry: u64,
        next_alpha: [u8; ALPHA_LEN],
        next_gamma: [u8; GAMMA_LEN],
    },
    /// The exit: the next-hop fields are zero.
    Exit { expiry: u64 },
}

impl Block {
    /// `kind u8 ‖ next NID u16 ‖ 0^5 ‖ expiry u64 ‖ next alpha 32 ‖ next gamma 16`.
    pub(super) fn encode(&self) -> [u8; BLOCK_LEN] {
        let mut b = [0u8; BLOCK_LEN];
        match self {
            Block::Relay {
                next_nid,
                expiry,
                next_alpha,
                next_gamma,
            } => {
                b[0] = KIND_RELAY;
                b[1..3].copy_from_slice(&next_nid.0.to_be_bytes());
                b[8..16].copy_from_slice(&expiry.to_be_bytes());
                b[16..48].copy_from_slice(next_alpha);
                b[48..64].copy_from_slice(next_gamma);
            }
            Block::Exit { expiry } => {
                b[0] = KIND_EXIT;
                b[8..16].copy_from_slice(&expiry.to_be_bytes());
            }
        }
        b
    }

    /// Parse a decrypted block; any deviation is `Malformed`.
    pub(super) fn decode(b: &[u8]) -> Result<Self, PeelError> {
        let b: &[u8; BLOCK_LEN] = b
            .try_into()
            .map_err(|_| PeelError::Malformed("block length"))?;
        if b[3..8] != [0u8; 5] {
            return Err(PeelError::Malformed("block reserved bytes"));
        }
        let next_nid = Nid(u16::from_be_bytes([b[1], b[2]]));
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&b[8..16]);
        let expiry = u64::from_be_bytes(exp);
        let mut next_alpha = [0u8; ALPHA_LEN];
        next_alpha.copy_from_slice(&b[16..48]);
        let mut next_gamma = [0u8; GAMMA_LEN];
        next_gamma.copy_from_slice(&b[48..64]);
        match b[0] {
            KIND_RELAY => Ok(Block::Relay {
                next_nid,
                expiry,
                next_alpha,
                next_gamma,
            }),
            KIND_EXIT if b[1..3] == [0, 0] && b[16..64] == [0u8; 48] => Ok(Block::Exit { expiry }),
            KIND_EXIT => Err(PeelError::Malformed("exit block with next-hop fields")),
            _ => Err(PeelError::Malformed("unknown block kind")),
        }
    }

    /// The block's expiry, whatever its kind.
    pub(super) fn expiry(&self) -> u64 {
        match self {
            Block::Relay { expiry, .. } | Block::Exit { expiry } => *expiry,
        }
    }
}

impl ExitPayload {
    /// `version 1 ‖ credit ‖ 0^6 ‖ infohash 32 ‖ circuit secret 32 ‖
    /// expiry u64`. The caller zeroizes the result (it holds the circuit
    /// secret).
    pub(super) fn encode(&self) -> [u8; EXIT_PAYLOAD_LEN] {
        let mut p = [0u8; EXIT_PAYLOAD_LEN];
        p[0] = PAYLOAD_VERSION;
        p[1] = self.credit.min(MAX_CREDIT);
        p[8..40].copy_from_slice(&self.infohash.0);
        p[40..72].copy_from_slice(&self.circuit_secret.0);
        p[72..80].copy_from_slice(&self.expiry.to_be_bytes());
        p
    }

    /// Parse an opened payload.
    pub(super) fn decode(p: &[u8; EXIT_PAYLOAD_LEN]) -> Result<Self, PeelError> {
        if p[0] != PAYLOAD_VERSION {
            return Err(PeelError::BadPayload("unknown version"));
        }
        if p[1] > MAX_CREDIT {
            return Err(PeelError::BadPayload("credit tier"));
        }
        if p[2..8] != [0u8; 6] {
            return Err(PeelError::BadPayload("reserved bytes"));
        }
        let mut infohash = [0u8; 32];
        infohash.copy_from_slice(&p[8..40]);
        let mut secret = CircuitSecret([0u8; 32]);
        secret.0.copy_from_slice(&p[40..72]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&p[72..80]);
        Ok(ExitPayload {
            infohash: InfoHash(infohash),
            circuit_secret: secret,
            expiry: u64::from_be_bytes(exp),
            credit: p[1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trip_and_strictness() {
        let relay = Block::Relay {
            next_nid: Nid(0x1234),
            expiry: 0x0102_0304_0506_0708,
            next_alpha: [0xaa; 32],
            next_gamma: [0xbb; 16],
        };
        let bytes = relay.encode();
        assert_eq!(
            &bytes[..16],
            &hex::decode("01123400000000000102030405060708").expect("hex")[..16]
        );
        assert_eq!(Block::decode(&bytes).expect("decode"), relay);
        let exit = Block::Exit { expiry: 9 };
        assert_eq!(Block::decode(&exit.encode()).expect("decode"), exit);
        assert_eq!(exit.expiry(), 9);

        for (i, want) in [(0, "unknown block kind"), (5, "block reserved bytes")] {
            let mut b = bytes;
            b[i] ^= 0x40;
            assert!(matches!(Block::decode(&b), Err(PeelError::Malformed(m)) if m == want));
        }
        let mut b = exit.encode();
        b[2] = 1;
        assert!(matches!(Block::decode(&b), Err(PeelError::Malformed(_))));
        let mut b = exit.encode();
        b[63] = 1;
        assert!(matches!(Block::decode(&b), Err(PeelError::Malformed(_))));
        assert!(Block::decode(&bytes[..63]).is_err());
    }

    #[test]
    fn payload_round_trip_and_strictness() {
        let payload = ExitPayload {
            infohash: InfoHash([1; 32]),
            circuit_secret: CircuitSecret([2; 32]),
            expiry: 77,
            credit: 0,
        };
        let p = payload.encode();
        assert_eq!(p[0], 1);
        assert_eq!(p[79], 77);
        assert_eq!(ExitPayload::decode(&p).expect("decode"), payload);
        let mut bad = p;
        bad[0] = 2;
        assert!(matches!(
            ExitPayload::decode(&bad),
            Err(PeelError::BadPayload(_))
        ));
        let mut bad = p;
        bad[7] = 1;
        assert!(matches!(
            ExitPayload::decode(&bad),
            Err(PeelError::BadPayload(_))
        ));
        // Byte 1 is the credit tier: 0..=3 round-trips, 4 and up are refused.
        for credit in 0..=MAX_CREDIT {
            let with = ExitPayload {
                credit,
                ..payload.clone()
            };
            let p = with.encode();
            assert_eq!(p[1], credit);
            assert_eq!(ExitPayload::decode(&p).expect("decode"), with);
        }
        let mut bad = p;
        bad[1] = MAX_CREDIT + 1;
        assert!(matches!(
            ExitPayload::decode(&bad),
            Err(PeelError::BadPayload("credit tier"))
        ));
    }
}
