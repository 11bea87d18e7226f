//! Hash failures and bans when a liar's blocks end up in pieces that an
//! honest conn finishes: the honest conn is never blamed for them.

use super::*;

fn cfg() -> SwarmConfig {
    SwarmConfig {
        pipeline: 4,
        strikes_to_ban: 1,
        ..SwarmConfig::default()
    }
}

/// A's requests after it unchokes us (two whole pieces with pipeline 4).
fn unchoke(c: &mut SwarmCore, t: Instant, id: ConnId) -> Vec<(u32, u32, u32)> {
    c.handle(t, id, Message::Unchoke);
    requests(&sent(&drain(c), id))
}

fn garbage(c: &mut SwarmCore, t: Instant, id: ConnId, (piece, offset, len): (u32, u32, u32)) {
    let data = vec![0xee; len as usize];
    c.handle(
        t,
        id,
        Message::Piece {
            piece,
            offset,
            data,
        },
    );
}

fn checks(actions: &[Action]) -> Vec<(u32, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::CheckPiece { piece, data } => Some((*piece, data.clone())),
            _ => None,
        })
        .collect()
}

/// A sends one whole bad piece and one block of another, then is banned:
/// its block is dropped, so B, adopting that piece, assembles it from its
/// own blocks only and it verifies.
#[test]
fn a_banned_conns_blocks_are_dropped_from_pieces_in_flight() {
    let t = Instant::now();
    let mut c = core(Bitfield::new(8), cfg());
    open(&mut c, t, A);
    open(&mut c, t, B);
    c.handle(t, A, seed_bits());
    c.handle(t, B, seed_bits());
    let a = unchoke(&mut c, t, A);
    assert_eq!(a.len(), 4);
    let (bad, half) = (a[0].0, a[2].0);
    for r in &a[..3] {
        garbage(&mut c, t, A, *r);
    }
    assert_eq!(checks(&drain(&mut c)).len(), 1, "one bad piece complete");
    c.piece_checked(t, bad, false);
    assert_eq!(closed(&drain(&mut c)), vec![(A, reason::BAD_PIECE)]);
    // The bad piece and A's block of `half` are waste.
    assert_eq!(c.stats().wasted, u64::from(PIECE_LEN) + 16384);

    let b = unchoke(&mut c, t, B);
    assert!(b.contains(&a[2]), "A's block of {half} asked again: {b:?}");
    for r in &b {
        answer(&mut c, t, B, *r);
    }
    let l = layout(8);
    let done = checks(&drain(&mut c));
    let (_, data) = done.iter().find(|(p, _)| *p == half).expect("piece done");
    assert_eq!(data, &content(&l, half), "assembled with A's block");
}

/// A piece with blocks of A and of B fails after A was banned for another
/// piece: A explains it, and B (one strike bans, here) stays.
#[test]
fn a_failure_a_banned_conn_explains_blames_nobody_else() {
    let t = Instant::now();
    let mut c = core(Bitfield::new(8), cfg());
    open(&mut c, t, A);
    open(&mut c, t, B);
    c.handle(t, A, seed_bits());
    c.handle(t, B, seed_bits());
    let a = unchoke(&mut c, t, A);
    let mixed = a[0].0;
    garbage(&mut c, t, A, a[0]);
    // A chokes us: B adopts `mixed` and finishes it with the true block.
    c.handle(t, A, Message::Choke);
    drain(&mut c);
    let b = unchoke(&mut c, t, B);
    assert!(b.contains(&a[1]), "{b:?}");
    answer(&mut c, t, B, a[1]);
    assert_eq!(checks(&drain(&mut c))[0].0, mixed);
    // A comes back and sends a whole bad piece: banned.
    let again = unchoke(&mut c, t, A);
    for r in &again[..2] {
        garbage(&mut c, t, A, *r);
    }
    let bad = checks(&drain(&mut c))[0].0;
    c.piece_checked(t, bad, false);
    assert_eq!(closed(&drain(&mut c)), vec![(A, reason::BAD_PIECE)]);
    // Now the mixed piece fails: A's block did it.
    c.piece_checked(t, mixed, false);
    assert!(closed(&drain(&mut c)).is_empty(), "B was blamed");
    assert_eq!(c.stats().banned, 1);
}
