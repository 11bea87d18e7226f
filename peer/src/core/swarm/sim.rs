//! A deterministic multi-peer simulation: swarm cores wired through
//! in-memory circuits that carry real encoded bytes, with simulated time, a
//! per-circuit bandwidth, storage that answers one step later, random circuit
//! drops and reconnections, and one seeder that corrupts every block it
//! serves.
//!
//! Node 0 downloads from three seeders (node 3 corrupts) and two partial
//! peers, which download too. The run must end with every node complete,
//! the corrupting seeder banned by the downloader, no protocol violation
//! between honest cores, in-flight memory within its bound at every step,
//! and endgame mode exercised.

use super::tests::{content, layout};
use super::*;
use anomos_common::peerwire::{max_len_for, Frame, MessageReader};
use rand::Rng;
use std::collections::BTreeMap;
use std::time::Duration;

const PIECES: u32 = 64;
/// Bytes a circuit carries per direction per step.
const BANDWIDTH: usize = 2 * 1024;
const STEP: Duration = Duration::from_millis(10);
const CORRUPT: usize = 3;

struct Node {
    core: SwarmCore,
    corrupt: bool,
    readers: BTreeMap<ConnId, MessageReader>,
}

/// One end of a circuit: node index and that node's id for it.
type End = (usize, ConnId);

