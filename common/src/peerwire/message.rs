//! The length-prefixed messages that follow the handshake.
//!
//! `length (u32 BE) ‖ id (u8) ‖ payload`; `length` = 1 + payload length, and
//! a zero length is a keep-alive with no id. Every id has an exact payload
//! size, or (BITFIELD, PIECE) a bounded one, so the decoder can refuse a
//! wrong length from the five header bytes alone, before the body arrives.

use super::{LEN_PREFIX, PIECE_HEADER_LEN};
use crate::piece::BLOCK_LEN;
use crate::DecodeError;

/// The id byte of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageId {
    /// The sender will not serve the receiver's requests.
    Choke = 0,
    /// The sender will serve the receiver's requests.
    Unchoke = 1,
    /// The sender wants pieces the receiver has.
    Interested = 2,
    /// The sender wants nothing the receiver has.
    NotInterested = 3,
    /// The sender has verified one more piece.
    Have = 4,
    /// Every piece the sender has, once, right after the handshake.
    Bitfield = 5,
    /// Ask for one block.
    Request = 6,
    /// One block of data.
    Piece = 7,
    /// Withdraw a request.
    Cancel = 8,
}

impl MessageId {
    /// The id for a wire byte; unknown bytes are malformed.
    pub fn from_byte(b: u8) -> Result<MessageId, DecodeError> {
        Ok(match b {
            0 => MessageId::Choke,
            1 => MessageId::Unchoke,
            2 => MessageId::Interested,
            3 => MessageId::NotInterested,
            4 => MessageId::Have,
            5 => MessageId::Bitfield,
            6 => MessageId::Request,
            7 => MessageId::Piece,
            8 => MessageId::Cancel,
            _ => return Err(DecodeError::Malformed("unknown message id")),
        })
    }

    /// Whether `len` (the length field) is a legal size for this id.
    fn len_ok(self, len: u32) -> bool {
        match self {
            MessageId::Choke
            | MessageId::Unchoke
            | MessageId::Interested
            | MessageId::NotInterested => len == 1,
            MessageId::Have => len == 5,
            MessageId::Request | MessageId::Cancel => len == 13,
            // At least one byte of bits: a torrent has at least one piece.
            MessageId::Bitfield => len >= 2,
            MessageId::Piece => {
                len > 1 + PIECE_HEADER_LEN && len <= 1 + PIECE_HEADER_LEN + BLOCK_LEN
            }
        }
    }
}

/// One message of the piece protocol.
#[derive(Clone, PartialEq, Eq)]
pub enum Message {
    /// Length 0: keeps an idle circuit from timing out.
    KeepAlive,
    /// See [`MessageId::Choke`].
    Choke,
    /// See [`MessageId::Unchoke`].
    Unchoke,
    /// See [`MessageId::Interested`].
    Interested,
    /// See [`MessageId::NotInterested`].
    NotInterested,
    /// The sender has verified `piece`.
    Have { piece: u32 },
    /// The sender's pieces in bitfield wire form (`piece::Bitfield`); its
    /// size and spare bits are checked against the torrent by the receiver.
    Bitfield(Vec<u8>),
    /// Ask for `len` bytes of `piece` from `offset` (one block).
    Request { piece: u32, offset: u32, len: u32 },
    /// `data` is the block of `piece` at `offset` (1..=BLOCK_LEN bytes).
    Piece {
        piece: u32,
        offset: u32,
        data: Vec<u8>,
    },
    /// Withdraw an earlier request with the same three fields.
    Cancel { piece: u32, offset: u32, len: u32 },
}

