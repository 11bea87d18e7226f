//! Restart with the same data dir: the ledger survives and the graph is
//! rebuilt from edges both ends confirm; one-sided claims are dropped.

use std::collections::HashMap;

use anomos_common::api::{HeldLink, PeerEvent, Role};
use anomos_common::{InfoHash, Nid, PeerId};

use crate::util::{edges, get, held, test_config, torrent, TestPeer};

#[actix_rt::test]
async fn restart_keeps_ledger_and_rebuilds_two_sided_edges() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker::run(test_config(dir.path())).await.unwrap();
    let mut peers = Vec::new();
    for _ in 0..6 {
        peers.push(TestPeer::start().await);
    }
    let h = InfoHash([3; 32]);
    let mut views = HashMap::new();
    for round in 0..3 {
        for p in &peers {
            let mut req = p.request(if round == 0 {
                PeerEvent::Started
            } else {
                PeerEvent::Heartbeat
            });
            req.torrents = vec![torrent(h, Role::Leeching, 1000 * (round + 1), 0)];
            req.relayed_bytes = 500 * (round + 1);
            views.insert(p.peer_id(), p.announce(t.api_addr, &req).await);
        }
    }
    let (_, status) = get(t.operator_addr, "/status", Some(&t.admin_token)).await;
    let pin = t.pin;
    t.stop().await.unwrap();

    let t = tracker::run(test_config(dir.path())).await.unwrap();
    assert_eq!(t.pin, pin, "certificate reused");
    let (_, status2) = get(t.operator_addr, "/status", Some(&t.admin_token)).await;
    let board = |s: &str| s.split("leaderboard").nth(1).unwrap().to_owned();
    assert_eq!(
        board(&status),
        board(&status2),
        "ledger survived the restart"
    );
    assert!(board(&status2).contains(" 0.500 0 3000 1500"), "{status2}");

    // Peer 0 also claims a link to peer 5 that peer 5 does not hold.
    let (p0, p5) = (peers[0].peer_id(), peers[5].peer_id());
    let fake = (1..)
        .map(Nid)
        .find(|n| !views[&p0].neighbours.iter().any(|x| x.nid == *n))
        .unwrap();
    let already = views[&p0].neighbours.iter().any(|x| x.pin.0 == p5.0);
    let mut after = HashMap::new();
    for p in &peers {
        let mut req = p.request(PeerEvent::Started);
        req.held_links = held(&views[&p.peer_id()]);
        if p.peer_id() == p0 && !already {
            req.held_links.push(HeldLink {
                nid: fake,
                peer: p5,
            });
        }
        after.insert(p.peer_id(), p.announce(t.api_addr, &req).await);
    }
    // Everyone announces once more to learn what later announcers confirmed.
    for p in &peers {
        let mut req = p.request(PeerEvent::Heartbeat);
        req.held_links = held(&views[&p.peer_id()]);
        after.insert(p.peer_id(), p.announce(t.api_addr, &req).await);
    }
    for p in &peers {
        let old: Vec<(Nid, PeerId)> = edges(&views[&p.peer_id()]);
        let new = edges(&after[&p.peer_id()]);
        for e in &old {
            assert!(new.contains(e), "two-sided edge {e:?} not rebuilt");
        }
    }
    if !already {
        let dropped_or_gone = !edges(&after[&p0]).contains(&(fake, p5));
        assert!(dropped_or_gone, "one-sided claim became an edge");
    }
    t.stop().await.unwrap();
}
