//! Neighbor actor: dial failures back off and are reported once per
//! streak; an accepted link is attached and watched; a dropped NID closes
//! the link and stops the actor.

use std::time::Duration;

use actix::prelude::*;
use anomos_common::{Nid, Pin};

use super::*;
use crate::actors::testkit::{
    accepted_link, entry, eventually, neighbor_deps, recorder, FakePlane,
};

/// A loopback port nobody listens on.
async fn dead_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[actix::test]
async fn dial_failures_back_off_and_report_link_failed_once() {
    let plane = FakePlane::default();
    let (tracker, failed) = recorder::<LinkFailed>();
    let (relay, _dropped) = recorder::<DropNid>();
    let deps = neighbor_deps(&plane, tracker.recipient(), relay.recipient());
    let n = entry(9, dead_addr().await, Pin([1; 32]), true);
    let a = Neighbor::new(deps, n).start();

    let reported = eventually(Duration::from_secs(3), || !failed.borrow().is_empty()).await;
    assert!(reported, "no LinkFailed after repeated dial failures");
    assert_eq!(failed.borrow()[0], LinkFailed { nid: Nid(9) });
    let st = a.send(GetState).await.unwrap();
    assert!(st.failures >= 2, "{st:?}");
    assert!(
        matches!(st.state, NeighborState::Backoff | NeighborState::Dialing),
        "{st:?}"
    );
    // Re-dials continue, spaced by the back-off (cap 40 ms), and the streak
    // is reported only once.
    let before = st.failures;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = a.send(GetState).await.unwrap();
    assert!(st.failures > before, "no re-dial: {st:?}");
    assert!(st.failures < before + 30, "re-dials not spaced: {st:?}");
    assert_eq!(failed.borrow().len(), 1);
    assert!(plane.log.borrow().attached.is_empty());
}

#[actix::test]
async fn accepted_link_is_attached_then_dropping_the_nid_closes_it_and_stops() {
    let plane = FakePlane::default();
    let (tracker, failed) = recorder::<LinkFailed>();
    let (relay, dropped) = recorder::<DropNid>();
    let deps = neighbor_deps(&plane, tracker.recipient(), relay.recipient());
    let (link, dialer) = accepted_link(4).await;
    let n = entry(
        4,
        link.stream.get_ref().get_ref().peer_addr().unwrap(),
        Pin(dialer.peer_id().0),
        false,
    );
    let a = Neighbor::new(deps, n).start();
    assert_eq!(
        a.send(GetState).await.unwrap().state,
        NeighborState::Waiting
    );

    a.send(LinkAccepted { link }).await.unwrap();
    assert_eq!(a.send(GetState).await.unwrap().state, NeighborState::Up);
    assert_eq!(plane.log.borrow().attached, vec![Nid(4)]);

    a.send(DropNeighbour).await.unwrap();
    let stopped = eventually(Duration::from_secs(1), || !a.connected()).await;
    assert!(stopped, "actor still running after DropNeighbour");
    let handle = plane.log.borrow().link_handles[0].clone();
    assert!(handle.is_closed(), "link left open");
    let got = eventually(Duration::from_secs(1), || dropped.borrow().len() == 1).await;
    assert!(got, "the Relay actor was not told to drop the NID");
    assert_eq!(dropped.borrow()[0].nid, Nid(4));
    assert!(failed.borrow().is_empty(), "a drop is not a failure");
}

#[actix::test]
async fn a_link_that_ends_is_reported_and_a_wrong_pin_is_ignored() {
    let plane = FakePlane::default();
    let (tracker, failed) = recorder::<LinkFailed>();
    let (relay, _dropped) = recorder::<DropNid>();
    let deps = neighbor_deps(&plane, tracker.recipient(), relay.recipient());
    let (link, dialer) = accepted_link(6).await;
    let addr = link.stream.get_ref().get_ref().peer_addr().unwrap();

    // Pinned to someone else: the link is not attached.
    let stranger = Neighbor::new(deps.clone(), entry(6, addr, Pin([7; 32]), false)).start();
    stranger.send(LinkAccepted { link }).await.unwrap();
    assert_eq!(
        stranger.send(GetState).await.unwrap().state,
        NeighborState::Waiting
    );
    assert!(plane.log.borrow().attached.is_empty());

    let (link, dialer2) = accepted_link(6).await;
    drop(dialer);
    let a = Neighbor::new(deps, entry(6, addr, Pin(dialer2.peer_id().0), false)).start();
    a.send(LinkAccepted { link }).await.unwrap();
    let handle = plane.log.borrow().link_handles[0].clone();
    handle.fail("idle_timeout");
    let got = eventually(Duration::from_secs(1), || failed.borrow().len() == 1).await;
    assert!(got, "link loss not reported");
    assert_eq!(failed.borrow()[0].nid, Nid(6));
    // The other end dials: back to waiting for it.
    assert_eq!(
        a.send(GetState).await.unwrap().state,
        NeighborState::Waiting
    );
}
