//! The Swarm actor: one per torrent. It owns the torrent's sans-IO
//! [`SwarmCore`] and its [`Storage`], turns circuits into conns, and carries
//! out the core's actions: writing messages, reading blocks and checking
//! pieces on the storage pool, closing conns.
//!
//! Circuits come from the peer ([`SwarmPeer`]): downloads ask the tracker
//! for `circuits` of them and ask again for each one that ends before the
//! download is complete; a torrent we can serve takes the circuits whose
//! exit payload names it. The actor publishes a [`SwarmStatus`] on a watch
//! channel (for the progress bar and for tests) and reports its counters
//! for the announce once a second.
//!
//! A storage error is fatal to the torrent: the status carries it and the
//! actor stops, so `anomos get` can exit with that one line.

mod conn;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anomos_common::peerwire::{self, Frame};
use anomos_common::InfoHash;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use self::conn::ConnIo;
pub use self::conn::{ConnEnded, Frames};
use crate::actors::tracker::Progress;
use crate::core::swarm::{reason, Action, ConnId, SwarmConfig, SwarmCore, SwarmStats};
use crate::metrics::Metrics;
use crate::storage::Storage;

/// How often the core ticks and the counters are published (metrics and
/// progress displays read them).
const TICK: Duration = Duration::from_millis(250);

/// What the Swarm actor needs from the peer it runs in.
pub trait SwarmPeer: Unpin + 'static {
    /// One open circuit end.
    type Stream: AsyncRead + AsyncWrite + CircuitInfo + Unpin + 'static;
    /// Ask the tracker for `n` circuits to sources of `infohash`.
    fn want_circuits(&self, infohash: InfoHash, n: u16) -> mpsc::Receiver<Self::Stream>;
    /// Accept circuits for `infohash` as an exit.
    fn serve(&self, infohash: InfoHash) -> mpsc::Receiver<Self::Stream>;
    /// Counters for the next announce.
    fn report_progress(&self, infohash: InfoHash, progress: Progress);
    /// The source on the circuit opened from grant `grant` broke the piece
    /// protocol: the tracker should plan no more circuits to it.
    fn report_bad_source(&self, grant: u64);
}

/// What the actor is told at start.
#[derive(Clone, Debug)]
pub struct SwarmSettings {
    /// The core's tunables.
    pub core: SwarmConfig,
    /// Circuits a download keeps open to sources (0 for a seed).
    pub circuits: u16,
    /// Accept circuits from others from the start (a seed, or a download
    /// that shares what it has).
    pub serve: bool,
}

/// Where a torrent stands, published on every change of note.
#[derive(Clone, Debug, Default)]
pub struct SwarmStatus {
    /// The core's counters.
    pub stats: SwarmStats,
    /// Relays on each circuit we opened that is still open (0 when the
    /// data path does not say).
    pub circuit_relays: Vec<usize>,
    /// `circuit_relays` when the last piece verified (those circuits close
    /// right after, see `both_complete`), for the download's summary.
    pub relays_at_completion: Vec<usize>,
    /// Conns that sent us at least one verified block, ever.
    pub sources: usize,
    /// Circuits opened (ours) and accepted (others'), ever.
    pub opened: u64,
    pub accepted: u64,
    /// When the first block of piece data arrived, for throughput figures
    /// that leave out start-up (announce, circuit set-up).
    pub first_block: Option<Instant>,
    /// Every piece is verified and written.
    pub complete: bool,
    /// A fatal error; the actor has stopped.
    pub error: Option<String>,
}

struct ConnEntry {
    io: ConnIo,
    /// Relays on the circuit if we opened it.
    relays: Option<usize>,
    /// The tracker's grant it was opened from, if we opened it.
    grant: Option<u64>,
}

/// The actor.
pub struct Swarm<P: SwarmPeer> {
    peer: P,
    infohash: InfoHash,
    storage: Storage,
    core: SwarmCore,
    settings: SwarmSettings,
    metrics: Metrics,
    conns: BTreeMap<ConnId, ConnEntry>,
    next_conn: u64,
    /// Circuits asked of the tracker and not yet delivered.
    asked: u16,
    /// The receivers of those asks; dropped once complete, which
    /// withdraws the demand from the next announce.
    wanting: Vec<SpawnHandle>,
    /// Conns that ever delivered verified data.
    sourced: std::collections::BTreeSet<ConnId>,
    status: watch::Sender<SwarmStatus>,
    opened: u64,
    accepted: u64,
    /// Counters already added to the process metrics.
    counted_up: u64,
    counted_down: u64,
    failed: bool,
}

impl<P: SwarmPeer> std::fmt::Debug for Swarm<P> {
    /// Counts only: the infohash and the data stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Swarm({} conns)", self.conns.len())
    }
}

