//! One test per documented transition (see STATE.md), plus the helpers the
//! simulation and property tests share.

use super::*;
use std::time::Duration;

pub(super) const IH: InfoHash = InfoHash([7; 32]);
pub(super) const PIECE_LEN: u32 = 32 * 1024;
pub(super) const A: ConnId = ConnId(1);
pub(super) const B: ConnId = ConnId(2);

/// `pieces` pieces of two blocks each, the last one 1000 bytes short.
pub(super) fn layout(pieces: u32) -> Layout {
    let total = u64::from(pieces) * u64::from(PIECE_LEN) - 1000;
    Layout::new(PIECE_LEN, vec![total]).expect("layout")
}

/// The true content of `piece`.
pub(super) fn content(l: &Layout, piece: u32) -> Vec<u8> {
    let len = l.piece_len(piece).unwrap_or(0) as usize;
    (0..len)
        .map(|i| (i as u32 ^ piece.wrapping_mul(131)) as u8)
        .collect()
}

pub(super) fn core(have: Bitfield, cfg: SwarmConfig) -> SwarmCore {
    SwarmCore::new(cfg, layout(8), IH, have, 42)
}

pub(super) fn drain(c: &mut SwarmCore) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

/// Messages sent to `conn` among `actions`.
pub(super) fn sent(actions: &[Action], conn: ConnId) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { conn: c, msg } if *c == conn => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn closed(actions: &[Action]) -> Vec<(ConnId, &'static str)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn, reason } => Some((*conn, *reason)),
            _ => None,
        })
        .collect()
}

pub(super) fn requests(msgs: &[Message]) -> Vec<(u32, u32, u32)> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Request { piece, offset, len } => Some((*piece, *offset, *len)),
            _ => None,
        })
        .collect()
}

/// Add `id` and complete its handshake; returns what that queued.
pub(super) fn open(c: &mut SwarmCore, now: Instant, id: ConnId) -> Vec<Action> {
    c.add_conn(now, id, 0);
    c.handle_handshake(now, id, Handshake::new(IH));
    drain(c)
}

/// Answer request `(piece, offset, len)` from `id` with the true data.
pub(super) fn answer(
    c: &mut SwarmCore,
    now: Instant,
    id: ConnId,
    (piece, offset, len): (u32, u32, u32),
) {
    let data = content(&layout(8), piece)[offset as usize..(offset + len) as usize].to_vec();
    c.handle(
        now,
        id,
        Message::Piece {
            piece,
            offset,
            data,
        },
    );
}

pub(super) fn seed_bits() -> Message {
    Message::Bitfield(Bitfield::full(8).as_bytes().to_vec())
}

#[test]
fn add_conn_queues_handshake_then_bitfield() {
    let t = Instant::now();
    let mut leech = core(Bitfield::new(8), SwarmConfig::default());
    leech.add_conn(t, A, 9);
    assert_eq!(
        drain(&mut leech),
        vec![Action::SendHandshake {
            conn: A,
            hs: Handshake::new(IH)
        }]
    );
    let mut seed = core(Bitfield::full(8), SwarmConfig::default());
    seed.add_conn(t, A, 0);
    let acts = drain(&mut seed);
    assert_eq!(sent(&acts, A), vec![seed_bits()]);
    assert!(seed.is_complete() && seed.have().is_complete());
    // Already complete: no Complete action ever.
    assert!(!acts.contains(&Action::Complete));
}

#[test]
fn bad_handshakes_close() {
    let t = Instant::now();
    let mut c = core(Bitfield::new(8), SwarmConfig::default());
    for (id, hs, why) in [
        (A, Handshake::new(InfoHash([8; 32])), reason::WRONG_INFOHASH),
        (
            B,
            Handshake {
                version: 2,
                infohash: IH,
            },
            reason::WRONG_VERSION,
        ),
    ] {
        c.add_conn(t, id, 0);
        c.handle_handshake(t, id, hs);
        assert_eq!(closed(&drain(&mut c)), vec![(id, why)]);
    }
    let id = ConnId(3);
    open(&mut c, t, id);
    c.handle_handshake(t, id, Handshake::new(IH));
    assert_eq!(closed(&drain(&mut c)), vec![(id, reason::HANDSHAKE_TWICE)]);
    // Message before handshake; anything for a closed or unknown conn is ignored.
    c.add_conn(t, ConnId(4), 0);
    c.handle(t, ConnId(4), Message::Interested);
    c.handle(t, ConnId(4), Message::Interested);
    c.handle(t, ConnId(99), Message::Choke);
    let acts = drain(&mut c);
    assert_eq!(closed(&acts), vec![(ConnId(4), reason::BEFORE_HANDSHAKE)]);
    assert_eq!(c.stats().conns, 0);
}

