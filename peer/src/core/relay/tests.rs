//! One test per transition of `STATE.md`, on a single core with two links:
//! `A` (NID 1, the neighbour dialled us: it uses odd ids) towards the
//! originator and `B` (NID 2, we dialled: we use odd ids) towards the exit.

use super::*;
use anomos_common::cell::{CELL_BODY_LEN, CREATE_CODE_LEN};
use anomos_common::crypto::{CircuitSecret, LayerKeys, X25519Secret};
use anomos_common::onion::{build, peel, ExitPayload, HopSpec, Peeled, TrackingCode};
use anomos_common::relay_crypto::{DataBody, OriginLayers, RelayLayer};
use anomos_common::replay::ReplayCache;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

mod priority;

/// Unix seconds every test code is built and peeled at.
pub(super) const UNIX: u64 = 1_700_000_000;
const IH: InfoHash = InfoHash([7; 32]);

pub(super) fn key(seed: u8) -> X25519Secret {
    X25519Secret::from_bytes([seed; 32]).expect("key")
}

struct Harness {
    core: RelayCore,
    me: X25519Secret,
    replay: ReplayCache,
    a: LinkId,
    b: LinkId,
    now: Instant,
    metrics: Metrics,
}

fn harness(window: u16) -> Harness {
    let metrics = Metrics::new().expect("metrics");
    let cfg = CoreConfig {
        window,
        setup_timeout: Duration::from_secs(5),
        link_wait: Duration::from_secs(2),
        break_timeout: Duration::from_secs(5),
        max_pending_peels: 2,
        max_circuits: 100,
        violation_limit: 3,
        max_ctrl_cells: 1000,
        swallow_creates: false,
    };
    let mut core = RelayCore::new(cfg, metrics.clone());
    let a = core.add_link(Instant::now(), Nid(1), false).expect("a");
    let b = core.add_link(Instant::now(), Nid(2), true).expect("b");
    Harness {
        core,
        me: key(1),
        replay: ReplayCache::new(100),
        a,
        b,
        now: Instant::now(),
        metrics,
    }
}

/// A code whose top layer is ours: originator (key 9) → us (next NID 2 if
/// `relay`) → exit (key 3). Returns the code as it reaches us and our keys.
fn code_for_us(relay: bool, expiry: u64, seed: u64) -> (Box<[u8; CREATE_CODE_LEN]>, LayerKeys) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut hops = vec![HopSpec {
        onion_public: key(9).public(),
        next_nid: Some(Nid(1)),
    }];
    hops.push(HopSpec {
        onion_public: key(1).public(),
        next_nid: relay.then_some(Nid(2)),
    });
    if relay {
        hops.push(HopSpec {
            onion_public: key(3).public(),
            next_nid: None,
        });
    }
    let payload = ExitPayload {
        infohash: IH,
        circuit_secret: CircuitSecret([5; 32]),
        expiry,
        credit: 0,
    };
    let built = build(&mut rng, &hops, &payload).expect("build");
    let mut cache = ReplayCache::new(10);
    let peeled = peel(&key(9), &built.code, UNIX.min(expiry), &mut cache).expect("origin peel");
    let Peeled::Relay { next_code, .. } = peeled else {
        panic!("origin layer is a relay layer")
    };
    let mut code = Box::new([0u8; CREATE_CODE_LEN]);
    code.copy_from_slice(next_code.as_bytes());
    (code, built.layer_keys[0].clone())
}

impl Harness {
    fn feed(&mut self, link: LinkId, cell: Cell) {
        let mut bytes = cell.to_bytes();
        self.core.handle_cells(self.now, link, &mut bytes);
    }

    fn sent(&mut self, link: LinkId) -> Vec<Cell> {
        let mut buf = Vec::new();
        self.core.take_outbound(link, &mut buf);
        let cells = buf
            .chunks_exact(CELL_LEN)
            .map(|c| Cell::decode(c).expect("cell").0);
        cells.collect()
    }

