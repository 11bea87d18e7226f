//! `tracker-only`: the tracker's announce service under load, alone.
//!
//! Phase 1 registers `N` simulated peers (`Started`, one torrent each from
//! a small set, no circuits wanted). Phase 2 sends heartbeats round-robin
//! over the peers on `C` keep-alive HTTPS connections, as fast as the
//! tracker answers, for a warm-up and then the measured duration. The
//! report gives announces/s, latency quantiles, errors by status, and —
//! when the tracker is a local process — its memory and CPU use.
//!
//! The simulated peers announce a closed port on 127.0.0.1, so the
//! tracker's reachability dial is refused at once: they stay unreachable,
//! get no neighbours and never relay. The run therefore measures the
//! announce path (TLS, decoding, signature check, replay and rate checks,
//! the session and graph actors) and per-peer state, not neighbour
//! assignment or circuit planning (see `tracker/benches/planner.rs`).

#[path = "tracker_only/drive.rs"]
mod drive;

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anomos_common::Pin;
use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::client::connector;
use crate::procstat::{load_average, ProcReader, ProcSample};
use crate::report::Phase;
use crate::sim::{self, SimConfig};
use crate::spawn::SpawnedTracker;
use drive::{run_phase, Jobs, Target};

/// Limits the spawned tracker runs with, so that one machine's simulated
/// peers are not throttled as one abusive client: every announce comes
/// from 127.0.0.1 (per-address limit 50/s by default) and a small run
/// cycles each identity many times a second (per-identity 2/s). Failed
/// reachability checks are not retried during a run, and sessions outlive
/// it, so background work does not blur the announce figures.
pub const SPAWN_TOML: &str = "\
rate_per_ip = 1000000000.0
burst_per_ip = 1000000000.0
rate_per_peer = 1000000.0
burst_per_peer = 1000000.0
reach_timeout_ms = 1000
reach_retry_secs = 3600
reach_retry_max_secs = 3600
session_ttl_secs = 3600
";

/// Which tracker to load.
#[derive(Debug, Clone)]
pub enum TrackerTarget {
    /// Start `anomos-tracker` from this path on 127.0.0.1.
    Spawn {
        /// The binary.
        bin: PathBuf,
    },
    /// A tracker already running.
    External {
        /// Its API address.
        addr: SocketAddr,
        /// Its certificate pin.
        pin: Pin,
        /// Its pid, when local, for memory and CPU readings.
        pid: Option<u32>,
    },
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The tracker.
    pub target: TrackerTarget,
    /// Simulated peer identities.
    pub identities: usize,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Measured heartbeat time.
    pub duration: Duration,
    /// Heartbeat time before measuring.
    pub warmup: Duration,
    /// Heartbeats to sign before phase 2 (0: sign each when sent).
    pub presign: usize,
    /// Distinct torrents the peers are spread over.
    pub torrents: usize,
    /// Threads of the load generator's runtime.
    pub client_threads: usize,
    /// Longest wait for any one announce.
    pub request_timeout: Duration,
    /// Longest registration phase.
    pub register_timeout: Duration,
}

/// The `--tracker` URL as an address: `https://HOST:PORT[/…]` or `HOST:PORT`.
pub fn parse_tracker_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to nothing"))
}

/// The whole report of a `tracker-only` run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `tracker-only`.
    pub mode: &'static str,
    /// The tracker's API address.
    pub tracker: String,
    /// Whether the load tester started the tracker.
    pub spawned: bool,
    /// Config lines the spawned tracker got on top of its defaults.
    pub tracker_config: Option<String>,
    /// Simulated identities.
    pub identities: usize,
    /// Connections.
    pub connections: usize,
    /// Load-generator threads.
    pub client_threads: usize,
    /// Warm-up seconds.
    pub warmup_secs: f64,
    /// Heartbeats signed before phase 2.
    pub presigned: usize,
    /// Seconds spent generating identities (all cores).
    pub identity_gen_secs: f64,
    /// Seconds spent pre-signing (all cores).
    pub presign_secs: f64,
    /// Phase 1.
    pub registration: Phase,
    /// Phase 2, measured window only.
    pub heartbeats: Phase,
    /// The tracker process (when local).
    pub tracker_process: Option<ProcessFigures>,
    /// This process during the measured window.
    pub client_cpu_cores: f64,
    /// Load average (1, 5, 15 min) before the run.
    pub load_average_before: Option<[f64; 3]>,
    /// Load average after the run.
    pub load_average_after: Option<[f64; 3]>,
}

/// Memory and CPU of the tracker process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFigures {
    /// Its pid.
    pub pid: u32,
    /// Before any announce.
    pub idle: ProcSample,
    /// Right after registration.
    pub after_registration: ProcSample,
    /// At the end of the measured window.
    pub end: ProcSample,
    /// CPU cores used during the measured window (2.0 = both cores busy).
    pub cpu_cores_heartbeats: f64,
}

