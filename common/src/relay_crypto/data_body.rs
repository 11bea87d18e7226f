//! The plaintext framing of a DATA body, as the originator and the exit see
//! it once every relay layer is off: `length u16 ‖ data ‖ zero padding`.
//!
//! Relays never parse this (to them the body is ciphertext). The padding
//! must be zero so a body has exactly one valid encoding.

use crate::cell::{require_zero, CELL_BODY_LEN};
use crate::DecodeError;

/// Most data bytes one DATA body carries: the body minus the length field.
pub const MAX_DATA_LEN: usize = CELL_BODY_LEN - 2;

/// Encoder and decoder of plaintext DATA bodies (no state; a namespace).
#[derive(Debug, Clone, Copy)]
pub struct DataBody;

impl DataBody {
    /// Frame as much of `data` as fits (at most [`MAX_DATA_LEN`] bytes) into
    /// `out`, zero-padding the rest, and return how many bytes were taken so
    /// a caller can chunk a longer stream.
    pub fn encode(data: &[u8], out: &mut [u8; CELL_BODY_LEN]) -> usize {
        let n = data.len().min(MAX_DATA_LEN);
        // n ≤ 1017 always fits a u16.
        out[..2].copy_from_slice(&(n as u16).to_be_bytes());
        out[2..2 + n].copy_from_slice(&data[..n]);
        out[2 + n..].fill(0);
        n
    }

    /// The data inside a plaintext body. `Malformed` if the length exceeds
    /// [`MAX_DATA_LEN`] or any padding byte is nonzero (which, at the exit,
    /// also catches most bodies that were not wrapped with the right layers).
    pub fn decode(body: &[u8; CELL_BODY_LEN]) -> Result<&[u8], DecodeError> {
        let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        if len > MAX_DATA_LEN {
            return Err(DecodeError::Malformed("data length exceeds body"));
        }
        let (data, padding) = body[2..].split_at(len);
        require_zero(padding, "nonzero data padding")?;
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limits() {
        let mut body = [0xaa; CELL_BODY_LEN];
        assert_eq!(DataBody::encode(&[], &mut body), 0);
        assert_eq!(body, [0; CELL_BODY_LEN]);
        assert_eq!(DataBody::decode(&body), Ok(&[][..]));
        let big = [7u8; 2000];
        assert_eq!(DataBody::encode(&big, &mut body), MAX_DATA_LEN);
        assert_eq!(DataBody::decode(&body), Ok(&big[..MAX_DATA_LEN]));
        body[..2].copy_from_slice(&(MAX_DATA_LEN as u16 + 1).to_be_bytes());
        assert!(DataBody::decode(&body).is_err());
        body[..2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(DataBody::decode(&body).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trip_and_strict_padding(
            data in prop::collection::vec(any::<u8>(), 0..=MAX_DATA_LEN),
            pos in any::<prop::sample::Index>(),
            val in 1u8..,
        ) {
            let mut body = [0u8; CELL_BODY_LEN];
            prop_assert_eq!(DataBody::encode(&data, &mut body), data.len());
            prop_assert_eq!(DataBody::decode(&body), Ok(&data[..]));
            let pad = CELL_BODY_LEN - 2 - data.len();
            if pad > 0 {
                body[2 + data.len() + pos.index(pad)] = val;
                prop_assert!(DataBody::decode(&body).is_err());
            }
        }

        #[test]
        fn random_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), CELL_BODY_LEN)) {
            let body: [u8; CELL_BODY_LEN] = bytes.try_into().expect("len");
            let _ = DataBody::decode(&body);
        }
    }
}
