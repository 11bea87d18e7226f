//! The data path: the tokio shell around [`RelayCore`].
//!
//! Single-threaded by design (`Rc`, `!Send`): every link's reader and writer
//! task, every endpoint pump and the timer run on the actix system thread
//! and share one `RefCell<RelayCore>` without locks. A reader hands whole
//! batches of cells to the core, which appends forwarded cells to the other
//! link's outbound buffer; the reader then wakes the writers whose buffers
//! grew (one `Notify` per link). Peels (one X25519 each) run inline within
//! a per-thread budget and go to tokio's blocking pool beyond it (see
//! `peel.rs`); either way they come back as [`RelayCore::peel_done`].
//!
//! The Relay actor (`actors::relay`) drives this type for control: it asks
//! for circuits, serves torrents, drops NIDs, reads the accounting and turns
//! data-path events into announces. The per-cell work never goes through a
//! mailbox: set-up and teardown cells are handled inline by the core as they
//! arrive, like DATA.

mod link_io;
mod peel;
mod stream;

#[cfg(test)]
mod tests;

pub use link_io::LinkHandle;
pub use stream::CircuitStream;

use crate::core::relay::{CircKey, CoreConfig, LinkId, Output, RelayCore};
use crate::link::EstablishedLink;
use crate::metrics::Metrics;
use anomos_common::api::CircuitGrant;
use anomos_common::cell::BreakReason;
use anomos_common::crypto::X25519Secret;
use anomos_common::onion::PeelError;
use anomos_common::replay::ReplayCache;
use anomos_common::{InfoHash, Nid, PeerId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};

/// Limits and timers of the data path.
#[derive(Clone, Debug)]
pub struct DataPathConfig {
    /// Credit window W in cells per circuit and direction.
    pub window: u16,
    /// CREATE → open e2e channel must finish within this.
    pub setup_timeout: Duration,
    /// Send PADDING after this long without writing.
    pub keepalive: Duration,
    /// Close a link after this long without reading anything.
    pub idle_timeout: Duration,
    /// Peels in flight at once.
    pub max_pending_peels: usize,
    /// Replay-cache capacity (tags of accepted codes).
    pub replay_capacity: usize,
    /// Live circuits at once.
    pub max_circuits: usize,
    /// TEST ONLY: see `CoreConfig::swallow_creates`.
    pub swallow_creates: bool,
}

impl Default for DataPathConfig {
    fn default() -> Self {
        DataPathConfig {
            window: 256,
            setup_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_pending_peels: 256,
            replay_capacity: 1 << 20,
            max_circuits: 10_000,
            swallow_creates: false,
        }
    }
}

/// What the data path tells the rest of the peer (drives early re-announces).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataPathEvent {
    /// A link ended.
    LinkClosed { nid: Nid, reason: &'static str },
    /// A circuit this peer originated failed (before or after opening), or
    /// a circuit ending here broke (any BREAK but a clean `destroyed`).
    /// Either end re-announces at once. `nids` is always empty here: a
    /// BREAK does not say which link failed, and reporting our healthy
    /// first hop would make the tracker drop it (a link we lost ourselves is
    /// reported by its Neighbor).
    CircuitFailed { nids: Vec<Nid> },
    /// A neighbour crossed the violation limit; its link is being closed.
    Misbehaving { nid: Nid },
}

