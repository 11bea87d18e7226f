//! The I/O of one swarm conn: a reader task that cuts the circuit's byte
//! stream into frames and hands them to the Swarm actor in batches (one
//! actor message per read, not per message), and a writer task that drains
//! everything queued for the circuit into one write.
//!
//! Neither task decides anything: a frame that does not decode ends the
//! reader with a reason, and the actor closes the conn. The reader stops
//! reading while more than [`PAUSE_ABOVE`] bytes wait for the writer, until
//! half of that is left: a remote whose requests come faster than its
//! circuit carries the answers (or that never reads them) is slowed by its
//! own circuit's flow control, and what we queue for it stays bounded.
//! Closing drops the writer's queue sender; the writer then writes what is
//! queued and shuts the stream down (our FIN), so a last `Piece` is not cut
//! off.

use std::cell::Cell;
use std::rc::Rc;

use actix::prelude::*;
use anomos_common::peerwire::{Frame, MessageReader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, Notify};

use crate::core::swarm::ConnId;

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 128 * 1024;

/// Queued bytes above which the reader pauses: the protocol's pipeline of
/// 64 blocks. An honest remote goes past it only when it cancelled blocks
/// already queued (endgame) and asked for others; the answers to requests
/// accepted before the pause (at most 64 blocks, the swarm core's bound)
/// can add as much again.
pub const PAUSE_ABOVE: usize = 64 * 16 * 1024;

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
    backlog: Backlog,
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
        let backlog = Backlog {
            queued: Rc::new(Cell::new(0)),
            drained: Rc::new(Notify::new()),
        };
        actix_rt::spawn(write_loop(wr, queue, backlog.clone()));
        let reader = actix_rt::spawn(read_loop(rd, conn, max_len, to, backlog.clone()));
        ConnIo {
            out,
            backlog,
            reader,
        }
    }

    /// Queue encoded bytes; false once the writer has ended.
    pub fn send(&self, bytes: Vec<u8>) -> bool {
        let n = bytes.len();
        let ok = self.out.send(bytes).is_ok();
        if ok {
            let q = &self.backlog.queued;
            q.set(q.get() + n);
        }
        ok
    }

    /// Bytes queued for the circuit and not yet written: at most about
    /// twice [`PAUSE_ABOVE`] (see there).
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.backlog.queued.get()
    }
}

/// The writer's queue as the actor and both tasks see it.
#[derive(Clone)]
struct Backlog {
    queued: Rc<Cell<usize>>,
    drained: Rc<Notify>,
}

impl Backlog {
    /// Return once the queue is at most `PAUSE_ABOVE`, or, if it was above,
    /// once it fell to half of that.
    async fn room(&self) {
        if self.queued.get() <= PAUSE_ABOVE {
            return;
        }
        while self.queued.get() > PAUSE_ABOVE / 2 {
            self.drained.notified().await;
        }
    }

    fn written(&self, n: usize) {
        let left = self.queued.get().saturating_sub(n);
        self.queued.set(left);
        if left <= PAUSE_ABOVE / 2 {
            self.drained.notify_one();
        }
    }
}

impl Drop for ConnIo {
    /// Stop reading at once; the writer finishes what is queued, then
    /// closes the stream.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop<S, A>(
    mut rd: ReadHalf<S>,
    conn: ConnId,
    max_len: u32,
    to: Addr<A>,
    backlog: Backlog,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
    A: Actor<Context = Context<A>> + Handler<Frames> + Handler<ConnEnded>,
{
    let mut reader = MessageReader::new(max_len);
    let mut buf = vec![0u8; READ_CHUNK];
    let reason = loop {
        backlog.room().await;
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
    backlog: Backlog,
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
        backlog.written(batch.len());
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

    /// A remote that asks faster than its circuit carries the answers (or
    /// never reads them) is not read from while too much waits for it, and
    /// is read again once it took half of that.
    #[actix::test]
    async fn the_reader_pauses_while_too_much_waits_for_the_writer() {
        let sink = Sink::default().start();
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let io = ConnIo::spawn(ours, ConnId(2), 1 << 20, sink.clone());
        let mut hs = Vec::new();
        Handshake::new(InfoHash([3; 32])).encode(&mut hs);
        theirs.write_all(&hs).await.unwrap();
        settle().await;
        assert_eq!(sink.send(Peek).await.unwrap(), (1, None));

        // Answers pile up; the read already waiting still delivers, the
        // next one waits.
        assert!(io.send(vec![7; PAUSE_ABOVE + 1000]));
        let mut msg = Vec::new();
        Message::Interested.encode(&mut msg);
        theirs.write_all(&msg).await.unwrap();
        settle().await;
        assert_eq!(sink.send(Peek).await.unwrap(), (2, None));
        theirs.write_all(&msg).await.unwrap();
        settle().await;
        assert_eq!(
            sink.send(Peek).await.unwrap(),
            (2, None),
            "read while paused"
        );

        // Taking half is not enough to resume; taking the rest is.
        let mut got = vec![0; PAUSE_ABOVE / 2];
        theirs.read_exact(&mut got).await.unwrap();
        settle().await;
        assert!(io.queued() > PAUSE_ABOVE / 2);
        assert_eq!(sink.send(Peek).await.unwrap(), (2, None));
        let mut rest = vec![0; PAUSE_ABOVE / 2 + 1000];
        theirs.read_exact(&mut rest).await.unwrap();
        settle().await;
        assert_eq!(io.queued(), 0);
        assert_eq!(sink.send(Peek).await.unwrap(), (3, None), "not resumed");
    }
}