    /// Run every pending peel and return the other outputs.
    fn run_peels(&mut self) -> Vec<Output> {
        let mut rest = Vec::new();
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Peel { key, code } => {
                    let code = TrackingCode::from_bytes(&code[..]).expect("len");
                    let r = peel(&self.me, &code, UNIX, &mut self.replay);
                    self.core.peel_done(self.now, key, r);
                }
                other => rest.push(other),
            }
        }
        rest
    }

    /// CREATE on A id 1 through us to B; returns our layer and B's id.
    fn extend(&mut self) -> (RelayLayer, CircuitId) {
        let (code, keys) = code_for_us(true, UNIX + 600, 1);
        self.feed(self.a, Cell::new(CircuitId(1), CellMsg::Create(code)));
        assert!(self.run_peels().is_empty());
        let sent = self.sent(self.b);
        assert_eq!(sent.len(), 1);
        assert!(matches!(sent[0].msg, CellMsg::Create(_)));
        (RelayLayer::new(&keys).expect("layer"), sent[0].circ)
    }

    fn open(&mut self) -> (RelayLayer, CircuitId) {
        let (layer, id) = self.extend();
        self.feed(self.b, Cell::new(id, CellMsg::Confirm));
        assert_eq!(
            self.sent(self.a),
            vec![Cell::new(CircuitId(1), CellMsg::Confirm)]
        );
        (layer, id)
    }

    fn count(&self, vec: &prometheus::IntCounterVec, label: &str) -> u64 {
        vec.with_label_values(&[label]).get()
    }
}

fn data(byte: u8) -> CellMsg {
    CellMsg::Data(Box::new([byte; CELL_BODY_LEN]))
}

#[test]
fn create_is_peeled_and_forwarded_with_our_id() {
    let mut h = harness(8);
    let (_, id) = h.extend();
    assert!(id.belongs_to(true), "we dialled B: odd ids");
    assert_eq!(h.core.circuit_count(), 1);
    assert_eq!(h.core.ids_in_use(h.b), 1);
    assert_eq!(h.core.pending_peels(), 0);
}

/// The test-only black hole: a CREATE is taken and nothing happens —
/// no peel, no forward, no BREAK, no table entry.
#[test]
fn a_swallowing_relay_takes_create_and_does_nothing() {
    let mut h = harness(8);
    h.core.cfg.swallow_creates = true;
    let (code, _) = code_for_us(true, UNIX + 600, 1);
    h.feed(h.a, Cell::new(CircuitId(1), CellMsg::Create(code)));
    assert!(h.run_peels().is_empty());
    assert!(h.sent(h.a).is_empty() && h.sent(h.b).is_empty());
    assert_eq!((h.core.circuit_count(), h.core.half_count()), (0, 0));
}

#[test]
fn create_at_exit_is_confirmed_when_served_and_refused_otherwise() {
    for served in [true, false] {
        let mut h = harness(8);
        h.core.set_served(IH, served);
        let (code, _) = code_for_us(false, UNIX + 600, 2);
        h.feed(h.a, Cell::new(CircuitId(3), CellMsg::Create(code)));
        let outs = h.run_peels();
        let sent = h.sent(h.a);
        if served {
            assert_eq!(sent, vec![Cell::new(CircuitId(3), CellMsg::Confirm)]);
            assert!(matches!(
                outs[..],
                [Output::ExitOpened { infohash: IH, .. }]
            ));
            assert_eq!(h.core.local_circuits().len(), 1);
        } else {
            assert_eq!(
                sent,
                vec![Cell::new(
                    CircuitId(3),
                    CellMsg::Break(BreakReason::Refused)
                )]
            );
            assert_eq!(h.core.circuit_count(), 0);
            h.feed(h.a, Cell::new(CircuitId(3), CellMsg::BreakAck));
            assert_eq!(h.core.half_count(), 0);
            assert_eq!(h.count(&h.metrics.cells_dropped, "not_served"), 1);
        }
    }
}

