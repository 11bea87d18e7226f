//! Tiny `network` runs end to end in CI, so the mode cannot rot: a tracker,
//! four relays, one seeder and two downloaders of a 2 MiB torrent, in one
//! process (`inproc`), as processes on 127.0.0.1 (`procs`) and, where the
//! machine allows it, each peer in its own network namespace (`netns`).
//! Only correctness is asserted (the machine is shared): both downloads
//! complete with the right bytes, circuits were built, every byte crossed
//! relays, and the tracker and `/proc` figures are there.

use std::ffi::OsStr;
use std::process::Command;

use serde_json::Value;

use super::{run_loadtest, sibling_bin};

const MIB: u64 = 1 << 20;

/// The common part of the command line.
fn args(mode: &str) -> Vec<String> {
    [
        "network",
        "--mode",
        mode,
        "--relays",
        "4",
        "--seeders",
        "1",
        "--downloaders",
        "2",
        "--size",
        "2",
        "--hold",
        "1",
        "--timeout",
        "150",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn with_bins(mut v: Vec<String>) -> Vec<String> {
    let tracker = sibling_bin("tracker", "anomos-tracker");
    let peer = sibling_bin("peer", "anomos");
    v.extend(["--tracker-bin".into(), tracker.display().to_string()]);
    v.extend(["--peer-bin".into(), peer.display().to_string()]);
    v
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// What every mode must report for the tiny run.
fn check(r: &Value, network: &str) {
    assert_eq!(r["mode"], "network");
    assert_eq!(r["network"], network);
    assert_eq!(
        (u(&r["completed"]), u(&r["intact"])),
        (2, 2),
        "{}",
        r["downloads"]
    );
    for d in r["downloads"].as_array().unwrap() {
        assert_eq!(u(&d["bytes"]), 2 * MIB, "{d}");
        assert_eq!(d["complete"], true, "{d}");
        assert_eq!(d["intact"], true, "{d}");
        assert!(d["mib_per_sec"].as_f64().unwrap() > 0.0, "{d}");
    }
    let c = &r["circuits"];
    assert!(u(&c["built"]) > 0, "{c}");
    assert_eq!(u(&c["setup"]["count"]), u(&c["built"]), "{c}");
    assert!(c["setup"]["p99_ms_est"].as_f64().is_some(), "{c}");
    let t = &r["traffic"];
    let down = u(&t["downloaded_bytes"]);
    assert!(down >= 4 * MIB, "{t}");
    assert!(u(&t["uploaded_bytes"]) >= 4 * MIB, "{t}");
    // Every path has at least two relays, so every byte is relayed twice.
    assert!(u(&t["relay_bytes"]) >= 2 * down, "{t}");
    let k = &r["tracker"];
    assert!(u(&k["announces"]["ok"]) > 0, "{k}");
    assert!(u(&k["circuits_planned"]) >= u(&c["built"]), "{k}");
    assert!(u(&k["announce_latency"]["count"]) > 0, "{k}");
    assert!(u(&k["plan"]["count"]) > 0, "{k}");
    for role in r["roles"].as_array().unwrap() {
        assert!(u(&role["peak_rss_kib_max"]) > 0, "{role}");
    }
    assert!(r["memory"]["rss_per_idle_peer_kib"].as_f64().unwrap() > 0.0);
    assert_eq!(u(&r["problems"]["peers_unanswered"]), 0);
}

#[test]
fn network_procs_tiny_run_downloads_intact() {
    let a = with_bins(args("procs"));
    let os: Vec<&OsStr> = a.iter().map(OsStr::new).collect();
    let (stdout, r) = run_loadtest(&os);
    assert!(stdout.contains("2/2 complete"), "{stdout}");
    check(&r, "procs");
    assert_eq!(u(&r["processes"]), 8);
    let roles: Vec<&str> = r["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["downloader", "relay", "seeder", "tracker"]);
}

#[test]
fn network_inproc_tiny_run_downloads_intact() {
    let mut a = args("inproc");
    // The set-up probe, kept tiny: 3 probe circuits per phase, 4 held.
    for x in ["--probe", "3", "--probe-hold", "4", "--probe-peers", "2"] {
        a.push(x.into());
    }
    let os: Vec<&OsStr> = a.iter().map(OsStr::new).collect();
    let (_, r) = run_loadtest(&os);
    check(&r, "inproc");
    let probes = r["probes"].as_array().expect("probe phases");
    assert_eq!(probes.len(), 2);
    assert_eq!(probes[0]["phase"], "bulk");
    let idle = &probes[1];
    assert_eq!(idle["phase"], "idle");
    assert_eq!((u(&idle["probes"]), u(&idle["opened"])), (3, 3));
    assert_eq!(u(&idle["probes_during_bulk"]), 0);
    assert_eq!(u(&idle["held"]), 4);
    assert!(u(&idle["live_min"]) >= 4, "{idle}");
    assert!(idle["request_to_open"]["max_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(u(&idle["grant_to_open"]["count"]), 3);
    assert_eq!(u(&r["processes"]), 1);
    assert_eq!(r["circuits"]["live_exact"], true);
    assert!(
        u(&r["memory"]["process_rss_idle_kib"]) > u(&r["memory"]["process_rss_before_peers_kib"])
    );
}

/// Needs root (namespaces); the tool exits 77 where it may not create
/// them, and then this test only checks that it said so.
#[test]
fn network_netns_tiny_run_downloads_intact_or_skips() {
    let a = with_bins(args("netns"));
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let child = Command::new(env!("CARGO_BIN_EXE_anomos-loadtest"))
        .args(&a)
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let names = format!("anlt{}", child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    if out.status.code() == Some(77) {
        assert!(stderr.contains("netns mode skipped"), "{stderr}");
        assert!(r["skipped"].as_str().is_some(), "{r}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    check(&r, "netns");
    assert_eq!(u(&r["namespaces"]), 8, "7 peers and the hub");
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&names), "namespaces removed: {list}");
}
