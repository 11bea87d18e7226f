//! Every metric the peer exports, and the only place that names them.
//!
//! Names are fixed by the design (dashboards and alerts rely on them). Labels
//! come from small fixed sets (`&'static str` kinds and reasons), never a
//! peer, address, infohash or circuit. Each process owns one `Registry`, so
//! tests can run several peers in one process.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Drop reasons of the relay core, registered at zero when the metrics are
/// made: a series that first appears at 1 looks like no change to `rate()`
/// and `increase()`, so without this the first drop would never alert, and
/// dashboards would show "no data" instead of 0. A reason missing here is
/// still counted, from its first occurrence on.
pub const DROP_REASONS: [&str; 9] = [
    "unknown_circuit",
    "circuit_closing",
    "circuit_limit",
    "peel_backlog",
    "control_overflow",
    "setup_timeout",
    "drain_timeout",
    "unknown_nid",
    "not_served",
];

/// Violation kinds of link set-up and the relay core, registered at zero
/// for the same reason as [`DROP_REASONS`].
pub const VIOLATION_KINDS: [&str; 10] = [
    "bad_hello",
    "bad_pin",
    "unknown_nid",
    "malformed_cell",
    "credit",
    "circuit_id_side",
    "circuit_id_in_use",
    "unexpected_confirm",
    "unexpected_data",
    "unexpected_break_ack",
];

/// Handles to the peer's metrics. Cheap to clone (the handles are `Arc`s).
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Bytes of DATA cells this peer forwarded for others (both directions).
    pub relay_bytes: IntCounter,
    /// Circuits with an entry in this peer's circuit table (relayed or local).
    pub circuits_active: IntGauge,
    /// DATA cells held in this peer's circuit queues (relayed and local
    /// ends): what credit windows bound while a next hop stalls.
    pub queued_cells: IntGauge,
    /// Neighbour links up (TLS + hello verified).
    pub neighbors_connected: IntGauge,
    /// Payload bytes this peer served as a source.
    pub uploaded_bytes: IntCounter,
    /// Payload bytes this peer received as a downloader.
    pub downloaded_bytes: IntCounter,
    /// Cells dropped, by reason (`unknown_circuit`, `queue_full`, …).
    pub cells_dropped: IntCounterVec,
    /// Protocol violations by a neighbour, by kind (`malformed_cell`, `credit`, …).
    pub protocol_violations: IntCounterVec,
    /// Circuits this peer originated that reached the open state.
    pub circuits_built: IntCounter,
    /// Circuits this peer originated that failed before or after opening.
    pub circuits_failed: IntCounter,
    /// Time from sending CREATE to an open end-to-end channel (originator).
    pub circuit_setup_seconds: Histogram,
    /// Announces sent to the tracker, by result (`ok`, `error`, `unreachable`).
    pub announces: IntCounterVec,
}

impl Metrics {
    /// Create and register every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter_vec =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let circuit_setup_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "anomos_circuit_setup_seconds",
                "Time from CREATE to an open end-to-end channel, at the originator.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        registry.register(Box::new(circuit_setup_seconds.clone()))?;
        let m = Self {
            relay_bytes: counter(
                "anomos_relay_bytes_total",
                "Bytes of DATA cells relayed for others.",
            )?,
            circuits_active: gauge(
                "anomos_circuits_active",
                "Circuits in this peer's circuit table.",
            )?,
            queued_cells: gauge(
                "anomos_relay_queued_cells",
                "DATA cells held in circuit queues.",
            )?,
            neighbors_connected: gauge("anomos_neighbors_connected", "Neighbour links up.")?,
            uploaded_bytes: counter(
                "anomos_uploaded_bytes_total",
                "Payload bytes served as a source.",
            )?,
            downloaded_bytes: counter(
                "anomos_downloaded_bytes_total",
                "Payload bytes received as a downloader.",
            )?,
            cells_dropped: counter_vec(
                "anomos_cells_dropped_total",
                "Cells dropped, by reason.",
                "reason",
            )?,
            protocol_violations: counter_vec(
                "anomos_protocol_violations_total",
                "Protocol violations by neighbours, by kind.",
                "kind",
            )?,
            circuits_built: counter(
                "anomos_circuits_built_total",
                "Originated circuits that opened.",
            )?,
            circuits_failed: counter(
                "anomos_circuits_failed_total",
                "Originated circuits that failed.",
            )?,
            circuit_setup_seconds,
            announces: counter_vec(
                "anomos_announces_total",
                "Announces sent, by result.",
                "result",
            )?,
            registry,
        };
        for reason in DROP_REASONS {
            m.cells_dropped.with_label_values(&[reason]);
        }
        for kind in VIOLATION_KINDS {
            m.protocol_violations.with_label_values(&[kind]);
        }
        Ok(m)
    }

    /// Count a dropped cell. `reason` must come from a fixed set.
    pub fn cell_dropped(&self, reason: &'static str) {
        self.cells_dropped.with_label_values(&[reason]).inc();
    }

    /// Count a protocol violation. `kind` must come from a fixed set.
    pub fn violation(&self, kind: &'static str) {
        self.protocol_violations.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_design_names() {
        let m = Metrics::new().expect("metrics");
        m.cell_dropped("unknown_circuit");
        m.violation("malformed_cell");
        m.relay_bytes.inc_by(1019);
        let text = m.render();
        for name in [
            "anomos_relay_bytes_total 1019",
            "anomos_circuits_active",
            "anomos_relay_queued_cells 0",
            "anomos_neighbors_connected",
            "anomos_uploaded_bytes_total",
            "anomos_downloaded_bytes_total",
            "anomos_cells_dropped_total{reason=\"unknown_circuit\"} 1",
            "anomos_protocol_violations_total{kind=\"malformed_cell\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn known_reasons_and_kinds_start_at_zero() {
        let text = Metrics::new().expect("metrics").render();
        for reason in DROP_REASONS {
            let line = format!("anomos_cells_dropped_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&line), "missing {line}");
        }
        for kind in VIOLATION_KINDS {
            let line = format!("anomos_protocol_violations_total{{kind=\"{kind}\"}} 0");
            assert!(text.contains(&line), "missing {line}");
        }
    }
}
