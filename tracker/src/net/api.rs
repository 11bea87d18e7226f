//! `POST /v1/announce`: the thin edge between HTTPS and the Session actors.
//!
//! Checks run cheapest first, and none of them touches another peer's
//! state: per-address rate limit (before any parsing), content type (our
//! media type, parameters ignored; anything else is 400 before the body is
//! read), body size and time, decoding,
//! version, clock skew, certificate/peer-id match and signature
//! (`SignedAnnounce::verify`, through the `KeyCache` of verified
//! certificates), replay (newest timestamp and nonce per
//! identity), then the per-identity rate limit — only after the signature,
//! so nobody can drain an honest peer's bucket with forged announces. Every
//! refusal is a bincode `ApiErrorBody` with the status of its
//! `ErrorCode::http_status()` and one `anomos_tracker_announces_total` bump.
//!
//! Client address: the TCP peer, or the last `X-Forwarded-For` hop when the
//! TCP peer is a configured trusted proxy. The peer's link address is that
//! IP with the announced `listen_port` (or the announced `listen_ip` when
//! `honor_listen_ip` is set); it is dialled before the peer is handed out.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::Actor;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use anomos_common::api::{
    AnnounceRequest, AnnounceResponse, ApiError, ApiErrorBody, CircuitGrant, ErrorCode, Message,
    Neighbour, PeerEvent, Role, SignedAnnounce, TorrentEvent, CONTENT_TYPE,
};
use anomos_common::{PeerId, Pin};

use crate::actors::session::{
    Announce, AnnounceOutcome, SessionActor, SessionDeps, SessionRegistry,
};
use crate::config::Config;
use crate::core::keycache::KeyCache;
use crate::core::ratelimit::RateLimiter;
use crate::core::replay::{Freshness, ReplayGuard};
use crate::core::session::{AnnounceInput, TorrentReport};
use crate::metrics::{AnnounceResult, Metrics};
use crate::unix_now;

/// Shared state of the announce endpoint.
#[derive(Debug)]
pub struct ApiState {
    /// Settings.
    pub cfg: Arc<Config>,
    /// Metrics.
    pub metrics: Metrics,
    /// Per client address.
    pub ip_limiter: Mutex<RateLimiter<IpAddr>>,
    /// Per identity.
    pub peer_limiter: Mutex<RateLimiter<PeerId>>,
    /// Freshness and replay.
    pub replay: Mutex<ReplayGuard>,
    /// Certificates already verified (signature checks skip decoding them).
    pub keys: KeyCache,
    /// Live sessions.
    pub registry: SessionRegistry,
    /// What new sessions get.
    pub deps: Arc<SessionDeps>,
}

/// A refusal: the error code, the metric label and a fixed message.
#[derive(Debug)]
struct Reject(ErrorCode, AnnounceResult, &'static str);

impl From<ApiError> for Reject {
    fn from(e: ApiError) -> Self {
        let r = match e.code() {
            ErrorCode::TooLarge => AnnounceResult::TooLarge,
            ErrorCode::Unauthorized => AnnounceResult::Unauthorized,
            ErrorCode::Stale => AnnounceResult::Stale,
            ErrorCode::Internal => AnnounceResult::Internal,
            _ => AnnounceResult::BadRequest,
        };
        Reject(e.code(), r, e.kind())
    }
}

/// Register the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(anomos_common::api::ANNOUNCE_PATH, web::post().to(announce));
}

async fn announce(req: HttpRequest, body: web::Payload, st: web::Data<ApiState>) -> HttpResponse {
    let started = Instant::now();
    match handle(&req, body, &st).await {
        Ok(bytes) => {
            st.metrics.announce(AnnounceResult::Ok);
            st.metrics
                .announce_seconds
                .observe(started.elapsed().as_secs_f64());
            HttpResponse::Ok().content_type(CONTENT_TYPE).body(bytes)
        }
        Err(Reject(code, result, message)) => {
            st.metrics.announce(result);
            let body = ApiErrorBody {
                code,
                message: message.to_owned(),
            };
            let status = StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            HttpResponse::build(status)
                .content_type(CONTENT_TYPE)
                .body(body.encode().unwrap_or_default())
        }
    }
}

