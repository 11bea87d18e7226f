//! `anomos-tracker`: command line and wiring only; see the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracker::config::{Config, Overrides};

/// The HTTPS tracker of Anomos.
#[derive(Debug, Parser)]
#[command(name = "anomos-tracker", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// HTTPS API listen address [default 0.0.0.0:8443].
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Data directory (certificate, admin token, ledger) [default ./anomos-tracker-data].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Operator listener: /metrics, /healthz, /status [default 127.0.0.1:9090].
    #[arg(long, global = true)]
    metrics: Option<SocketAddr>,
    /// PEM certificate to serve instead of the self-signed one.
    #[arg(long, requires = "tls_key", global = true)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", global = true)]
    tls_key: Option<PathBuf>,
    /// Let peers with the same IP be neighbours (labs and tests).
    #[arg(long, global = true)]
    allow_same_ip: bool,
    /// TOML file setting any option; flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the SHA-256 pin of the tracker certificate (creating it if needed).
    Pin,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let over = Overrides {
        listen: cli.listen,
        metrics: cli.metrics,
        data_dir: cli.data_dir,
        tls_cert: cli.tls_cert,
        tls_key: cli.tls_key,
        allow_same_ip: cli.allow_same_ip,
    };
    let cfg = Config::load(cli.config.as_deref(), over).context("configuration")?;
    if let Some(Cmd::Pin) = cli.cmd {
        let id = tracker::net::tls::load_or_create_identity(
            &cfg.data_dir,
            cfg.tls_cert.as_deref(),
            cfg.tls_key.as_deref(),
        )?;
        println!("{}", id.pin());
        return Ok(());
    }
    actix_web::rt::System::new().block_on(async move {
        let t = tracker::run(cfg).await.context("starting the tracker")?;
        println!("anomos-tracker listening on https://{}", t.api_addr);
        println!("operator endpoints on http://{}", t.operator_addr);
        println!("tracker pin {}", t.pin);
        wait_for_signal().await?;
        println!("shutting down");
        t.stop().await.context("shutdown")?;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
