//! The tracker restarts mid-download (SIGTERM, same data dir, same port):
//! circuits already open keep carrying data while it is away, the peers
//! re-announce with the links they hold and the graph is rebuilt from them,
//! the ratio ledger neither loses nor double-counts a byte, and the
//! download completes.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anomos_common::PeerId;

use crate::download::{GET_LIMIT, MIB};
use crate::faults::{
    announces_ok, graph_matches_links, metric_if_up, tracker_announces, tracker_status, within,
};
use crate::lab::{free_port, random_file, run, same_file, Lab, LabConfig, Proc};
use crate::util::sample;

/// One identity's ledger row: uploaded, downloaded, relayed.
type Row = (u64, u64, u64);

/// The tracker's SQLite ledger, read directly (read-only; WAL lets the
/// tracker keep writing).
fn ledger(tracker_dir: &Path) -> HashMap<PeerId, Row> {
    use rusqlite::{Connection, OpenFlags};
    let path = tracker_dir.join("ledger.sqlite3");
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, uploaded, downloaded, relayed FROM peers")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            let id: Vec<u8> = r.get(0)?;
            let v = |i| r.get::<_, i64>(i).map(|x| x as u64);
            Ok((id, (v(1)?, v(2)?, v(3)?)))
        })
        .unwrap();
    rows.map(|r| {
        let (id, row) = r.unwrap();
        (PeerId(id.try_into().unwrap()), row)
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_restart_mid_download_keeps_circuits_graph_and_ledger() {
    let config = LabConfig {
        tracker_listen: format!("127.0.0.1:{}", free_port()),
        ..LabConfig::default()
    };
    let mut lab = Lab::start_with(5, config).await;
    // A first, small download puts traffic in the ledger.
    let warm = lab.dir.path().join("share/warm.bin");
    random_file(&warm, 8 * MIB, 12);
    let warm_torrent = lab.make_torrent(&warm, "warm").await;
    let warm_seed = lab.seed(&warm_torrent, &warm, "seed0").await;
    let o = run(
        lab.get(&warm_torrent, &lab.dir.path().join("got0"), "getter0"),
        GET_LIMIT,
    )
    .await;
    assert!(o.status.success(), "first download failed");
    drop(warm_seed);
    // Big enough, over two circuits, to still be running after the restart.
    let size = 192 * MIB;
    let src = lab.dir.path().join("share/big.bin");
    random_file(&src, size, 13);
    let torrent = lab.make_torrent(&src, "big").await;
    let seeds = [
        lab.seed(&torrent, &src, "seed1").await,
        lab.seed(&torrent, &src, "seed2").await,
    ];
    // Every relay announced the first download's traffic.
    let relayed = |l: &HashMap<PeerId, Row>| l.values().map(|r| r.2).sum::<u64>();
    let mut carried = 0;
    for r in &lab.relays {
        carried += r.metric("anomos_relay_bytes_total").await as u64;
    }
    let synced = within(Duration::from_secs(15), || async {
        relayed(&ledger(&lab.tracker_dir())) == carried
    })
    .await;
    assert!(
        synced.is_some(),
        "the ledger never caught up with {carried} B relayed"
    );
    let out = lab.dir.path().join("got");
    // `--seed-after`: it stays up to be asked what broke.
    let mut cmd = lab.get(&torrent, &out, "getter");
    cmd.args(["--circuits", "2", "--seed-after"]);
    let mut get = Proc::spawn(cmd, "get").await;
    let verified = || async {
        metric_if_up(&get, "anomos_downloaded_bytes_total")
            .await
            .unwrap_or(size as f64)
    };
    let deadline = Instant::now() + GET_LIMIT;
    while verified().await < 0.2 * size as f64 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = ledger(&lab.tracker_dir());
    let broken = || metric_if_up(&get, "anomos_circuits_failed_total");
    let broken_before = broken().await;
    let status = tracker_status(&lab).await;
    let (edges, identities) = (
        sample(&status, "graph_edges"),
        sample(&status, "ledger_identities"),
    );
    lab.stop_tracker().await;
    let down_at = verified().await;
    let mut peers_n = Vec::new();
    for p in lab.relays.iter().chain(&seeds) {
        peers_n.push(announces_ok(p).await);
    }
    let get_n = metric_if_up(&get, "anomos_announces_total{result=\"ok\"}").await;
    // Away for half a second (plus the restart): what is open keeps going.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let away = verified().await;
    eprintln!(
        "tracker away: verified {:.1} → {:.1} MiB",
        down_at / MIB as f64,
        away / MIB as f64
    );
    assert!(
        away > down_at || away >= size as f64,
        "the download stalled while the tracker was away"
    );
    let restarted = Instant::now();
    lab.start_tracker().await;

    // Every peer announces to the new process (they retry with back-off).
    let back = within(Duration::from_secs(30), || async {
        let mut all = true;
        for (p, n) in lab.relays.iter().chain(&seeds).zip(&peers_n) {
            all &= announces_ok(p).await > *n;
        }
        if let (Some(n), Some(now)) = (
            get_n,
            metric_if_up(&get, "anomos_announces_total{result=\"ok\"}").await,
        ) {
            all &= now > n;
        }
        all
    })
    .await;
    eprintln!(
        "all peers announced {back:?} after the restart; tracker took {} announces",
        tracker_announces(&lab).await
    );
    assert!(back.is_some(), "not every peer came back to the tracker");
    let running = verified().await < size as f64;
    // No circuit broke: the peers kept their links while the new tracker
    // rebuilt its graph from them.
    assert_eq!(
        broken().await,
        broken_before,
        "circuits broke across the restart"
    );

    let summary = get.line_with("downloaded ", GET_LIMIT).await;
    eprintln!(
        "{} (still downloading when every peer was back: {running})",
        summary.trim()
    );
    assert!(same_file(&src, &out.join("big.bin")), "content differs");
    let broke = metric_if_up(&get, "anomos_circuits_failed_total").await;
    assert_eq!(broke, broken_before, "circuits broke");

    // The graph is the links the live peers hold (two-sided claims only).
    let mut live: Vec<&Proc> = lab.relays.iter().chain(&seeds).collect();
    live.push(&get);
    let (ends, rebuilt) = graph_matches_links(&lab, &live, Duration::from_secs(60)).await;
    eprintln!(
        "graph: {edges} edges before, {rebuilt} after ({ends} link ends), {:?} after restart",
        restarted.elapsed()
    );
    assert!(rebuilt > 0.0);

    // The ledger: nothing lost, nothing counted twice. Each process's own
    // counters (never reset: no process restarted) bound its ledger row.
    let after = ledger(&lab.tracker_dir());
    for (id, b) in &before {
        let a = after.get(id).copied().unwrap_or_default();
        assert!(
            a.0 >= b.0 && a.1 >= b.1 && a.2 >= b.2,
            "ledger row went down: {b:?} → {a:?}"
        );
    }
    let status = tracker_status(&lab).await;
    assert!(
        sample(&status, "ledger_identities") >= identities,
        "{status}"
    );
    eprintln!(
        "ledger relayed: {} B before the restart, {} B after",
        relayed(&before),
        relayed(&after)
    );
    for (i, r) in lab.relays.iter().enumerate() {
        let row = after[&lab.peer_id(&format!("relay{i}"))];
        let own = r.metric("anomos_relay_bytes_total").await as u64;
        assert!(
            row.2 <= own,
            "relay{i}: ledger says {} relayed, it relayed {own}",
            row.2
        );
    }
    for (i, s) in seeds.iter().enumerate() {
        let row = after[&lab.peer_id(&format!("seed{}", i + 1))];
        let own = s.metric("anomos_uploaded_bytes_total").await as u64;
        assert!(
            row.0 <= own,
            "seed{}: ledger says {} uploaded, it uploaded {own}",
            i + 1,
            row.0
        );
    }
    let status = get.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "get --seed-after exit status {status:?}");
    let getter = after[&lab.peer_id("getter")];
    assert!(
        getter.1 <= size as u64,
        "getter: ledger says {} downloaded of a {size}-byte file",
        getter.1
    );
}
