//! The announce request and response bodies.
//!
//! Field order is wire order (bincode encodes struct fields in declaration
//! order, enums as their variant index): never reorder, only add a new API
//! version. PROTOCOL.md §8 lists every field with its encoding.

use crate::crypto::{CircuitSecret, LayerKeys};
use crate::ids::{InfoHash, Nid, PeerId, Pin};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// What a whole announce says about the peer's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PeerEvent {
    /// First announce of this process: the tracker (re)registers the peer,
    /// checks reachability and rebuilds edges from `held_links`.
    Started,
    /// Regular re-announce, or an early one to report failed NIDs.
    Heartbeat,
    /// Clean shutdown: the tracker drops the peer and its edges.
    Stopped,
}

/// What the peer does with one torrent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Has every piece and serves them.
    Seeding,
    /// Still downloading (and serving what it has).
    Leeching,
}

/// A change in one torrent since the last announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TorrentEvent {
    /// The peer began seeding or downloading this torrent.
    Started,
    /// The download just finished (sent once).
    Completed,
    /// The peer stopped; it is removed from the swarm.
    Stopped,
    /// No change: a progress report.
    None,
}

/// One torrent's state in an announce.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TorrentAnnounce {
    /// Which torrent.
    pub infohash: InfoHash,
    /// Seeding or leeching.
    pub role: Role,
    /// What changed since the last announce.
    pub event: TorrentEvent,
    /// Payload bytes uploaded for this torrent since the peer started it
    /// (cumulative, so a lost announce loses nothing).
    pub uploaded: u64,
    /// Payload bytes downloaded and verified, cumulative.
    pub downloaded: u64,
    /// Bytes still missing (0 when seeding).
    pub left: u64,
    /// How many new circuits to sources the peer wants for this torrent
    /// (0 for seeds, and for downloads that have enough).
    pub circuits_wanted: u16,
}

/// A link the peer currently holds, so a restarted tracker can rebuild the
/// graph from edges both ends confirm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeldLink {
    /// The link's NID at this peer.
    pub nid: Nid,
    /// The neighbour at the other end (the pin its certificate showed).
    pub peer: PeerId,
}

/// The signed body of `POST /v1/announce`.
///
/// Replay protection: the tracker keeps, per identity, the newest accepted
/// timestamp and the nonces seen within the skew window, and refuses an
/// announce with an older timestamp or a seen nonce (`ErrorCode::Replayed`).
/// [`super::SignedAnnounce::verify`] only checks the signature and the skew.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AnnounceRequest {
    /// Must equal the pin of the certificate the announce is signed with.
    pub peer_id: PeerId,
    /// The peer's clock, Unix seconds.
    pub timestamp: u64,
    /// 16 random bytes, fresh for every announce.
    pub nonce: [u8; 16],
    /// The peer's X25519 onion public key.
    pub onion_public: [u8; 32],
    /// The TCP port the peer's link listener accepts on.
    pub listen_port: u16,
    /// The address to dial, when the peer knows better than the source
    /// address the tracker sees (e.g. behind a proxy, or 127.0.0.x in
    /// tests). The tracker still dials it before handing the peer out, and
    /// may ignore it by policy.
    pub listen_ip: Option<IpAddr>,
    /// Session event.
    pub event: PeerEvent,
    /// Every torrent the peer seeds or downloads (several per announce).
    pub torrents: Vec<TorrentAnnounce>,
    /// Bytes this peer relayed for others since it started, cumulative.
    pub relayed_bytes: u64,
    /// NIDs whose links died since the last announce: the tracker drops
    /// those edges and plans replacements.
    pub failed_nids: Vec<Nid>,
    /// Links the peer holds right now.
    pub held_links: Vec<HeldLink>,
    /// [`CircuitGrant::id`]s of grants that went silent since the last
    /// announce (CREATE went out; the channel did not open within the
    /// set-up timeout).
    /// The originator cannot tell which hop failed; the tracker planned the
    /// path, so it counts the failure against every relay on it and stops
    /// routing through one that fails clearly more often than its peers.
    pub failed_circuits: Vec<u64>,
    /// [`CircuitGrant::id`]s of circuits whose far end, the source, broke
    /// the piece protocol since the last announce (sent data that failed
    /// its hash, or any other violation). The originator never learns who
    /// the source was; the tracker planned the path, so it plans no more
    /// circuits from this peer to that source for a while.
    pub bad_sources: Vec<u64>,
}

