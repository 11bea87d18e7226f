//! Tracker actor: early announces on failures (spaced by the minimum gap,
//! carrying the failed NIDs), back-off when unreachable, responses start
//! and stop Neighbor actors, and the stop order.

use std::time::Duration;

use anomos_common::api::PeerEvent;
use anomos_common::{Nid, Pin};

use super::*;
use crate::actors::testkit::{
    entry, eventually, idle_response, tracker_and_relay, FakeAnnouncer, FakePlane,
};

fn setup() -> (FakePlane, FakeAnnouncer) {
    let plane = FakePlane::default();
    let ann = FakeAnnouncer {
        plane: plane.clone(),
        ..FakeAnnouncer::default()
    };
    (plane, ann)
}

async fn announces(ann: &FakeAnnouncer, n: usize, within: Duration) -> bool {
    eventually(within, || ann.seen.borrow().len() >= n).await
}

#[actix::test]
async fn link_failed_triggers_an_early_announce_carrying_the_nid() {
    let (plane, ann) = setup();
    let (tracker, _relay, _table) = tracker_and_relay(&plane, &ann);
    assert!(announces(&ann, 1, Duration::from_secs(1)).await);
    assert_eq!(ann.seen.borrow()[0].req.event, PeerEvent::Started);

    tracker.send(LinkFailed { nid: Nid(21) }).await.unwrap();
    tracker.send(LinkFailed { nid: Nid(22) }).await.unwrap();
    assert!(
        announces(&ann, 2, Duration::from_secs(1)).await,
        "no early announce"
    );
    // Both failures ride on one announce; a reported NID is not repeated.
    tokio::time::sleep(Duration::from_millis(120)).await;
    tracker.send(UnknownNidSeen { nid: Nid(1) }).await.unwrap();
    assert!(announces(&ann, 3, Duration::from_secs(1)).await);
    let seen = ann.seen.borrow();
    assert_eq!(seen[1].req.event, PeerEvent::Heartbeat);
    assert_eq!(seen[1].req.failed_nids, vec![Nid(21), Nid(22)]);
    assert!(seen[2].req.failed_nids.is_empty());
}

#[actix::test]
async fn an_unreachable_tracker_is_retried_with_growing_delays() {
    let (plane, ann) = setup();
    for _ in 0..4 {
        let e = TrackerError::Unreachable("refused".into());
        ann.replies.borrow_mut().push_back(Err(e));
    }
    let (tracker, _relay, _table) = tracker_and_relay(&plane, &ann);
    assert!(announces(&ann, 1, Duration::from_secs(1)).await);
    // An early request during back-off waits for the scheduled retry.
    tracker.send(LinkFailed { nid: Nid(3) }).await.unwrap();
    assert!(announces(&ann, 5, Duration::from_secs(3)).await);
    let seen = ann.seen.borrow();
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    // Caps 40, 80, 160, 320 ms; each delay lies in [cap/2, cap].
    for (gap, cap) in gaps.iter().zip([40u64, 80, 160, 320]) {
        let low = Duration::from_millis(cap / 2);
        assert!(*gap >= low, "gaps {gaps:?}");
    }
    // Still `started` until the tracker took one.
    assert!(seen[..4].iter().all(|s| s.req.event == PeerEvent::Started));
    assert_eq!(seen[4].req.failed_nids, vec![Nid(3)]);
}

#[actix::test]
async fn responses_start_and_stop_neighbors() {
    let (plane, ann) = setup();
    let addr = "127.0.0.1:9".parse().unwrap();
    let mut r = idle_response();
    r.neighbours = vec![
        entry(1, addr, Pin([1; 32]), false),
        entry(2, addr, Pin([2; 32]), false),
    ];
    ann.replies.borrow_mut().push_back(Ok(r));
    let mut r = idle_response();
    r.neighbours = vec![entry(2, addr, Pin([2; 32]), false)];
    r.dropped_nids = vec![Nid(1)];
    ann.replies.borrow_mut().push_back(Ok(r));
    let (tracker, _relay, table) = tracker_and_relay(&plane, &ann);
    let two = eventually(Duration::from_secs(1), || table.borrow().len() == 2).await;
    assert!(two, "neighbour table not published");
    tracker.send(UnknownNidSeen { nid: Nid(2) }).await.unwrap();
    let one = eventually(Duration::from_secs(1), || table.borrow().len() == 1).await;
    assert!(one, "dropped NID still listed");
    assert!(table.borrow().contains_key(&Nid(2)));
}

