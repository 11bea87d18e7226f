//! Eight relay processes and two in-process endpoints on one tracker: the
//! overlay links up as assigned, a stranger's certificate is refused, a
//! circuit through at least two relays carries 64 MiB each way intact,
//! SIGTERM makes a relay announce `stopped` and exit 0, and SIGKILL of a
//! relay on the circuit ends it with an error at both ends, which then
//! re-announce early.

use std::time::{Duration, Instant};

use anomos_common::hello::Hello;
use anomos_common::identity::PeerIdentity;
use anomos_common::InfoHash;
use anomos_peer::datapath::CircuitStream;
use anomos_peer::Peer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::util::{
    metric, peer_config, tracker_announces, tracker_config, tracker_edges, Relay,
    ANNOUNCE_INTERVAL_SECS,
};

const RELAYS: usize = 8;
const H: InfoHash = InfoHash([0x42; 32]);
const PAYLOAD: usize = 64 << 20;

#[actix_rt::test]
async fn relays_link_up_carry_a_circuit_refuse_strangers_and_stop_cleanly() {
    tokio::time::timeout(Duration::from_secs(300), scenario())
        .await
        .expect("scenario timed out");
}

async fn scenario() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker::run(tracker_config(&dir.path().join("tracker")))
        .await
        .unwrap();
    let mut relays = Vec::new();
    for i in 0..RELAYS {
        relays.push(Relay::start(&t, &dir.path().join(format!("relay{i}"))).await);
    }
    let seed = anomos_peer::run_peer(peer_config(&t)).await.unwrap();
    let leech = anomos_peer::run_peer(peer_config(&t)).await.unwrap();

    let degrees = converge(&t, &relays, [&seed, &leech]).await;
    eprintln!("overlay up: degrees {degrees:?}");

    wrong_certificate_is_refused(&seed).await;

    let mut exits = seed.serve(H);
    let mut circuits = leech.want_circuits(H, 1);
    let wait = Duration::from_secs(60);
    let mut a = tokio::time::timeout(wait, circuits.recv())
        .await
        .expect("no circuit")
        .unwrap();
    let mut b = tokio::time::timeout(wait, exits.recv())
        .await
        .expect("no exit")
        .unwrap();
    assert!(a.relays >= 2, "circuit with {} relays", a.relays);
    assert_eq!((a.infohash, b.infohash), (H, H));
    let before: Vec<f64> = relay_bytes(&relays).await;
    let start = Instant::now();
    transfer_both_ways(&mut a, &mut b).await;
    let secs = start.elapsed().as_secs_f64();
    eprintln!("64 MiB each way through {} relays in {secs:.1} s", a.relays);
    let after = relay_bytes(&relays).await;
    let carried = before
        .iter()
        .zip(&after)
        .filter(|(x, y)| *y - *x >= (2 * PAYLOAD) as f64)
        .count();
    assert!(
        carried >= a.relays,
        "{carried} relays carried the circuit, path has {}",
        a.relays
    );
    for p in [&seed, &leech] {
        assert_eq!(p.metrics.relay_bytes.get(), 0, "an endpoint relayed");
    }

    // SIGTERM a relay off the circuit: exit 0 after announcing `stopped`
    // (the session TTL is two minutes, so only `stopped` removes it this
    // fast).
    let off_path = before
        .iter()
        .zip(&after)
        .position(|(x, y)| *y - *x < PAYLOAD as f64)
        .expect("every relay carried the circuit");
    let peers = t.metrics.peers.get();
    let r = relays.swap_remove(off_path);
    assert_eq!(r.terminate().await, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.metrics.peers.get() != peers - 1 {
        assert!(
            Instant::now() < deadline,
            "tracker still lists the stopped relay"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    relay_dies_under_a_circuit(&t, &mut relays, &seed, &leech, a, b).await;

    leech.stop().await;
    seed.stop().await;
    for r in relays {
        assert_eq!(r.terminate().await, 0);
    }
    t.stop().await.unwrap();
}

/// Announces of an in-process peer the tracker took.
fn announced(p: &Peer) -> u64 {
    p.metrics.announces.with_label_values(&["ok"]).get()
}

/// Poll `f` every 20 ms until it holds or `limit` after `start` passes;
/// the time since `start` when it held.
async fn within<F, Fut>(start: Instant, limit: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while start.elapsed() < limit {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Read until the stream ends; whether it ended with an error.
async fn ends_with_error(mut r: impl AsyncReadExt + Unpin) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return false,
            Ok(_) => {}
            Err(_) => return true,
        }
    }
}

/// Keep bytes flowing on the open circuit, SIGKILL a relay on its path
/// (one whose relayed bytes are rising and that links to the exit), then:
/// both ends see the circuit end with an error, and both re-announce within
/// two seconds, well before the announce interval (the originator for the
/// failed circuit, the exit for the lost link).
async fn relay_dies_under_a_circuit(
    t: &tracker::RunningTracker,
    relays: &mut Vec<Relay>,
    seed: &Peer,
    leech: &Peer,
    a: CircuitStream,
    b: CircuitStream,
) {
    let (ar, mut aw) = tokio::io::split(a);
    let (br, _bw) = tokio::io::split(b);
    let writer = actix_rt::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        while aw.write_all(&chunk).await.is_ok() {}
    });
    let b_ended = actix_rt::spawn(tokio::time::timeout(
        Duration::from_secs(20),
        ends_with_error(br),
    ));
    let first = relay_bytes(relays).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = relay_bytes(relays).await;
    let exit_links: Vec<_> = seed.plane().links().into_iter().map(|(_, p)| p).collect();
    let victim = (0..relays.len())
        .find(|&i| second[i] > first[i] && exit_links.contains(&relays[i].peer_id))
        .expect("no relay next to the exit is carrying the circuit");

    // Kill right after the originator's announce, so its next regular one
    // is a whole interval away.
    let leech_n = announced(leech);
    let wait = Duration::from_secs(ANNOUNCE_INTERVAL_SECS + 5);
    let synced = within(Instant::now(), wait, || async {
        announced(leech) > leech_n
    })
    .await;
    assert!(synced.is_some(), "the originator stopped announcing");
    let (leech_n, seed_n) = (announced(leech), announced(seed));
    let tracker_n = tracker_announces(t).await;
    let killed = Instant::now();
    relays.swap_remove(victim).kill().await;

    let early = Duration::from_secs(2);
    let tracker_took = within(killed, early, || async {
        tracker_announces(t).await > tracker_n
    })
    .await;
    let leech_took = within(killed, early, || async { announced(leech) > leech_n }).await;
    let seed_took = within(killed, early, || async { announced(seed) > seed_n }).await;
    eprintln!(
        "after SIGKILL: tracker {tracker_took:?}, originator {leech_took:?}, exit {seed_took:?} \
         (interval {ANNOUNCE_INTERVAL_SECS} s)"
    );
    assert!(tracker_took.is_some(), "the tracker heard nothing");
    assert!(
        leech_took.is_some(),
        "the originator did not re-announce early"
    );
    assert!(seed_took.is_some(), "the exit did not re-announce early");

    let b_err = b_ended.await.unwrap().expect("exit end still open");
    assert!(b_err, "the exit's circuit ended without an error");
    let a_err = tokio::time::timeout(Duration::from_secs(10), ends_with_error(ar))
        .await
        .expect("originator end still open");
    assert!(a_err, "the originator's circuit ended without an error");
    tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("writes still accepted on a dead circuit")
        .unwrap();
    eprintln!("circuit ends closed {:?} after SIGKILL", killed.elapsed());
}

