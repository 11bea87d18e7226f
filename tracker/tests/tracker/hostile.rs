//! Hostile bytes at the tracker, all while an honest peer keeps announcing:
//! forged and replayed announces, oversized and truncated bodies, wrong
//! content types, clients that send their request a byte at a time, and a
//! burst of 10,000 announces from one identity. Each gets its 4xx (or is
//! cut off) and is counted; every honest announce succeeds, and its
//! latency under attack is reported (never asserted on time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anomos_common::api::{ApiErrorBody, ErrorCode, Message, PeerEvent, SignedAnnounce};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use tracker::metrics::AnnounceResult as R;

use crate::util::{test_config, try_tls_connect, TestPeer};

/// A TLS connection to the tracker that may carry many requests.
struct Conn {
    s: SslStream<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn::try_open(addr)
            .await
            .expect("TLS connection to the tracker")
    }

    async fn try_open(addr: SocketAddr) -> Option<Conn> {
        let s = try_tls_connect(addr).await?;
        Some(Conn { s, buf: Vec::new() })
    }

    /// Send raw request bytes.
    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await?;
        self.s.flush().await
    }

    /// One keep-alive POST; `(status, body)`.
    async fn post(&mut self, ctype: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
        let ct = ctype
            .map(|c| format!("Content-Type: {c}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST /v1/announce HTTP/1.1\r\nHost: t\r\n{ct}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.write(&req).await.unwrap();
        self.response().await.expect("no response")
    }

    /// Read one response (Content-Length framed); `None` if the tracker
    /// closed the connection first.
    async fn response(&mut self) -> Option<(u16, Vec<u8>)> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let status = head.split_whitespace().nth(1)?.parse().ok()?;
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap_or(0));
                if self.buf.len() >= end + 4 + len {
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    return Some((status, body));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn code_of(body: &[u8]) -> ErrorCode {
    ApiErrorBody::decode(body).unwrap().code
}

const CT: &str = anomos_common::api::CONTENT_TYPE;

/// One honest announce on a fresh connection: the status, or 0 if the
/// connection failed.
async fn honest_post(addr: SocketAddr, body: &[u8]) -> u16 {
    let Some(mut c) = Conn::try_open(addr).await else {
        return 0;
    };
    let head = format!(
        "POST /v1/announce HTTP/1.1\r\nHost: t\r\nContent-Type: {CT}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    if c.write(&req).await.is_err() {
        return 0;
    }
    c.response().await.map_or(0, |r| r.0)
}

/// Honest announces every 100 ms on fresh connections until `stop`.
fn honest_loop(
    addr: SocketAddr,
    peer: Arc<TestPeer>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<(Instant, Duration, u16)>>>,
) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let body = peer.signed(&peer.request(PeerEvent::Heartbeat));
            let t = Instant::now();
            let status = honest_post(addr, &body).await;
            log.lock().unwrap().push((t, t.elapsed(), status));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or_default()
}

#[actix_rt::test]
async fn hostile_clients_are_refused_and_counted_while_honest_announces_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tracker::config::Config {
        // Everyone here comes from 127.0.0.1: only the per-identity limit
        // is under test.
        rate_per_ip: 1e9,
        burst_per_ip: 1e9,
        rate_per_peer: 10.0,
        burst_per_peer: 20.0,
        body_timeout_ms: 2_000,
        ..test_config(dir.path())
    };
    let t = tracker::run(cfg).await.unwrap();
    let addr = t.api_addr;
    let honest = Arc::new(TestPeer::start().await);
    let attacker = TestPeer::start().await;
    honest
        .announce(addr, &honest.request(PeerEvent::Started))
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    let honest_task = honest_loop(addr, honest.clone(), stop.clone(), log.clone());
    let m = &t.metrics;
    let base = |r| m.announces(r);
    let (bad0, large0, unauth0, replay0, limited0) = (
        base(R::BadRequest),
        base(R::TooLarge),
        base(R::Unauthorized),
        base(R::Replayed),
        base(R::RateLimited),
    );

    // Forged: the attacker's signature over the honest peer's announce.
    let mut c = Conn::open(addr).await;
    let mut forged =
        SignedAnnounce::decode(&attacker.signed(&attacker.request(PeerEvent::Heartbeat))).unwrap();
    forged.body = SignedAnnounce::decode(&honest.signed(&honest.request(PeerEvent::Heartbeat)))
        .unwrap()
        .body;
    let (s, b) = c.post(Some(CT), &forged.encode().unwrap()).await;
    assert_eq!((s, code_of(&b)), (401, ErrorCode::Unauthorized));
    // Replayed.
    let once = attacker.signed(&attacker.request(PeerEvent::Started));
    assert_eq!(c.post(Some(CT), &once).await.0, 200);
    let (s, b) = c.post(Some(CT), &once).await;
    assert_eq!((s, code_of(&b)), (409, ErrorCode::Replayed));
    // Oversized, and truncated (a valid announce cut short).
    let (s, b) = c.post(Some(CT), &vec![7u8; 64 * 1024 + 1]).await;
    assert_eq!((s, code_of(&b)), (413, ErrorCode::TooLarge));
    let mut c = Conn::open(addr).await;
    let good = attacker.signed(&attacker.request(PeerEvent::Heartbeat));
    let (s, b) = c.post(Some(CT), &good[..good.len() / 2]).await;
    assert_eq!((s, code_of(&b)), (400, ErrorCode::BadRequest));
    // Wrong or missing content type, with an otherwise valid announce.
    // (Refused before the body is read, so each on its own connection.)
    for ct in [Some("text/plain"), Some("application/json"), None] {
        let good = attacker.signed(&attacker.request(PeerEvent::Heartbeat));
        let (s, b) = Conn::open(addr).await.post(ct, &good).await;
        assert_eq!((s, code_of(&b)), (400, ErrorCode::BadRequest), "{ct:?}");
    }
    // A body that promises more than it sends, then the client goes quiet.
    let head = format!(
        "POST /v1/announce HTTP/1.1\r\nHost: t\r\nContent-Type: {CT}\r\nContent-Length: 1000\r\n\r\n"
    );
    let mut short = Conn::open(addr).await;
    short.write(head.as_bytes()).await.unwrap();
    short.write(&good[..100]).await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(30), short.response()).await;
    eprintln!("short body answered after {:?}", started.elapsed());
    let (s, b) = answer
        .expect("a stalled body held its connection for 30 s")
        .expect("closed without an answer");
    assert_eq!((s, code_of(&b)), (400, ErrorCode::BadRequest));

    // The attacks that take CPU run on their own thread, so the honest
    // loop (and the in-process tracker's actors) keep this one.
    eprintln!("slowloris from {:?}", t0.elapsed());
    off_thread(move || slowloris(addr)).await;
    eprintln!("burst from {:?}", t0.elapsed());
    let burst = off_thread(move || burst(addr)).await;

    stop.store(true, Ordering::Relaxed);
    honest_task.await.unwrap();
    let log = log.lock().unwrap().clone();
    let slow: Vec<_> = log
        .iter()
        .filter(|(_, d, _)| *d > Duration::from_millis(500))
        .map(|(at, took, s)| (at.duration_since(t0), *took, *s))
        .collect();
    eprintln!("slow honest announces (start, took, status): {slow:?}");
    let failed: Vec<_> = log
        .iter()
        .filter(|(_, _, s)| *s != 200)
        .map(|(at, took, s)| (at.duration_since(t0), *took, *s))
        .collect();
    let lat: Vec<Duration> = log.iter().map(|(_, d, _)| *d).collect();
    let during: Vec<Duration> = log
        .iter()
        .filter(|(at, _, _)| *at >= burst.0 && *at <= burst.1)
        .map(|(_, d, _)| *d)
        .collect();
    eprintln!(
        "honest announces: {} (p50 {:?}, p99 {:?}, max {:?}); during the burst {} (p50 {:?}, max {:?})",
        lat.len(),
        percentile(lat.clone(), 0.5),
        percentile(lat.clone(), 0.99),
        percentile(lat, 1.0),
        during.len(),
        percentile(during.clone(), 0.5),
        percentile(during, 1.0),
    );
    assert!(failed.is_empty(), "honest announces failed: {failed:?}");
    assert!(log.len() >= 10, "too few honest announces: {}", log.len());

    assert_eq!(m.announces(R::Unauthorized) - unauth0, 1);
    assert!(m.announces(R::Replayed) - replay0 >= 1);
    assert_eq!(m.announces(R::TooLarge) - large0, 1);
    assert_eq!(
        m.announces(R::BadRequest) - bad0,
        5,
        "truncated, three content types, stalled body"
    );
    let refused = m.announces(R::RateLimited) - limited0 + m.announces(R::Replayed) - replay0;
    assert!(refused >= 9_000, "only {refused} of the burst refused");
    t.stop().await.unwrap();
}

