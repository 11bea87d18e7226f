//! The fault suite: every test injects one fault for real — a signal to a
//! process, bytes on a socket, a full or read-only file system, a network
//! interface taken down — and asserts what the user and the operator see.
//! Everything is bounded in time and stops what it started; tests that need
//! root (mounts, namespaces, packet capture) print why and skip without it.
//!
//! Shared here: polling with a deadline, resident memory from `/proc`,
//! peer and tracker counters, the tracker's status page.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::lab::{Lab, Proc};
use crate::util::{http_get, sample};

#[path = "faults/tracker_restart.rs"]
mod tracker_restart;

#[path = "faults/malicious.rs"]
mod malicious;

#[path = "faults/memory.rs"]
mod memory;

#[path = "faults/memory_relay.rs"]
mod memory_relay;
pub use memory_relay::{endpoint, one_relay_path};

#[path = "faults/blackhole.rs"]
mod blackhole;

#[path = "faults/wire.rs"]
mod wire;

#[path = "faults/disk.rs"]
mod disk;

#[path = "faults/attacker.rs"]
mod attacker;

#[path = "faults/hostile_peer.rs"]
mod hostile_peer;

#[path = "faults/netns.rs"]
mod netns;

#[path = "faults/relay_death.rs"]
mod relay_death;

/// Poll `f` every 20 ms until it holds or `limit` passes; the time it took.
pub async fn within<F, Fut>(limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The number after `word` in a summary line (trailing punctuation ignored).
pub fn number_after(line: &str, word: &str) -> u64 {
    let rest = line
        .split(word)
        .nth(1)
        .unwrap_or_else(|| panic!("no {word:?} in {line:?}"));
    let n = rest.split_whitespace().next().unwrap_or("");
    n.trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or_else(|_| panic!("no number after {word:?} in {line:?}"))
}

/// The relay carrying the most traffic right now (bytes relayed over
/// 300 ms), and what each has relayed in all.
pub async fn busiest(relays: &[Proc]) -> (usize, Vec<f64>) {
    let mut first = Vec::new();
    for r in relays {
        first.push(r.metric("anomos_relay_bytes_total").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut now = Vec::new();
    for r in relays {
        now.push(r.metric("anomos_relay_bytes_total").await);
    }
    let rate = |i: usize| now[i] - first[i];
    let best = (0..relays.len())
        .max_by(|&a, &b| rate(a).total_cmp(&rate(b)))
        .unwrap_or(0);
    (best, now)
}

/// Resident memory of a process, in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Announces a peer process had answered with success.
pub async fn announces_ok(p: &Proc) -> f64 {
    let body = http_get(p.metrics, "/metrics", None).await;
    sample(&body, "anomos_announces_total{result=\"ok\"}")
}

/// One labelled sample of a peer process (0 when absent).
pub async fn peer_sample(p: &Proc, name: &str) -> f64 {
    sample(&http_get(p.metrics, "/metrics", None).await, name)
}

/// A summed sample of a process that may have exited (`None` then).
pub async fn metric_if_up(p: &Proc, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(p.metrics).await.ok()?;
    let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(crate::util::sample_sum(&out, name))
}

/// One sample of the tracker's `/metrics`.
pub async fn tracker_sample(lab: &Lab, name: &str) -> f64 {
    sample(&http_get(lab.tracker.metrics, "/metrics", None).await, name)
}

/// Every announce the tracker answered, whatever the result.
pub async fn tracker_announces(lab: &Lab) -> f64 {
    let body = http_get(lab.tracker.metrics, "/metrics", None).await;
    crate::util::sample_sum(&body, "anomos_tracker_announces_total")
}

/// The tracker's `/status` page, with the admin token from its data dir.
pub async fn tracker_status(lab: &Lab) -> String {
    let token = admin_token(&lab.tracker_dir());
    http_get(lab.tracker.metrics, "/status", Some(&token)).await
}

/// The admin token the tracker keeps in its data dir.
pub fn admin_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Wait (bounded) until the tracker's graph is exactly the links the live
/// peers hold: their degrees add up to twice its edges, three polls in a
/// row. That only holds once every edge to a dead peer is gone.
pub async fn graph_matches_links(lab: &Lab, live: &[&Proc], limit: Duration) -> (f64, f64) {
    let deadline = Instant::now() + limit;
    let mut stable = 0;
    loop {
        let mut degrees = 0.0;
        for p in live {
            degrees += peer_sample(p, "anomos_neighbors_connected").await;
        }
        let edges = sample(&tracker_status(lab).await, "graph_edges");
        stable = if degrees == 2.0 * edges {
            stable + 1
        } else {
            0
        };
        if stable >= 3 {
            return (degrees, edges);
        }
        assert!(
            Instant::now() < deadline,
            "tracker graph ({edges} edges) never matched the links held ({degrees} ends)"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