/// Wait until every peer holds as many links as the tracker assigned:
/// degrees 4–6, and the links counted at the peers are the tracker's edges
/// seen from both ends. Returns the degrees.
async fn converge(t: &tracker::RunningTracker, relays: &[Relay], local: [&Peer; 2]) -> Vec<i64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut stable = 0;
    loop {
        let mut degrees = Vec::new();
        for r in relays {
            degrees.push(metric(r.metrics, "anomos_neighbors_connected").await as i64);
        }
        for p in local {
            degrees.push(p.metrics.neighbors_connected.get());
        }
        let edges = tracker_edges(t).await as i64;
        let sum: i64 = degrees.iter().sum();
        let ok = degrees.iter().all(|d| (4..=6).contains(d)) && sum == 2 * edges;
        stable = if ok { stable + 1 } else { 0 };
        if stable >= 3 {
            return degrees;
        }
        assert!(
            Instant::now() < deadline,
            "overlay did not link up: degrees {degrees:?}, tracker edges {edges}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A stranger dials `p` with its own certificate and a NID `p` holds a
/// link for: refused, counted as `bad_pin`, and the good link stays.
async fn wrong_certificate_is_refused(p: &Peer) {
    // A neighbour whose link is up (the table may already list one the
    // tracker assigned since the overlay converged, still being dialled).
    let held_nid = |p: &Peer, nid| p.plane().links().iter().any(|(n, _)| *n == nid);
    let n = p
        .neighbours()
        .into_iter()
        .find(|n| held_nid(p, n.nid))
        .expect("a neighbour with a link up");
    let held = |p: &Peer| held_nid(p, n.nid);
    let rogue = PeerIdentity::generate().unwrap();
    let connector = anomos_peer::net::tls::link_connector(&rogue).unwrap();
    let ssl = connector
        .configure()
        .unwrap()
        .verify_hostname(false)
        .into_ssl("x")
        .unwrap();
    let mut s = SslStream::new(ssl, TcpStream::connect(p.listen_addr).await.unwrap()).unwrap();
    std::pin::Pin::new(&mut s).connect().await.unwrap();
    // Claim to be the genuine neighbour: the certificate gives it away.
    s.write_all(&Hello::new(anomos_common::PeerId(n.pin.0), n.nid).encode())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(
        matches!(got, Ok(Ok(0)) | Ok(Err(_))),
        "stranger got an answer: {got:?}"
    );
    let bad_pin = p
        .metrics
        .protocol_violations
        .with_label_values(&["bad_pin"])
        .get();
    assert_eq!(bad_pin, 1);
    assert!(held(p), "the good link was replaced");
}

async fn relay_bytes(relays: &[Relay]) -> Vec<f64> {
    let mut v = Vec::new();
    for r in relays {
        v.push(metric(r.metrics, "anomos_relay_bytes_total").await);
    }
    v
}

/// Byte `i` of the test payload in direction `dir`.
fn pattern(dir: u8, i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 29) as u8 ^ dir
}

async fn send(mut w: impl AsyncWriteExt + Unpin, dir: u8) {
    let mut chunk = vec![0u8; 256 * 1024];
    let mut off = 0;
    while off < PAYLOAD {
        for (k, b) in chunk.iter_mut().enumerate() {
            *b = pattern(dir, off + k);
        }
        w.write_all(&chunk).await.unwrap();
        off += chunk.len();
    }
    w.flush().await.unwrap();
}

async fn receive(mut r: impl AsyncReadExt + Unpin, dir: u8) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut off = 0;
    while off < PAYLOAD {
        let n = r.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended at {off}");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(dir, off + k), "corrupt byte at {}", off + k);
        }
        off += n;
    }
}

async fn transfer_both_ways(a: &mut CircuitStream, b: &mut CircuitStream) {
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    tokio::join!(send(aw, 1), receive(br, 1), send(bw, 2), receive(ar, 2));
}
