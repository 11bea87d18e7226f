//! Driving one `circuit` run: start the network, wait for the overlay,
//! run the phases through the origin endpoint, read `/metrics` and `/proc`,
//! and stop everything (see the parent module for the phases).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::children::{http_get, sample, EndpointProc, RelayProc};
use super::endpoint::Reply;
use super::{CircuitArgs, CpuUse, Idle, NsPerByte, RelayMemory, Report, Setup};
use crate::histogram::Histogram;
use crate::network::prom::{Hist, Scrape};
use crate::procstat::{load_average, ProcReader, ProcSample};
use crate::report::Latency;
use crate::spawn::{sibling_bin, SpawnedTracker};

/// The origin's CREATE → open histogram.
const SETUP_HISTOGRAM: &str = "anomos_circuit_setup_seconds";
/// Longest wait for the overlay to link up.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(120);
/// The tracker's default lower bound of neighbours per peer.
const MIN_NEIGHBOURS: usize = 4;

/// The tracker's config for a run: same-IP peers, fixed path length, a
/// short announce interval, an admin token for `/status`, and rate limits
/// out of the way (every peer shares 127.0.0.1, and the origin announces
/// once per circuit: the tracker plans at most one circuit per source per
/// announce, and the run has one exit).
pub fn tracker_toml(a: &CircuitArgs, admin_token: &str) -> String {
    format!(
        "allow_same_ip = true\nadmin_token = \"{admin_token}\"\n\
         announce_interval_secs = {ai}\nsession_ttl_secs = {ttl}\n\
         min_relays = {r}\nmax_relays = {r}\n\
         rate_per_ip = 1000000000.0\nburst_per_ip = 1000000000.0\n\
         rate_per_peer = 1000000.0\nburst_per_peer = 1000000.0\n",
        ai = a.announce_interval,
        ttl = (a.announce_interval * 3).max(120),
        r = a.relays,
    )
}

