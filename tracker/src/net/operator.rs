//! The operator listener (plain HTTP, localhost by default): `/metrics`,
//! `/healthz` and the admin-token-protected `/status`.
//!
//! Architecture invariant: nothing here reveals the graph, an address or a
//! peer id. `/status` shows counts and a leaderboard keyed by pseudonyms
//! (`SHA-256(peer id ‖ per-tracker salt)`, first 8 hex digits).

use std::fmt::Write as _;
use std::sync::Arc;

use actix::Addr;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use anomos_common::crypto::ct_eq;

use crate::actors::graph::{GetGraphStats, GraphActor};
use crate::ledger::Ledger;
use crate::metrics::Metrics;

/// Shared state of the operator endpoints.
#[derive(Debug)]
pub struct OperatorState {
    /// Metrics to render.
    pub metrics: Metrics,
    /// For graph sizes.
    pub graph: Addr<GraphActor>,
    /// For the leaderboard.
    pub ledger: Arc<Ledger>,
    /// Bearer token for `/status`.
    pub admin_token: String,
}

/// Register the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/status", web::get().to(status));
}

async fn metrics(st: web::Data<OperatorState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(st.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

fn authorized(req: &HttpRequest, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| ct_eq(given.trim().as_bytes(), token.as_bytes()))
}

async fn status(req: HttpRequest, st: web::Data<OperatorState>) -> HttpResponse {
    if !authorized(&req, &st.admin_token) {
        return HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
            .body("admin token required\n");
    }
    let stats = st.graph.send(GetGraphStats).await.unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "peers {}", st.metrics.peers.get());
    let _ = writeln!(out, "graph_vertices {}", stats.vertices);
    let _ = writeln!(out, "graph_edges {}", stats.edges);
    let _ = writeln!(out, "torrents {}", stats.torrents);
    let _ = writeln!(
        out,
        "circuits_planned {}",
        st.metrics.circuits_planned.get()
    );
    let _ = writeln!(out, "ledger_identities {}", st.ledger.len());
    let _ = writeln!(
        out,
        "\nleaderboard (pseudonym ratio uploaded downloaded relayed)"
    );
    for row in st.ledger.leaderboard(20) {
        let ratio = row
            .ratio
            .map_or_else(|| "inf".to_owned(), |r| format!("{r:.3}"));
        let t = row.totals;
        let _ = writeln!(
            out,
            "{} {} {} {} {}",
            row.pseudonym, ratio, t.uploaded, t.downloaded, t.relayed
        );
    }
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(out)
}
