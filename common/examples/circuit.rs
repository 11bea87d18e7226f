//! A whole circuit, in memory, with the real protocol core: the tracker's
//! side builds a tracking code for a path of relays, every hop peels its
//! layer, and a generated file crosses the circuit as fixed-size DATA cells
//! under the relay layers and the end-to-end channel.
//!
//! It prints what each party learns, and checks the file arrives intact.
//!
//! ```text
//! cargo run --release -p anomos-common --example circuit -- [RELAYS] [MIB]
//! ```

use anomos_common::cell::{Cell, CellMsg, CELL_BODY_LEN};
use anomos_common::crypto::{sha256, CircuitSecret, X25519Secret};
use anomos_common::e2e::{Initiator, Responder, MAX_RECORD_PLAINTEXT};
use anomos_common::onion::{self, ExitPayload, HopSpec, Peeled, TrackingCode};
use anomos_common::relay_crypto::{DataBody, OriginLayers, RelayLayer};
use anomos_common::replay::ReplayCache;
use anomos_common::{CircuitId, InfoHash, Nid};
use anyhow::{bail, Context, Result};
use rand::RngCore;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let relays: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let mib: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16);
    if !(1..=onion::MAX_HOPS - 2).contains(&relays) {
        bail!("RELAYS must be 1..={}", onion::MAX_HOPS - 2);
    }
    let mut rng = rand::rng();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();

    // Peers: the originator (downloader), the relays, the exit (source).
    let keys: Vec<X25519Secret> = (0..relays + 2)
        .map(|_| X25519Secret::generate(&mut rng))
        .collect::<Result<_, _>>()?;
    let infohash = InfoHash(sha256(b"demo torrent"));

    // Tracker: plan the path (NIDs are per link) and build the code.
    let hops: Vec<HopSpec> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| HopSpec {
            onion_public: k.public(),
            next_nid: (i + 1 < keys.len()).then(|| Nid(10 + i as u16)),
        })
        .collect();
    let secret = CircuitSecret(anomos_common::crypto::random_bytes(&mut rng));
    let t = Instant::now();
    let built = onion::build(
        &mut rng,
        &hops,
        &ExitPayload {
            infohash,
            circuit_secret: secret.clone(),
            expiry: now + 300,
            credit: 0,
        },
    )?;
    println!(
        "tracker: planned {} hops ({relays} relays), code of {} bytes built in {:?}",
        hops.len(),
        built.code.as_bytes().len(),
        t.elapsed()
    );

    // Every hop peels one layer; a relay learns only its next NID.
    let mut code: TrackingCode = built.code;
    let mut relay_layers = Vec::new();
    let mut exit_layer = None;
    for (i, key) in keys.iter().enumerate() {
        let mut cache = ReplayCache::new(1024);
        let t = Instant::now();
        match onion::peel(key, &code, now, &mut cache)? {
            Peeled::Relay {
                next_nid,
                next_code,
                layer_keys,
                ..
            } => {
                let who = if i == 0 { "originator" } else { "relay" };
                println!(
                    "hop {i} ({who}): peeled in {:?}, learns only: forward on NID {}",
                    t.elapsed(),
                    next_nid.0
                );
                if i > 0 {
                    relay_layers.push(RelayLayer::new(&layer_keys)?);
                }
                // The same code must be rejected if replayed at this hop.
                if onion::peel(key, &code, now, &mut cache).is_ok() {
                    bail!("replayed code accepted");
                }
                code = next_code;
            }
            Peeled::Exit {
                payload,
                layer_keys,
            } => {
                println!(
                    "hop {i} (exit): peeled in {:?}, learns: infohash {}…, circuit secret, expiry",
                    t.elapsed(),
                    payload.infohash.short()
                );
                exit_layer = Some((RelayLayer::new(&layer_keys)?, payload.circuit_secret));
            }
        }
    }
    let (mut exit_layer, exit_secret) = exit_layer.context("no exit")?;

    // End-to-end handshake through the circuit (relays see only ciphertext).
    let mut origin = OriginLayers::new(&built.layer_keys)?;
    let (initiator, init) = Initiator::new(&mut rng, &secret)?;
    let init_at_exit = forward(&mut origin, &mut relay_layers, &mut exit_layer, &init)?;
    let (mut exit_ch, accept) = Responder::accept(&mut rng, &exit_secret, &init_at_exit)?;
    let accept_at_origin = backward(&mut origin, &mut relay_layers, &mut exit_layer, &accept)?;
    let mut origin_ch = initiator.finish(&accept_at_origin)?;
    println!(
        "end-to-end channel open (keys from the circuit secret and an ephemeral X25519 exchange)"
    );

    // The source sends the file; the downloader receives it.
    let mut file = vec![0u8; mib << 20];
    rng.fill_bytes(&mut file);
    let t = Instant::now();
    let mut received = Vec::with_capacity(file.len());
    let mut cells = 0u64;
    let mut record = Vec::with_capacity(CELL_BODY_LEN);
    for chunk in file.chunks(MAX_RECORD_PLAINTEXT) {
        record.clear();
        exit_ch.seal(chunk, &mut record)?;
        let at_origin = backward(&mut origin, &mut relay_layers, &mut exit_layer, &record)?;
        received.extend_from_slice(&origin_ch.open(&at_origin)?);
        cells += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    if received != file {
        bail!("file corrupted in transit");
    }
    println!(
        "source → downloader: {mib} MiB in {cells} DATA cells through {relays} relays, intact, {:.0} MiB/s (one core, all hops' crypto)",
        mib as f64 / secs
    );
    Ok(())
}

/// Originator → exit: wrap every layer, each relay removes one, the exit the last.
fn forward(
    origin: &mut OriginLayers,
    relays: &mut [RelayLayer],
    exit: &mut RelayLayer,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut body = [0u8; CELL_BODY_LEN];
    DataBody::encode(data, &mut body);
    origin.wrap_forward(&mut body)?;
    for relay in relays.iter_mut() {
        relay.remove_forward(&mut body)?;
    }
    exit.remove_forward(&mut body)?;
    Ok(DataBody::decode(&body)?.to_vec())
}

/// Exit → originator: each hop adds a layer, the originator removes them all.
/// The body travels inside a real encoded cell so the framing is exercised too.
fn backward(
    origin: &mut OriginLayers,
    relays: &mut [RelayLayer],
    exit: &mut RelayLayer,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut body = Box::new([0u8; CELL_BODY_LEN]);
    DataBody::encode(data, &mut body);
    exit.add_backward(&mut body)?;
    for relay in relays.iter_mut().rev() {
        relay.add_backward(&mut body)?;
    }
    let wire = Cell::new(CircuitId(1), CellMsg::Data(body)).to_bytes();
    let (cell, _) = Cell::decode(&wire)?;
    let CellMsg::Data(mut body) = cell.msg else {
        bail!("not a DATA cell")
    };
    origin.unwrap_backward(&mut body)?;
    Ok(DataBody::decode(&body)?.to_vec())
}
