//! Memory under pressure at a relay carrying many circuits. One real
//! `anomos relay` process is the only path (the tracker plans exactly one
//! relay and there are three peers), and an originator and an exit in the
//! test process open [`CIRCUITS`] circuits through it. The originator
//! writes into every circuit while the exit reads none of them, so every
//! circuit's downstream stalls and data piles up against the credit
//! windows. The relay's resident memory and its queued cells must stay
//! under a bound derived from the window; when the exit starts reading,
//! every circuit drains intact, the relay's queues empty and its memory
//! does not grow further.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anomos_common::cell::CELL_LEN;
use anomos_common::{InfoHash, Pin};
use anomos_peer::config::PeerConfig;
use anomos_peer::datapath::CircuitStream;
use anomos_peer::Peer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::faults::{rss_kib, within};
use crate::lab::{Lab, LabConfig};

/// Circuits through the one relay.
const CIRCUITS: usize = 200;
/// The credit window W (cells per circuit and direction; `CoreConfig`).
const WINDOW: u64 = 256;
const H: InfoHash = InfoHash([0x6d; 32]);
/// Length of the repeating test pattern (a prime, so circuits' offsets
/// never line up with write sizes).
const BLOCK: usize = 65_521;
/// Bytes per write.
const CHUNK: usize = 16 * 1024;

#[actix_rt::test]
async fn a_relay_with_many_stalled_circuits_stays_bounded_and_drains() {
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("scenario timed out");
}

