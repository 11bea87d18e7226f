//! The user's commands — `make-torrent`, `seed`, `get` — on top of the
//! peer, the storage and the Swarm actor. `main.rs` parses the command line
//! and calls these; every error that reaches the user is one line.

pub mod progress;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::prelude::*;
use anomos_common::metainfo::Metainfo;
use anomos_common::Pin;
use anyhow::{bail, Context as _};
use tokio::sync::watch;

use self::progress::{human_bytes, note, Display};
use crate::actors::swarm::{Swarm, SwarmSettings, SwarmStatus};
use crate::config::{Overrides, PeerConfig};
use crate::core::swarm::{SwarmConfig, SwarmCore};
use crate::storage::{make_torrent, Storage, StorageOptions, Target};

/// How often the progress display looks at the swarm.
const REFRESH: Duration = Duration::from_millis(200);

/// Read and parse a `.atorrent`, with the file name in the error.
pub fn read_torrent(path: &Path) -> anyhow::Result<Metainfo> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Metainfo::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid .atorrent", path.display()))
}

/// The peer configuration for a torrent: flags first, then the torrent's
/// tracker and pin, then the config file.
pub fn torrent_config(
    meta: &Metainfo,
    file: Option<&Path>,
    mut over: Overrides,
) -> anyhow::Result<PeerConfig> {
    over.tracker = over.tracker.or_else(|| Some(meta.announce().to_owned()));
    over.tracker_pin = over.tracker_pin.or_else(|| meta.pin());
    Ok(PeerConfig::load(file, over)?)
}

/// `anomos make-torrent`: hash `path` and write the `.atorrent` to `out`
/// (atomically: a partly written file never has the final name).
pub fn make(
    path: &Path,
    tracker: &str,
    pin: Option<Pin>,
    piece_size: Option<u32>,
    out: &Path,
) -> anyhow::Result<Metainfo> {
    let mut display: Option<Display> = None;
    let meta = make_torrent(path, tracker, pin, piece_size, |done, total| {
        display
            .get_or_insert_with(|| Display::new("hashing", total))
            .update(done, "");
    })?;
    if let Some(mut d) = display {
        d.finish(meta.total_length(), "");
    }
    let tmp = out.with_extension("atorrent.part");
    std::fs::write(&tmp, meta.to_bytes())
        .and_then(|()| std::fs::rename(&tmp, out))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(meta)
}

/// Hash what `storage` holds, with a display.
async fn check(storage: &Storage, total: u64) -> anyhow::Result<anomos_common::piece::Bitfield> {
    let mut display = Display::new("checking", total);
    let layout = storage.layout().clone();
    let count = layout.piece_count().max(1);
    let have = storage
        .verify(|done, _| {
            display.update(total.saturating_mul(u64::from(done)) / u64::from(count), "");
        })
        .await?;
    display.finish(total, "");
    Ok(have)
}

/// Options of `anomos get`.
#[derive(Debug, Clone)]
pub struct GetOptions {
    /// Where the files go.
    pub out: PathBuf,
    /// Keep serving the torrent once complete, until SIGINT/SIGTERM.
    pub seed_after: bool,
    /// Circuits to keep open to sources.
    pub circuits: u16,
}

/// `anomos seed`: check the data against the torrent, then serve it until
/// SIGINT/SIGTERM.
pub async fn seed(meta: Metainfo, data: PathBuf, cfg: PeerConfig) -> anyhow::Result<()> {
    let storage =
        Storage::open_async(&meta, Target::Seed { data }, StorageOptions::default()).await?;
    let have = check(&storage, meta.total_length()).await?;
    if !have.is_complete() {
        let bad = have.len() - have.count();
        let first = have.iter_missing().next().unwrap_or(0);
        bail!(
            "the data does not match the torrent: {bad} of {} pieces fail their hash (first: piece {first})",
            have.len()
        );
    }
    let settings = SwarmSettings {
        core: SwarmConfig::default(),
        circuits: 0,
        serve: true,
    };
    let (peer, _swarm, status) = start(meta.clone(), storage, have, settings, cfg).await?;
    announce_start(&peer, "seed");
    println!(
        "seeding {} ({}); relaying for others; Ctrl-C stops",
        meta.name(),
        human_bytes(meta.total_length()),
    );
    let mut display = Display::new("uploaded", 0);
    let outcome = run_until_signal(&status, |s| {
        display.update(s.stats.uploaded, &note(s));
        s.error.clone()
    })
    .await;
    peer.stop().await;
    outcome
}

