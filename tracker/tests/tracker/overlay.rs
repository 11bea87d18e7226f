//! Ten peers over TLS: neighbour sets converge and agree at both ends,
//! failures are propagated and refilled, and circuits are granted.

use std::collections::{HashMap, HashSet};

use anomos_common::api::{AnnounceResponse, PeerEvent, Role};
use anomos_common::onion::{peel, Peeled, TrackingCode};
use anomos_common::replay::ReplayCache;
use anomos_common::{InfoHash, Nid, PeerId};

use crate::util::{edges, held, test_config, torrent, TestPeer};

const H: InfoHash = InfoHash([7; 32]);

/// Every edge is listed at both ends with the same NID, NIDs are unique per
/// peer, exactly one end dials, and degrees are within bounds.
fn assert_consistent(views: &HashMap<PeerId, AnnounceResponse>, min: usize, max: usize) {
    for (p, r) in views {
        let nids: HashSet<Nid> = r.neighbours.iter().map(|n| n.nid).collect();
        assert_eq!(nids.len(), r.neighbours.len(), "NID collision");
        assert!(
            (min..=max).contains(&r.neighbours.len()),
            "degree {}",
            r.neighbours.len()
        );
        for n in &r.neighbours {
            let other = &views[&PeerId(n.pin.0)];
            let back = other
                .neighbours
                .iter()
                .find(|m| m.nid == n.nid && m.pin.0 == p.0);
            let back = back.expect("edge not listed at the other end with the same NID");
            assert_ne!(back.dial, n.dial, "exactly one end dials");
        }
    }
}

/// Announce rounds until nothing changes (each peer reports what it holds).
async fn converge(
    t: &tracker::RunningTracker,
    peers: &[TestPeer],
    views: &mut HashMap<PeerId, AnnounceResponse>,
) {
    for _ in 0..8 {
        let before: HashMap<PeerId, Vec<(Nid, PeerId)>> =
            views.iter().map(|(p, r)| (*p, edges(r))).collect();
        for (i, p) in peers.iter().enumerate() {
            let mut req = p.request(PeerEvent::Heartbeat);
            req.held_links = views.get(&p.peer_id()).map(held).unwrap_or_default();
            let role = if i == 0 {
                Role::Leeching
            } else {
                Role::Seeding
            };
            req.torrents = vec![torrent(H, role, 0, 0)];
            views.insert(p.peer_id(), p.announce(t.api_addr, &req).await);
        }
        let after: HashMap<PeerId, Vec<(Nid, PeerId)>> =
            views.iter().map(|(p, r)| (*p, edges(r))).collect();
        if before == after {
            return;
        }
    }
    panic!("neighbour sets did not converge");
}

#[actix_rt::test]
async fn ten_peers_converge_fail_refill_and_get_circuits() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker::run(test_config(dir.path())).await.unwrap();
    let mut peers = Vec::new();
    for _ in 0..10 {
        peers.push(TestPeer::start().await);
    }
    let mut views = HashMap::new();
    for p in &peers {
        views.insert(
            p.peer_id(),
            p.announce(t.api_addr, &p.request(PeerEvent::Started)).await,
        );
    }
    converge(&t, &peers, &mut views).await;
    assert_consistent(&views, 4, 6);

    // Peer 0 loses a link: the other end is told, both are refilled.
    let lost = views[&peers[0].peer_id()].neighbours[0];
    let mut req = peers[0].request(PeerEvent::Heartbeat);
    req.failed_nids = vec![lost.nid];
    let r0 = peers[0].announce(t.api_addr, &req).await;
    assert!(!r0
        .neighbours
        .iter()
        .any(|n| n.nid == lost.nid && n.pin == lost.pin));
    let other = peers.iter().find(|p| p.peer_id().0 == lost.pin.0).unwrap();
    let ro = other
        .announce(t.api_addr, &other.request(PeerEvent::Heartbeat))
        .await;
    assert!(
        ro.dropped_nids.contains(&lost.nid),
        "other end not told of the failure"
    );
    views.insert(peers[0].peer_id(), r0);
    views.insert(other.peer_id(), ro);
    converge(&t, &peers, &mut views).await;
    assert_consistent(&views, 4, 6);

    // The leecher asks for three circuits to the nine seeders.
    let mut req = peers[0].request(PeerEvent::Heartbeat);
    req.held_links = held(&views[&peers[0].peer_id()]);
    req.torrents = vec![torrent(H, Role::Leeching, 0, 3)];
    let r = peers[0].announce(t.api_addr, &req).await;
    assert!(
        !r.circuits.is_empty() && r.circuits.len() <= 3,
        "{} circuits",
        r.circuits.len()
    );
    let my_nids: HashSet<Nid> = r.neighbours.iter().map(|n| n.nid).collect();
    for c in &r.circuits {
        assert_eq!(c.infohash, H);
        assert!(
            (3..=5).contains(&c.layer_keys.len()),
            "{} layer keys",
            c.layer_keys.len()
        );
        let code = TrackingCode::from_bytes(&c.code).unwrap();
        let mut cache = ReplayCache::new(16);
        match peel(peers[0].id.onion(), &code, tracker::unix_now(), &mut cache).unwrap() {
            Peeled::Relay { next_nid, .. } => assert!(my_nids.contains(&next_nid)),
            other => panic!("originator's layer must be a relay layer: {other:?}"),
        }
    }
    assert_eq!(t.metrics.circuits_planned.get(), r.circuits.len() as u64);
    t.stop().await.unwrap();
}

/// A peer that announces somebody else's listener fails the reachability
/// check: it gets no neighbours and is never handed out.
#[actix_rt::test]
async fn unreachable_or_imposter_peer_is_not_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker::run(test_config(dir.path())).await.unwrap();
    let honest = [TestPeer::start().await, TestPeer::start().await];
    let mut imposter = TestPeer::start().await;
    imposter.port = honest[0].port; // presents honest[0]'s certificate
    let r = imposter
        .announce(t.api_addr, &imposter.request(PeerEvent::Started))
        .await;
    assert!(r.neighbours.is_empty());
    for p in &honest {
        p.announce(t.api_addr, &p.request(PeerEvent::Started)).await;
    }
    for p in &honest {
        let r = p
            .announce(t.api_addr, &p.request(PeerEvent::Heartbeat))
            .await;
        assert_eq!(r.neighbours.len(), 1, "only the other honest peer");
        assert!(r.neighbours.iter().all(|n| n.pin.0 != imposter.peer_id().0));
    }
    t.stop().await.unwrap();
}
