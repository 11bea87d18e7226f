//! Transitions of the uploading side, the choker, bans and endgame.

use super::*;

fn reads(actions: &[Action]) -> Vec<(ConnId, u32, u32, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ReadBlock {
                conn,
                piece,
                offset,
                len,
            } => Some((*conn, *piece, *offset, *len)),
            _ => None,
        })
        .collect()
}

fn req(piece: u32, block: u32) -> Message {
    let (offset, len) = layout(8).block(piece, block).expect("block");
    Message::Request { piece, offset, len }
}

/// A seed with `A` handshaken and unchoked (it said interested).
fn seeding(cfg: SwarmConfig) -> (SwarmCore, Instant) {
    let t = Instant::now();
    let mut c = core(Bitfield::full(8), cfg);
    open(&mut c, t, A);
    c.handle(t, A, Message::Interested);
    assert_eq!(sent(&drain(&mut c), A), vec![Message::Unchoke]);
    (c, t)
}

#[test]
fn serve_an_unchoked_request() {
    let (mut c, t) = seeding(SwarmConfig::default());
    c.handle(t, A, req(3, 1));
    let acts = drain(&mut c);
    assert_eq!(reads(&acts), vec![(A, 3, 16384, 16384)]);
    let data = content(&layout(8), 3)[16384..].to_vec();
    c.block_read(A, 3, 16384, data.clone());
    let expect = Message::Piece {
        piece: 3,
        offset: 16384,
        data,
    };
    assert_eq!(sent(&drain(&mut c), A), vec![expect]);
    assert_eq!(c.stats().uploaded, 16384);
    assert_eq!(c.stats().per_conn[0].uploaded, 16384);
    // A read nobody waits for (answered already, or never asked) is dropped.
    c.block_read(A, 3, 16384, vec![0; 16384]);
    c.block_read(ConnId(9), 3, 0, vec![0; 16384]);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn cancel_and_wrong_length_reads_are_not_sent() {
    let (mut c, t) = seeding(SwarmConfig::default());
    c.handle(t, A, req(0, 0));
    c.handle(t, A, req(0, 1));
    c.handle(t, A, req(0, 1));
    assert_eq!(
        reads(&drain(&mut c)).len(),
        2,
        "a repeated request is served once"
    );
    let (offset, len) = layout(8).block(0, 0).expect("block");
    c.handle(
        t,
        A,
        Message::Cancel {
            piece: 0,
            offset,
            len,
        },
    );
    c.block_read(A, 0, 0, vec![0; 16384]);
    c.block_read(A, 0, 16384, vec![0; 100]);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn request_violations() {
    let t = Instant::now();
    let mut have = Bitfield::new(8);
    have.set(0);
    let cfg = SwarmConfig {
        max_uploads_queued: 2,
        ..SwarmConfig::default()
    };
    let cases: [(Vec<Message>, &str); 6] = [
        (vec![req(0, 0)], reason::REQUEST_WHILE_CHOKED),
        (
            vec![Message::Interested, req(1, 0)],
            reason::REQUEST_MISSING_PIECE,
        ),
        (
            vec![
                Message::Interested,
                Message::Request {
                    piece: 0,
                    offset: 1,
                    len: 16384,
                },
            ],
            reason::BAD_REQUEST,
        ),
        (
            vec![
                Message::Interested,
                Message::Request {
                    piece: 8,
                    offset: 0,
                    len: 16384,
                },
            ],
            reason::BAD_REQUEST,
        ),
        (
            vec![Message::Cancel {
                piece: 0,
                offset: 0,
                len: 100,
            }],
            reason::BAD_REQUEST,
        ),
        (
            vec![
                Message::Interested,
                req(0, 0),
                req(0, 1),
                req(0, 0),
                Message::KeepAlive,
            ],
            "",
        ),
    ];
    for (i, (msgs, why)) in cases.into_iter().enumerate() {
        let mut c = core(have.clone(), cfg.clone());
        open(&mut c, t, A);
        for m in msgs {
            c.handle(t, A, m);
        }
        let want: Vec<_> = if why.is_empty() {
            vec![]
        } else {
            vec![(A, why)]
        };
        assert_eq!(closed(&drain(&mut c)), want, "case {i}");
    }
    // Flood: a third request waiting for storage.
    let mut c = core(Bitfield::full(8), cfg);
    open(&mut c, t, A);
    for m in [Message::Interested, req(0, 0), req(0, 1), req(1, 0)] {
        c.handle(t, A, m);
    }
    assert_eq!(closed(&drain(&mut c)), vec![(A, reason::REQUEST_FLOOD)]);
}

#[test]
fn choke_drops_reads_and_grace_expires() {
    let cfg = SwarmConfig::default();
    let grace = cfg.request_grace;
    let (mut c, t) = seeding(cfg);
    c.handle(t, A, req(2, 0));
    c.handle(t, A, Message::NotInterested);
    c.tick(t);
    assert_eq!(sent(&drain(&mut c), A), vec![Message::Choke]);
    c.block_read(A, 2, 0, vec![0; 16384]);
    // A request that crossed the choke is ignored…
    c.handle(t + grace / 2, A, req(2, 1));
    assert!(drain(&mut c).is_empty());
    // …one sent after the grace is a violation.
    c.handle(t + grace, A, req(2, 1));
    assert_eq!(
        closed(&drain(&mut c)),
        vec![(A, reason::REQUEST_WHILE_CHOKED)]
    );
}

/// The conns we unchoke, in id order.
fn unchoked(c: &SwarmCore) -> Vec<ConnId> {
    c.conns
        .iter()
        .filter(|(_, s)| !s.am_choking)
        .map(|(&id, _)| id)
        .collect()
}

#[test]
fn choker_prefers_credit_then_rate_plus_one_optimistic() {
    let t = Instant::now();
    let cfg = SwarmConfig {
        unchoke_slots: 2,
        ..SwarmConfig::default()
    };
    let round = cfg.choke_round;
    let mut c = core(Bitfield::full(8), cfg);
    for i in 1..=6u64 {
        let credit = match i {
            5 => 3,
            6 => 2,
            _ => 0,
        };
        c.add_conn(t, ConnId(i), credit);
        c.handle_handshake(t, ConnId(i), Handshake::new(IH));
        c.handle(t, ConnId(i), Message::Interested);
    }
    // Free slots are filled at once, in arrival order.
    let acts = drain(&mut c);
    let first: Vec<ConnId> = (1..=6)
        .map(ConnId)
        .filter(|&id| sent(&acts, id).contains(&Message::Unchoke))
        .collect();
    assert_eq!(first, vec![ConnId(1), ConnId(2)]);
    // As a seed, rate is what we upload: conn 3 took the most.
    c.conns.get_mut(&ConnId(3)).expect("conn").round_up = 5000;
    c.tick(t);
    let opt = c.choker.optimistic.expect("optimistic");
    let mut want = vec![ConnId(5), ConnId(6), opt];
    want.sort();
    assert_eq!(unchoked(&c), want, "credit tiers win the regular slots");
    // The optimistic slot holds for optimistic_rounds (3) rounds.
    c.tick(t + round);
    c.tick(t + round * 2);
    assert_eq!(c.choker.optimistic, Some(opt));
    // Within a tier, rate decides.
    for i in [5, 6] {
        c.conns.get_mut(&ConnId(i)).expect("conn").credit = 0;
    }
    c.conns.get_mut(&ConnId(3)).expect("conn").round_up = 5000;
    c.conns.get_mut(&ConnId(4)).expect("conn").round_up = 4000;
    c.tick(t + round * 3);
    let now = unchoked(&c);
    assert!(now.contains(&ConnId(3)) && now.contains(&ConnId(4)));
    assert_eq!(now.len(), 3);
    // A conn that loses interest loses its slot at once.
    c.handle(t + round * 3, ConnId(3), Message::NotInterested);
    assert!(sent(&drain(&mut c), ConnId(3)).contains(&Message::Choke));
    assert!(!unchoked(&c).contains(&ConnId(3)));
    assert_eq!(unchoked(&c).len(), 3, "the slot went to another conn");
}

/// Slots that fall free between rounds — a conn we unchoke closes, or
/// wants nothing more — go to the conns waiting at once, not at the next
/// round (when many downloads complete together, the rest would stall).
#[test]
fn slots_that_fall_free_are_refilled_at_once() {
    let t = Instant::now();
    let cfg = SwarmConfig {
        unchoke_slots: 1,
        ..SwarmConfig::default()
    };
    let mut c = core(Bitfield::full(8), cfg);
    for i in 1..=4u64 {
        open(&mut c, t, ConnId(i));
        c.handle(t, ConnId(i), Message::Interested);
    }
    c.tick(t);
    drain(&mut c);
    let before = unchoked(&c);
    assert_eq!(before.len(), 2, "one regular slot and the optimistic one");
    let optimistic = c.choker.optimistic.expect("optimistic");
    let regular = *before.iter().find(|&&id| id != optimistic).unwrap();

    // The regular holder's circuit closes: a waiting conn is unchoked now.
    let later = t + Duration::from_secs(1);
    c.remove_conn(later, regular);
    let acts = drain(&mut c);
    let now = unchoked(&c);
    assert_eq!(now.len(), 2, "{now:?}");
    let newcomer = *now.iter().find(|&&id| id != optimistic).unwrap();
    assert_eq!(sent(&acts, newcomer), vec![Message::Unchoke]);

    // The optimistic holder completes: choked, and the last waiting conn
    // becomes the optimistic one.
    c.handle(later, optimistic, Message::NotInterested);
    let acts = drain(&mut c);
    assert_eq!(sent(&acts, optimistic), vec![Message::Choke]);
    let last = (1..=4u64)
        .map(ConnId)
        .find(|id| ![regular, optimistic, newcomer].contains(id))
        .unwrap();
    assert_eq!(sent(&acts, last), vec![Message::Unchoke]);
    assert_eq!(c.choker.optimistic, Some(last));
    assert_eq!(unchoked(&c).len(), 2);
}

/// A leech missing only piece 7, with A and B (seeds) handshaken.
fn last_piece(cfg: SwarmConfig) -> (SwarmCore, Instant) {
    let t = Instant::now();
    let mut have = Bitfield::full(8);
    have.clear(7);
    let mut c = core(have, cfg);
    for id in [A, B] {
        open(&mut c, t, id);
        c.handle(t, id, seed_bits());
    }
    drain(&mut c);
    (c, t)
}

#[test]
fn endgame_duplicates_and_cancels() {
    let (mut c, t) = last_piece(SwarmConfig::default());
    c.handle(t, A, Message::Unchoke);
    let a_reqs = requests(&sent(&drain(&mut c), A));
    assert_eq!(a_reqs.len(), 2);
    c.handle(t, B, Message::Unchoke);
    let b_reqs = requests(&sent(&drain(&mut c), B));
    let last_first: Vec<_> = a_reqs.iter().rev().copied().collect();
    assert_eq!(b_reqs, last_first, "endgame asks B for the same blocks");
    assert_eq!(c.stats().endgame_requests, 2);
    answer(&mut c, t, A, a_reqs[0]);
    let (piece, offset, len) = a_reqs[0];
    assert_eq!(
        sent(&drain(&mut c), B),
        vec![Message::Cancel { piece, offset, len }]
    );
    answer(&mut c, t, B, a_reqs[1]);
    let acts = drain(&mut c);
    let (piece, offset, len) = a_reqs[1];
    assert_eq!(sent(&acts, A), vec![Message::Cancel { piece, offset, len }]);
    assert!(
        matches!(&acts[..], [.., Action::CheckPiece { piece: 7, data }] if *data == content(&layout(8), 7))
    );
    // A's copy crossed the cancel: waste, no violation.
    answer(&mut c, t, A, a_reqs[1]);
    assert!(closed(&drain(&mut c)).is_empty());
    assert_eq!(c.stats().wasted, u64::from(len));
}

#[test]
fn endgame_copies_stay_a_few_per_conn() {
    let t = Instant::now();
    let mut have = Bitfield::full(8);
    for p in 4..8 {
        have.clear(p);
    }
    let mut c = core(have, SwarmConfig::default());
    for id in [A, B] {
        open(&mut c, t, id);
        c.handle(t, id, seed_bits());
    }
    drain(&mut c);
    c.handle(t, A, Message::Unchoke);
    let a_reqs = requests(&sent(&drain(&mut c), A));
    assert_eq!(a_reqs.len(), 8, "A is asked for every missing block");
    c.handle(t, B, Message::Unchoke);
    let b_reqs = requests(&sent(&drain(&mut c), B));
    let mut by_place = a_reqs.clone();
    by_place.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(
        b_reqs,
        by_place[..4],
        "B copies the last four blocks, no more"
    );
    // One of B's copies arrives: B has room for one more copy.
    answer(&mut c, t, B, b_reqs[0]);
    let acts = drain(&mut c);
    assert_eq!(requests(&sent(&acts, B)), vec![by_place[4]]);
    assert_eq!(c.stats().endgame_requests, 5);
}

#[test]
fn sole_source_of_a_bad_piece_is_banned_and_the_piece_refetched() {
    let (mut c, t) = last_piece(SwarmConfig::default());
    c.handle(t, A, Message::Unchoke);
    for r in requests(&sent(&drain(&mut c), A)) {
        answer(&mut c, t, A, r);
    }
    drain(&mut c);
    c.handle(t, B, Message::Unchoke);
    assert!(
        requests(&sent(&drain(&mut c), B)).is_empty(),
        "piece is being hashed"
    );
    c.piece_checked(t, 7, false);
    let acts = drain(&mut c);
    assert_eq!(closed(&acts), vec![(A, reason::BAD_PIECE)]);
    assert_eq!(requests(&sent(&acts, B)).len(), 2, "re-fetched from B");
    let s = c.stats();
    assert_eq!(
        (s.banned, s.conns, s.wasted),
        (1, 1, u64::from(PIECE_LEN - 1000))
    );
    c.add_conn(t, A, 0);
    assert_eq!(closed(&drain(&mut c)), vec![(A, reason::BANNED)]);
}

#[test]
fn shared_failures_strike_every_contributor() {
    for strikes_to_ban in [1, 2] {
        let cfg = SwarmConfig {
            strikes_to_ban,
            ..SwarmConfig::default()
        };
        let (mut c, t) = last_piece(cfg);
        c.handle(t, A, Message::Unchoke);
        let reqs = requests(&sent(&drain(&mut c), A));
        answer(&mut c, t, A, reqs[0]);
        // A chokes us; B adopts the piece and sends the other block.
        c.handle(t, A, Message::Choke);
        c.handle(t, B, Message::Unchoke);
        assert_eq!(requests(&sent(&drain(&mut c), B)), vec![reqs[1]]);
        answer(&mut c, t, B, reqs[1]);
        drain(&mut c);
        c.piece_checked(t, 7, false);
        let mut got = closed(&drain(&mut c));
        got.sort();
        let want = if strikes_to_ban == 1 {
            vec![(A, reason::BAD_PIECE), (B, reason::BAD_PIECE)]
        } else {
            vec![]
        };
        assert_eq!(got, want);
    }
}

#[test]
fn unsolicited_and_malformed_blocks() {
    let t = Instant::now();
    let mut c = core(Bitfield::new(8), SwarmConfig::default());
    open(&mut c, t, A);
    c.handle(
        t,
        A,
        Message::Piece {
            piece: 0,
            offset: 5,
            data: vec![0; 10],
        },
    );
    assert_eq!(closed(&drain(&mut c)), vec![(A, reason::BAD_BLOCK)]);
    open(&mut c, t, B);
    for i in 0..=conn::UNSOLICITED_LIMIT {
        answer(&mut c, t, B, (i % 8, 0, 16384));
    }
    assert_eq!(closed(&drain(&mut c)), vec![(B, reason::UNREQUESTED_PIECE)]);
    assert_eq!(
        c.stats().wasted,
        u64::from(conn::UNSOLICITED_LIMIT + 1) * 16384
    );
}

#[test]
fn memory_budget_bounds_pieces_in_flight() {
    let t = Instant::now();
    let cfg = SwarmConfig {
        max_in_flight_bytes: u64::from(PIECE_LEN),
        ..Default::default()
    };
    let mut c = core(Bitfield::new(8), cfg);
    open(&mut c, t, A);
    c.handle(t, A, seed_bits());
    c.handle(t, A, Message::Unchoke);
    for _ in 0..8 {
        let reqs = requests(&sent(&drain(&mut c), A));
        assert_eq!(reqs.len(), 2, "one piece at a time");
        for r in reqs {
            answer(&mut c, t, A, r);
        }
        let acts = drain(&mut c);
        assert!(
            requests(&sent(&acts, A)).is_empty(),
            "nothing new while hashing"
        );
        assert!(c.stats().buffered_bytes <= u64::from(PIECE_LEN));
        let Some(Action::CheckPiece { piece, .. }) = acts.last() else {
            panic!("no check");
        };
        c.piece_checked(t, *piece, true);
    }
    assert!(c.is_complete());
}
