//! Hostile bytes at running peers, over real sockets, while a download runs
//! through the lab: garbage on a link port, a TLS client with the wrong
//! certificate, and on links the tracker really assigned (see
//! `attacker.rs`): cells for unknown circuits, tampered, replayed and
//! expired tracking codes, DATA past the credit window, CREDIT past it, a
//! flood of CREATEs, a malformed cell, and a neighbour that keeps breaking
//! the rules until it is cut off and reported. Every peer stays up, each
//! case is counted where it landed, and the download's circuits never
//! notice.

use std::collections::HashMap;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use anomos_common::api::{CircuitGrant, PeerEvent, Role, TorrentAnnounce, TorrentEvent};
use anomos_common::cell::{Cell, CellMsg, CELL_BODY_LEN, CELL_LEN, CREATE_CODE_LEN};
use anomos_common::hello::Hello;
use anomos_common::identity::PeerIdentity;
use anomos_common::{CircuitId, Nid, PeerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::download::{GET_LIMIT, MIB};
use crate::faults::attacker::{Attacker, RawLink};
use crate::faults::{announces_ok, peer_sample, within};
use crate::lab::{random_file, same_file, Lab, LabConfig, Proc};

const WAIT: Duration = Duration::from_secs(10);
/// Tracking codes of this lab live this long (so one can expire in a test).
const CODE_LIFETIME: u64 = 6;

fn violations(kind: &str) -> String {
    format!("anomos_protocol_violations_total{{kind=\"{kind}\"}}")
}

fn dropped(reason: &str) -> String {
    format!("anomos_cells_dropped_total{{reason=\"{reason}\"}}")
}

/// How much a sample of `p` grew from `before`, once it grew by `by` or
/// `limit` passed.
async fn grew(p: &Proc, sample: &str, before: f64, by: f64, limit: Duration) -> f64 {
    let end = Instant::now() + limit;
    loop {
        let now = peer_sample(p, sample).await;
        if now >= before + by || Instant::now() > end {
            return now - before;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bumps(p: &Proc, sample: &str, before: f64, by: f64) -> f64 {
    grew(p, sample, before, by, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_neighbours_are_counted_cut_off_and_reported() {
    let config = LabConfig {
        tracker_toml: format!(
            "code_lifetime_secs = {CODE_LIFETIME}\nrate_per_peer = 50.0\nburst_per_peer = 50.0\n"
        ),
        ..LabConfig::default()
    };
    let lab = Lab::start_with(5, config).await;
    // Long enough to run through the attacks, on one circuit, so a circuit
    // lost to them would show as a second one opened.
    let size = 256 * MIB;
    let src = lab.dir.path().join("share/big.bin");
    random_file(&src, size, 61);
    let torrent = lab.make_torrent(&src, "big").await;
    let infohash = anomos_peer::app::read_torrent(&torrent)
        .unwrap()
        .info_hash();
    let seed = lab.seed(&torrent, &src, "seed").await;
    let out = lab.dir.path().join("got");
    let mut cmd = lab.get(&torrent, &out, "getter");
    cmd.args(["--circuits", "1", "--seed-after"]);
    let mut get = Proc::spawn(cmd, "get").await;
    // The claim is about a circuit that carries data while the attacks run,
    // so they start once the download is flowing.
    let flowing = within(Duration::from_secs(60), || async {
        get.metric("anomos_downloaded_bytes_total").await > 0.0
    })
    .await;
    let flowing = flowing.expect("the download did not start within 60 s");

    // Every lab process by identity.
    let mut procs: HashMap<PeerId, (&Proc, String)> = HashMap::new();
    for (i, r) in lab.relays.iter().enumerate() {
        procs.insert(lab.peer_id(&format!("relay{i}")), (r, format!("relay{i}")));
    }
    procs.insert(lab.peer_id("seed"), (&seed, "seed".into()));

    let me = Attacker::start(&lab).await;
    let first = me.announce(PeerEvent::Started, Vec::new(), &[], &[]).await;
    let neighbours = first.neighbours.clone();
    let mut links: HashMap<Nid, RawLink> = HashMap::new();
    for n in neighbours.iter().filter(|n| n.dial) {
        if procs.contains_key(&PeerId(n.pin.0)) {
            links.insert(n.nid, me.dial(n).await);
        }
    }
    assert!(
        links.len() >= 2,
        "need two links to lab peers, got {}",
        links.len()
    );
    let held: Vec<Nid> = links.keys().copied().collect();
    let peer_of = |nid: Nid| {
        let n = neighbours.iter().find(|n| n.nid == nid).unwrap();
        procs[&PeerId(n.pin.0)].clone()
    };

    // Grants through links we hold.
    let want = TorrentAnnounce {
        infohash,
        role: Role::Leeching,
        event: TorrentEvent::None,
        uploaded: 0,
        downloaded: 0,
        left: size as u64,
        circuits_wanted: 4,
    };
    let mut grants: Vec<(CircuitGrant, Nid, Box<[u8; CREATE_CODE_LEN]>)> = Vec::new();
    for _ in 0..20 {
        let r = me
            .announce(PeerEvent::Heartbeat, vec![want.clone()], &held, &neighbours)
            .await;
        for g in r.circuits {
            let (nid, code) = me.first_hop(&g);
            if links.contains_key(&nid) {
                grants.push((g, nid, code));
            }
        }
        if grants.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(grants.len() >= 5, "only {} usable grants", grants.len());
    let granted_at = Instant::now();
    let got_before = get.metric("anomos_downloaded_bytes_total").await;
    let mut carried = Vec::new();
    for r in &lab.relays {
        carried.push(r.metric("anomos_relay_bytes_total").await);
    }
    let attack_start = Instant::now();
    let mut report = Vec::new();

    // 1. Garbage on a link port, and a stranger's certificate.
    let (victim, vname) = peer_of(grants[0].1);
    let before = peer_sample(victim, &violations("bad_tls")).await;
    let mut tcp = TcpStream::connect(victim.listen.unwrap()).await.unwrap();
    let noise: Vec<u8> = (0..4096).map(|_| rand::random::<u8>()).collect();
    tcp.write_all(&noise).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut sink)).await;
    let n = bumps(victim, &violations("bad_tls"), before, 1.0).await;
    report.push(format!("random bytes → {vname} bad_tls +{n}"));
    assert!(n >= 1.0, "random bytes not counted");
    let before = peer_sample(victim, &violations("bad_pin")).await;
    stranger(victim.listen.unwrap(), me.id.peer_id(), grants[0].1).await;
    let n = bumps(victim, &violations("bad_pin"), before, 1.0).await;
    report.push(format!("wrong certificate → {vname} bad_pin +{n}"));
    assert!(n >= 1.0, "a stranger's certificate not counted");

    // 2. Cells for circuits that do not exist.
    let nid = grants[0].1;
    let (p, name) = peer_of(nid);
    let link = links.get_mut(&nid).unwrap();
    let before = peer_sample(p, &dropped("unknown_circuit")).await;
    let ghost = CircuitId(90_001);
    link.send(&[
        Cell::new(ghost, CellMsg::Data(Box::new([0; CELL_BODY_LEN]))),
        Cell::new(ghost, CellMsg::Credit(NonZeroU16::new(5).unwrap())),
        Cell::new(ghost, CellMsg::BreakAck),
    ])
    .await
    .unwrap();
    let n = bumps(p, &dropped("unknown_circuit"), before, 3.0).await;
    report.push(format!(
        "3 cells on an unknown circuit → {name} unknown_circuit +{n}"
    ));
    assert!(n >= 3.0);

    // 3. A tampered code: refused at the next hop, the link stays.
    let (_, nid, code) = &grants[0];
    let (p, name) = peer_of(*nid);
    let link = links.get_mut(nid).unwrap();
    let mut bad = code.clone();
    bad[200] ^= 0x40;
    let before = peer_sample(p, &violations("bad_mac")).await;
    let id = link.fresh_id();
    link.send(&[Cell::new(id, CellMsg::Create(bad))])
        .await
        .unwrap();
    let answer = link.on(id, WAIT).await.map(|c| c.msg);
    assert_eq!(
        answer,
        Some(CellMsg::Break(anomos_common::cell::BreakReason::Refused))
    );
    let n = bumps(p, &violations("bad_mac"), before, 1.0).await;
    report.push(format!(
        "tampered code → {name} BREAK(refused), bad_mac +{n}"
    ));
    assert!(n >= 1.0);

    // 4. A replayed code: the first copy opens, the second is refused.
    let (_, nid, code) = &grants[1];
    let (p, name) = peer_of(*nid);
    let link = links.get_mut(nid).unwrap();
    let before = peer_sample(p, &violations("replayed")).await;
    let (a, b) = (link.fresh_id(), link.fresh_id());
    link.send(&[Cell::new(a, CellMsg::Create(code.clone()))])
        .await
        .unwrap();
    assert_eq!(
        link.on(a, WAIT).await.map(|c| c.msg),
        Some(CellMsg::Confirm)
    );
    link.send(&[Cell::new(b, CellMsg::Create(code.clone()))])
        .await
        .unwrap();
    assert!(matches!(
        link.on(b, WAIT).await.map(|c| c.msg),
        Some(CellMsg::Break(_))
    ));
    let n = bumps(p, &violations("replayed"), before, 1.0).await;
    report.push(format!("replayed code → {name} replayed +{n}"));
    assert!(n >= 1.0);

    // 5. CREDIT past the window. Right after the grants, while their codes
    // are fresh (this lab's codes live CODE_LIFETIME seconds); the first of
    // the two spare grants whose circuit opens.
    let mut opened = None;
    for (_, nid, code) in &grants[2..4] {
        let link = links.get_mut(nid).unwrap();
        let id = link.fresh_id();
        link.send(&[Cell::new(id, CellMsg::Create(code.clone()))])
            .await
            .unwrap();
        if link.on(id, WAIT).await.map(|c| c.msg) == Some(CellMsg::Confirm) {
            opened = Some((*nid, id));
            break;
        }
    }
    let (nid, id) = opened.expect("neither spare grant opened a circuit");
    let (p, name) = peer_of(nid);
    let link = links.get_mut(&nid).unwrap();
    let before = peer_sample(p, &violations("credit")).await;
    link.send(&[Cell::new(id, CellMsg::Credit(NonZeroU16::MAX))])
        .await
        .unwrap();
    let n = bumps(p, &violations("credit"), before, 1.0).await;
    report.push(format!("CREDIT 65535 → {name} credit +{n}"));
    assert!(n >= 1.0);

    // 6. DATA past the window. A second hostile peer serves a torrent of
    // its own and, as the exit, confirms circuits but never reads or
    // returns credit: once every hop's window is full, the first hop sees
    // DATA it never gave credit for.
    let (n, name) = data_past_window(&lab, &me, &procs, &mut links, &neighbours).await;
    report.push(format!(
        "4096 DATA into a stalled circuit → {name} credit +{n}"
    ));
    assert!(n >= 1.0, "DATA past the window not counted");

    // 7. A flood of CREATEs with junk codes: bounded peel work, all
    // answered or counted, the peer stays up.
    let nid = grants[0].1;
    let (p, name) = peer_of(nid);
    let link = links.get_mut(&nid).unwrap();
    let before = counted_cells(p).await;
    let flood: Vec<Cell> = (0..3000)
        .map(|_| {
            let id = link.fresh_id();
            let mut junk = Box::new([0u8; CREATE_CODE_LEN]);
            junk.iter_mut().for_each(|b| *b = rand::random());
            Cell::new(id, CellMsg::Create(junk))
        })
        .collect();
    let t = Instant::now();
    link.send(&flood).await.unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    let counted = loop {
        let c = counted_cells(p).await - before;
        if c >= 3000.0 || Instant::now() > end {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let backlog = peer_sample(p, &dropped("peel_backlog")).await;
    report.push(format!(
        "3000 junk CREATEs → {name} counted {counted} in {:?} ({backlog} over the peel backlog)",
        t.elapsed()
    ));
    assert!(counted >= 3000.0, "only {counted} of 3000 CREATEs counted");

    // 8. An expired code.
    let (_, nid, code) = &grants[4];
    let (p, name) = peer_of(*nid);
    let link = links.get_mut(nid).unwrap();
    let expiry = granted_at + Duration::from_secs(CODE_LIFETIME + 2);
    tokio::time::sleep_until(expiry.into()).await;
    let before = peer_sample(p, &violations("expired")).await;
    let id = link.fresh_id();
    link.send(&[Cell::new(id, CellMsg::Create(code.clone()))])
        .await
        .unwrap();
    assert!(matches!(
        link.on(id, WAIT).await.map(|c| c.msg),
        Some(CellMsg::Break(_))
    ));
    let n = bumps(p, &violations("expired"), before, 1.0).await;
    report.push(format!("expired code → {name} expired +{n}"));
    assert!(n >= 1.0);

    // 9. A malformed cell: the link is closed at once. On a link still
    // open, preferably one our grants planned circuits over: the tracker
    // may hand a link with no circuits to the peer that joined in step 6,
    // and its end then closes it.
    let mut other = None;
    let planned = grants.iter().map(|g| g.1);
    let candidates: Vec<Nid> = planned.chain(held.iter().copied()).collect();
    for nid in candidates.iter().filter(|n| **n != grants[0].1) {
        let link = links.get_mut(nid).unwrap();
        if !link.closed_within(Duration::from_millis(5)).await {
            other = Some(*nid);
            break;
        }
    }
    let other = other.expect("every other link of ours was closed");
    let (q, qname) = peer_of(other);
    let before = peer_sample(q, &violations("malformed_cell")).await;
    let mut cell = [0u8; CELL_LEN];
    cell[4] = 0xee; // no such command
    let link = links.get_mut(&other).unwrap();
    link.send_raw(&cell).await.unwrap();
    assert!(link.closed_within(WAIT).await, "link stayed open");
    let n = bumps(q, &violations("malformed_cell"), before, 1.0).await;
    report.push(format!(
        "malformed cell → {qname} closed the link, malformed_cell +{n}"
    ));
    assert!(n >= 1.0);

    // 10. A neighbour that keeps breaking the rules (CREATE on ids of the
    // wrong side) is cut off and reported to the tracker at once.
    let nid = grants[0].1;
    let (p, name) = peer_of(nid);
    let link = links.get_mut(&nid).unwrap();
    let (before, told) = (
        peer_sample(p, &violations("circuit_id_side")).await,
        announces_ok(p).await,
    );
    let wrong: Vec<Cell> = (0..16u32)
        .map(|i| {
            Cell::new(
                CircuitId(2 * i + 2),
                CellMsg::Create(Box::new([1; CREATE_CODE_LEN])),
            )
        })
        .collect();
    link.send(&wrong).await.unwrap();
    assert!(
        link.closed_within(WAIT).await,
        "a misbehaving neighbour kept its link"
    );
    // 16 violations close a link; up to two credit violations above may
    // have been charged to this one already.
    let n = bumps(p, &violations("circuit_id_side"), before, 14.0).await;
    let reported = within(Duration::from_secs(3), || async {
        announces_ok(p).await > told
    })
    .await;
    // The first announce after the cut may be one that was already on its
    // way (the report then follows within the minimum announce gap), so
    // ask the tracker until it drops the edge.
    let mut gone = false;
    let asked = Instant::now();
    while !gone && asked.elapsed() < Duration::from_secs(5) {
        let r = me
            .announce(PeerEvent::Heartbeat, Vec::new(), &[], &neighbours)
            .await;
        gone = !r.neighbours.iter().any(|x| x.nid == nid) || r.dropped_nids.contains(&nid);
        if !gone {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    report.push(format!(
        "16 CREATEs on wrong-side ids → {name} circuit_id_side +{n}, link closed, \
         re-announced {reported:?}, tracker dropped the edge: {gone} (after {:?})",
        asked.elapsed()
    ));
    assert!(n >= 14.0, "only {n} wrong-side CREATEs counted");
    assert!(reported.is_some(), "{name} did not report the neighbour");
    assert!(gone, "the tracker still lists the edge");
    let attack_time = attack_start.elapsed();

    // Everyone is up, and the download's circuits never noticed.
    for (p, name) in procs.values() {
        let up = crate::faults::metric_if_up(p, "anomos_neighbors_connected").await;
        assert!(up.is_some(), "{name} is down");
    }
    let got_after = get.metric("anomos_downloaded_bytes_total").await;
    let mut on_path = Vec::new();
    for (i, r) in lab.relays.iter().enumerate() {
        if r.metric("anomos_relay_bytes_total").await > carried[i] {
            on_path.push(format!("relay{i}"));
        }
    }
    let summary = get.line_with("downloaded ", GET_LIMIT).await;
    assert!(same_file(&src, &out.join("big.bin")), "content differs");
    for line in &report {
        eprintln!("  {line}");
    }
    eprintln!("first verified bytes {flowing:?} after the download started");
    eprintln!(
        "download during the {attack_time:?} of attacks: {:.1} MiB verified ({:.1} MiB/s), \
         relayed by {on_path:?}; {}",
        (got_after - got_before) / MIB as f64,
        (got_after - got_before) / MIB as f64 / attack_time.as_secs_f64(),
        summary.trim()
    );
    assert!(
        got_after > got_before,
        "the download made no progress under attack"
    );
    let opened = crate::faults::number_after(&summary, "circuits opened");
    assert_eq!(opened, 1, "the download lost its circuit");
    let status = get.stop(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}

/// See step 6: an exit that stalls, a circuit to it, a blast of DATA.
/// Returns the growth of the first hop's `credit` violations and its name.
async fn data_past_window(
    lab: &Lab,
    me: &Attacker,
    procs: &HashMap<PeerId, (&Proc, String)>,
    links: &mut HashMap<Nid, RawLink>,
    neighbours: &[anomos_common::api::Neighbour],
) -> (f64, String) {
    let fake = anomos_common::InfoHash([0xf0; 32]);
    let exit = Attacker::start(lab).await;
    let serve = TorrentAnnounce {
        infohash: fake,
        role: Role::Seeding,
        event: TorrentEvent::Started,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        circuits_wanted: 0,
    };
    let r = exit
        .announce(PeerEvent::Started, vec![serve], &[], &[])
        .await;
    let mut stalls = Vec::new();
    for n in r.neighbours.iter().filter(|n| n.dial) {
        if procs.contains_key(&PeerId(n.pin.0)) {
            stalls.push(tokio::spawn(exit.dial(n).await.confirm_and_stall()));
        }
    }
    let held: Vec<Nid> = links.keys().copied().collect();
    let want = TorrentAnnounce {
        infohash: fake,
        role: Role::Leeching,
        event: TorrentEvent::None,
        uploaded: 0,
        downloaded: 0,
        left: 1,
        circuits_wanted: 1,
    };
    for _ in 0..30 {
        let r = me
            .announce(PeerEvent::Heartbeat, vec![want.clone()], &held, neighbours)
            .await;
        for g in r.circuits {
            let (nid, code) = me.first_hop(&g);
            let Some(link) = links.get_mut(&nid) else {
                continue;
            };
            let id = link.fresh_id();
            link.send(&[Cell::new(id, CellMsg::Create(code))])
                .await
                .unwrap();
            // Only paths whose last hop the exit dialled reach it.
            if link.on(id, Duration::from_secs(3)).await.map(|c| c.msg) != Some(CellMsg::Confirm) {
                continue;
            }
            let n = neighbours.iter().find(|x| x.nid == nid).unwrap();
            let (p, name) = procs[&PeerId(n.pin.0)].clone();
            let before = peer_sample(p, &violations("credit")).await;
            let blast: Vec<Cell> = (0..4096)
                .map(|_| Cell::new(id, CellMsg::Data(Box::new([0x33; CELL_BODY_LEN]))))
                .collect();
            link.send(&blast).await.unwrap();
            let grown = bumps(p, &violations("credit"), before, 1.0).await;
            for s in &stalls {
                s.abort();
            }
            return (grown, name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no circuit reached the stalling exit");
}

/// Every violation and dropped cell a peer counted, all kinds.
async fn counted_cells(p: &Proc) -> f64 {
    let body = crate::util::http_get(p.metrics, "/metrics", None).await;
    crate::util::sample_sum(&body, "anomos_protocol_violations_total")
        + crate::util::sample_sum(&body, "anomos_cells_dropped_total")
}

/// A TLS client with its own certificate claims to be the neighbour on
/// `nid`: the pin gives it away.
async fn stranger(addr: std::net::SocketAddr, claimed: PeerId, nid: Nid) {
    let rogue = PeerIdentity::generate().unwrap();
    let connector = anomos_peer::net::tls::link_connector(&rogue).unwrap();
    let ssl = connector
        .configure()
        .unwrap()
        .verify_hostname(false)
        .into_ssl("x")
        .unwrap();
    let mut s = SslStream::new(ssl, TcpStream::connect(addr).await.unwrap()).unwrap();
    std::pin::Pin::new(&mut s).connect().await.unwrap();
    s.write_all(&Hello::new(claimed, nid).encode())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
    assert!(
        matches!(got, Ok(Ok(0)) | Ok(Err(_))),
        "the stranger got an answer: {got:?}"
    );
}