/// Whether the request says its body is a bincode announce.
fn is_ours(req: &HttpRequest) -> bool {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// The client's IP: TCP peer, or the last forwarded hop behind a trusted proxy.
fn client_ip(req: &HttpRequest, trusted: &[IpAddr]) -> Option<IpAddr> {
    let tcp = req.peer_addr()?.ip();
    if !trusted.contains(&tcp) {
        return Some(tcp);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|hop| hop.trim().parse().ok());
    Some(forwarded.unwrap_or(tcp))
}

/// The body, within `max` bytes and `limit` time.
async fn read_body(
    req: &HttpRequest,
    body: web::Payload,
    max: usize,
    limit: std::time::Duration,
) -> Result<Vec<u8>, Reject> {
    let too_large = Reject(
        ErrorCode::TooLarge,
        AnnounceResult::TooLarge,
        "body too large",
    );
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large);
    }
    let bad = |what| Reject(ErrorCode::BadRequest, AnnounceResult::BadRequest, what);
    match tokio::time::timeout(limit, body.to_bytes_limited(max)).await {
        Ok(Ok(Ok(bytes))) => Ok(bytes.to_vec()),
        Ok(Ok(Err(_))) => Err(bad("body")),
        Ok(Err(_)) => Err(too_large),
        Err(_) => Err(bad("body too slow")),
    }
}

async fn handle(req: &HttpRequest, body: web::Payload, st: &ApiState) -> Result<Vec<u8>, Reject> {
    let limited = || {
        Reject(
            ErrorCode::RateLimited,
            AnnounceResult::RateLimited,
            "rate limited",
        )
    };
    let internal = || {
        Reject(
            ErrorCode::Internal,
            AnnounceResult::Internal,
            "internal error",
        )
    };
    let ip = client_ip(req, &st.cfg.trusted_proxies).ok_or_else(internal)?;
    if !st
        .ip_limiter
        .lock()
        .map_err(|_| internal())?
        .check(&ip, Instant::now())
    {
        return Err(limited());
    }
    if !is_ours(req) {
        return Err(Reject(
            ErrorCode::BadRequest,
            AnnounceResult::BadRequest,
            "content type",
        ));
    }
    let limit = std::time::Duration::from_millis(st.cfg.body_timeout_ms);
    let bytes = read_body(req, body, st.cfg.max_body_bytes, limit).await?;
    let signed = SignedAnnounce::decode(&bytes)?;
    let now = unix_now();
    let (peer, ann) = st.keys.verify(&signed, now, st.cfg.max_skew_secs)?;
    match st.replay.lock().map_err(|_| internal())?.check_and_record(
        now,
        peer,
        ann.timestamp,
        ann.nonce,
    ) {
        Ok(()) => {}
        Err(Freshness::Stale) => {
            return Err(Reject(ErrorCode::Stale, AnnounceResult::Stale, "stale"))
        }
        Err(Freshness::Replayed) => {
            return Err(Reject(
                ErrorCode::Replayed,
                AnnounceResult::Replayed,
                "replayed announce",
            ))
        }
    }
    if !st
        .peer_limiter
        .lock()
        .map_err(|_| internal())?
        .check(&peer, Instant::now())
    {
        return Err(limited());
    }
    let link_ip = ann
        .listen_ip
        .filter(|_| st.cfg.honor_listen_ip)
        .unwrap_or(ip);
    let msg = to_message(now, SocketAddr::new(link_ip, ann.listen_port), ann);
    let outcome = deliver(st, peer, msg).await.ok_or_else(internal)?;
    let resp = to_response(st.cfg.announce_interval_secs, outcome);
    resp.encode().map_err(|_| internal())
}