struct Net {
    nodes: Vec<Node>,
    peer_of: BTreeMap<End, End>,
    /// Bytes on their way to an end.
    inbox: BTreeMap<End, Vec<u8>>,
    /// Storage work answered next step: reads and hash checks.
    reads: Vec<(usize, ConnId, u32, u32, u32)>,
    checks: Vec<(usize, u32, bool)>,
    /// Circuits to reopen at a step: node pairs.
    reconnect: Vec<(u64, usize, usize)>,
    /// Node pairs where one side banned the other: never reopened.
    feud: Vec<(usize, usize)>,
    /// (closing node, node at the other end, reason).
    closes: Vec<(usize, usize, &'static str)>,
    verified: Vec<Vec<u32>>,
    next_id: u64,
    now: Instant,
    rng: StdRng,
}

fn sim_cfg() -> SwarmConfig {
    SwarmConfig {
        pipeline: 4,
        choke_round: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        keepalive: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(12),
        max_in_flight_bytes: 12 * u64::from(super::tests::PIECE_LEN),
        ..SwarmConfig::default()
    }
}

impl Net {
    fn new(seed: u64) -> Net {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes = Vec::new();
        for i in 0..6 {
            let have = match i {
                1..=3 => Bitfield::full(PIECES),
                4 | 5 => {
                    let mut b = Bitfield::new(PIECES);
                    (0..PIECES).filter(|_| rng.random_bool(0.5)).for_each(|p| {
                        b.set(p);
                    });
                    b
                }
                _ => Bitfield::new(PIECES),
            };
            let core = SwarmCore::new(
                sim_cfg(),
                layout(PIECES),
                super::tests::IH,
                have,
                seed + i as u64,
            );
            nodes.push(Node {
                core,
                corrupt: i == CORRUPT,
                readers: BTreeMap::new(),
            });
        }
        Net {
            nodes,
            peer_of: BTreeMap::new(),
            inbox: BTreeMap::new(),
            reads: Vec::new(),
            checks: Vec::new(),
            reconnect: Vec::new(),
            feud: Vec::new(),
            closes: Vec::new(),
            verified: vec![Vec::new(); 6],
            next_id: 1,
            now: Instant::now(),
            rng,
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let (ia, ib) = (ConnId(self.next_id), ConnId(self.next_id + 1));
        self.next_id += 2;
        self.peer_of.insert((a, ia), (b, ib));
        self.peer_of.insert((b, ib), (a, ia));
        for (n, id) in [(a, ia), (b, ib)] {
            let credit = self.rng.random_range(0..=3);
            let node = &mut self.nodes[n];
            node.readers
                .insert(id, MessageReader::new(max_len_for(PIECES)));
            node.core.add_conn(self.now, id, credit);
        }
    }

    /// Tear the circuit at `end` down; the other end is told.
    fn cut(&mut self, end: End, step: u64) {
        let Some(other) = self.peer_of.remove(&end) else {
            return;
        };
        self.peer_of.remove(&other);
        for e in [end, other] {
            self.inbox.remove(&e);
            self.nodes[e.0].readers.remove(&e.1);
            self.nodes[e.0].core.remove_conn(self.now, e.1);
        }
        let pair = (end.0.min(other.0), end.0.max(other.0));
        if !self.feud.contains(&pair) {
            self.reconnect.push((step + 50, pair.0, pair.1));
        }
    }

    fn run_actions(&mut self, n: usize, step: u64) {
        while let Some(a) = self.nodes[n].core.poll_action() {
            let mut out = Vec::new();
            let conn = match a {
                Action::SendHandshake { conn, hs } => {
                    hs.encode(&mut out);
                    conn
                }
                Action::Send { conn, msg } => {
                    if let Message::Request { piece, offset, len } = msg {
                        assert!(layout(PIECES).block_index(piece, offset, len).is_some());
                    }
                    msg.encode(&mut out);
                    conn
                }
                Action::ReadBlock {
                    conn,
                    piece,
                    offset,
                    len,
                } => {
                    self.reads.push((n, conn, piece, offset, len));
                    continue;
                }
                Action::CheckPiece { piece, data } => {
                    let ok = data == content(&layout(PIECES), piece);
                    self.checks.push((n, piece, ok));
                    continue;
                }
                Action::Close { conn, reason } => {
                    if let Some(&(other, _)) = self.peer_of.get(&(n, conn)) {
                        self.closes.push((n, other, reason));
                        if reason == reason::BAD_PIECE {
                            self.feud.push((n.min(other), n.max(other)));
                        }
                    }
                    self.cut((n, conn), step);
                    continue;
                }
                Action::Have { piece } => {
                    self.verified[n].push(piece);
                    continue;
                }
                Action::Complete => continue,
            };
            if let Some(&dest) = self.peer_of.get(&(n, conn)) {
                self.inbox.entry(dest).or_default().extend_from_slice(&out);
            }
        }
    }

    /// Move up to BANDWIDTH bytes into every end and feed the frames.
    fn deliver(&mut self) {
        let ends: Vec<End> = self.inbox.keys().copied().collect();
        for (n, id) in ends {
            let Some(buf) = self.inbox.get_mut(&(n, id)) else {
                continue;
            };
            let take = buf.len().min(BANDWIDTH);
            let chunk: Vec<u8> = buf.drain(..take).collect();
            let node = &mut self.nodes[n];
            let Some(reader) = node.readers.get_mut(&id) else {
                continue;
            };
            reader.push(&chunk);
            while let Some(frame) = reader.next_frame().expect("honest cores send valid bytes") {
                match frame {
                    Frame::Handshake(hs) => node.core.handle_handshake(self.now, id, hs),
                    Frame::Message(m) => node.core.handle(self.now, id, m),
                }
            }
        }
    }

    fn storage(&mut self) {
        for (n, conn, piece, offset, len) in std::mem::take(&mut self.reads) {
            let mut data =
                content(&layout(PIECES), piece)[offset as usize..][..len as usize].to_vec();
            if self.nodes[n].corrupt {
                data[0] ^= 0xff;
            }
            self.nodes[n].core.block_read(conn, piece, offset, data);
        }
        for (n, piece, ok) in std::mem::take(&mut self.checks) {
            self.nodes[n].core.piece_checked(self.now, piece, ok);
        }
    }
}

#[test]
fn swarm_downloads_everything_and_bans_the_corrupter() {
    let mut drops = 0;
    for seed in [7, 11, 23, 42] {
        drops += run(seed);
    }
    assert!(drops > 0, "churn never happened");
}

/// One run of the simulation; returns how many circuits it dropped.
fn run(seed: u64) -> u32 {
    let mut drops = 0;
    let mut net = Net::new(seed);
    for (a, b) in [
        (0, 1),
        (0, 2),
        (0, 3),
        (0, 4),
        (0, 5),
        (4, 1),
        (4, 2),
        (4, 3),
        (5, 1),
        (5, 3),
        (4, 5),
    ] {
        net.connect(a, b);
    }
    let bound = sim_cfg()
        .max_in_flight_bytes
        .max(u64::from(super::tests::PIECE_LEN));
    let mut step = 0u64;
    while !net.nodes.iter().all(|n| n.core.is_complete()) {
        step += 1;
        assert!(
            step < 20_000,
            "swarm stalled: {:?}",
            net.nodes
                .iter()
                .map(|n| n.core.stats().pieces_have)
                .collect::<Vec<_>>()
        );
        net.now += STEP;
        for n in 0..net.nodes.len() {
            net.nodes[n].core.tick(net.now);
            net.run_actions(n, step);
        }
        net.storage();
        net.deliver();
        for n in 0..net.nodes.len() {
            net.run_actions(n, step);
            assert!(net.nodes[n].core.stats().buffered_bytes <= bound);
        }
        // Churn: drop a random circuit now and then; reopen it later.
        if net.rng.random_bool(0.01) && !net.peer_of.is_empty() {
            let i = net.rng.random_range(0..net.peer_of.len());
            if let Some(&end) = net.peer_of.keys().nth(i) {
                net.cut(end, step);
                drops += 1;
            }
        }
        let due: Vec<(u64, usize, usize)> = net
            .reconnect
            .iter()
            .filter(|r| r.0 <= step)
            .copied()
            .collect();
        net.reconnect.retain(|r| r.0 > step);
        for (_, a, b) in due {
            net.connect(a, b);
        }
    }
    for (n, verified) in net.verified.iter().enumerate() {
        let mut v = verified.clone();
        v.sort_unstable();
        v.dedup();
        assert_eq!(v.len(), verified.len(), "node {n} verified a piece twice");
    }
    let total = layout(PIECES).total_length();
    let s0 = net.nodes[0].core.stats();
    assert_eq!(net.verified[0].len(), PIECES as usize);
    assert_eq!(s0.downloaded, total);
    assert!(s0.endgame_requests > 0, "endgame never ran");
    assert!(s0.wasted > 0, "the corrupter cost something");
    assert!(
        net.feud.contains(&(0, CORRUPT)),
        "downloader did not ban the corrupter"
    );
    // Honest cores never see a violation from each other, and only the
    // corrupter is ever blamed for a bad piece; conns between two complete
    // cores end as such.
    let complete = |n: usize| net.nodes[n].core.is_complete();
    assert!(
        net.closes.iter().all(|&(n, other, r)| match r {
            reason::BAD_PIECE => other == CORRUPT,
            reason::BOTH_COMPLETE => complete(n) && complete(other),
            _ => false,
        }),
        "unexpected closes: {:?}",
        net.closes
    );
    let served: u64 = (1..net.nodes.len())
        .map(|n| net.nodes[n].core.stats().uploaded)
        .sum();
    assert!(served >= total);
    drops
}