/// The exit's batch send: bodies written in place, as many as credit
/// allows, wrapped in the exit's layer exactly as one at a time; a `fill`
/// that declines stops the batch and nothing of that body is sent.
#[test]
fn endpoint_batch_send_writes_in_place_within_credit() {
    let w = 4u16;
    let mut h = harness(w);
    h.core.set_served(IH, true);
    let (code, keys) = code_for_us(false, UNIX + 600, 2);
    h.feed(h.a, Cell::new(CircuitId(3), CellMsg::Create(code)));
    let key = match h.run_peels()[..] {
        [Output::ExitOpened { key, .. }] => key,
        ref other => panic!("{other:?}"),
    };
    h.sent(h.a);
    let mut n = 0u8;
    let fill = |b: &mut [u8; CELL_BODY_LEN]| {
        assert_eq!(b, &[0u8; CELL_BODY_LEN], "a zeroed body");
        n += 1;
        DataBody::encode(&[n; 10], b);
        true
    };
    let sent = h
        .core
        .endpoint_send_with(h.now, key, 9, fill)
        .expect("send");
    assert_eq!(sent, usize::from(w), "one window of credit");
    assert_eq!(h.core.endpoint_credit(key), Ok(0));
    let mut layer = RelayLayer::new(&keys).expect("layer");
    for (i, cell) in h.sent(h.a).into_iter().enumerate() {
        assert_eq!(cell.circ, CircuitId(3));
        let CellMsg::Data(mut body) = cell.msg else {
            panic!("DATA expected")
        };
        layer.add_backward(&mut body).expect("ctr");
        assert_eq!(DataBody::decode(&body), Ok(&[i as u8 + 1; 10][..]));
    }
    let credit = std::num::NonZeroU16::new(w).expect("w");
    h.feed(h.a, Cell::new(CircuitId(3), CellMsg::Credit(credit)));
    let mut calls = 0;
    let stop = |_: &mut [u8; CELL_BODY_LEN]| {
        calls += 1;
        calls < 2
    };
    assert_eq!(h.core.endpoint_send_with(h.now, key, 3, stop), Ok(1));
    assert_eq!(h.sent(h.a).len(), 1, "the declined body is not sent");
    assert_eq!(h.core.endpoint_credit(key), Ok(u32::from(w) - 1));
}

#[test]
fn confirm_travels_back_and_data_gets_one_layer_per_direction() {
    let mut h = harness(8);
    let (mut layer, id) = h.open();
    h.feed(h.a, Cell::new(CircuitId(1), data(0xaa)));
    let mut want = [0xaa; CELL_BODY_LEN];
    layer.remove_forward(&mut want).expect("ctr");
    assert_eq!(
        h.sent(h.b),
        vec![Cell::new(id, CellMsg::Data(Box::new(want)))]
    );
    h.feed(h.b, Cell::new(id, data(0x55)));
    let mut want = [0x55; CELL_BODY_LEN];
    layer.add_backward(&mut want).expect("ctr");
    assert_eq!(
        h.sent(h.a),
        vec![Cell::new(CircuitId(1), CellMsg::Data(Box::new(want)))]
    );
    assert_eq!(h.metrics.relay_bytes.get(), 2 * CELL_LEN as u64);
}

#[test]
fn break_from_either_side_is_acked_passed_on_and_frees_ids_after_the_ack() {
    for from_back in [true, false] {
        let mut h = harness(8);
        let (_, id) = h.open();
        let (src, src_id, dst, dst_id) = if from_back {
            (h.a, CircuitId(1), h.b, id)
        } else {
            (h.b, id, h.a, CircuitId(1))
        };
        h.feed(
            src,
            Cell::new(src_id, CellMsg::Break(BreakReason::Destroyed)),
        );
        assert_eq!(h.sent(src), vec![Cell::new(src_id, CellMsg::BreakAck)]);
        assert_eq!(
            h.sent(dst),
            vec![Cell::new(dst_id, CellMsg::Break(BreakReason::Destroyed))]
        );
        assert_eq!(h.core.circuit_count(), 0);
        assert_eq!(
            h.core.half_count(),
            1,
            "the forwarded BREAK waits for its ack"
        );
        // Late DATA on the breaking half is dropped, not an error.
        h.feed(dst, Cell::new(dst_id, data(1)));
        assert_eq!(h.count(&h.metrics.cells_dropped, "circuit_closing"), 1);
        assert_eq!(h.core.ids_in_use(h.b), usize::from(from_back));
        h.feed(dst, Cell::new(dst_id, CellMsg::BreakAck));
        assert_eq!(h.core.half_count(), 0);
        assert_eq!(h.core.ids_in_use(h.b), 0);
    }
}

#[test]
fn crossing_breaks_are_both_acked() {
    let mut h = harness(8);
    let (_, id) = h.open();
    h.feed(
        h.a,
        Cell::new(CircuitId(1), CellMsg::Break(BreakReason::None)),
    );
    h.sent(h.a);
    h.sent(h.b);
    // B broke at the same time: its BREAK crosses ours.
    h.feed(h.b, Cell::new(id, CellMsg::Break(BreakReason::None)));
    assert_eq!(h.sent(h.b), vec![Cell::new(id, CellMsg::BreakAck)]);
    assert_eq!(h.core.ids_in_use(h.b), 1);
    h.feed(h.b, Cell::new(id, CellMsg::BreakAck));
    assert_eq!((h.core.half_count(), h.core.ids_in_use(h.b)), (0, 0));
}