impl<P: SwarmPeer> Swarm<P> {
    /// A Swarm for `infohash` whose storage already holds the pieces in
    /// `core`'s bitfield; the status goes to `status`.
    pub fn new(
        peer: P,
        infohash: InfoHash,
        storage: Storage,
        core: SwarmCore,
        settings: SwarmSettings,
        metrics: Metrics,
        status: watch::Sender<SwarmStatus>,
    ) -> Self {
        Swarm {
            peer,
            infohash,
            storage,
            core,
            settings,
            metrics,
            conns: BTreeMap::new(),
            next_conn: 0,
            asked: 0,
            wanting: Vec::new(),
            sourced: Default::default(),
            status,
            opened: 0,
            accepted: 0,
            counted_up: 0,
            counted_down: 0,
            failed: false,
        }
    }

    fn add_stream(&mut self, stream: P::Stream, relays: Option<usize>, ctx: &mut Context<Self>) {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let (credit, grant) = (stream.credit(), stream.grant());
        let io = ConnIo::spawn(stream, id, self.core.max_message_len(), ctx.address());
        self.conns.insert(id, ConnEntry { io, relays, grant });
        self.core.add_conn(Instant::now(), id, credit);
        self.drive(ctx);
    }

    /// Ask for circuits until `circuits` are open or asked for.
    fn top_up(&mut self, ctx: &mut Context<Self>) {
        if self.core.is_complete() || self.failed {
            return;
        }
        let ours = self.conns.values().filter(|c| c.relays.is_some()).count();
        let have = u16::try_from(ours)
            .unwrap_or(u16::MAX)
            .saturating_add(self.asked);
        let missing = self.settings.circuits.saturating_sub(have);
        if missing > 0 {
            self.asked += missing;
            let rx = self.peer.want_circuits(self.infohash, missing);
            let h = ctx.add_stream(ReceiverStream::new(rx).map(Incoming::Opened));
            self.wanting.push(h);
        }
    }

    /// Carry out every queued action of the core.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        let mut out: BTreeMap<ConnId, Vec<u8>> = BTreeMap::new();
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::SendHandshake { conn, hs } => hs.encode(out.entry(conn).or_default()),
                Action::Send { conn, msg } => msg.encode(out.entry(conn).or_default()),
                Action::ReadBlock {
                    conn,
                    piece,
                    offset,
                    len,
                } => {
                    let storage = self.storage.clone();
                    let read = async move { storage.read_block(piece, offset, len).await };
                    ctx.spawn(read.into_actor(self).map(move |res, act, ctx| match res {
                        Ok(data) => {
                            act.core.block_read(conn, piece, offset, data);
                            act.drive(ctx);
                        }
                        Err(e) => act.fail(format!("reading our own data: {e}"), ctx),
                    }));
                }
                Action::CheckPiece { piece, data } => {
                    let storage = self.storage.clone();
                    let write = async move { storage.write_piece(piece, data).await };
                    ctx.spawn(write.into_actor(self).map(move |res, act, ctx| match res {
                        Ok(ok) => {
                            act.core.piece_checked(Instant::now(), piece, ok);
                            act.drive(ctx);
                        }
                        Err(e) => act.fail(e.to_string(), ctx),
                    }));
                }
                Action::Close { conn, reason } => {
                    out.remove(&conn);
                    self.close(conn, reason, ctx);
                }
                Action::Have { .. } => {}
                Action::Complete => {
                    for h in self.wanting.drain(..) {
                        ctx.cancel_future(h);
                    }
                    self.asked = 0;
                    // The core's `Complete` comes before it closes the
                    // download's circuits (`both_complete`).
                    self.publish();
                    self.status
                        .send_modify(|s| s.relays_at_completion = s.circuit_relays.clone());
                    let storage = self.storage.clone();
                    let sync = async move { storage.sync().await };
                    ctx.spawn(sync.into_actor(self).map(|res, act, ctx| {
                        if let Err(e) = res {
                            act.fail(e.to_string(), ctx);
                        } else {
                            act.status.send_modify(|s| s.complete = true);
                        }
                    }));
                }
            }
        }
        for (conn, bytes) in out {
            if let Some(c) = self.conns.get(&conn) {
                // A writer that ended shows up as its reader's ConnEnded.
                // What waits for the writer is bounded by the reader
                // pausing (`conn::PAUSE_ABOVE`), not here.
                let _ = c.io.send(bytes);
            }
        }
    }

    fn close(&mut self, conn: ConnId, why: &'static str, ctx: &mut Context<Self>) {
        if let Some(c) = self.conns.remove(&conn) {
            let not_a_violation = [reason::IDLE_TIMEOUT, reason::BOTH_COMPLETE];
            if reason::ALL.contains(&why) && !not_a_violation.contains(&why) {
                self.metrics.violation(why);
                // A source that lies or breaks the protocol is not worth
                // another circuit.
                if let Some(grant) = c.grant {
                    self.peer.report_bad_source(grant);
                }
            }
            tracing::debug!(reason = why, "swarm conn closed");
            drop(c);
            self.top_up(ctx);
        }
    }

    fn fail(&mut self, error: String, ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        self.failed = true;
        // The command prints the error as its one last line; a log line
        // here would only say it twice.
        tracing::debug!(%error, "torrent stopped");
        self.publish();
        self.status.send_modify(|s| s.error = Some(error));
        ctx.stop();
    }

    /// Update the status, the process metrics and the tracker's counters.
    fn publish(&mut self) {
        let stats = self.core.stats();
        for c in &stats.per_conn {
            if c.downloaded > 0 {
                self.sourced.insert(c.conn);
            }
        }
        self.metrics
            .uploaded_bytes
            .inc_by(stats.uploaded.saturating_sub(self.counted_up));
        self.metrics
            .downloaded_bytes
            .inc_by(stats.downloaded.saturating_sub(self.counted_down));
        self.counted_up = self.counted_up.max(stats.uploaded);
        self.counted_down = self.counted_down.max(stats.downloaded);
        let layout = self.storage.layout();
        let left = self.core.have().iter_missing().fold(0u64, |acc, p| {
            acc.saturating_add(layout.piece_len(p).map_or(0, u64::from))
        });
        self.peer.report_progress(
            self.infohash,
            Progress {
                uploaded: stats.uploaded,
                downloaded: stats.downloaded,
                left,
            },
        );
        let circuit_relays = self.conns.values().filter_map(|c| c.relays).collect();
        let (sources, opened, accepted) = (self.sourced.len(), self.opened, self.accepted);
        self.status.send_modify(|s| {
            s.stats = stats;
            s.circuit_relays = circuit_relays;
            s.sources = sources;
            s.opened = opened;
            s.accepted = accepted;
        });
    }
}