#[actix::test]
async fn stop_breaks_circuits_before_announcing_stopped_then_ends() {
    let (plane, ann) = setup();
    let (tracker, relay, _table) = tracker_and_relay(&plane, &ann);
    assert!(announces(&ann, 1, Duration::from_secs(1)).await);
    tracker.send(Stop).await.unwrap();
    {
        let seen = ann.seen.borrow();
        let last = seen.last().unwrap();
        assert_eq!(last.req.event, PeerEvent::Stopped);
        assert_eq!(last.shutdowns_before, 1, "stopped announced before BREAK");
        assert!(last.req.held_links.is_empty());
    }
    let ended = eventually(Duration::from_secs(1), || {
        !tracker.connected() && !relay.connected()
    })
    .await;
    assert!(ended, "actors still running after Stop");
    // No announce after `stopped`, even when asked.
    let n = ann.seen.borrow().len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ann.seen.borrow().len(), n);
}

/// After a tracker restart the first answers list none of the links a peer
/// holds (the other ends have not confirmed them yet). Held links stay,
/// circuits and all, until the tracker lists or drops them; an unlisted
/// neighbour whose link is not up goes at once.
#[actix::test]
async fn held_links_wait_for_the_tracker_to_confirm_or_drop_them() {
    let (plane, ann) = setup();
    let addr = "127.0.0.1:9".parse().unwrap();
    let mut r = idle_response();
    r.neighbours = vec![
        entry(1, addr, Pin([1; 32]), false),
        entry(2, addr, Pin([2; 32]), false),
        entry(3, addr, Pin([3; 32]), false),
    ];
    ann.replies.borrow_mut().push_back(Ok(r));
    // The tracker restarted: nothing listed, nothing dropped.
    ann.replies.borrow_mut().push_back(Ok(idle_response()));
    // It drops 1; 2 is confirmed again.
    let mut r = idle_response();
    r.neighbours = vec![entry(2, addr, Pin([2; 32]), false)];
    r.dropped_nids = vec![Nid(1)];
    ann.replies.borrow_mut().push_back(Ok(r));
    // Links 1 and 2 are up; 3 never came up.
    plane.log.borrow_mut().links = vec![
        (Nid(1), anomos_common::PeerId([1; 32])),
        (Nid(2), anomos_common::PeerId([2; 32])),
    ];
    let (tracker, _relay, table) = tracker_and_relay(&plane, &ann);
    let nids = |t: &tokio::sync::watch::Receiver<crate::net::NeighbourTable>| {
        t.borrow().keys().copied().collect::<Vec<Nid>>()
    };
    let three = eventually(Duration::from_secs(1), || table.borrow().len() == 3).await;
    assert!(three, "neighbour table not published");
    tracker.send(UnknownNidSeen { nid: Nid(9) }).await.unwrap();
    assert!(announces(&ann, 2, Duration::from_secs(1)).await);
    let kept = eventually(Duration::from_secs(1), || nids(&table) == [Nid(1), Nid(2)]).await;
    assert!(kept, "held links not kept: {:?}", nids(&table));
    tracker.send(UnknownNidSeen { nid: Nid(9) }).await.unwrap();
    let one = eventually(Duration::from_secs(1), || nids(&table) == [Nid(2)]).await;
    assert!(one, "a dropped NID is still listed: {:?}", nids(&table));
}

/// An answer that grants fewer circuits than wanted is followed by another
/// announce long before the interval (an hour here), with doubling gaps
/// while nothing is granted; once the demand is withdrawn, the re-asks
/// stop.
#[actix::test]
async fn circuits_not_granted_are_asked_for_again_with_growing_delays() {
    let (plane, ann) = setup();
    let (tracker, _relay, _table) = tracker_and_relay(&plane, &ann);
    assert!(announces(&ann, 1, Duration::from_secs(1)).await);
    let h = anomos_common::InfoHash([5; 32]);
    let (deliver, rx) = tokio::sync::mpsc::channel(2);
    tracker
        .send(WantCircuits {
            infohash: h,
            n: 2,
            deliver,
        })
        .await
        .unwrap();
    // The early announce, then re-asks after 50 (the minimum gap), 80,
    // 160 and 320 ms.
    assert!(
        announces(&ann, 6, Duration::from_secs(2)).await,
        "no re-asks"
    );
    {
        let seen = ann.seen.borrow();
        let gaps: Vec<Duration> = seen[1..].windows(2).map(|w| w[1].at - w[0].at).collect();
        for (gap, ms) in gaps.iter().zip([50u64, 80, 160, 320]) {
            assert!(*gap >= Duration::from_millis(ms), "gaps {gaps:?}");
            assert!(*gap < Duration::from_millis(ms + 250), "gaps {gaps:?}");
        }
        assert!(seen[1..]
            .iter()
            .all(|s| s.req.torrents[0].circuits_wanted == 2));
    }
    // Withdrawn: at most the re-ask already scheduled, then the interval.
    drop(rx);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n = ann.seen.borrow().len();
    assert!(n <= 8, "{n} announces: still re-asking");
    let last = &ann.seen.borrow()[n - 1];
    assert_eq!(last.req.torrents[0].circuits_wanted, 0);
}

