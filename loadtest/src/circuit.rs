//! `circuit`: the peer network layer end to end on 127.0.0.1.
//!
//! One run starts a tracker (same-IP neighbours allowed, every circuit
//! exactly `--relays` relays long, a short announce interval), `R` `anomos
//! relay` processes and two endpoint processes (this binary re-executed as
//! `circuit-endpoint`, each hosting an in-process peer; see [`endpoint`]).
//! Once the overlay has linked up it measures, in order:
//!
//! 1. plain TLS: the exit streams `--size` MiB over a direct TLS 1.3
//!    connection (the links' TLS settings, fresh self-signed certificates)
//!    to the origin, which times and checks it;
//! 2. the same bytes from the exit through one circuit, checked, with the
//!    CPU each process used meanwhile, and the ratio circuit / plain;
//! 3. circuit set-up: `--circuits` circuits one after another, each timed
//!    from `want_circuits` to the open stream (this includes the announce
//!    that asks the tracker for the grant), and CREATE → open from the
//!    origin's `anomos_circuit_setup_seconds` histogram;
//! 4. memory: circuits are opened up to `--idle-circuits` and held idle;
//!    each relay's `anomos_circuits_active` and `VmRSS` are read, against
//!    its RSS just before (and at start-up).
//!
//! The figures go to the terminal and, with `--json`, to a file. The whole
//! run is bounded by `--timeout`; every child is killed when the run ends,
//! fails or panics (kill-on-drop guards), and endpoints also exit when
//! their stdin closes or their own deadline passes.

#[path = "circuit/children.rs"]
pub mod children;
#[path = "circuit/endpoint.rs"]
pub mod endpoint;
#[path = "circuit/pattern.rs"]
pub mod pattern;
#[path = "circuit/run.rs"]
mod run;

use std::path::PathBuf;

use serde::Serialize;

use crate::procstat::ProcSample;
use crate::report::Latency;
use pattern::Transfer;
pub use run::run;

/// Command line of `anomos-loadtest circuit`.
#[derive(Debug, Clone, clap::Args)]
pub struct CircuitArgs {
    /// Relays on every circuit (the tracker's min_relays = max_relays).
    #[arg(long, default_value_t = 2)]
    pub relays: usize,
    /// `anomos relay` processes.
    #[arg(long, default_value_t = 6)]
    pub relay_processes: usize,
    /// MiB per transfer (plain TLS and circuit).
    #[arg(long, default_value_t = 256)]
    pub size: u64,
    /// Circuits opened one after another for the set-up latency.
    #[arg(long, default_value_t = 200)]
    pub circuits: usize,
    /// Circuits held idle for the memory reading (set-up ones included).
    #[arg(long, default_value_t = 1000)]
    pub idle_circuits: usize,
    /// Announce interval the tracker gives peers, seconds.
    #[arg(long, default_value_t = 5)]
    pub announce_interval: u64,
    /// Longest whole run, seconds; everything is killed after it.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// The tracker binary [default: anomos-tracker next to this executable].
    #[arg(long)]
    pub tracker_bin: Option<PathBuf>,
    /// The peer binary [default: anomos next to this executable].
    #[arg(long)]
    pub peer_bin: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The whole report of a `circuit` run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `circuit`.
    pub mode: &'static str,
    /// Relays per circuit asked of the tracker.
    pub relays_per_circuit: usize,
    /// Relay processes.
    pub relay_processes: usize,
    /// Bytes per transfer.
    pub bytes: u64,
    /// Config lines the tracker got.
    pub tracker_config: String,
    /// Seconds until the overlay had linked up.
    pub overlay_secs: f64,
    /// Direct TLS between the endpoint processes, over the links' buffered
    /// socket (`anomos_peer::link::link_socket`): the links' whole stack.
    pub plain: Transfer,
    /// TLS version and cipher suite of the plain connection (the links use
    /// the same settings).
    pub plain_cipher: String,
    /// Through one circuit.
    pub circuit: Transfer,
    /// Relays on that circuit.
    pub circuit_relays: usize,
    /// circuit MiB/s ÷ plain MiB/s.
    pub ratio: f64,
    /// Direct TLS straight on the TCP socket (no buffering under TLS), as
    /// the first figures in BENCHMARKS.md were taken.
    pub plain_raw: Transfer,
    /// circuit MiB/s ÷ plain_raw MiB/s.
    pub ratio_raw: f64,
    /// CPU time per payload byte during the plain_raw transfer.
    pub plain_raw_ns_per_byte: NsPerByte,
    /// CPU cores each process used during the circuit transfer.
    pub circuit_cpu: CpuUse,
    /// CPU time per payload byte during the circuit transfer.
    pub circuit_ns_per_byte: NsPerByte,
    /// CPU time per payload byte during the plain TLS transfer (origin and
    /// exit; `relays` is empty).
    pub plain_ns_per_byte: NsPerByte,
    /// Set-up latency.
    pub setup: Setup,
    /// Memory of idle circuits.
    pub idle: Idle,
    /// Load average (1, 5, 15 min) before and after the run.
    pub load_average_before: Option<[f64; 3]>,
    /// After.
    pub load_average_after: Option<[f64; 3]>,
}

