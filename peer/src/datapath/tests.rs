//! The data path over real TCP + TLS on 127.0.0.1, without the tracker:
//! originator → relay 1 → relay 2 → exit in one process. Certificates are
//! accepted without pin checks here (pinning belongs to link set-up).

use super::*;
use anomos_common::crypto::CircuitSecret;
use anomos_common::identity::TlsIdentity;
use anomos_common::onion::{build, ExitPayload, HopSpec};
use openssl::ssl::{Ssl, SslAcceptor, SslConnector, SslMethod, SslVerifyMode};
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

const IH: InfoHash = InfoHash([0x42; 32]);

fn tls_pair_configs() -> (SslAcceptor, SslConnector) {
    let id = TlsIdentity::generate("anomos peer").expect("identity");
    let mut a = SslAcceptor::mozilla_modern_v5(SslMethod::tls()).expect("acceptor");
    a.set_private_key(id.key()).expect("key");
    a.set_certificate(id.cert()).expect("cert");
    a.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    let mut c = SslConnector::builder(SslMethod::tls()).expect("connector");
    c.set_private_key(id.key()).expect("key");
    c.set_certificate(id.cert()).expect("cert");
    c.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    (a.build(), c.build())
}

/// A TLS link between two data paths under `nid`; `a` dials.
async fn link(a: &DataPath, b: &DataPath, nid: u16) -> (LinkHandle, LinkHandle) {
    let (acceptor, connector) = tls_pair_configs();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dial = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let cfg = connector.configure().expect("cfg").verify_hostname(false);
        let ssl = cfg.into_ssl("peer").expect("ssl");
        let mut s = SslStream::new(ssl, crate::link::link_socket(tcp)).expect("stream");
        Pin::new(&mut s).connect().await.expect("tls connect");
        s
    };
    let accept = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        let ssl = Ssl::new(acceptor.context()).expect("ssl");
        let mut s = SslStream::new(ssl, crate::link::link_socket(tcp)).expect("stream");
        Pin::new(&mut s).accept().await.expect("tls accept");
        s
    };
    let (sa, sb) = tokio::join!(dial, accept);
    let peer = PeerId([nid as u8; 32]);
    let ha = a.attach_link(EstablishedLink {
        nid: Nid(nid),
        peer,
        dialer: true,
        stream: sa,
    });
    let hb = b.attach_link(EstablishedLink {
        nid: Nid(nid),
        peer,
        dialer: false,
        stream: sb,
    });
    (ha, hb)
}

struct Net {
    dps: Vec<DataPath>,
    keys: Vec<X25519Secret>,
    /// `handles[i]`: the link handles held by peer `i`.
    handles: Vec<Vec<LinkHandle>>,
    /// `metrics[i]`: peer `i`'s counters.
    metrics: Vec<Metrics>,
}

/// Four data paths with no links yet.
fn unlinked(setup_timeout: Duration) -> Net {
    let cfg = DataPathConfig {
        setup_timeout,
        ..DataPathConfig::default()
    };
    let keys: Vec<X25519Secret> = (0..4)
        .map(|i| X25519Secret::from_bytes([i + 10; 32]).expect("key"))
        .collect();
    let metrics: Vec<Metrics> = (0..4).map(|_| Metrics::new().expect("metrics")).collect();
    let dps: Vec<DataPath> = keys
        .iter()
        .zip(&metrics)
        .map(|(k, m)| DataPath::new(cfg.clone(), m.clone(), k.clone()))
        .collect();
    let handles = (0..4).map(|_| Vec::new()).collect();
    Net {
        dps,
        keys,
        handles,
        metrics,
    }
}

impl Net {
    /// Link peer `i` to peer `i + 1` under NID `i + 1`.
    async fn link_next(&mut self, i: usize) {
        let (a, b) = link(&self.dps[i], &self.dps[i + 1], i as u16 + 1).await;
        self.handles[i].push(a);
        self.handles[i + 1].push(b);
    }
}

/// Originator 0 —NID 1— relay 1 —NID 2— relay 2 —NID 3— exit 3.
async fn chain() -> Net {
    let mut net = unlinked(Duration::from_secs(10));
    for i in 0..3 {
        net.link_next(i).await;
    }
    net
}

fn grant(keys: &[X25519Secret]) -> CircuitGrant {
    let hops: Vec<HopSpec> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| HopSpec {
            onion_public: k.public(),
            next_nid: (i + 1 < keys.len()).then_some(Nid(i as u16 + 1)),
        })
        .collect();
    let secret = CircuitSecret([9; 32]);
    let payload = ExitPayload {
        infohash: IH,
        circuit_secret: secret.clone(),
        expiry: unix_now() + 600,
        credit: 2,
    };
    let built = build(&mut rand::rng(), &hops, &payload).expect("build");
    CircuitGrant {
        infohash: IH,
        code: built.code.as_bytes().to_vec(),
        layer_keys: built.layer_keys,
        circuit_secret: secret,
        expiry: built.expiry,
        id: 7,
    }
}

