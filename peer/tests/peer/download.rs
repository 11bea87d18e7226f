//! Anonymous downloads end to end, every party a real process: tracker,
//! relays, seeders and `anomos get`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::lab::{anomos, random_file, run, same_file, Lab, Proc};
use crate::util::http_get;

pub const MIB: usize = 1 << 20;
/// Longest `anomos get` any test allows (debug builds on a loaded 2-core box).
pub const GET_LIMIT: Duration = Duration::from_secs(600);

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Wait (bounded) until the seeders' published upload counters add up to
/// `at_least`; returns each seeder's count.
async fn uploads(seeders: &[&Proc], at_least: f64) -> Vec<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut v = Vec::new();
        for s in seeders {
            v.push(s.metric("anomos_uploaded_bytes_total").await);
        }
        if v.iter().sum::<f64>() >= at_least || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The relay counts `anomos get` printed for its open circuits.
fn circuit_relays(stdout: &str) -> Vec<usize> {
    let list = stdout
        .split("relays per open circuit [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect()
}

/// The summary's `in T s (D s from the first block)`: (T, D).
fn summary_times(stdout: &str) -> (f64, f64) {
    let rest = stdout
        .split(") to ")
        .nth(1)
        .and_then(|r| r.split(" in ").nth(1))
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    let mut words = rest.split_whitespace();
    let total = words.next().unwrap().parse().unwrap();
    let data = words
        .nth(1)
        .unwrap()
        .trim_start_matches('(')
        .parse()
        .unwrap();
    (total, data)
}

/// A number printed as `<word> N` in the summary line.
pub fn summary_number(stdout: &str, word: &str) -> u64 {
    let rest = stdout
        .split(word)
        .nth(1)
        .unwrap_or_else(|| panic!("no {word:?} in {stdout:?}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

async fn tracker_metric(lab: &Lab, sample: &str) -> f64 {
    let body = http_get(lab.tracker.metrics, "/metrics", None).await;
    body.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_and_a_directory_arrive_intact_through_relays_from_two_seeders() {
    let lab = Lab::start(6).await;
    let size = 64 * MIB;
    let src = lab.dir.path().join("share/big.bin");
    random_file(&src, size, 1);
    let torrent = lab.make_torrent(&src, "big").await;
    let s1 = lab.seed(&torrent, &src, "seed1").await;
    let s2 = lab.seed(&torrent, &src, "seed2").await;

    let out = lab.dir.path().join("got");
    let o = run(lab.get(&torrent, &out, "getter"), GET_LIMIT).await;
    let stdout = text(&o.stdout);
    assert!(
        o.status.success(),
        "get failed: {stdout}\n{}",
        text(&o.stderr)
    );
    assert!(same_file(&src, &out.join("big.bin")), "content differs");

    let up = uploads(&[&s1, &s2], size as f64).await;
    assert!(up.iter().all(|u| *u > 0.0), "both seeders serve: {up:?}");
    // Every peer relays for others: a seeder can be a relay on the
    // downloader's circuit to the other seeder, so count them all.
    let relayed = lab.relay_sum("anomos_relay_bytes_total").await
        + s1.metric("anomos_relay_bytes_total").await
        + s2.metric("anomos_relay_bytes_total").await;
    assert!(
        relayed >= 2.0 * size as f64,
        "relays carried {relayed} bytes for a {size}-byte file"
    );
    // The data time (first block to the end) is reported and within the run.
    let (total, data) = summary_times(&stdout);
    assert!(data > 0.0 && data <= total + 0.05, "{data} s of {total} s");
    // No circuit with fewer than 2 relays: not at the downloader's end…
    let relays = circuit_relays(&stdout);
    assert!(!relays.is_empty(), "no circuit open at the end");
    assert!(relays.iter().all(|r| *r >= 2), "{relays:?}");
    // …and none ever planned by the tracker.
    let planned = tracker_metric(&lab, "anomos_tracker_path_relays_count").await;
    let short = tracker_metric(&lab, "anomos_tracker_path_relays_bucket{le=\"1\"}").await;
    assert!(planned >= 2.0, "{planned} paths planned");
    assert_eq!(short, 0.0, "paths with fewer than 2 relays were planned");

    // A multi-file directory, nested, with an empty file, from two more
    // seeders of that torrent.
    let tree = lab.dir.path().join("share/tree");
    random_file(&tree.join("a.bin"), 5 * MIB + 123, 2);
    random_file(&tree.join("sub/b.bin"), 3 * MIB, 3);
    random_file(&tree.join("sub/deeper/c.txt"), 1000, 4);
    std::fs::write(tree.join("sub/empty"), b"").unwrap();
    let torrent = lab.make_torrent(&tree, "tree").await;
    let s3 = lab.seed(&torrent, &tree, "seed3").await;
    let s4 = lab.seed(&torrent, &tree, "seed4").await;
    let o = run(lab.get(&torrent, &out, "getter2"), GET_LIMIT).await;
    assert!(o.status.success(), "get failed: {}", text(&o.stderr));
    for f in ["a.bin", "sub/b.bin", "sub/deeper/c.txt", "sub/empty"] {
        assert!(
            same_file(&tree.join(f), &out.join("tree").join(f)),
            "{f} differs"
        );
    }
    let up = uploads(&[&s3, &s4], (8 * MIB) as f64).await;
    assert!(up.iter().sum::<f64>() >= (8 * MIB) as f64, "{up:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_download_resumes_and_fetches_little_more_than_was_missing() {
    let lab = Lab::start(6).await;
    let size = 64 * MIB;
    let src = lab.dir.path().join("share/big.bin");
    random_file(&src, size, 5);
    let torrent = lab.make_torrent(&src, "big").await;
    let _s1 = lab.seed(&torrent, &src, "seed1").await;
    let _s2 = lab.seed(&torrent, &src, "seed2").await;

    let out = lab.dir.path().join("got");
    let first = Proc::spawn(lab.get(&torrent, &out, "getter"), "get").await;
    // SIGKILL once about half is verified (the counter is published four
    // times a second).
    let deadline = Instant::now() + GET_LIMIT;
    loop {
        let got = first.metric("anomos_downloaded_bytes_total").await;
        if got >= 0.4 * size as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "first run made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await;

    let o = run(lab.get(&torrent, &out, "getter"), GET_LIMIT).await;
    let stdout = text(&o.stdout);
    assert!(
        o.status.success(),
        "resumed get failed: {stdout}\n{}",
        text(&o.stderr)
    );
    assert!(same_file(&src, &out.join("big.bin")), "content differs");
    let resumed = summary_number(&stdout, "resumed");
    let fetched = summary_number(&stdout, "fetched");
    let meta = anomos_peer::app::read_torrent(&torrent).unwrap();
    let piece = u64::from(meta.piece_length());
    let pieces = u64::from(meta.layout().piece_count());
    assert!(
        resumed > 0 && resumed < pieces,
        "resumed {resumed} of {pieces}"
    );
    let missing = (pieces - resumed) * piece;
    eprintln!(
        "resume: {resumed} of {pieces} pieces kept, fetched {fetched} B for {missing} B missing"
    );
    assert!(
        fetched as f64 <= missing as f64 * 1.1,
        "fetched {fetched} bytes for {missing} missing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_and_bad_torrents_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f.bin");
    random_file(&src, 3 * MIB, 6);
    let torrent = dir.path().join("f.atorrent");
    let o = run(
        make_cmd(&src, &torrent, "https://127.0.0.1:9/"),
        Duration::from_secs(60),
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));

    // The seeder's data no longer matches: refused before any network.
    let mut data = std::fs::read(&src).unwrap();
    data[MIB + 7] ^= 1;
    std::fs::write(&src, &data).unwrap();
    let mut seed = anomos();
    seed.arg("seed").arg(&torrent).arg("--data").arg(&src);
    seed.args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("d"));
    let o = run(seed, Duration::from_secs(60)).await;
    one_line_failure(&o, "does not match the torrent");

    // Malformed torrents: garbage, truncated, empty, missing.
    let good = std::fs::read(&torrent).unwrap();
    let cases: [(&str, Vec<u8>); 3] = [
        ("garbage", b"this is not bencode".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join(format!("{name}.atorrent"));
        std::fs::write(&p, bytes).unwrap();
        let mut get = anomos();
        get.arg("get")
            .arg(&p)
            .arg("--out")
            .arg(dir.path().join("out"));
        let o = run(get, Duration::from_secs(60)).await;
        one_line_failure(&o, "not a valid .atorrent");
    }
    let mut get = anomos();
    get.arg("get").arg(dir.path().join("nope.atorrent"));
    get.arg("--out").arg(dir.path().join("out"));
    one_line_failure(&run(get, Duration::from_secs(60)).await, "nope.atorrent");
}

fn make_cmd(src: &Path, torrent: &Path, tracker: &str) -> tokio::process::Command {
    let mut c = anomos();
    c.arg("make-torrent").arg(src).args(["--tracker", tracker]);
    c.arg("-o").arg(torrent);
    c
}

/// Exit code ≠ 0, no panic, and exactly one line on stderr mentioning `what`.
pub fn one_line_failure(o: &std::process::Output, what: &str) {
    let err = text(&o.stderr);
    assert!(!o.status.success(), "succeeded: {err}");
    assert_ne!(o.status.code(), Some(101), "panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line: {err:?}");
    assert!(lines[0].contains(what), "{err:?} does not mention {what:?}");
}
