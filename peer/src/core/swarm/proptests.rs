//! Property: whatever a remote sends, in whatever order, interleaved with
//! any storage results, clock jumps and circuit churn, the core never
//! panics, never asks for or reads a block outside the torrent, never
//! reads a piece it lacks, hands storage whole pieces only, stays within
//! its memory bound and closes only with a reason from the fixed set.

use super::tests::{core, drain, layout, IH, PIECE_LEN};
use super::*;
use proptest::prelude::*;
use std::time::Duration;

#[derive(Clone, Debug)]
enum Op {
    Add(u64, u8),
    Handshake(u64, bool),
    Msg(u64, Message),
    Read(u64, u32, u32, u32),
    Checked(u32, bool),
    Tick(u64),
    Remove(u64),
    /// Answer one of the core's outstanding requests correctly-sized.
    Serve(usize),
    /// `conn` requests a well-formed block of `piece`.
    Ask(u64, u32, u32),
}

fn arb_message() -> impl Strategy<Value = Message> {
    let piece = 0u32..10;
    let offset = prop_oneof![Just(0u32), Just(16384), Just(1), Just(32768)];
    let len = prop_oneof![Just(16384u32), Just(15384), Just(1), Just(0), Just(16385)];
    prop_oneof![
        Just(Message::KeepAlive),
        Just(Message::Choke),
        Just(Message::Unchoke),
        Just(Message::Interested),
        Just(Message::NotInterested),
        piece.clone().prop_map(|piece| Message::Have { piece }),
        prop_oneof![
            Just(vec![0xff]),
            Just(vec![0x0f]),
            Just(vec![0xff, 0]),
            Just(vec![])
        ]
        .prop_map(Message::Bitfield),
        (piece.clone(), offset.clone(), len.clone())
            .prop_map(|(piece, offset, len)| Message::Request { piece, offset, len }),
        (piece.clone(), offset.clone(), len.clone())
            .prop_map(|(piece, offset, len)| Message::Cancel { piece, offset, len }),
        (piece, offset, len).prop_map(|(piece, offset, len)| Message::Piece {
            piece,
            offset,
            data: vec![0x5a; len as usize],
        }),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let conn = 0u64..4;
    prop_oneof![
        1 => (conn.clone(), 0u8..6).prop_map(|(c, k)| Op::Add(c, k)),
        1 => (conn.clone(), prop::bool::weighted(0.9)).prop_map(|(c, ok)| Op::Handshake(c, ok)),
        6 => (conn.clone(), arb_message()).prop_map(|(c, m)| Op::Msg(c, m)),
        1 => (conn.clone(), 0u32..10, prop_oneof![Just(0u32), Just(16384)], prop_oneof![Just(16384u32), Just(15384), Just(3)])
            .prop_map(|(c, p, o, l)| Op::Read(c, p, o, l)),
        1 => (0u32..10, any::<bool>()).prop_map(|(p, ok)| Op::Checked(p, ok)),
        1 => (0u64..70).prop_map(Op::Tick),
        1 => conn.prop_map(Op::Remove),
        4 => any::<usize>().prop_map(Op::Serve),
        3 => (0u64..4, 0u32..8, 0u32..2).prop_map(|(c, p, b)| Op::Ask(c, p, b)),
    ]
}

/// Requests the core sent: (conn, piece, offset, len).
type Asked = Vec<(ConnId, u32, u32, u32)>;

fn check(
    c: &mut SwarmCore,
    pending: &mut Vec<u32>,
    asked: &mut Asked,
) -> Result<(), TestCaseError> {
    let l = layout(8);
    for a in drain(c) {
        match a {
            Action::Send {
                conn,
                msg: Message::Request { piece, offset, len },
            } => {
                prop_assert!(l.block_index(piece, offset, len).is_some());
                prop_assert!(!c.have().get(piece));
                asked.push((conn, piece, offset, len));
                if let Some(s) = c.conns.get(&conn) {
                    prop_assert!(s.handshaken && !s.peer_choking);
                    prop_assert!(s.requests.len() <= c.cfg.pipeline);
                }
            }
            Action::ReadBlock {
                conn,
                piece,
                offset,
                len,
            } => {
                prop_assert!(l.block_index(piece, offset, len).is_some());
                prop_assert!(c.have().get(piece));
                if let Some(s) = c.conns.get(&conn) {
                    prop_assert!(!s.am_choking);
                    prop_assert!(s.uploads.len() <= c.cfg.max_uploads_queued);
                }
            }
            Action::CheckPiece { piece, data } => {
                prop_assert_eq!(Some(data.len() as u32), l.piece_len(piece));
                pending.push(piece);
            }
            Action::Close { reason, .. } => prop_assert!(reason::ALL.contains(&reason)),
            _ => {}
        }
    }
    let bound = SwarmConfig::default()
        .max_in_flight_bytes
        .max(u64::from(PIECE_LEN));
    prop_assert!(c.stats().buffered_bytes <= bound);
    prop_assert!(c.picker.max_requesters() <= 2);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_input_sequence_is_safe(
        ops in prop::collection::vec(arb_op(), 1..120),
        partial in any::<bool>(),
        setup in prop::bool::weighted(0.8),
    ) {
        let mut have = Bitfield::new(8);
        if partial {
            [0, 3, 7].into_iter().for_each(|p| { have.set(p); });
        }
        let mut c = core(have, SwarmConfig::default());
        let mut now = Instant::now();
        let mut pending = Vec::new();
        let mut asked = Vec::new();
        // Most cases start with live conns, conn 0 a seed unchoking us and
        // the others unchoked by us, so the random tail reaches requests,
        // reads and checks.
        if setup {
            for id in 0..4 {
                c.add_conn(now, ConnId(id), id as u8);
                c.handle_handshake(now, ConnId(id), Handshake::new(IH));
            }
            c.handle(now, ConnId(0), Message::Bitfield(vec![0xff]));
            c.handle(now, ConnId(0), Message::Unchoke);
            for id in 1..4 {
                c.handle(now, ConnId(id), Message::Interested);
            }
            check(&mut c, &mut pending, &mut asked)?;
        }
        for op in ops {
            match op {
                Op::Add(id, credit) => c.add_conn(now, ConnId(id), credit),
                Op::Handshake(id, ok) => {
                    let infohash = if ok { IH } else { InfoHash([0; 32]) };
                    c.handle_handshake(now, ConnId(id), Handshake::new(infohash));
                }
                Op::Msg(id, m) => c.handle(now, ConnId(id), m),
                Op::Read(id, p, o, len) => c.block_read(ConnId(id), p, o, vec![1; len as usize]),
                Op::Checked(p, ok) => {
                    // Mostly answer a real pending check; sometimes a bogus one.
                    let piece = if pending.is_empty() { p } else { pending.remove(p as usize % pending.len()) };
                    c.piece_checked(now, piece, ok);
                }
                Op::Tick(secs) => {
                    now += Duration::from_secs(secs);
                    c.tick(now);
                }
                Op::Remove(id) => c.remove_conn(now, ConnId(id)),
                Op::Ask(id, piece, block) => {
                    if let Some((offset, len)) = layout(8).block(piece, block) {
                        c.handle(now, ConnId(id), Message::Request { piece, offset, len });
                    }
                }
                Op::Serve(k) => {
                    if !asked.is_empty() {
                        let (conn, piece, offset, len) = asked.remove(k % asked.len());
                        let data = vec![0x5a; len as usize];
                        c.handle(now, conn, Message::Piece { piece, offset, data });
                    }
                }
            }
            check(&mut c, &mut pending, &mut asked)?;
        }
        let s = c.stats();
        prop_assert!(s.pieces_have <= s.pieces_total);
        prop_assert_eq!(c.is_complete(), s.pieces_have == s.pieces_total);
    }
}
