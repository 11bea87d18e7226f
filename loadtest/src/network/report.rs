//! The report of a `network` run: its JSON shape and its terminal table.
//!
//! Every figure says where it comes from in its doc: a peer counter summed
//! over all peers, the tracker's own metrics, `/proc`, or the load
//! tester's clock. Histogram quantiles come twice: the upper bound of the
//! bucket holding them (a guarantee) and the linear estimate inside that
//! bucket (what Prometheus's `histogram_quantile` would show).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::procstat::ProcSample;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `network`.
    pub mode: &'static str,
    /// `inproc`, `procs` or `netns`.
    pub network: &'static str,
    /// Relay-only peers.
    pub relays: usize,
    /// Seeding peers (each seeds one torrent).
    pub seeders: usize,
    /// Downloading peers (each downloads one torrent).
    pub downloaders: usize,
    /// Distinct torrents.
    pub torrents: usize,
    /// Operating-system processes (tracker included; 1 in `inproc`).
    pub processes: usize,
    /// Network namespaces created (`netns`: one per peer plus the hub).
    pub namespaces: usize,
    /// Bytes of each torrent.
    pub bytes_per_torrent: u64,
    /// Piece size of the torrents.
    pub piece_size: u32,
    /// The tracker's `min_relays`.
    pub min_relays: usize,
    /// The tracker's `max_relays`.
    pub max_relays: usize,
    /// Circuits each download keeps open to sources.
    pub circuits_per_download: u16,
    /// Config lines the tracker got (the admin token masked).
    pub tracker_config: String,
    /// Seconds from the first relay's start until relays and seeders held
    /// the links the tracker assigned.
    pub overlay_secs: f64,
    /// Links among relays and seeders then (`anomos_neighbors_connected`
    /// summed, halved).
    pub overlay_links: u64,
    /// Every download.
    pub downloads: Vec<Download>,
    /// Downloads that completed.
    pub completed: usize,
    /// Completed downloads whose files equal the source byte for byte.
    pub intact: usize,
    /// Download rates.
    pub throughput: Throughput,
    /// Circuits.
    pub circuits: Circuits,
    /// Steady-state set-up probe phases (`inproc --probe`; empty without).
    pub probes: Vec<super::probe::ProbePhase>,
    /// Bytes moved (peer counters summed).
    pub traffic: Traffic,
    /// The tracker's own figures.
    pub tracker: TrackerFigures,
    /// CPU and memory by role.
    pub roles: Vec<RoleFigures>,
    /// CPU and memory of every process.
    pub process_detail: Vec<ProcFigures>,
    /// Memory of idle peers.
    pub memory: Memory,
    /// Counters that should stay at zero in a healthy run.
    pub problems: Problems,
    /// Seconds of the whole run.
    pub wall_secs: f64,
    /// Load average (1, 5, 15 min) before the run.
    pub load_average_before: Option<[f64; 3]>,
    /// After.
    pub load_average_after: Option<[f64; 3]>,
}

/// One download.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Download {
    /// Downloader number.
    pub peer: usize,
    /// Torrent number.
    pub torrent: usize,
    /// Bytes of the torrent.
    pub bytes: u64,
    /// Every piece verified and written.
    pub complete: bool,
    /// The written file equals the source.
    pub intact: bool,
    /// Start of the peer to completion (load tester's clock).
    pub secs: Option<f64>,
    /// `bytes / secs`.
    pub mib_per_sec: Option<f64>,
    /// Why it did not complete.
    pub error: Option<String>,
}

/// Download rates.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Throughput {
    /// Bytes of the completed downloads.
    pub bytes: u64,
    /// From the start of the downloads to the last completion.
    pub secs: f64,
    /// `bytes / secs`: all downloads together.
    pub aggregate_mib_per_sec: f64,
    /// Spread of the per-download rates.
    pub per_download_mib_per_sec: Spread,
}

/// Smallest, median, mean and largest of a set.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

