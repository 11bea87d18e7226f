//! The steady-state set-up probe of `network --mode inproc` (`--probe N`).
//!
//! The run's own set-up figure covers only the circuits the downloads ask
//! for while the network ramps up. The probe asks for new circuits one at
//! a time while many are already live, so the figure is that of a network
//! holding its circuits, not of its start-up burst:
//!
//! * probe origins (relay-only peers added for the probe) first open
//!   `--probe-hold` idle circuits to probe exits (relay-only peers serving
//!   an infohash of their own, which hold every circuit until its other
//!   end lets go) and hold them to the end of the run;
//! * phase `bulk`: once the downloads hold at least half of their
//!   circuits, `--probe` circuits, one after the other, from the probe
//!   origins (in turn) to the torrent's seeders, each through the normal
//!   tracker grant path (`want_circuits(infohash, 1)`), timed from the
//!   request to the open stream and closed at once;
//! * phase `idle`: the same after every download ended, with the held
//!   circuits still open and no bulk data moving.
//!
//! Each probe samples the live circuits at its request (the downloads'
//! open circuits, read every 100 ms, plus the held circuits still open),
//! and whether the downloads were still running. This file holds the pure
//! part (the figures of a phase) and the report's shape.

use serde::Serialize;

use super::figures::quantiles;
use super::prom::Hist;
use super::report::Quantiles;

/// One probe circuit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Request → open stream, µs; `None` when it did not open in time.
    pub request_to_open_us: Option<u64>,
    /// Live circuits when it was asked for.
    pub live: u64,
    /// Whether any download was still running when it was asked for.
    pub bulk: bool,
}

/// The figures of one probe phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProbePhase {
    /// `bulk` (during the downloads) or `idle` (after them).
    pub phase: String,
    /// Probe circuits asked for.
    pub probes: usize,
    /// Those that opened within the per-probe limit.
    pub opened: usize,
    /// Probes asked for while at least one download was still running.
    pub probes_during_bulk: usize,
    /// Fewest live circuits sampled at a probe's request.
    pub live_min: u64,
    /// Most live circuits sampled at a probe's request.
    pub live_max: u64,
    /// Of those, idle circuits held by the probe origins (at the phase's
    /// start).
    pub held: u64,
    /// Request → open stream at the caller (exact, nearest rank), ms.
    pub request_to_open: Exact,
    /// Grant → open at the probe origins (their
    /// `anomos_circuit_setup_seconds` over the phase only).
    pub grant_to_open: Quantiles,
    /// CPU cores the whole process used during the phase.
    pub process_cores: f64,
    /// Seconds the phase took.
    pub secs: f64,
    /// 1-minute load average at the phase's end.
    pub load_1m: Option<f64>,
}

/// Exact quantiles of a small sample, ms.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Exact {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Whether the bulk phase may start: the downloads hold at least half of
/// the circuits they want (`wanted` = downloaders × `--circuits`), so the
/// probes meet the downloads' bulk transfer, not their first set-ups.
pub fn bulk_ready(open: u64, wanted: u64) -> bool {
    wanted > 0 && open * 2 >= wanted
}

/// Nearest-rank quantile of sorted values: the smallest value with at
/// least `q` of the values at or below it (0 for none).
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Exact quantiles of µs values, in ms.
pub fn exact(values_us: &[u64]) -> Exact {
    let mut v = values_us.to_vec();
    v.sort_unstable();
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<u64>() as f64 / v.len() as f64
    };
    Exact {
        p50_ms: ms(nearest_rank(&v, 0.5)),
        p90_ms: ms(nearest_rank(&v, 0.9)),
        p99_ms: ms(nearest_rank(&v, 0.99)),
        max_ms: ms(v.last().copied().unwrap_or(0)),
        mean_ms: (mean / 10.0).round() / 100.0,
    }
}

/// What a phase measured besides its samples.
#[derive(Debug, Clone, Default)]
pub struct PhaseContext {
    /// Idle circuits held at the phase's start.
    pub held: u64,
    /// The probe origins' set-up histogram over the phase.
    pub origins_setup: Hist,
    /// Process CPU seconds over the phase.
    pub cpu_secs: f64,
    /// Wall seconds of the phase.
    pub secs: f64,
    /// 1-minute load average at the end.
    pub load_1m: Option<f64>,
}

/// The figures of a phase from its samples.
pub fn summarize(phase: &str, samples: &[Sample], ctx: &PhaseContext) -> ProbePhase {
    let times: Vec<u64> = samples
        .iter()
        .filter_map(|s| s.request_to_open_us)
        .collect();
    let live = samples.iter().map(|s| s.live);
    ProbePhase {
        phase: phase.to_owned(),
        probes: samples.len(),
        opened: times.len(),
        probes_during_bulk: samples.iter().filter(|s| s.bulk).count(),
        live_min: live.clone().min().unwrap_or(0),
        live_max: live.max().unwrap_or(0),
        held: ctx.held,
        request_to_open: exact(&times),
        grant_to_open: quantiles(&ctx.origins_setup),
        process_cores: if ctx.secs > 0.0 {
            (ctx.cpu_secs / ctx.secs * 100.0).round() / 100.0
        } else {
            0.0
        },
        secs: (ctx.secs * 10.0).round() / 10.0,
        load_1m: ctx.load_1m,
    }
}

