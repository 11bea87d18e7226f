//! The piece protocol: what two ends of a circuit say to trade pieces.
//!
//! It rides on the ordered, reliable byte stream of the end-to-end channel
//! (PROTOCOL.md §6), so it needs no sequence numbers, checksums or
//! encryption of its own. The two ends are anonymous to each other: nothing
//! here names a peer, an address or a client. The only identifying input a
//! side could leak is its behaviour, so the codec is strict — every field
//! has exactly one encoding, reserved bytes must be zero and sizes are exact
//! — leaving no room for a covert channel or an implementation fingerprint.
//!
//! A stream is one [`Handshake`] (fixed 48 bytes) followed by
//! length-prefixed [`Message`]s: `length (u32 BE) ‖ id (u8) ‖ payload`, where
//! `length` counts the id and the payload and 0 is a keep-alive. The
//! decoders never panic; they say "need more" or "malformed", and refuse an
//! oversized length as soon as the four length bytes are seen, before any
//! of the body is buffered. [`MessageReader`] cuts the frames out of the
//! received stream in any chunking. PROTOCOL.md §9 describes every byte and the
//! rules of the conversation; its vectors are checked in `peerwire/tests.rs`.

mod message;

pub use message::{Message, MessageId};

use crate::piece::{Bitfield, BLOCK_LEN};
use crate::{DecodeError, InfoHash};

/// The eight bytes that open a handshake.
pub const PW_MAGIC: [u8; 8] = *b"ANOMOSPW";
/// The piece-protocol version this implementation speaks.
pub const PW_VERSION: u16 = 1;
/// Encoded length of a handshake.
pub const HANDSHAKE_LEN: usize = 48;
/// Bytes of the length prefix of a message.
pub const LEN_PREFIX: usize = 4;
/// `piece (u32) ‖ offset (u32)`: the header of a PIECE payload.
pub const PIECE_HEADER_LEN: u32 = 8;
/// Largest value of the length field the default decoder accepts: a PIECE
/// message carrying one full block (`1 + 8 + BLOCK_LEN` = 16393). Any
/// larger message is malformed, so a receiver never buffers more than one
/// block per message.
pub const MAX_MESSAGE_LEN: u32 = 1 + PIECE_HEADER_LEN + BLOCK_LEN;

/// The length limit for a torrent of `piece_count` pieces: the larger of
/// [`MAX_MESSAGE_LEN`] and a BITFIELD message for that many pieces. Large
/// torrents of small pieces have bitfields longer than a block; the limit
/// still bounds what one message may make the receiver buffer.
pub fn max_len_for(piece_count: u32) -> u32 {
    let bitfield = 1 + Bitfield::byte_len(piece_count) as u32;
    MAX_MESSAGE_LEN.max(bitfield)
}

/// The first thing each side sends: which torrent this circuit is for.
///
/// The version is a field (not checked by the decoder) so that the swarm
/// core can tell a peer of another version apart from garbage and close
/// with a precise reason; every version keeps this 48-byte layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// The sender's piece-protocol version.
    pub version: u16,
    /// The torrent the sender wants to trade on this circuit.
    pub infohash: InfoHash,
}

impl Handshake {
    /// Our handshake for `infohash`, at [`PW_VERSION`].
    pub fn new(infohash: InfoHash) -> Handshake {
        Handshake {
            version: PW_VERSION,
            infohash,
        }
    }

    /// The 48 wire bytes: `magic ‖ version ‖ infohash ‖ 6 zero bytes`.
    pub fn to_bytes(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[..8].copy_from_slice(&PW_MAGIC);
        out[8..10].copy_from_slice(&self.version.to_be_bytes());
        out[10..42].copy_from_slice(&self.infohash.0);
        // out[42..48]: reserved, zero.
        out
    }

    /// Append the wire bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Decode a handshake from the front of `buf`, returning it and the bytes
    /// used. The magic is checked on whatever prefix has arrived, so a peer
    /// speaking something else is refused at once; reserved bytes must be
    /// zero.
    pub fn decode(buf: &[u8]) -> Result<(Handshake, usize), DecodeError> {
        let seen = buf.len().min(PW_MAGIC.len());
        if buf[..seen] != PW_MAGIC[..seen] {
            return Err(DecodeError::Malformed("bad handshake magic"));
        }
        let Some(b) = buf.first_chunk::<HANDSHAKE_LEN>() else {
            return Err(DecodeError::NeedMore(HANDSHAKE_LEN - buf.len()));
        };
        if b[42..].iter().any(|&x| x != 0) {
            return Err(DecodeError::Malformed("nonzero handshake reserved bytes"));
        }
        let mut infohash = [0u8; 32];
        infohash.copy_from_slice(&b[10..42]);
        Ok((
            Handshake {
                version: u16::from_be_bytes([b[8], b[9]]),
                infohash: InfoHash(infohash),
            },
            HANDSHAKE_LEN,
        ))
    }
}

// A streaming reader: bytes in, handshake then messages out. The end-to-end
// channel delivers the stream in arbitrary chunks (record boundaries mean
// nothing), so the reader buffers what has arrived and cuts whole frames out
// of it. It expects exactly one handshake first; the piece protocol has no
// other framing, so a stream that fails to decode once can never be
// resynchronised and the error is sticky.

/// What the reader cut out of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The peer's handshake: always the first frame, and only once.
    Handshake(Handshake),
    /// Any later message.
    Message(Message),
}

/// Buffers a received byte stream and decodes its frames in order.
#[derive(Debug)]
pub struct MessageReader {
    buf: Vec<u8>,
    /// First unread byte of `buf`.
    start: usize,
    max_len: u32,
    handshake_seen: bool,
    /// Set once decoding failed; returned from then on.
    failed: Option<DecodeError>,
}

impl MessageReader {
    /// A reader for a fresh stream whose messages may be at most `max_len`
    /// long (the length field; see `super::max_len_for`).
    pub fn new(max_len: u32) -> Self {
        MessageReader {
            buf: Vec::new(),
            start: 0,
            max_len,
            handshake_seen: false,
            failed: None,
        }
    }

    /// Bytes received and not yet taken out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Append received bytes. Call [`MessageReader::next_frame`] until it
    /// returns `Ok(None)` after each push: a frame's header is judged as soon
    /// as it is complete, so a peer announcing an oversized message is
    /// refused before its body is buffered.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Reclaim the consumed prefix once it is at least half the buffer,
        // so copying stays amortised O(1) per byte.
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame; `Ok(None)` if more bytes are needed; `Err` if
    /// the stream is malformed (close the circuit). After an error every
    /// call returns the same error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let rest = &self.buf[self.start..];
        let decoded = if self.handshake_seen {
            Message::decode(rest, self.max_len).map(|(m, n)| (Frame::Message(m), n))
        } else {
            Handshake::decode(rest).map(|(h, n)| (Frame::Handshake(h), n))
        };
        match decoded {
            Ok((frame, used)) => {
                self.start += used;
                self.handshake_seen = true;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Ok(Some(frame))
            }
            Err(DecodeError::NeedMore(_)) => Ok(None),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.start = 0;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
