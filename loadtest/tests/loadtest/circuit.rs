//! A tiny `circuit` run end to end in CI, so the mode cannot rot: the real
//! `anomos-loadtest` binary starts the real `anomos-tracker`, three `anomos
//! relay` processes and its two endpoint processes on 127.0.0.1.

use super::sibling_bin;
use std::process::Command;

/// A tiny `circuit` run: 3 relay processes, 8 MiB, 10 timed circuits, 20
/// held. Only completion and correctness are asserted (the machine is
/// shared): both transfers arrive intact, the circuit has the relays asked
/// for, every circuit opened, the relays carry them, and the JSON parses.
#[test]
fn circuit_small_run_moves_intact_bytes_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("circuit.json");
    let out = Command::new(env!("CARGO_BIN_EXE_anomos-loadtest"))
        .arg("circuit")
        .arg("--tracker-bin")
        .arg(sibling_bin("tracker", "anomos-tracker"))
        .arg("--peer-bin")
        .arg(sibling_bin("peer", "anomos"))
        .args(["--relay-processes", "3", "--relays", "2", "--size", "8"])
        .args([
            "--circuits",
            "10",
            "--idle-circuits",
            "20",
            "--timeout",
            "240",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadtest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ratio circuit/plain"), "{stdout}");

    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["mode"], "circuit");
    for t in ["plain", "circuit"] {
        assert_eq!(r[t]["bytes"], 8 << 20, "{t}: {}", r[t]);
        assert_eq!(r[t]["intact"], true, "{t}: {}", r[t]);
    }
    assert_eq!(r["circuit_relays"], 2);
    assert!(r["plain_cipher"].as_str().unwrap().starts_with("TLSv1.3"));
    assert_eq!(r["setup"]["circuits"], 10);
    let idle = &r["idle"];
    assert_eq!(idle["circuits_held"], 20, "{idle}");
    let carried: u64 = idle["relays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["circuits"].as_u64().unwrap())
        .sum();
    assert_eq!(carried, 40, "20 circuits of 2 relays each: {idle}");
}
