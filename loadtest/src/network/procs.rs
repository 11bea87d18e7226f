//! `procs` and `netns`: one real process per peer.
//!
//! Both run `anomos-tracker` and `anomos relay | seed | get` exactly as a
//! user would; they differ only in where each process runs (its [`Site`]:
//! 127.0.0.1, or `ip netns exec` into its own namespace with its own
//! address) and where the scraping thread looks from. Downloads run with
//! `--seed-after`, so a finished downloader stays up (its circuits open,
//! its counters readable) until the end of the hold phase; completion is
//! its `downloaded …` line, after which its file is compared with the
//! source. At the end every peer gets SIGTERM, then SIGKILL if it lingers.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::children::{PeerProc, Site};
use super::figures::{self, Collected, Live};
use super::netns::{parse_subnet, Netns};
use super::observe::{self, TrackerOps};
use super::progress::Progress;
use super::prom::Scrape;
use super::report::{Memory, ProcFigures, Report};
use super::scrape::Scraper;
use super::setup::{self, Torrent};
use super::{NetworkArgs, Role};
use crate::procstat::{load_average, ProcReader, ProcSample};
use crate::spawn::{sibling_bin, SpawnedTracker};

/// Longest wait for a peer's start-up line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Where everything runs.
#[derive(Debug)]
struct Layout {
    network: &'static str,
    tracker: Site,
    /// Relays, then seeders, then downloaders.
    nodes: Vec<Site>,
    scraper: Scraper,
    same_ip: bool,
    namespaces: usize,
}

/// `procs`: every process on 127.0.0.1.
pub fn run_local(a: &NetworkArgs) -> anyhow::Result<Report> {
    let n = a.relays + a.seeders + a.downloaders;
    run_with(
        a,
        Layout {
            network: "procs",
            tracker: Site::local(),
            nodes: vec![Site::local(); n],
            scraper: Scraper::default(),
            same_ip: true,
            namespaces: 0,
        },
    )
}

/// `netns`: every peer in its own namespace; fails with `Skipped` where
/// namespaces cannot be made.
pub fn run_netns(a: &NetworkArgs) -> anyhow::Result<Report> {
    let subnet = parse_subnet(&a.netns_subnet)?;
    let n = a.relays + a.seeders + a.downloaders;
    // Declared first so it is dropped last, after every child is gone.
    let ns = Netns::create(n, subnet)?;
    let lay = Layout {
        network: "netns",
        tracker: Site {
            wrapper: ns.hub_prefix(),
            host: ns.hub_ip.into(),
        },
        nodes: (0..n)
            .map(|k| Site {
                wrapper: ns.node_prefix(k),
                host: ns.node_ips[k].into(),
            })
            .collect(),
        scraper: Scraper {
            netns: Some(ns.hub_file()),
        },
        same_ip: false,
        namespaces: ns.count(),
    };
    run_with(a, lay)
}

fn run_with(a: &NetworkArgs, lay: Layout) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(super::bounded(a, drive(a, &lay)));
    // Children not stopped by the run are killed as their guards drop.
    drop(rt);
    r
}