/// A circuit delivered to the actor.
enum Incoming<S> {
    /// We opened it (download).
    Opened(S),
    /// Someone opened it to us (we serve).
    Accepted(S),
}

impl<P: SwarmPeer> Actor for Swarm<P> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.settings.serve {
            let rx = self.peer.serve(self.infohash);
            ctx.add_stream(ReceiverStream::new(rx).map(Incoming::Accepted));
        }
        self.top_up(ctx);
        ctx.run_interval(TICK, |act, ctx| {
            act.core.tick(Instant::now());
            act.drive(ctx);
            act.publish();
            act.top_up(ctx);
        });
        self.publish();
        if self.core.is_complete() {
            self.status.send_modify(|s| s.complete = true);
        }
    }
}

impl<P: SwarmPeer> StreamHandler<Incoming<P::Stream>> for Swarm<P> {
    fn handle(&mut self, item: Incoming<P::Stream>, ctx: &mut Context<Self>) {
        match item {
            Incoming::Opened(s) => {
                self.asked = self.asked.saturating_sub(1);
                self.opened += 1;
                let relays = s.relays();
                if self.core.is_complete() {
                    return;
                }
                self.add_stream(s, Some(relays), ctx);
            }
            Incoming::Accepted(s) => {
                self.accepted += 1;
                self.add_stream(s, None, ctx);
            }
        }
    }

    /// One receiver ended; the actor goes on with the others.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

/// What the actor may learn of a circuit.
pub trait CircuitInfo {
    /// Relays between the ends (at the originator; 0 if unknown).
    fn relays(&self) -> usize;
    /// The remote's credit tier, 0..=3 (at the exit; 0 if unknown).
    fn credit(&self) -> u8;
    /// The id of the tracker's grant the circuit was opened from (at the
    /// originator; `None` if unknown).
    fn grant(&self) -> Option<u64>;
}

impl<P: SwarmPeer> Handler<Frames> for Swarm<P> {
    type Result = ();
    fn handle(&mut self, m: Frames, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.status.borrow().first_block.is_none()
            && m.frames
                .iter()
                .any(|f| matches!(f, Frame::Message(peerwire::Message::Piece { .. })))
        {
            self.status.send_modify(|s| s.first_block = Some(now));
        }
        for f in m.frames {
            if !self.conns.contains_key(&m.conn) {
                break;
            }
            match f {
                Frame::Handshake(hs) => self.core.handle_handshake(now, m.conn, hs),
                Frame::Message(msg) => self.core.handle(now, m.conn, msg),
            }
        }
        self.drive(ctx);
    }
}

impl<P: SwarmPeer> Handler<ConnEnded> for Swarm<P> {
    type Result = ();
    fn handle(&mut self, m: ConnEnded, ctx: &mut Context<Self>) {
        if self.conns.contains_key(&m.conn) {
            if m.reason == "malformed" {
                self.metrics.violation("swarm_malformed");
            }
            self.core.remove_conn(Instant::now(), m.conn);
            self.conns.remove(&m.conn);
            self.drive(ctx);
            self.top_up(ctx);
        }
    }
}

/// Ask for the latest status (tests).
#[derive(Debug, Message)]
#[rtype(result = "SwarmStatus")]
pub struct GetStatus;

impl<P: SwarmPeer> Handler<GetStatus> for Swarm<P> {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        self.publish();
        MessageResult(self.status.borrow().clone())
    }
}
