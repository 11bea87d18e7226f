//! Memory under pressure. The downloader stops reading altogether
//! (SIGSTOP: its sockets fill up) while its circuits from four seeders run
//! through the relays, so every relay next to it carries circuits whose
//! downstream has stalled. Credit windows must hold the line: the resident
//! memory of every process stays under a fixed bound during the stall, and
//! holds when the stall ends and the download completes.

use std::time::{Duration, Instant};

use crate::download::{GET_LIMIT, MIB};
use crate::faults::{peer_sample, rss_kib};
use crate::lab::{random_file, same_file, Lab, Proc};

/// Resident memory a relay, seeder or the tracker may use here, in MiB.
/// Measured (debug build): ~18 MiB at rest, at most ~31 MiB during the
/// stall or after it, on a loaded machine. Credit windows allow a relay
/// 256 cells (256 KiB) per circuit and direction; without them the stalled
/// traffic (~30 MB/s for four seconds) would pile up far past this.
const BOUND_MIB: u64 = 64;
/// The downloader's bound (a dozen circuits' stream buffers and the pieces
/// being assembled): measured 31–49 MiB after the download.
const DOWNLOADER_BOUND_MIB: u64 = 128;
/// How long the downloader stays stopped.
const STALL: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_when_the_downloader_stops_reading() {
    let lab = Lab::start(5).await;
    let size = 96 * MIB;
    let src = lab.dir.path().join("share/big.bin");
    random_file(&src, size, 31);
    let torrent = lab.make_torrent(&src, "big").await;
    let mut seeds = Vec::new();
    for i in 0..4 {
        seeds.push(lab.seed(&torrent, &src, &format!("seed{i}")).await);
    }
    let out = lab.dir.path().join("got");
    let mut cmd = lab.get(&torrent, &out, "getter");
    cmd.args(["--circuits", "12", "--seed-after"]);
    let mut get = Proc::spawn(cmd, "get").await;

    let mut all: Vec<(&str, &Proc)> = vec![("tracker", &lab.tracker)];
    all.extend(lab.relays.iter().map(|r| ("relay", r)));
    all.extend(seeds.iter().map(|s| ("seed", s)));
    let peak = |all: &[(&str, &Proc)], at: &mut Vec<(String, u64)>| {
        for (i, (what, p)) in all.iter().enumerate() {
            let kib = rss_kib(p.pid());
            match at.get_mut(i) {
                Some(e) => e.1 = e.1.max(kib),
                None => at.push((format!("{what}{i}"), kib)),
            }
        }
    };
    let mut rest = Vec::new();
    peak(&all, &mut rest);

    // Stop it once it has most of its circuits and some data.
    let deadline = Instant::now() + GET_LIMIT;
    loop {
        let built = peak_circuits(&get).await;
        let have = get.metric("anomos_downloaded_bytes_total").await;
        if have >= 0.15 * size as f64 {
            eprintln!("stopping the downloader with {built} circuits built");
            break;
        }
        assert!(have < size as f64, "finished before the stall");
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    get.signal("STOP");
    let mut stalled = Vec::new();
    let stall_end = Instant::now() + STALL;
    while Instant::now() < stall_end {
        peak(&all, &mut stalled);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut carried = Vec::new();
    for r in &lab.relays {
        carried.push(r.metric("anomos_relay_bytes_total").await);
    }
    get.signal("CONT");
    let summary = get.line_with("downloaded ", GET_LIMIT).await;
    assert!(same_file(&src, &out.join("big.bin")), "content differs");
    let mut after = Vec::new();
    peak(&all, &mut after);
    let getter = rss_kib(get.pid());

    let mib = |v: &[(String, u64)]| -> Vec<String> {
        v.iter()
            .map(|(n, k)| format!("{n} {:.0}", *k as f64 / 1024.0))
            .collect()
    };
    eprintln!(
        "RSS MiB at rest {:?}\n  peak while the downloader was stopped {:?}\n  after {:?}, downloader {:.0}\n  {}",
        mib(&rest),
        mib(&stalled),
        mib(&after),
        getter as f64 / 1024.0,
        summary.trim()
    );
    for (name, kib) in stalled.iter().chain(&after) {
        assert!(
            *kib <= BOUND_MIB * 1024,
            "{name} uses {} MiB (bound {BOUND_MIB})",
            kib / 1024
        );
    }
    assert!(
        getter <= DOWNLOADER_BOUND_MIB * 1024,
        "downloader uses {} MiB",
        getter / 1024
    );
    assert!(
        carried.iter().any(|c| *c > 0.0),
        "no relay carried anything"
    );
    let status = get.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}

/// Circuits the downloader opened so far.
async fn peak_circuits(get: &Proc) -> f64 {
    peer_sample(get, "anomos_circuits_built_total").await
}
