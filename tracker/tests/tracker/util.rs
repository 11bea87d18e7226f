//! Test peers with real TLS listeners, and a minimal HTTP/1.1-over-openssl client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anomos_common::api::{
    AnnounceRequest, AnnounceResponse, ApiErrorBody, HeldLink, Message, PeerEvent, Role,
    SignedAnnounce, TorrentAnnounce, TorrentEvent, ANNOUNCE_PATH, CONTENT_TYPE,
};
use anomos_common::identity::{pin_of_x509, PeerIdentity};
use anomos_common::{InfoHash, Nid, PeerId, Pin};
use openssl::ssl::{SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;
use tracker::config::Config;

/// Config for a test tracker on loopback with ephemeral ports.
pub fn test_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_path_buf(),
        allow_same_ip: true,
        rate_per_ip: 10_000.0,
        burst_per_ip: 10_000.0,
        rate_per_peer: 100.0,
        burst_per_peer: 100.0,
        reach_timeout_ms: 2000,
        ..Config::default()
    }
}

/// A peer identity plus a TLS listener presenting its certificate; it
/// accepts, handshakes and closes (what a real peer does without a hello).
pub struct TestPeer {
    pub id: PeerIdentity,
    pub port: u16,
    pub timestamp_bias: u64,
}

impl TestPeer {
    pub async fn start() -> TestPeer {
        let id = PeerIdentity::generate().unwrap();
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        b.set_private_key(id.tls().key()).unwrap();
        b.set_certificate(id.tls().cert()).unwrap();
        let acceptor = b.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        actix_rt::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                actix_rt::spawn(async move {
                    if let Ok(mut s) = SslStream::new(ssl, tcp) {
                        let _ = std::pin::Pin::new(&mut s).accept().await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        TestPeer {
            id,
            port,
            timestamp_bias: 0,
        }
    }

    pub fn peer_id(&self) -> PeerId {
        self.id.peer_id()
    }

    pub fn request(&self, event: PeerEvent) -> AnnounceRequest {
        AnnounceRequest {
            peer_id: self.peer_id(),
            timestamp: tracker::unix_now() + self.timestamp_bias,
            nonce: rand::random(),
            onion_public: self.id.onion_public(),
            listen_port: self.port,
            listen_ip: None,
            event,
            torrents: Vec::new(),
            relayed_bytes: 0,
            failed_nids: Vec::new(),
            held_links: Vec::new(),
            failed_circuits: Vec::new(),
            bad_sources: Vec::new(),
        }
    }

    pub fn signed(&self, req: &AnnounceRequest) -> Vec<u8> {
        SignedAnnounce::sign(&self.id, req)
            .unwrap()
            .encode()
            .unwrap()
    }

    /// Announce and expect success.
    pub async fn announce(&self, tracker: SocketAddr, req: &AnnounceRequest) -> AnnounceResponse {
        let (status, body) = post(tracker, &self.signed(req)).await;
        assert_eq!(
            status,
            200,
            "announce failed: {:?}",
            ApiErrorBody::decode(&body)
        );
        AnnounceResponse::decode(&body).unwrap()
    }
}

pub fn torrent(infohash: InfoHash, role: Role, downloaded: u64, wanted: u16) -> TorrentAnnounce {
    TorrentAnnounce {
        infohash,
        role,
        event: TorrentEvent::None,
        uploaded: 0,
        downloaded,
        left: if role == Role::Seeding { 0 } else { 1000 },
        circuits_wanted: wanted,
    }
}

pub fn held(resp: &AnnounceResponse) -> Vec<HeldLink> {
    resp.neighbours
        .iter()
        .map(|n| HeldLink {
            nid: n.nid,
            peer: PeerId(n.pin.0),
        })
        .collect()
}

pub fn edges(resp: &AnnounceResponse) -> Vec<(Nid, PeerId)> {
    resp.neighbours
        .iter()
        .map(|n| (n.nid, PeerId(n.pin.0)))
        .collect()
}

async fn tls_connect(addr: SocketAddr) -> SslStream<TcpStream> {
    try_tls_connect(addr)
        .await
        .expect("TLS connection to the tracker")
}

/// A TLS connection to the tracker that checks nothing about its
/// certificate (the tests read or ignore it); `None` if it cannot be made.
pub async fn try_tls_connect(addr: SocketAddr) -> Option<SslStream<TcpStream>> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_verify(SslVerifyMode::NONE);
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .into_ssl("tracker")
        .unwrap();
    let tcp = TcpStream::connect(addr).await.ok()?;
    let mut s = SslStream::new(ssl, tcp).ok()?;
    std::pin::Pin::new(&mut s).connect().await.ok()?;
    Some(s)
}

/// The pin of the certificate the tracker serves.
pub async fn served_pin(addr: SocketAddr) -> Pin {
    let s = tls_connect(addr).await;
    pin_of_x509(&s.ssl().peer_certificate().unwrap()).unwrap()
}

/// POST an announce body over TLS; returns (status, body).
pub async fn post(addr: SocketAddr, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = tls_connect(addr).await;
    let head = format!(
        "POST {ANNOUNCE_PATH} HTTP/1.1\r\nHost: tracker\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(body).await;
    read_response(&mut s).await
}

/// Plain-HTTP GET on the operator listener; returns (status, body).
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: op\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let (status, body) = read_response(&mut s).await;
    (status, String::from_utf8(body).unwrap())
}

async fn read_response<S: AsyncReadExt + Unpin>(s: &mut S) -> (u16, Vec<u8>) {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "response timed out");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if chunked {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}
