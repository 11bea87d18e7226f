//! `anomos-loadtest`: command line and wiring only; see the library.

use std::path::PathBuf;
use std::time::Duration;

use anomos_common::Pin;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use loadtest::tracker_only::{self, Options, TrackerTarget};

/// Load tests for Anomos components.
#[derive(Debug, Parser)]
#[command(name = "anomos-loadtest", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The tracker's HTTPS announce service alone: register N simulated
    /// peers, then send heartbeats round-robin as fast as C keep-alive
    /// connections allow.
    ///
    /// An external tracker (--tracker) must have its limits raised for the
    /// test, or almost every announce is refused with 429: all simulated
    /// peers come from one address (rate_per_ip, default 50/s) and small
    /// runs repeat each identity quickly (rate_per_peer, default 2/s). Set
    /// in its TOML config, for example: rate_per_ip = 1e9, burst_per_ip =
    /// 1e9, rate_per_peer = 1e6, burst_per_peer = 1e6 (and
    /// reach_retry_secs = 3600 so background re-checks of the unreachable
    /// simulated peers stay out of the figures). --spawn does all that.
    TrackerOnly(TrackerOnlyArgs),
    /// The peer network layer on 127.0.0.1: a tracker, relay processes and
    /// two endpoint processes; plain TLS vs circuit throughput, circuit
    /// set-up latency, and relay memory per idle circuit.
    Circuit(loadtest::circuit::CircuitArgs),
    /// A whole network with real downloads: tracker, relays, seeders and
    /// downloaders in one process (--mode inproc), as processes on
    /// 127.0.0.1 (procs) or each peer in its own network namespace
    /// (netns); circuits, set-up latency, throughput, relay bytes, tracker
    /// announce and plan figures, CPU and memory by role.
    ///
    /// Exits 0 when every download completed intact, 1 when not (the
    /// report is still printed and written), 77 when --mode netns may not
    /// create namespaces here (skipped).
    Network(loadtest::network::NetworkArgs),
    /// One end of a `circuit` run (started by it; not for direct use).
    #[command(hide = true)]
    CircuitEndpoint(loadtest::circuit::endpoint::EndpointArgs),
}

#[derive(Debug, Args)]
struct TrackerOnlyArgs {
    /// API URL of a running tracker, e.g. https://127.0.0.1:8443.
    #[arg(long, requires = "tracker_pin", conflicts_with = "spawn")]
    tracker: Option<String>,
    /// Its certificate pin (`anomos-tracker pin`), 64 hex digits.
    #[arg(long)]
    tracker_pin: Option<String>,
    /// Its pid, to report its memory and CPU from /proc.
    #[arg(long)]
    tracker_pid: Option<u32>,
    /// Start anomos-tracker on 127.0.0.1 with a temporary data dir.
    #[arg(long, required_unless_present = "tracker")]
    spawn: bool,
    /// The tracker binary for --spawn [default: next to this executable].
    #[arg(long)]
    tracker_bin: Option<PathBuf>,
    /// Simulated peer identities.
    #[arg(long, default_value_t = 1000)]
    identities: usize,
    /// Concurrent keep-alive HTTPS connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Measured heartbeat seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Heartbeat seconds before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Heartbeats to sign before the heartbeat phase, so signing does not
    /// compete with the tracker for CPU (0: sign each one when sent).
    #[arg(long, default_value_t = 0)]
    presign: usize,
    /// Distinct torrents the peers are spread over.
    #[arg(long, default_value_t = 16)]
    torrents: usize,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Longest wait for one announce, seconds.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Longest registration phase, seconds.
    #[arg(long, default_value_t = 600.0)]
    register_timeout: f64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("bad --{what}"))
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().mode {
        Mode::TrackerOnly(a) => tracker_only_main(a),
        Mode::Circuit(a) => {
            let report = loadtest::circuit::run(&a)?;
            print!("{}", report.text());
            if let Some(path) = &a.json {
                loadtest::report::write_json(path, &report)?;
                println!("report written to {}", path.display());
            }
            Ok(())
        }
        Mode::CircuitEndpoint(a) => loadtest::circuit::endpoint::main(a),
        Mode::Network(a) => network_main(&a),
    }
}

/// Exit status of a `network --mode netns` run that could not create
/// namespaces (the automake convention for a skipped test).
const EXIT_SKIPPED: i32 = 77;

fn network_main(a: &loadtest::network::NetworkArgs) -> anyhow::Result<()> {
    let report = match loadtest::network::run(a) {
        Ok(r) => r,
        Err(e) if e.is::<loadtest::network::Skipped>() => {
            eprintln!("anomos-loadtest: {e}");
            if let Some(path) = &a.json {
                let skipped = serde_json::json!({
                    "mode": "network",
                    "network": a.mode.as_str(),
                    "skipped": e.to_string(),
                });
                loadtest::report::write_json(path, &skipped)?;
            }
            std::process::exit(EXIT_SKIPPED);
        }
        Err(e) => return Err(e),
    };
    print!("{}", report.text());
    if let Some(path) = &a.json {
        loadtest::report::write_json(path, &report)?;
        println!("report written to {}", path.display());
    }
    if report.intact < report.downloaders {
        eprintln!(
            "anomos-loadtest: {} of {} downloads completed intact",
            report.intact, report.downloaders
        );
        std::process::exit(1);
    }
    Ok(())
}

fn tracker_only_main(a: TrackerOnlyArgs) -> anyhow::Result<()> {
    let target = match (&a.tracker, a.spawn) {
        (Some(url), _) => TrackerTarget::External {
            addr: tracker_only::parse_tracker_url(url)?,
            pin: a
                .tracker_pin
                .as_deref()
                .and_then(Pin::from_hex)
                .context("--tracker-pin must be 64 hex digits")?,
            pid: a.tracker_pid,
        },
        (None, _) => TrackerTarget::Spawn {
            bin: match a.tracker_bin {
                Some(b) => b,
                None => loadtest::spawn::sibling_bin("anomos-tracker")?,
            },
        },
    };
    let opts = Options {
        target,
        identities: a.identities,
        connections: a.connections,
        duration: secs(a.duration, "duration")?,
        warmup: secs(a.warmup, "warmup")?,
        presign: a.presign,
        torrents: a.torrents,
        client_threads: a.client_threads,
        request_timeout: secs(a.request_timeout, "request-timeout")?,
        register_timeout: secs(a.register_timeout, "register-timeout")?,
    };
    let report = tracker_only::run(&opts)?;
    print!("{}", report.text());
    if let Some(path) = &a.json {
        loadtest::report::write_json(path, &report)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
