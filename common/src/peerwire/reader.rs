//! A streaming reader: bytes in, handshake then messages out.
//!
//! The end-to-end channel delivers the stream in arbitrary chunks (record
//! boundaries mean nothing), so the reader buffers what has arrived and cuts
//! whole frames out of it. It expects exactly one handshake first; the
//! piece protocol has no other framing, so a stream that fails to decode
//! once can never be resynchronised and the error is sticky.

use super::{Handshake, Message};
use crate::DecodeError;

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
