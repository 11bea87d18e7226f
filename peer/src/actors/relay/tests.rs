//! Relay actor: data path events become Tracker messages (and an early
//! re-announce), serving is forwarded and reported, statistics and
//! shutdown reach the data path.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use anomos_common::{InfoHash, Nid, PeerId};
use tokio::sync::mpsc;

use super::*;
use crate::actors::testkit::{eventually, recorder, tracker_and_relay, FakeAnnouncer, FakePlane};

const H: InfoHash = InfoHash([5; 32]);

type Log<M> = Rc<RefCell<Vec<M>>>;

fn reports() -> (
    RelayReports,
    Log<CircuitFailed>,
    Log<NeighbourMisbehaved>,
    Log<ServingChanged>,
) {
    let (c, cl) = recorder::<CircuitFailed>();
    let (m, ml) = recorder::<NeighbourMisbehaved>();
    let (s, sl) = recorder::<ServingChanged>();
    let r = RelayReports {
        circuit_failed: c.recipient(),
        misbehaved: m.recipient(),
        serving: s.recipient(),
    };
    (r, cl, ml, sl)
}

#[actix::test]
async fn data_path_events_become_tracker_messages() {
    let plane = FakePlane::default();
    let (r, circuits, misbehaved, _) = reports();
    let _relay = Relay::new(plane.clone(), r).start();
    tokio::task::yield_now().await;
    plane.emit(PlaneEvent::LinkClosed {
        nid: Nid(1),
        reason: "idle_timeout",
    });
    plane.emit(PlaneEvent::CircuitFailed { nids: vec![Nid(2)] });
    plane.emit(PlaneEvent::Misbehaving { nid: Nid(3) });
    let got = eventually(Duration::from_secs(1), || misbehaved.borrow().len() == 1).await;
    assert!(got);
    assert_eq!(
        *circuits.borrow(),
        vec![CircuitFailed { nids: vec![Nid(2)] }]
    );
    assert_eq!(misbehaved.borrow()[0].nid, Nid(3));
}

#[actix::test]
async fn circuit_failed_event_makes_the_tracker_announce_early_with_the_nid() {
    let plane = FakePlane::default();
    let ann = FakeAnnouncer {
        plane: plane.clone(),
        ..FakeAnnouncer::default()
    };
    let (_tracker, _relay, _table) = tracker_and_relay(&plane, &ann);
    let first = eventually(Duration::from_secs(1), || ann.seen.borrow().len() == 1).await;
    assert!(first, "no first announce");
    tokio::task::yield_now().await;
    plane.emit(PlaneEvent::CircuitFailed {
        nids: vec![Nid(11)],
    });
    // The interval is an hour: only the failure explains a second announce.
    let early = eventually(Duration::from_secs(1), || ann.seen.borrow().len() == 2).await;
    assert!(early, "no early re-announce after CircuitFailed");
    let seen = ann.seen.borrow();
    assert_eq!(seen[1].req.failed_nids, vec![Nid(11)]);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(45), "min gap ignored: {gap:?}");
}

#[actix::test]
async fn serving_is_forwarded_reported_and_undone_when_the_consumer_leaves() {
    let plane = FakePlane::default();
    let (r, _, _, serving) = reports();
    let relay = Relay::new(plane.clone(), r).start();
    let (deliver, mut rx) = mpsc::channel(4);
    relay
        .send(Serve {
            infohash: H,
            deliver,
        })
        .await
        .unwrap();
    assert_eq!(plane.log.borrow().served, vec![H]);
    let tx = plane.log.borrow().serve_tx[0].clone();
    tx.send(7).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
    assert_eq!(got.unwrap(), Some(7));
    drop(rx);
    tx.send(8).await.unwrap();
    let undone = eventually(Duration::from_secs(1), || {
        !plane.log.borrow().unserved.is_empty()
    })
    .await;
    assert!(undone, "a served torrent nobody reads was not unserved");
    let s = serving.borrow();
    let flags: Vec<bool> = s.iter().map(|c| c.serving).collect();
    assert_eq!(flags, vec![true, false]);
}

#[actix::test]
async fn stats_originate_failure_drop_nid_and_shutdown_reach_the_data_path() {
    let plane = FakePlane::default();
    plane.log.borrow_mut().relayed = 1234;
    plane.log.borrow_mut().links = vec![(Nid(3), PeerId([9; 32]))];
    let (r, _, _, _) = reports();
    let relay = Relay::new(plane.clone(), r).start();
    let stats = relay.send(GetStats).await.unwrap();
    assert_eq!(stats.relayed_bytes, 1234);
    assert_eq!(stats.links, vec![(Nid(3), PeerId([9; 32]))]);

    let grant = anomos_common::api::CircuitGrant {
        infohash: H,
        code: Vec::new(),
        layer_keys: Vec::new(),
        circuit_secret: anomos_common::crypto::CircuitSecret([0; 32]),
        expiry: 0,
        id: 1,
    };
    let (deliver, _rx) = mpsc::channel(1);
    let res = relay.send(Originate { grant, deliver }).await.unwrap();
    assert_eq!(res, Err("no_room"));

    relay.send(DropNid { nid: Nid(3) }).await.unwrap();
    assert_eq!(plane.log.borrow().dropped, vec![Nid(3)]);
    relay.send(Shutdown).await.unwrap();
    assert_eq!(plane.log.borrow().shutdowns, 1);
    let stopped = eventually(Duration::from_secs(1), || !relay.connected()).await;
    assert!(stopped, "Relay actor still running after Shutdown");
}
