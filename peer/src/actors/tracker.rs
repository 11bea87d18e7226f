//! The TrackerClient actor: periodic and early announces, and applying the
//! answers (neighbour set → Neighbor actors, circuit grants → originate).
//!
//! Announces are spaced at least `min_gap` apart (the tracker rate-limits
//! identities) and follow the interval the tracker returns. An early
//! announce is asked for when a link or circuit fails, when an incoming
//! link names a NID we do not know yet, or when a download wants circuits.
//! An unreachable tracker is retried with exponential back-off and jitter.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use anomos_common::api::{
    AnnounceRequest, AnnounceResponse, HeldLink, Message, Neighbour, PeerEvent, Role,
    SignedAnnounce, TorrentAnnounce, TorrentEvent,
};
use anomos_common::identity::PeerIdentity;
use anomos_common::{InfoHash, Nid};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::neighbor::{self, NeighborDeps, NeighborMsg};
use super::{Plane, PlaneEvent};
use crate::core::backoff::Backoff;
use crate::error::TrackerError;
use crate::link::EstablishedLink;
use crate::metrics::Metrics;
use crate::net::tracker_client::TrackerClient;
use crate::net::NeighbourTable;

/// Messages to the TrackerClient actor.
pub enum TrackerMsg<S> {
    /// Announce as soon as the rate limit allows (unknown incoming NID).
    AnnounceSoon,
    /// A link died or could not be dialled: report the NID, re-announce.
    LinkFailed {
        /// The NID.
        nid: Nid,
    },
    /// The listener verified an incoming link: route it to its Neighbor.
    LinkAccepted(EstablishedLink),
    /// Announce this torrent as seeded (the exit serves it).
    Seed {
        /// The torrent.
        infohash: InfoHash,
    },
    /// Ask for `n` circuits to sources of `infohash`; deliver them on `tx`.
    WantCircuits {
        /// The torrent.
        infohash: InfoHash,
        /// How many circuits.
        n: u16,
        /// Where the opened circuits go.
        tx: mpsc::Sender<S>,
    },
    /// An originated circuit opened (`ok`) or failed.
    CircuitSettled {
        /// The torrent.
        infohash: InfoHash,
        /// Whether it opened.
        ok: bool,
    },
    /// Announce `stopped` and end; answer when done.
    Stop {
        /// Answered after the `stopped` announce (or its failure).
        done: oneshot::Sender<()>,
    },
}

impl<S> std::fmt::Debug for TrackerMsg<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            TrackerMsg::AnnounceSoon => "AnnounceSoon",
            TrackerMsg::LinkFailed { .. } => "LinkFailed",
            TrackerMsg::LinkAccepted(_) => "LinkAccepted",
            TrackerMsg::Seed { .. } => "Seed",
            TrackerMsg::WantCircuits { .. } => "WantCircuits",
            TrackerMsg::CircuitSettled { .. } => "CircuitSettled",
            TrackerMsg::Stop { .. } => "Stop",
        };
        f.write_str(name)
    }
}

/// Settings of the actor.
#[derive(Debug, Clone)]
pub struct TrackerSettings {
    /// The port the link listener actually bound.
    pub listen_port: u16,
    /// Shortest gap between announces.
    pub min_gap: Duration,
    /// Back-off when the tracker is unreachable.
    pub retry: Duration,
    /// Longest back-off.
    pub retry_max: Duration,
}

struct Torrent<S> {
    role: Role,
    event: TorrentEvent,
    /// Circuits still to deliver, and how many grants are being opened.
    remaining: u16,
    in_flight: u16,
    tx: Option<mpsc::Sender<S>>,
}

/// The actor's state.
pub struct TrackerActor<P: Plane> {
    client: TrackerClient,
    id: Rc<PeerIdentity>,
    set: TrackerSettings,
    plane: P,
    metrics: Metrics,
    deps: Rc<NeighborDeps<P>>,
    table: watch::Sender<NeighbourTable>,
    neighbours: HashMap<Nid, (Neighbour, mpsc::UnboundedSender<NeighborMsg>)>,
    failed: BTreeSet<Nid>,
    torrents: BTreeMap<InfoHash, Torrent<P::Stream>>,
    started: bool,
    backoff: Backoff,
    me: mpsc::UnboundedSender<TrackerMsg<P::Stream>>,
}

