//! Simulation scenarios: many circuits with aborts, stalls and link losses
//! (the tracker repairing the graph), per-hop ciphertext, stalled readers,
//! and the ordered teardown of a clean close.

use super::*;
use anomos_common::cell::CELL_HEADER_LEN;

#[test]
fn many_circuits_with_breaks_and_link_losses_leave_nothing_behind() {
    let mut net = Net::new(7, 10, 3, (1, 4));
    let mut stalls: Vec<(u32, usize, usize)> = Vec::new();
    for step in 0..600u32 {
        let roll = net.rng.random_range(0..100);
        let c = net.rng.random_range(0..net.circs.len().max(1));
        let dir = net.rng.random_range(0..2);
        if roll < 20 {
            net.plan_random();
        } else if roll < 23 && c < net.circs.len() {
            net.abort(c, dir);
        } else if roll < 25 {
            net.cut();
        } else if roll < 30 && c < net.circs.len() {
            // A reader pauses for 10 steps (well under the break timeout).
            net.circs[c].stalled[dir] = true;
            stalls.push((step + 10, c, dir));
        }
        for &(_, c, dir) in stalls.iter().filter(|s| s.0 == step) {
            net.circs[c].stalled[dir] = false;
        }
        net.endpoints(0.7);
        net.outputs(true);
        net.deliver(0.8);
        net.outputs(true);
        net.check_bounds();
        net.tick(Duration::from_millis(50));
    }
    // Wind down: readers resume; open circuits finish with FIN both ways,
    // the rest time out.
    for c in &mut net.circs {
        c.stalled = [false; 2];
    }
    for _ in 0..300 {
        net.endpoints(1.0);
        let a = net.outputs(false);
        let b = net.deliver(1.0);
        if !a && !b {
            net.tick(Duration::from_secs(1));
        }
    }
    let built = net.circs.len();
    let opened = net.circs.iter().filter(|c| c.open).count();
    let clean = net.circs.iter().filter(|c| c.clean == [true; 2]).count();
    let cells: u32 = net.circs.iter().map(|c| c.recv[0] + c.recv[1]).sum();
    assert!(
        built > 80 && opened > 40 && clean > 15 && cells > 1000,
        "{built} {opened} {clean} {cells}"
    );
    for c in &net.circs {
        assert!(c.origin.is_none() && c.exit.is_none(), "every end closed");
        if c.clean == [true; 2] {
            assert_eq!(c.recv, c.quota, "a clean close delivered everything");
        }
    }
    net.check_empty();
}

/// The path of circuit `c`, first planned and then set up.
fn open_one(net: &mut Net) -> usize {
    let c = (0..50).find_map(|_| net.plan_random()).expect("a path");
    net.settle(None);
    assert!(net.circs[c].open && net.circs[c].exit.is_some());
    c
}

#[test]
fn data_cell_bytes_differ_on_every_link_of_a_three_relay_circuit() {
    let mut net = Net::new(1, 8, 3, (3, 3));
    net.burst = 1;
    let c = open_one(&mut net);
    assert_eq!(net.circs[c].path.len(), 5);
    net.circs[c].quota = [10, 10];
    net.capture = Some(Vec::new());
    net.endpoints(0.0);
    for _ in 0..10 {
        net.deliver(1.0);
    }
    let cap = net.capture.take().expect("capture");
    let pos = |v: usize| net.circs[c].path.iter().position(|&p| p == v).expect("hop");
    let fwd: Vec<&Vec<u8>> = cap
        .iter()
        .filter(|(a, b, _)| pos(*b) > pos(*a))
        .map(|(_, _, c)| c)
        .collect();
    let bwd: Vec<&Vec<u8>> = cap
        .iter()
        .filter(|(a, b, _)| pos(*b) < pos(*a))
        .map(|(_, _, c)| c)
        .collect();
    assert_eq!(
        (fwd.len(), bwd.len()),
        (4, 4),
        "one cell each way on each of 4 links"
    );
    for cells in [fwd, bwd] {
        for i in 0..cells.len() {
            for j in i + 1..cells.len() {
                assert_ne!(cells[i][CELL_HEADER_LEN..], cells[j][CELL_HEADER_LEN..]);
            }
        }
    }
    net.burst = 0;
    net.endpoints(1.0);
    assert_eq!(net.circs[c].recv, [1, 1], "both ends read the plaintext");
}

