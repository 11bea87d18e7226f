//! Tracker API: the messages of `POST /v1/announce` (PROTOCOL.md §8).
//!
//! Every body is bincode 2 through serde with one configuration,
//! [`WIRE_CONFIG`] (little-endian, variable-length integers). Decoding is
//! strict so that a value has exactly one encoding:
//!
//! * the input must not exceed the message type's [`Message::MAX_LEN`]
//!   (checked before any parsing, so a hostile length prefix cannot make the
//!   decoder allocate more than the input could hold);
//! * the whole input must be consumed (no trailing bytes);
//! * the value must re-encode to exactly the input bytes (bincode itself
//!   accepts over-long varints; we do not).
//!
//! Decoders never panic; fuzz targets hold them to that.

mod messages;
mod signed;

pub use messages::{
    AnnounceRequest, AnnounceResponse, CircuitGrant, HeldLink, Neighbour, PeerEvent, Role,
    TorrentAnnounce, TorrentEvent,
};
pub use signed::{SignedAnnounce, DEFAULT_MAX_SKEW_SECS};

use crate::identity::IdentityError;
use crate::wire::DecodeError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Version of the API, carried in every [`SignedAnnounce`].
pub const API_VERSION: u16 = 1;
/// Path of the announce endpoint (method `POST`).
pub const ANNOUNCE_PATH: &str = "/v1/announce";
/// `Content-Type` of every request and response body, errors included.
pub const CONTENT_TYPE: &str = "application/x-anomos-bincode";
/// Largest announce request body (a whole [`SignedAnnounce`]). A peer with
/// a few hundred torrents fits; the tracker can refuse bigger bodies before
/// reading them.
pub const MAX_ANNOUNCE_BODY: usize = 64 * 1024;
/// Largest announce response body: room for hundreds of circuit grants
/// (about 1.3 KiB each with eight hops).
pub const MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// Largest error body.
pub const MAX_ERROR_BODY: usize = 4 * 1024;

/// The bincode configuration of every API body: little-endian, varint
/// integers, and an allocation limit no message can legitimately exceed.
pub const WIRE_CONFIG: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_RESPONSE_BODY>,
> = bincode::config::standard().with_limit::<MAX_RESPONSE_BODY>();

/// Why an API message was refused.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The body is longer than its type allows.
    #[error("message too large: {len} bytes, limit {max}")]
    TooLarge {
        /// Length of the offending body.
        len: usize,
        /// The limit for its type.
        max: usize,
    },
    /// The bytes are not a valid message.
    #[error("malformed message: {0}")]
    Decode(DecodeError),
    /// A value could not be encoded (it would exceed the size limit, or
    /// bincode refused it).
    #[error("message could not be encoded")]
    Encode,
    /// The announce carries a version this tracker does not speak.
    #[error("unsupported API version {0}")]
    Unsupported(u16),
    /// The announce signature does not verify under the carried certificate
    /// (or the certificate is unusable).
    #[error("bad announce signature")]
    BadSignature,
    /// The body's peer id is not the pin of the carried certificate.
    #[error("peer id does not match the certificate")]
    PeerIdMismatch,
    /// The timestamp is further from the tracker's clock than allowed.
    #[error("announce timestamp outside the allowed clock skew")]
    Stale,
    /// Signing failed on the sending side.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
}

impl ApiError {
    /// The error code a tracker answers with for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::TooLarge { .. } => ErrorCode::TooLarge,
            ApiError::Decode(_) => ErrorCode::BadRequest,
            ApiError::Encode | ApiError::Identity(_) => ErrorCode::Internal,
            ApiError::Unsupported(_) => ErrorCode::Unsupported,
            ApiError::BadSignature | ApiError::PeerIdMismatch => ErrorCode::Unauthorized,
            ApiError::Stale => ErrorCode::Stale,
        }
    }

    /// Coarse kind for metrics labels (a fixed set of strings).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Decode(_) => "malformed",
            ApiError::Encode => "encode",
            ApiError::Unsupported(_) => "unsupported",
            ApiError::BadSignature => "bad_signature",
            ApiError::PeerIdMismatch => "peer_id_mismatch",
            ApiError::Stale => "stale",
            ApiError::Identity(_) => "identity",
        }
    }
}

/// Machine-readable reason in an [`ApiErrorBody`]. Encoded as its variant
/// index (varint u32, 0 = `BadRequest` … 7 = `Internal`): append only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// Malformed body. HTTP 400.
    BadRequest,
    /// Body over the size limit. HTTP 413.
    TooLarge,
    /// Signature or identity check failed. HTTP 401.
    Unauthorized,
    /// Timestamp too far from the tracker's clock; fix the clock. HTTP 401.
    Stale,
    /// Nonce (or an older timestamp) already seen for this identity. HTTP 409.
    Replayed,
    /// Announcing too often; wait for the interval. HTTP 429.
    RateLimited,
    /// Unknown API version. HTTP 400.
    Unsupported,
    /// The tracker failed; retry later. HTTP 500.
    Internal,
}

impl ErrorCode {
    /// The HTTP status the tracker sends with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::Unsupported => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unauthorized | ErrorCode::Stale => 401,
            ErrorCode::Replayed => 409,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
        }
    }
}

/// Body of every non-2xx answer from the tracker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people. Never contains peer data.
    pub message: String,
}

impl ApiErrorBody {
    /// The body for `err`, with its Display text as the message.
    pub fn from_error(err: &ApiError) -> Self {
        Self {
            code: err.code(),
            message: err.to_string(),
        }
    }
}

