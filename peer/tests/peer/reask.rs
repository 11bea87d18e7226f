//! Early re-ask: a download whose announce is granted fewer circuits than
//! it wants (here none: its only source has not announced the torrent yet)
//! asks again after `circuit_reask_ms` (1 s, doubling while answers grant
//! nothing) instead of waiting the interval; once the source is there, one
//! answer grants every circuit wanted, several to that one source.

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
        let refusals =
            |p: &anomos_peer::Peer| p.metrics.announces.with_label_values(&["error"]).get();
        let refused = refusals(&origin);
        let asked = Instant::now();
        let mut rx = origin.want_circuits(H, 3);
        // Nobody serves the torrent yet: the first answers grant nothing.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let _served = exit.serve(H);
        let serving = asked.elapsed();
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
        eprintln!(
            "source serving at {serving:?}; 3 circuits at {at:?} (interval {INTERVAL_SECS} s), \
             {announces} announces"
        );
        // Re-asked within a few seconds, well under half the interval, and
        // nothing refused by the tracker.
        assert!(at[2] < Duration::from_secs(INTERVAL_SECS / 3), "{at:?}");
        assert_eq!(refusals(&origin), refused, "an announce was refused");
        // All three from one answer, not one per announce (re-asks come
        // a second apart, so three announces take two seconds or more).
        assert!(at[2] - at[0] < Duration::from_millis(1500), "{at:?}");
        origin.stop().await;
        exit.stop().await;
    })
    .await
    .expect("scenario timed out");
}