/// Why `originate` failed.
#[derive(Debug, thiserror::Error)]
pub enum CircuitError {
    /// The grant is unusable (wrong code length, a one-hop path, bad keys).
    #[error("unusable circuit grant: {0}")]
    BadGrant(&'static str),
    /// Our own layer did not peel.
    #[error("own layer did not peel: {0}")]
    Peel(#[from] PeelError),
    /// No free circuit id on the first hop's link, or the table is full.
    #[error("cannot open the circuit: {0}")]
    Originate(#[from] crate::core::relay::OriginateError),
    /// The circuit was broken before it opened.
    #[error("circuit broken: {}", .0.name())]
    Broken(BreakReason),
    /// The end-to-end handshake failed.
    #[error("end-to-end handshake: {0}")]
    Handshake(#[from] anomos_common::e2e::E2eError),
    /// The handshake did not finish within the set-up timeout.
    #[error("circuit set-up timed out")]
    Timeout,
}

impl CircuitError {
    /// Coarse kind for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            CircuitError::BadGrant(_) => "bad_grant",
            CircuitError::Peel(e) => e.kind(),
            CircuitError::Originate(_) => "no_room",
            CircuitError::Broken(r) => r.name(),
            CircuitError::Handshake(e) => e.kind(),
            CircuitError::Timeout => "timeout",
        }
    }
}

/// Per local endpoint: how the core's outputs reach its pump.
#[derive(Debug, Default)]
pub(crate) struct EpIo {
    /// Readable, Confirmed or Closed.
    pub wake: Notify,
    /// Writable or Closed.
    pub writable: Notify,
    pub confirmed: std::cell::Cell<bool>,
    /// We opened the circuit (the originator's end).
    pub originated: std::cell::Cell<bool>,
    /// Set once: the reason and the bodies that arrived before the BREAK.
    pub closed: RefCell<Option<(BreakReason, Vec<u8>)>>,
    /// Why the circuit ended (stays after `closed` is taken).
    pub reason: std::cell::Cell<Option<BreakReason>>,
    /// The open stream's pump, once the handshake is done: arriving records
    /// are opened into the stream's buffer inline, without a task switch.
    pub pump: RefCell<Weak<stream::Pump>>,
}

pub(crate) struct Inner {
    cfg: DataPathConfig,
    metrics: Metrics,
    onion: X25519Secret,
    replay: Arc<Mutex<ReplayCache>>,
    core: RefCell<RelayCore>,
    links: RefCell<HashMap<LinkId, Rc<link_io::LinkIo>>>,
    endpoints: RefCell<HashMap<CircKey, Rc<EpIo>>>,
    served: RefCell<HashMap<InfoHash, mpsc::Sender<CircuitStream>>>,
    events: RefCell<Vec<mpsc::UnboundedSender<DataPathEvent>>>,
}

/// The peer's data path (see module docs). Cheap to clone.
#[derive(Clone)]
pub struct DataPath {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.inner.core.borrow();
        write!(
            f,
            "DataPath(links={}, circuits={})",
            core.link_count(),
            core.circuit_count()
        )
    }
}

/// Unix seconds, for code expiry.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl DataPath {
    /// A data path with no links. Must be called inside a tokio `LocalSet`
    /// (the actix system): it spawns its timer task.
    pub fn new(cfg: DataPathConfig, metrics: Metrics, onion: X25519Secret) -> DataPath {
        // A wait for a link that outlasted the set-up timeout would turn a
        // link not up yet into a silent path (reported to the tracker).
        let link_wait = CoreConfig::default().link_wait.min(cfg.setup_timeout / 2);
        let core_cfg = CoreConfig {
            window: cfg.window.max(2),
            link_wait,
            setup_timeout: cfg.setup_timeout,
            break_timeout: cfg.setup_timeout,
            max_pending_peels: cfg.max_pending_peels,
            max_circuits: cfg.max_circuits,
            swallow_creates: cfg.swallow_creates,
            ..CoreConfig::default()
        };
        let inner = Rc::new(Inner {
            replay: Arc::new(Mutex::new(ReplayCache::new(cfg.replay_capacity))),
            core: RefCell::new(RelayCore::new(core_cfg, metrics.clone())),
            cfg,
            metrics,
            onion,
            links: RefCell::default(),
            endpoints: RefCell::default(),
            served: RefCell::default(),
            events: RefCell::default(),
        });
        tokio::task::spawn_local(timer(Rc::downgrade(&inner)));
        DataPath { inner }
    }

    /// Start reader/writer tasks for a verified link; registers it under its
    /// NID. A NID that already has a link gets a handle that is already
    /// closed (`duplicate_nid`): a second link never replaces the first.
    pub fn attach_link(&self, link: EstablishedLink) -> LinkHandle {
        link_io::attach(&self.inner, link)
    }

    /// The tracker dropped this NID: BREAK its circuits, close the link.
    pub fn drop_nid(&self, nid: Nid) {
        let link = self.inner.core.borrow().link_of(nid);
        if let Some(io) = link.and_then(|l| self.inner.links.borrow().get(&l).cloned()) {
            io.close("dropped");
        }
    }

    /// Originate a circuit from a tracker grant: peel our own layer, CREATE
    /// on the first hop's link, wait for CONFIRM, run the e2e handshake.
    pub async fn originate(&self, grant: CircuitGrant) -> Result<CircuitStream, CircuitError> {
        let start = Instant::now();
        let result = stream::originate(&self.inner, grant).await;
        match &result {
            Ok(_) => {
                self.inner.metrics.circuits_built.inc();
                let secs = start.elapsed().as_secs_f64();
                self.inner.metrics.circuit_setup_seconds.observe(secs);
            }
            // A BREAK was already counted when the core reported `Closed`.
            Err(CircuitError::Broken(_)) => {}
            Err(_) => {
                self.inner.metrics.circuits_failed.inc();
                self.inner
                    .emit(DataPathEvent::CircuitFailed { nids: Vec::new() });
            }
        }
        result
    }

    /// Accept circuits whose exit payload names `infohash`; others are
    /// refused (BREAK). Dropping the receiver stops accepting new ones.
    pub fn serve(&self, infohash: InfoHash) -> mpsc::Receiver<CircuitStream> {
        let (tx, rx) = mpsc::channel(64);
        self.inner.served.borrow_mut().insert(infohash, tx);
        self.inner.core.borrow_mut().set_served(infohash, true);
        rx
    }

    /// Refuse new circuits for `infohash` (open ones stay).
    pub fn unserve(&self, infohash: InfoHash) {
        self.inner.served.borrow_mut().remove(&infohash);
        self.inner.core.borrow_mut().set_served(infohash, false);
    }

