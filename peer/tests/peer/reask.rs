//! Early re-ask: a download that wants more circuits than one announce
//! grants gets the rest well before the next regular announce. The tracker
//! plans at most one circuit per source per announce and there is one
//! source here, so three circuits take three announces; with a 30 s
//! interval they arrive within a few seconds only because the peer asks
//! again after `circuit_reask_ms` (1 s) instead of waiting the interval.

use std::time::{Duration, Instant};

use anomos_common::InfoHash;

use crate::faults::one_relay_path;

const H: InfoHash = InfoHash([0x72; 32]);
const INTERVAL_SECS: u64 = 30;

#[actix_rt::test]
async fn a_download_short_of_circuits_gets_them_before_one_interval() {
    tokio::time::timeout(Duration::from_secs(90), async {
        // The tracker's default per-identity rate (2/s, burst 10).
        let (_lab, exit, origin) = one_relay_path(INTERVAL_SECS, "").await;
        let _served = exit.serve(H);
        // Let the exit's announce listing the torrent land first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refusals =
            |p: &anomos_peer::Peer| p.metrics.announces.with_label_values(&["error"]).get();
        let refused = refusals(&origin);
        let asked = Instant::now();
        let mut rx = origin.want_circuits(H, 3);
        let mut held = Vec::new();
        let mut at = Vec::new();
        while held.len() < 3 {
            let c = tokio::time::timeout(Duration::from_secs(INTERVAL_SECS), rx.recv())
                .await
                .expect("a circuit waited a whole interval")
                .unwrap();
            at.push(asked.elapsed());
            held.push(c);
        }
        let announces = origin.metrics.announces.with_label_values(&["ok"]).get();
        eprintln!("3 circuits at {at:?} (interval {INTERVAL_SECS} s), {announces} announces");
        // One re-ask per circuit after the first, at 1 s each: well
        // under half the interval, and nothing refused by the tracker.
        assert!(at[2] < Duration::from_secs(INTERVAL_SECS / 3), "{at:?}");
        assert_eq!(refusals(&origin), refused, "an announce was refused");
        origin.stop().await;
        exit.stop().await;
    })
    .await
    .expect("scenario timed out");
}
