//! What `anomos get` and `anomos seed` show while they work: an indicatif
//! bar on a terminal, plain periodic log lines otherwise (CI logs, pipes,
//! systemd). Only counts and rates are shown — never addresses or ids.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::actors::swarm::SwarmStatus;

/// Gap between two plain log lines.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// A byte-count display: a bar or periodic lines.
#[derive(Debug)]
pub struct Display {
    bar: Option<ProgressBar>,
    what: &'static str,
    total: u64,
    start: Instant,
    last_line: Instant,
}

impl Display {
    /// Show progress of `what` ("checking", "downloading") over `total`
    /// bytes; a bar only if stderr is a terminal.
    pub fn new(what: &'static str, total: u64) -> Display {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:>11} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(what);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Display {
            bar,
            what,
            total,
            start: now,
            last_line: now,
        }
    }

    /// `done` bytes so far; `note` describes circuits and sources.
    pub fn update(&mut self, done: u64, note: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(note.to_owned());
            return;
        }
        if self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line(done, note));
        }
    }

    /// Remove the bar (or print a last line if this took long enough to
    /// have printed any).
    pub fn finish(&mut self, done: u64, note: &str) {
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None if self.start.elapsed() >= LINE_EVERY => eprintln!("{}", self.line(done, note)),
            None => {}
        }
    }

    fn line(&self, done: u64, note: &str) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        if self.total == 0 {
            // An open-ended count (a seed's uploads): no percentage.
            return format!(
                "{}: {}, {}/s {note}",
                self.what,
                human_bytes(done),
                human_bytes((done as f64 / secs) as u64),
            );
        }
        let pct = done as f64 * 100.0 / self.total as f64;
        format!(
            "{}: {pct:5.1} % of {}, {}/s {note}",
            self.what,
            human_bytes(self.total),
            human_bytes((done as f64 / secs) as u64),
        )
    }
}

/// Circuits and sources of a status, for the bar's message.
pub fn note(s: &SwarmStatus) -> String {
    let relays: Vec<String> = s.circuit_relays.iter().map(|r| r.to_string()).collect();
    let mut note = format!(
        "circuits {} (relays {}) sources {}",
        s.circuit_relays.len(),
        if relays.is_empty() {
            "-".to_owned()
        } else {
            relays.join(",")
        },
        s.sources
    );
    if s.accepted > 0 {
        note.push_str(&format!(
            " serving {}",
            s.stats.conns - s.circuit_relays.len()
        ));
    }
    note
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
    }

    #[test]
    fn lines_show_a_percentage_only_when_there_is_a_total() {
        let d = Display::new("downloading", 200);
        assert!(
            d.line(50, "x")
                .starts_with("downloading:  25.0 % of 200 B, "),
            "{}",
            d.line(50, "x")
        );
        let d = Display::new("uploaded", 0);
        assert!(
            d.line(2048, "x").starts_with("uploaded: 2.0 KiB, "),
            "{}",
            d.line(2048, "x")
        );
    }

    #[test]
    fn the_note_counts_circuits_relays_and_sources() {
        let mut s = SwarmStatus {
            circuit_relays: vec![2, 3],
            sources: 2,
            ..Default::default()
        };
        assert_eq!(note(&s), "circuits 2 (relays 2,3) sources 2");
        s.circuit_relays.clear();
        s.accepted = 1;
        s.stats.conns = 1;
        assert_eq!(note(&s), "circuits 0 (relays -) sources 2 serving 1");
    }
}