async fn scenario() {
    let started = Instant::now();
    let rate = "rate_per_peer = 1000.0\nburst_per_peer = 1000.0\n";
    let (lab, exit, origin) = one_relay_path(5, rate).await;
    let relay = &lab.relays[0];
    let rest = rss_kib(relay.pid());

    // Open the circuits one request at a time (the tracker plans at most
    // one circuit per source per announce, and there is one source).
    let mut served = exit.serve(H);
    let (mut ends, mut exits) = (Vec::new(), Vec::new());
    let opening = Instant::now();
    for i in 0..CIRCUITS {
        let wait = Duration::from_secs(10);
        let mut rx = origin.want_circuits(H, 1);
        let a = tokio::time::timeout(wait, rx.recv()).await;
        let a = a
            .unwrap_or_else(|_| panic!("circuit {i} did not open"))
            .unwrap();
        assert_eq!(a.relays, 1, "a path that avoids the relay");
        let b = tokio::time::timeout(wait, served.recv()).await;
        exits.push(b.expect("no exit end").unwrap());
        ends.push(a);
    }
    let opened = opening.elapsed();
    assert_eq!(
        relay.metric("anomos_circuits_active").await,
        CIRCUITS as f64
    );
    let idle = rss_kib(relay.pid());

    // Push data into every circuit until flow control stops each writer.
    let stop = Rc::new(Cell::new(false));
    let mut writers = Vec::new();
    for (k, a) in ends.into_iter().enumerate() {
        let written = Rc::new(Cell::new(0u64));
        let task = actix_rt::spawn(write_until_stopped(a, k, written.clone(), stop.clone()));
        writers.push((written, task));
    }
    // Stalled: no writer has moved for 600 ms while the relay's queues
    // hold at least half a window per circuit (CREDIT goes back upstream
    // in half windows, so a full stall leaves W/2..W cells per circuit).
    let full = (CIRCUITS as u64 * WINDOW / 2) as f64;
    let total = |w: &[(Rc<Cell<u64>>, _)]| w.iter().map(|(n, _)| n.get()).sum::<u64>();
    let mut last = (0, Instant::now());
    let queued = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total(&writers);
        if now != last.0 {
            last = (now, Instant::now());
            continue;
        }
        let queued = relay.metric("anomos_relay_queued_cells").await;
        let quiet = last.1.elapsed() >= Duration::from_millis(600);
        if (quiet && queued >= full) || started.elapsed() > Duration::from_secs(60) {
            break queued;
        }
    };
    let stalled_bytes = last.0;
    let fewest = writers.iter().map(|(n, _)| n.get()).min().unwrap_or(0);
    let peak = rss_kib(relay.pid());
    let endpoints_rss = rss_kib(std::process::id());

    // Bound. While a circuit's next hop gives no credit, the relay queues
    // at most W cells of it (the originator has no credit beyond that; the
    // gauge checks this below). The queue's buffer compacts only once half
    // of it was taken (`CellQueue`), so it may hold up to twice what is
    // queued, and its Vec keeps the capacity it grew to; the outbound
    // buffer towards the exit holds only cells the exit gave credit for.
    // Measured, that is 1.5–2.5 × the queued bytes, so: memory at rest +
    // CIRCUITS × 3 × W × CELL_LEN + 16 MiB for the allocator and the
    // circuit table = 17 + 200 × 0.75 + 16 ≈ 183 MiB. Measured (debug, 2
    // shared cores, 200 circuits): at rest 17 MiB, with the idle circuits
    // 17.4 MiB; stalled 56–61 MiB with ~29,000 cells (28 MiB) queued in
    // most runs, 141 MiB with 51,172 (a full window per circuit) in one.
    // Without flow control the writers would never stall and the relay
    // would take all they write (tens of MB/s) until the deadline.
    let per_circuit = 3 * WINDOW * CELL_LEN as u64 / 1024;
    let bound = rest + CIRCUITS as u64 * per_circuit + 16 * 1024;
    eprintln!(
        "{CIRCUITS} circuits opened in {:.1} s; stalled with {:.1} MiB written \
         (fewest per circuit {} KiB), relay queues {queued} cells, exit {}; relay RSS MiB: \
         rest {:.1}, idle circuits {:.1}, stalled {:.1} (bound {:.1}); endpoints' \
         process {:.1}",
        opened.as_secs_f64(),
        stalled_bytes as f64 / 1048576.0,
        fewest / 1024,
        exit.metrics.queued_cells.get(),
        rest as f64 / 1024.0,
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        bound as f64 / 1024.0,
        endpoints_rss as f64 / 1024.0,
    );
    assert!(peak <= bound, "relay uses {peak} KiB, bound {bound} KiB");
    assert!(
        queued <= (CIRCUITS as u64 * WINDOW) as f64,
        "relay queues {queued} cells, over one window per circuit"
    );
    // The stall really reached the relay: its queues hold at least half a
    // window per circuit, and every writer pushed past what its own pipe
    // and the exit's window can hold.
    assert!(
        queued >= full,
        "relay queues only {queued} cells: the stall did not reach it"
    );
    assert!(
        fewest >= 2 * WINDOW * 1000,
        "a writer stopped at {fewest} B"
    );
    // The stalled end holds at most one window per circuit in its queues
    // (it stops giving credit), the originator none (nothing comes back).
    let at_exit = exit.metrics.queued_cells.get() as u64;
    assert!(
        at_exit <= CIRCUITS as u64 * WINDOW,
        "exit queues {at_exit} cells"
    );
    assert_eq!(origin.metrics.queued_cells.get(), 0);
    // The endpoints' memory: per circuit two 256 KiB pipes at each end
    // and a window queued at the exit (with the queue's slack, as above),
    // over the process at rest: 128 MiB + CIRCUITS × (4 × 256 KiB + 3 W ×
    // CELL_LEN). This is the test process, which also holds any other test
    // of the binary running at the same time: measured 236–240 MiB alone,
    // 313 MiB in the whole suite.
    let endpoints_bound = 128 * 1024 + CIRCUITS as u64 * (1024 + per_circuit);
    assert!(
        endpoints_rss <= endpoints_bound,
        "endpoints use {endpoints_rss} KiB, bound {endpoints_bound} KiB"
    );

    // End the stall: the exit reads everything, the writers finish.
    stop.set(true);
    let mut readers = Vec::new();
    for b in exits {
        readers.push(actix_rt::spawn(read_all(b)));
    }
    let mut sent = vec![0u64; CIRCUITS];
    for (k, (n, task)) in writers.into_iter().enumerate() {
        task.await.unwrap();
        sent[k] = n.get();
    }
    let mut got = vec![None; CIRCUITS];
    for r in readers {
        let (k, n) = r.await.unwrap();
        assert!(got[k].is_none(), "circuit {k} arrived twice");
        got[k] = Some(n);
    }
    for k in 0..CIRCUITS {
        assert_eq!(got[k], Some(sent[k]), "circuit {k} lost data");
    }
    let drained = within(Duration::from_secs(10), || async {
        relay.metric("anomos_relay_queued_cells").await == 0.0
            && relay.metric("anomos_circuits_active").await == 0.0
    })
    .await;
    assert!(
        drained.is_some(),
        "the relay still queues or holds circuits"
    );
    let after = rss_kib(relay.pid());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = rss_kib(relay.pid());
    eprintln!(
        "drained {:.1} MiB in all; relay RSS after {:.1} MiB, 0.5 s later {:.1} MiB; \
         whole test {:.1} s",
        sent.iter().sum::<u64>() as f64 / 1048576.0,
        after as f64 / 1024.0,
        later as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
    // Draining moved every queued cell through the links' outbound
    // buffers, which keep their capacity, and freed pages may stay with
    // the allocator: RSS need not drop below the stall's. But it stays
    // under the bound and, with the circuits gone, does not grow.
    assert!(
        after <= bound,
        "relay uses {after} KiB after, bound {bound} KiB"
    );
    assert!(
        later <= after + 1024,
        "relay grew from {after} to {later} KiB with nothing to do"
    );
    origin.stop().await;
    exit.stop().await;
}

