//! The only place that names the tracker's metrics.
//!
//! Each tracker owns its own [`prometheus::Registry`] (never the global
//! one), so tests can run several trackers in one process. Labels come from
//! the fixed [`AnnounceResult`] set: never a peer, address, infohash or
//! circuit.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Outcome of one announce, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceResult {
    /// Accepted and answered.
    Ok,
    /// Undecodable body.
    BadRequest,
    /// Body over the size limit.
    TooLarge,
    /// Signature did not verify.
    Unauthorized,
    /// Timestamp outside the accepted skew.
    Stale,
    /// Nonce seen before.
    Replayed,
    /// Address or identity over its rate.
    RateLimited,
    /// The tracker failed.
    Internal,
}

impl AnnounceResult {
    /// Every value, for pre-registering label sets.
    pub const ALL: [AnnounceResult; 8] = [
        AnnounceResult::Ok,
        AnnounceResult::BadRequest,
        AnnounceResult::TooLarge,
        AnnounceResult::Unauthorized,
        AnnounceResult::Stale,
        AnnounceResult::Replayed,
        AnnounceResult::RateLimited,
        AnnounceResult::Internal,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AnnounceResult::Ok => "ok",
            AnnounceResult::BadRequest => "bad_request",
            AnnounceResult::TooLarge => "too_large",
            AnnounceResult::Unauthorized => "unauthorized",
            AnnounceResult::Stale => "stale",
            AnnounceResult::Replayed => "replayed",
            AnnounceResult::RateLimited => "rate_limited",
            AnnounceResult::Internal => "internal",
        }
    }
}

/// The tracker's metrics and their registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `anomos_tracker_peers`: registered peers.
    pub peers: IntGauge,
    announces: IntCounterVec,
    /// `anomos_tracker_circuits_planned_total`.
    pub circuits_planned: IntCounter,
    /// `anomos_tracker_path_relays`: relays per planned path.
    pub path_relays: Histogram,
    /// `anomos_tracker_plan_seconds`: time to plan one announce's circuits.
    pub plan_seconds: Histogram,
    /// `anomos_tracker_announce_seconds`: time the HTTPS handler took to
    /// answer one accepted announce (body read to response built), so load
    /// tests of whole networks read the tracker's latency from the tracker.
    pub announce_seconds: Histogram,
    /// `anomos_tracker_setup_failures_total`: circuit set-up failures
    /// originators reported (for circuits this tracker granted them).
    pub setup_failures: IntCounter,
    /// `anomos_tracker_relays_excluded`: relays given no relay hops now for
    /// failing set-ups clearly more often than their peers.
    pub relays_excluded: IntGauge,
    /// `anomos_tracker_bad_source_reports_total`: grants originators
    /// reported for a source that broke the piece protocol (each makes the
    /// tracker avoid that source in the reporter's plans).
    pub bad_sources: IntCounter,
}

impl Metrics {
    /// Create and register every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let peers = IntGauge::new("anomos_tracker_peers", "Registered peers")?;
        let announces = IntCounterVec::new(
            Opts::new("anomos_tracker_announces_total", "Announces by result"),
            &["result"],
        )?;
        let circuits_planned =
            IntCounter::new("anomos_tracker_circuits_planned_total", "Circuits planned")?;
        let path_relays = Histogram::with_opts(
            HistogramOpts::new("anomos_tracker_path_relays", "Relays per planned path")
                .buckets(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        )?;
        let plan_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "anomos_tracker_plan_seconds",
                "Time to plan one announce's circuits",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        let announce_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "anomos_tracker_announce_seconds",
                "Time to answer one accepted announce",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
        )?;
        let setup_failures = IntCounter::new(
            "anomos_tracker_setup_failures_total",
            "Circuit set-up failures reported by originators",
        )?;
        let relays_excluded = IntGauge::new(
            "anomos_tracker_relays_excluded",
            "Relays excluded from paths for failing set-ups",
        )?;
        let bad_sources = IntCounter::new(
            "anomos_tracker_bad_source_reports_total",
            "Grants reported by their originators for a source that broke the piece protocol",
        )?;
        registry.register(Box::new(bad_sources.clone()))?;
        registry.register(Box::new(setup_failures.clone()))?;
        registry.register(Box::new(relays_excluded.clone()))?;
        registry.register(Box::new(peers.clone()))?;
        registry.register(Box::new(announces.clone()))?;
        registry.register(Box::new(circuits_planned.clone()))?;
        registry.register(Box::new(path_relays.clone()))?;
        registry.register(Box::new(plan_seconds.clone()))?;
        registry.register(Box::new(announce_seconds.clone()))?;
        for r in AnnounceResult::ALL {
            announces.with_label_values(&[r.as_str()]);
        }
        Ok(Metrics {
            registry,
            peers,
            announces,
            circuits_planned,
            path_relays,
            plan_seconds,
            announce_seconds,
            setup_failures,
            relays_excluded,
            bad_sources,
        })
    }

    /// Count one announce outcome.
    pub fn announce(&self, r: AnnounceResult) {
        self.announces.with_label_values(&[r.as_str()]).inc();
    }

    /// Announces counted with this outcome so far.
    pub fn announces(&self, r: AnnounceResult) -> u64 {
        self.announces.with_label_values(&[r.as_str()]).get()
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_trackers_in_one_process_have_separate_metrics() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.announce(AnnounceResult::Stale);
        assert_eq!(a.announces(AnnounceResult::Stale), 1);
        assert_eq!(b.announces(AnnounceResult::Stale), 0);
        let text = a.render();
        assert!(text.contains("anomos_tracker_announces_total{result=\"stale\"} 1"));
        assert!(text.contains("anomos_tracker_plan_seconds_bucket"));
        assert!(text.contains("anomos_tracker_announce_seconds_count 0"));
        assert!(text.contains("anomos_tracker_peers 0"));
    }
}