/// Circuit figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Circuits {
    /// `anomos_circuits_built_total`, all peers.
    pub built: u64,
    /// `anomos_circuits_failed_total`, all peers.
    pub failed: u64,
    /// Most circuits open at once (originated, counted once each).
    pub live_peak: u64,
    /// Seconds from the downloads' start until `live_peak` was first seen
    /// (`inproc`): every set-up before it belongs to the start-up burst.
    pub live_peak_after_secs: Option<f64>,
    /// The same for half of `live_peak`.
    pub live_half_after_secs: Option<f64>,
    /// `(seconds since the downloads started, circuits open)`, ~1 a second.
    pub live_series: Vec<(f64, u64)>,
    /// Open at the end of the hold phase.
    pub live_at_end: u64,
    /// `live_*` counted from the downloads' own circuit lists (`inproc`);
    /// otherwise estimated as table entries ÷ (mean relays per path + 2).
    pub live_exact: bool,
    /// Most `anomos_circuits_active` summed over peers at once (each
    /// circuit has an entry at its originator, each relay and its exit).
    pub table_entries_peak: u64,
    /// The same at the end of the hold phase.
    pub table_entries_at_end: u64,
    /// Mean relays per planned path (the tracker's
    /// `anomos_tracker_path_relays`).
    pub mean_relays_per_path: f64,
    /// Grant → open at the originators: own peel, CREATE → CONFIRM and the
    /// e2e round trip (`anomos_circuit_setup_seconds`, all peers'
    /// histograms added).
    pub setup: Quantiles,
}

/// Quantiles of a Prometheus histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Quantiles {
    /// Observations.
    pub count: u64,
    /// Exact mean (sum ÷ count).
    pub mean_ms: f64,
    /// Upper bound of the bucket holding the median.
    pub p50_ms_at_most: Option<f64>,
    /// Same for p90.
    pub p90_ms_at_most: Option<f64>,
    /// Same for p99.
    pub p99_ms_at_most: Option<f64>,
    /// Median, linear inside its bucket.
    pub p50_ms_est: Option<f64>,
    /// p90, linear inside its bucket.
    pub p90_ms_est: Option<f64>,
    /// p99, linear inside its bucket.
    pub p99_ms_est: Option<f64>,
}

/// Bytes moved, from the peers' counters.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Traffic {
    /// `anomos_relay_bytes_total`, all peers.
    pub relay_bytes: u64,
    /// The same by role.
    pub relay_bytes_by_role: BTreeMap<String, u64>,
    /// MiB relayed per peer of each role: whether relaying is spread over
    /// a role's peers or piles up on a few.
    pub relay_mib_per_peer_by_role: BTreeMap<String, Spread>,
    /// `anomos_uploaded_bytes_total`, all peers.
    pub uploaded_bytes: u64,
    /// `anomos_downloaded_bytes_total`, all peers.
    pub downloaded_bytes: u64,
}

/// The tracker's figures, from its `/metrics`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrackerFigures {
    /// `anomos_tracker_announces_total` by result, whole run.
    pub announces: BTreeMap<String, u64>,
    /// Accepted announces per second over the whole run.
    pub announces_per_sec: f64,
    /// Accepted announces per second while the downloads ran.
    pub announces_per_sec_downloading: f64,
    /// Time to answer an accepted announce
    /// (`anomos_tracker_announce_seconds`).
    pub announce_latency: Quantiles,
    /// `anomos_tracker_circuits_planned_total`.
    pub circuits_planned: u64,
    /// Time to plan one announce's circuits (`anomos_tracker_plan_seconds`).
    pub plan: Quantiles,
    /// The plan-time histogram: bucket upper bound (ms, `null` = +Inf)
    /// and the announces in that bucket.
    pub plan_buckets: Vec<Bucket>,
    /// Planned paths by relay count (`anomos_tracker_path_relays`).
    pub path_relays: BTreeMap<String, u64>,
    /// `anomos_tracker_peers` at the end.
    pub peers_registered: u64,
}

/// One histogram bucket, not cumulative.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    /// Upper bound, ms (`None` for +Inf).
    pub le_ms: Option<f64>,
    /// Observations in the bucket.
    pub count: u64,
}

