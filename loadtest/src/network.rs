//! `network`: a whole Anomos network with real downloads.
//!
//! One run starts a tracker, `--relays` relay-only peers and `--seeders`
//! seeders (torrents of random data, each seeder serving one), waits until
//! they hold the links the tracker assigned, then starts `--downloaders`
//! downloads at once (each keeping `--circuits` circuits to sources, paths
//! of `--min-relays`..`--max-relays` relays), waits for all of them,
//! holds the network `--hold` seconds with every circuit still open, and
//! reads everything: each peer's and the tracker's `/metrics`, `/proc` of
//! every process, and the downloaded files against their sources.
//!
//! Three ways to host the peers (`--mode`):
//!
//! * `inproc` ([`inproc`]): tracker and every peer in this one process,
//!   `tracker::run` and `anomos_peer::run_peer` + the Swarm actor, peers
//!   spread over `--threads` actix arbiters — for scale (hundreds of
//!   peers on two cores);
//! * `procs` ([`procs`]): real `anomos-tracker` and `anomos relay | seed |
//!   get` processes on 127.0.0.1, as `scripts/demo.sh` runs them;
//! * `netns` ([`netns`]): the same processes, each peer in a network
//!   namespace of its own with its own 10.x address on a bridge, and the
//!   tracker *without* `allow_same_ip` — the deployment's rules.
//!
//! Everything is bounded by `--timeout`: children are killed on drop (also
//! when the run fails or panics), namespaces are deleted by a guard, and
//! SIGINT/SIGTERM end the run the same way.

#[path = "network/children.rs"]
mod children;
#[path = "network/figures.rs"]
pub mod figures;
#[path = "network/inproc.rs"]
mod inproc;
#[path = "network/netns.rs"]
pub mod netns;
#[path = "network/observe.rs"]
mod observe;
#[path = "network/probe.rs"]
pub mod probe;
#[path = "network/probing.rs"]
mod probing;
#[path = "network/procs.rs"]
mod procs;
#[path = "network/progress.rs"]
mod progress;
#[path = "network/prom.rs"]
pub mod prom;
#[path = "network/report.rs"]
pub mod report;
#[path = "network/scrape.rs"]
pub mod scrape;
#[path = "network/setup.rs"]
mod setup;

use std::path::PathBuf;

use anyhow::bail;

pub use netns::Skipped;
pub use report::Report;

/// How the peers are hosted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetMode {
    /// Tracker and peers in this process.
    Inproc,
    /// One process per peer on 127.0.0.1.
    Procs,
    /// One process per peer, each in its own network namespace.
    Netns,
}

impl NetMode {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Inproc => "inproc",
            NetMode::Procs => "procs",
            NetMode::Netns => "netns",
        }
    }
}

/// What a process (or in-process peer) is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The tracker.
    Tracker,
    /// A relay-only peer.
    Relay,
    /// A seeder.
    Seeder,
    /// A downloader.
    Downloader,
    /// The one process of an `inproc` run.
    Inproc,
    /// A relay-only peer added for the set-up probe (`inproc --probe`).
    Probe,
}

impl Role {
    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Tracker => "tracker",
            Role::Relay => "relay",
            Role::Seeder => "seeder",
            Role::Downloader => "downloader",
            Role::Inproc => "inproc",
            Role::Probe => "probe",
        }
    }
}

/// Command line of `anomos-loadtest network`.
#[derive(Debug, Clone, clap::Args)]
pub struct NetworkArgs {
    /// How to host the peers.
    #[arg(long, value_enum, default_value_t = NetMode::Procs)]
    pub mode: NetMode,
    /// Relay-only peers.
    #[arg(long, default_value_t = 8)]
    pub relays: usize,
    /// Seeders (seeder k serves torrent k mod --torrents).
    #[arg(long, default_value_t = 2)]
    pub seeders: usize,
    /// Downloaders (downloader k fetches torrent k mod --torrents).
    #[arg(long, default_value_t = 4)]
    pub downloaders: usize,
    /// Distinct torrents.
    #[arg(long, default_value_t = 1)]
    pub torrents: usize,
    /// MiB of random data per torrent (fractions allowed).
    #[arg(long, default_value_t = 16.0)]
    pub size: f64,
    /// Piece size in bytes [default: chosen by size, as make-torrent does].
    #[arg(long)]
    pub piece_size: Option<u32>,
    /// Fewest relays on a path (the tracker's min_relays).
    #[arg(long, default_value_t = 2)]
    pub min_relays: usize,
    /// Most relays on a path (the tracker's max_relays, at most 6).
    #[arg(long, default_value_t = 3)]
    pub max_relays: usize,
    /// Circuits each download keeps open to sources.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub circuits: u16,
    /// Announce interval the tracker gives peers, seconds.
    #[arg(long, default_value_t = 5)]
    pub announce_interval: u64,
    /// Seconds to hold the network after the last download. A download
    /// closes its circuits to complete sources when it completes, so what
    /// stays open then is circuits between downloads still in progress at
    /// that moment and the probe's held ones (`--probe-hold`).
    #[arg(long, default_value_t = 3.0)]
    pub hold: f64,
    /// `inproc`: actix arbiter threads the peers are spread over.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Longest whole run, seconds; everything is stopped after it.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// `netns`: the first two octets of the /16 the namespaces get.
    #[arg(long, default_value = "10.213")]
    pub netns_subnet: String,
    /// The tracker binary [default: anomos-tracker next to this executable].
    #[arg(long)]
    pub tracker_bin: Option<PathBuf>,
    /// The peer binary [default: anomos next to this executable].
    #[arg(long)]
    pub peer_bin: Option<PathBuf>,
    /// Keep the run's directory (data, downloads, every process's log;
    /// peer log level from ANOMOS_PEER_LOG, tracker's from
    /// ANOMOS_TRACKER_LOG) and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// `inproc`: probe circuits per phase, asked for one at a time during
    /// the downloads and after them (with `--probe-hold` circuits live);
    /// 0 = no probe. See `network/probe.rs`.
    #[arg(long, default_value_t = 0)]
    pub probe: usize,
    /// `inproc`: idle circuits the probe origins open before the downloads
    /// start and hold to the end (so many circuits are live in both
    /// phases).
    #[arg(long, default_value_t = 0)]
    pub probe_hold: usize,
    /// `inproc`: probe origins, and as many probe exits for the held
    /// circuits (relay-only peers added to the network).
    #[arg(long, default_value_t = 4)]
    pub probe_peers: usize,
}

