//! A relay that accepts CREATE and never forwards it (a test-only hook of
//! the `anomos` binary, `ANOMOS_TEST_SWALLOW_CREATES=1`: no peel, no
//! forward, no BREAK). Circuits through it fail only by the originator's
//! set-up timeout, and its links stay up, so nothing but the originators'
//! reports can show it. The tracker plans every path through two relays,
//! so honest relays share failed paths with the black hole; there are two
//! honest relay processes and the black hole (the other peers relay too).
//! An originator in the test process keeps asking for circuits: each
//! through the black hole fails after the set-up timeout and is reported
//! by id in the next announce; the tracker counts the failures against
//! the relays of those paths and excludes exactly one relay — the black
//! hole, since from then on every circuit opens at once and no more
//! failures come in: its honest co-hops kept their place. A real `anomos
//! get` that ran through all of it completes intact.

use std::time::{Duration, Instant};

use anomos_common::InfoHash;

use crate::download::{GET_LIMIT, MIB};
use crate::faults::{endpoint, tracker_sample};
use crate::lab::{anomos, random_file, same_file, Lab, LabConfig, Proc};

const H: InfoHash = InfoHash([0x62; 32]);
/// The set-up timeout of every peer here (the default is 10 s).
const SETUP_MS: u64 = 1500;

#[actix_rt::test]
async fn a_relay_that_swallows_creates_is_reported_and_routed_around() {
    tokio::time::timeout(Duration::from_secs(150), scenario())
        .await
        .expect("scenario timed out");
}

async fn scenario() {
    let config = LabConfig {
        tracker_toml: "min_relays = 2\nmax_relays = 2\nrate_per_peer = 100.0\n\
                       burst_per_peer = 100.0\n"
            .into(),
        peer_toml: format!("circuit_setup_timeout_ms = {SETUP_MS}\n"),
        ..LabConfig::default()
    };
    let lab = Lab::start_with(2, config).await;
    let mut cmd = anomos();
    cmd.arg("relay")
        .args(lab.peer_args("blackhole"))
        .env("ANOMOS_TEST_SWALLOW_CREATES", "1");
    let hole = Proc::spawn(cmd, "black hole").await;

    // A real download through all of it.
    let size = 24 * MIB;
    let src = lab.dir.path().join("share/data.bin");
    random_file(&src, size, 62);
    let torrent = lab.make_torrent(&src, "data").await;
    let _seed = lab.seed(&torrent, &src, "seed").await;
    let out = lab.dir.path().join("got");
    let mut get = lab.get(&torrent, &out, "getter");
    get.args(["--circuits", "4"]);
    let mut get = Proc::spawn(get, "get").await;

    let exit = endpoint(&lab).await;
    let origin = endpoint(&lab).await;
    let mut served = exit.serve(H);
    let _exits = actix_rt::spawn(async move {
        let mut held = Vec::new();
        while let Some(c) = served.recv().await {
            held.push(c);
        }
    });

    // Ask for circuits one at a time until the tracker excludes a relay.
    let started = Instant::now();
    let mut held = Vec::new();
    let mut slow = 0;
    while excluded(&lab).await < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no relay excluded after {} circuits ({slow} slow)",
            held.len()
        );
        let t = Instant::now();
        let mut rx = origin.want_circuits(H, 1);
        let c = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        held.push(c.expect("no circuit within 30 s").unwrap());
        if t.elapsed() >= Duration::from_millis(SETUP_MS) {
            slow += 1;
        }
    }
    let failures = tracker_sample(&lab, "anomos_tracker_setup_failures_total").await;
    let to_exclusion = started.elapsed();
    assert!(
        failures >= 3.0,
        "excluded after {failures} reported failures"
    );
    let n = excluded(&lab).await;
    assert_eq!(n, 1.0, "{n} relays excluded");
    // The black hole never carried anything.
    assert_eq!(hole.metric("anomos_relay_bytes_total").await, 0.0);

    // From now on every circuit opens well within one set-up timeout, and
    // the tracker hears of no more failures.
    let planned = tracker_sample(&lab, "anomos_tracker_circuits_planned_total").await;
    let mut after = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let mut rx = origin.want_circuits(H, 1);
        let c = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        let c = c.expect("no circuit within 30 s").unwrap();
        assert_eq!(c.relays, 2);
        held.push(c);
        after.push(t.elapsed());
    }
    let slowest = after.iter().max().copied().unwrap_or_default();
    eprintln!(
        "black hole excluded after {:.1} s, {} circuits ({slow} asks waited for a timeout), \
         {failures} failures reported; next 10 circuits: slowest {slowest:?}",
        to_exclusion.as_secs_f64(),
        held.len() - after.len()
    );
    assert!(
        slowest < Duration::from_millis(SETUP_MS),
        "a circuit still waited for the set-up timeout: {after:?}"
    );
    let planned_after = tracker_sample(&lab, "anomos_tracker_circuits_planned_total").await;
    assert!(planned_after >= planned + 10.0);
    assert_eq!(
        tracker_sample(&lab, "anomos_tracker_setup_failures_total").await,
        failures,
        "failures still reported after the exclusion"
    );

    let summary = get.line_with("downloaded ", GET_LIMIT).await;
    assert!(same_file(&src, &out.join("data.bin")), "content differs");
    eprintln!("{}", summary.trim());
    let status = get.child.wait().await.unwrap();
    assert!(status.success(), "{status:?}");
    origin.stop().await;
    exit.stop().await;
}

/// Relays the tracker excludes from paths right now.
async fn excluded(lab: &Lab) -> f64 {
    tracker_sample(lab, "anomos_tracker_relays_excluded").await
}
