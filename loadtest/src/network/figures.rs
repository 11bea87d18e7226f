//! From what a run collected (scrapes, `/proc` samples, download times) to
//! the report's figures. Pure functions, so the arithmetic is tested
//! without starting a network.

use std::collections::BTreeMap;

use super::prom::{Hist, Scrape};
use super::report::{
    Bucket, Circuits, Download, Memory, Problems, ProcFigures, Quantiles, Report, RoleFigures,
    Spread, Throughput, TrackerFigures, Traffic,
};
use super::{NetworkArgs, Role};

/// Everything a mode hands over at the end of a run.
#[derive(Debug, Clone)]
pub struct Collected {
    /// `inproc`, `procs` or `netns`.
    pub network: &'static str,
    /// Operating-system processes.
    pub processes: usize,
    /// Namespaces created.
    pub namespaces: usize,
    /// Piece size of the torrents.
    pub piece_size: u32,
    /// The tracker's config as reported.
    pub tracker_config: String,
    /// Seconds until the overlay linked up.
    pub overlay_secs: f64,
    /// Links between relays and seeders once linked up.
    pub overlay_links: u64,
    /// Every download.
    pub downloads: Vec<Download>,
    /// Start of the downloads to the last completion (or the deadline).
    pub phase_secs: f64,
    /// The last scrape of every peer, with its role.
    pub peers: Vec<(Role, Scrape)>,
    /// Peers that did not answer the last scrape.
    pub peers_unanswered: usize,
    /// The tracker when the downloads started.
    pub tracker_at_start: Scrape,
    /// The tracker when the last download ended.
    pub tracker_at_done: Scrape,
    /// The tracker at the end of the hold phase.
    pub tracker_end: Scrape,
    /// Tracker start to its last scrape.
    pub tracker_secs: f64,
    /// Open circuits counted by the mode.
    pub live: Live,
    /// Every process.
    pub procs: Vec<ProcFigures>,
    /// Idle memory.
    pub memory: Memory,
    /// Seconds of the whole run.
    pub wall_secs: f64,
    /// Load average before.
    pub load_average_before: Option<[f64; 3]>,
    /// Steady-state set-up probe phases (`inproc --probe`).
    pub probes: Vec<super::probe::ProbePhase>,
}

/// Open circuits as the mode could count them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    /// Peak of circuits open at the downloads (when the mode sees them).
    pub exact_peak: Option<u64>,
    /// Seconds from the downloads' start to the first sample at that peak:
    /// how long the start-up burst of set-ups took.
    pub peak_after_secs: Option<f64>,
    /// `(seconds since the downloads started, circuits open)`, at most one
    /// sample a second: when the circuits were set up.
    pub series: Vec<(f64, u64)>,
    /// The same at the end.
    pub exact_end: Option<u64>,
    /// Peak of `anomos_circuits_active` summed over peers.
    pub table_peak: u64,
    /// The same at the end.
    pub table_end: u64,
}

impl Live {
    /// A sample of the circuits open at the downloads, `secs` after they
    /// started: raises the peak and notes when it was first reached.
    pub fn see_exact(&mut self, open: u64, secs: f64) {
        if self.exact_peak.is_none_or(|p| open > p) {
            self.exact_peak = Some(open);
            self.peak_after_secs = Some(round(secs, 1));
        }
        if self.series.last().is_none_or(|&(t, _)| secs >= t + 1.0) {
            self.series.push((round(secs, 1), open));
        }
    }

    /// The first sampled second at which at least `frac` of the peak was
    /// open.
    pub fn reached(&self, frac: f64) -> Option<f64> {
        let want = self.exact_peak? as f64 * frac;
        let first = self.series.iter().find(|&&(_, n)| n as f64 >= want);
        first.map(|&(t, _)| t)
    }
}

fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

/// A histogram of seconds, as milliseconds.
pub fn quantiles(h: &Hist) -> Quantiles {
    let ms = |v: Option<f64>| v.map(|s| round(s * 1000.0, 3));
    Quantiles {
        count: h.count as u64,
        mean_ms: round(h.mean() * 1000.0, 3),
        p50_ms_at_most: ms(h.quantile_bound(0.5)).filter(|v| v.is_finite()),
        p90_ms_at_most: ms(h.quantile_bound(0.9)).filter(|v| v.is_finite()),
        p99_ms_at_most: ms(h.quantile_bound(0.99)).filter(|v| v.is_finite()),
        p50_ms_est: ms(h.quantile_estimate(0.5)),
        p90_ms_est: ms(h.quantile_estimate(0.9)),
        p99_ms_est: ms(h.quantile_estimate(0.99)),
    }
}

