//! A tiny `circuit` run end to end in CI, so the mode cannot rot: the real
//! `anomos-loadtest` binary starts the real `anomos-tracker`, three `anomos
//! relay` processes and its two endpoint processes on 127.0.0.1.

use super::{run_loadtest, sibling_bin};

/// A tiny `circuit` run: 3 relay processes, 8 MiB, 10 timed circuits, 20
/// held. Only completion and correctness are asserted (the machine is
/// shared): both transfers arrive intact, the circuit has the relays asked
/// for, every circuit opened, the relays carry them, and the JSON parses.
#[test]
fn circuit_small_run_moves_intact_bytes_and_writes_json() {
    let tracker = sibling_bin("tracker", "anomos-tracker");
    let peer = sibling_bin("peer", "anomos");
    let (stdout, r) = run_loadtest(&[
        "circuit".as_ref(),
        "--tracker-bin".as_ref(),
        tracker.as_os_str(),
        "--peer-bin".as_ref(),
        peer.as_os_str(),
        "--relay-processes".as_ref(),
        "3".as_ref(),
        "--relays".as_ref(),
        "2".as_ref(),
        "--size".as_ref(),
        "8".as_ref(),
        "--circuits".as_ref(),
        "10".as_ref(),
        "--idle-circuits".as_ref(),
        "20".as_ref(),
        "--timeout".as_ref(),
        "240".as_ref(),
    ]);
    assert!(stdout.contains("ratio circuit/plain"), "{stdout}");

    assert_eq!(r["mode"], "circuit");
    for t in ["plain", "plain_raw", "circuit"] {
        assert_eq!(r[t]["bytes"], 8 << 20, "{t}: {}", r[t]);
        assert_eq!(r[t]["intact"], true, "{t}: {}", r[t]);
    }
    assert_eq!(r["circuit_relays"], 2);
    // CPU is read in 10 ms ticks: 8 MiB may round to 0 on one process.
    for t in [
        "circuit_ns_per_byte",
        "plain_ns_per_byte",
        "plain_raw_ns_per_byte",
    ] {
        assert!(r[t]["path_total"].as_f64().unwrap() >= 0.0, "{t}: {}", r[t]);
    }
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
