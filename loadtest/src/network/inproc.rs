//! `inproc`: the tracker and every peer in this one process.
//!
//! The tracker is `tracker::run` on the actix system's own thread (its
//! HTTP workers and planner threads are its own, as in the binary). Peers
//! are `anomos_peer::run_peer` plus, for seeders and downloaders, the
//! Swarm actor (`anomos_peer::app::start`, what `anomos seed | get` run),
//! each started on one of `--threads` actix arbiters, round-robin. A peer
//! lives in a task on its arbiter; the driver on the system thread holds a
//! [`Hosted`] handle: the peer's metrics address, the Swarm's status
//! channel and a stop signal. The driver watches the same things as in the
//! other modes (HTTP `/metrics` of every peer and of the tracker) and, in
//! addition, reads each download's open circuits from its status, so live
//! circuits are counted exactly here.
//!
//! Identities are ephemeral (nothing per peer on disk but downloads).

use std::any::Any;
use std::cell::Cell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_rt::ArbiterHandle;
use anomos_common::metainfo::Metainfo;
use anomos_common::InfoHash;
use anomos_peer::actors::swarm::{SwarmSettings, SwarmStatus};
use anomos_peer::config::{Overrides, PeerConfig};
use anomos_peer::core::swarm::SwarmConfig;
use anomos_peer::datapath::DataPath;
use anomos_peer::storage::{Storage, StorageOptions, Target};
use anyhow::{bail, Context as _};
use tokio::sync::{oneshot, watch};

use super::figures::{self, Collected, Live};
use super::observe::{self, TrackerOps};
use super::probe;
use super::probing::{self, Prober};
use super::progress::Progress;
use super::prom::Scrape;
use super::report::{Memory, ProcFigures, Report};
use super::scrape::Scraper;
use super::setup;
use super::{NetworkArgs, Role};
use crate::procstat::{load_average, ProcReader};

/// Longest wait for one peer to start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the peers' graceful stop at the end.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// What a hosted peer does besides relaying.
enum Job {
    Relay,
    Seed {
        meta: Metainfo,
        data: PathBuf,
    },
    Get {
        meta: Metainfo,
        out: PathBuf,
        circuits: u16,
    },
    /// A relay-only peer whose handle the driver keeps, to ask for probe
    /// and held circuits.
    ProbeOrigin,
    /// A relay-only peer serving `infohash` for the held circuits.
    ProbeExit {
        infohash: InfoHash,
    },
}

/// A started peer, seen from the driver's thread.
struct Hosted {
    role: Role,
    metrics: SocketAddr,
    status: Option<watch::Receiver<SwarmStatus>>,
    /// Probe origins only.
    handle: Option<anomos_peer::PeerHandle<DataPath>>,
    stop: oneshot::Sender<()>,
    stopped: oneshot::Receiver<()>,
}

/// Run the mode: one actix system, `--threads` arbiters for the peers.
pub fn run(a: &NetworkArgs) -> anyhow::Result<Report> {
    let sys = actix_rt::System::new();
    let arbiters: Vec<actix_rt::Arbiter> =
        sys.block_on(async { (0..a.threads).map(|_| actix_rt::Arbiter::new()).collect() });
    let handles: Vec<ArbiterHandle> = arbiters.iter().map(|x| x.handle()).collect();
    let r = sys.block_on(super::bounded(a, drive(a, &handles)));
    // Whatever still runs on the arbiters (after a failure) is dropped.
    for arb in arbiters {
        arb.stop();
        let _ = arb.join();
    }
    r
}

/// Start `job` on `arb`; the handle arrives once the peer is up.
fn host(
    arb: &ArbiterHandle,
    cfg: PeerConfig,
    job: Job,
    role: Role,
) -> oneshot::Receiver<anyhow::Result<Hosted>> {
    let (tx, rx) = oneshot::channel();
    arb.spawn_fn(move || {
        actix_rt::spawn(hosted(cfg, job, role, tx));
    });
    rx
}