/// A grant that goes silent on its path (set-up timeout) is reported
/// by id in the next announce, once; one that could not even be sent
/// (`no_room`) is not.
#[actix::test]
async fn grants_that_fail_on_their_path_are_reported_by_id() {
    for (why, reported) in [
        ("timeout", true),
        ("setup_timeout", true),
        ("no_room", false),
    ] {
        let (plane, ann) = setup();
        plane.log.borrow_mut().originate_error = Some(why);
        let h = anomos_common::InfoHash([6; 32]);
        let grant = |id| anomos_common::api::CircuitGrant {
            infohash: h,
            code: Vec::new(),
            layer_keys: Vec::new(),
            circuit_secret: anomos_common::crypto::CircuitSecret([0; 32]),
            expiry: 0,
            id,
        };
        let mut r = idle_response();
        r.circuits = vec![grant(41), grant(42)];
        ann.replies.borrow_mut().push_back(Ok(r));
        let (deliver, _rx) = tokio::sync::mpsc::channel(2);
        let (tracker, _relay, _table) = tracker_and_relay(&plane, &ann);
        tracker
            .send(WantCircuits {
                infohash: h,
                n: 2,
                deliver,
            })
            .await
            .unwrap();
        // The failed grants are asked for again at once; that announce
        // carries their ids, the one after does not repeat them.
        assert!(announces(&ann, 3, Duration::from_secs(2)).await, "{why}");
        let seen = ann.seen.borrow();
        let ids: Vec<Vec<u64>> = seen.iter().map(|s| s.req.failed_circuits.clone()).collect();
        let want: Vec<u64> = if reported { vec![41, 42] } else { vec![] };
        assert!(ids[0].is_empty(), "{why}: {ids:?}");
        assert_eq!(ids[1], want, "{why}: {ids:?}");
        assert!(ids[2..].iter().all(Vec::is_empty), "{why}: {ids:?}");
    }
}

#[test]
fn only_silent_paths_count_as_set_up_failures() {
    for why in ["timeout", "setup_timeout"] {
        assert!(failed_on_path(why), "{why}");
    }
    for why in [
        "no_room",
        "bad_grant",
        "link_lost",
        "bad_mac",
        "refused",
        "overloaded",
    ] {
        assert!(!failed_on_path(why), "{why}");
    }
}

/// A source reported bad rides on an early announce, is kept while the
/// tracker does not answer, and is not repeated once the tracker took it.
#[actix::test]
async fn bad_sources_are_reported_until_the_tracker_takes_them() {
    let (plane, ann) = setup();
    let (tracker, _relay, _table) = tracker_and_relay(&plane, &ann);
    assert!(announces(&ann, 1, Duration::from_secs(1)).await);
    let e = TrackerError::Unreachable("refused".into());
    ann.replies.borrow_mut().push_back(Err(e));
    tracker.send(BadSource { grant: 9 }).await.unwrap();
    tracker.send(BadSource { grant: 7 }).await.unwrap();
    assert!(
        announces(&ann, 3, Duration::from_secs(2)).await,
        "no early announce, or no retry"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    tracker.send(UnknownNidSeen { nid: Nid(1) }).await.unwrap();
    assert!(announces(&ann, 4, Duration::from_secs(1)).await);
    let seen = ann.seen.borrow();
    let ids: Vec<Vec<u64>> = seen.iter().map(|s| s.req.bad_sources.clone()).collect();
    assert_eq!(
        ids[..4],
        [vec![], vec![7, 9], vec![7, 9], vec![]],
        "{ids:?}"
    );
}
