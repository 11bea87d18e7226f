//! The I/O of one swarm conn: a reader task that cuts the circuit's byte
//! stream into frames and hands them to the Swarm actor in batches (one
//! actor message per read, not per message), and a writer task that drains
//! everything queued for the circuit into one write.
//!
//! Neither task decides anything: a frame that does not decode ends the
//! reader with a reason, and the actor closes the conn. Closing drops the
//! writer's queue sender; the writer then writes what is queued and shuts
//! the stream down (our FIN), so a last `Piece` is not cut off.

use actix::prelude::*;
use anomos_common::peerwire::{Frame, MessageReader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::core::swarm::ConnId;

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 128 * 1024;

/// Frames that arrived on a conn, in order.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Frames {
    /// The conn.
    pub conn: ConnId,
    /// What arrived.
    pub frames: Vec<Frame>,
}

/// The reader of a conn ended: the remote closed (`"eof"`), the circuit
/// broke, or the bytes did not decode.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnEnded {
    /// The conn.
    pub conn: ConnId,
    /// A fixed reason.
    pub reason: &'static str,
}

/// The actor's side of a conn's I/O.
pub struct ConnIo {
    /// Encoded bytes to write, in order.
    out: mpsc::UnboundedSender<Vec<u8>>,
    reader: actix_rt::task::JoinHandle<()>,
}

impl ConnIo {
    /// Start the two tasks of `stream`; frames and the end go to `to`.
    pub fn spawn<S, A>(stream: S, conn: ConnId, max_len: u32, to: Addr<A>) -> ConnIo
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
        A: Actor<Context = Context<A>> + Handler<Frames> + Handler<ConnEnded>,
    {
        let (rd, wr) = tokio::io::split(stream);
        let (out, queue) = mpsc::unbounded_channel();
        actix_rt::spawn(write_loop(wr, queue));
        let reader = actix_rt::spawn(read_loop(rd, conn, max_len, to));
        ConnIo { out, reader }
    }

    /// Queue encoded bytes; false once the writer has ended.
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        self.out.send(bytes).is_ok()
    }
}

impl Drop for ConnIo {
    /// Stop reading at once; the writer finishes what is queued, then
    /// closes the stream.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop<S, A>(mut rd: ReadHalf<S>, conn: ConnId, max_len: u32, to: Addr<A>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    A: Actor<Context = Context<A>> + Handler<Frames> + Handler<ConnEnded>,
{
    let mut reader = MessageReader::new(max_len);
    let mut buf = vec![0u8; READ_CHUNK];
    let reason = loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) => break "eof",
            Ok(n) => n,
            Err(_) => break "broken",
        };
        reader.push(&buf[..n]);
        let mut frames = Vec::new();
        let failed = loop {
            match reader.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        if !frames.is_empty() {
            to.do_send(Frames { conn, frames });
        }
        if failed {
            break "malformed";
        }
    };
    to.do_send(ConnEnded { conn, reason });
}

async fn write_loop<S>(mut wr: WriteHalf<S>, mut queue: mpsc::UnboundedReceiver<Vec<u8>>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    while let Some(mut batch) = queue.recv().await {
        // Everything already queued goes out in one write.
        while let Ok(more) = queue.try_recv() {
            batch.extend_from_slice(&more);
        }
        if wr.write_all(&batch).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
