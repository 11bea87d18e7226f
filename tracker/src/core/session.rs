//! Per-peer session state, as a pure state machine.
//!
//! A session lives from a peer's first accepted announce until it stops
//! announcing for `ttl` seconds (or says `stopped` for everything). It keeps
//! the counters the peer last reported ([`Reported`]) so the ledger can be
//! fed *deltas*: announce counters are cumulative per peer run. A run
//! starts with the `started` event (counters from zero); a counter that
//! goes down anyway means the peer restarted unannounced, and the new value
//! is taken as the delta from zero.
//!
//! The last reported counters outlive the session: the ledger stores them,
//! and a session that begins with a heartbeat — the tracker restarted, or
//! the peer was silent past the TTL — resumes from them
//! ([`Session::resume`]), so nothing the peer reported is counted twice.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anomos_common::{InfoHash, PeerId};

/// What the peer said about one torrent in one announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TorrentReport {
    /// The torrent.
    pub infohash: InfoHash,
    /// Seeder, or leecher that already has some data.
    pub can_serve: bool,
    /// The peer left this torrent.
    pub stopped: bool,
    /// Cumulative bytes uploaded in this torrent this run.
    pub uploaded: u64,
    /// Cumulative bytes downloaded in this torrent this run.
    pub downloaded: u64,
}

/// One accepted announce, reduced to what the session tracks.
#[derive(Debug, Clone)]
pub struct AnnounceInput {
    /// Tracker clock (Unix seconds).
    pub now: u64,
    /// Link listener address (client IP + announced port).
    pub addr: SocketAddr,
    /// The peer's onion public key.
    pub onion_public: [u8; 32],
    /// Per-torrent reports.
    pub torrents: Vec<TorrentReport>,
    /// Cumulative relayed bytes this run.
    pub relayed: u64,
    /// The peer's run just started (event `started`): counters from zero.
    pub fresh_run: bool,
}

/// The cumulative counters a peer last reported in its current run: where
/// the next announce's deltas start from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reported {
    /// Relayed bytes.
    pub relayed: u64,
    /// Per torrent: uploaded and downloaded bytes.
    pub torrents: BTreeMap<InfoHash, (u64, u64)>,
}

/// Byte deltas for the ratio ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerDelta {
    /// New uploaded bytes.
    pub uploaded: u64,
    /// New downloaded bytes.
    pub downloaded: u64,
    /// New relayed bytes.
    pub relayed: u64,
}

/// What changed with this announce.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionUpdate {
    /// Feed to the ledger.
    pub delta: LedgerDelta,
    /// Relay rate since the previous announce, MiB/s (graph load).
    pub relay_rate: f64,
    /// Torrents the peer is (still) in, with whether it can serve.
    pub active: Vec<(InfoHash, bool)>,
    /// Torrents the peer left.
    pub left: Vec<InfoHash>,
    /// The address or onion key changed (or this is the first announce).
    pub moved: bool,
    /// The counters to remember for the next session, when they changed.
    pub reported: Option<Reported>,
}

/// One registered peer.
#[derive(Debug, Clone)]
pub struct Session {
    peer: PeerId,
    addr: Option<SocketAddr>,
    onion_public: [u8; 32],
    reported: Reported,
    last_seen: u64,
    ttl: u64,
}

/// Counter delta with restart detection.
fn delta(old: u64, new: u64) -> u64 {
    if new >= old {
        new - old
    } else {
        new
    }
}

impl Session {
    /// A fresh session, expiring `ttl` seconds after the last announce.
    pub fn new(peer: PeerId, ttl: u64) -> Self {
        Session::resume(peer, ttl, Reported::default())
    }

    /// A session for a peer whose run may have begun before it: its next
    /// heartbeat's deltas start from `reported` (what the ledger kept).
    pub fn resume(peer: PeerId, ttl: u64, reported: Reported) -> Self {
        Session {
            peer,
            addr: None,
            onion_public: [0; 32],
            reported,
            last_seen: 0,
            ttl,
        }
    }

    /// The peer.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// When the session ends unless the peer announces again.
    pub fn expires_at(&self) -> u64 {
        self.last_seen.saturating_add(self.ttl)
    }

    /// Torrents the peer is in (or was in when it last reported).
    pub fn torrents(&self) -> impl Iterator<Item = &InfoHash> {
        self.reported.torrents.keys()
    }

