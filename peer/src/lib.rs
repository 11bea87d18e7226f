//! The Anomos peer: relays for others, seeds and downloads through circuits.
//!
//! [`run_peer_with`] wires one peer inside the current actix system: the
//! identity (per tracker, from the data dir or ephemeral), the link
//! listener, the operator listener, and the actors (see [`actors`]): the
//! Tracker actor, the Relay actor that owns the data path for control, and
//! per NID the tracker assigns a Neighbor actor that hands verified links to
//! the data path. `main.rs` only parses the command line and calls it;
//! tests call it in-process on `127.0.0.1:0`.
//!
//! Shutdown order ([`RunningPeer::stop`]): the Tracker actor stops
//! announcing, the Relay actor breaks every circuit, the tracker hears
//! `stopped`, the Neighbor actors close their links, then the listeners end.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod actors;
pub mod app;
pub mod config;
pub mod core;
pub mod datapath;
pub mod error;
pub mod identity_store;
pub mod link;
pub mod metrics;
pub mod net;
pub mod storage;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anomos_common::api::Neighbour;
use anomos_common::crypto::X25519Secret;
use anomos_common::{InfoHash, PeerId};
use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::actors::neighbor::{LinkAccepted, NeighborDeps};
use crate::actors::relay::{Relay, RelayReports, Serve, Unserve};
use crate::actors::swarm::{CircuitInfo, SwarmPeer};
use crate::actors::tracker::{
    BadSource, HttpsAnnouncer, Progress, Stop, TorrentProgress, Tracker, TrackerSettings,
    UnknownNidSeen, WantCircuits,
};
use crate::actors::Plane;
use crate::config::PeerConfig;
use crate::datapath::{CircuitStream, DataPath, DataPathConfig};
use crate::metrics::Metrics;
use crate::net::listen::{spawn_listener, AcceptContext};
use crate::net::tracker_client::{TrackerClient, TrackerUrl};
use crate::net::NeighbourTable;

/// Circuits for a served torrent queued before the application takes them.
const SERVE_QUEUE: usize = 64;

/// A started peer: its identity, where it listens, and its controls.
pub struct RunningPeer<P: Plane> {
    /// Our peer id (the pin of our certificate).
    pub peer_id: PeerId,
    /// The link listener's bound address (the port is announced).
    pub listen_addr: SocketAddr,
    /// The operator listener's bound address, if enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// This peer's metrics.
    pub metrics: Metrics,
    plane: P,
    tracker: Addr<Tracker<P>>,
    relay: Addr<Relay<P>>,
    table: watch::Receiver<NeighbourTable>,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
}

impl<P: Plane> std::fmt::Debug for RunningPeer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunningPeer({:?})", self.peer_id)
    }
}

impl<P: Plane> RunningPeer<P> {
    /// What a Swarm needs of this peer; cheap to clone.
    pub fn handle(&self) -> PeerHandle<P> {
        PeerHandle {
            tracker: self.tracker.clone(),
            relay: self.relay.clone(),
        }
    }

    /// See [`PeerHandle::serve`].
    pub fn serve(&self, infohash: InfoHash) -> mpsc::Receiver<P::Stream> {
        self.handle().serve(infohash)
    }

    /// Stop accepting new circuits for `infohash` (open ones stay); the
    /// next announce reports the torrent stopped.
    pub fn unserve(&self, infohash: InfoHash) {
        self.relay.do_send(Unserve { infohash });
    }

    /// See [`PeerHandle::want_circuits`].
    pub fn want_circuits(&self, infohash: InfoHash, n: u16) -> mpsc::Receiver<P::Stream> {
        self.handle().want_circuits(infohash, n)
    }

    /// See [`PeerHandle::report_progress`].
    pub fn report_progress(&self, infohash: InfoHash, progress: Progress) {
        self.handle().report_progress(infohash, progress);
    }

