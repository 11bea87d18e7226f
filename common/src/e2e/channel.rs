//! Sealed records of the end-to-end channel.
//!
//! A record is `GCM ciphertext ‖ tag (16)`, with an empty AAD and nonce
//! `prefix (4) ‖ seq (u64 BE)`. The sequence number starts at 0 in each
//! direction, grows by one per record and is never sent: the receiver
//! expects the next one, so a record that arrives out of order, twice, or
//! after a lost one fails authentication like a tampered one. A record fits
//! one DATA body (`MAX_RECORD_LEN` = `relay_crypto::MAX_DATA_LEN`).
//!
//! One GCM context per direction lives as long as the channel; only the
//! nonce is reset per record (a fresh context per record costs ten times
//! the cipher). After any failed record the channel refuses everything, so
//! a forger gets exactly one guess per circuit.

use super::{ChannelKeys, E2eError, Role};
use crate::crypto::{AesGcm, GCM_NONCE_LEN, TAG_LEN};
use crate::relay_crypto::MAX_DATA_LEN;

/// Bytes a record adds to its plaintext (the GCM tag).
pub const RECORD_OVERHEAD: usize = TAG_LEN;
/// Longest record: one whole DATA body's data.
pub const MAX_RECORD_LEN: usize = MAX_DATA_LEN;
/// Longest plaintext of one record (1001 bytes).
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD_LEN - RECORD_OVERHEAD;

/// One direction: its GCM context, nonce prefix and next sequence number.
struct Half {
    gcm: AesGcm,
    prefix: [u8; 4],
    seq: u64,
}

impl Half {
    /// The nonce for the current sequence number, refusing the last one so
    /// that `seq + 1` never overflows and no nonce is ever repeated.
    fn nonce(&self) -> Result<[u8; GCM_NONCE_LEN], E2eError> {
        if self.seq == u64::MAX {
            return Err(E2eError::Exhausted);
        }
        let mut nonce = [0u8; GCM_NONCE_LEN];
        nonce[..4].copy_from_slice(&self.prefix);
        nonce[4..].copy_from_slice(&self.seq.to_be_bytes());
        Ok(nonce)
    }
}

/// An open end-to-end channel (one per circuit end).
pub struct Channel {
    send: Half,
    recv: Half,
    failed: bool,
}