impl ProbePhase {
    /// Lines of the terminal table.
    pub fn text(&self) -> String {
        if self.probes == 0 {
            return format!(
                "  probe {}: none asked for (bulk: the downloads never held half their \
                 circuits while running)\n",
                self.phase
            );
        }
        let r = &self.request_to_open;
        let bulk = match self.probes_during_bulk {
            0 => "no bulk traffic".to_owned(),
            n if n == self.probes => "bulk downloads running".to_owned(),
            n => format!("bulk downloads running for {n} of them"),
        };
        format!(
            "  probe {}: {}/{} opened, {bulk}; live circuits {}..{} ({} held idle); \
             request→open p50 {:.1} p90 {:.1} p99 {:.1} max {:.1} ms, mean {:.1} ms\n    \
             grant→open at the probe origins: {}; process {:.2} cores over {:.1} s, load {}\n",
            self.phase,
            self.opened,
            self.probes,
            self.live_min,
            self.live_max,
            self.held,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.mean_ms,
            self.grant_to_open.line(),
            self.process_cores,
            self.secs,
            self.load_1m
                .map_or_else(|| "-".to_owned(), |l| format!("{l:.2}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::prom::Scrape;

    #[test]
    fn bulk_starts_at_half_the_wanted_circuits() {
        assert!(!bulk_ready(499, 1_000));
        assert!(bulk_ready(500, 1_000));
        assert!(bulk_ready(3, 5));
        assert!(!bulk_ready(2, 5));
        assert!(!bulk_ready(0, 0));
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&v, 0.5), 50);
        assert_eq!(nearest_rank(&v, 0.9), 90);
        assert_eq!(nearest_rank(&v, 0.99), 99);
        assert_eq!(nearest_rank(&v, 1.0), 100);
        assert_eq!(nearest_rank(&v, 0.0), 1);
        assert_eq!(nearest_rank(&[7], 0.99), 7);
        assert_eq!(nearest_rank(&[], 0.5), 0);
        // Ten values: p99 is the largest, p90 the ninth.
        let t: Vec<u64> = (1..=10).map(|x| x * 10).collect();
        assert_eq!(nearest_rank(&t, 0.99), 100);
        assert_eq!(nearest_rank(&t, 0.9), 90);
    }

    #[test]
    fn exact_sorts_and_converts_to_ms() {
        let e = exact(&[3_000, 1_000, 2_000, 10_500]);
        assert_eq!(e.p50_ms, 2.0);
        assert_eq!(e.p99_ms, 10.5);
        assert_eq!(e.max_ms, 10.5);
        assert_eq!(e.mean_ms, 4.13);
        assert_eq!(exact(&[]), Exact::default());
    }

    #[test]
    fn a_phase_counts_failures_live_range_and_bulk() {
        let s = |t: Option<u64>, live, bulk| Sample {
            request_to_open_us: t,
            live,
            bulk,
        };
        let samples = [
            s(Some(4_000), 1_200, true),
            s(None, 1_150, true),
            s(Some(6_000), 1_010, false),
        ];
        let h = Scrape::parse(
            "anomos_circuit_setup_seconds_bucket{le=\"0.005\"} 1\n\
             anomos_circuit_setup_seconds_bucket{le=\"+Inf\"} 2\n\
             anomos_circuit_setup_seconds_sum 0.01\nanomos_circuit_setup_seconds_count 2\n",
        )
        .histogram("anomos_circuit_setup_seconds");
        let ctx = PhaseContext {
            held: 1_000,
            origins_setup: h,
            cpu_secs: 3.0,
            secs: 2.0,
            load_1m: Some(2.5),
        };
        let p = summarize("bulk", &samples, &ctx);
        assert_eq!((p.probes, p.opened, p.probes_during_bulk), (3, 2, 2));
        assert_eq!((p.live_min, p.live_max, p.held), (1_010, 1_200, 1_000));
        assert_eq!(p.request_to_open.p50_ms, 4.0);
        assert_eq!(p.request_to_open.max_ms, 6.0);
        assert_eq!(p.grant_to_open.count, 2);
        assert_eq!(p.process_cores, 1.5);
        let t = p.text();
        assert!(t.contains("2/3 opened"), "{t}");
        assert!(t.contains("running for 2 of them"), "{t}");
        assert!(t.contains("1010..1200"), "{t}");
        let idle = summarize("idle", &[s(Some(1_000), 1_000, false)], &ctx);
        assert!(idle.text().contains("no bulk traffic"));
        let none = summarize("bulk", &[], &PhaseContext::default());
        assert!(none.text().contains("none asked for"), "{}", none.text());
    }
}