/// A bincode-encoded API body with a size limit.
pub trait Message: Serialize + DeserializeOwned {
    /// Longest valid encoding, checked on both encode and decode.
    const MAX_LEN: usize;

    /// Encode with [`WIRE_CONFIG`]; fails if the result exceeds `MAX_LEN`.
    fn encode(&self) -> Result<Vec<u8>, ApiError> {
        let bytes =
            bincode::serde::encode_to_vec(self, WIRE_CONFIG).map_err(|_| ApiError::Encode)?;
        if bytes.len() > Self::MAX_LEN {
            return Err(ApiError::TooLarge {
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        Ok(bytes)
    }

    /// Decode strictly: size limit, no trailing bytes, canonical encoding.
    fn decode(bytes: &[u8]) -> Result<Self, ApiError> {
        if bytes.len() > Self::MAX_LEN {
            return Err(ApiError::TooLarge {
                len: bytes.len(),
                max: Self::MAX_LEN,
            });
        }
        let (value, used): (Self, usize) =
            bincode::serde::decode_from_slice(bytes, WIRE_CONFIG).map_err(map_decode_error)?;
        if used != bytes.len() {
            return Err(ApiError::Decode(DecodeError::Malformed("trailing bytes")));
        }
        let again =
            bincode::serde::encode_to_vec(&value, WIRE_CONFIG).map_err(|_| ApiError::Encode)?;
        if again != bytes {
            return Err(ApiError::Decode(DecodeError::Malformed(
                "non-canonical encoding",
            )));
        }
        Ok(value)
    }
}

impl Message for AnnounceRequest {
    const MAX_LEN: usize = MAX_ANNOUNCE_BODY;
}
impl Message for SignedAnnounce {
    const MAX_LEN: usize = MAX_ANNOUNCE_BODY;
}
impl Message for AnnounceResponse {
    const MAX_LEN: usize = MAX_RESPONSE_BODY;
}
impl Message for ApiErrorBody {
    const MAX_LEN: usize = MAX_ERROR_BODY;
}

/// Map bincode's errors onto the crate's fixed set of reasons. A whole HTTP
/// body is always available, so running out of bytes is malformed too.
fn map_decode_error(e: bincode::error::DecodeError) -> ApiError {
    use bincode::error::DecodeError as B;
    let why = match e {
        B::UnexpectedEnd { .. } => "truncated",
        // A length prefix claiming more than any body may hold.
        B::LimitExceeded => "length over limit",
        B::InvalidIntegerType { .. } => "bad integer",
        B::UnexpectedVariant { .. } => "unknown enum variant",
        B::Utf8 { .. } => "invalid utf-8",
        B::InvalidBooleanValue(_) => "bad boolean",
        B::ArrayLengthMismatch { .. } => "bad array length",
        B::OutsideUsizeRange(_) => "length out of range",
        _ => "invalid value",
    };
    ApiError::Decode(DecodeError::Malformed(why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_http() {
        assert_eq!(ErrorCode::BadRequest.http_status(), 400);
        assert_eq!(ErrorCode::TooLarge.http_status(), 413);
        assert_eq!(ErrorCode::Replayed.http_status(), 409);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert_eq!(ErrorCode::Internal.http_status(), 500);
        assert_eq!(ApiError::Stale.code(), ErrorCode::Stale);
        assert_eq!(ApiError::BadSignature.code().http_status(), 401);
    }

    #[test]
    fn error_body_round_trips_and_is_bounded() {
        let body = ApiErrorBody::from_error(&ApiError::Unsupported(9));
        let bytes = body.encode().expect("encode");
        // code 6 (Unsupported), then the varint length and UTF-8 message.
        assert_eq!(bytes[0], 6);
        assert_eq!(bytes[1] as usize, body.message.len());
        assert_eq!(ApiErrorBody::decode(&bytes).expect("decode"), body);
        let huge = ApiErrorBody {
            code: ErrorCode::Internal,
            message: "x".repeat(MAX_ERROR_BODY),
        };
        assert!(matches!(huge.encode(), Err(ApiError::TooLarge { .. })));
        assert!(matches!(
            ApiErrorBody::decode(&vec![0u8; MAX_ERROR_BODY + 1]),
            Err(ApiError::TooLarge { .. })
        ));
    }

    #[test]
    fn strict_decoding_rejects_trailing_and_overlong_varints() {
        let body = ApiErrorBody {
            code: ErrorCode::Stale,
            message: String::new(),
        };
        let mut bytes = body.encode().expect("encode");
        assert_eq!(bytes, [3, 0]);
        bytes.push(0);
        assert!(matches!(
            ApiErrorBody::decode(&bytes),
            Err(ApiError::Decode(DecodeError::Malformed("trailing bytes")))
        ));
        // Variant 3 written as a u16 varint (0xfb, 3, 0): valid bincode, not canonical.
        assert!(matches!(
            ApiErrorBody::decode(&[0xfb, 3, 0, 0]),
            Err(ApiError::Decode(DecodeError::Malformed(
                "non-canonical encoding"
            )))
        ));
        assert!(matches!(
            ApiErrorBody::decode(&[3, 5, b'a']),
            Err(ApiError::Decode(DecodeError::Malformed("truncated")))
        ));
        assert!(ApiErrorBody::decode(&[8, 0]).is_err());
        // A string length of 2^32 in a 7-byte body.
        assert!(matches!(
            ApiErrorBody::decode(&[3, 0xfd, 0, 0, 0, 0, 1, 0, 0, 0]),
            Err(ApiError::Decode(_))
        ));
    }
}