/// A lab whose tracker (announce interval `interval_secs`) plans every
/// circuit through exactly one relay (more settings in `tracker_toml`),
/// one `anomos relay` process, and two in-process peers (the exit, then
/// the originator), all linked up: the relay process is the only path
/// between them.
pub async fn one_relay_path(interval_secs: u64, tracker_toml: &str) -> (Lab, Peer, Peer) {
    let config = LabConfig {
        interval_secs,
        tracker_toml: format!("min_relays = 1\nmax_relays = 1\n{tracker_toml}"),
        ..LabConfig::default()
    };
    let lab = Lab::start_with(1, config).await;
    let exit = endpoint(&lab).await;
    let origin = endpoint(&lab).await;
    let relay = &lab.relays[0];
    let linked = within(Duration::from_secs(30), || async {
        relay.metric("anomos_neighbors_connected").await == 2.0
            && [&exit, &origin]
                .iter()
                .all(|p| p.metrics.neighbors_connected.get() == 2)
    })
    .await;
    assert!(linked.is_some(), "the three peers did not link up");
    (lab, exit, origin)
}

/// An in-process peer of the lab (the lab's peer settings, an ephemeral
/// identity, a short announce gap).
pub async fn endpoint(lab: &Lab) -> Peer {
    let toml = std::fs::read_to_string(lab.dir.path().join("peer.toml")).unwrap();
    let mut cfg: PeerConfig = toml::from_str(&toml).unwrap();
    cfg.tracker = lab.url.clone();
    cfg.tracker_pin = Some(Pin::from_hex(&lab.pin).unwrap());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.metrics = None;
    cfg.ephemeral = true;
    cfg.min_announce_gap_ms = 10;
    anomos_peer::run_peer(cfg).await.unwrap()
}

/// The pattern every circuit carries, from its own offset: `BLOCK`
/// bytes, twice, so any run up to `BLOCK` long from an offset below
/// `BLOCK` is one slice.
fn block() -> &'static [u8] {
    static B: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    B.get_or_init(|| {
        (0..2 * BLOCK as u64)
            .map(|i| ((i % BLOCK as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8)
            .collect()
    })
}

/// Where circuit `k`'s byte `off` sits in [`block`].
fn at(k: usize, off: u64) -> usize {
    ((off + k as u64 * 7919) % BLOCK as u64) as usize
}

/// Circuit `k`'s index (4 bytes), then its pattern, until `stop` is set and
/// the last write went through; then FIN. `written` counts pattern bytes.
async fn write_until_stopped(
    mut a: CircuitStream,
    k: usize,
    written: Rc<Cell<u64>>,
    stop: Rc<Cell<bool>>,
) {
    a.write_all(&(k as u32).to_be_bytes()).await.unwrap();
    while !stop.get() {
        let off = written.get();
        let i = at(k, off);
        a.write_all(&block()[i..i + CHUNK]).await.unwrap();
        written.set(off + CHUNK as u64);
    }
    a.shutdown().await.unwrap();
}

/// Read one circuit to its end, checking every byte; its index and length.
async fn read_all(mut b: CircuitStream) -> (usize, u64) {
    let mut idx = [0u8; 4];
    b.read_exact(&mut idx).await.unwrap();
    let k = u32::from_be_bytes(idx) as usize;
    assert!(k < CIRCUITS, "bad circuit index {k}");
    // At most `BLOCK` bytes a read, so the check is one slice of `block`.
    let mut buf = vec![0u8; 32 * 1024];
    let mut off = 0u64;
    loop {
        let n = b.read(&mut buf).await.unwrap();
        if n == 0 {
            return (k, off);
        }
        let i = at(k, off);
        assert!(
            buf[..n] == block()[i..i + n],
            "circuit {k} corrupt near {off}"
        );
        off += n as u64;
    }
}