    /// The neighbour set of the latest announce response.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        self.table.borrow().values().copied().collect()
    }

    /// The data path.
    pub fn plane(&self) -> &P {
        &self.plane
    }

    /// The Relay actor (statistics, serving).
    pub fn relay(&self) -> &Addr<Relay<P>> {
        &self.relay
    }

    /// Break circuits, announce `stopped`, close links and listeners.
    pub async fn stop(self) {
        let _ = self.tracker.send(Stop).await;
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The part of a running peer a torrent's Swarm talks to.
pub struct PeerHandle<P: Plane> {
    tracker: Addr<Tracker<P>>,
    relay: Addr<Relay<P>>,
}

impl<P: Plane> std::fmt::Debug for PeerHandle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerHandle")
    }
}

impl<P: Plane> Clone for PeerHandle<P> {
    fn clone(&self) -> Self {
        PeerHandle {
            tracker: self.tracker.clone(),
            relay: self.relay.clone(),
        }
    }
}

impl<P: Plane> PeerHandle<P> {
    /// Serve `infohash` as an exit: circuits naming it arrive on the
    /// receiver, and announces list the torrent. Dropping the receiver
    /// stops serving it.
    pub fn serve(&self, infohash: InfoHash) -> mpsc::Receiver<P::Stream> {
        let (deliver, rx) = mpsc::channel(SERVE_QUEUE);
        self.relay.do_send(Serve { infohash, deliver });
        rx
    }

    /// Ask the tracker for `n` circuits to sources of `infohash` (announced
    /// with `circuits_wanted`); opened circuits arrive on the receiver.
    /// Circuits that fail to open are asked for again; dropping the
    /// receiver withdraws the demand.
    pub fn want_circuits(&self, infohash: InfoHash, n: u16) -> mpsc::Receiver<P::Stream> {
        let (deliver, rx) = mpsc::channel(usize::from(n.max(1)));
        self.tracker.do_send(WantCircuits {
            infohash,
            n,
            deliver,
        });
        rx
    }

    /// Counters of a torrent this peer serves or downloads, for the next
    /// announce (the tracker's ratio ledger and source selection use them).
    pub fn report_progress(&self, infohash: InfoHash, progress: Progress) {
        self.tracker.do_send(TorrentProgress { infohash, progress });
    }

    /// The source at the far end of the circuit opened from grant `grant`
    /// broke the piece protocol: ask the tracker to plan no more circuits
    /// to it (the next announce, an early one, names the grant).
    pub fn report_bad_source(&self, grant: u64) {
        self.tracker.do_send(BadSource { grant });
    }
}

impl SwarmPeer for PeerHandle<DataPath> {
    type Stream = CircuitStream;
    fn want_circuits(&self, infohash: InfoHash, n: u16) -> mpsc::Receiver<CircuitStream> {
        PeerHandle::want_circuits(self, infohash, n)
    }
    fn serve(&self, infohash: InfoHash) -> mpsc::Receiver<CircuitStream> {
        PeerHandle::serve(self, infohash)
    }
    fn report_progress(&self, infohash: InfoHash, progress: Progress) {
        PeerHandle::report_progress(self, infohash, progress);
    }
    fn report_bad_source(&self, grant: u64) {
        PeerHandle::report_bad_source(self, grant);
    }
}

impl CircuitInfo for CircuitStream {
    fn relays(&self) -> usize {
        self.relays
    }
    fn credit(&self) -> u8 {
        self.credit
    }
    fn grant(&self) -> Option<u64> {
        self.grant
    }
}

/// A peer on the real data path.
pub type Peer = RunningPeer<DataPath>;

/// Start a peer with the default data path. Must run inside an actix system.
pub async fn run_peer(cfg: PeerConfig) -> anyhow::Result<Peer> {
    let idle = Duration::from_millis(cfg.link_idle_timeout_ms);
    let defaults = DataPathConfig::default();
    let dp_cfg = DataPathConfig {
        idle_timeout: idle,
        // Neighbours use the same idle timeout: three keep-alives fit in
        // it, so a quiet link is never taken for a dead one.
        keepalive: defaults.keepalive.min(idle / 3),
        setup_timeout: Duration::from_millis(cfg.circuit_setup_timeout_ms),
        swallow_creates: cfg.test_swallow_creates,
        ..defaults
    };
    run_peer_with(cfg, move |m, onion| DataPath::new(dp_cfg, m, onion)).await
}