/// Run the mode; everything started here is stopped before it returns.
pub fn run(a: &CircuitArgs) -> anyhow::Result<Report> {
    if a.relays == 0 || a.relay_processes < a.relays || a.size == 0 {
        bail!("need 0 < --relays <= --relay-processes and --size > 0");
    }
    if a.idle_circuits < a.circuits {
        bail!("--idle-circuits counts the --circuits set-up ones: it must not be smaller");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let limit = Duration::from_secs(a.timeout);
    rt.block_on(async {
        tokio::time::timeout(limit, drive(a))
            .await
            .with_context(|| format!("run exceeded --timeout {} s", a.timeout))?
    })
}

async fn drive(a: &CircuitArgs) -> anyhow::Result<Report> {
    let load_average_before = load_average();
    let exe = std::env::current_exe()?;
    let tracker_bin = a
        .tracker_bin
        .clone()
        .map_or_else(|| sibling_bin("anomos-tracker"), Ok)?;
    let peer_bin = a
        .peer_bin
        .clone()
        .map_or_else(|| sibling_bin("anomos"), Ok)?;
    let dir = tempfile::Builder::new()
        .prefix("anomos-circuit-")
        .tempdir()?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let tracker = SpawnedTracker::start(&tracker_bin, &tracker_toml(a, &token))?;
    // The report shows the config without the run's admin token.
    let tracker_config = tracker_toml(a, "(per-run token)");
    let url = format!("https://{}", tracker.api);
    let pin = tracker.pin.to_hex();

    let mut relays = Vec::new();
    for i in 0..a.relay_processes {
        let d = dir.path().join(format!("relay{i}"));
        relays.push(RelayProc::start(&peer_bin, &url, &pin, &d).await?);
    }
    let bytes = a.size << 20;
    let common = [
        "--tracker".to_owned(),
        url,
        "--tracker-pin".to_owned(),
        pin,
        "--infohash".to_owned(),
        hex::encode(rand::random::<[u8; 32]>()),
        "--seed".to_owned(),
        rand::random::<u64>().to_string(),
        "--bytes".to_owned(),
        bytes.to_string(),
        "--deadline-secs".to_owned(),
        (a.timeout + 30).to_string(),
    ];
    let args = |role: &str| [vec!["--role".to_owned(), role.to_owned()], common.to_vec()].concat();
    let (exit, ready) =
        EndpointProc::start(&exe, &args("exit"), &dir.path().join("exit.log")).await?;
    let Reply::Ready {
        metrics: exit_m,
        tls: Some(tls),
    } = ready
    else {
        bail!("exit endpoint: unexpected first reply {ready:?}");
    };
    let (mut origin, ready) =
        EndpointProc::start(&exe, &args("origin"), &dir.path().join("origin.log")).await?;
    let Reply::Ready {
        metrics: origin_m, ..
    } = ready
    else {
        bail!("origin endpoint: unexpected first reply {ready:?}");
    };

    let t = Instant::now();
    let mut peers: Vec<SocketAddr> = relays.iter().map(|r| r.metrics).collect();
    peers.extend([origin_m, exit_m]);
    converge(tracker.operator, &token, &peers).await?;
    let overlay_secs = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pids: Vec<u32> = relays.iter().map(|r| r.pid).collect();
    let start = samples(&pids)?;

    let long = Duration::from_secs(a.timeout);
    let mut all = vec![origin.pid, exit.pid];
    all.extend(&pids);
    let mut plain_runs = Vec::new();
    for mode in ["link", "raw"] {
        let p0 = samples(&all[..2])?;
        let (transfer, cipher) = match origin.call(&format!("plain {tls} {mode}"), long).await? {
            Reply::Plain { transfer, cipher } => (transfer, cipher),
            r => bail!("plain: unexpected reply {r:?}"),
        };
        let p1 = samples(&all[..2])?;
        let ns = NsPerByte::from_cpu(
            p1[0].cpu_secs - p0[0].cpu_secs,
            p1[1].cpu_secs - p0[1].cpu_secs,
            &[],
            transfer.bytes,
        );
        plain_runs.push((transfer, cipher, ns));
    }
    let (plain_raw, _, plain_raw_ns_per_byte) = plain_runs.pop().context("plain run")?;
    let (plain, plain_cipher, plain_ns_per_byte) = plain_runs.pop().context("plain run")?;
    let (cpu0, bytes0, t0) = (samples(&all)?, relay_bytes(&relays).await?, Instant::now());
    let (circuit, circuit_relays) = match origin.call("circuit", long).await? {
        Reply::Circuit { transfer, relays } => (transfer, relays),
        r => bail!("circuit: unexpected reply {r:?}"),
    };
    let wall = t0.elapsed().as_secs_f64().max(1e-9);
    let (cpu1, bytes1) = (samples(&all)?, relay_bytes(&relays).await?);
    let cores: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(x, y)| ((y.cpu_secs - x.cpu_secs) / wall * 100.0).round() / 100.0)
        .collect();
    let used: Vec<f64> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(x, y)| y.cpu_secs - x.cpu_secs)
        .collect();
    let relay_bytes: Vec<u64> = bytes0.iter().zip(&bytes1).map(|(x, y)| y - x).collect();
    let relay_use: Vec<(f64, u64)> = used[2..].iter().copied().zip(relay_bytes.clone()).collect();
    let circuit_ns_per_byte = NsPerByte::from_cpu(used[0], used[1], &relay_use, circuit.bytes);
    let circuit_cpu = CpuUse {
        origin: cores[0],
        exit: cores[1],
        relays: cores[2..].to_vec(),
        relay_bytes,
    };

    // Let the transfer circuit close before the memory baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = samples(&pids)?;
    let h0 = Scrape::parse(&http_get(origin_m, "/metrics", None).await?).histogram(SETUP_HISTOGRAM);
    let times_us = match origin.call(&format!("setup {}", a.circuits), long).await? {
        Reply::Setup { times_us } => times_us,
        r => bail!("setup: unexpected reply {r:?}"),
    };
    let h1 = Scrape::parse(&http_get(origin_m, "/metrics", None).await?).histogram(SETUP_HISTOGRAM);
    let setup = setup_figures(&times_us, &h1.since(&h0));

    let rest = a.idle_circuits - a.circuits;
    let (circuits_held, fill_secs) = match origin.call(&format!("open {rest}"), long).await? {
        Reply::Opened { held, secs } => (held, secs),
        r => bail!("open: unexpected reply {r:?}"),
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = samples(&pids)?;
    let mut counts = Vec::new();
    for r in &relays {
        let text = http_get(r.metrics, "/metrics", None).await?;
        counts.push(sample(&text, "anomos_circuits_active") as u64);
    }
    let endpoints = samples(&[origin.pid, exit.pid])?;
    let idle = idle_figures(
        circuits_held,
        fill_secs,
        &pids,
        &start,
        &before,
        &with,
        &counts,
        &endpoints,
    );
    match origin.call("close", long).await? {
        Reply::Closed { .. } => {}
        r => bail!("close: unexpected reply {r:?}"),
    }

    origin.quit().await;
    exit.quit().await;
    for r in relays {
        r.kill().await;
    }
    if let Err(e) = tracker.stop() {
        eprintln!("warning: {e:#}");
    }
    let ratio_to = |p: &super::pattern::Transfer| {
        if p.mib_per_sec > 0.0 {
            (circuit.mib_per_sec / p.mib_per_sec * 1000.0).round() / 1000.0
        } else {
            0.0
        }
    };
    let (ratio, ratio_raw) = (ratio_to(&plain), ratio_to(&plain_raw));
    Ok(Report {
        mode: "circuit",
        relays_per_circuit: a.relays,
        relay_processes: a.relay_processes,
        bytes,
        tracker_config,
        overlay_secs: (overlay_secs * 10.0).round() / 10.0,
        plain,
        plain_cipher,
        circuit,
        circuit_relays,
        ratio,
        plain_raw,
        ratio_raw,
        plain_raw_ns_per_byte,
        circuit_cpu,
        circuit_ns_per_byte,
        plain_ns_per_byte,
        setup,
        idle,
        load_average_before,
        load_average_after: load_average(),
    })
}