/// Smallest, median, mean and largest (all 0 for none).
pub fn spread(values: &[f64]) -> Spread {
    if values.is_empty() {
        return Spread::default();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Spread {
        min: round(v[0], 2),
        median: round(v[v.len() / 2], 2),
        mean: round(v.iter().sum::<f64>() / v.len() as f64, 2),
        max: round(v[v.len() - 1], 2),
    }
}

/// A download's record: rate from bytes and seconds.
pub fn download(
    peer: usize,
    torrent: usize,
    bytes: u64,
    secs: Option<f64>,
    intact: bool,
    error: Option<String>,
) -> Download {
    Download {
        peer,
        torrent,
        bytes,
        complete: secs.is_some(),
        intact: secs.is_some() && intact,
        secs: secs.map(|s| round(s, 3)),
        mib_per_sec: secs.map(|s| round(bytes as f64 / 1048576.0 / s.max(1e-6), 2)),
        error,
    }
}

/// Per-role CPU and memory; `wall_secs` turns CPU seconds into cores.
pub fn roles(procs: &[ProcFigures], wall_secs: f64) -> Vec<RoleFigures> {
    let mut by: BTreeMap<&str, Vec<&ProcFigures>> = BTreeMap::new();
    for p in procs {
        by.entry(p.role.as_str()).or_default().push(p);
    }
    by.into_iter()
        .map(|(role, ps)| {
            let n = ps.len();
            let hwm: Vec<u64> = ps.iter().map(|p| p.end.hwm_kib).collect();
            let idle: Vec<u64> = ps
                .iter()
                .filter_map(|p| p.idle.map(|s| s.rss_kib))
                .collect();
            let cpu: f64 = ps.iter().map(|p| p.end.cpu_secs).sum();
            RoleFigures {
                role: role.to_owned(),
                processes: n,
                cpu_secs: round(cpu, 2),
                cpu_cores: round(cpu / wall_secs.max(1e-6), 2),
                cpu_secs_max: round(ps.iter().map(|p| p.end.cpu_secs).fold(0.0, f64::max), 2),
                peak_rss_kib_max: hwm.iter().copied().max().unwrap_or(0),
                peak_rss_kib_mean: hwm.iter().sum::<u64>() / n.max(1) as u64,
                idle_rss_kib_mean: (!idle.is_empty())
                    .then(|| idle.iter().sum::<u64>() / idle.len() as u64),
            }
        })
        .collect()
}

fn nonzero(m: BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    m.into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| (k, v as u64))
        .collect()
}

fn sum_by_label(peers: &[(Role, Scrape)], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (_, s) in peers {
        for (k, v) in s.by_label(name, label) {
            *out.entry(k).or_insert(0.0) += v;
        }
    }
    out
}

fn tracker_figures(c: &Collected) -> TrackerFigures {
    let t = &c.tracker_end;
    let ok = |s: &Scrape| {
        s.by_label("anomos_tracker_announces_total", "result")
            .get("ok")
            .copied()
    };
    let ok_end = ok(t).unwrap_or(0.0);
    let ok_phase = ok(&c.tracker_at_done).unwrap_or(0.0) - ok(&c.tracker_at_start).unwrap_or(0.0);
    let plan = t.histogram("anomos_tracker_plan_seconds");
    let relays = t.histogram("anomos_tracker_path_relays");
    TrackerFigures {
        announces: nonzero(t.by_label("anomos_tracker_announces_total", "result")),
        announces_per_sec: round(ok_end / c.tracker_secs.max(1e-6), 1),
        announces_per_sec_downloading: round(ok_phase / c.phase_secs.max(1e-6), 1),
        announce_latency: quantiles(&t.histogram("anomos_tracker_announce_seconds")),
        circuits_planned: t.sum("anomos_tracker_circuits_planned_total") as u64,
        plan: quantiles(&plan),
        plan_buckets: plan
            .per_bucket()
            .into_iter()
            .map(|(le, n)| Bucket {
                le_ms: le.is_finite().then(|| round(le * 1000.0, 3)),
                count: n as u64,
            })
            .collect(),
        path_relays: relays
            .per_bucket()
            .into_iter()
            .filter(|(le, n)| le.is_finite() && *n > 0.0)
            .map(|(le, n)| (format!("{le}"), n as u64))
            .collect(),
        peers_registered: t.sum("anomos_tracker_peers") as u64,
    }
}