/// Start a peer on the data path `make_plane` builds from the metrics and
/// the onion key. Must run inside an actix system.
pub async fn run_peer_with<P, F>(cfg: PeerConfig, make_plane: F) -> anyhow::Result<RunningPeer<P>>
where
    P: Plane,
    F: FnOnce(Metrics, X25519Secret) -> P,
{
    cfg.validate()?;
    let url = TrackerUrl::parse(&cfg.tracker)?;
    let dir = identity_store::identity_dir(&cfg.data_dir, &url);
    let id = identity_store::load_or_create(&dir, cfg.ephemeral)?;
    let id = Rc::new(id);
    let metrics = Metrics::new()?;
    let plane = make_plane(metrics.clone(), id.onion().clone());

    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the link listener on {}", cfg.listen))?;
    let listen_addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    let mut metrics_addr = None;
    if let Some(addr) = cfg.metrics {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics listener on {addr}"))?;
        metrics_addr = Some(l.local_addr()?);
        tasks.push(net::http::spawn_operator(l, metrics.clone()));
    }
    let client = TrackerClient::new(
        url,
        cfg.tracker_pin,
        Duration::from_millis(cfg.tracker_timeout_ms),
    )?;

    // The Tracker and Relay actors name each other: create the Tracker's
    // context first so its address exists before the Relay starts.
    let tracker_ctx = Context::<Tracker<P>>::new();
    let tracker = tracker_ctx.address();
    let relay = Relay::new(
        plane.clone(),
        RelayReports {
            circuit_failed: tracker.clone().recipient(),
            misbehaved: tracker.clone().recipient(),
            serving: tracker.clone().recipient(),
        },
    )
    .start();

    let (table_tx, table_rx) = watch::channel::<NeighbourTable>(Arc::new(BTreeMap::new()));
    let deps = Rc::new(NeighborDeps {
        plane: plane.clone(),
        me: id.peer_id(),
        connector: net::tls::link_connector(&id)?,
        handshake_timeout: cfg.handshake_timeout(),
        retry: Duration::from_millis(cfg.dial_retry_ms),
        retry_max: Duration::from_millis(cfg.dial_retry_max_ms),
        failures_reported: cfg.dial_failures_reported,
        metrics: metrics.clone(),
        tracker: tracker.clone().recipient(),
        relay: relay.clone().recipient(),
    });
    let accept = Rc::new(AcceptContext {
        acceptor: net::tls::link_acceptor(&id)?,
        me: id.peer_id(),
        table: table_rx.clone(),
        on_unknown_nid: {
            let t = tracker.clone();
            // A full mailbox already holds a reason to announce early.
            Box::new(move |nid| {
                let _ = t.try_send(UnknownNidSeen { nid });
            })
        },
        handshake_timeout: cfg.handshake_timeout(),
        unknown_nid_wait: Duration::from_millis(cfg.unknown_nid_wait_ms),
        metrics: metrics.clone(),
    });
    let on_link = {
        let t = tracker.clone();
        Rc::new(move |link| {
            if t.try_send(LinkAccepted { link }).is_err() {
                tracing::warn!("control mailbox full: incoming link closed");
            }
        })
    };
    tasks.push(spawn_listener(listener, accept, on_link));

    let settings = TrackerSettings {
        listen_port: listen_addr.port(),
        min_gap: Duration::from_millis(cfg.min_announce_gap_ms),
        retry: Duration::from_millis(cfg.tracker_retry_ms),
        retry_max: Duration::from_millis(cfg.tracker_retry_max_ms),
        reask: Duration::from_millis(cfg.circuit_reask_ms),
    };
    let announcer = Rc::new(HttpsAnnouncer {
        id: id.clone(),
        client: Rc::new(tokio::sync::Mutex::new(client)),
    });
    let actor = Tracker::new(
        announcer,
        id.clone(),
        settings,
        metrics.clone(),
        relay.clone(),
        deps,
        table_tx,
    );
    tracker_ctx.run(actor);
    Ok(RunningPeer {
        peer_id: id.peer_id(),
        listen_addr,
        metrics_addr,
        metrics,
        plane,
        tracker,
        relay,
        table: table_rx,
        tasks,
    })
}
