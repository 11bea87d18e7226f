//! Resident memory and CPU time of a local process, from `/proc`.
//!
//! Why `/proc` and not `getrusage`: the process measured is the tracker (a
//! child or an unrelated pid), and the crate forbids `unsafe`. `VmRSS` is
//! the resident set now, `VmHWM` its peak; CPU is `utime + stime` from
//! `/proc/PID/stat` in clock ticks.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

/// One reading of a process's memory and CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
    /// User plus system CPU time, seconds.
    pub cpu_secs: f64,
    /// Threads.
    pub threads: u64,
}

/// Reads `/proc/PID/{status,stat}` of one process.
#[derive(Debug, Clone)]
pub struct ProcReader {
    dir: PathBuf,
    ticks_per_sec: f64,
}

impl ProcReader {
    /// A reader for `pid`; `None` reads this process (`/proc/self`).
    pub fn new(pid: Option<u32>) -> Self {
        let dir = match pid {
            Some(p) => PathBuf::from(format!("/proc/{p}")),
            None => PathBuf::from("/proc/self"),
        };
        ProcReader {
            dir,
            ticks_per_sec: clock_ticks(),
        }
    }

    /// Read both files now.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        let status = std::fs::read_to_string(self.dir.join("status"))
            .with_context(|| format!("reading {}/status", self.dir.display()))?;
        let stat = std::fs::read_to_string(self.dir.join("stat"))
            .with_context(|| format!("reading {}/stat", self.dir.display()))?;
        let ticks = parse_stat_ticks(&stat).context("malformed /proc stat")?;
        Ok(ProcSample {
            rss_kib: status_field(&status, "VmRSS:").unwrap_or(0),
            hwm_kib: status_field(&status, "VmHWM:").unwrap_or(0),
            cpu_secs: ticks as f64 / self.ticks_per_sec,
            threads: status_field(&status, "Threads:").unwrap_or(0),
        })
    }
}

/// `USER_HZ`: 100 on every Linux we run on; `getconf` confirms it when present.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The number after `key` in `/proc/PID/status` (units dropped).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `utime + stime` (fields 14 and 15). The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")" comes field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The 1-, 5- and 15-minute load averages of the machine.
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_odd_command_names() {
        let stat = "123 (a) b (c)) S 1 123 123 0 -1 4194560 10 0 0 0 250 70 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(stat), Some(320));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_fields_parse() {
        let s = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nThreads:\t7\n";
        assert_eq!(status_field(s, "VmRSS:"), Some(1024));
        assert_eq!(status_field(s, "VmHWM:"), Some(2048));
        assert_eq!(status_field(s, "Threads:"), Some(7));
        assert_eq!(status_field(s, "VmSwap:"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcReader::new(None).sample().unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        assert!(s.threads >= 1);
        assert!(load_average().is_some());
    }
}