fn sample(pid: u32) -> ProcSample {
    ProcReader::new(Some(pid)).sample().unwrap_or_default()
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

/// Poll `peers` until each printed its start-up line.
async fn wait_started(peers: &mut [PeerProc]) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut waiting = 0;
        for p in peers.iter_mut() {
            p.poll();
            if p.metrics.is_none() {
                if p.ended {
                    bail!("{}", p.failure());
                }
                waiting += 1;
            }
        }
        if waiting == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{waiting} peers did not start within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drive(a: &NetworkArgs, lay: &Layout) -> anyhow::Result<Report> {
    let t_run = Instant::now();
    let load_average_before = load_average();
    let tracker_bin = a
        .tracker_bin
        .clone()
        .map_or_else(|| sibling_bin("anomos-tracker"), Ok)?;
    let peer_bin = a
        .peer_bin
        .clone()
        .map_or_else(|| sibling_bin("anomos"), Ok)?;
    let dir = setup::run_dir(a)?;
    let files = setup::make_data(dir.path(), a.torrents, a.size_bytes())?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let toml = setup::tracker_toml(a, &token, lay.same_ip);
    let tracker =
        SpawnedTracker::start_on(&tracker_bin, &toml, lay.tracker.host, &lay.tracker.wrapper)?;
    let t_tracker = Instant::now();
    let ops = TrackerOps {
        operator: tracker.operator,
        token: token.clone(),
    };
    let url = format!("https://{}", tracker.api);
    let pin = tracker.pin.to_hex();
    let torrents = setup::make_torrents(&files, &url, tracker.pin, a.piece_size)?;
    let config = dir.path().join("peer.toml");
    std::fs::write(&config, setup::PEER_TOML)?;
    let tracker_args = |mut v: Vec<OsString>| {
        v.extend(os(&["--tracker", &url, "--tracker-pin", &pin]));
        v
    };

    let t_peers = Instant::now();
    let mut peers = Vec::new();
    for k in 0..a.relays + a.seeders {
        let (role, i, args) = if k < a.relays {
            (Role::Relay, k, os(&["relay"]))
        } else {
            let i = k - a.relays;
            let t = &torrents[i % a.torrents];
            let v = vec![
                "seed".into(),
                t.file.clone().into(),
                "--data".into(),
                t.data.clone().into(),
            ];
            (Role::Seeder, i, v)
        };
        let d = dir.path().join(format!("{}{i}", role.as_str()));
        peers.push(PeerProc::spawn(
            &lay.nodes[k],
            &peer_bin,
            tracker_args(args),
            &d,
            &config,
            (role, i),
        )?);
    }
    wait_started(&mut peers).await?;
    let addrs: Vec<_> = peers.iter().filter_map(|p| p.metrics).collect();
    let overlay_links = observe::converge(&lay.scraper, &ops, &addrs).await?;
    let overlay_secs = t_peers.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tracker_idle = sample(tracker.pid());
    let idle: Vec<ProcSample> = peers.iter().map(|p| sample(p.pid)).collect();

    let tracker_at_start = ops.scrape(&lay.scraper).await?;
    let mut progress = Progress::new(a.downloaders);
    let mut dls = Vec::new();
    for k in 0..a.downloaders {
        let t: &Torrent = &torrents[k % a.torrents];
        let (out, _) = setup::download_paths(dir.path(), k, t);
        let circuits = a.circuits.to_string();
        let mut args = vec![
            "get".into(),
            t.file.clone().into(),
            "--out".into(),
            out.into(),
        ];
        args.extend(os(&["--circuits", &circuits, "--seed-after"]));
        let d = dir.path().join(format!("downloader{k}"));
        let site = &lay.nodes[a.relays + a.seeders + k];
        dls.push(PeerProc::spawn(
            site,
            &peer_bin,
            tracker_args(args),
            &d,
            &config,
            (Role::Downloader, k),
        )?);
    }
    let reserve = Duration::from_secs((a.timeout / 4).clamp(5, 60));
    let deadline = t_run + Duration::from_secs(a.timeout).saturating_sub(reserve);
    let mut live = Live::default();
    let mut next_scrape = Instant::now();
    loop {
        for (i, d) in dls.iter_mut().enumerate() {
            if d.poll().iter().any(|l| l.starts_with("downloaded ")) {
                progress.complete(i);
            } else if d.ended {
                let why = d.failure();
                progress.fail(i, why);
            }
        }
        for p in peers.iter_mut() {
            p.poll();
        }
        if progress.settled() {
            break;
        }
        if Instant::now() > deadline {
            progress.expire();
            break;
        }
        if Instant::now() >= next_scrape {
            next_scrape = Instant::now() + Duration::from_secs(1);
            let entries = table_now(&lay.scraper, &peers, &dls).await?;
            live.table_peak = live.table_peak.max(entries);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t_done = progress.last_done();
    let tracker_at_done = ops.scrape(&lay.scraper).await?;

    let hold_end = Instant::now() + Duration::from_secs_f64(a.hold);
    while Instant::now() < hold_end {
        let entries = table_now(&lay.scraper, &peers, &dls).await?;
        live.table_peak = live.table_peak.max(entries);
        tokio::time::sleep(
            Duration::from_secs(1).min(hold_end.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    let all: Vec<&PeerProc> = peers.iter().chain(dls.iter()).collect();
    let n_peers = all.len();
    let (roles, addrs): (Vec<Role>, Vec<_>) = all
        .iter()
        .filter_map(|p| p.metrics.map(|m| (p.role, m)))
        .unzip();
    let finals = observe::scrape_all(&lay.scraper, &addrs).await?;
    live.table_end = observe::table_entries(&finals);
    live.table_peak = live.table_peak.max(live.table_end);
    let tracker_end = ops.scrape(&lay.scraper).await?;
    let tracker_secs = t_tracker.elapsed().as_secs_f64();
    let mut procs = vec![ProcFigures {
        role: Role::Tracker.as_str().into(),
        index: 0,
        pid: tracker.pid(),
        idle: Some(tracker_idle),
        end: sample(tracker.pid()),
    }];
    for (k, p) in all.iter().enumerate() {
        procs.push(ProcFigures {
            role: p.role.as_str().into(),
            index: p.index,
            pid: p.pid,
            idle: idle.get(k).copied(),
            end: sample(p.pid),
        });
    }
    let downloads = progress.records(dir.path(), &torrents, a.size_bytes());

    let stop_by = Instant::now() + Duration::from_secs(10);
    for p in peers.iter().chain(dls.iter()) {
        p.terminate();
    }
    for p in peers.into_iter().chain(dls) {
        p.reap(stop_by).await;
    }
    if let Err(e) = tracker.stop() {
        eprintln!("warning: {e:#}");
    }

    let relay_idle: Vec<u64> = procs
        .iter()
        .filter(|p| p.role == Role::Relay.as_str())
        .filter_map(|p| p.idle.map(|s| s.rss_kib))
        .collect();
    let unanswered = n_peers - finals.iter().flatten().count();
    let peers_scraped: Vec<(Role, Scrape)> = roles
        .into_iter()
        .zip(finals)
        .filter_map(|(r, s)| s.map(|s| (r, s)))
        .collect();
    let collected = Collected {
        network: lay.network,
        processes: 1 + a.relays + a.seeders + a.downloaders,
        namespaces: lay.namespaces,
        piece_size: torrents[0].meta.piece_length(),
        tracker_config: setup::tracker_toml(a, "(per-run token)", lay.same_ip),
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
        procs,
        memory: Memory {
            rss_per_idle_peer_kib: relay_idle.iter().sum::<u64>() as f64
                / relay_idle.len().max(1) as f64,
            basis: format!(
                "mean VmRSS of the {} relay processes, links up, before any download",
                relay_idle.len()
            ),
            process_rss_before_peers_kib: None,
            process_rss_idle_kib: None,
            process_rss_end_kib: None,
        },
        wall_secs: t_run.elapsed().as_secs_f64(),
        load_average_before,
        probes: Vec::new(),
    };
    Ok(figures::build(a, collected))
}

/// Circuit-table entries over every peer that answers now.
async fn table_now(s: &Scraper, peers: &[PeerProc], dls: &[PeerProc]) -> anyhow::Result<u64> {
    let addrs: Vec<_> = peers.iter().chain(dls).filter_map(|p| p.metrics).collect();
    Ok(observe::table_entries(
        &observe::scrape_all(s, &addrs).await?,
    ))
}
