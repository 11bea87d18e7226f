//! A hostile neighbour built from the crate's own parts: a real identity
//! that announces to the lab's tracker (with a TLS listener, so the
//! tracker's reachability check passes and it gets neighbours and circuit
//! grants like anyone), links dialled with `net::dial`, and then raw cells
//! on those links — whatever the test wants to send.

use std::rc::Rc;
use std::time::Duration;

use anomos_common::api::{
    AnnounceRequest, AnnounceResponse, CircuitGrant, HeldLink, Neighbour, PeerEvent,
    TorrentAnnounce,
};
use anomos_common::cell::{Cell, CellMsg, CREATE_CODE_LEN};
use anomos_common::identity::PeerIdentity;
use anomos_common::onion::{self, Peeled, TrackingCode};
use anomos_common::replay::ReplayCache;
use anomos_common::{CircuitId, Nid, Pin};
use anomos_peer::actors::tracker::{unix_now, Announcer, HttpsAnnouncer};
use anomos_peer::net::tracker_client::{TrackerClient, TrackerUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_openssl::SslStream;

use crate::lab::Lab;

/// The hostile peer.
pub struct Attacker {
    pub id: Rc<PeerIdentity>,
    announcer: HttpsAnnouncer,
    port: u16,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Attacker {
    /// A fresh identity with a listener that completes TLS handshakes (and
    /// nothing more) for the tracker's reachability check.
    pub async fn start(lab: &Lab) -> Attacker {
        let id = PeerIdentity::generate().unwrap();
        let acceptor = anomos_peer::net::tls::link_acceptor(&id).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let listener = tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
                tokio::spawn(async move {
                    if let Ok(mut s) = SslStream::new(ssl, tcp) {
                        let _ = std::pin::Pin::new(&mut s).accept().await;
                        let _ = s.shutdown().await;
                    }
                });
            }
        });
        let url = TrackerUrl::parse(&lab.url).unwrap();
        let pin = Pin::from_hex(&lab.pin).unwrap();
        let client = TrackerClient::new(url, Some(pin), Duration::from_secs(20)).unwrap();
        let id = Rc::new(id);
        let announcer = HttpsAnnouncer {
            id: id.clone(),
            client: Rc::new(tokio::sync::Mutex::new(client)),
        };
        Attacker {
            id,
            announcer,
            port,
            listener,
        }
    }

    /// One signed announce.
    pub async fn announce(
        &self,
        event: PeerEvent,
        torrents: Vec<TorrentAnnounce>,
        held: &[Nid],
        neighbours: &[Neighbour],
    ) -> AnnounceResponse {
        let held_links = neighbours
            .iter()
            .filter(|n| held.contains(&n.nid))
            .map(|n| HeldLink {
                nid: n.nid,
                peer: anomos_common::PeerId(n.pin.0),
            })
            .collect();
        let req = AnnounceRequest {
            peer_id: self.id.peer_id(),
            timestamp: unix_now(),
            nonce: rand::random(),
            onion_public: self.id.onion_public(),
            listen_port: self.port,
            listen_ip: None,
            event,
            torrents,
            relayed_bytes: 0,
            failed_nids: Vec::new(),
            held_links,
            failed_circuits: Vec::new(),
            bad_sources: Vec::new(),
        };
        self.announcer.announce(req).await.unwrap()
    }

    /// Dial `n` with the crate's own link set-up.
    pub async fn dial(&self, n: &Neighbour) -> RawLink {
        let connector = anomos_peer::net::tls::link_connector(&self.id).unwrap();
        let link =
            anomos_peer::net::dial::dial(&connector, self.id.peer_id(), n, Duration::from_secs(15))
                .await
                .unwrap_or_else(|e| panic!("dialling a neighbour: {e}"));
        RawLink::new(link.stream)
    }

    /// Peel our own layer of a grant: the first hop's NID and its code.
    pub fn first_hop(&self, g: &CircuitGrant) -> (Nid, Box<[u8; CREATE_CODE_LEN]>) {
        let code = TrackingCode::from_bytes(&g.code).unwrap();
        let mut cache = ReplayCache::new(16);
        match onion::peel(self.id.onion(), &code, unix_now(), &mut cache).unwrap() {
            Peeled::Relay {
                next_nid,
                next_code,
                ..
            } => {
                let mut c = Box::new([0u8; CREATE_CODE_LEN]);
                c.copy_from_slice(next_code.as_bytes());
                (next_nid, c)
            }
            Peeled::Exit { .. } => panic!("our own layer is an exit layer"),
        }
    }
}

/// A verified link on which the test writes raw cells; what the other end
/// sends is decoded by a reader task.
pub struct RawLink {
    w: WriteHalf<anomos_peer::link::LinkStream>,
    rx: mpsc::UnboundedReceiver<Cell>,
    /// Cells received but not yet asked for.
    seen: Vec<Cell>,
    next_id: u32,
}

impl RawLink {
    fn new(s: anomos_peer::link::LinkStream) -> RawLink {
        let (r, w) = tokio::io::split(s);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(read_cells(r, tx));
        RawLink {
            w,
            rx,
            seen: Vec::new(),
            next_id: 1,
        }
    }

    /// A circuit id of our side (we dialled: odd), never used before.
    pub fn fresh_id(&mut self) -> CircuitId {
        let id = CircuitId(self.next_id);
        self.next_id += 2;
        id
    }

    /// Write `cells` in one go.
    pub async fn send(&mut self, cells: &[Cell]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(cells.len() * anomos_common::cell::CELL_LEN);
        for c in cells {
            c.encode_into(&mut buf);
        }
        self.send_raw(&buf).await
    }

    /// Write raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.write_all(bytes).await?;
        self.w.flush().await
    }

    /// The first cell received on `circ` (within `limit`).
    pub async fn on(&mut self, circ: CircuitId, limit: Duration) -> Option<Cell> {
        if let Some(i) = self.seen.iter().position(|c| c.circ == circ) {
            return Some(self.seen.remove(i));
        }
        let found = tokio::time::timeout(limit, async {
            while let Some(c) = self.rx.recv().await {
                if c.circ == circ {
                    return Some(c);
                }
                self.seen.push(c);
            }
            None
        })
        .await;
        found.ok().flatten()
    }

    /// Answer every CREATE that arrives with CONFIRM, and nothing else
    /// (no CREDIT, no reads of DATA): an exit whose reader stalls for ever.
    /// Runs until the link ends.
    pub async fn confirm_and_stall(mut self) {
        while let Some(c) = self.rx.recv().await {
            if matches!(c.msg, CellMsg::Create(_)) {
                let reply = Cell::new(c.circ, CellMsg::Confirm);
                if self.send(&[reply]).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Whether the other end closes the link within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let end = tokio::time::timeout(limit, async {
            while let Some(c) = self.rx.recv().await {
                self.seen.push(c);
            }
        })
        .await;
        end.is_ok()
    }
}

/// Decode cells until the link ends.
async fn read_cells(
    mut r: ReadHalf<anomos_peer::link::LinkStream>,
    tx: mpsc::UnboundedSender<Cell>,
) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut at = 0;
        while let Ok((cell, used)) = Cell::decode(&buf[at..]) {
            at += used;
            if tx.send(cell).is_err() {
                return;
            }
        }
        buf.drain(..at);
    }
}
