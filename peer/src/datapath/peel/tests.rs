//! Inline peels within the per-thread budget, the blocking pool beyond it.

use super::*;
use crate::core::relay::LinkId;
use crate::datapath::{DataPath, DataPathConfig};
use crate::metrics::Metrics;
use anomos_common::cell::{Cell as WireCell, CellMsg, Command, CELL_LEN};
use anomos_common::crypto::CircuitSecret;
use anomos_common::onion::{build, peel as peel_layer, ExitPayload, HopSpec};
use anomos_common::{CircuitId, InfoHash, Nid};

#[test]
fn the_budget_allows_a_window_of_peels_then_refills() {
    let t0 = Instant::now();
    let w = Duration::from_millis(10);
    let mut b = PeelBudget::new(3, w);
    assert!((0..3).all(|_| b.take(t0)));
    assert!(!b.take(t0 + Duration::from_millis(9)));
    assert!(b.take(t0 + w), "a new window");
    assert!(b.take(t0 + w) && b.take(t0 + w));
    assert!(!b.take(t0 + w + Duration::from_millis(1)));
}

fn key(seed: u8) -> X25519Secret {
    X25519Secret::from_bytes([seed; 32]).expect("key")
}

/// A CREATE as it reaches the peer with onion key 1: originator (key 9)
/// → us (next NID 2) → exit (key 3).
fn create_for_us(seed: u8) -> WireCell {
    let hops = [(9, Some(Nid(1))), (1, Some(Nid(2))), (3, None)].map(|(k, next)| HopSpec {
        onion_public: key(k).public(),
        next_nid: next,
    });
    let payload = ExitPayload {
        infohash: InfoHash([seed; 32]),
        circuit_secret: CircuitSecret([5; 32]),
        expiry: unix_now() + 600,
        credit: 0,
    };
    let built = build(&mut rand::rng(), &hops, &payload).expect("build");
    let mut cache = ReplayCache::new(4);
    let peeled = peel_layer(&key(9), &built.code, unix_now(), &mut cache).expect("peel");
    let Peeled::Relay { next_code, .. } = peeled else {
        panic!("origin layer is a relay layer")
    };
    let mut code = Box::new([0u8; onion::CODE_LEN]);
    code.copy_from_slice(next_code.as_bytes());
    WireCell::new(CircuitId(u32::from(seed) * 2 + 1), CellMsg::Create(code))
}

fn feed(dp: &DataPath, link: LinkId, cell: &WireCell) {
    let mut bytes = cell.to_bytes();
    let inner = &dp.inner;
    inner
        .core
        .borrow_mut()
        .handle_cells(Instant::now(), link, &mut bytes);
    inner.pump();
}

fn creates_sent(dp: &DataPath, link: LinkId) -> usize {
    let mut buf = Vec::new();
    dp.inner.core.borrow_mut().take_outbound(link, &mut buf);
    let cmds = buf.chunks_exact(CELL_LEN).map(|c| c[4]);
    cmds.filter(|&c| c == Command::Create as u8).count()
}

/// Within the budget a relay's peel is done before `pump` returns (no
/// task switch: the CREATE is already forwarded); with the budget spent it
/// goes to the blocking pool and completes later.
#[actix_rt::test]
async fn a_create_is_peeled_inline_within_the_budget_and_on_the_pool_beyond() {
    let dp = DataPath::new(
        DataPathConfig::default(),
        Metrics::new().expect("m"),
        key(1),
    );
    let (a, b) = {
        let mut core = dp.inner.core.borrow_mut();
        let a = core.add_link(Instant::now(), Nid(1), false).expect("a");
        (a, core.add_link(Instant::now(), Nid(2), true).expect("b"))
    };
    BUDGET.with(|c| c.set(PeelBudget::new(INLINE_PEELS, BUDGET_WINDOW)));
    feed(&dp, a, &create_for_us(1));
    assert_eq!(dp.inner.core.borrow().pending_peels(), 0, "peeled inline");
    assert_eq!(creates_sent(&dp, b), 1, "forwarded within the same pump");

    // Spend the budget: the next peel goes to the pool.
    BUDGET.with(|c| {
        let mut spent = PeelBudget::new(0, Duration::from_secs(3600));
        spent.take(Instant::now());
        c.set(spent);
    });
    feed(&dp, a, &create_for_us(2));
    assert_eq!(dp.inner.core.borrow().pending_peels(), 1, "on the pool");
    assert_eq!(creates_sent(&dp, b), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dp.inner.core.borrow().pending_peels() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(creates_sent(&dp, b), 1, "forwarded once the pool answered");
    BUDGET.with(|c| c.set(PeelBudget::new(INLINE_PEELS, BUDGET_WINDOW)));
}