/// `/proc` readings of each pid, in order.
fn samples(pids: &[u32]) -> anyhow::Result<Vec<ProcSample>> {
    pids.iter()
        .map(|p| ProcReader::new(Some(*p)).sample())
        .collect()
}

async fn relay_bytes(relays: &[RelayProc]) -> anyhow::Result<Vec<u64>> {
    let mut v = Vec::new();
    for r in relays {
        let text = http_get(r.metrics, "/metrics", None).await?;
        v.push(sample(&text, "anomos_relay_bytes_total") as u64);
    }
    Ok(v)
}

/// Wait until every peer holds the links the tracker assigned: the degrees
/// the peers report add up to twice the tracker's edges, each is at least
/// the tracker's lower bound (or every other peer, in small networks), and
/// that holds for three readings in a row.
async fn converge(operator: SocketAddr, token: &str, peers: &[SocketAddr]) -> anyhow::Result<()> {
    let min = MIN_NEIGHBOURS.min(peers.len() - 1) as f64;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut stable = 0;
    loop {
        let mut degrees = Vec::new();
        for m in peers {
            let text = http_get(*m, "/metrics", None).await?;
            degrees.push(sample(&text, "anomos_neighbors_connected"));
        }
        let edges = sample(
            &http_get(operator, "/status", Some(token)).await?,
            "graph_edges",
        );
        let sum: f64 = degrees.iter().sum();
        let ok = degrees.iter().all(|d| *d >= min) && sum == 2.0 * edges;
        stable = if ok { stable + 1 } else { 0 };
        if stable >= 3 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("overlay did not link up: degrees {degrees:?}, tracker edges {edges}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn setup_figures(times_us: &[u64], h: &Hist) -> Setup {
    let mut hist = Histogram::default();
    for t in times_us {
        hist.record(*t);
    }
    let bound = |q| h.quantile_bound(q).map(|s| s * 1000.0);
    Setup {
        circuits: times_us.len(),
        time_to_circuit: Latency::from(&hist),
        create_to_open_p50_ms_at_most: bound(0.5),
        create_to_open_p90_ms_at_most: bound(0.9),
        create_to_open_p99_ms_at_most: bound(0.99),
        create_to_open_mean_ms: if h.count > 0.0 {
            (h.sum / h.count * 1e6).round() / 1e3
        } else {
            0.0
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn idle_figures(
    circuits_held: usize,
    fill_secs: f64,
    pids: &[u32],
    start: &[ProcSample],
    before: &[ProcSample],
    with: &[ProcSample],
    counts: &[u64],
    endpoints: &[ProcSample],
) -> Idle {
    let relays: Vec<RelayMemory> = (0..pids.len())
        .map(|i| RelayMemory {
            pid: pids[i],
            start: start[i],
            before: before[i],
            with_circuits: with[i],
            circuits: counts[i],
            bytes_per_circuit: (counts[i] > 0).then(|| {
                (with[i].rss_kib as f64 - before[i].rss_kib as f64) * 1024.0 / counts[i] as f64
            }),
        })
        .collect();
    let busiest = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap_or(0);
    let mut per: Vec<f64> = relays.iter().filter_map(|r| r.bytes_per_circuit).collect();
    per.sort_by(f64::total_cmp);
    Idle {
        circuits_held,
        fill_secs: (fill_secs * 10.0).round() / 10.0,
        relays,
        busiest,
        median_bytes_per_circuit: per.get(per.len() / 2).copied().unwrap_or(0.0).round(),
        endpoint_rss_kib: [
            endpoints.first().map_or(0, |s| s.rss_kib),
            endpoints.get(1).map_or(0, |s| s.rss_kib),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: CircuitArgs,
    }

    #[test]
    fn tracker_accepts_the_run_config() {
        let a = T::parse_from(["t", "--relays", "3"]).a;
        let toml = format!("listen = \"127.0.0.1:0\"\n{}", tracker_toml(&a, "ab12"));
        let cfg: tracker::config::Config = toml::from_str(&toml).unwrap();
        cfg.validate().unwrap();
        assert_eq!((cfg.min_relays, cfg.max_relays), (3, 3));
        assert!(cfg.allow_same_ip);
        assert_eq!(cfg.admin_token.as_deref(), Some("ab12"));
    }

    #[test]
    fn ns_per_byte_sums_only_the_path() {
        // 1 GB: 1 s of CPU is 1 ns per byte.
        let n = NsPerByte::from_cpu(1.0, 2.0, &[(0.5, 10), (0.01, 0), (1.5, 10)], 1_000_000_000);
        assert_eq!((n.origin, n.exit), (1.0, 2.0));
        assert_eq!(n.relays, [0.5, 0.01, 1.5]);
        assert_eq!(n.path_total, 5.0, "the idle relay is off the path");
        let p = NsPerByte::from_cpu(0.25, 0.25, &[], 1_000_000_000);
        assert_eq!(p.path_total, 0.5);
        assert!(p.relays.is_empty());
    }

    #[test]
    fn idle_figures_pick_the_busiest_relay() {
        let s = |kib| ProcSample {
            rss_kib: kib,
            ..ProcSample::default()
        };
        let f = idle_figures(
            10,
            1.0,
            &[1, 2],
            &[s(100), s(100)],
            &[s(100), s(110)],
            &[s(104), s(130)],
            &[4, 10],
            &[s(7), s(8)],
        );
        assert_eq!(f.busiest, 1);
        assert_eq!(f.relays[0].bytes_per_circuit, Some(1024.0));
        assert_eq!(f.relays[1].bytes_per_circuit, Some(2048.0));
        assert_eq!(f.median_bytes_per_circuit, 2048.0);
        assert_eq!(f.endpoint_rss_kib, [7, 8]);
        let h = Hist {
            buckets: vec![(0.005, 1.0), (f64::INFINITY, 2.0)],
            sum: 0.006,
            count: 2.0,
        };
        let s = setup_figures(&[1000, 3000], &h);
        assert_eq!(s.create_to_open_p50_ms_at_most, Some(5.0));
        assert_eq!(s.create_to_open_mean_ms, 3.0);
        assert_eq!(s.time_to_circuit.max_us, 3000);
    }
}
