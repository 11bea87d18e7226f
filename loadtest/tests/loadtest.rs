//! The load tester's end-to-end runs, one test binary: a tiny
//! `tracker-only` run here, a tiny `circuit` run in `circuit`, tiny
//! `network` runs (in-process, processes, namespaces) in `network`.
//!
//! A tiny `tracker-only` run end to end: the real `anomos-loadtest` binary
//! spawns the real `anomos-tracker` on 127.0.0.1, registers 50 peers and
//! sends heartbeats on 2 connections for 2 seconds. Numbers are not
//! asserted (the machine is shared); correctness is: every announce
//! succeeds and the JSON report is written and well-formed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

#[path = "loadtest/circuit.rs"]
mod circuit;
#[path = "loadtest/network.rs"]
mod network;

/// `target/<profile>/NAME` of package `package`, built on demand: `cargo
/// test --workspace` builds both binaries, `cargo test -p loadtest` alone
/// does not.
fn sibling_bin(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/loadtest-HASH → target/<profile>/
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join(name);
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .unwrap();
        assert!(status.success(), "building {name} failed");
    }
    assert!(bin.exists(), "no {name} binary at {}", bin.display());
    bin
}

/// Run `anomos-loadtest` with `args` and `--json` into a temporary file;
/// assert it exited 0 and return its stdout and the parsed JSON report.
fn run_loadtest(args: &[&OsStr]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_anomos-loadtest"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "loadtest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, report)
}

#[test]
fn tracker_only_small_run_succeeds_and_writes_json() {
    let tracker = sibling_bin("tracker", "anomos-tracker");
    let (stdout, report) = run_loadtest(&[
        "tracker-only".as_ref(),
        "--spawn".as_ref(),
        "--tracker-bin".as_ref(),
        tracker.as_os_str(),
        "--identities".as_ref(),
        "50".as_ref(),
        "--connections".as_ref(),
        "2".as_ref(),
        "--duration".as_ref(),
        "2".as_ref(),
        "--warmup".as_ref(),
        "0.5".as_ref(),
        "--presign".as_ref(),
        "100".as_ref(),
    ]);
    assert!(stdout.contains("heartbeats:"), "{stdout}");

    assert_eq!(report["mode"], "tracker-only");
    assert_eq!(report["spawned"], true);
    let reg = &report["registration"];
    assert_eq!(reg["ok"], 50, "every identity registered: {reg}");
    assert_eq!(reg["failed"], 0, "{reg}");
    let hb = &report["heartbeats"];
    assert!(hb["ok"].as_u64().unwrap() > 0, "{hb}");
    assert_eq!(hb["failed"], 0, "no heartbeat failed: {hb}");
    assert!(hb["latency"]["p99_us"].as_u64().unwrap() >= hb["latency"]["p50_us"].as_u64().unwrap());
    let p = &report["tracker_process"];
    assert!(p["end"]["rss_kib"].as_u64().unwrap() > 0, "{p}");
    assert!(p["end"]["hwm_kib"].as_u64().unwrap() >= p["end"]["rss_kib"].as_u64().unwrap());
}
