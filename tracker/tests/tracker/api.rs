//! Announce round trip, pins, operator endpoints and every bad-input class.

use std::time::Duration;

use anomos_common::api::{ApiErrorBody, ErrorCode, Message, PeerEvent};

use crate::util::{get, post, served_pin, test_config, TestPeer};

#[actix_rt::test]
async fn round_trip_pin_and_operator_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker::run(test_config(dir.path())).await.unwrap();
    assert_eq!(served_pin(t.api_addr).await, t.pin);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anomos-tracker"))
        .args(["pin", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        t.pin.to_hex()
    );

    let p = TestPeer::start().await;
    let resp = p.announce(t.api_addr, &p.request(PeerEvent::Started)).await;
    assert_eq!(resp.interval_secs, 60);
    assert!(resp.neighbours.is_empty(), "alone in the network");

    let (s, body) = get(t.operator_addr, "/healthz", None).await;
    assert_eq!((s, body.trim()), (200, "ok"));
    let (s, metrics) = get(t.operator_addr, "/metrics", None).await;
    assert_eq!(s, 200);
    assert!(
        metrics.contains("anomos_tracker_announces_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("anomos_tracker_peers 1"));
    assert_eq!(get(t.operator_addr, "/status", None).await.0, 401);
    assert_eq!(get(t.operator_addr, "/status", Some("wrong")).await.0, 401);
    let (s, status) = get(t.operator_addr, "/status", Some(&t.admin_token)).await;
    assert_eq!(s, 200);
    assert!(
        status.contains("peers 1") && status.contains("graph_vertices 1"),
        "{status}"
    );
    assert!(
        !status.contains(&p.peer_id().to_hex()),
        "status must not reveal peer ids"
    );
    assert!(
        !status.contains(&p.port.to_string()),
        "status must not reveal addresses"
    );
    let token_file = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    assert_eq!(token_file.trim(), t.admin_token);
    t.stop().await.unwrap();
}

fn code_of(body: &[u8]) -> ErrorCode {
    ApiErrorBody::decode(body).unwrap().code
}

#[actix_rt::test]
async fn bad_inputs_are_refused_and_honest_announces_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tracker::config::Config {
        rate_per_peer: 0.01,
        burst_per_peer: 3.0,
        ..test_config(dir.path())
    };
    let t = tracker::run(cfg).await.unwrap();
    let honest = TestPeer::start().await;
    let attacker = TestPeer::start().await;
    honest
        .announce(t.api_addr, &honest.request(PeerEvent::Started))
        .await;

    // 413: larger than the body limit.
    let (s, b) = post(t.api_addr, &vec![0u8; 64 * 1024 + 1]).await;
    assert_eq!((s, code_of(&b)), (413, ErrorCode::TooLarge));
    // 400: not a SignedAnnounce.
    let (s, b) = post(t.api_addr, b"hello tracker").await;
    assert_eq!((s, code_of(&b)), (400, ErrorCode::BadRequest));
    // Forged: the attacker signs an announce in the honest peer's name.
    let mut forged = anomos_common::api::SignedAnnounce::decode(
        &attacker.signed(&attacker.request(PeerEvent::Heartbeat)),
    )
    .unwrap();
    let victim = anomos_common::api::SignedAnnounce::decode(
        &honest.signed(&honest.request(PeerEvent::Heartbeat)),
    )
    .unwrap();
    forged.body = victim.body.clone();
    let (s, b) = post(t.api_addr, &forged.encode().unwrap()).await;
    assert_eq!((s, code_of(&b)), (401, ErrorCode::Unauthorized));
    let mut flipped = victim.clone();
    flipped.signature[0] ^= 1;
    let (s, b) = post(t.api_addr, &flipped.encode().unwrap()).await;
    assert_eq!((s, code_of(&b)), (401, ErrorCode::Unauthorized));
    // Stale: ten minutes in the past.
    let mut old = honest.request(PeerEvent::Heartbeat);
    old.timestamp -= 600;
    let (s, b) = post(t.api_addr, &honest.signed(&old)).await;
    assert_eq!((s, code_of(&b)), (401, ErrorCode::Stale));
    // Replayed: the same signed bytes twice.
    let once = attacker.signed(&attacker.request(PeerEvent::Started));
    assert_eq!(post(t.api_addr, &once).await.0, 200);
    let (s, b) = post(t.api_addr, &once).await;
    assert_eq!((s, code_of(&b)), (409, ErrorCode::Replayed));
    // Rate limited: the attacker's identity has burst 3 (one used above, one replay-free).
    let mut limited = 0;
    for _ in 0..4 {
        let (s, b) = post(
            t.api_addr,
            &attacker.signed(&attacker.request(PeerEvent::Heartbeat)),
        )
        .await;
        if s == 429 {
            assert_eq!(code_of(&b), ErrorCode::RateLimited);
            limited += 1;
        }
    }
    assert!(limited >= 2, "only {limited} announces rate limited");

    // None of that touched the honest peer.
    let resp = honest
        .announce(t.api_addr, &honest.request(PeerEvent::Heartbeat))
        .await;
    assert_eq!(
        resp.neighbours.len(),
        1,
        "honest peer sees the attacker as a neighbour"
    );
    use tracker::metrics::AnnounceResult as R;
    let m = &t.metrics;
    assert_eq!(m.announces(R::TooLarge), 1);
    assert_eq!(m.announces(R::BadRequest), 1);
    assert_eq!(m.announces(R::Unauthorized), 2);
    assert_eq!(m.announces(R::Stale), 1);
    assert_eq!(m.announces(R::Replayed), 1);
    assert_eq!(m.announces(R::RateLimited), limited);
    assert_eq!(m.announces(R::Ok), 3 + (4 - limited));
    tokio::time::sleep(Duration::from_millis(10)).await;
    t.stop().await.unwrap();
}

/// The real binary: prints where it listens and its pin (the same one
/// `anomos-tracker pin` prints), and exits cleanly on SIGTERM.
#[test]
fn binary_prints_pin_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_anomos-tracker");
    let mut child = std::process::Command::new(bin)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut served = None;
    for line in lines.by_ref().take(3) {
        let line = line.unwrap();
        if let Some(pin) = line.strip_prefix("tracker pin ") {
            served = Some(pin.to_owned());
        }
    }
    let out = std::process::Command::new(bin)
        .args(["pin", "--data-dir"])
        .arg(dir.path())
        .output();
    let printed = String::from_utf8(out.unwrap().stdout).unwrap();
    assert_eq!(served.as_deref(), Some(printed.trim()));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "tracker did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(dir.path().join("ledger.sqlite3").exists());
}