    /// Apply one accepted announce.
    pub fn apply(&mut self, a: &AnnounceInput) -> SessionUpdate {
        let mut up = SessionUpdate {
            moved: self.addr != Some(a.addr) || self.onion_public != a.onion_public,
            ..Default::default()
        };
        let first = self.addr.is_none();
        let before = std::mem::take(&mut self.reported);
        let base = if a.fresh_run {
            Reported::default()
        } else {
            before.clone()
        };
        let elapsed = a.now.saturating_sub(self.last_seen);
        let relayed = delta(base.relayed, a.relayed);
        up.delta.relayed = relayed;
        if !first && elapsed > 0 {
            up.relay_rate = relayed as f64 / elapsed as f64 / (1024.0 * 1024.0);
        }
        let mut now = Reported {
            relayed: a.relayed,
            // Torrents the peer did not mention keep their base.
            torrents: base.torrents.clone(),
        };
        for t in &a.torrents {
            let (old_up, old_down) = base.torrents.get(&t.infohash).copied().unwrap_or((0, 0));
            up.delta.uploaded = up.delta.uploaded.saturating_add(delta(old_up, t.uploaded));
            up.delta.downloaded = up
                .delta
                .downloaded
                .saturating_add(delta(old_down, t.downloaded));
            if t.stopped {
                now.torrents.remove(&t.infohash);
                up.left.push(t.infohash);
            } else {
                now.torrents.insert(t.infohash, (t.uploaded, t.downloaded));
                up.active.push((t.infohash, t.can_serve));
            }
        }
        if now != before {
            up.reported = Some(now.clone());
        }
        self.reported = now;
        self.addr = Some(a.addr);
        self.onion_public = a.onion_public;
        self.last_seen = a.now;
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(now: u64, up: u64, down: u64, relayed: u64) -> AnnounceInput {
        AnnounceInput {
            now,
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            onion_public: [1; 32],
            torrents: vec![TorrentReport {
                infohash: InfoHash([9; 32]),
                can_serve: true,
                stopped: false,
                uploaded: up,
                downloaded: down,
            }],
            relayed,
            fresh_run: false,
        }
    }

    #[test]
    fn deltas_follow_cumulative_counters() {
        let mut s = Session::new(PeerId([1; 32]), 300);
        let u = s.apply(&input(100, 10, 20, 0));
        assert!(u.moved);
        assert_eq!(
            u.delta,
            LedgerDelta {
                uploaded: 10,
                downloaded: 20,
                relayed: 0
            }
        );
        let u = s.apply(&input(110, 15, 20, 10 * 1024 * 1024));
        assert!(!u.moved);
        assert_eq!(
            u.delta,
            LedgerDelta {
                uploaded: 5,
                downloaded: 0,
                relayed: 10 << 20
            }
        );
        assert!((u.relay_rate - 1.0).abs() < 1e-9);
        assert_eq!(s.expires_at(), 410);
    }

    #[test]
    fn counter_going_down_is_a_peer_restart() {
        let mut s = Session::new(PeerId([1; 32]), 300);
        s.apply(&input(100, 1000, 1000, 1000));
        let u = s.apply(&input(110, 7, 3, 5));
        assert_eq!(
            u.delta,
            LedgerDelta {
                uploaded: 7,
                downloaded: 3,
                relayed: 5
            }
        );
    }

    #[test]
    fn stopped_leaves_the_torrent() {
        let mut s = Session::new(PeerId([1; 32]), 300);
        s.apply(&input(100, 0, 0, 0));
        let mut i = input(101, 0, 0, 0);
        i.torrents[0].stopped = true;
        let u = s.apply(&i);
        assert_eq!(u.left, vec![InfoHash([9; 32])]);
        assert_eq!(s.torrents().count(), 0);
    }

    /// The tracker restarted (or the session expired) in the middle of a
    /// peer's run: the new session resumes from the counters the ledger
    /// kept, so the first heartbeat adds only what is new. A `started`
    /// announce begins a run: its counters count in full.
    #[test]
    fn a_resumed_session_counts_nothing_twice() {
        let mut s = Session::new(PeerId([1; 32]), 300);
        let u = s.apply(&input(100, 10, 20, 30));
        let kept = u.reported.expect("first counters are remembered");
        assert_eq!(kept.relayed, 30);
        assert_eq!(kept.torrents[&InfoHash([9; 32])], (10, 20));
        // Nothing changed: nothing to store.
        assert_eq!(s.apply(&input(101, 10, 20, 30)).reported, None);

        let mut resumed = Session::resume(PeerId([1; 32]), 300, kept.clone());
        let u = resumed.apply(&input(200, 15, 20, 40));
        assert_eq!(
            u.delta,
            LedgerDelta {
                uploaded: 5,
                downloaded: 0,
                relayed: 10
            }
        );
        // Without the kept counters the same heartbeat would count 75 bytes
        // that the ledger already holds.
        let mut blank = Session::new(PeerId([1; 32]), 300);
        assert_eq!(blank.apply(&input(200, 15, 20, 40)).delta.relayed, 40);

        let mut restarted = Session::resume(PeerId([1; 32]), 300, kept);
        let mut fresh = input(300, 15, 20, 40);
        fresh.fresh_run = true;
        assert_eq!(
            restarted.apply(&fresh).delta,
            LedgerDelta {
                uploaded: 15,
                downloaded: 20,
                relayed: 40
            }
        );
    }
}
