//! `anomos`: the Anomos peer. Command-line parsing and wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::process::ExitCode;

use anomos_common::metainfo::Metainfo;
use anomos_common::Pin;
use anomos_peer::app;
use anomos_peer::config::{parse_pin, Overrides, PeerConfig};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "anomos",
    version,
    about = "Anonymous file sharing through relayed circuits"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Relay for others until stopped (SIGINT/SIGTERM).
    Relay(PeerArgs),
    /// Make a .atorrent from a file or a directory.
    MakeTorrent(MakeArgs),
    /// Check local data against a .atorrent, then serve it through
    /// circuits (and relay for others) until stopped.
    Seed(SeedArgs),
    /// Download a .atorrent anonymously through circuits.
    Get(GetArgs),
}

#[derive(Debug, clap::Args)]
struct MakeArgs {
    /// The file or directory to share.
    path: PathBuf,
    /// Tracker base URL written into the torrent.
    #[arg(long)]
    tracker: String,
    /// The tracker's certificate pin, written into the torrent.
    #[arg(long, value_parser = parse_pin)]
    tracker_pin: Option<Pin>,
    /// Piece size in bytes (a power of two, 16 KiB to 16 MiB) [default: by total size].
    #[arg(long)]
    piece_size: Option<u32>,
    /// Where to write the .atorrent.
    #[arg(short, long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
struct SeedArgs {
    /// The .atorrent to serve.
    torrent: PathBuf,
    /// The file (single-file torrent) or directory (multi-file) holding the data.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    peer: PeerArgs,
}

#[derive(Debug, clap::Args)]
struct GetArgs {
    /// The .atorrent to download.
    torrent: PathBuf,
    /// Directory the torrent's file or directory is written into.
    #[arg(long)]
    out: PathBuf,
    /// Keep serving the torrent after it completes, until stopped.
    #[arg(long)]
    seed_after: bool,
    /// Circuits to keep open to sources.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    circuits: u16,
    #[command(flatten)]
    peer: PeerArgs,
}

/// Options of every peer command; flags override the `--config` file.
#[derive(Debug, clap::Args)]
struct PeerArgs {
    /// Tracker base URL, e.g. https://tracker.example:8443
    #[arg(long)]
    tracker: Option<String>,
    /// SHA-256 SPKI pin of the tracker certificate (64 hex digits).
    #[arg(long, value_parser = parse_pin)]
    tracker_pin: Option<Pin>,
    /// Directory for identities (one per tracker).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Link listener address; port 0 picks a free one.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Plain-HTTP /metrics and /healthz listener.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// TOML file setting any option.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Keep the identity in memory only.
    #[arg(long)]
    ephemeral: bool,
}

impl PeerArgs {
    fn load(self) -> anyhow::Result<PeerConfig> {
        let file = self.config.clone();
        let mut cfg = PeerConfig::load(file.as_deref(), self.overrides())?;
        // TEST ONLY: a relay that black-holes every CREATE, for the fault
        // suite (peer/tests/peer/faults/blackhole.rs). Not a feature.
        cfg.test_swallow_creates =
            std::env::var_os("ANOMOS_TEST_SWALLOW_CREATES").is_some_and(|v| v == "1");
        if cfg.test_swallow_creates {
            eprintln!("warning: ANOMOS_TEST_SWALLOW_CREATES=1: this relay drops every CREATE");
        }
        Ok(cfg)
    }

    fn overrides(self) -> Overrides {
        Overrides {
            tracker: self.tracker,
            tracker_pin: self.tracker_pin,
            data_dir: self.data_dir,
            listen: self.listen,
            metrics: self.metrics,
            ephemeral: self.ephemeral,
        }
    }

    /// The configuration for a torrent (its tracker unless overridden).
    fn for_torrent(self, meta: &Metainfo) -> anyhow::Result<PeerConfig> {
        let file = self.config.clone();
        app::torrent_config(meta, file.as_deref(), self.overrides())
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            eprintln!("anomos: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Relay(args) => {
            let cfg = args.load()?;
            actix_rt::System::new().block_on(relay(cfg))
        }
        Cmd::MakeTorrent(a) => {
            let meta = app::make(&a.path, &a.tracker, a.tracker_pin, a.piece_size, &a.out)?;
            println!(
                "wrote {}: {} file(s), {} bytes, {} pieces of {} bytes",
                a.out.display(),
                meta.files().len(),
                meta.total_length(),
                meta.layout().piece_count(),
                meta.piece_length()
            );
            Ok(())
        }
        Cmd::Seed(a) => {
            let meta = app::read_torrent(&a.torrent)?;
            let cfg = a.peer.for_torrent(&meta)?;
            actix_rt::System::new().block_on(app::seed(meta, a.data, cfg))
        }
        Cmd::Get(a) => {
            let meta = app::read_torrent(&a.torrent)?;
            let cfg = a.peer.for_torrent(&meta)?;
            let opts = app::GetOptions {
                out: a.out,
                seed_after: a.seed_after,
                circuits: a.circuits,
            };
            actix_rt::System::new().block_on(app::get(meta, opts, cfg))
        }
    }
}

async fn relay(cfg: PeerConfig) -> anyhow::Result<()> {
    let peer = anomos_peer::run_peer(cfg).await?;
    let metrics = peer
        .metrics_addr
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    // The only place addresses are printed: once, at start-up, on stdout.
    println!(
        "anomos relay {} listening on {} metrics {}",
        peer.peer_id.short(),
        peer.listen_addr,
        metrics
    );
    app::wait_for_signal().await?;
    tracing::info!("stopping: breaking circuits and announcing stopped");
    peer.stop().await;
    Ok(())
}
