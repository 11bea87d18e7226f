//! The priority lane: set-up and credit cells leave a link before the DATA
//! already queued on it, and never before a cell of their own circuit.

use super::*;

/// A CREATE forwarded onto a link whose buffer already holds DATA of an
/// open circuit leaves first; so does a CREDIT on a link holding DATA
/// of the other direction. The DATA keeps its own order.
#[test]
fn create_and_credit_pass_data_queued_on_the_link() {
    let w = 8u16;
    let mut h = harness(w);
    let (mut layer, id) = h.open();
    for i in 0..3u8 {
        h.feed(h.a, Cell::new(CircuitId(1), data(i)));
    }
    let (code, _) = code_for_us(true, UNIX + 600, 2);
    h.feed(h.a, Cell::new(CircuitId(3), CellMsg::Create(code)));
    assert!(h.run_peels().is_empty());
    let sent = h.sent(h.b);
    assert_eq!(sent.len(), 4);
    assert!(
        matches!(sent[0].msg, CellMsg::Create(_)),
        "CREATE first, not behind the DATA"
    );
    assert_ne!(sent[0].circ, id);
    for (i, cell) in sent[1..].iter().enumerate() {
        let mut want = [i as u8; CELL_BODY_LEN];
        layer.remove_forward(&mut want).expect("ctr");
        assert_eq!(*cell, Cell::new(id, CellMsg::Data(Box::new(want))));
    }

    // Backward DATA waits on A; forward DATA on A then earns a CREDIT.
    for i in 0..2u8 {
        h.feed(h.b, Cell::new(id, data(0x80 + i)));
    }
    for i in 0..w / 2 {
        h.feed(h.a, Cell::new(CircuitId(1), data(i as u8)));
    }
    let sent = h.sent(h.a);
    let cmds: Vec<_> = sent.iter().map(|c| c.msg.command()).collect();
    assert_eq!(
        cmds,
        vec![Command::Credit, Command::Data, Command::Data],
        "CREDIT first"
    );
}

/// A CREATE or CONFIRM whose circuit id still has a cell in the ordered
/// lane (a BREAK_ACK for an id freed on the BREAK, about to be reused)
/// stays behind it; others pass. BREAK and BREAK_ACK never pass.
#[test]
fn setup_cells_never_pass_a_cell_of_their_own_circuit() {
    let mut h = harness(8);
    let (code, _) = code_for_us(true, UNIX + 600, 3);
    let (x, y) = (CircuitId(5), CircuitId(7));
    h.core.send_ctrl(h.b, x, CellMsg::BreakAck);
    h.core.send_ctrl(h.b, x, CellMsg::Create(code.clone()));
    h.core.send_ctrl(h.b, y, CellMsg::Create(code));
    h.core
        .send_ctrl(h.b, y, CellMsg::Break(BreakReason::Destroyed));
    h.core.send_ctrl(h.b, x, CellMsg::Confirm);
    let sent: Vec<_> = h
        .sent(h.b)
        .into_iter()
        .map(|c| (c.circ, c.msg.command()))
        .collect();
    assert_eq!(
        sent,
        vec![
            (y, Command::Create),
            (x, Command::BreakAck),
            (x, Command::Create),
            (y, Command::Break),
            (x, Command::Confirm),
        ]
    );
    assert_eq!(h.core.outbound_len(h.b), 0);
}