#[test]
fn a_stalled_reader_slows_the_sender_and_relays_hold_one_window() {
    let mut net = Net::new(2, 6, 3, (2, 2));
    net.burst = 16;
    let c = open_one(&mut net);
    net.circs[c].quota = [10_000, 0];
    net.circs[c].stalled[1] = true;
    for _ in 0..50 {
        net.endpoints(1.0);
        net.deliver(1.0);
        net.outputs(false);
        net.check_bounds();
    }
    let sent = net.circs[c].sent[0];
    // Exit queue W + one window per relay queue and outbound buffer.
    assert!(
        sent <= 1 + 4 * u32::from(W) && sent >= u32::from(W),
        "sent {sent}"
    );
    let (o, key) = net.circs[c].origin.expect("origin");
    assert_eq!(
        net.peers[o].core.endpoint_credit(key),
        Ok(0),
        "sender is stalled"
    );
    net.circs[c].stalled[1] = false;
    for _ in 0..5 {
        net.endpoints(1.0);
        net.deliver(1.0);
        net.outputs(false);
    }
    assert!(net.circs[c].sent[0] > sent, "reading resumes the flow");
}

/// The bug this guards against: the originator has sent its last bodies
/// and FIN, reads the exit's FIN and closes, while its tail still waits in
/// relay queues for the (stalled) exit's credit. The BREAK must wait
/// behind the tail, and the exit reads everything, then a clean end.
#[test]
fn a_clean_close_waits_behind_data_stalled_at_the_relays() {
    let mut net = Net::new(3, 6, 3, (2, 2));
    net.burst = 64;
    let c = open_one(&mut net);
    net.circs[c].quota = [2 * u32::from(W), 0];
    net.circs[c].stalled[1] = true;
    net.settle(Some(1.0));
    let circ = &net.circs[c];
    assert!(
        circ.clean[0] && circ.origin.is_none(),
        "the originator closed"
    );
    let (exit, _) = circ.exit.expect("the exit is still open");
    assert_eq!(
        net.peers[exit].core.max_queue(),
        usize::from(W),
        "one window unread"
    );
    let relays = &circ.path[1..circ.path.len() - 1];
    let held: usize = relays.iter().map(|&r| net.peers[r].core.max_queue()).sum();
    assert!(held > 0, "the tail waits at the relays");
    let draining: usize = relays
        .iter()
        .map(|&r| net.peers[r].core.circuit_count())
        .sum();
    assert!(draining > 0, "a relay holds the BREAK behind it");
    net.check_bounds();
    net.circs[c].stalled[1] = false;
    net.settle(Some(1.0));
    let circ = &net.circs[c];
    assert!(circ.exit.is_none() && circ.fin_recv[0]);
    assert_eq!(circ.recv[0], 2 * u32::from(W));
    net.check_empty();
}

/// Both ends send FIN at once and close after reading the other's. Within
/// one window the BREAKs cross and both ends close cleanly; with more than a
/// window queued, the end that reads its FIN first closes and its BREAK may
/// reach the other end right behind that end's last bodies and FIN, which
/// then arrive with the BREAK (still no error: every body and the FIN came
/// first). Either way nothing is left.
#[test]
fn concurrent_fins_close_cleanly_on_both_sides() {
    for stalled in [false, true] {
        let mut net = Net::new(4, 6, 3, (1, 3));
        net.burst = 64;
        let c = open_one(&mut net);
        net.circs[c].quota = if stalled { [20, 20] } else { [3, 3] };
        net.circs[c].stalled = [true; 2];
        net.settle(Some(1.0));
        assert_eq!(net.circs[c].fin_sent, [true; 2]);
        // Both read in the same pass and close before anything moves.
        net.circs[c].stalled = [false; 2];
        net.settle(Some(1.0));
        let circ = &net.circs[c];
        if stalled {
            assert!(circ.clean.contains(&true), "one end closed by itself");
        } else {
            assert_eq!(circ.clean, [true; 2], "the BREAKs cross");
        }
        assert_eq!(circ.fin_recv, [true; 2], "stalled={stalled}");
        assert_eq!(circ.recv, circ.quota);
        net.check_empty();
    }
}

/// An end that aborts before FIN: the other end gets `Closed` with the
/// bodies that arrived, and no FIN among them (the stream layer reports
/// that as an error).
#[test]
fn a_break_before_fin_arrives_behind_the_data_but_without_fin() {
    let mut net = Net::new(5, 6, 3, (2, 2));
    net.burst = 4;
    let c = open_one(&mut net);
    net.circs[c].quota = [1000, 0];
    net.circs[c].stalled[1] = true;
    for _ in 0..3 {
        net.endpoints(1.0);
    }
    let sent = net.circs[c].sent[0];
    net.abort(c, 0);
    net.circs[c].stalled[1] = false;
    net.settle(Some(1.0));
    let circ = &net.circs[c];
    assert!(circ.exit.is_none() && !circ.fin_recv[0] && !circ.clean[0]);
    assert_eq!(circ.recv[0], sent, "the data sent before the BREAK arrived");
    net.check_empty();
}