impl Report {
    /// The terminal summary.
    pub fn text(&self) -> String {
        let mut s = format!(
            "tracker-only: {} identities, {} connections, tracker {}{}\n",
            self.identities,
            self.connections,
            self.tracker,
            if self.spawned { " (spawned)" } else { "" }
        );
        s += &self.registration.line("registration");
        s += "\n";
        s += &self.heartbeats.line("heartbeats");
        s += "\n";
        if let Some(p) = &self.tracker_process {
            s += &format!(
                "tracker pid {}: RSS idle {:.1} MiB, after registration {:.1} MiB, end {:.1} MiB (peak {:.1} MiB); CPU {:.2} cores during heartbeats\n",
                p.pid,
                mib(p.idle.rss_kib),
                mib(p.after_registration.rss_kib),
                mib(p.end.rss_kib),
                mib(p.end.hwm_kib),
                p.cpu_cores_heartbeats
            );
        }
        s += &format!(
            "load generator CPU {:.2} cores; load average before {:?}, after {:?}\n",
            self.client_cpu_cores, self.load_average_before, self.load_average_after
        );
        s
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Run the mode; everything started here is stopped before it returns.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    if opts.identities == 0 || opts.connections == 0 {
        bail!("need at least one identity and one connection");
    }
    let load_before = load_average();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sim_cfg = SimConfig {
        torrents: opts.torrents,
        listen_port: closed_port()?,
    };
    let t = Instant::now();
    let peers = Arc::new(sim::generate(opts.identities, threads, sim_cfg)?);
    let identity_gen_secs = t.elapsed().as_secs_f64();

    let (spawned, addr, pin, pid) = match &opts.target {
        TrackerTarget::Spawn { bin } => {
            let s = SpawnedTracker::start(bin, SPAWN_TOML)?;
            let (a, p, pid) = (s.api, s.pin, s.pid());
            (Some(s), a, p, Some(pid))
        }
        TrackerTarget::External { addr, pin, pid } => (None, *addr, *pin, *pid),
    };
    let proc_reader = pid.map(|p| ProcReader::new(Some(p)));
    let sample = || proc_reader.as_ref().map(|r| r.sample()).transpose();
    let client_reader = ProcReader::new(None);
    let idle = sample()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads.max(1))
        .enable_all()
        .build()?;
    let target = Target {
        addr,
        pin,
        timeout: opts.request_timeout,
    };
    let connector = connector()?;

    let start = Instant::now();
    let register = Arc::new(drive::Phase::new(
        peers.clone(),
        sim_cfg,
        Jobs::Register,
        start,
        start + opts.register_timeout,
    ));
    let reg = rt.block_on(run_phase(&connector, &target, register, opts.connections))?;
    let registration = reg.summary(start.elapsed().as_secs_f64());
    let after_registration = sample()?;

    let t = Instant::now();
    let presigned = sim::sign_many(&peers, &sim_cfg, opts.presign, crate::unix_now(), threads)?;
    let presign_secs = t.elapsed().as_secs_f64();
    let n_presigned = presigned.len();

    let begin = Instant::now();
    let window_start = begin + opts.warmup;
    let window_end = window_start + opts.duration;
    let heartbeat = Arc::new(drive::Phase::new(
        peers.clone(),
        sim_cfg,
        Jobs::Heartbeat {
            presigned,
            signed_at: begin,
        },
        window_start,
        window_end,
    ));
    let (hb, marks) = rt.block_on(async {
        // Readings at the window's edges, taken while the load runs.
        let marks = tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            let a = (Instant::now(), sample_opt(pid), client_reader.sample().ok());
            tokio::time::sleep_until(window_end.into()).await;
            let b = (Instant::now(), sample_opt(pid), client_reader.sample().ok());
            (a, b)
        });
        let hb = run_phase(&connector, &target, heartbeat, opts.connections).await;
        (hb, marks.await)
    });
    let hb = hb?;
    let ((t0, tr0, cl0), (t1, tr1, cl1)) = marks?;
    let wall = t1.duration_since(t0).as_secs_f64().max(1e-9);
    let heartbeats = hb.summary(opts.duration.as_secs_f64());
    let cores = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => ((b.cpu_secs - a.cpu_secs) / wall * 100.0).round() / 100.0,
        _ => 0.0,
    };
    let tracker_process = match (pid, idle, after_registration, tr1) {
        (Some(pid), Some(idle), Some(after_registration), Some(end)) => Some(ProcessFigures {
            pid,
            idle,
            after_registration,
            end,
            cpu_cores_heartbeats: cores(tr0, tr1),
        }),
        _ => None,
    };
    drop(rt);
    if let Some(s) = spawned {
        s.stop()?;
    }
    Ok(Report {
        mode: "tracker-only",
        tracker: addr.to_string(),
        spawned: matches!(opts.target, TrackerTarget::Spawn { .. }),
        tracker_config: matches!(opts.target, TrackerTarget::Spawn { .. })
            .then(|| SPAWN_TOML.to_owned()),
        identities: opts.identities,
        connections: opts.connections,
        client_threads: opts.client_threads,
        warmup_secs: opts.warmup.as_secs_f64(),
        presigned: n_presigned,
        identity_gen_secs: round3(identity_gen_secs),
        presign_secs: round3(presign_secs),
        registration,
        heartbeats,
        tracker_process,
        client_cpu_cores: cores(cl0, cl1),
        load_average_before: load_before,
        load_average_after: load_average(),
    })
}

fn sample_opt(pid: Option<u32>) -> Option<ProcSample> {
    pid.and_then(|p| ProcReader::new(Some(p)).sample().ok())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A loopback port nobody listens on: bind an ephemeral one and let it go.
fn closed_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_urls_parse() {
        let a = parse_tracker_url("https://127.0.0.1:8443/v1/announce").unwrap();
        assert_eq!(a, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            parse_tracker_url("127.0.0.1:9").unwrap().port(),
            9,
            "scheme is optional"
        );
        assert!(parse_tracker_url("https://127.0.0.1").is_err());
    }

    #[test]
    fn spawn_config_is_accepted_by_the_tracker() {
        let toml = format!("listen = \"127.0.0.1:0\"\n{SPAWN_TOML}");
        let cfg: tracker::config::Config = toml::from_str(&toml).unwrap();
        cfg.validate().unwrap();
        assert!(cfg.rate_per_ip >= 1e6 && cfg.rate_per_peer >= 1e6);
    }
}
