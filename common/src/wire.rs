//! The one decoding outcome every parser in this crate shares.
//!
//! Bytes are parsed once, at the edge. A decoder either needs more bytes
//! (stream framing: wait and retry) or rejects the input as malformed (close
//! the circuit, or the link when the framing itself is broken). No decoder
//! panics on any input; fuzz targets hold them to that.

use thiserror::Error;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input is a valid prefix; at least this many more bytes are needed.
    #[error("need {0} more bytes")]
    NeedMore(usize),
    /// The input can never become valid. The `&'static str` names what was
    /// wrong, from a fixed set, so it is safe for logs and metric labels.
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// Coarse kind for metrics: `"need_more"` or `"malformed"`.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::NeedMore(_) => "need_more",
            DecodeError::Malformed(_) => "malformed",
        }
    }
}
