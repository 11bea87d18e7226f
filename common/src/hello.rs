//! The link hello: the first bytes each side sends after the TLS handshake.
//!
//! TLS already proved which key the other side holds (both ends pin the
//! certificate the tracker named for this NID). The hello binds the link to
//! the protocol version and to the tracker's view of it: the sender's peer id
//! and the NID both ends were given. A link whose hello does not match is
//! closed and reported, and never replaces an existing link.
//!
//! Fixed size, so it can be read with one exact read:
//! `magic "ANOM" ‖ version u8 ‖ flags u8 ‖ peer id (32) ‖ nid u16 ‖ reserved u16`.

use crate::{DecodeError, Nid, PeerId};
use thiserror::Error;

/// The four magic bytes that open a hello.
pub const HELLO_MAGIC: [u8; 4] = *b"ANOM";
/// The link protocol version this implementation speaks.
pub const HELLO_VERSION: u8 = 1;
/// Encoded length of a hello.
pub const HELLO_LEN: usize = 42;

/// A decoded hello. Version, flags and reserved bytes are checked on decode
/// (only version 1 with zero flags exists), so they are not fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's peer id (the pin of its TLS certificate).
    pub peer: PeerId,
    /// The NID the tracker gave this link (the same at both ends).
    pub nid: Nid,
}

/// A well-formed hello that does not match what the tracker told us.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HelloError {
    /// The hello names a different peer than the certificate we pinned.
    #[error("hello from an unexpected peer")]
    WrongPeer,
    /// The hello names a different NID than ours for this link.
    #[error("hello with an unexpected NID")]
    WrongNid,
}

impl HelloError {
    /// Coarse kind for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HelloError::WrongPeer => "wrong_peer",
            HelloError::WrongNid => "wrong_nid",
        }
    }
}

impl Hello {
    /// The hello we send on a link.
    pub fn new(peer: PeerId, nid: Nid) -> Hello {
        Hello { peer, nid }
    }

    /// The 42 wire bytes.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..4].copy_from_slice(&HELLO_MAGIC);
        out[4] = HELLO_VERSION;
        out[5] = 0;
        out[6..38].copy_from_slice(&self.peer.0);
        out[38..40].copy_from_slice(&self.nid.0.to_be_bytes());
        // out[40..42]: reserved, zero.
        out
    }

    /// Decode a hello from the front of `buf`, returning it and the bytes used.
    ///
    /// The magic is checked on whatever prefix has arrived, so a peer that
    /// speaks something else is rejected at once instead of being waited for;
    /// any prefix of a valid hello is `NeedMore`.
    pub fn decode(buf: &[u8]) -> Result<(Hello, usize), DecodeError> {
        let magic_seen = buf.len().min(HELLO_MAGIC.len());
        if buf[..magic_seen] != HELLO_MAGIC[..magic_seen] {
            return Err(DecodeError::Malformed("bad hello magic"));
        }
        let Some(b) = buf.first_chunk::<HELLO_LEN>() else {
            return Err(DecodeError::NeedMore(HELLO_LEN - buf.len()));
        };
        if b[4] != HELLO_VERSION {
            return Err(DecodeError::Malformed("unsupported hello version"));
        }
        if b[5] != 0 {
            return Err(DecodeError::Malformed("nonzero hello flags"));
        }
        if b[40..42] != [0, 0] {
            return Err(DecodeError::Malformed("nonzero hello reserved bytes"));
        }
        let mut peer = [0u8; 32];
        peer.copy_from_slice(&b[6..38]);
        let nid = Nid(u16::from_be_bytes([b[38], b[39]]));
        Ok((
            Hello {
                peer: PeerId(peer),
                nid,
            },
            HELLO_LEN,
        ))
    }

    /// Check the hello against the peer we pinned for this link and the NID
    /// the tracker gave it. The peer id is public (it is the certificate
    /// pin), so a plain comparison is fine.
    pub fn check(&self, expected_peer: PeerId, expected_nid: Nid) -> Result<(), HelloError> {
        if self.peer != expected_peer {
            return Err(HelloError::WrongPeer);
        }
        if self.nid != expected_nid {
            return Err(HelloError::WrongNid);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testvec::Vector;
    use proptest::prelude::*;

    #[test]
    fn vector() {
        let v = Vector::load("hello");
        let hello = Hello::new(PeerId(v.array("peer")), Nid(v.u64("nid") as u16));
        let bytes = v.bytes("bytes");
        assert_eq!(&hello.encode()[..], &bytes[..]);
        assert_eq!(Hello::decode(&bytes), Ok((hello, HELLO_LEN)));
        // Trailing bytes belong to the cell stream and are not consumed.
        let more = [&bytes[..], &[0xff; 3]].concat();
        assert_eq!(Hello::decode(&more), Ok((hello, HELLO_LEN)));
    }

    #[test]
    fn rejects_bad_fields() {
        let good = Hello::new(PeerId([7; 32]), Nid(3)).encode();
        let malformed = |pos: usize, val: u8| {
            let mut b = good;
            b[pos] = val;
            matches!(Hello::decode(&b), Err(DecodeError::Malformed(_)))
        };
        assert!(malformed(0, b'X'));
        assert!(malformed(3, b'm'));
        assert!(malformed(4, 0));
        assert!(malformed(4, 2));
        assert!(malformed(5, 1));
        assert!(malformed(40, 1));
        assert!(malformed(41, 0x80));
        // Wrong magic is seen before the hello is complete.
        assert!(matches!(
            Hello::decode(b"GET / HT"),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(Hello::decode(b""), Err(DecodeError::NeedMore(HELLO_LEN)));
    }

    #[test]
    fn check_peer_and_nid() {
        let h = Hello::new(PeerId([1; 32]), Nid(5));
        assert_eq!(h.check(PeerId([1; 32]), Nid(5)), Ok(()));
        let e = h.check(PeerId([2; 32]), Nid(5)).expect_err("wrong peer");
        assert_eq!((e.clone(), e.kind()), (HelloError::WrongPeer, "wrong_peer"));
        assert_eq!(h.check(PeerId([1; 32]), Nid(6)), Err(HelloError::WrongNid));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn round_trip_and_truncations(peer in any::<[u8; 32]>(), nid in any::<u16>()) {
            let h = Hello::new(PeerId(peer), Nid(nid));
            let b = h.encode();
            prop_assert_eq!(Hello::decode(&b), Ok((h, HELLO_LEN)));
            for k in 0..HELLO_LEN {
                prop_assert_eq!(Hello::decode(&b[..k]), Err(DecodeError::NeedMore(HELLO_LEN - k)));
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64), magic in any::<bool>()) {
            let input = if magic { [&HELLO_MAGIC[..], &bytes[..]].concat() } else { bytes };
            if let Ok((h, n)) = Hello::decode(&input) {
                prop_assert_eq!(&h.encode()[..], &input[..n]);
            }
        }
    }
}