    /// A new subscription to link/circuit events.
    pub fn events(&self) -> mpsc::UnboundedReceiver<DataPathEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.events.borrow_mut().push(tx);
        rx
    }

    /// Bytes of DATA cells relayed for others, cumulative.
    pub fn relayed_bytes(&self) -> u64 {
        self.inner.metrics.relay_bytes.get()
    }

    /// The links held, for the announce.
    pub fn links(&self) -> Vec<(Nid, PeerId)> {
        let links = self.inner.links.borrow();
        links.values().map(|l| (l.nid, l.peer)).collect()
    }

    /// Live circuits in the table (relayed and local).
    pub fn circuit_count(&self) -> usize {
        self.inner.core.borrow().circuit_count()
    }

    /// Circuit halves in the table, live or waiting for a BREAK_ACK.
    pub fn half_count(&self) -> usize {
        self.inner.core.borrow().half_count()
    }

    /// BREAK every circuit and wait (at most the set-up timeout) for the
    /// acks, then close every link.
    pub async fn shutdown(&self) {
        self.inner.core.borrow_mut().break_all(Instant::now());
        self.inner.pump();
        let deadline = Instant::now() + self.inner.cfg.setup_timeout;
        while self.half_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let links: Vec<_> = self.inner.links.borrow().values().cloned().collect();
        for l in links {
            l.close("shutdown");
        }
    }
}

impl Inner {
    /// A circuit with an end here was broken by the far side (or on the
    /// way) with `reason`. Unless both ends had sent FIN first (`clean`),
    /// an originated circuit counts as failed, and the originator, or an
    /// exit whose circuit did not end in order, asks the tracker for
    /// repairs at once.
    pub(crate) fn circuit_ended(&self, originated: bool, reason: BreakReason, clean: bool) {
        if clean {
            return;
        }
        if originated {
            self.metrics.circuits_failed.inc();
        }
        if originated || !matches!(reason, BreakReason::None | BreakReason::Destroyed) {
            self.emit(DataPathEvent::CircuitFailed { nids: Vec::new() });
        }
    }

    pub(crate) fn emit(&self, event: DataPathEvent) {
        self.events
            .borrow_mut()
            .retain(|tx| tx.send(event.clone()).is_ok());
    }

    fn endpoint(&self, key: CircKey) -> Option<Rc<EpIo>> {
        self.endpoints.borrow().get(&key).cloned()
    }

    /// Act on every pending core output, then wake the writers whose
    /// buffers grew. Call after every core input.
    pub(crate) fn pump(self: &Rc<Self>) {
        loop {
            let out = self.core.borrow_mut().poll_output();
            let Some(out) = out else { break };
            match out {
                Output::Peel { key, code } => peel::start(self, key, code),
                Output::ExitOpened {
                    key,
                    infohash,
                    secret,
                    credit,
                } => {
                    let ep = Rc::new(EpIo::default());
                    self.endpoints.borrow_mut().insert(key, ep.clone());
                    let me = self.clone();
                    let exit = stream::exit_task(me, key, ep, infohash, secret, credit);
                    tokio::task::spawn_local(exit);
                }
                Output::Confirmed { key } => {
                    if let Some(ep) = self.endpoint(key) {
                        ep.confirmed.set(true);
                        ep.wake.notify_one();
                    }
                }
                Output::Readable { key } => {
                    if let Some(ep) = self.endpoint(key) {
                        let pump = ep.pump.borrow().upgrade();
                        // Before the stream exists, the handshake takes it.
                        if pump.is_none_or(|p| p.fill_down()) {
                            ep.wake.notify_one();
                        }
                    }
                }
                Output::Writable { key } => {
                    if let Some(ep) = self.endpoint(key) {
                        ep.writable.notify_one();
                    }
                }
                Output::Closed {
                    key,
                    reason,
                    leftover,
                    first_nid,
                } => {
                    // An open stream judges the end once it has read what
                    // arrived before the BREAK (both FINs: a clean end);
                    // anything else is judged now.
                    let originated = first_nid.is_some();
                    let ep = self.endpoints.borrow_mut().remove(&key);
                    let streaming = ep
                        .as_ref()
                        .is_some_and(|ep| ep.pump.borrow().upgrade().is_some());
                    if !streaming {
                        self.circuit_ended(originated, reason, false);
                    }
                    if let Some(ep) = ep {
                        ep.reason.set(Some(reason));
                        *ep.closed.borrow_mut() = Some((reason, leftover));
                        ep.wake.notify_one();
                        ep.writable.notify_one();
                    }
                }
                Output::CloseLink { link, reason } => {
                    if let Some(io) = self.links.borrow().get(&link) {
                        io.close(reason);
                    }
                }
                Output::Misbehaving { nid, .. } => self.emit(DataPathEvent::Misbehaving { nid }),
            }
        }
        let mut dirty = Vec::new();
        self.core.borrow_mut().take_dirty(&mut dirty);
        let links = self.links.borrow();
        for link in dirty {
            if let Some(io) = links.get(&link) {
                io.notify.notify_one();
            }
        }
    }
}

/// Drive the core's set-up and BREAK timeouts; ends with the data path.
async fn timer(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        let due = inner.core.borrow().poll_timeout().is_some_and(|t| t <= now);
        if due {
            inner.core.borrow_mut().handle_timeout(now);
            inner.pump();
        }
    }
}