async fn open(net: &Net) -> (CircuitStream, CircuitStream) {
    let mut served = net.dps[3].serve(IH);
    let origin = net.dps[0].originate(grant(&net.keys));
    let (o, x) = tokio::join!(origin, served.recv());
    (o.expect("originate"), x.expect("exit stream"))
}

/// Write `total` bytes of `pattern` (repeated) and shut down.
async fn send_all(mut w: impl AsyncWriteExt + Unpin, pattern: &[u8], total: usize) {
    let mut sent = 0;
    while sent < total {
        let n = pattern.len().min(total - sent);
        w.write_all(&pattern[..n]).await.expect("write");
        sent += n;
    }
    w.shutdown().await.expect("shutdown");
}

/// Read to the end, comparing with `pattern` repeated; returns the count.
async fn recv_all(mut r: impl AsyncReadExt + Unpin, pattern: &[u8]) -> std::io::Result<usize> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        // Compare slice by slice (memcmp), wrapping around the pattern.
        let mut done = 0;
        while done < n {
            let at = (got + done) % pattern.len();
            let len = (n - done).min(pattern.len() - at);
            assert!(
                buf[done..done + len] == pattern[at..at + len],
                "bytes differ near {}",
                got + done
            );
            done += len;
        }
        got += n;
    }
}

