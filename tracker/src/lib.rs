//! anomos-tracker: the HTTPS tracker of Anomos.
//!
//! It registers peers, assigns each a few neighbours (one NID per link, the
//! same at both ends), plans circuits through the resulting graph and hands
//! the originator a tracking code plus the key material, and keeps a share
//! ratio ledger. `main.rs` only parses the command line and calls [`run`];
//! tests call [`run`] in-process on `127.0.0.1:0`.
//!
//! Shutdown order ([`RunningTracker::stop`]): stop accepting (both
//! listeners, letting in-flight announces finish), stop the Graph actor,
//! then flush and close the ledger.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod actors;
pub mod config;
pub mod core;
pub mod error;
pub mod ledger;
pub mod metrics;
pub mod net;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, Addr, SyncArbiter};
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anomos_common::{PeerId, Pin};
use dashmap::DashMap;

use crate::actors::graph::{GraphActor, StopGraph};
use crate::actors::planner::PlannerActor;
use crate::actors::session::SessionDeps;
use crate::config::Config;
use crate::core::keycache::{KeyCache, DEFAULT_KEY_CACHE};
use crate::core::ratelimit::RateLimiter;
use crate::core::replay::ReplayGuard;
use crate::error::TrackerError;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::net::api::ApiState;
use crate::net::operator::OperatorState;
use crate::net::reachability::Prober;

/// The wall clock as Unix seconds (the only clock the shells read).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// File name of the ledger inside the data dir.
pub const LEDGER_FILE: &str = "ledger.sqlite3";

/// A started tracker: where it listens, its pin, and how to stop it.
#[derive(Debug)]
pub struct RunningTracker {
    /// Bound HTTPS API address.
    pub api_addr: SocketAddr,
    /// Bound operator (plain HTTP) address.
    pub operator_addr: SocketAddr,
    /// SHA-256 of the served certificate's SPKI.
    pub pin: Pin,
    /// Bearer token of `/status`.
    pub admin_token: String,
    /// The tracker's metrics (tests read counters directly).
    pub metrics: Metrics,
    api: ServerHandle,
    operator: ServerHandle,
    graph: Addr<GraphActor>,
    ledger: Arc<Ledger>,
}

impl RunningTracker {
    /// Graceful stop: listeners, then the graph, then a flushed ledger.
    pub async fn stop(self) -> Result<(), TrackerError> {
        self.api.stop(true).await;
        self.operator.stop(true).await;
        let _ = self.graph.send(StopGraph).await;
        let ledger = self.ledger.clone();
        actix_web::rt::task::spawn_blocking(move || ledger.close())
            .await
            .map_err(|e| TrackerError::Io(std::io::Error::other(e)))??;
        Ok(())
    }
}

/// Start the tracker inside the current actix system.
pub async fn run(cfg: Config) -> Result<RunningTracker, TrackerError> {
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    std::fs::create_dir_all(&cfg.data_dir)?;
    let identity = net::tls::load_or_create_identity(
        &cfg.data_dir,
        cfg.tls_cert.as_deref(),
        cfg.tls_key.as_deref(),
    )?;
    let admin_token =
        net::tls::load_or_create_admin_token(&cfg.data_dir, cfg.admin_token.as_deref())?;
    let ledger = Arc::new(Ledger::open(&cfg.data_dir.join(LEDGER_FILE))?);
    let metrics = Metrics::new()?;
    let prober = Prober::new(Duration::from_millis(cfg.reach_timeout_ms))?;

    let health = crate::core::health::HealthConfig {
        path_secs: cfg.code_lifetime_secs,
        ..Default::default()
    };
    let (graph_actor, reader) = GraphActor::new(
        cfg.graph(),
        Duration::from_secs(cfg.load_window_secs),
        health,
        metrics.clone(),
    );
    let graph = graph_actor.start();
    let planner = {
        let (g, m, plan, life) = (
            graph.clone(),
            metrics.clone(),
            cfg.plan(),
            cfg.code_lifetime_secs,
        );
        SyncArbiter::start(cfg.planner_threads, move || {
            PlannerActor::new(reader.clone(), plan.clone(), life, g.clone(), m.clone())
        })
    };
    let registry = Arc::new(DashMap::new());
    let deps = Arc::new(SessionDeps {
        graph: graph.clone(),
        planner,
        ledger: ledger.clone(),
        prober,
        metrics: metrics.clone(),
        registry: registry.clone(),
        ratio: cfg.ratio_policy(),
        ttl: cfg.session_ttl_secs,
        retry_base: Duration::from_secs(cfg.reach_retry_secs),
        retry_max: Duration::from_secs(cfg.reach_retry_max_secs),
    });
    let api_state = web::Data::new(ApiState {
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        ip_limiter: Mutex::new(RateLimiter::<IpAddr>::new(cfg.ip_rate())),
        peer_limiter: Mutex::new(RateLimiter::<PeerId>::new(cfg.peer_rate())),
        replay: Mutex::new(ReplayGuard::new(cfg.max_skew_secs)),
        keys: KeyCache::new(DEFAULT_KEY_CACHE),
        registry,
        deps,
    });
    let api_server = HttpServer::new(move || {
        App::new()
            .app_data(api_state.clone())
            .configure(net::api::configure)
    })
    .workers(2)
    .disable_signals()
    .bind_openssl(cfg.listen, net::tls::acceptor(&identity)?)?;
    let api_addr = first_addr(&api_server.addrs())?;
    let api_server = api_server.run();

    let op_state = web::Data::new(OperatorState {
        metrics: metrics.clone(),
        graph: graph.clone(),
        ledger: ledger.clone(),
        admin_token: admin_token.clone(),
    });
    let op_server = HttpServer::new(move || {
        App::new()
            .app_data(op_state.clone())
            .configure(net::operator::configure)
    })
    .workers(1)
    .disable_signals()
    .bind(cfg.metrics)?;
    let operator_addr = first_addr(&op_server.addrs())?;
    let op_server = op_server.run();

    let (api, operator) = (api_server.handle(), op_server.handle());
    actix_web::rt::spawn(api_server);
    actix_web::rt::spawn(op_server);
    Ok(RunningTracker {
        api_addr,
        operator_addr,
        pin: identity.pin(),
        admin_token,
        metrics,
        api,
        operator,
        graph,
        ledger,
    })
}

fn first_addr(addrs: &[SocketAddr]) -> Result<SocketAddr, TrackerError> {
    addrs
        .first()
        .copied()
        .ok_or_else(|| TrackerError::Io(std::io::Error::other("no address bound")))
}