#[test]
fn bitfield_rules() {
    let t = Instant::now();
    let mut c = core(Bitfield::new(8), SwarmConfig::default());
    let cases: [(Vec<Message>, &str); 3] = [
        (
            vec![Message::Have { piece: 1 }, seed_bits()],
            reason::BITFIELD_LATE,
        ),
        (vec![seed_bits(), seed_bits()], reason::BITFIELD_LATE),
        (vec![Message::Bitfield(vec![0xff, 0])], reason::BAD_BITFIELD),
    ];
    for (i, (msgs, why)) in cases.into_iter().enumerate() {
        let id = ConnId(10 + i as u64);
        open(&mut c, t, id);
        for m in msgs {
            c.handle(t, id, m);
        }
        assert_eq!(closed(&drain(&mut c)), vec![(id, why)], "case {i}");
    }
    // Spare bits: 10 pieces leave 6 bits of the second byte unused.
    let mut ten = SwarmCore::new(SwarmConfig::default(), layout(10), IH, Bitfield::new(10), 1);
    open(&mut ten, t, A);
    ten.handle(t, A, Message::Bitfield(vec![0xff, 0xc1]));
    assert_eq!(closed(&drain(&mut ten)), vec![(A, reason::BAD_BITFIELD)]);
    // A valid bitfield makes us interested.
    open(&mut c, t, A);
    c.handle(t, A, Message::Bitfield(vec![0x40]));
    assert_eq!(sent(&drain(&mut c), A), vec![Message::Interested]);
}

#[test]
fn have_updates_interest_and_range() {
    let t = Instant::now();
    let mut have = Bitfield::new(8);
    have.set(2);
    let mut c = core(have, SwarmConfig::default());
    open(&mut c, t, A);
    c.handle(t, A, Message::Have { piece: 2 });
    assert_eq!(sent(&drain(&mut c), A), vec![]);
    c.handle(t, A, Message::Have { piece: 5 });
    c.handle(t, A, Message::Have { piece: 5 });
    assert_eq!(sent(&drain(&mut c), A), vec![Message::Interested]);
    c.handle(t, A, Message::Have { piece: 8 });
    assert_eq!(closed(&drain(&mut c)), vec![(A, reason::HAVE_OUT_OF_RANGE)]);
}

