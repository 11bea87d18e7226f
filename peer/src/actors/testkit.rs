//! Test doubles for the actor tests: a recording [`Plane`], a recorder
//! actor for any message, and a real verified link pair on loopback.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use anomos_common::api::{CircuitGrant, Neighbour};
use anomos_common::identity::PeerIdentity;
use anomos_common::{InfoHash, Nid, PeerId, Pin};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use std::collections::VecDeque;

use anomos_common::api::{AnnounceRequest, AnnounceResponse};

use super::neighbor::{LinkFailed, NeighborDeps};
use super::relay::{DropNid, Relay, RelayReports};
use super::tracker::{Announcer, Tracker, TrackerSettings};
use super::{LinkWatch, LocalFuture, Plane, PlaneEvent};
use crate::error::TrackerError;
use crate::link::EstablishedLink;
use crate::metrics::Metrics;
use crate::net::dial::dial;
use crate::net::listen::{accept_link, AcceptContext};
use crate::net::tls::{link_acceptor, link_connector};
use crate::net::NeighbourTable;

/// What the fake data path was asked to do.
#[derive(Debug, Default)]
pub struct PlaneLog {
    pub attached: Vec<Nid>,
    pub dropped: Vec<Nid>,
    pub served: Vec<InfoHash>,
    pub unserved: Vec<InfoHash>,
    pub shutdowns: u32,
    pub links: Vec<(Nid, PeerId)>,
    pub relayed: u64,
    pub events: Vec<mpsc::UnboundedSender<PlaneEvent>>,
    pub link_handles: Vec<FakeLink>,
    pub serve_tx: Vec<mpsc::Sender<u32>>,
    /// Why `originate` fails (`no_room` when unset).
    pub originate_error: Option<&'static str>,
}

/// A recording data path; circuits never open (`no_room`, or
/// `PlaneLog::originate_error`).
#[derive(Clone, Debug, Default)]
pub struct FakePlane {
    pub log: Rc<RefCell<PlaneLog>>,
}

impl FakePlane {
    /// Push an event to every subscriber.
    pub fn emit(&self, ev: PlaneEvent) {
        for tx in &self.log.borrow().events {
            let _ = tx.send(ev.clone());
        }
    }
}

/// A link handle whose end the test controls.
#[derive(Clone, Debug)]
pub struct FakeLink {
    pub end: Rc<watch::Sender<Option<&'static str>>>,
}

impl FakeLink {
    /// End the link as the data path would.
    pub fn fail(&self, reason: &'static str) {
        self.end.send_replace(Some(reason));
    }
    pub fn is_closed(&self) -> bool {
        self.end.borrow().is_some()
    }
}

impl LinkWatch for FakeLink {
    fn close(&self) {
        if !self.is_closed() {
            self.fail("closed");
        }
    }
    fn closed(&self) -> LocalFuture<&'static str> {
        let mut rx = self.end.subscribe();
        Box::pin(async move {
            let r = rx.wait_for(|r| r.is_some()).await.ok().and_then(|r| *r);
            r.unwrap_or("closed")
        })
    }
}

impl Plane for FakePlane {
    type Link = FakeLink;
    type Stream = u32;
    fn attach_link(&self, link: EstablishedLink) -> FakeLink {
        let l = FakeLink {
            end: Rc::new(watch::channel(None).0),
        };
        let mut log = self.log.borrow_mut();
        log.attached.push(link.nid);
        log.link_handles.push(l.clone());
        l
    }
    fn drop_nid(&self, nid: Nid) {
        self.log.borrow_mut().dropped.push(nid);
    }
    fn originate(&self, _: CircuitGrant) -> LocalFuture<Result<u32, &'static str>> {
        let why = self.log.borrow().originate_error.unwrap_or("no_room");
        Box::pin(async move { Err(why) })
    }
    fn serve(&self, infohash: InfoHash) -> mpsc::Receiver<u32> {
        let (tx, rx) = mpsc::channel(4);
        let mut log = self.log.borrow_mut();
        log.served.push(infohash);
        log.serve_tx.push(tx);
        rx
    }
    fn unserve(&self, infohash: InfoHash) {
        self.log.borrow_mut().unserved.push(infohash);
    }
    fn events(&self) -> mpsc::UnboundedReceiver<PlaneEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.log.borrow_mut().events.push(tx);
        rx
    }
    fn relayed_bytes(&self) -> u64 {
        self.log.borrow().relayed
    }
    fn links(&self) -> Vec<(Nid, PeerId)> {
        self.log.borrow().links.clone()
    }
    fn circuits(&self) -> usize {
        0
    }
    fn shutdown(&self) -> LocalFuture<()> {
        self.log.borrow_mut().shutdowns += 1;
        Box::pin(async {})
    }
}

/// An actor that keeps every `M` it receives.
pub struct Recorder<M> {
    pub got: Rc<RefCell<Vec<M>>>,
}

impl<M: 'static> Actor for Recorder<M> {
    type Context = Context<Self>;
}

impl<M: Message<Result = ()> + 'static> Handler<M> for Recorder<M> {
    type Result = ();
    fn handle(&mut self, m: M, _: &mut Context<Self>) {
        self.got.borrow_mut().push(m);
    }
}

/// Start a recorder; returns its address and its log.
pub fn recorder<M: Message<Result = ()> + 'static>() -> (Addr<Recorder<M>>, Rc<RefCell<Vec<M>>>) {
    let got = Rc::new(RefCell::new(Vec::new()));
    let a = Recorder { got: got.clone() }.start();
    (a, got)
}