/// CREATE through us to NID 2 while that link is down: peeled, waiting.
fn extend_without_next_link(h: &mut Harness) {
    h.core.link_lost(h.now, h.b);
    let (code, _) = code_for_us(true, UNIX + 600, 1);
    h.feed(h.a, Cell::new(CircuitId(1), CellMsg::Create(code)));
    assert!(h.run_peels().is_empty());
    assert!(h.sent(h.a).is_empty(), "no BREAK while the link may come");
    assert_eq!(h.core.circuit_count(), 1);
}

#[test]
fn a_create_waits_for_the_next_hops_link_and_goes_out_when_it_attaches() {
    let mut h = harness(8);
    extend_without_next_link(&mut h);
    let deadline = h.core.poll_timeout().expect("a wait deadline");
    assert_eq!(deadline, h.now + Duration::from_secs(2));
    h.now += Duration::from_millis(300);
    let b = h.core.add_link(h.now, Nid(2), true).expect("b");
    let sent = h.sent(b);
    assert_eq!(sent.len(), 1);
    assert!(matches!(sent[0].msg, CellMsg::Create(_)));
    // From here it is an ordinary set-up with a fresh set-up timeout.
    assert_eq!(h.core.poll_timeout(), Some(h.now + Duration::from_secs(5)));
    h.feed(b, Cell::new(sent[0].circ, CellMsg::Confirm));
    assert_eq!(h.sent(h.a), vec![Cell::new(CircuitId(1), CellMsg::Confirm)]);
}

#[test]
fn a_next_hop_link_that_never_comes_refuses_the_circuit() {
    let mut h = harness(8);
    extend_without_next_link(&mut h);
    let deadline = h.core.poll_timeout().expect("a wait deadline");
    h.core.handle_timeout(deadline);
    let brk = CellMsg::Break(BreakReason::Refused);
    assert_eq!(h.sent(h.a), vec![Cell::new(CircuitId(1), brk)]);
    assert_eq!(h.count(&h.metrics.cells_dropped, "unknown_nid"), 1);
    assert_eq!(h.core.circuit_count(), 0);
    // The link attaching later finds nothing waiting.
    let b = h.core.add_link(deadline, Nid(2), true).expect("b");
    assert!(h.sent(b).is_empty());
}