/// CPU and memory of all processes of one role.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoleFigures {
    /// `tracker`, `relay`, `seeder`, `downloader` or `inproc`.
    pub role: String,
    /// Processes.
    pub processes: usize,
    /// CPU seconds, all of them.
    pub cpu_secs: f64,
    /// CPU cores used on average over the run (`cpu_secs` ÷ wall time).
    pub cpu_cores: f64,
    /// CPU seconds of the busiest.
    pub cpu_secs_max: f64,
    /// Peak RSS (VmHWM) of the largest, KiB.
    pub peak_rss_kib_max: u64,
    /// Mean peak RSS, KiB.
    pub peak_rss_kib_mean: u64,
    /// Mean RSS once the overlay was up, before the downloads, KiB
    /// (downloaders: none).
    pub idle_rss_kib_mean: Option<u64>,
}

/// One process.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcFigures {
    /// Its role.
    pub role: String,
    /// Number within the role.
    pub index: usize,
    /// Its pid.
    pub pid: u32,
    /// Before the downloads (not for downloaders).
    pub idle: Option<ProcSample>,
    /// At the end of the hold phase (CPU, RSS, VmHWM).
    pub end: ProcSample,
}

/// Memory of idle peers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Memory {
    /// Resident memory one idle peer costs, KiB (links up, no circuit).
    pub rss_per_idle_peer_kib: f64,
    /// How that was measured.
    pub basis: String,
    /// `inproc`: the process's RSS before any peer started (tracker up), KiB.
    pub process_rss_before_peers_kib: Option<u64>,
    /// `inproc`: with the relays and seeders linked up and idle, KiB.
    pub process_rss_idle_kib: Option<u64>,
    /// `inproc`: at the end of the hold phase, KiB.
    pub process_rss_end_kib: Option<u64>,
}

/// Counters a healthy run keeps at zero (or explains).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Problems {
    /// `anomos_cells_dropped_total` by reason, all peers (non-zero only).
    pub cells_dropped: BTreeMap<String, u64>,
    /// `anomos_protocol_violations_total` by kind (non-zero only).
    pub protocol_violations: BTreeMap<String, u64>,
    /// The peers' `anomos_announces_total` by result.
    pub peer_announces: BTreeMap<String, u64>,
    /// Peers that did not answer the last scrape (exited or hung).
    pub peers_unanswered: usize,
}