/// Piece data is torrent content: print only its size.
impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Have { piece } => write!(f, "Have({piece})"),
            Message::Bitfield(b) => write!(f, "Bitfield({} bytes)", b.len()),
            Message::Request { piece, offset, len } => {
                write!(f, "Request({piece}, {offset}, {len})")
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => write!(f, "Piece({piece}, {offset}, {} bytes)", data.len()),
            Message::Cancel { piece, offset, len } => write!(f, "Cancel({piece}, {offset}, {len})"),
            other => f.write_str(other.name()),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Message {
    /// The id byte, `None` for a keep-alive.
    pub fn id(&self) -> Option<MessageId> {
        Some(match self {
            Message::KeepAlive => return None,
            Message::Choke => MessageId::Choke,
            Message::Unchoke => MessageId::Unchoke,
            Message::Interested => MessageId::Interested,
            Message::NotInterested => MessageId::NotInterested,
            Message::Have { .. } => MessageId::Have,
            Message::Bitfield(_) => MessageId::Bitfield,
            Message::Request { .. } => MessageId::Request,
            Message::Piece { .. } => MessageId::Piece,
            Message::Cancel { .. } => MessageId::Cancel,
        })
    }

    /// Short fixed name, safe as a metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Message::KeepAlive => "keep_alive",
            Message::Choke => "choke",
            Message::Unchoke => "unchoke",
            Message::Interested => "interested",
            Message::NotInterested => "not_interested",
            Message::Have { .. } => "have",
            Message::Bitfield(_) => "bitfield",
            Message::Request { .. } => "request",
            Message::Piece { .. } => "piece",
            Message::Cancel { .. } => "cancel",
        }
    }

    /// Bytes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        LEN_PREFIX
            + match self {
                Message::KeepAlive => 0,
                Message::Choke
                | Message::Unchoke
                | Message::Interested
                | Message::NotInterested => 1,
                Message::Have { .. } => 5,
                Message::Bitfield(b) => 1 + b.len(),
                Message::Request { .. } | Message::Cancel { .. } => 13,
                Message::Piece { data, .. } => 9 + data.len(),
            }
    }

    /// Append the wire form to `out`. Encoding never fails; a message the
    /// decoder would refuse (an empty bitfield, piece data longer than a
    /// block) is the caller's bug and is caught by the receiver.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let body = self.encoded_len() - LEN_PREFIX;
        out.reserve(self.encoded_len());
        // A body never exceeds u32 for the messages this crate builds.
        out.extend_from_slice(&(body as u32).to_be_bytes());
        let Some(id) = self.id() else {
            return;
        };
        out.push(id as u8);
        match self {
            Message::Have { piece } => out.extend_from_slice(&piece.to_be_bytes()),
            Message::Bitfield(b) => out.extend_from_slice(b),
            Message::Request { piece, offset, len } | Message::Cancel { piece, offset, len } => {
                for v in [piece, offset, len] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                out.extend_from_slice(&piece.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(data);
            }
            _ => {}
        }
    }

    /// Decode the message at the front of `buf`, returning it and the bytes
    /// used. `max_len` bounds the length field (see `super::max_len_for`).
    ///
    /// The length and the id are judged as soon as they arrive: a length
    /// above `max_len`, an unknown id or a size the id does not allow is
    /// `Malformed` before the body is waited for.
    pub fn decode(buf: &[u8], max_len: u32) -> Result<(Message, usize), DecodeError> {
        let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
            return Err(DecodeError::NeedMore(LEN_PREFIX - buf.len()));
        };
        let len = u32::from_be_bytes(*prefix);
        if len == 0 {
            return Ok((Message::KeepAlive, LEN_PREFIX));
        }
        if len > max_len {
            return Err(DecodeError::Malformed("message too long"));
        }
        let Some(&id) = buf.get(LEN_PREFIX) else {
            return Err(DecodeError::NeedMore(1));
        };
        let id = MessageId::from_byte(id)?;
        if !id.len_ok(len) {
            return Err(DecodeError::Malformed("wrong message length"));
        }
        let total = LEN_PREFIX + len as usize;
        let Some(frame) = buf.get(..total) else {
            return Err(DecodeError::NeedMore(total - buf.len()));
        };
        let p = &frame[LEN_PREFIX + 1..];
        let msg = match id {
            MessageId::Choke => Message::Choke,
            MessageId::Unchoke => Message::Unchoke,
            MessageId::Interested => Message::Interested,
            MessageId::NotInterested => Message::NotInterested,
            MessageId::Have => Message::Have {
                piece: u32_at(p, 0),
            },
            MessageId::Bitfield => Message::Bitfield(p.to_vec()),
            MessageId::Request | MessageId::Cancel => {
                let (piece, offset, len) = (u32_at(p, 0), u32_at(p, 4), u32_at(p, 8));
                if len == 0 || len > BLOCK_LEN {
                    return Err(DecodeError::Malformed("bad request length"));
                }
                if id == MessageId::Request {
                    Message::Request { piece, offset, len }
                } else {
                    Message::Cancel { piece, offset, len }
                }
            }
            MessageId::Piece => Message::Piece {
                piece: u32_at(p, 0),
                offset: u32_at(p, 4),
                data: p[PIECE_HEADER_LEN as usize..].to_vec(),
            },
        };
        Ok((msg, total))
    }
}
