//! The bytes both transfers carry, and checking them at the receiver.
//!
//! Why a repeated random block and not a hash: hashing 256 MiB at the
//! receiver costs ~0.15 s of a core (SHA-256 at 1.75 GB/s), which on a
//! 2-core machine competes with the very processes being measured and would
//! hit the fast plain-TLS baseline harder than the circuit, flattering the
//! ratio. Both endpoints derive the same 4 MiB block from a seed the
//! controller picks (different every run), the sender repeats it, and the
//! receiver compares every byte against it with `memcmp` (well above
//! 10 GB/s): a byte-exact check at a fraction of the cost.

use std::time::Instant;

use rand::{RngCore as _, SeedableRng as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Length of the repeated random block.
const BLOCK: usize = 4 << 20;
/// Bytes per write and per read.
const CHUNK: usize = 256 * 1024;

/// The deterministic byte stream of one run. Cheap to clone (the exit
/// hands one to every circuit it holds).
#[derive(Clone)]
pub struct Pattern {
    block: std::sync::Arc<[u8]>,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pattern({} bytes)", self.block.len())
    }
}

/// What a receiver saw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// Bytes received.
    pub bytes: u64,
    /// Seconds from the first byte to the last.
    pub secs: f64,
    /// MiB/s over `secs`.
    pub mib_per_sec: f64,
    /// Every byte matched and the stream had the expected length.
    pub intact: bool,
}

impl Pattern {
    /// The stream for `seed` (the same in every process of the run).
    pub fn new(seed: u64) -> Self {
        let mut block = vec![0u8; BLOCK];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut block);
        Pattern {
            block: block.into(),
        }
    }

    /// Write the first `total` bytes of the stream, then shut the writer down.
    pub async fn send<W: AsyncWrite + Unpin>(&self, w: &mut W, total: u64) -> std::io::Result<()> {
        let mut off = 0u64;
        while off < total {
            let at = (off % BLOCK as u64) as usize;
            let n = CHUNK.min(BLOCK - at).min((total - off) as usize);
            w.write_all(&self.block[at..at + n]).await?;
            off += n as u64;
        }
        w.flush().await?;
        w.shutdown().await
    }

    /// Read until `total` bytes or the end of the stream, comparing each byte.
    pub async fn receive<R: AsyncRead + Unpin>(
        &self,
        r: &mut R,
        total: u64,
    ) -> std::io::Result<Transfer> {
        let mut buf = vec![0u8; CHUNK];
        let mut off = 0u64;
        let mut intact = true;
        let mut first = None;
        while off < total {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            intact &= self.matches(off, &buf[..n]);
            off += n as u64;
        }
        let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
        Ok(Transfer {
            bytes: off,
            secs,
            mib_per_sec: if secs > 0.0 {
                off as f64 / (1024.0 * 1024.0) / secs
            } else {
                0.0
            },
            intact: intact && off == total,
        })
    }

    /// Whether `data` is the stream's bytes at offset `off`.
    fn matches(&self, mut off: u64, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let at = (off % BLOCK as u64) as usize;
            let n = data.len().min(BLOCK - at);
            if data[..n] != self.block[at..at + n] {
                return false;
            }
            data = &data[n..];
            off += n as u64;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_crossing_block_edges_arrives_intact() {
        let p = Pattern::new(7);
        let total = (BLOCK + CHUNK + 123) as u64;
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let q = p.clone();
        let sender = tokio::spawn(async move { q.send(&mut a, total).await });
        let t = p.receive(&mut b, total).await.unwrap();
        sender.await.unwrap().unwrap();
        assert_eq!(t.bytes, total);
        assert!(t.intact);
    }

    #[tokio::test]
    async fn a_flipped_byte_or_a_short_stream_is_caught() {
        let p = Pattern::new(7);
        let mut data = p.block[..1000].to_vec();
        data[999] ^= 1;
        let t = p.receive(&mut &data[..], 1000).await.unwrap();
        assert!(!t.intact);
        let t = p.receive(&mut &p.block[..500], 1000).await.unwrap();
        assert_eq!(t.bytes, 500);
        assert!(!t.intact, "short stream");
        assert_ne!(Pattern::new(8).block[..64], p.block[..64], "seeds differ");
    }

    #[test]
    fn matching_wraps_around_the_block() {
        let p = Pattern::new(1);
        let mut wrap = p.block[BLOCK - 10..].to_vec();
        wrap.extend_from_slice(&p.block[..10]);
        assert!(p.matches((BLOCK - 10) as u64, &wrap));
        assert!(!p.matches(0, &wrap));
    }
}
