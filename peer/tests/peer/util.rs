//! Test harness: tracker config, relay processes, metrics scraping.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anomos_peer::config::PeerConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A tracker for tests: loopback, same-IP neighbours, a session TTL long
/// enough that only `stopped` removes a peer quickly, and an announce
/// interval long enough that an early re-announce stands out (the overlay
/// links up through early announces: the newcomer dials, and an unknown
/// NID on an incoming link makes the other end announce at once).
pub fn tracker_config(dir: &Path) -> tracker::config::Config {
    tracker::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        allow_same_ip: true,
        announce_interval_secs: ANNOUNCE_INTERVAL_SECS,
        session_ttl_secs: 120,
        rate_per_ip: 10_000.0,
        burst_per_ip: 10_000.0,
        rate_per_peer: 100.0,
        burst_per_peer: 100.0,
        ..tracker::config::Config::default()
    }
}

/// The tracker's announce interval in the tests.
pub const ANNOUNCE_INTERVAL_SECS: u64 = 10;

/// Sum of every sample of `name` (all label values) in Prometheus text.
pub fn sample_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|r| r.starts_with('{') || r.starts_with(' '))
        .filter_map(|r| r.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// Announces the tracker has answered, all results.
pub async fn tracker_announces(t: &tracker::RunningTracker) -> f64 {
    let body = http_get(t.operator_addr, "/metrics", Some(&t.admin_token)).await;
    sample_sum(&body, "anomos_tracker_announces_total")
}

/// Settings shared by relay processes and in-process peers.
pub const PEER_TOML: &str =
    "min_announce_gap_ms = 200\ndial_retry_ms = 100\ndial_retry_max_ms = 2000\n\
                             tracker_retry_ms = 200\ntracker_retry_max_ms = 2000\n";

/// An in-process peer config.
pub fn peer_config(t: &tracker::RunningTracker) -> PeerConfig {
    let mut cfg: PeerConfig = toml::from_str(PEER_TOML).unwrap();
    cfg.tracker = format!("https://{}", t.api_addr);
    cfg.tracker_pin = Some(t.pin);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.metrics = Some("127.0.0.1:0".parse().unwrap());
    cfg.ephemeral = true;
    cfg
}

/// One `anomos relay` process.
pub struct Relay {
    pub child: Child,
    /// Its identity, read from its data dir.
    pub peer_id: anomos_common::PeerId,
    pub metrics: SocketAddr,
    _stdout: BufReader<tokio::process::ChildStdout>,
}

impl Relay {
    /// Start a relay against `t`, persisting its identity under `dir`.
    pub async fn start(t: &tracker::RunningTracker, dir: &Path) -> Relay {
        std::fs::create_dir_all(dir).unwrap();
        let cfg = dir.join("relay.toml");
        std::fs::write(&cfg, PEER_TOML).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_anomos"))
            .arg("relay")
            .args(["--tracker", &format!("https://{}", t.api_addr)])
            .args(["--tracker-pin", &t.pin.to_hex()])
            .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(out);
        let read = out.read_line(&mut line);
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("relay start-up line")
            .unwrap();
        // "anomos relay <id> listening on <addr> metrics <addr>"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[..2], ["anomos", "relay"], "{line}");
        let url =
            anomos_peer::net::tracker_client::TrackerUrl::parse(&format!("https://{}", t.api_addr))
                .unwrap();
        let id_dir = anomos_peer::identity_store::identity_dir(dir, &url);
        let id = anomos_peer::identity_store::load_or_create(&id_dir, false).unwrap();
        Relay {
            _stdout: out,
            peer_id: id.peer_id(),
            child,
            metrics: words[7].parse().unwrap(),
        }
    }

    /// SIGTERM, then the exit code.
    pub async fn terminate(mut self) -> i32 {
        let pid = self.child.id().unwrap().to_string();
        let st = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(st.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("relay did not exit after SIGTERM")
            .unwrap();
        status.code().unwrap_or(-1)
    }

    /// SIGKILL: the process dies without a word to anyone.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// GET over plain HTTP; the body.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The value of an unlabelled (or fully labelled) sample in Prometheus text.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// A metric of a peer's operator listener.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    sample(&http_get(addr, "/metrics", None).await, name)
}

/// `graph_edges` from the tracker's admin status page.
pub async fn tracker_edges(t: &tracker::RunningTracker) -> usize {
    let body = http_get(t.operator_addr, "/status", Some(&t.admin_token)).await;
    sample(&body, "graph_edges") as usize
}