async fn wait_empty(net: &Net) {
    for _ in 0..500 {
        if net
            .dps
            .iter()
            .all(|d| d.circuit_count() == 0 && d.half_count() == 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let counts: Vec<_> = net
        .dps
        .iter()
        .map(|d| (d.circuit_count(), d.half_count()))
        .collect();
    panic!("tables not empty: {counts:?}");
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..1_048_573u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

#[actix_rt::test]
async fn sixty_four_mib_each_way_through_two_relays_over_tls() {
    let net = chain().await;
    let (o, x) = open(&net).await;
    assert_eq!((o.relays, x.relays), (2, 0));
    // The tracker's credit tier reaches the exit, and only the exit.
    assert_eq!((o.credit, x.credit), (0, 2));
    const TOTAL: usize = 64 << 20;
    let (up, down) = (pattern(1), pattern(2));
    let (or, ow) = tokio::io::split(o);
    let (xr, xw) = tokio::io::split(x);
    let start = Instant::now();
    let (_, _, at_exit, at_origin) = tokio::join!(
        send_all(ow, &up, TOTAL),
        send_all(xw, &down, TOTAL),
        recv_all(xr, &up),
        recv_all(or, &down),
    );
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(at_exit.expect("exit read"), TOTAL);
    assert_eq!(at_origin.expect("origin read"), TOTAL);
    println!(
        "64 MiB each way through 2 relays over TLS (4 peers on one thread, {} build): {:.1} s, {:.1} MiB/s per direction",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        secs,
        64.0 / secs
    );
    wait_empty(&net).await;
    let relayed: Vec<u64> = net.dps.iter().map(DataPath::relayed_bytes).collect();
    assert_eq!(relayed[0], 0);
    assert_eq!(relayed[3], 0);
    assert!(
        relayed[1] >= 2 * TOTAL as u64 && relayed[1] == relayed[2],
        "{relayed:?}"
    );
    assert_eq!(net.dps[0].inner.metrics.circuits_built.get(), 1);
}

/// A reader that takes small pieces, and pauses, still gets every byte in
/// order and a clean end: the pump stops taking bodies while the stream's
/// buffer is full and resumes as the reader frees room. Small writes (one
/// record each) go through too.
#[actix_rt::test]
async fn small_slow_reads_and_small_writes_arrive_intact() {
    let net = chain().await;
    let (o, x) = open(&net).await;
    let (mut or, mut ow) = tokio::io::split(o);
    let (xr, xw) = tokio::io::split(x);
    // More than the stream's buffer plus every window on the path.
    const TOTAL: usize = 3 << 20;
    let down = pattern(4);
    let sender = send_all(xw, &down, TOTAL);
    let reader = async {
        let mut buf = [0u8; 1000];
        let mut got = 0usize;
        let mut reads = 0u32;
        loop {
            let n = or.read(&mut buf).await.expect("read");
            if n == 0 {
                return got;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, down[(got + i) % down.len()], "byte {}", got + i);
            }
            got += n;
            reads += 1;
            if reads % 512 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let writer = async {
        for i in 0..300u32 {
            ow.write_all(&i.to_be_bytes()).await.expect("small write");
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        ow.shutdown().await.expect("shutdown");
    };
    let expect: Vec<u8> = (0..300u32).flat_map(u32::to_be_bytes).collect();
    let (_, got, (), at_exit) = tokio::join!(sender, reader, writer, recv_all(xr, &expect));
    assert_eq!(got, TOTAL);
    assert_eq!(at_exit.expect("exit read"), expect.len());
    wait_empty(&net).await;
}

#[actix_rt::test]
async fn killing_a_relay_breaks_both_ends_and_empties_the_tables() {
    let net = chain().await;
    let mut events0 = net.dps[0].events();
    let mut events1 = net.dps[1].events();
    let (o, x) = open(&net).await;
    let (mut or, mut ow) = tokio::io::split(o);
    let (mut xr, _xw) = tokio::io::split(x);
    ow.write_all(&[7u8; 100_000]).await.expect("write");
    let mut buf = vec![0u8; 100_000];
    xr.read_exact(&mut buf)
        .await
        .expect("exit got the first bytes");
    // Relay 2 dies: its links drop.
    for h in &net.handles[2] {
        h.close();
    }
    for h in &net.handles[2] {
        h.closed().await;
    }
    let origin_err = or
        .read(&mut buf)
        .await
        .expect_err("originator stream ends with an error");
    let exit_err = xr
        .read(&mut buf)
        .await
        .expect_err("exit stream ends with an error");
    assert!(origin_err.to_string().contains("link_lost"), "{origin_err}");
    assert!(exit_err.to_string().contains("link_lost"), "{exit_err}");
    wait_empty(&net).await;
    // The originator re-announces, but its own first hop is healthy: no
    // NID to report.
    let failed = events0.recv().await.expect("event");
    assert_eq!(failed, DataPathEvent::CircuitFailed { nids: vec![] });
    let closed = events1.recv().await.expect("event");
    assert!(
        matches!(closed, DataPathEvent::LinkClosed { nid: Nid(2), .. }),
        "{closed:?}"
    );
    assert_eq!(net.dps[0].inner.metrics.circuits_failed.get(), 1);
    assert_eq!(net.dps[1].links().len(), 1);
}

/// The exit is two hops from the relay that dies: it only hears a BREAK.
/// It still reports the broken circuit (so it re-announces at once), while
/// a circuit that ends cleanly reports nothing.
#[actix_rt::test]
async fn an_exit_reports_a_break_from_further_along_but_not_a_clean_end() {
    let net = chain().await;
    let mut exit_events = net.dps[3].events();
    let (o, x) = open(&net).await;
    let (or, ow) = tokio::io::split(o);
    let (xr, xw) = tokio::io::split(x);
    let p = pattern(3);
    let (_, _, got_o, got_x) = tokio::join!(
        send_all(ow, &p, 10_000),
        send_all(xw, &p, 10_000),
        recv_all(or, &p),
        recv_all(xr, &p)
    );
    assert_eq!((got_o.expect("o"), got_x.expect("x")), (10_000, 10_000));
    wait_empty(&net).await;
    assert!(exit_events.try_recv().is_err(), "a clean end was reported");

    let (o, x) = open(&net).await;
    let (_or, mut ow) = tokio::io::split(o);
    let (mut xr, _xw) = tokio::io::split(x);
    ow.write_all(&[1u8; 10_000]).await.expect("write");
    let mut buf = vec![0u8; 10_000];
    xr.read_exact(&mut buf).await.expect("first bytes");
    // Relay 1 dies: the exit keeps both of its own links.
    for h in &net.handles[1] {
        h.close();
    }
    let err = xr.read(&mut buf).await.expect_err("exit stream broken");
    assert!(err.to_string().contains("link_lost"), "{err}");
    let ev = tokio::time::timeout(Duration::from_secs(5), exit_events.recv()).await;
    assert_eq!(
        ev.expect("exit reported nothing"),
        Some(DataPathEvent::CircuitFailed { nids: vec![] })
    );
    assert_eq!(net.dps[3].links().len(), 1, "the exit lost a link");
}

/// The originator ends first (its bytes, then FIN) and the exit answers and
/// ends: both FINs, so the exit's BREAK, arriving with its FIN, is a clean
/// end. Neither end counts a failed circuit or asks for repairs.
#[actix_rt::test]
async fn a_clean_end_is_not_a_failed_circuit() {
    let net = chain().await;
    let mut origin_events = net.dps[0].events();
    let mut exit_events = net.dps[3].events();
    let p = pattern(4);
    for _ in 0..5 {
        let (o, x) = open(&net).await;
        let (or, ow) = tokio::io::split(o);
        let (xr, xw) = tokio::io::split(x);
        send_all(ow, &p, 50_000).await;
        assert_eq!(recv_all(xr, &p).await.expect("exit read"), 50_000);
        send_all(xw, &p, 1000).await;
        assert_eq!(recv_all(or, &p).await.expect("origin read"), 1000);
        wait_empty(&net).await;
    }
    assert_eq!(net.dps[0].inner.metrics.circuits_failed.get(), 0);
    assert!(origin_events.try_recv().is_err(), "the originator reported");
    assert!(exit_events.try_recv().is_err(), "the exit reported");
}

/// The original failure: the originator's tail is still queued at the
/// relays (the exit's application is not reading) when it has sent FIN and
/// read the exit's FIN, so it sends BREAK. The exit must still read every
/// byte and then a clean end.
#[actix_rt::test]
async fn a_clean_close_reaches_a_reader_that_has_not_read_yet() {
    let net = chain().await;
    let (o, x) = open(&net).await;
    let (or, ow) = tokio::io::split(o);
    let (xr, xw) = tokio::io::split(x);
    // About 600 KiB: more than the exit's buffers, less than the path's
    // windows, so the tail waits in relay queues for credit.
    const TOTAL: usize = 600 << 10;
    let up = pattern(3);
    send_all(xw, b"bye", 3).await;
    send_all(ow, &up, TOTAL).await;
    // The originator sees the exit's FIN: it has both FINs and breaks.
    assert_eq!(recv_all(or, b"bye").await.expect("origin read"), 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = recv_all(xr, &up).await.expect("exit read ends cleanly");
    assert_eq!(got, TOTAL);
    wait_empty(&net).await;
}

/// A BREAK before FIN is an error for the reader, after the bytes that did
/// arrive; the writer's side fails too.
#[actix_rt::test]
async fn a_break_before_fin_is_an_error_after_the_data() {
    let net = chain().await;
    let (o, x) = open(&net).await;
    let (_or, mut ow) = tokio::io::split(o);
    let (mut xr, mut xw) = tokio::io::split(x);
    ow.write_all(&[5u8; 100_000]).await.expect("write");
    let mut buf = vec![0u8; 100_000];
    xr.read_exact(&mut buf).await.expect("the data arrives");
    // The originator's peer shuts down: BREAK(destroyed), no FIN.
    net.dps[0].shutdown().await;
    let err = xr.read(&mut buf).await.expect_err("read fails");
    assert!(err.to_string().contains("destroyed"), "{err}");
    let err = xw.write_all(&[1u8; 10]).await.expect_err("write fails");
    assert!(err.to_string().contains("destroyed"), "{err}");
    wait_empty(&net).await;
}

/// The exit drops its stream (FIN) and stops reading: the originator reads
/// a clean end, and its writes fail once the exit breaks the circuit.
#[actix_rt::test]
async fn a_peer_that_stops_reading_fails_our_writes_not_our_reads() {
    let net = chain().await;
    let (o, x) = open(&net).await;
    let (mut or, mut ow) = tokio::io::split(o);
    drop(x);
    let mut buf = [0u8; 16];
    assert_eq!(or.read(&mut buf).await.expect("clean end"), 0);
    let writes = async {
        loop {
            if let Err(e) = ow.write_all(&[9u8; 4096]).await {
                return e;
            }
        }
    };
    let err = tokio::time::timeout(Duration::from_secs(10), writes)
        .await
        .expect("writes fail in time");
    assert!(err.to_string().contains("destroyed"), "{err}");
    wait_empty(&net).await;
}

/// A grant that arrives while the link to its first hop is still being
/// dialled waits for that link and opens; with no link at all it is
/// refused once the wait (half the set-up timeout at most) is over, and
/// counted as a link that never came, not as a silent path.
#[actix_rt::test]
async fn an_originator_waits_for_its_first_hop_link() {
    let mut net = unlinked(Duration::from_secs(10));
    net.link_next(1).await;
    net.link_next(2).await;
    let mut served = net.dps[3].serve(IH);
    let origin = net.dps[0].originate(grant(&net.keys));
    let (a, b) = net.dps.split_at(1);
    let late = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        link(&a[0], &b[0], 1).await
    };
    let (o, _links) = tokio::join!(origin, late);
    let mut o = o.expect("opened once the link came up");
    let mut x = tokio::time::timeout(Duration::from_secs(10), served.recv())
        .await
        .expect("the exit's stream in time")
        .expect("exit");
    o.write_all(b"after the link").await.expect("write");
    o.shutdown().await.expect("fin");
    let mut got = Vec::new();
    x.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"after the link");

    let lonely = unlinked(Duration::from_secs(1));
    let start = std::time::Instant::now();
    let err = lonely.dps[0]
        .originate(grant(&lonely.keys))
        .await
        .expect_err("no first hop");
    assert_eq!(err.kind(), "refused");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    let m = &lonely.metrics[0];
    assert_eq!(m.cells_dropped.with_label_values(&["unknown_nid"]).get(), 1);
    assert_eq!(m.circuits_failed.get(), 1);
}
