//! A relay dies mid-download: SIGKILL, no goodbye. The endpoints hear
//! BREAK and re-announce at once, the tracker drops the dead relay's edges
//! and plans replacement circuits, and `anomos get` completes with the
//! same bytes, re-fetching little beyond what it had not verified.

use std::time::{Duration, Instant};

use crate::download::{summary_number, GET_LIMIT, MIB};
use crate::faults::{announces_ok, graph_matches_links, tracker_announces, tracker_sample, within};
use crate::lab::{random_file, same_file, Lab, LabConfig, Proc};

/// Announce interval of this lab: long, so an early re-announce stands out.
const INTERVAL_SECS: u64 = 30;
/// "At once": well under the interval, with room for a loaded machine.
const EARLY: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_mid_download_is_routed_around() {
    let config = LabConfig {
        interval_secs: INTERVAL_SECS,
        ..LabConfig::default()
    };
    let mut lab = Lab::start_with(6, config).await;
    let size = 64 * MIB;
    let src = lab.dir.path().join("share/big.bin");
    random_file(&src, size, 11);
    let torrent = lab.make_torrent(&src, "big").await;
    let seeds = [
        lab.seed(&torrent, &src, "seed1").await,
        lab.seed(&torrent, &src, "seed2").await,
    ];
    let out = lab.dir.path().join("got");
    // `--seed-after`: it stays up to be asked what happened.
    let mut cmd = lab.get(&torrent, &out, "getter");
    cmd.arg("--seed-after");
    let mut get = Proc::spawn(cmd, "get").await;

    // ~30 % verified.
    let deadline = Instant::now() + GET_LIMIT;
    let verified = loop {
        let v = get.metric("anomos_downloaded_bytes_total").await;
        if v >= 0.3 * size as f64 {
            break v;
        }
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // The relay carrying the most bytes now.
    let (victim, carried) = crate::faults::busiest(&lab.relays).await;
    let tracker_n = tracker_announces(&lab).await;
    let planned = tracker_sample(&lab, "anomos_tracker_circuits_planned_total").await;
    let get_n = announces_ok(&get).await;
    let mut seed_n = Vec::new();
    for s in &seeds {
        seed_n.push(announces_ok(s).await);
    }
    let killed = Instant::now();
    lab.relays.swap_remove(victim).kill().await;

    let tracker_took = within(EARLY, || async {
        tracker_announces(&lab).await > tracker_n
    })
    .await;
    let get_took = within(EARLY, || async { announces_ok(&get).await > get_n }).await;
    let mut seed_took = Vec::new();
    for (s, n) in seeds.iter().zip(&seed_n) {
        let left = EARLY.saturating_sub(killed.elapsed());
        seed_took.push(within(left, || async { announces_ok(s).await > *n }).await);
    }
    let replanned = within(Duration::from_secs(10), || async {
        tracker_sample(&lab, "anomos_tracker_circuits_planned_total").await > planned
    })
    .await;
    eprintln!(
        "relay with {:.1} MiB relayed killed at {:.0} % verified: tracker heard {tracker_took:?}, \
         downloader announced {get_took:?}, seeders {seed_took:?}, replacement planned {replanned:?}",
        carried[victim] / MIB as f64,
        verified * 100.0 / size as f64,
    );
    assert!(tracker_took.is_some(), "the tracker heard nothing early");
    assert!(
        get_took.is_some(),
        "the downloader did not re-announce early"
    );
    assert!(replanned.is_some(), "no replacement circuit planned");
    let broke = get.metric("anomos_circuits_failed_total").await;
    assert!(broke >= 1.0, "the downloader saw no circuit break");

    let stdout = get.line_with("downloaded ", GET_LIMIT).await;
    assert!(same_file(&src, &out.join("big.bin")), "content differs");
    let fetched = summary_number(&stdout, "fetched");
    let wasted = summary_number(&stdout, "(wasted");
    let unverified = size as f64 - verified;
    eprintln!(
        "fetched {fetched} B for {size} B, wasted {wasted} B = {:.2} % of the {unverified} B \
         unverified at the kill; {}",
        wasted as f64 * 100.0 / unverified,
        stdout.trim()
    );
    assert!(
        wasted as f64 <= 0.1 * unverified,
        "re-fetched {wasted} B beyond the {unverified} B it lacked"
    );

    // The graph the tracker keeps is the links the live peers hold: every
    // edge of the dead relay is gone.
    let mut live: Vec<&Proc> = lab.relays.iter().collect();
    live.extend(seeds.iter());
    live.push(&get);
    let (ends, edges) = graph_matches_links(&lab, &live, Duration::from_secs(60)).await;
    eprintln!("graph after the kill: {edges} edges, {ends} link ends at live peers");
    let status = get.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}
