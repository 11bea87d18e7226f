//! No plaintext on the wire: a file full of a known marker is downloaded
//! through relays while tcpdump records every TCP segment of the lab's
//! ports on loopback. The marker must not appear in any stream (each TCP
//! direction reassembled in capture order), while a control connection
//! that sends it in the clear shows the capture would have caught it, and
//! the capture holds the ciphertext volume of the transfer.
//!
//! Needs root and tcpdump; skips with a message otherwise.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::download::{GET_LIMIT, MIB};
use crate::lab::{anomos, free_port, run, same_file, Lab};

/// Why packet capture cannot run here, if it cannot.
fn capture_unavailable() -> Option<String> {
    // SAFETY-free check: `id -u` instead of libc.
    let uid = std::process::Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root: packet capture needs CAP_NET_RAW".into());
    }
    match std::process::Command::new("tcpdump")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => None,
        _ => Some("tcpdump is not installed (scripts/test.sh installs it)".into()),
    }
}

/// A file of `len` bytes: `marker` every 4 KiB between pseudo-random bytes.
fn marked_file(path: &std::path::Path, len: usize, marker: &[u8]) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(41);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    for at in (0..len - marker.len()).step_by(4096) {
        data[at..at + marker.len()].copy_from_slice(marker);
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// TCP payload of each direction `(src port, dst port)`, in capture order,
/// from a pcap file of loopback (Ethernet or Linux cooked) frames.
fn streams(pcap: &[u8]) -> HashMap<(u16, u16), Vec<u8>> {
    let le = match pcap.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4]) => false,
        _ => panic!("not a pcap file"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let x: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(x)
        } else {
            u32::from_be_bytes(x)
        }
    };
    let link = u32_at(pcap, 20);
    let l2 = match link {
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked
        0 => 4,    // BSD loopback
        other => panic!("link type {other}"),
    };
    let mut out: HashMap<(u16, u16), Vec<u8>> = HashMap::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32_at(pcap, at + 8) as usize;
        let frame = &pcap[at + 16..(at + 16 + caplen).min(pcap.len())];
        at += 16 + caplen;
        let Some(ip) = frame.get(l2..) else { continue };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        let Some(tcp) = ip.get(ihl..total) else {
            continue;
        };
        if tcp.len() < 20 {
            continue;
        }
        let ports = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        let off = usize::from(tcp[12] >> 4) * 4;
        if let Some(payload) = tcp.get(off..) {
            out.entry(ports).or_default().extend_from_slice(payload);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_leaves_a_peer() {
    if let Some(why) = capture_unavailable() {
        eprintln!("SKIPPED no_plaintext_leaves_a_peer: {why}");
        return;
    }
    let lab = Lab::start(4).await;
    let marker = format!("ANOMOS-PLAINTEXT-MARKER-{:016x}", rand::random::<u64>());
    let size = 8 * MIB;
    let src = lab.dir.path().join("share/marked.bin");
    marked_file(&src, size, marker.as_bytes());
    let torrent = lab.make_torrent(&src, "marked").await;
    let seed = lab.seed(&torrent, &src, "seed").await;

    // Every port of the lab: the tracker, each peer's link listener, and
    // the downloader's, picked now so the filter can name it.
    let getter_port = free_port();
    let mut ports: Vec<u16> = lab
        .relays
        .iter()
        .chain(std::iter::once(&seed))
        .map(|p| p.listen.expect("listen address").port())
        .collect();
    ports.push(getter_port);
    ports.push(lab.tracker.listen.expect("tracker address").port());
    let filter = ports
        .iter()
        .map(|p| format!("port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let pcap = lab.dir.path().join("wire.pcap");
    let mut dump = Command::new("tcpdump")
        .args(["-i", "lo", "-n", "-s", "0", "-B", "65536", "-U", "-w"])
        .arg(&pcap)
        .arg(format!("tcp and ({filter})"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = BufReader::new(dump.stderr.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(20), err.read_line(&mut line))
        .await
        .expect("tcpdump did not start")
        .unwrap();
    assert!(line.contains("listening"), "tcpdump: {line}");

    let out = lab.dir.path().join("got");
    let mut args = lab.peer_args("getter");
    let i = args.iter().position(|a| a == "--listen").unwrap();
    args[i + 1] = format!("127.0.0.1:{getter_port}");
    let mut get = anomos();
    get.arg("get")
        .arg(&torrent)
        .arg("--out")
        .arg(&out)
        .args(&args);
    let o = run(get, GET_LIMIT).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(same_file(&src, &out.join("marked.bin")));

    // Control: the marker in the clear, to the seeder's link port.
    let seed_addr = seed.listen.unwrap();
    let mut control = tokio::net::TcpStream::connect(seed_addr).await.unwrap();
    let control_port = control.local_addr().unwrap().port();
    control.write_all(marker.as_bytes()).await.unwrap();
    control.flush().await.unwrap();
    drop(control);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let pid = dump.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let mut rest = String::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_string(&mut err, &mut rest),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(10), dump.wait()).await;

    let bytes = std::fs::read(&pcap).unwrap();
    let flows = streams(&bytes);
    let mut leaks = Vec::new();
    let (mut volume, mut tls_records) = (0usize, 0usize);
    for (ports, data) in &flows {
        if ports.0 == control_port {
            continue;
        }
        volume += data.len();
        tls_records += data.windows(3).filter(|w| *w == [0x17, 0x03, 0x03]).count();
        if contains(data, marker.as_bytes()) {
            leaks.push(*ports);
        }
    }
    let control_seen = flows
        .get(&(control_port, seed_addr.port()))
        .is_some_and(|d| contains(d, marker.as_bytes()));
    eprintln!(
        "capture: {} B, {} TCP directions, {volume} B of payload for a {size} B file, \
         ~{tls_records} TLS application-data headers; tcpdump: {}",
        bytes.len(),
        flows.len(),
        rest.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    assert!(control_seen, "the capture missed the plaintext control");
    assert!(leaks.is_empty(), "the marker is in the clear on {leaks:?}");
    // The file crossed at least three links (two relays at least).
    assert!(volume >= 3 * size, "only {volume} B captured");
    assert!(tls_records > 0, "no TLS records seen");
}