/// Send to the peer's session, creating it if needed. A session that ended
/// between lookup and send is replaced once.
async fn deliver(st: &ApiState, peer: PeerId, msg: Announce) -> Option<AnnounceOutcome> {
    let mut msg = Some(msg);
    for _ in 0..2 {
        let addr = st
            .registry
            .entry(peer)
            .or_insert_with(|| {
                st.metrics.peers.inc();
                SessionActor::new(peer, st.deps.clone()).start()
            })
            .clone();
        let m = msg.take()?;
        let replay = m.clone();
        match addr.send(m).await {
            Ok(Ok(outcome)) => return Some(outcome),
            Ok(Err(_)) => return None,
            Err(_) => {
                if st.registry.remove_if(&peer, |_, a| *a == addr).is_some() {
                    st.metrics.peers.dec();
                }
                msg = Some(replay);
            }
        }
    }
    None
}

fn to_message(now: u64, addr: SocketAddr, a: AnnounceRequest) -> Announce {
    let torrents = a
        .torrents
        .iter()
        .map(|t| TorrentReport {
            infohash: t.infohash,
            can_serve: t.role == Role::Seeding || t.downloaded > 0,
            stopped: t.event == TorrentEvent::Stopped,
            uploaded: t.uploaded,
            downloaded: t.downloaded,
        })
        .collect();
    let wanted = a
        .torrents
        .iter()
        .filter(|t| t.circuits_wanted > 0 && t.event != TorrentEvent::Stopped)
        .map(|t| (t.infohash, u32::from(t.circuits_wanted)))
        .collect();
    Announce {
        input: AnnounceInput {
            now,
            addr,
            onion_public: a.onion_public,
            torrents,
            relayed: a.relayed_bytes,
            fresh_run: a.event == PeerEvent::Started,
        },
        failed_nids: a.failed_nids,
        failed_circuits: a.failed_circuits,
        bad_sources: a.bad_sources,
        held_links: a.held_links.iter().map(|h| (h.nid, h.peer)).collect(),
        wanted,
        stopping: a.event == PeerEvent::Stopped,
    }
}

fn to_response(interval: u64, o: AnnounceOutcome) -> AnnounceResponse {
    AnnounceResponse {
        interval_secs: u32::try_from(interval).unwrap_or(u32::MAX),
        neighbours: o
            .neighbours
            .into_iter()
            .map(|n| Neighbour {
                nid: n.nid,
                addr: n.addr,
                pin: Pin(n.peer.0),
                dial: n.dial,
            })
            .collect(),
        dropped_nids: o.dropped,
        circuits: o
            .circuits
            .into_iter()
            .map(|c| CircuitGrant {
                infohash: c.infohash,
                code: c.code.as_bytes().to_vec(),
                layer_keys: c.layer_keys,
                circuit_secret: c.circuit_secret,
                expiry: c.expiry,
                id: c.id,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn only_our_media_type_is_taken() {
        let with = |ct: Option<&str>| {
            let mut r = TestRequest::default();
            if let Some(ct) = ct {
                r = r.insert_header(("content-type", ct));
            }
            is_ours(&r.to_http_request())
        };
        assert!(with(Some(CONTENT_TYPE)));
        assert!(with(Some("Application/X-Anomos-Bincode; charset=binary")));
        assert!(!with(Some("text/plain")));
        assert!(!with(Some("application/x-anomos-bincode-evil")));
        assert!(!with(None));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let req = |from: &str| {
            TestRequest::default()
                .peer_addr(SocketAddr::new(from.parse().unwrap(), 5000))
                .insert_header(("x-forwarded-for", "1.1.1.1, 2.2.2.2"))
                .to_http_request()
        };
        let spoofed = client_ip(&req("192.0.2.9"), &[proxy]);
        assert_eq!(spoofed, Some("192.0.2.9".parse().unwrap()));
        let proxied = client_ip(&req("10.0.0.1"), &[proxy]);
        assert_eq!(
            proxied,
            Some("2.2.2.2".parse().unwrap()),
            "last hop, added by our proxy"
        );
    }
}