#[test]
fn download_verify_announce_complete() {
    let t = Instant::now();
    let mut c = core(Bitfield::new(8), SwarmConfig::default());
    open(&mut c, t, A);
    open(&mut c, t, B);
    c.handle(t, A, seed_bits());
    c.handle(t, A, Message::Unchoke);
    let reqs = requests(&sent(&drain(&mut c), A));
    assert_eq!(reqs.len(), 16, "every block, within the pipeline");
    let l = layout(8);
    for &(p, o, len) in &reqs {
        assert!(l.block_index(p, o, len).is_some());
    }
    // Blocks of one piece are asked for together (finish started pieces).
    assert_eq!(reqs[0].0, reqs[1].0);
    for r in &reqs {
        answer(&mut c, t, A, *r);
    }
    let acts = drain(&mut c);
    let checks: Vec<_> = acts
        .iter()
        .filter_map(|a| match a {
            Action::CheckPiece { piece, data } => Some((*piece, data.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(checks.len(), 8);
    // Debug output shows shapes, never content or the infohash.
    let shown = format!(
        "{:?}",
        Action::CheckPiece {
            piece: 1,
            data: vec![0xab; 3]
        }
    );
    assert_eq!(shown, "CheckPiece(1, 3 bytes)");
    let hs = Action::SendHandshake {
        conn: A,
        hs: Handshake::new(IH),
    };
    assert_eq!(format!("{hs:?}"), "SendHandshake(1)");
    for (p, data) in &checks {
        assert_eq!(data, &content(&l, *p));
    }
    assert_eq!(c.stats().buffered_bytes, l.total_length());
    for (p, _) in &checks {
        c.piece_checked(t, *p, true);
    }
    let acts = drain(&mut c);
    assert_eq!(acts.iter().filter(|a| **a == Action::Complete).count(), 1);
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::Have { .. }))
            .count(),
        8
    );
    let to_b = sent(&acts, B);
    assert_eq!(to_b.len(), 8, "B hears every Have");
    assert_eq!(sent(&acts, A).last(), Some(&Message::NotInterested));
    // A seed and now a seed ourselves: nothing left to exchange with A;
    // B (nothing announced yet) stays.
    assert_eq!(closed(&acts), vec![(A, reason::BOTH_COMPLETE)]);
    let s = c.stats();
    assert_eq!(
        (s.pieces_have, s.downloaded, s.wasted, s.conns),
        (8, l.total_length(), 0, 1)
    );
    assert_eq!((s.buffered_bytes, s.in_flight_pieces), (0, 0));
    assert!(c.is_complete());
    // Only the side that completes closes: a remote found complete later
    // closes by itself (here B never will; its idle timeout does).
    c.handle(t, B, seed_bits());
    assert!(closed(&drain(&mut c)).is_empty());
    // A late result for a verified piece changes nothing.
    c.piece_checked(t, 0, false);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn rarest_first() {
    let t = Instant::now();
    let cfg = SwarmConfig {
        pipeline: 2,
        ..SwarmConfig::default()
    };
    let mut c = core(Bitfield::new(8), cfg);
    open(&mut c, t, A);
    open(&mut c, t, B);
    c.handle(t, A, seed_bits());
    // B lacks piece 5 only: piece 5 is the rarest.
    c.handle(t, B, Message::Bitfield(vec![0xfb]));
    c.handle(t, A, Message::Unchoke);
    let reqs = requests(&sent(&drain(&mut c), A));
    assert_eq!(reqs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![5, 5]);
}

#[test]
fn choke_and_close_return_requests_to_the_pool() {
    let t = Instant::now();
    let mut c = core(
        Bitfield::new(8),
        SwarmConfig {
            pipeline: 4,
            ..Default::default()
        },
    );
    open(&mut c, t, A);
    open(&mut c, t, B);
    c.handle(t, A, seed_bits());
    c.handle(t, B, seed_bits());
    c.handle(t, A, Message::Unchoke);
    let a_reqs = requests(&sent(&drain(&mut c), A));
    assert_eq!(a_reqs.len(), 4);
    c.handle(t, B, Message::Unchoke);
    let b_reqs = requests(&sent(&drain(&mut c), B));
    assert!(
        b_reqs.iter().all(|r| !a_reqs.contains(r)),
        "owners do not overlap"
    );
    // A chokes us: B has no room until its own requests are answered…
    c.handle(t, A, Message::Choke);
    assert!(requests(&sent(&drain(&mut c), B)).is_empty());
    // …then takes A's orphaned blocks before starting new pieces.
    for r in &b_reqs {
        answer(&mut c, t, B, *r);
    }
    let next = requests(&sent(&drain(&mut c), B));
    assert_eq!(next, a_reqs);
    // A block A sends after all is waste, not a violation.
    answer(&mut c, t, A, a_reqs[0]);
    assert!(closed(&drain(&mut c)).is_empty());
    assert_eq!(c.stats().wasted, 16384);
    // B goes away: its requests are A's once A unchokes us again.
    c.remove_conn(t, B);
    c.handle(t, A, Message::Unchoke);
    assert_eq!(requests(&sent(&drain(&mut c), A)), next);
}

#[test]
fn timeouts_cancel_and_reassign() {
    let t = Instant::now();
    let cfg = SwarmConfig {
        pipeline: 2,
        ..SwarmConfig::default()
    };
    let timeout = cfg.request_timeout;
    let mut c = core(Bitfield::new(8), cfg);
    c.tick(t);
    open(&mut c, t, A);
    open(&mut c, t, B);
    c.handle(t, A, seed_bits());
    c.handle(t, A, Message::Unchoke);
    let a_reqs = requests(&sent(&drain(&mut c), A));
    let later = t + timeout;
    c.handle(later, B, seed_bits());
    c.handle(later, B, Message::Unchoke);
    let b_reqs = requests(&sent(&drain(&mut c), B));
    assert_eq!(b_reqs.len(), 2);
    c.tick(later);
    let acts = drain(&mut c);
    let cancels: Vec<_> = sent(&acts, A)
        .into_iter()
        .filter(|m| matches!(m, Message::Cancel { .. }))
        .collect();
    assert_eq!(cancels.len(), 2);
    // A is snubbed: one request at a time, and not for what it lost.
    let a_next = requests(&sent(&acts, A));
    assert_eq!(a_next.len(), 1);
    assert!(!a_reqs.contains(&a_next[0]));
    // B finishes its own piece first; A's timed-out piece is adopted next.
    for r in b_reqs {
        answer(&mut c, later, B, r);
    }
    assert_eq!(requests(&sent(&drain(&mut c), B)), a_reqs);
    // A late answer to a timed-out request is waste, not a violation.
    answer(&mut c, later, A, a_reqs[0]);
    assert!(closed(&drain(&mut c)).is_empty());
}

#[test]
fn keepalive_and_idle() {
    let t = Instant::now();
    let cfg = SwarmConfig::default();
    let (ka, idle) = (cfg.keepalive, cfg.idle_timeout);
    let mut c = core(Bitfield::new(8), cfg);
    open(&mut c, t, A);
    c.tick(t + ka);
    assert_eq!(sent(&drain(&mut c), A), vec![Message::KeepAlive]);
    c.tick(t + ka + Duration::from_secs(1));
    assert!(sent(&drain(&mut c), A).is_empty());
    c.handle(t + idle / 2, A, Message::KeepAlive);
    c.tick(t + idle);
    assert!(closed(&drain(&mut c)).is_empty());
    c.tick(t + idle / 2 + idle);
    assert_eq!(closed(&drain(&mut c)), vec![(A, reason::IDLE_TIMEOUT)]);
}

mod bans;
mod upload;
