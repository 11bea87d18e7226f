//! Simulated peers: identities generated up front, and their signed
//! announces.
//!
//! A simulated peer is only what the tracker can see of a peer: an Ed25519
//! certificate identity, an onion key, a listen port and the torrent it is
//! in. Generating 100,000 identities (a self-signed certificate each) takes
//! seconds, so it runs on every core before anything is timed.
//!
//! Signing is client work that competes with the tracker for the same
//! cores; [`sign_many`] lets the caller do it before the timed phase.

use std::sync::atomic::{AtomicUsize, Ordering};

use anomos_common::api::{
    AnnounceRequest, Message, PeerEvent, Role, SignedAnnounce, TorrentAnnounce, TorrentEvent,
};
use anomos_common::identity::PeerIdentity;
use anomos_common::InfoHash;
use anyhow::Context as _;

/// One simulated peer.
#[derive(Debug)]
pub struct SimPeer {
    /// Its certificate and onion key.
    pub id: PeerIdentity,
    /// The torrent it announces.
    pub torrent: InfoHash,
    /// Seeds serve; the others leech.
    pub seeding: bool,
}

/// How the simulated peers look on the wire.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// Number of distinct torrents the peers are spread over.
    pub torrents: usize,
    /// The announced link port. The load tester points it at a closed port,
    /// so the tracker's reachability dial is refused at once.
    pub listen_port: u16,
}

/// The infohash of torrent number `i` (deterministic, so runs compare).
pub fn infohash(i: usize) -> InfoHash {
    let mut h = [0u8; 32];
    h[..8].copy_from_slice(&(i as u64).to_be_bytes());
    h[31] = 0xA5;
    InfoHash(h)
}

/// Generate `n` peers on `threads` threads. Peer `i` is in torrent
/// `i % torrents` and every third peer seeds, so each swarm has servers.
pub fn generate(n: usize, threads: usize, cfg: SimConfig) -> anyhow::Result<Vec<SimPeer>> {
    let torrents = cfg.torrents.max(1);
    parallel(n, threads, |i| {
        let id = PeerIdentity::generate().context("generating a peer identity")?;
        Ok(SimPeer {
            id,
            torrent: infohash(i % torrents),
            seeding: i % 3 == 0,
        })
    })
}

impl SimPeer {
    /// The announce a peer sends: `Started` registers it and its torrent,
    /// `Heartbeat` is the periodic re-announce. No circuits are asked for.
    pub fn request(
        &self,
        cfg: &SimConfig,
        event: PeerEvent,
        timestamp: u64,
        nonce: [u8; 16],
    ) -> AnnounceRequest {
        let torrent_event = match event {
            PeerEvent::Started => TorrentEvent::Started,
            PeerEvent::Stopped => TorrentEvent::Stopped,
            PeerEvent::Heartbeat => TorrentEvent::None,
        };
        AnnounceRequest {
            peer_id: self.id.peer_id(),
            timestamp,
            nonce,
            onion_public: self.id.onion_public(),
            listen_port: cfg.listen_port,
            listen_ip: None,
            event,
            torrents: vec![TorrentAnnounce {
                infohash: self.torrent,
                role: if self.seeding {
                    Role::Seeding
                } else {
                    Role::Leeching
                },
                event: torrent_event,
                uploaded: 0,
                downloaded: 0,
                left: if self.seeding { 0 } else { 1 << 20 },
                circuits_wanted: 0,
            }],
            relayed_bytes: 0,
            failed_nids: Vec::new(),
            held_links: Vec::new(),
            failed_circuits: Vec::new(),
            bad_sources: Vec::new(),
        }
    }

    /// A signed, encoded announce body with a fresh random nonce.
    pub fn signed(
        &self,
        cfg: &SimConfig,
        event: PeerEvent,
        timestamp: u64,
    ) -> anyhow::Result<Vec<u8>> {
        let req = self.request(cfg, event, timestamp, rand::random());
        Ok(SignedAnnounce::sign(&self.id, &req)?.encode()?)
    }
}

/// Sign `count` heartbeats round-robin over `peers` (entry `k` belongs to
/// peer `k % peers.len()`), all with `timestamp`, on `threads` threads.
pub fn sign_many(
    peers: &[SimPeer],
    cfg: &SimConfig,
    count: usize,
    timestamp: u64,
    threads: usize,
) -> anyhow::Result<Vec<Vec<u8>>> {
    if peers.is_empty() {
        return Ok(Vec::new());
    }
    parallel(count, threads, |k| {
        peers[k % peers.len()].signed(cfg, PeerEvent::Heartbeat, timestamp)
    })
}

/// Run `f(0..n)` on `threads` scoped threads, results in index order.
fn parallel<T: Send>(
    n: usize,
    threads: usize,
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    const CHUNK: usize = 256;
    let parts: Vec<anyhow::Result<Vec<(usize, T)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= n {
                            return Ok(out);
                        }
                        for i in start..(start + CHUNK).min(n) {
                            out.push((i, f(i)?));
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("worker panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for p in parts {
        all.extend(p?);
    }
    all.sort_unstable_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_and_signed_heartbeats_verify() {
        let cfg = SimConfig {
            torrents: 2,
            listen_port: 9,
        };
        let peers = generate(5, 2, cfg).unwrap();
        assert_eq!(peers.len(), 5);
        assert_eq!(peers[2].torrent, infohash(0));
        assert_ne!(peers[1].torrent, peers[2].torrent);
        assert!(peers[0].seeding && !peers[1].seeding);
        let bodies = sign_many(&peers, &cfg, 7, 1_000, 3).unwrap();
        assert_eq!(bodies.len(), 7);
        for (k, b) in bodies.iter().enumerate() {
            let (who, req) = SignedAnnounce::decode(b)
                .unwrap()
                .verify(1_000, 10)
                .unwrap();
            assert_eq!(who, peers[k % 5].id.peer_id());
            assert_eq!(req.event, PeerEvent::Heartbeat);
            assert_eq!(req.torrents[0].circuits_wanted, 0);
        }
        assert_ne!(bodies[0], bodies[5], "fresh nonce per announce");
    }
}