impl NetworkArgs {
    /// Bytes per torrent.
    pub fn size_bytes(&self) -> u64 {
        (self.size * 1048576.0).round() as u64
    }

    /// Whether the set-up probe adds peers to the run.
    pub fn probes_on(&self) -> bool {
        self.probe > 0 || self.probe_hold > 0
    }

    /// Reject runs that cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.torrents == 0 || self.seeders < self.torrents {
            bail!("every torrent needs a seeder: --seeders >= --torrents >= 1");
        }
        if self.downloaders == 0 {
            bail!("--downloaders must be at least 1");
        }
        if self.min_relays > self.max_relays || self.max_relays > 6 {
            bail!("need --min-relays <= --max-relays <= 6");
        }
        if self.relays < self.max_relays {
            bail!("need --relays >= --max-relays (paths never repeat a peer)");
        }
        if !self.size.is_finite() || self.size_bytes() == 0 {
            bail!("--size must be positive");
        }
        if self.threads == 0 || self.announce_interval == 0 || self.timeout == 0 {
            bail!("--threads, --announce-interval and --timeout must be positive");
        }
        if !self.hold.is_finite() || self.hold < 0.0 {
            bail!("--hold must not be negative");
        }
        if self.probes_on() && self.mode != NetMode::Inproc {
            bail!("--probe and --probe-hold need --mode inproc");
        }
        if self.probes_on() && self.probe_peers == 0 {
            bail!("--probe-peers must be at least 1 with --probe or --probe-hold");
        }
        Ok(())
    }
}

/// Run the mode; everything started is stopped before this returns.
/// A `netns` run that may not create namespaces fails with [`Skipped`].
pub fn run(a: &NetworkArgs) -> anyhow::Result<Report> {
    a.validate()?;
    match a.mode {
        NetMode::Inproc => inproc::run(a),
        NetMode::Procs => procs::run_local(a),
        NetMode::Netns => procs::run_netns(a),
    }
}

/// Drive a run for at most `--timeout` seconds. SIGINT/SIGTERM end it
/// with an error, so the run's guards (children killed, namespaces
/// deleted) stop everything rather than the signal.
async fn bounded(
    a: &NetworkArgs,
    run: impl std::future::Future<Output = anyhow::Result<Report>>,
) -> anyhow::Result<Report> {
    use anyhow::Context as _;
    let limit = std::time::Duration::from_secs(a.timeout);
    tokio::select! {
        r = tokio::time::timeout(limit, run) => {
            r.with_context(|| format!("run exceeded --timeout {} s", a.timeout))?
        }
        r = anomos_peer::app::wait_for_signal() => {
            r?;
            bail!("interrupted")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: NetworkArgs,
    }

    #[test]
    fn defaults_validate_and_bad_runs_are_refused() {
        let a = T::parse_from(["t"]).a;
        a.validate().unwrap();
        assert_eq!(a.size_bytes(), 16 << 20);
        assert_eq!(a.mode, NetMode::Procs);
        let bad = |args: &[&str]| {
            let mut v = vec!["t"];
            v.extend_from_slice(args);
            T::parse_from(v).a.validate().is_err()
        };
        assert!(bad(&["--torrents", "3", "--seeders", "2"]));
        assert!(bad(&["--downloaders", "0"]));
        assert!(bad(&["--min-relays", "4", "--max-relays", "3"]));
        assert!(bad(&["--relays", "2", "--max-relays", "3"]));
        assert!(bad(&["--size", "0"]));
        assert!(bad(&["--hold=-1"]));
        assert!(bad(&["--probe", "5"]));
        assert!(bad(&[
            "--mode",
            "inproc",
            "--probe-hold",
            "5",
            "--probe-peers",
            "0"
        ]));
        assert!(!bad(&["--mode", "inproc", "--probe", "5"]));
        assert!(T::try_parse_from(["t", "--circuits", "0"]).is_err());
        let half = T::parse_from(["t", "--size", "0.5", "--mode", "inproc"]).a;
        assert_eq!(half.size_bytes(), 512 << 10);
        assert_eq!(half.mode.as_str(), "inproc");
        assert_eq!(Role::Downloader.as_str(), "downloader");
    }
}