#[test]
fn a_circuit_broken_while_waiting_for_its_link_is_forgotten() {
    let mut h = harness(8);
    extend_without_next_link(&mut h);
    h.feed(
        h.a,
        Cell::new(CircuitId(1), CellMsg::Break(BreakReason::None)),
    );
    assert_eq!(
        h.sent(h.a),
        vec![Cell::new(CircuitId(1), CellMsg::BreakAck)]
    );
    assert_eq!((h.core.circuit_count(), h.core.half_count()), (0, 0));
    let b = h.core.add_link(h.now, Nid(2), true).expect("b");
    assert!(h.sent(b).is_empty(), "no CREATE for a circuit that is gone");
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn setup_timeout_breaks_both_ways_and_unacked_breaks_expire() {
    let mut h = harness(8);
    let (_, id) = h.extend();
    let deadline = h.core.poll_timeout().expect("deadline");
    h.core.handle_timeout(deadline);
    let brk = CellMsg::Break(BreakReason::SetupTimeout);
    assert_eq!(h.sent(h.a), vec![Cell::new(CircuitId(1), brk.clone())]);
    assert_eq!(h.sent(h.b), vec![Cell::new(id, brk)]);
    assert_eq!(h.core.half_count(), 2);
    // Nobody acks: the ids are freed at the break timeout.
    let t = h.core.poll_timeout().expect("break deadline");
    h.core.handle_timeout(t);
    assert_eq!((h.core.half_count(), h.core.ids_in_use(h.b)), (0, 0));
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn link_loss_breaks_the_other_half() {
    let mut h = harness(8);
    h.open();
    h.core.link_lost(h.now, h.b);
    let brk = CellMsg::Break(BreakReason::LinkLost);
    assert_eq!(h.sent(h.a), vec![Cell::new(CircuitId(1), brk)]);
    assert_eq!(h.core.circuit_count(), 0);
    h.feed(h.a, Cell::new(CircuitId(1), CellMsg::BreakAck));
    assert_eq!(h.core.half_count(), 0);
    assert_eq!(h.core.link_of(Nid(2)), None);
}

/// Originate a one-relay circuit whose first hop is `nid`.
fn originate_to(h: &mut Harness, nid: Nid) -> (CircKey, Box<[u8; CREATE_CODE_LEN]>) {
    let (code, keys) = code_for_us(true, UNIX + 100, 7);
    let layers = OriginLayers::new(&[keys]).expect("layers");
    let key = h
        .core
        .originate(h.now, nid, &code, layers)
        .expect("originate");
    (key, code)
}

/// Our own first hop's link dies: the originated circuit is reported
/// closed with the first hop's NID, so it counts as a failed circuit.
#[test]
fn losing_the_first_hop_closes_an_originated_circuit_as_failed() {
    let mut h = harness(8);
    let (key, _) = originate_to(&mut h, Nid(2));
    h.sent(h.b);
    h.core.link_lost(h.now, h.b);
    let closed = closes(&mut h);
    assert_eq!(closed, vec![(key, BreakReason::LinkLost, Some(Nid(2)))]);
    assert_eq!((h.core.circuit_count(), h.core.half_count()), (0, 0));
    assert_eq!(h.core.link_of(Nid(2)), None);
    assert_eq!(h.core.link_count(), 1);
}

/// The closes among the core's outputs: (key, reason, first hop's NID).
fn closes(h: &mut Harness) -> Vec<(CircKey, BreakReason, Option<Nid>)> {
    std::iter::from_fn(|| h.core.poll_output())
        .filter_map(|o| match o {
            Output::Closed {
                key,
                reason,
                first_nid,
                ..
            } => Some((key, reason, first_nid)),
            _ => None,
        })
        .collect()
}

/// A grant whose first hop's link is still being dialled waits for it in
/// the core, like a relay's next hop: the CREATE goes out when the link
/// attaches; a link that never comes closes the circuit as refused, as
/// one we originated.
#[test]
fn an_originated_circuit_waits_for_its_first_hops_link() {
    for comes in [true, false] {
        let mut h = harness(8);
        h.core.link_lost(h.now, h.b);
        let (key, code) = originate_to(&mut h, Nid(2));
        assert!(closes(&mut h).is_empty());
        let deadline = h.core.poll_timeout().expect("a wait deadline");
        assert_eq!(deadline, h.now + Duration::from_secs(2));
        if comes {
            h.now += Duration::from_millis(300);
            let b = h.core.add_link(h.now, Nid(2), true).expect("b");
            let sent = h.sent(b);
            assert_eq!(sent.len(), 1);
            assert_eq!(sent[0].msg, CellMsg::Create(code.clone()));
            h.feed(b, Cell::new(sent[0].circ, CellMsg::Confirm));
            let confirmed = std::iter::from_fn(|| h.core.poll_output())
                .any(|o| matches!(o, Output::Confirmed { key: k } if k == key));
            assert!(confirmed, "no Confirmed after the late link");
        } else {
            h.core.handle_timeout(deadline);
            let closed = closes(&mut h);
            assert_eq!(closed, vec![(key, BreakReason::Refused, Some(Nid(2)))]);
            assert_eq!(h.count(&h.metrics.cells_dropped, "unknown_nid"), 1);
            assert_eq!(h.core.circuit_count(), 0);
            let b = h.core.add_link(deadline, Nid(2), true).expect("b");
            assert!(h.sent(b).is_empty(), "nothing left waiting");
        }
    }
}

#[test]
fn unknown_circuit_is_dropped_and_counted_and_the_link_stays() {
    let mut h = harness(8);
    h.feed(h.a, Cell::new(CircuitId(41), data(0)));
    h.feed(h.a, Cell::new(CircuitId(41), CellMsg::Confirm));
    assert_eq!(h.count(&h.metrics.cells_dropped, "unknown_circuit"), 2);
    assert!(h.core.poll_output().is_none(), "no link close");
}

#[test]
fn data_beyond_the_window_is_a_credit_violation_and_queues_stay_bounded() {
    let w = 4u16;
    let mut h = harness(w);
    let (_, id) = h.open();
    // B never returns credit: W cells go out, W more wait, the next is a violation.
    for i in 0..2 * w {
        h.feed(h.a, Cell::new(CircuitId(1), data(i as u8)));
        assert!(h.core.max_queue() <= usize::from(w));
    }
    assert_eq!(h.core.max_queue(), usize::from(w));
    let to_b = h.sent(h.b);
    assert_eq!(to_b.len(), usize::from(w), "B got exactly one window");
    let credits = h.sent(h.a);
    assert_eq!(credits.len(), 2, "credit returned as cells left the queue");
    h.feed(h.a, Cell::new(CircuitId(1), data(9)));
    assert_eq!(h.count(&h.metrics.protocol_violations, "credit"), 1);
    let brk = CellMsg::Break(BreakReason::Protocol);
    assert_eq!(h.sent(h.a), vec![Cell::new(CircuitId(1), brk.clone())]);
    assert_eq!(h.sent(h.b), vec![Cell::new(id, brk)]);
}

#[test]
fn a_batch_of_runs_does_what_the_cells_do_one_at_a_time() {
    let w = 4u16;
    // Runs of circuit 1 around a cell of an unknown circuit; the 9th cell
    // of circuit 1 exceeds the window, the two after it find it closing.
    let ids = [1, 1, 1, 1, 1, 41, 1, 1, 1, 1, 1, 1];
    let cells: Vec<Cell> = ids
        .iter()
        .enumerate()
        .map(|(i, &c)| Cell::new(CircuitId(c), data(i as u8)))
        .collect();
    let mut one = harness(w);
    let mut batch = harness(w);
    one.open();
    batch.open();
    for c in &cells {
        one.feed(one.a, c.clone());
    }
    let mut bytes: Vec<u8> = cells.iter().flat_map(|c| c.to_bytes()).collect();
    batch.core.handle_cells(batch.now, batch.a, &mut bytes);
    let credit_sum = |cells: &[Cell]| -> u32 {
        let credits = cells.iter().filter_map(|c| match c.msg {
            CellMsg::Credit(n) => Some(u32::from(n.get())),
            _ => None,
        });
        credits.sum()
    };
    let (to_b, to_b2) = (one.sent(one.b), batch.sent(batch.b));
    assert_eq!(to_b, to_b2, "same bytes on the next link, in order");
    assert_eq!(to_b.len(), usize::from(w) + 1, "one window, then BREAK");
    let (to_a, to_a2) = (one.sent(one.a), batch.sent(batch.a));
    assert_eq!(credit_sum(&to_a), credit_sum(&to_a2));
    assert_eq!(to_a.last(), to_a2.last(), "BREAK(protocol) back");
    for h in [&one, &batch] {
        assert_eq!(h.count(&h.metrics.protocol_violations, "credit"), 1);
        assert_eq!(h.count(&h.metrics.cells_dropped, "unknown_circuit"), 1);
        assert_eq!(h.count(&h.metrics.cells_dropped, "circuit_closing"), 2);
        assert_eq!(h.core.circuit_count(), 0);
    }
}

#[test]
fn credit_drains_the_queue_and_too_much_credit_is_a_violation() {
    let w = 4u16;
    let mut h = harness(w);
    let (_, id) = h.open();
    for i in 0..2 * w {
        h.feed(h.a, Cell::new(CircuitId(1), data(i as u8)));
    }
    h.sent(h.b);
    h.sent(h.a);
    let n = std::num::NonZeroU16::new(w).expect("w");
    h.feed(h.b, Cell::new(id, CellMsg::Credit(n)));
    assert_eq!(h.sent(h.b).len(), usize::from(w));
    assert_eq!(h.core.max_queue(), 0);
    assert_eq!(
        h.sent(h.a).len(),
        1,
        "one CREDIT(W) upstream as the queue drained"
    );
    h.feed(h.b, Cell::new(id, CellMsg::Credit(n)));
    h.feed(
        h.b,
        Cell::new(id, CellMsg::Credit(std::num::NonZeroU16::MIN)),
    );
    assert_eq!(h.count(&h.metrics.protocol_violations, "credit"), 1);
    assert_eq!(h.core.circuit_count(), 0);
}

#[test]
fn bad_codes_break_only_their_circuit() {
    let mut h = harness(8);
    // Tampered.
    let (mut code, _) = code_for_us(true, UNIX + 600, 3);
    code[100] ^= 1;
    h.feed(h.a, Cell::new(CircuitId(1), CellMsg::Create(code)));
    h.run_peels();
    // Expired.
    let (code, _) = code_for_us(true, UNIX - 1, 4);
    h.feed(h.a, Cell::new(CircuitId(3), CellMsg::Create(code)));
    h.run_peels();
    // Replayed: the same code twice.
    let (code, _) = code_for_us(true, UNIX + 600, 5);
    h.feed(h.a, Cell::new(CircuitId(5), CellMsg::Create(code.clone())));
    h.run_peels();
    h.feed(h.a, Cell::new(CircuitId(7), CellMsg::Create(code)));
    h.run_peels();
    let refused = CellMsg::Break(BreakReason::Refused);
    let want: Vec<Cell> = [1, 3, 7]
        .map(|i| Cell::new(CircuitId(i), refused.clone()))
        .into();
    assert_eq!(h.sent(h.a), want);
    for kind in ["bad_mac", "expired", "replayed"] {
        assert_eq!(h.count(&h.metrics.protocol_violations, kind), 1, "{kind}");
    }
    assert_eq!(h.core.circuit_count(), 1, "the good circuit is up");
    assert_eq!(h.core.link_count(), 2);
    assert!(h.core.poll_output().is_none(), "no link close");
}

#[test]
fn create_flood_beyond_the_peel_bound_is_refused_and_counted() {
    let mut h = harness(8);
    let (code, _) = code_for_us(true, UNIX + 600, 6);
    for i in 0..4u32 {
        h.feed(
            h.a,
            Cell::new(CircuitId(2 * i + 1), CellMsg::Create(code.clone())),
        );
    }
    assert_eq!(h.core.pending_peels(), 2);
    assert_eq!(h.count(&h.metrics.cells_dropped, "peel_backlog"), 2);
    let over = CellMsg::Break(BreakReason::Overloaded);
    let want: Vec<Cell> = [5, 7].map(|i| Cell::new(CircuitId(i), over.clone())).into();
    assert_eq!(h.sent(h.a), want);
}

#[test]
fn malformed_cell_closes_the_link() {
    let mut h = harness(8);
    let mut bytes = Cell::new(CircuitId(1), CellMsg::Confirm).to_bytes();
    bytes[500] = 1;
    h.core.handle_cells(h.now, h.a, &mut bytes);
    assert!(matches!(
        h.core.poll_output(),
        Some(Output::CloseLink {
            reason: "malformed_cell",
            ..
        })
    ));
    assert_eq!(h.count(&h.metrics.protocol_violations, "malformed_cell"), 1);
}

#[test]
fn repeated_violations_mark_the_neighbour_misbehaving() {
    let mut h = harness(8);
    for _ in 0..3 {
        // Even ids belong to us on A (we accepted it): a CREATE on one is a violation.
        let (code, _) = code_for_us(true, UNIX + 600, 7);
        h.feed(h.a, Cell::new(CircuitId(2), CellMsg::Create(code)));
    }
    assert!(matches!(
        h.core.poll_output(),
        Some(Output::Misbehaving { nid: Nid(1), .. })
    ));
    assert!(matches!(
        h.core.poll_output(),
        Some(Output::CloseLink {
            reason: "misbehaving",
            ..
        })
    ));
}

#[test]
fn duplicate_nid_is_refused() {
    let mut h = harness(8);
    assert!(h.core.add_link(h.now, Nid(1), true).is_err());
}

/// A cells from A queue at us (B gives no credit), then A breaks: the
/// BREAK must leave towards B only after those cells, as credit allows.
#[test]
fn break_waits_behind_queued_data_of_its_direction() {
    let w = 4u16;
    let mut h = harness(w);
    let (_, id) = h.open();
    for i in 0..2 * w {
        h.feed(h.a, Cell::new(CircuitId(1), data(i as u8)));
    }
    assert_eq!(h.sent(h.b).len(), usize::from(w), "one window went out");
    h.sent(h.a);
    h.feed(
        h.a,
        Cell::new(CircuitId(1), CellMsg::Break(BreakReason::Destroyed)),
    );
    assert_eq!(
        h.sent(h.a),
        vec![Cell::new(CircuitId(1), CellMsg::BreakAck)]
    );
    assert_eq!(h.sent(h.b), vec![], "the BREAK waits behind the queue");
    let n = std::num::NonZeroU16::new(w).expect("w");
    h.feed(h.b, Cell::new(id, CellMsg::Credit(n)));
    let out = h.sent(h.b);
    assert_eq!(out.len(), usize::from(w) + 1);
    assert!(out[..usize::from(w)]
        .iter()
        .all(|c| matches!(c.msg, CellMsg::Data(_))));
    assert_eq!(
        out[usize::from(w)],
        Cell::new(id, CellMsg::Break(BreakReason::Destroyed))
    );
    assert_eq!(h.sent(h.a), vec![], "no CREDIT to the half that is gone");
    h.feed(h.b, Cell::new(id, CellMsg::BreakAck));
    assert_eq!((h.core.circuit_count(), h.core.half_count()), (0, 0));
    assert_eq!(h.core.ids_in_use(h.b), 0);
}

/// A queue of W cells from A waits for B's credit when A's BREAK arrives.
fn draining(h: &mut Harness, w: u16) -> CircuitId {
    let (_, id) = h.open();
    for i in 0..2 * w {
        h.feed(h.a, Cell::new(CircuitId(1), data(i as u8)));
    }
    h.sent(h.b);
    h.sent(h.a);
    h.feed(
        h.a,
        Cell::new(CircuitId(1), CellMsg::Break(BreakReason::Destroyed)),
    );
    h.sent(h.a);
    id
}

#[test]
fn while_draining_the_other_direction_is_torn_down() {
    let mut h = harness(4);
    let id = draining(&mut h, 4);
    // B's DATA towards A, which broke, is dropped; nothing reaches A.
    h.feed(h.b, Cell::new(id, data(3)));
    assert_eq!(h.count(&h.metrics.cells_dropped, "circuit_closing"), 1);
    assert_eq!(h.sent(h.a), vec![]);
    assert_eq!(h.core.half_count(), 1, "A's half is freed at once");
    assert!(h.core.max_queue() <= 4, "memory bound held");
    // B breaks too (crossing): the tail is dropped, nothing more is sent.
    h.feed(h.b, Cell::new(id, CellMsg::Break(BreakReason::None)));
    assert_eq!(h.sent(h.b), vec![Cell::new(id, CellMsg::BreakAck)]);
    assert_eq!(h.sent(h.a), vec![]);
    assert_eq!((h.core.circuit_count(), h.core.half_count()), (0, 0));
    assert_eq!(h.core.ids_in_use(h.b), 0);
}

#[test]
fn a_drain_that_gets_no_credit_breaks_at_the_break_timeout() {
    let mut h = harness(4);
    let id = draining(&mut h, 4);
    let t = h.core.poll_timeout().expect("drain deadline");
    assert_eq!(t, h.now + Duration::from_secs(5));
    h.core.handle_timeout(t);
    assert_eq!(
        h.sent(h.b),
        vec![Cell::new(id, CellMsg::Break(BreakReason::Destroyed))]
    );
    assert_eq!(h.count(&h.metrics.cells_dropped, "drain_timeout"), 1);
    assert_eq!(h.core.circuit_count(), 0);
    h.feed(h.b, Cell::new(id, CellMsg::BreakAck));
    assert_eq!(h.core.half_count(), 0);
}

#[test]
fn losing_the_link_drained_towards_frees_everything() {
    let mut h = harness(4);
    draining(&mut h, 4);
    h.core.link_lost(h.now, h.b);
    assert_eq!(h.sent(h.a), vec![], "A's half is gone already");
    assert_eq!((h.core.circuit_count(), h.core.half_count()), (0, 0));
    assert_eq!(h.core.poll_timeout(), None);
}

#[test]
fn a_break_with_nothing_queued_passes_on_at_once() {
    let mut h = harness(4);
    let (_, id) = h.open();
    // B still has cells queued here for A: they die with A's BREAK.
    for i in 0..8u8 {
        h.feed(h.b, Cell::new(id, data(i)));
    }
    h.sent(h.a);
    h.sent(h.b);
    h.feed(
        h.a,
        Cell::new(CircuitId(1), CellMsg::Break(BreakReason::Destroyed)),
    );
    assert_eq!(
        h.sent(h.b),
        vec![Cell::new(id, CellMsg::Break(BreakReason::Destroyed))]
    );
    assert_eq!(h.core.circuit_count(), 0);
}