/// The report.
pub fn build(a: &NetworkArgs, c: Collected) -> Report {
    let sum = |name: &str| c.peers.iter().map(|(_, s)| s.sum(name)).sum::<f64>() as u64;
    let mut setup = Hist::default();
    let mut relay_by_role: BTreeMap<String, u64> = BTreeMap::new();
    let mut relay_mib_by_role: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (role, s) in &c.peers {
        setup.add(&s.histogram("anomos_circuit_setup_seconds"));
        let relayed = s.sum("anomos_relay_bytes_total");
        *relay_by_role.entry(role.as_str().to_owned()).or_default() += relayed as u64;
        relay_mib_by_role
            .entry(role.as_str().to_owned())
            .or_default()
            .push(relayed / 1048576.0);
    }
    let tracker = tracker_figures(&c);
    let mean_relays = c.tracker_end.histogram("anomos_tracker_path_relays").mean();
    let per_circuit = mean_relays + 2.0;
    let estimate = |entries: u64| (entries as f64 / per_circuit).round() as u64;
    let live = c.live;
    let done: Vec<&Download> = c.downloads.iter().filter(|d| d.complete).collect();
    let bytes: u64 = done.iter().map(|d| d.bytes).sum();
    let rates: Vec<f64> = done.iter().filter_map(|d| d.mib_per_sec).collect();
    Report {
        mode: "network",
        network: c.network,
        relays: a.relays,
        seeders: a.seeders,
        downloaders: a.downloaders,
        torrents: a.torrents,
        processes: c.processes,
        namespaces: c.namespaces,
        bytes_per_torrent: a.size_bytes(),
        piece_size: c.piece_size,
        min_relays: a.min_relays,
        max_relays: a.max_relays,
        circuits_per_download: a.circuits,
        tracker_config: c.tracker_config.clone(),
        overlay_secs: round(c.overlay_secs, 2),
        overlay_links: c.overlay_links,
        completed: done.len(),
        intact: done.iter().filter(|d| d.intact).count(),
        throughput: Throughput {
            bytes,
            secs: round(c.phase_secs, 3),
            aggregate_mib_per_sec: round(bytes as f64 / 1048576.0 / c.phase_secs.max(1e-6), 2),
            per_download_mib_per_sec: spread(&rates),
        },
        circuits: Circuits {
            built: sum("anomos_circuits_built_total"),
            failed: sum("anomos_circuits_failed_total"),
            live_peak: live.exact_peak.unwrap_or_else(|| estimate(live.table_peak)),
            live_at_end: live.exact_end.unwrap_or_else(|| estimate(live.table_end)),
            live_exact: live.exact_peak.is_some(),
            live_peak_after_secs: live.peak_after_secs,
            live_half_after_secs: live.reached(0.5),
            live_series: live.series.clone(),
            table_entries_peak: live.table_peak,
            table_entries_at_end: live.table_end,
            mean_relays_per_path: round(mean_relays, 3),
            setup: quantiles(&setup),
        },
        probes: c.probes,
        traffic: Traffic {
            relay_bytes: sum("anomos_relay_bytes_total"),
            relay_bytes_by_role: relay_by_role,
            relay_mib_per_peer_by_role: relay_mib_by_role
                .iter()
                .map(|(role, v)| (role.clone(), spread(v)))
                .collect(),
            uploaded_bytes: sum("anomos_uploaded_bytes_total"),
            downloaded_bytes: sum("anomos_downloaded_bytes_total"),
        },
        tracker,
        roles: roles(&c.procs, c.wall_secs),
        problems: Problems {
            cells_dropped: nonzero(sum_by_label(
                &c.peers,
                "anomos_cells_dropped_total",
                "reason",
            )),
            protocol_violations: nonzero(sum_by_label(
                &c.peers,
                "anomos_protocol_violations_total",
                "kind",
            )),
            peer_announces: nonzero(sum_by_label(&c.peers, "anomos_announces_total", "result")),
            peers_unanswered: c.peers_unanswered,
        },
        downloads: c.downloads,
        process_detail: c.procs,
        memory: c.memory,
        wall_secs: round(c.wall_secs, 2),
        load_average_before: c.load_average_before,
        load_average_after: crate::procstat::load_average(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procstat::ProcSample;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: NetworkArgs,
    }

    fn proc(role: Role, index: usize, cpu: f64, hwm: u64, idle: Option<u64>) -> ProcFigures {
        ProcFigures {
            role: role.as_str().into(),
            index,
            pid: 1,
            idle: idle.map(|rss_kib| ProcSample {
                rss_kib,
                ..ProcSample::default()
            }),
            end: ProcSample {
                hwm_kib: hwm,
                cpu_secs: cpu,
                ..ProcSample::default()
            },
        }
    }

    const PEER: &str = "anomos_circuits_built_total 3\nanomos_circuits_failed_total 1\n\
        anomos_relay_bytes_total 1000\nanomos_uploaded_bytes_total 10\n\
        anomos_downloaded_bytes_total 20\n\
        anomos_circuit_setup_seconds_bucket{le=\"0.005\"} 2\n\
        anomos_circuit_setup_seconds_bucket{le=\"0.05\"} 3\n\
        anomos_circuit_setup_seconds_bucket{le=\"+Inf\"} 3\n\
        anomos_circuit_setup_seconds_sum 0.03\nanomos_circuit_setup_seconds_count 3\n\
        anomos_cells_dropped_total{reason=\"queue_full\"} 0\n\
        anomos_cells_dropped_total{reason=\"unknown_circuit\"} 2\n\
        anomos_announces_total{result=\"ok\"} 5\n";

    fn tracker(ok: u64) -> Scrape {
        Scrape::parse(&format!(
            "anomos_tracker_announces_total{{result=\"ok\"}} {ok}\n\
             anomos_tracker_announces_total{{result=\"stale\"}} 0\n\
             anomos_tracker_circuits_planned_total 12\nanomos_tracker_peers 9\n\
             anomos_tracker_plan_seconds_bucket{{le=\"0.0001\"}} 1\n\
             anomos_tracker_plan_seconds_bucket{{le=\"0.0002\"}} 4\n\
             anomos_tracker_plan_seconds_bucket{{le=\"+Inf\"}} 4\n\
             anomos_tracker_plan_seconds_sum 0.0005\nanomos_tracker_plan_seconds_count 4\n\
             anomos_tracker_path_relays_bucket{{le=\"1\"}} 0\n\
             anomos_tracker_path_relays_bucket{{le=\"2\"}} 6\n\
             anomos_tracker_path_relays_bucket{{le=\"3\"}} 12\n\
             anomos_tracker_path_relays_bucket{{le=\"+Inf\"}} 12\n\
             anomos_tracker_path_relays_sum 30\nanomos_tracker_path_relays_count 12\n\
             anomos_tracker_announce_seconds_bucket{{le=\"0.001\"}} {ok}\n\
             anomos_tracker_announce_seconds_bucket{{le=\"+Inf\"}} {ok}\n\
             anomos_tracker_announce_seconds_sum 0.01\n\
             anomos_tracker_announce_seconds_count {ok}\n"
        ))
    }

    #[test]
    fn a_report_adds_up_peers_tracker_and_processes() {
        let a = T::parse_from(["t", "--seeders", "1", "--downloaders", "2", "--size", "1"]).a;
        let c = Collected {
            network: "procs",
            processes: 4,
            namespaces: 0,
            piece_size: 65536,
            tracker_config: "x".into(),
            overlay_secs: 1.234,
            overlay_links: 5,
            downloads: vec![
                download(0, 0, 1 << 20, Some(2.0), true, None),
                download(1, 0, 1 << 20, None, false, Some("gone".into())),
            ],
            phase_secs: 2.0,
            peers: vec![
                (Role::Relay, Scrape::parse(PEER)),
                (Role::Downloader, Scrape::parse(PEER)),
            ],
            peers_unanswered: 1,
            tracker_at_start: tracker(10),
            tracker_at_done: tracker(30),
            tracker_end: tracker(40),
            tracker_secs: 8.0,
            live: Live {
                exact_peak: None,
                peak_after_secs: None,
                series: Vec::new(),
                exact_end: None,
                table_peak: 45,
                table_end: 9,
            },
            procs: vec![
                proc(Role::Relay, 0, 1.0, 2000, Some(1000)),
                proc(Role::Relay, 1, 3.0, 4000, Some(3000)),
                proc(Role::Downloader, 0, 0.5, 100, None),
            ],
            memory: Memory {
                rss_per_idle_peer_kib: 2000.0,
                basis: "b".into(),
                process_rss_before_peers_kib: None,
                process_rss_idle_kib: None,
                process_rss_end_kib: None,
            },
            wall_secs: 9.0,
            load_average_before: None,
            probes: Vec::new(),
        };
        let r = build(&a, c);
        assert_eq!((r.completed, r.intact), (1, 1));
        assert_eq!(r.downloads[0].mib_per_sec, Some(0.5));
        assert!(!r.downloads[1].intact);
        assert_eq!(r.throughput.aggregate_mib_per_sec, 0.5);
        let c = &r.circuits;
        assert_eq!((c.built, c.failed), (6, 2));
        assert_eq!(c.mean_relays_per_path, 2.5);
        // 45 table entries over 4.5 entries per circuit.
        assert_eq!((c.live_peak, c.live_at_end, c.live_exact), (10, 2, false));
        assert_eq!(c.setup.count, 6);
        assert_eq!(c.setup.p50_ms_at_most, Some(5.0));
        assert_eq!(c.setup.p99_ms_at_most, Some(50.0));
        assert_eq!(c.setup.mean_ms, 10.0);
        assert_eq!(r.traffic.relay_bytes, 2000);
        assert_eq!(r.traffic.relay_bytes_by_role["downloader"], 1000);
        let per = &r.traffic.relay_mib_per_peer_by_role["downloader"];
        assert_eq!((per.min, per.max), (0.0, 0.0), "1000 B is 0.00 MiB");
        let t = &r.tracker;
        assert_eq!(t.announces.get("ok"), Some(&40));
        assert!(
            !t.announces.contains_key("stale"),
            "zero results are left out"
        );
        assert_eq!(t.announces_per_sec, 5.0);
        assert_eq!(t.announces_per_sec_downloading, 10.0);
        assert_eq!(t.circuits_planned, 12);
        assert_eq!(t.plan.p50_ms_at_most, Some(0.2));
        assert_eq!(t.plan_buckets[0].count, 1);
        assert_eq!(t.plan_buckets[2].le_ms, None);
        assert_eq!(t.path_relays["2"], 6);
        assert_eq!(t.path_relays["3"], 6);
        assert_eq!(t.announce_latency.count, 40);
        assert_eq!(t.peers_registered, 9);
        let relay = r.roles.iter().find(|x| x.role == "relay").unwrap();
        assert_eq!(
            (relay.processes, relay.cpu_secs, relay.cpu_secs_max),
            (2, 4.0, 3.0)
        );
        assert_eq!(
            (relay.peak_rss_kib_max, relay.peak_rss_kib_mean),
            (4000, 3000)
        );
        assert_eq!(relay.idle_rss_kib_mean, Some(2000));
        let dl = r.roles.iter().find(|x| x.role == "downloader").unwrap();
        assert_eq!(dl.idle_rss_kib_mean, None);
        assert_eq!(r.problems.cells_dropped.get("unknown_circuit"), Some(&4));
        assert!(!r.problems.cells_dropped.contains_key("queue_full"));
        assert_eq!(r.problems.peer_announces["ok"], 10);
        assert_eq!(r.problems.peers_unanswered, 1);
        let text = r.text();
        assert!(text.contains("1/2 complete"), "{text}");
        assert!(text.contains("downloader 1 (torrent 0)"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["network"], "procs");
        assert_eq!(json["circuits"]["live_peak"], 10);
    }

    #[test]
    fn spreads_and_quantiles_of_nothing_are_zero() {
        assert_eq!(spread(&[]), Spread::default());
        let s = spread(&[3.0, 1.0, 2.0]);
        assert_eq!((s.min, s.median, s.mean, s.max), (1.0, 2.0, 2.0, 3.0));
        let q = quantiles(&Hist::default());
        assert_eq!((q.count, q.p99_ms_at_most, q.p99_ms_est), (0, None, None));
    }

    /// The burst's length is the first sample at the peak, not a later
    /// one at the same count.
    #[test]
    fn the_live_peak_notes_when_it_was_first_reached() {
        let mut live = Live::default();
        for (open, secs) in [(0, 0.1), (400, 1.2), (1000, 2.26), (1000, 9.0), (990, 12.0)] {
            live.see_exact(open, secs);
        }
        assert_eq!(live.exact_peak, Some(1000));
        assert_eq!(live.peak_after_secs, Some(2.3));
        assert_eq!(live.reached(0.4), Some(1.2));
        assert_eq!(
            live.series,
            vec![(0.1, 0), (1.2, 400), (2.3, 1000), (9.0, 1000), (12.0, 990)]
        );
    }
}