/// Run `f`'s future on a fresh thread with its own runtime; await the result.
async fn off_thread<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(f()));
    });
    rx.await.expect("attack thread panicked")
}

/// 64 clients send their request head one byte every 200 ms: the tracker
/// must cut them off (its request timeout) rather than wait for ever.
async fn slowloris(addr: SocketAddr) {
    let head = format!(
        "POST /v1/announce HTTP/1.1\r\nHost: t\r\nContent-Type: {CT}\r\nContent-Length: 10\r\n\r\n"
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let head = head.clone();
        tasks.push(tokio::spawn(async move {
            // Refused outright (TLS handshake timeout under load): cut off too.
            let Some(mut c) = Conn::try_open(addr).await else {
                return Some(started.elapsed());
            };
            for b in head.as_bytes() {
                if c.write(&[*b]).await.is_err() {
                    return Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None
        }));
    }
    let mut cut = Vec::new();
    for t in tasks {
        cut.push(t.await.unwrap());
    }
    let times: Vec<Duration> = cut.iter().flatten().copied().collect();
    eprintln!(
        "slowloris: {} of {} slow clients cut off, after {:?}..{:?}",
        times.len(),
        cut.len(),
        times.iter().min(),
        times.iter().max()
    );
    assert_eq!(
        times.len(),
        cut.len(),
        "a slow client got its whole head in"
    );
}

/// 10,000 validly signed announces from one new identity over 8 keep-alive
/// connections: past its burst, 429 (or 409: signed ahead of time, one
/// with an older timestamp than one already taken is a replay). Returns
/// when it ran.
async fn burst(addr: SocketAddr) -> (Instant, Instant) {
    let id = anomos_common::identity::PeerIdentity::generate().unwrap();
    let bodies: Vec<Vec<u8>> = (0..10_000)
        .map(|_| {
            let req = anomos_common::api::AnnounceRequest {
                peer_id: id.peer_id(),
                timestamp: tracker::unix_now(),
                nonce: rand::random(),
                onion_public: id.onion_public(),
                listen_port: 9,
                listen_ip: None,
                event: PeerEvent::Heartbeat,
                torrents: Vec::new(),
                relayed_bytes: 0,
                failed_nids: Vec::new(),
                held_links: Vec::new(),
                failed_circuits: Vec::new(),
                bad_sources: Vec::new(),
            };
            SignedAnnounce::sign(&id, &req).unwrap().encode().unwrap()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in bodies.chunks(1250) {
        let part = part.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await;
            let mut counts = [0usize; 3];
            for b in &part {
                match c.post(Some(CT), b).await.0 {
                    200 => counts[0] += 1,
                    429 => counts[1] += 1,
                    409 => counts[2] += 1,
                    other => panic!("burst answered {other}"),
                }
            }
            counts
        }));
    }
    let mut total = [0usize; 3];
    for t in tasks {
        let c = t.await.unwrap();
        for (sum, n) in total.iter_mut().zip(c) {
            *sum += n;
        }
    }
    let ended = Instant::now();
    eprintln!(
        "burst: 10000 announces in {:?}: {} accepted, {} rate limited, {} replays",
        ended - started,
        total[0],
        total[1],
        total[2]
    );
    assert!(total[0] <= 20 + 10 * (ended - started).as_secs() as usize + 10);
    (started, ended)
}
