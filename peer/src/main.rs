//! `anomos`: the Anomos peer. Command-line parsing and wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;

use anomos_common::Pin;
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
        let over = Overrides {
            tracker: self.tracker,
            tracker_pin: self.tracker_pin,
            data_dir: self.data_dir,
            listen: self.listen,
            metrics: self.metrics,
            ephemeral: self.ephemeral,
        };
        Ok(PeerConfig::load(self.config.as_deref(), over)?)
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Relay(args) => {
            let cfg = args.load()?;
            actix_rt::System::new().block_on(relay(cfg))
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
    wait_for_signal().await?;
    tracing::info!("stopping: breaking circuits and announcing stopped");
    peer.stop().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