/// A neighbour the tracker assigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Neighbour {
    /// The link's NID (the same at both ends).
    pub nid: Nid,
    /// Where to dial, or where the neighbour will dial from.
    pub addr: SocketAddr,
    /// The pin the neighbour's certificate must show (its peer id).
    pub pin: Pin,
    /// Whether this peer opens the link. Exactly one end of each edge is
    /// told to dial (usually the newcomer, whose address the tracker has just
    /// checked); the other waits for it, so the two never race.
    pub dial: bool,
}

/// One circuit to a source, for the originator (the downloader).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitGrant {
    /// The torrent the circuit serves.
    pub infohash: InfoHash,
    /// The tracking code, `onion::CODE_LEN` (656) bytes. The originator
    /// peels its own layer first, then sends the rest in a CREATE cell.
    #[serde(with = "serde_bytes")]
    pub code: Vec<u8>,
    /// Relay-layer keys of the hops after the originator, nearest first.
    pub layer_keys: Vec<LayerKeys>,
    /// Secret shared with the exit, mixed into the end-to-end key exchange.
    pub circuit_secret: CircuitSecret,
    /// Unix time after which every hop refuses the code.
    pub expiry: u64,
    /// Random id the tracker gave this circuit, reported back in
    /// [`AnnounceRequest::failed_circuits`] if it does not open. Names the
    /// planned path at the tracker only; it never travels on a link.
    pub id: u64,
}

impl std::fmt::Debug for CircuitGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CircuitGrant(hops={}, expiry={})",
            self.layer_keys.len(),
            self.expiry
        )
    }
}

