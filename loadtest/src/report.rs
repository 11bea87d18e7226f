//! Figures of one phase of a run, and writing reports as JSON.
//!
//! Every mode of the load tester reports the same per-phase shape (counts,
//! rate, latency quantiles, errors by HTTP status), so scripts comparing
//! runs read one format. Errors are keyed by status code as a string, or
//! `transport` (connect, TLS, timeout, closed connection) and
//! `bad-response` (a 200 whose body did not decode).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::histogram::Histogram;

/// Error key for failures below HTTP.
pub const TRANSPORT: &str = "transport";
/// Error key for a 200 whose body is not a valid response.
pub const BAD_RESPONSE: &str = "bad-response";

/// Latency quantiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

impl From<&Histogram> for Latency {
    fn from(h: &Histogram) -> Self {
        Latency {
            p50_us: h.quantile(0.50),
            p90_us: h.quantile(0.90),
            p99_us: h.quantile(0.99),
            p999_us: h.quantile(0.999),
            max_us: h.max(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Raw tallies of a phase, kept per connection task and merged.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Latency of successful announces, µs.
    pub latency: Histogram,
    /// Successful announces.
    pub ok: u64,
    /// Failures by key.
    pub errors: BTreeMap<String, u64>,
    /// Announces signed during the phase (not ahead of it).
    pub signed_live: u64,
}

impl Tally {
    /// Count one failure under `key`.
    pub fn error(&mut self, key: &str) {
        *self.errors.entry(key.to_owned()).or_default() += 1;
    }

    /// Add another tally.
    pub fn merge(&mut self, other: &Tally) {
        self.latency.merge(&other.latency);
        self.ok += other.ok;
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.signed_live += other.signed_live;
    }

    /// Total failures.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The phase's figures over `secs` seconds.
    pub fn summary(&self, secs: f64) -> Phase {
        Phase {
            ok: self.ok,
            failed: self.failed(),
            errors: self.errors.clone(),
            secs: (secs * 1000.0).round() / 1000.0,
            per_sec: if secs > 0.0 {
                (self.ok as f64 / secs).round()
            } else {
                0.0
            },
            latency: Latency::from(&self.latency),
            signed_live: self.signed_live,
        }
    }
}

/// Figures of one phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Phase {
    /// Successful announces.
    pub ok: u64,
    /// Failed announces.
    pub failed: u64,
    /// Failures by HTTP status (or `transport`, `bad-response`).
    pub errors: BTreeMap<String, u64>,
    /// Length of the measured window.
    pub secs: f64,
    /// Successful announces per second.
    pub per_sec: f64,
    /// Latency of successful announces.
    pub latency: Latency,
    /// Announces signed inside the phase (client CPU competing with the tracker).
    pub signed_live: u64,
}

impl Phase {
    /// One line for the terminal.
    pub fn line(&self, name: &str) -> String {
        let l = &self.latency;
        format!(
            "{name}: {} ok, {} failed {:?} in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ok,
            self.failed,
            self.errors,
            self.secs,
            self.per_sec,
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.max_us)
        )
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Write `report` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, report: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_summarise() {
        let mut a = Tally {
            ok: 3,
            ..Tally::default()
        };
        for v in [1000, 2000, 3000] {
            a.latency.record(v);
        }
        a.error("429");
        let mut b = Tally {
            ok: 1,
            ..Tally::default()
        };
        b.latency.record(4000);
        b.error("429");
        b.error(TRANSPORT);
        b.signed_live = 2;
        a.merge(&b);
        let p = a.summary(2.0);
        assert_eq!((p.ok, p.failed, p.signed_live), (4, 3, 2));
        assert_eq!(p.errors["429"], 2);
        assert_eq!(p.per_sec, 2.0);
        assert_eq!(p.latency.max_us, 4000);
        assert!(p.line("x").contains("4 ok"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.json");
        write_json(&f, &p).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        assert_eq!(v["errors"]["transport"], 1);
    }
}
