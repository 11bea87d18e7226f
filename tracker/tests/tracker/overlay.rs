//! Ten peers over TLS: neighbour sets converge and agree at both ends,
//! failures are propagated and refilled, and circuits are granted.

use std::collections::{HashMap, HashSet};

use anomos_common::api::{AnnounceResponse, CircuitGrant, PeerEvent, Role};
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

/// Ten peers that started and announced until their neighbour sets
/// settled: peer 0 downloads `H`, the other nine seed it.
async fn ten_peers(
    t: &tracker::RunningTracker,
) -> (Vec<TestPeer>, HashMap<PeerId, AnnounceResponse>) {
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
    converge(t, &peers, &mut views).await;
    (peers, views)
}

#[actix_rt::test]
async fn ten_peers_converge_fail_refill_and_get_circuits() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker::run(test_config(dir.path())).await.unwrap();
    let (peers, mut views) = ten_peers(&t).await;
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

/// Where a grant leads: every hop peels its layer with its own key.
fn source_of(
    grant: &CircuitGrant,
    origin: &TestPeer,
    peers: &[TestPeer],
    views: &HashMap<PeerId, AnnounceResponse>,
) -> PeerId {
    let mut at = origin;
    let mut code = TrackingCode::from_bytes(&grant.code).unwrap();
    let mut cache = ReplayCache::new(16);
    loop {
        match peel(at.id.onion(), &code, tracker::unix_now(), &mut cache).unwrap() {
            Peeled::Relay {
                next_nid,
                next_code,
                ..
            } => {
                let n = views[&at.peer_id()]
                    .neighbours
                    .iter()
                    .find(|n| n.nid == next_nid);
                let pin = n.expect("the path follows our edges").pin;
                at = peers.iter().find(|p| p.peer_id().0 == pin.0).unwrap();
                code = next_code;
            }
            Peeled::Exit { .. } => return at.peer_id(),
        }
    }
}

/// A downloader that reports a grant's source as bad gets no more
/// circuits to that source; other downloaders still do, and reports of
/// grants that are not the reporter's own count for nothing.
#[actix_rt::test]
async fn a_source_reported_bad_gets_no_more_circuits_from_its_reporter() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker::run(test_config(dir.path())).await.unwrap();
    let (peers, views) = ten_peers(&t).await;
    let ask = |p: &TestPeer, role: Role, bad: Vec<u64>| {
        let mut req = p.request(PeerEvent::Heartbeat);
        req.held_links = held(&views[&p.peer_id()]);
        req.torrents = vec![torrent(H, role, 0, 3)];
        req.bad_sources = bad;
        req
    };

    // Peer 0 gets a circuit and reports its source.
    let r = peers[0]
        .announce(t.api_addr, &ask(&peers[0], Role::Leeching, vec![]))
        .await;
    let grant = r.circuits.first().expect("no circuit granted");
    let liar = source_of(grant, &peers[0], &peers, &views);
    let r = peers[0]
        .announce(t.api_addr, &ask(&peers[0], Role::Leeching, vec![grant.id]))
        .await;
    assert_eq!(t.metrics.bad_sources.get(), 1);
    // Fifteen rounds of three circuits to nine sources: without the report
    // the liar would be among them all but ~0.2 % of the time.
    let mut planned = r.circuits.clone();
    for _ in 0..15 {
        let r = peers[0]
            .announce(t.api_addr, &ask(&peers[0], Role::Leeching, vec![]))
            .await;
        planned.extend(r.circuits);
    }
    assert!(
        planned.len() >= 30,
        "only {} circuits planned",
        planned.len()
    );
    for c in &planned {
        assert_ne!(source_of(c, &peers[0], &peers, &views), liar);
    }

    // Another downloader still reaches it, and cannot report peer 0's
    // grants; peer 0 cannot report the same grant twice.
    let other = peers
        .iter()
        .find(|p| p.peer_id() != liar && p.peer_id() != peers[0].peer_id());
    let other = other.unwrap();
    let mut reached = false;
    for _ in 0..15 {
        let stolen = planned.iter().map(|c| c.id).collect();
        let r = other
            .announce(t.api_addr, &ask(other, Role::Seeding, stolen))
            .await;
        reached |= r
            .circuits
            .iter()
            .any(|c| source_of(c, other, &peers, &views) == liar);
    }
    assert!(reached, "the liar is avoided for everybody");
    peers[0]
        .announce(t.api_addr, &ask(&peers[0], Role::Leeching, vec![grant.id]))
        .await;
    assert_eq!(
        t.metrics.bad_sources.get(),
        1,
        "a report counted twice or stolen"
    );
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
