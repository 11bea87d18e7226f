//! What the Tracker actor announces: the signed HTTPS exchange behind the
//! [`Announcer`] seam, and the per-torrent bookkeeping that fills the
//! request (roles, events, circuits still wanted).

use std::collections::BTreeMap;
use std::rc::Rc;

use anomos_common::api::{
    AnnounceRequest, AnnounceResponse, Message, PeerEvent, Role, SignedAnnounce, TorrentAnnounce,
    TorrentEvent,
};
use anomos_common::identity::PeerIdentity;
use anomos_common::InfoHash;
use tokio::sync::mpsc;

use crate::actors::LocalFuture;
use crate::error::TrackerError;
use crate::net::tracker_client::TrackerClient;

/// Sends one announce and returns the tracker's answer. The real one signs
/// and posts over HTTPS; tests substitute a recording double.
pub trait Announcer: 'static {
    /// One exchange.
    fn announce(&self, req: AnnounceRequest)
        -> LocalFuture<Result<AnnounceResponse, TrackerError>>;
}

/// Signed announces over the pinned HTTPS connection.
pub struct HttpsAnnouncer {
    /// Signs the request.
    pub id: Rc<PeerIdentity>,
    /// Keeps the connection between announces; one exchange at a time.
    pub client: Rc<tokio::sync::Mutex<TrackerClient>>,
}

impl std::fmt::Debug for HttpsAnnouncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpsAnnouncer")
    }
}

impl Announcer for HttpsAnnouncer {
    fn announce(
        &self,
        req: AnnounceRequest,
    ) -> LocalFuture<Result<AnnounceResponse, TrackerError>> {
        let body = SignedAnnounce::sign(&self.id, &req).and_then(|s| s.encode());
        let client = self.client.clone();
        Box::pin(async move {
            let body = body.map_err(TrackerError::Api)?;
            client.lock().await.announce(&body).await
        })
    }
}

struct Torrent<S> {
    /// The exit accepts circuits for it.
    serving: bool,
    event: TorrentEvent,
    /// The swarm's counters; `None` until it reports (then a served
    /// torrent counts as complete, a wanted one as not).
    progress: Option<Progress>,
    /// Circuits still to deliver, and how many grants are being opened.
    remaining: u16,
    in_flight: u16,
    deliver: Option<mpsc::Sender<S>>,
}

/// What a swarm reports of one torrent: cumulative bytes of this run and
/// what is still missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Piece bytes sent to others.
    pub uploaded: u64,
    /// Verified piece bytes received.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
}

impl<S> Torrent<S> {
    fn role(&self) -> Role {
        let complete = match self.progress {
            Some(p) => p.left == 0,
            None => self.serving && self.deliver.is_none(),
        };
        if complete {
            Role::Seeding
        } else {
            Role::Leeching
        }
    }
}

/// The torrents this peer announces, by infohash.
pub struct Torrents<S> {
    map: BTreeMap<InfoHash, Torrent<S>>,
}

impl<S> Default for Torrents<S> {
    fn default() -> Self {
        Torrents {
            map: BTreeMap::new(),
        }
    }
}

impl<S> std::fmt::Debug for Torrents<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Torrents({})", self.map.len())
    }
}

impl<S> Torrents<S> {
    fn entry(&mut self, infohash: InfoHash) -> &mut Torrent<S> {
        self.map.entry(infohash).or_insert(Torrent {
            serving: false,
            event: TorrentEvent::Started,
            progress: None,
            remaining: 0,
            in_flight: 0,
            deliver: None,
        })
    }

    /// The exit serves `infohash` now (`serving`) or no longer does.
    pub fn set_seeding(&mut self, infohash: InfoHash, serving: bool) {
        if serving {
            let t = self.entry(infohash);
            t.serving = true;
            if t.event == TorrentEvent::Stopped {
                t.event = TorrentEvent::Started;
            }
        } else if let Some(t) = self.map.get_mut(&infohash) {
            t.serving = false;
            t.event = TorrentEvent::Stopped;
        }
    }

    /// The swarm's latest counters for `infohash` (ignored for a torrent
    /// this peer does not announce).
    pub fn progress(&mut self, infohash: InfoHash, progress: Progress) {
        if let Some(t) = self.map.get_mut(&infohash) {
            let finished = t.progress.is_some_and(|p| p.left > 0) && progress.left == 0;
            if finished && t.event == TorrentEvent::None {
                t.event = TorrentEvent::Completed;
            }
            t.progress = Some(progress);
        }
    }

    /// A download wants `n` more circuits, delivered on `deliver`.
    pub fn want(&mut self, infohash: InfoHash, n: u16, deliver: mpsc::Sender<S>) {
        let t = self.entry(infohash);
        t.remaining = t.remaining.saturating_add(n);
        t.deliver = Some(deliver);
    }

    /// A grant for `infohash` arrived: where to deliver it, if anyone waits.
    pub fn grant(&mut self, infohash: InfoHash) -> Option<mpsc::Sender<S>> {
        let t = self.map.get_mut(&infohash)?;
        let deliver = t.deliver.clone()?;
        t.in_flight = t.in_flight.saturating_add(1);
        Some(deliver)
    }