/// The peer's task on its arbiter: start, report, wait for stop, stop.
async fn hosted(
    cfg: PeerConfig,
    job: Job,
    role: Role,
    ready: oneshot::Sender<anyhow::Result<Hosted>>,
) {
    let origin = matches!(job, Job::ProbeOrigin);
    let started = start_job(cfg, job).await;
    let (peer, swarm, status) = match started {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (stop, stop_rx) = oneshot::channel();
    let (stopped_tx, stopped) = oneshot::channel();
    let Some(metrics) = peer.metrics_addr else {
        let _ = ready.send(Err(anyhow::anyhow!("peer has no metrics listener")));
        peer.stop().await;
        return;
    };
    let handle = Hosted {
        role,
        metrics,
        status,
        handle: origin.then(|| peer.handle()),
        stop,
        stopped,
    };
    if ready.send(Ok(handle)).is_ok() {
        // A dropped sender (the driver gave up) stops the peer as well.
        let _ = stop_rx.await;
    }
    drop(swarm);
    peer.stop().await;
    let _ = stopped_tx.send(());
}

type Started = (
    anomos_peer::Peer,
    Option<Box<dyn Any>>,
    Option<watch::Receiver<SwarmStatus>>,
);

async fn start_job(cfg: PeerConfig, job: Job) -> anyhow::Result<Started> {
    let (meta, target, circuits) = match job {
        Job::Relay | Job::ProbeOrigin => {
            return Ok((anomos_peer::run_peer(cfg).await?, None, None))
        }
        Job::ProbeExit { infohash } => {
            let peer = anomos_peer::run_peer(cfg).await?;
            probing::serve_exit(&peer, infohash);
            return Ok((peer, None, None));
        }
        Job::Seed { meta, data } => (meta, Target::Seed { data }, 0),
        Job::Get {
            meta,
            out,
            circuits,
        } => (meta, Target::Download { out_dir: out }, circuits),
    };
    let storage = Storage::open_async(&meta, target, StorageOptions::default()).await?;
    let have = storage.verify(|_, _| {}).await?;
    if circuits == 0 && !have.is_complete() {
        bail!("seed data does not match its torrent");
    }
    let settings = SwarmSettings {
        core: SwarmConfig::default(),
        circuits,
        serve: true,
    };
    let (peer, swarm, status) = anomos_peer::app::start(meta, storage, have, settings, cfg).await?;
    Ok((peer, Some(Box::new(swarm)), Some(status)))
}

/// Await every handle (each within [`START_TIMEOUT`]).
async fn ready_all(
    pending: Vec<oneshot::Receiver<anyhow::Result<Hosted>>>,
) -> anyhow::Result<Vec<Hosted>> {
    let mut out = Vec::new();
    for rx in pending {
        let h = tokio::time::timeout(START_TIMEOUT, rx)
            .await
            .context("a peer did not start in time")?
            .context("a peer's thread ended")??;
        out.push(h);
    }
    Ok(out)
}

fn peer_config(
    file: &Path,
    url: &str,
    pin: anomos_common::Pin,
    dir: &Path,
) -> anyhow::Result<PeerConfig> {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(PeerConfig::load(
        Some(file),
        Overrides {
            tracker: Some(url.to_owned()),
            tracker_pin: Some(pin),
            data_dir: Some(dir.to_owned()),
            listen: Some(local),
            metrics: Some(local),
            ephemeral: true,
        },
    )?)
}

/// Open circuits of the downloads (theirs, counted once each) and whether
/// each download completed or failed.
fn look(dls: &[Hosted]) -> (u64, Vec<(bool, Option<String>)>) {
    let mut open = 0;
    let states = dls
        .iter()
        .map(|h| match &h.status {
            Some(rx) => {
                let s = rx.borrow();
                open += s.circuit_relays.len() as u64;
                (s.complete, s.error.clone())
            }
            None => (false, Some("no status".into())),
        })
        .collect();
    (open, states)
}

async fn drive(a: &NetworkArgs, arbs: &[ArbiterHandle]) -> anyhow::Result<Report> {
    let t_run = Instant::now();
    let load_average_before = load_average();
    let dir = setup::run_dir(a)?;
    let files = setup::make_data(dir.path(), a.torrents, a.size_bytes())?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let tracker_file = dir.path().join("tracker.toml");
    std::fs::write(
        &tracker_file,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics = \"127.0.0.1:0\"\ndata_dir = {:?}\n{}",
            dir.path().join("tracker").display().to_string(),
            setup::tracker_toml(a, &token, true)
        ),
    )?;
    let cfg = tracker::config::Config::load(Some(&tracker_file), Default::default())?;
    let tracker = tracker::run(cfg).await?;
    let t_tracker = Instant::now();
    let ops = TrackerOps {
        operator: tracker.operator_addr,
        token,
    };
    let scraper = Scraper::default();
    let url = format!("https://{}", tracker.api_addr);
    let torrents = setup::make_torrents(&files, &url, tracker.pin, a.piece_size)?;
    let peer_file = dir.path().join("peer.toml");
    std::fs::write(&peer_file, setup::PEER_TOML)?;
    let cfg = || peer_config(&peer_file, &url, tracker.pin, &dir.path().join("peers"));
    let me = ProcReader::new(None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = me.sample()?;

    let t_peers = Instant::now();
    let mut pending = Vec::new();
    for k in 0..a.relays + a.seeders {
        let (job, role) = if k < a.relays {
            (Job::Relay, Role::Relay)
        } else {
            let t = &torrents[(k - a.relays) % a.torrents];
            let job = Job::Seed {
                meta: t.meta.clone(),
                data: t.data.clone(),
            };
            (job, Role::Seeder)
        };
        pending.push(host(&arbs[k % arbs.len()], cfg()?, job, role));
    }
    // Probe origins, then (for held circuits) as many probe exits.
    let exits_ih = InfoHash(rand::random());
    let probe_peers = if a.probes_on() { a.probe_peers } else { 0 };
    let probe_exits = if a.probe_hold > 0 { probe_peers } else { 0 };
    for k in 0..probe_peers + probe_exits {
        let n = a.relays + a.seeders + k;
        let (job, mut c) = (Job::ProbeOrigin, cfg()?);
        let job = if k < probe_peers {
            // Every request announces at once: no self-imposed gap in
            // request → open.
            c.min_announce_gap_ms = 1;
            job
        } else {
            Job::ProbeExit { infohash: exits_ih }
        };
        pending.push(host(&arbs[n % arbs.len()], c, job, Role::Probe));
    }
    let mut peers = ready_all(pending).await?;
    let addrs: Vec<SocketAddr> = peers.iter().map(|h| h.metrics).collect();
    let overlay_links = observe::converge(&scraper, &ops, &addrs).await?;
    let overlay_secs = t_peers.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = me.sample()?;
    let first = a.relays + a.seeders;
    let prober = Rc::new(Prober {
        origins: peers[first..first + probe_peers]
            .iter()
            .filter_map(|h| h.handle.clone())
            .collect(),
        origin_metrics: peers[first..first + probe_peers]
            .iter()
            .map(|h| h.metrics)
            .collect(),
        target: torrents[0].meta.info_hash(),
        held: Rc::new(Cell::new(0)),
    });
    if a.probe_hold > 0 {
        let secs = prober.fill(exits_ih, a.probe_hold, probe_exits).await?;
        eprintln!(
            "probe: {} idle circuits held ({} open) in {secs:.1} s",
            a.probe_hold,
            prober.held.get()
        );
    }

    let tracker_at_start = ops.scrape(&scraper).await?;
    let t_downloads = Instant::now();
    let mut progress = Progress::new(a.downloaders);
    let mut pending = Vec::new();
    for k in 0..a.downloaders {
        let t = &torrents[k % a.torrents];
        let (out, _) = setup::download_paths(dir.path(), k, t);
        let job = Job::Get {
            meta: t.meta.clone(),
            out,
            circuits: a.circuits,
        };
        let n = a.relays + a.seeders + k;
        pending.push(host(&arbs[n % arbs.len()], cfg()?, job, Role::Downloader));
    }
    let dls = ready_all(pending).await?;
    let reserve = Duration::from_secs((a.timeout / 4).clamp(5, 60));
    let deadline = t_run + Duration::from_secs(a.timeout).saturating_sub(reserve);
    let mut live = Live {
        exact_peak: Some(0),
        ..Live::default()
    };
    let all_addrs = |peers: &[Hosted], dls: &[Hosted]| -> Vec<SocketAddr> {
        peers.iter().chain(dls).map(|h| h.metrics).collect()
    };
    let mut next_scrape = Instant::now();
    // What the bulk probe phase reads at each request.
    let dl_open = Rc::new(Cell::new(0u64));
    let running = Rc::new(Cell::new(true));
    let mut bulk_probe = None;
    let wanted = a.downloaders as u64 * u64::from(a.circuits);
    loop {
        let (open, states) = look(&dls);
        live.see_exact(open, t_downloads.elapsed().as_secs_f64());
        dl_open.set(open);
        if a.probe > 0 && bulk_probe.is_none() && probe::bulk_ready(open, wanted) {
            let (p, o, r, n) = (prober.clone(), dl_open.clone(), running.clone(), a.probe);
            bulk_probe = Some(actix_rt::spawn(async move {
                p.phase("bulk", n, true, &move || (o.get(), r.get())).await
            }));
        }
        for (i, (complete, error)) in states.into_iter().enumerate() {
            if complete {
                progress.complete(i);
            } else if let Some(why) = error {
                progress.fail(i, why);
            }
        }
        if progress.settled() {
            break;
        }
        if Instant::now() > deadline {
            progress.expire();
            break;
        }
        if Instant::now() >= next_scrape {
            let s = observe::scrape_all(&scraper, &all_addrs(&peers, &dls)).await?;
            live.table_peak = live.table_peak.max(observe::table_entries(&s));
            next_scrape = Instant::now() + Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.set(false);
    let t_done = progress.last_done();
    let tracker_at_done = ops.scrape(&scraper).await?;
    let mut probes = Vec::new();
    if a.probe > 0 {
        let bulk = match bulk_probe {
            Some(task) => task.await.context("the bulk probe ended")??,
            None => probe::summarize("bulk", &[], &Default::default()),
        };
        probes.push(bulk);
        // The downloads' conns settle first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = prober
            .phase("idle", a.probe, false, &|| (look(&dls).0, false))
            .await?;
        probes.push(idle);
    }

    let hold_end = Instant::now() + Duration::from_secs_f64(a.hold);
    while Instant::now() < hold_end {
        let (open, _) = look(&dls);
        live.see_exact(open, t_downloads.elapsed().as_secs_f64());
        let s = observe::scrape_all(&scraper, &all_addrs(&peers, &dls)).await?;
        live.table_peak = live.table_peak.max(observe::table_entries(&s));
        let left = hold_end.saturating_duration_since(Instant::now());
        tokio::time::sleep(Duration::from_secs(1).min(left)).await;
    }
    let (open, _) = look(&dls);
    live.exact_end = Some(open);
    live.see_exact(open, t_downloads.elapsed().as_secs_f64());
    let finals = observe::scrape_all(&scraper, &all_addrs(&peers, &dls)).await?;
    live.table_end = observe::table_entries(&finals);
    live.table_peak = live.table_peak.max(live.table_end);
    let tracker_end = ops.scrape(&scraper).await?;
    let tracker_secs = t_tracker.elapsed().as_secs_f64();
    let end = me.sample()?;

    let downloads = progress.records(dir.path(), &torrents, a.size_bytes());
    let unanswered = finals.iter().filter(|s| s.is_none()).count();
    let roles: Vec<Role> = peers.iter().chain(&dls).map(|h| h.role).collect();
    let peers_scraped: Vec<(Role, Scrape)> = roles
        .into_iter()
        .zip(finals)
        .filter_map(|(r, s)| s.map(|s| (r, s)))
        .collect();

    peers.extend(dls);
    let mut waits = Vec::new();
    for h in peers {
        let _ = h.stop.send(());
        waits.push(h.stopped);
    }
    let stop_all = async {
        for w in waits {
            let _ = w.await;
        }
    };
    if tokio::time::timeout(STOP_TIMEOUT, stop_all).await.is_err() {
        eprintln!("warning: peers did not all stop within {STOP_TIMEOUT:?}");
    }
    if let Err(e) = tracker.stop().await {
        eprintln!("warning: tracker stop: {e}");
    }

    let idle_peers = (a.relays + a.seeders + probe_peers + probe_exits).max(1) as f64;
    let collected = Collected {
        network: "inproc",
        processes: 1,
        namespaces: 0,
        piece_size: torrents[0].meta.piece_length(),
        tracker_config: setup::tracker_toml(a, "(per-run token)", true),
        overlay_secs,
        overlay_links,
        downloads,
        phase_secs: t_done.duration_since(progress.t0).as_secs_f64(),
        peers: peers_scraped,
        peers_unanswered: unanswered,
        tracker_at_start,
        tracker_at_done,
        tracker_end,
        tracker_secs,
        live,
        procs: vec![ProcFigures {
            role: Role::Inproc.as_str().into(),
            index: 0,
            pid: std::process::id(),
            idle: Some(idle),
            end,
        }],
        memory: Memory {
            rss_per_idle_peer_kib: (idle.rss_kib as f64 - before.rss_kib as f64) / idle_peers,
            basis: format!(
                "(process VmRSS with the {} relays, {} seeders and {} probe peers linked up, \
                 idle) minus (VmRSS with only the tracker), divided by {}",
                a.relays,
                a.seeders,
                probe_peers + probe_exits,
                idle_peers
            ),
            process_rss_before_peers_kib: Some(before.rss_kib),
            process_rss_idle_kib: Some(idle.rss_kib),
            process_rss_end_kib: Some(end.rss_kib),
        },
        wall_secs: t_run.elapsed().as_secs_f64(),
        load_average_before,
        probes,
    };
    Ok(figures::build(a, collected))
}