/// `anomos get`: download through circuits; returns once every piece is
/// verified and on disk (and, with `seed_after`, after serving until a
/// signal).
pub async fn get(meta: Metainfo, opts: GetOptions, cfg: PeerConfig) -> anyhow::Result<()> {
    let target = Target::Download {
        out_dir: opts.out.clone(),
    };
    let storage = Storage::open_async(&meta, target, StorageOptions::default()).await?;
    let total = meta.total_length();
    let have = check(&storage, total).await?;
    let resumed = have.count();
    if resumed > 0 {
        eprintln!(
            "checked: {resumed} of {} pieces already on disk",
            have.len()
        );
    }
    if have.is_complete() && !opts.seed_after {
        println!(
            "{} is already complete in {}",
            meta.name(),
            opts.out.display()
        );
        return Ok(());
    }
    let settings = SwarmSettings {
        core: SwarmConfig::default(),
        circuits: opts.circuits,
        serve: true,
    };
    let (peer, _swarm, mut status) = start(meta.clone(), storage, have, settings, cfg).await?;
    announce_start(&peer, "get");
    let start_at = Instant::now();
    let mut display = Display::new("downloading", total);
    let already = done_bytes(&meta, &status.borrow());
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let outcome = loop {
        let s = status.borrow_and_update().clone();
        display.update(done_bytes(&meta, &s), &note(&s));
        if let Some(e) = s.error {
            break Err(anyhow::anyhow!(e));
        }
        if s.complete {
            break Ok(s);
        }
        tokio::select! {
            _ = status.changed() => {}
            _ = tokio::time::sleep(REFRESH) => {}
            r = &mut signal => {
                r?;
                let pct = done_bytes(&meta, &s) as f64 * 100.0 / total.max(1) as f64;
                break Err(anyhow::anyhow!("interrupted at {pct:.1} %; run again to resume"));
            }
        }
    };
    let s = match outcome {
        Ok(s) => s,
        Err(e) => {
            display.finish(done_bytes(&meta, &status.borrow()), "");
            peer.stop().await;
            return Err(e);
        }
    };
    display.finish(total, &note(&s));
    let secs = start_at.elapsed().as_secs_f64().max(1e-3);
    let fetched = total.saturating_sub(already);
    let mut relays = s.relays_at_completion.clone();
    relays.sort_unstable();
    // Data time: from the first block to the end, the figure to hold
    // against other clients' transfer rates (start-up is in `secs`).
    let data_secs = s
        .first_block
        .map_or(secs, |t| t.elapsed().as_secs_f64().max(1e-3));
    println!(
        "downloaded {} ({}) to {} in {secs:.1} s ({data_secs:.2} s from the first block), {}/s; resumed {resumed} pieces, fetched {} B (wasted {} B); circuits opened {}, sources that sent data {}, relays per open circuit {:?}",
        meta.name(),
        human_bytes(total),
        opts.out.display(),
        human_bytes((fetched as f64 / secs) as u64),
        s.stats.downloaded + s.stats.wasted,
        s.stats.wasted,
        s.opened,
        s.sources,
        relays,
    );
    if opts.seed_after {
        println!("seeding until Ctrl-C");
        let r = run_until_signal(&status, |s| s.error.clone()).await;
        peer.stop().await;
        return r;
    }
    peer.stop().await;
    Ok(())
}

/// The one place a peer command prints its addresses: once, at start-up,
/// on stdout (scripts read the metrics address from it).
fn announce_start(peer: &crate::Peer, cmd: &str) {
    let metrics = peer
        .metrics_addr
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    println!(
        "anomos {cmd} {} listening on {} metrics {metrics}",
        peer.peer_id.short(),
        peer.listen_addr
    );
}

/// Verified bytes of a status.
fn done_bytes(meta: &Metainfo, s: &SwarmStatus) -> u64 {
    let per = u64::from(meta.piece_length());
    u64::from(s.stats.pieces_have)
        .saturating_mul(per)
        .min(meta.total_length())
}

/// Start the peer and the torrent's Swarm actor on data already checked
/// (`have`), with no display: what `seed` and `get` run once the data is
/// checked, and what a host of many peers in one process (the load tester)
/// runs per peer. Must run inside an actix system; keep the returned
/// address as long as the torrent should run.
pub async fn start(
    meta: Metainfo,
    storage: Storage,
    have: anomos_common::piece::Bitfield,
    settings: SwarmSettings,
    cfg: PeerConfig,
) -> anyhow::Result<(
    crate::Peer,
    Addr<Swarm<crate::PeerHandle<crate::datapath::DataPath>>>,
    watch::Receiver<SwarmStatus>,
)> {
    let peer = crate::run_peer(cfg).await?;
    let infohash = meta.info_hash();
    let core = SwarmCore::new(
        settings.core.clone(),
        meta.layout().clone(),
        infohash,
        have,
        rand::random(),
    );
    let (tx, rx) = watch::channel(SwarmStatus::default());
    let swarm = Swarm::new(
        peer.handle(),
        infohash,
        storage,
        core,
        settings,
        peer.metrics.clone(),
        tx,
    )
    .start();
    Ok((peer, swarm, rx))
}

/// Watch the status until SIGINT/SIGTERM or a fatal error.
async fn run_until_signal(
    status: &watch::Receiver<SwarmStatus>,
    mut on_status: impl FnMut(&SwarmStatus) -> Option<String>,
) -> anyhow::Result<()> {
    let mut status = status.clone();
    let signal = wait_for_signal();
    tokio::pin!(signal);
    loop {
        if let Some(e) = on_status(&status.borrow_and_update()) {
            bail!(e);
        }
        tokio::select! {
            r = &mut signal => return r,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