/// CPU cores used (1.0 = one core busy) over one phase.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    /// The origin (receiver) process.
    pub origin: f64,
    /// The exit (sender) process.
    pub exit: f64,
    /// Each relay, in start order.
    pub relays: Vec<f64>,
    /// Bytes each relay forwarded in the phase.
    pub relay_bytes: Vec<u64>,
}

/// CPU nanoseconds (user + system, all threads) per payload byte of one
/// transfer, per process. Unlike MiB/s this hardly moves when other work
/// shares the machine, so it is the figure to compare runs by.
#[derive(Debug, Clone, Serialize)]
pub struct NsPerByte {
    /// The origin (receiver) process.
    pub origin: f64,
    /// The exit (sender) process.
    pub exit: f64,
    /// Each relay, in start order (about 0 for relays off the path).
    pub relays: Vec<f64>,
    /// Sum over the processes on the path: both ends and every relay that
    /// forwarded bytes during the transfer.
    pub path_total: f64,
}

impl NsPerByte {
    /// From CPU seconds used during a transfer of `bytes`: the origin's, the
    /// exit's, and each relay's with the bytes it forwarded meanwhile.
    pub fn from_cpu(origin: f64, exit: f64, relays: &[(f64, u64)], bytes: u64) -> NsPerByte {
        let per = |secs: f64| (secs * 1e9 / bytes.max(1) as f64 * 100.0).round() / 100.0;
        let on_path: f64 = relays
            .iter()
            .filter(|(_, fwd)| *fwd > 0)
            .map(|(s, _)| per(*s))
            .sum();
        NsPerByte {
            origin: per(origin),
            exit: per(exit),
            relays: relays.iter().map(|(s, _)| per(*s)).collect(),
            path_total: ((per(origin) + per(exit) + on_path) * 100.0).round() / 100.0,
        }
    }
}

/// Circuit set-up latency.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Circuits timed.
    pub circuits: usize,
    /// `want_circuits` → open stream, including the announce round trip.
    pub time_to_circuit: Latency,
    /// CREATE → open, from the origin's histogram: upper bounds of the
    /// buckets holding p50/p90/p99 (ms).
    pub create_to_open_p50_ms_at_most: Option<f64>,
    /// p90 bound.
    pub create_to_open_p90_ms_at_most: Option<f64>,
    /// p99 bound.
    pub create_to_open_p99_ms_at_most: Option<f64>,
    /// Exact mean from the histogram's sum and count (ms).
    pub create_to_open_mean_ms: f64,
}

/// Relays holding idle circuits.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    /// Circuits the origin held open.
    pub circuits_held: usize,
    /// Seconds it took to open them (after the set-up phase).
    pub fill_secs: f64,
    /// Each relay.
    pub relays: Vec<RelayMemory>,
    /// Index into `relays` of the one with the most circuits.
    pub busiest: usize,
    /// Median over relays carrying circuits of (RSS growth ÷ circuits).
    pub median_bytes_per_circuit: f64,
    /// The endpoints' RSS with the circuits held (origin, exit), KiB.
    pub endpoint_rss_kib: [u64; 2],
}