/// Poll `cond` every 5 ms for up to `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cond()
}

/// The tracker's entry for a neighbour at `addr` with `pin`.
pub fn entry(nid: u16, addr: std::net::SocketAddr, pin: Pin, dial: bool) -> Neighbour {
    Neighbour {
        nid: Nid(nid),
        addr,
        pin,
        dial,
    }
}

/// A verified link between two fresh identities on loopback, as seen by
/// the side that accepted it. Returns it and the dialer's identity.
pub async fn accepted_link(nid: u16) -> (EstablishedLink, PeerIdentity) {
    let (a, b) = (
        PeerIdentity::generate().unwrap(),
        PeerIdentity::generate().unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut table = BTreeMap::new();
    table.insert(Nid(nid), entry(nid, addr, Pin(a.peer_id().0), false));
    let (_keep, rx) = watch::channel::<NeighbourTable>(Arc::new(table));
    let ctx = AcceptContext {
        acceptor: link_acceptor(&b).unwrap(),
        me: b.peer_id(),
        table: rx,
        on_unknown_nid: Box::new(|_| {}),
        handshake_timeout: Duration::from_secs(5),
        unknown_nid_wait: Duration::from_millis(100),
        metrics: Metrics::new().unwrap(),
    };
    let target = entry(nid, addr, Pin(b.peer_id().0), true);
    let connector = link_connector(&a).unwrap();
    let dialing = dial(&connector, a.peer_id(), &target, Duration::from_secs(5));
    let accepting = async {
        let (tcp, _) = listener.accept().await.unwrap();
        accept_link(&ctx, tcp).await
    };
    let (dialed, accepted) = tokio::join!(dialing, accepting);
    drop(dialed.unwrap());
    (accepted.unwrap(), a)
}

/// One announce the double saw: when, what, and how many data path
/// shutdowns had happened by then (to check the stop order).
#[derive(Debug)]
pub struct Seen {
    pub at: std::time::Instant,
    pub req: AnnounceRequest,
    pub shutdowns_before: u32,
}

/// A recording announcer: answers from `replies` (front first), else with
/// an empty response asking for the next announce in an hour.
#[derive(Clone, Default)]
pub struct FakeAnnouncer {
    pub seen: Rc<RefCell<Vec<Seen>>>,
    pub replies: Rc<RefCell<VecDeque<Result<AnnounceResponse, TrackerError>>>>,
    pub plane: FakePlane,
}

impl Announcer for FakeAnnouncer {
    fn announce(
        &self,
        req: AnnounceRequest,
    ) -> LocalFuture<Result<AnnounceResponse, TrackerError>> {
        let shutdowns_before = self.plane.log.borrow().shutdowns;
        self.seen.borrow_mut().push(Seen {
            at: std::time::Instant::now(),
            req,
            shutdowns_before,
        });
        let reply = self
            .replies
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Ok(idle_response()));
        Box::pin(async move { reply })
    }
}

/// An announce response with nothing in it and an hour until the next.
pub fn idle_response() -> AnnounceResponse {
    AnnounceResponse {
        interval_secs: 3600,
        neighbours: Vec::new(),
        dropped_nids: Vec::new(),
        circuits: Vec::new(),
    }
}

/// Neighbor dependencies on `plane`, reporting to the given recipients.
pub fn neighbor_deps(
    plane: &FakePlane,
    tracker: Recipient<LinkFailed>,
    relay: Recipient<DropNid>,
) -> Rc<NeighborDeps<FakePlane>> {
    let id = PeerIdentity::generate().unwrap();
    Rc::new(NeighborDeps {
        plane: plane.clone(),
        me: id.peer_id(),
        connector: link_connector(&id).unwrap(),
        handshake_timeout: Duration::from_secs(2),
        retry: Duration::from_millis(10),
        retry_max: Duration::from_millis(40),
        failures_reported: 2,
        metrics: Metrics::new().unwrap(),
        tracker,
        relay,
    })
}

/// A Tracker and a Relay actor on `plane`, announcing through `ann`.
pub fn tracker_and_relay(
    plane: &FakePlane,
    ann: &FakeAnnouncer,
) -> (
    Addr<Tracker<FakePlane>>,
    Addr<Relay<FakePlane>>,
    watch::Receiver<NeighbourTable>,
) {
    let ctx = Context::<Tracker<FakePlane>>::new();
    let tracker = ctx.address();
    let reports = RelayReports {
        circuit_failed: tracker.clone().recipient(),
        misbehaved: tracker.clone().recipient(),
        serving: tracker.clone().recipient(),
    };
    let relay = Relay::new(plane.clone(), reports).start();
    let deps = neighbor_deps(
        plane,
        tracker.clone().recipient(),
        relay.clone().recipient(),
    );
    let (table, table_rx) = watch::channel::<NeighbourTable>(Arc::new(BTreeMap::new()));
    let set = TrackerSettings {
        listen_port: 1,
        min_gap: Duration::from_millis(50),
        retry: Duration::from_millis(40),
        retry_max: Duration::from_millis(400),
        reask: Duration::from_millis(40),
    };
    let id = Rc::new(PeerIdentity::generate().unwrap());
    let metrics = Metrics::new().unwrap();
    let actor = Tracker::new(
        Rc::new(ann.clone()),
        id,
        set,
        metrics,
        relay.clone(),
        deps,
        table,
    );
    (ctx.run(actor), relay, table_rx)
}