    /// A grant was opened (`ok`) or failed; whether to ask again early.
    pub fn settled(&mut self, infohash: InfoHash, ok: bool) -> bool {
        let Some(t) = self.map.get_mut(&infohash) else {
            return false;
        };
        t.in_flight = t.in_flight.saturating_sub(1);
        if ok {
            t.remaining = t.remaining.saturating_sub(1);
        }
        !ok && t.remaining > t.in_flight && t.deliver.as_ref().is_some_and(|d| !d.is_closed())
    }

    /// Whether any download still wants circuits beyond the grants being
    /// opened (what the next announce's `circuits_wanted` would ask for).
    pub fn short(&self) -> bool {
        self.announce(PeerEvent::Heartbeat)
            .iter()
            .any(|t| t.circuits_wanted > 0)
    }

    /// The torrents part of a request for `event`.
    pub fn announce(&self, event: PeerEvent) -> Vec<TorrentAnnounce> {
        let map = self.map.iter();
        map.map(|(ih, t)| TorrentAnnounce {
            infohash: *ih,
            role: t.role(),
            event: if event == PeerEvent::Stopped {
                TorrentEvent::Stopped
            } else {
                t.event
            },
            uploaded: t.progress.map_or(0, |p| p.uploaded),
            downloaded: t.progress.map_or(0, |p| p.downloaded),
            left: match (t.progress, t.role()) {
                (Some(p), _) => p.left,
                (None, Role::Seeding) => 0,
                (None, Role::Leeching) => 1,
            },
            circuits_wanted: match (event, t.deliver.as_ref()) {
                (PeerEvent::Stopped, _) | (_, None) => 0,
                (_, Some(d)) if d.is_closed() => 0,
                _ => t.remaining.saturating_sub(t.in_flight),
            },
        })
        .collect()
    }

    /// The tracker took an announce: events are reported, stopped torrents go.
    pub fn announced(&mut self) {
        self.map.retain(|_, t| t.event != TorrentEvent::Stopped);
        for t in self.map.values_mut() {
            t.event = TorrentEvent::None;
        }
    }
}

/// The wall clock as Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(t: &Torrents<()>) -> TorrentAnnounce {
        let mut v = t.announce(PeerEvent::Heartbeat);
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn progress_sets_counters_role_and_completion() {
        let h = InfoHash([7; 32]);
        let mut t: Torrents<()> = Torrents::default();
        let (tx, _rx) = mpsc::channel(1);
        t.want(h, 2, tx);
        t.set_seeding(h, true);
        // Downloading and serving what it has: a leecher until complete.
        assert_eq!(one(&t).role, Role::Leeching);
        assert_eq!(one(&t).left, 1);
        t.announced();
        t.progress(
            h,
            Progress {
                uploaded: 5,
                downloaded: 10,
                left: 90,
            },
        );
        let a = one(&t);
        assert_eq!((a.uploaded, a.downloaded, a.left), (5, 10, 90));
        assert_eq!((a.role, a.event), (Role::Leeching, TorrentEvent::None));
        t.progress(
            h,
            Progress {
                uploaded: 5,
                downloaded: 100,
                left: 0,
            },
        );
        let a = one(&t);
        assert_eq!((a.role, a.event), (Role::Seeding, TorrentEvent::Completed));
        t.announced();
        assert_eq!(one(&t).event, TorrentEvent::None);
    }

    #[test]
    fn short_while_wanted_circuits_are_neither_delivered_nor_opening() {
        let h = InfoHash([6; 32]);
        let mut t: Torrents<()> = Torrents::default();
        t.set_seeding(h, true);
        assert!(!t.short(), "an exit wants nothing");
        let (tx, rx) = mpsc::channel(2);
        t.want(h, 2, tx);
        assert!(t.short());
        assert!(t.grant(h).is_some());
        assert!(t.short(), "one of two is opening");
        assert!(t.grant(h).is_some());
        assert!(!t.short(), "both are opening");
        assert!(t.settled(h, false), "a failed grant is asked for again");
        assert!(t.short());
        assert!(t.grant(h).is_some());
        assert!(!t.settled(h, true));
        assert!(!t.settled(h, true));
        assert!(!t.short(), "both delivered");
        t.want(h, 1, t.map[&h].deliver.clone().unwrap());
        assert!(t.short());
        drop(rx);
        assert!(!t.short(), "nobody takes them any more");
    }

    #[test]
    fn a_served_torrent_without_progress_is_a_seed() {
        let h = InfoHash([8; 32]);
        let mut t: Torrents<()> = Torrents::default();
        t.set_seeding(h, true);
        let a = one(&t);
        assert_eq!(
            (a.role, a.left, a.event),
            (Role::Seeding, 0, TorrentEvent::Started)
        );
        // Progress for a torrent it does not announce is ignored.
        t.progress(InfoHash([9; 32]), Progress::default());
        assert_eq!(t.announce(PeerEvent::Heartbeat).len(), 1);
        t.set_seeding(h, false);
        assert_eq!(one(&t).event, TorrentEvent::Stopped);
        t.announced();
        assert!(t.announce(PeerEvent::Heartbeat).is_empty());
    }
}