/// One relay's memory.
#[derive(Debug, Clone, Serialize)]
pub struct RelayMemory {
    /// Its pid.
    pub pid: u32,
    /// After the overlay linked up, before any transfer.
    pub start: ProcSample,
    /// Just before the circuits were opened.
    pub before: ProcSample,
    /// With the circuits open.
    pub with_circuits: ProcSample,
    /// Its `anomos_circuits_active`.
    pub circuits: u64,
    /// (with − before) RSS ÷ circuits, bytes.
    pub bytes_per_circuit: Option<f64>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| format!("≤ {x}"))
}

impl Report {
    /// The terminal table.
    pub fn text(&self) -> String {
        let (p, c, s) = (&self.plain, &self.circuit, &self.setup);
        let t = &s.time_to_circuit;
        let mut o = format!(
            "circuit: {} relay processes, {} relays per circuit, {} MiB, overlay up in {:.1} s\n",
            self.relay_processes,
            self.relays_per_circuit,
            self.bytes >> 20,
            self.overlay_secs
        );
        o += &format!(
            "  plain TLS ({})      {:>8.1} MiB/s  intact {}\n",
            self.plain_cipher, p.mib_per_sec, p.intact
        );
        o += &format!(
            "  plain TLS on the bare TCP socket      {:>8.1} MiB/s  intact {}\n",
            self.plain_raw.mib_per_sec, self.plain_raw.intact
        );
        o += &format!(
            "  circuit, {} relays           {:>8.1} MiB/s  intact {}\n",
            self.circuit_relays, c.mib_per_sec, c.intact
        );
        o += &format!(
            "  ratio circuit/plain         {:>8.2}  (target >= 0.5; {:.2} to TLS on the bare socket)\n",
            self.ratio, self.ratio_raw
        );
        let cpu = &self.circuit_cpu;
        o += &format!(
            "  CPU during circuit transfer: origin {:.2}, exit {:.2}, relays {:?} cores\n",
            cpu.origin, cpu.exit, cpu.relays
        );
        let (n, pn) = (&self.circuit_ns_per_byte, &self.plain_ns_per_byte);
        o += &format!(
            "  CPU ns per byte: circuit {:.2} on the path (origin {:.2}, exit {:.2}, relays {:?})\n",
            n.path_total, n.origin, n.exit, n.relays
        );
        o += &format!(
            "                   plain {:.2} (origin {:.2}, exit {:.2}); on the bare socket {:.2}\n",
            pn.path_total, pn.origin, pn.exit, self.plain_raw_ns_per_byte.path_total
        );
        o += &format!(
            "  set-up, {} circuits: want→open p50 {:.2} p90 {:.2} p99 {:.2} max {:.2} ms\n",
            s.circuits,
            ms(t.p50_us),
            ms(t.p90_us),
            ms(t.p99_us),
            ms(t.max_us)
        );
        o += &format!(
            "                       CREATE→open p50 {} p90 {} p99 {} ms, mean {:.2} ms\n",
            opt_ms(s.create_to_open_p50_ms_at_most),
            opt_ms(s.create_to_open_p90_ms_at_most),
            opt_ms(s.create_to_open_p99_ms_at_most),
            s.create_to_open_mean_ms
        );
        let i = &self.idle;
        o += &format!(
            "  idle circuits held: {} (filled in {:.1} s)\n",
            i.circuits_held, i.fill_secs
        );
        for (k, r) in i.relays.iter().enumerate() {
            o += &format!(
                "    relay {k}{} circuits {:>5}  RSS start {:>6.1} MiB, before {:>6.1}, with {:>6.1} MiB  {}\n",
                if k == i.busiest { "*" } else { " " },
                r.circuits,
                mib(r.start.rss_kib),
                mib(r.before.rss_kib),
                mib(r.with_circuits.rss_kib),
                r.bytes_per_circuit
                    .map_or_else(String::new, |b| format!("{b:.0} B/circuit"))
            );
        }
        o += &format!(
            "    median {:.0} B/circuit; endpoints RSS origin {:.1} MiB, exit {:.1} MiB\n",
            i.median_bytes_per_circuit,
            mib(i.endpoint_rss_kib[0]),
            mib(i.endpoint_rss_kib[1])
        );
        o += &format!(
            "  load average before {:?}, after {:?}\n",
            self.load_average_before, self.load_average_after
        );
        o
    }
}
