//! The I/O of one swarm conn: a reader task that cuts the circuit's byte
//! stream into frames and hands them to the Swarm actor in batches (one
//! actor message per read, not per message), and a writer task that drains
//! everything queued for the circuit into one write.
//!
//! Neither task decides anything: a frame that does not decode ends the
//! reader with a reason, and the actor closes the conn. Closing drops the
//! writer's queue sender; the writer then writes what is queued and shuts
//! the stream down (our FIN), so a last `Piece` is not cut off.

use std::cell::Cell;
use std::rc::Rc;

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
    /// Bytes handed to the writer and not yet written (the writer runs on
    /// the same thread).
    queued: Rc<Cell<usize>>,
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
        let queued = Rc::new(Cell::new(0));
        actix_rt::spawn(write_loop(wr, queue, queued.clone()));
        let reader = actix_rt::spawn(read_loop(rd, conn, max_len, to));
        ConnIo {
            out,
            queued,
            reader,
        }
    }

    /// Queue encoded bytes; false once the writer has ended.
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        let n = bytes.len();
        let ok = self.out.send(bytes).is_ok();
        if ok {
            self.queued.set(self.queued.get() + n);
        }
        ok
    }

    /// Bytes queued for the circuit and not yet written. Pieces are only
    /// sent in answer to requests, and an honest remote keeps at most its
    /// pipeline of requests open, so this stays small unless the remote
    /// asks and does not read.
    pub fn queued(&self) -> usize {
        self.queued.get()
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

async fn write_loop<S>(
    mut wr: WriteHalf<S>,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Rc<Cell<usize>>,
) where
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
        queued.set(queued.get().saturating_sub(batch.len()));
    }
    let _ = wr.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use anomos_common::peerwire::{Handshake, Message};
    use anomos_common::InfoHash;
    use tokio::io::AsyncReadExt;

    /// Records what the reader task delivers.
    #[derive(Default)]
    struct Sink {
        frames: Vec<Frame>,
        ended: Option<&'static str>,
    }
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Frames> for Sink {
        type Result = ();
        fn handle(&mut self, m: Frames, _: &mut Context<Self>) {
            self.frames.extend(m.frames);
        }
    }
    impl Handler<ConnEnded> for Sink {
        type Result = ();
        fn handle(&mut self, m: ConnEnded, _: &mut Context<Self>) {
            self.ended = Some(m.reason);
        }
    }
    #[derive(Message)]
    #[rtype(result = "(usize, Option<&'static str>)")]
    struct Peek;
    impl Handler<Peek> for Sink {
        type Result = MessageResult<Peek>;
        fn handle(&mut self, _: Peek, _: &mut Context<Self>) -> Self::Result {
            MessageResult((self.frames.len(), self.ended))
        }
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[actix::test]
    async fn frames_arrive_in_order_and_queued_bytes_drain_as_written() {
        let sink = Sink::default().start();
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let io = ConnIo::spawn(ours, ConnId(1), 1 << 20, sink.clone());

        // The remote's bytes: a handshake, two messages, then garbage.
        let mut bytes = Vec::new();
        Handshake::new(InfoHash([3; 32])).encode(&mut bytes);
        Message::Interested.encode(&mut bytes);
        Message::Have { piece: 9 }.encode(&mut bytes);
        theirs.write_all(&bytes).await.unwrap();
        settle().await;
        assert_eq!(sink.send(Peek).await.unwrap(), (3, None));
        theirs.write_all(&[0, 0, 0, 1, 0xee]).await.unwrap();
        settle().await;
        assert_eq!(sink.send(Peek).await.unwrap(), (3, Some("malformed")));

        // 300 kB queued against a 1 KiB pipe nobody reads: all of it waits.
        for _ in 0..3 {
            assert!(io.send(vec![7; 100_000]));
        }
        settle().await;
        assert!(io.queued() > 290_000, "{}", io.queued());
        let mut got = vec![0; 300_000];
        theirs.read_exact(&mut got).await.unwrap();
        settle().await;
        assert_eq!(io.queued(), 0);
        assert!(got.iter().all(|b| *b == 7));

        // Dropping our side: what is queued is written, then EOF.
        assert!(io.send(vec![1, 2, 3]));
        drop(io);
        let mut rest = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            theirs.read_to_end(&mut rest),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(rest, [1, 2, 3]);
    }
}