impl<P: Plane> std::fmt::Debug for TrackerActor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrackerActor({} neighbours)", self.neighbours.len())
    }
}

impl<P: Plane> TrackerActor<P> {
    /// Build the actor; `me` is the sender of its own mailbox.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: TrackerClient,
        id: Rc<PeerIdentity>,
        set: TrackerSettings,
        plane: P,
        metrics: Metrics,
        deps: Rc<NeighborDeps<P>>,
        table: watch::Sender<NeighbourTable>,
        me: mpsc::UnboundedSender<TrackerMsg<P::Stream>>,
    ) -> Self {
        let backoff = Backoff::new(set.retry, set.retry_max);
        TrackerActor {
            client,
            id,
            set,
            plane,
            metrics,
            deps,
            table,
            neighbours: HashMap::new(),
            failed: BTreeSet::new(),
            torrents: BTreeMap::new(),
            started: false,
            backoff,
            me,
        }
    }

    /// The actor loop. Returns after `Stop` (or when every sender is gone).
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<TrackerMsg<P::Stream>>) {
        let mut events = self.plane.events();
        let mut next = Instant::now();
        let mut last: Option<Instant> = None;
        let mut early = false;
        loop {
            let earliest = last.map_or_else(Instant::now, |l| l + self.set.min_gap);
            let wake = if early { earliest } else { next.max(earliest) };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    early = false;
                    last = Some(Instant::now());
                    let event = if self.started { PeerEvent::Heartbeat } else { PeerEvent::Started };
                    next = Instant::now() + self.announce(event).await;
                }
                msg = rx.recv() => match msg {
                    None => break,
                    Some(TrackerMsg::Stop { done }) => {
                        self.stop().await;
                        let _ = done.send(());
                        break;
                    }
                    Some(m) => early |= self.handle(m),
                },
                Some(ev) = events.recv() => early |= self.event(ev),
            }
        }
    }

    /// Handle one message; returns whether an early announce is wanted.
    fn handle(&mut self, m: TrackerMsg<P::Stream>) -> bool {
        match m {
            TrackerMsg::AnnounceSoon => true,
            TrackerMsg::LinkFailed { nid } => {
                self.failed.insert(nid);
                true
            }
            TrackerMsg::LinkAccepted(link) => {
                match self.neighbours.get(&link.nid) {
                    Some((_, tx)) => {
                        let _ = tx.send(NeighborMsg::LinkAccepted(link));
                    }
                    // The table changed between the check and now: drop it.
                    None => drop(link),
                }
                false
            }
            TrackerMsg::Seed { infohash } => {
                self.torrents.entry(infohash).or_insert(Torrent {
                    role: Role::Seeding,
                    event: TorrentEvent::Started,
                    remaining: 0,
                    in_flight: 0,
                    tx: None,
                });
                true
            }
            TrackerMsg::WantCircuits { infohash, n, tx } => {
                let t = self.torrents.entry(infohash).or_insert(Torrent {
                    role: Role::Leeching,
                    event: TorrentEvent::Started,
                    remaining: 0,
                    in_flight: 0,
                    tx: None,
                });
                t.remaining = t.remaining.saturating_add(n);
                t.tx = Some(tx);
                true
            }
            TrackerMsg::CircuitSettled { infohash, ok } => {
                let Some(t) = self.torrents.get_mut(&infohash) else {
                    return false;
                };
                t.in_flight = t.in_flight.saturating_sub(1);
                if ok {
                    t.remaining = t.remaining.saturating_sub(1);
                }
                // A failed circuit is asked for again at once.
                !ok && t.remaining > t.in_flight
            }
            TrackerMsg::Stop { .. } => false,
        }
    }

    fn event(&mut self, ev: PlaneEvent) -> bool {
        match ev {
            // The Neighbor actor sees the close too and reports it.
            PlaneEvent::LinkClosed { .. } => false,
            PlaneEvent::CircuitFailed { nids } => {
                self.failed.extend(nids);
                true
            }
            PlaneEvent::Misbehaving { nid } => {
                self.failed.insert(nid);
                true
            }
        }
    }

    fn request(&mut self, event: PeerEvent) -> AnnounceRequest {
        let torrents = self
            .torrents
            .iter()
            .map(|(ih, t)| TorrentAnnounce {
                infohash: *ih,
                role: t.role,
                event: if event == PeerEvent::Stopped {
                    TorrentEvent::Stopped
                } else {
                    t.event
                },
                uploaded: 0,
                downloaded: 0,
                left: if t.role == Role::Seeding { 0 } else { 1 },
                circuits_wanted: match (event, t.tx.as_ref()) {
                    (PeerEvent::Stopped, _) | (_, None) => 0,
                    (_, Some(tx)) if tx.is_closed() => 0,
                    _ => t.remaining.saturating_sub(t.in_flight),
                },
            })
            .collect();
        AnnounceRequest {
            peer_id: self.id.peer_id(),
            timestamp: unix_now(),
            nonce: rand::random(),
            onion_public: self.id.onion_public(),
            listen_port: self.set.listen_port,
            listen_ip: None,
            event,
            torrents,
            relayed_bytes: self.plane.relayed_bytes(),
            failed_nids: self.failed.iter().copied().collect(),
            held_links: self
                .plane
                .links()
                .into_iter()
                .map(|(nid, peer)| HeldLink { nid, peer })
                .collect(),
        }
    }

    /// One announce; returns the delay until the next regular one.
    async fn announce(&mut self, event: PeerEvent) -> Duration {
        let req = self.request(event);
        let res = match SignedAnnounce::sign(&self.id, &req).and_then(|s| s.encode()) {
            Ok(body) => self.client.announce(&body).await,
            Err(e) => Err(TrackerError::Api(e)),
        };
        match res {
            Ok(resp) => {
                self.metrics.announces.with_label_values(&["ok"]).inc();
                self.backoff.reset();
                self.started = true;
                for nid in &req.failed_nids {
                    self.failed.remove(nid);
                }
                for t in self.torrents.values_mut() {
                    t.event = TorrentEvent::None;
                }
                let interval = Duration::from_secs(u64::from(resp.interval_secs).max(1));
                self.apply(resp);
                interval
            }
            Err(e) => {
                self.metrics.announces.with_label_values(&[e.kind()]).inc();
                tracing::warn!(error = %e, "announce failed");
                self.backoff.fail(&mut rand::rng())
            }
        }
    }

    /// Apply the tracker's view: dropped NIDs first, then the full set.
    fn apply(&mut self, resp: AnnounceResponse) {
        for nid in &resp.dropped_nids {
            // Dropping the sender ends the actor, which drops the NID.
            self.neighbours.remove(nid);
        }
        let listed: BTreeMap<Nid, Neighbour> =
            resp.neighbours.iter().map(|n| (n.nid, *n)).collect();
        self.neighbours.retain(|nid, (old, _)| {
            listed
                .get(nid)
                .is_some_and(|n| n.pin == old.pin && n.addr == old.addr)
        });
        for n in listed.values() {
            match self.neighbours.get_mut(&n.nid) {
                Some((old, tx)) => {
                    *old = *n;
                    let _ = tx.send(NeighborMsg::Listed(*n));
                }
                None => {
                    let tx = neighbor::spawn(self.deps.clone(), *n);
                    self.neighbours.insert(n.nid, (*n, tx));
                }
            }
        }
        self.table.send_replace(Arc::new(listed));
        for grant in resp.circuits {
            let infohash = grant.infohash;
            let Some(t) = self.torrents.get_mut(&infohash) else {
                continue;
            };
            t.in_flight = t.in_flight.saturating_add(1);
            let (plane, me, tx) = (self.plane.clone(), self.me.clone(), t.tx.clone());
            actix_rt::spawn(async move {
                let opened = plane.originate(grant).await;
                let ok = match (opened, tx) {
                    (Ok(stream), Some(tx)) => tx.send(stream).await.is_ok(),
                    (Ok(_), None) => false,
                    (Err(why), _) => {
                        tracing::info!(why, "circuit failed to open");
                        false
                    }
                };
                let _ = me.send(TrackerMsg::CircuitSettled { infohash, ok });
            });
        }
    }

    /// Break circuits, announce `stopped`, close links.
    async fn stop(&mut self) {
        self.plane.shutdown().await;
        let _ = self.announce(PeerEvent::Stopped).await;
        self.neighbours.clear();
        self.table.send_replace(Arc::new(BTreeMap::new()));
    }
}

/// The wall clock as Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