/// The tracker's answer to a successful announce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceResponse {
    /// Seconds until the next regular announce.
    pub interval_secs: u32,
    /// New or changed neighbours (links to open or expect).
    pub neighbours: Vec<Neighbour>,
    /// NIDs whose edges the tracker dropped: close those links.
    pub dropped_nids: Vec<Nid>,
    /// New circuits for the peer's downloads.
    pub circuits: Vec<CircuitGrant>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::{ApiError, Message};
    use proptest::prelude::*;

    fn arb32() -> impl Strategy<Value = [u8; 32]> {
        any::<[u8; 32]>()
    }

    fn arb_torrent() -> impl Strategy<Value = TorrentAnnounce> {
        (
            arb32(),
            prop_oneof![Just(Role::Seeding), Just(Role::Leeching)],
            prop_oneof![
                Just(TorrentEvent::Started),
                Just(TorrentEvent::Completed),
                Just(TorrentEvent::Stopped),
                Just(TorrentEvent::None)
            ],
            any::<(u64, u64, u64, u16)>(),
        )
            .prop_map(
                |(ih, role, event, (uploaded, downloaded, left, circuits_wanted))| {
                    TorrentAnnounce {
                        infohash: InfoHash(ih),
                        role,
                        event,
                        uploaded,
                        downloaded,
                        left,
                        circuits_wanted,
                    }
                },
            )
    }

    pub(crate) fn arb_request() -> impl Strategy<Value = AnnounceRequest> {
        (
            (
                arb32(),
                any::<u64>(),
                any::<[u8; 16]>(),
                arb32(),
                any::<u16>(),
            ),
            proptest::option::of(any::<IpAddr>()),
            prop_oneof![
                Just(PeerEvent::Started),
                Just(PeerEvent::Heartbeat),
                Just(PeerEvent::Stopped)
            ],
            proptest::collection::vec(arb_torrent(), 0..4),
            any::<u64>(),
            proptest::collection::vec(any::<u16>().prop_map(Nid), 0..4),
            (
                proptest::collection::vec(
                    (any::<u16>(), arb32()).prop_map(|(n, p)| HeldLink {
                        nid: Nid(n),
                        peer: PeerId(p),
                    }),
                    0..4,
                ),
                proptest::collection::vec(any::<u64>(), 0..4),
                proptest::collection::vec(any::<u64>(), 0..4),
            ),
        )
            .prop_map(
                |(
                    (pid, timestamp, nonce, onion_public, listen_port),
                    listen_ip,
                    event,
                    torrents,
                    relayed_bytes,
                    failed_nids,
                    (held_links, failed_circuits, bad_sources),
                )| {
                    AnnounceRequest {
                        peer_id: PeerId(pid),
                        timestamp,
                        nonce,
                        onion_public,
                        listen_port,
                        listen_ip,
                        event,
                        torrents,
                        relayed_bytes,
                        failed_nids,
                        held_links,
                        failed_circuits,
                        bad_sources,
                    }
                },
            )
    }

    fn arb_grant() -> impl Strategy<Value = CircuitGrant> {
        (
            arb32(),
            proptest::collection::vec(any::<u8>(), 0..700),
            proptest::collection::vec(
                (arb32(), arb32()).prop_map(|(forward, backward)| LayerKeys { forward, backward }),
                0..8,
            ),
            arb32(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(ih, code, layer_keys, secret, expiry, id)| CircuitGrant {
                infohash: InfoHash(ih),
                code,
                layer_keys,
                circuit_secret: CircuitSecret(secret),
                expiry,
                id,
            })
    }

    fn arb_response() -> impl Strategy<Value = AnnounceResponse> {
        (
            any::<u32>(),
            proptest::collection::vec(
                (any::<u16>(), any::<SocketAddr>(), arb32(), any::<bool>()).prop_map(
                    |(n, addr, pin, dial)| Neighbour {
                        nid: Nid(n),
                        // Flow info and scope id are not carried.
                        addr: SocketAddr::new(addr.ip(), addr.port()),
                        pin: Pin(pin),
                        dial,
                    },
                ),
                0..6,
            ),
            proptest::collection::vec(any::<u16>().prop_map(Nid), 0..4),
            proptest::collection::vec(arb_grant(), 0..3),
        )
            .prop_map(|(interval_secs, neighbours, dropped_nids, circuits)| {
                AnnounceResponse {
                    interval_secs,
                    neighbours,
                    dropped_nids,
                    circuits,
                }
            })
    }

    fn check_truncations<M: Message + std::fmt::Debug>(bytes: &[u8]) {
        for cut in 0..bytes.len() {
            assert!(
                M::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn request_round_trips(req in arb_request()) {
            let bytes = req.encode().expect("encode");
            prop_assert_eq!(AnnounceRequest::decode(&bytes).expect("decode"), req);
            check_truncations::<AnnounceRequest>(&bytes);
        }

        #[test]
        fn response_round_trips(resp in arb_response()) {
            let bytes = resp.encode().expect("encode");
            prop_assert_eq!(AnnounceResponse::decode(&bytes).expect("decode"), resp);
            check_truncations::<AnnounceResponse>(&bytes);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Anything that does decode must re-encode to the same bytes.
            if let Ok(v) = AnnounceRequest::decode(&bytes) {
                prop_assert_eq!(v.encode().expect("encode"), bytes.clone());
            }
            if let Ok(v) = AnnounceResponse::decode(&bytes) {
                prop_assert_eq!(v.encode().expect("encode"), bytes.clone());
            }
            let _ = crate::api::SignedAnnounce::decode(&bytes);
            let _ = crate::api::ApiErrorBody::decode(&bytes);
        }
    }

    #[test]
    fn oversized_request_is_refused_on_encode() {
        let t = TorrentAnnounce {
            infohash: InfoHash([1; 32]),
            role: Role::Leeching,
            event: TorrentEvent::None,
            uploaded: u64::MAX,
            downloaded: u64::MAX,
            left: u64::MAX,
            circuits_wanted: 1,
        };
        let req = AnnounceRequest {
            peer_id: PeerId([0; 32]),
            timestamp: 0,
            nonce: [0; 16],
            onion_public: [0; 32],
            listen_port: 1,
            listen_ip: None,
            event: PeerEvent::Heartbeat,
            torrents: vec![t; 2000],
            relayed_bytes: 0,
            failed_nids: vec![],
            held_links: vec![],
            failed_circuits: vec![],
            bad_sources: vec![],
        };
        assert!(matches!(req.encode(), Err(ApiError::TooLarge { .. })));
    }

    #[test]
    fn grant_debug_hides_secrets() {
        let g = CircuitGrant {
            infohash: InfoHash([9; 32]),
            code: vec![7; 10],
            layer_keys: vec![],
            circuit_secret: CircuitSecret([5; 32]),
            expiry: 3,
            id: 11,
        };
        assert_eq!(format!("{g:?}"), "CircuitGrant(hops=0, expiry=3)");
    }
}