/// `≤bound (≈estimate)`, or `>estimate` when the quantile lies in the
/// `+Inf` bucket (the estimate is then the largest finite bound).
fn quantile(bound: Option<f64>, est: Option<f64>) -> String {
    match (bound, est) {
        (Some(b), Some(e)) => format!("≤{b:.2} (≈{e:.2})"),
        (None, Some(e)) => format!(">{e:.2}"),
        _ => "-".to_owned(),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Quantiles {
    pub fn line(&self) -> String {
        format!(
            "p50 {} p90 {} p99 {} ms, mean {:.2} ms, n={}",
            quantile(self.p50_ms_at_most, self.p50_ms_est),
            quantile(self.p90_ms_at_most, self.p90_ms_est),
            quantile(self.p99_ms_at_most, self.p99_ms_est),
            self.mean_ms,
            self.count
        )
    }
}

impl Report {
    /// The terminal table.
    pub fn text(&self) -> String {
        let mut o = format!(
            "network ({}): {} relays, {} seeders, {} downloaders, {} torrent(s) of {:.1} MiB; \
             {} processes, {} namespaces; paths of {}-{} relays, {} circuits per download\n",
            self.network,
            self.relays,
            self.seeders,
            self.downloaders,
            self.torrents,
            self.bytes_per_torrent as f64 / 1048576.0,
            self.processes,
            self.namespaces,
            self.min_relays,
            self.max_relays,
            self.circuits_per_download
        );
        o += &format!(
            "  overlay up in {:.1} s ({} links among relays and seeders)\n",
            self.overlay_secs, self.overlay_links
        );
        let t = &self.throughput;
        let s = t.per_download_mib_per_sec;
        o += &format!(
            "  downloads: {}/{} complete, {} intact; aggregate {:.1} MiB/s over {:.1} s; \
             per download min {:.1} median {:.1} max {:.1} MiB/s\n",
            self.completed,
            self.downloads.len(),
            self.intact,
            t.aggregate_mib_per_sec,
            t.secs,
            s.min,
            s.median,
            s.max
        );
        for d in self.downloads.iter().filter(|d| !d.complete || !d.intact) {
            o += &format!(
                "    downloader {} (torrent {}): complete {}, intact {}, {}\n",
                d.peer,
                d.torrent,
                d.complete,
                d.intact,
                d.error.as_deref().unwrap_or("")
            );
        }
        let c = &self.circuits;
        o += &format!(
            "  circuits: built {}, failed {}; live peak {}{}{}, at end {}; table entries peak {}; \
             mean relays per path {:.2}\n",
            c.built,
            c.failed,
            c.live_peak,
            if c.live_exact { "" } else { " (est.)" },
            match (c.live_half_after_secs, c.live_peak_after_secs) {
                (Some(h), Some(p)) => {
                    format!(" (half of it {h:.1} s, all {p:.1} s after the downloads started)")
                }
                _ => String::new(),
            },
            c.live_at_end,
            c.table_entries_peak,
            c.mean_relays_per_path
        );
        o += &format!(
            "  circuit set-up (grant→open at the originators): {}\n",
            c.setup.line()
        );
        for p in &self.probes {
            o += &p.text();
        }
        let tr = &self.traffic;
        o += &format!(
            "  bytes: relayed {:.1} MiB, uploaded {:.1} MiB, downloaded {:.1} MiB\n",
            tr.relay_bytes as f64 / 1048576.0,
            tr.uploaded_bytes as f64 / 1048576.0,
            tr.downloaded_bytes as f64 / 1048576.0
        );
        for (role, bytes) in &tr.relay_bytes_by_role {
            let per = tr
                .relay_mib_per_peer_by_role
                .get(role)
                .copied()
                .unwrap_or_default();
            o += &format!(
                "    relayed by {role}s: {:.1} MiB; per peer min {:.1} median {:.1} max {:.1} MiB\n",
                *bytes as f64 / 1048576.0,
                per.min,
                per.median,
                per.max
            );
        }
        let k = &self.tracker;
        o += &format!(
            "  tracker: announces {:?}; {:.1}/s over the run, {:.1}/s while downloading; \
             {} circuits planned; {} peers\n",
            k.announces,
            k.announces_per_sec,
            k.announces_per_sec_downloading,
            k.circuits_planned,
            k.peers_registered
        );
        o += &format!("    announce latency: {}\n", k.announce_latency.line());
        o += &format!("    plan time:        {}\n", k.plan.line());
        o += "  role         procs   CPU s  cores  CPU s max  idle RSS MiB  peak RSS MiB (mean / max)\n";
        for r in &self.roles {
            o += &format!(
                "  {:<12} {:>5} {:>7.1} {:>6.2} {:>10.1} {:>13} {:>9.1} / {:.1}\n",
                r.role,
                r.processes,
                r.cpu_secs,
                r.cpu_cores,
                r.cpu_secs_max,
                r.idle_rss_kib_mean
                    .map_or_else(|| "-".to_owned(), |k| format!("{:.1}", mib(k))),
                mib(r.peak_rss_kib_mean),
                mib(r.peak_rss_kib_max)
            );
        }
        o += &format!(
            "  RSS per idle peer: {:.0} KiB ({})\n",
            self.memory.rss_per_idle_peer_kib, self.memory.basis
        );
        let p = &self.problems;
        if !p.cells_dropped.is_empty()
            || !p.protocol_violations.is_empty()
            || p.peers_unanswered > 0
        {
            o += &format!(
                "  cells dropped {:?}, protocol violations {:?}, peers not answering {}\n",
                p.cells_dropped, p.protocol_violations, p.peers_unanswered
            );
        }
        o += &format!(
            "  wall {:.1} s; load average before {:?}, after {:?}\n",
            self.wall_secs, self.load_average_before, self.load_average_after
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_in_the_inf_bucket_show_as_beyond() {
        assert_eq!(quantile(Some(5.0), Some(4.25)), "≤5.00 (≈4.25)");
        assert_eq!(quantile(None, Some(5000.0)), ">5000.00");
        assert_eq!(quantile(None, None), "-");
        let q = Quantiles {
            count: 3,
            p99_ms_est: Some(5000.0),
            ..Quantiles::default()
        };
        assert!(q.line().contains("p99 >5000.00 ms"), "{}", q.line());
    }
}