/// Sequence numbers are harmless; keys never leave the contexts.
impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("sent", &self.send.seq)
            .field("received", &self.recv.seq)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Channel {
    /// A channel for `role` from derived keys. The handshake calls this;
    /// harnesses (benchmarks, fuzzing) may call it with fixed keys.
    pub fn new(keys: &ChannelKeys, role: Role) -> Result<Channel, E2eError> {
        let (send_key, send_prefix, recv_key, recv_prefix) = match role {
            Role::Originator => (&keys.key_ox, keys.prefix_ox, &keys.key_xo, keys.prefix_xo),
            Role::Exit => (&keys.key_xo, keys.prefix_xo, &keys.key_ox, keys.prefix_ox),
        };
        Ok(Channel {
            send: Half {
                gcm: AesGcm::sealer(send_key)?,
                prefix: send_prefix,
                seq: 0,
            },
            recv: Half {
                gcm: AesGcm::opener(recv_key)?,
                prefix: recv_prefix,
                seq: 0,
            },
            failed: false,
        })
    }

    /// Records sealed so far.
    pub fn sent(&self) -> u64 {
        self.send.seq
    }

    /// Records opened so far.
    pub fn received(&self) -> u64 {
        self.recv.seq
    }

    /// Seal `plaintext` (at most [`MAX_RECORD_PLAINTEXT`] bytes) as the next
    /// record and append it to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), E2eError> {
        if plaintext.len() > MAX_RECORD_PLAINTEXT {
            return Err(E2eError::TooLong);
        }
        let at = out.len();
        out.extend_from_slice(plaintext);
        match self.seal_in_place(&mut out[at..]) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(e) => {
                out.truncate(at);
                Err(e)
            }
        }
    }

    /// Encrypt `buf` in place as the next record and return its tag (which
    /// goes on the wire right after `buf`).
    pub fn seal_in_place(&mut self, buf: &mut [u8]) -> Result<[u8; TAG_LEN], E2eError> {
        if buf.len() > MAX_RECORD_PLAINTEXT {
            return Err(E2eError::TooLong);
        }
        let nonce = self.send.nonce()?;
        let tag = self.send.gcm.seal_in_place(&nonce, &[], buf)?;
        self.send.seq += 1;
        Ok(tag)
    }

    /// Seal `plaintext` (at most [`MAX_RECORD_PLAINTEXT`] bytes) as the next
    /// record straight into `out`: ciphertext then tag, `plaintext.len() +
    /// RECORD_OVERHEAD` bytes, returned. The data path seals this way
    /// directly into a cell body in the link's outbound buffer. Panics if
    /// `out` is too short (a programming error).
    pub fn seal_into(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<usize, E2eError> {
        if plaintext.len() > MAX_RECORD_PLAINTEXT {
            return Err(E2eError::TooLong);
        }
        let n = plaintext.len();
        let nonce = self.send.nonce()?;
        let tag = self.send.gcm.seal_into(&nonce, plaintext, &mut out[..n])?;
        out[n..n + TAG_LEN].copy_from_slice(&tag);
        self.send.seq += 1;
        Ok(n + TAG_LEN)
    }

    /// Open the next record straight into `out` (which must hold
    /// `record.len() - RECORD_OVERHEAD` bytes) and return the plaintext
    /// length. Failure closes the channel for good, as
    /// [`Channel::open_in_place`]; `out` then holds garbage.
    pub fn open_into(&mut self, record: &[u8], out: &mut [u8]) -> Result<usize, E2eError> {
        if self.failed {
            return Err(E2eError::Closed);
        }
        let result = self.try_open_into(record, out);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn try_open_into(&mut self, record: &[u8], out: &mut [u8]) -> Result<usize, E2eError> {
        if record.len() > MAX_RECORD_LEN {
            return Err(E2eError::TooLong);
        }
        let Some(n) = record.len().checked_sub(TAG_LEN) else {
            return Err(E2eError::BadRecord);
        };
        if out.len() < n {
            return Err(E2eError::TooLong);
        }
        let (body, tag) = record.split_at(n);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        let nonce = self.recv.nonce()?;
        self.recv
            .gcm
            .open_into(&nonce, body, &mut out[..n], &t)
            .map_err(|_| E2eError::BadRecord)?;
        self.recv.seq += 1;
        Ok(n)
    }

    /// Open the next record into a fresh vector.
    pub fn open(&mut self, record: &[u8]) -> Result<Vec<u8>, E2eError> {
        let mut buf = record.to_vec();
        let n = self.open_in_place(&mut buf)?.len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Open the next record in place and return its plaintext (a prefix of
    /// `record`). On failure `record` holds garbage and the channel is closed
    /// for good: the circuit must be broken.
    pub fn open_in_place<'a>(&mut self, record: &'a mut [u8]) -> Result<&'a mut [u8], E2eError> {
        if self.failed {
            return Err(E2eError::Closed);
        }
        let result = self.try_open(record);
        if result.is_err() {
            self.failed = true;
        }
        let n = result?;
        Ok(&mut record[..n])
    }

    fn try_open(&mut self, record: &mut [u8]) -> Result<usize, E2eError> {
        if record.len() > MAX_RECORD_LEN {
            return Err(E2eError::TooLong);
        }
        let Some(n) = record.len().checked_sub(TAG_LEN) else {
            return Err(E2eError::BadRecord);
        };
        let (body, tag) = record.split_at_mut(n);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        let nonce = self.recv.nonce()?;
        self.recv
            .gcm
            .open_in_place(&nonce, &[], body, &t)
            .map_err(|_| E2eError::BadRecord)?;
        self.recv.seq += 1;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ChannelKeys {
        ChannelKeys {
            key_ox: [1; 32],
            key_xo: [2; 32],
            prefix_ox: [3; 4],
            prefix_xo: [4; 4],
            confirm: [5; 32],
        }
    }

    #[test]
    fn sequence_exhaustion_is_an_error_not_a_nonce_reuse() {
        let keys = keys();
        let mut o = Channel::new(&keys, Role::Originator).expect("channel");
        let mut x = Channel::new(&keys, Role::Exit).expect("channel");
        o.send.seq = u64::MAX - 1;
        x.recv.seq = u64::MAX - 1;
        let mut rec = Vec::new();
        o.seal(b"last", &mut rec).expect("last record");
        assert_eq!(x.open(&rec).expect("open"), b"last");
        assert!(matches!(
            o.seal(b"more", &mut rec),
            Err(E2eError::Exhausted)
        ));
        assert!(matches!(x.open(&rec), Err(E2eError::Exhausted)));
    }

    #[test]
    fn into_variants_interoperate_with_the_vec_ones() {
        let keys = keys();
        let mut o = Channel::new(&keys, Role::Originator).expect("channel");
        let mut x = Channel::new(&keys, Role::Exit).expect("channel");
        let mut body = [0u8; MAX_RECORD_LEN];
        for msg in [&b"first"[..], &[], &[7u8; MAX_RECORD_PLAINTEXT]] {
            let n = o.seal_into(msg, &mut body).expect("seal");
            assert_eq!(n, msg.len() + RECORD_OVERHEAD);
            assert_eq!(x.open(&body[..n]).expect("open"), msg);
            let mut rec = Vec::new();
            x.seal(msg, &mut rec).expect("seal");
            let mut out = [0u8; MAX_RECORD_PLAINTEXT];
            let m = o.open_into(&rec, &mut out).expect("open");
            assert_eq!(&out[..m], msg);
        }
        assert!(matches!(
            o.seal_into(&[0; MAX_RECORD_PLAINTEXT + 1], &mut [0; 2000]),
            Err(E2eError::TooLong)
        ));
        // A tampered record closes the channel, as with `open`.
        let n = x.seal_into(b"x", &mut body).expect("seal");
        body[0] ^= 1;
        let mut out = [0u8; 16];
        assert!(matches!(
            o.open_into(&body[..n], &mut out),
            Err(E2eError::BadRecord)
        ));
        assert!(matches!(
            o.open_into(&body[..n], &mut out),
            Err(E2eError::Closed)
        ));
        assert!(matches!(
            o.open_into(&[0; 3], &mut out),
            Err(E2eError::Closed)
        ));
    }
}
