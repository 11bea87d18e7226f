//! Start `anomos-tracker` as a child process on 127.0.0.1 for one run.
//!
//! The tracker gets a temporary data dir and a TOML config written there
//! (ephemeral ports, and whatever limits the run needs raised); its stdout
//! banner gives the bound addresses and the pin. Its log goes to a file in
//! the data dir, so a chatty log can never block it on a full pipe. The
//! child is stopped with SIGTERM (graceful: listeners, graph, ledger) when
//! the [`SpawnedTracker`] is stopped, and killed if it is merely dropped.

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anomos_common::Pin;
use anyhow::{bail, Context as _};

/// How long the tracker may take to print its banner.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running child tracker.
#[derive(Debug)]
pub struct SpawnedTracker {
    child: Child,
    /// Its HTTPS API address.
    pub api: SocketAddr,
    /// Its operator (metrics) address.
    pub operator: SocketAddr,
    /// Its certificate pin.
    pub pin: Pin,
    /// Where its log goes.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A binary next to this executable, the default for `anomos-tracker` and
/// `anomos` (all land in the same `target/<profile>/` directory).
pub fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("executable has no directory")?;
    Ok(dir.join(name))
}

impl SpawnedTracker {
    /// Start `bin` with `extra_toml` appended to the base config (loopback,
    /// ephemeral ports, the temp data dir).
    pub fn start(bin: &Path, extra_toml: &str) -> anyhow::Result<Self> {
        Self::start_on(bin, extra_toml, IpAddr::from([127, 0, 0, 1]), &[])
    }

    /// [`SpawnedTracker::start`] with both listeners on `host`, the program
    /// run through `wrapper` (e.g. `ip netns exec NAME`, which execs in
    /// place, so the pid is still the tracker's) when it is not empty.
    pub fn start_on(
        bin: &Path,
        extra_toml: &str,
        host: IpAddr,
        wrapper: &[String],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("anomos-loadtest-")
            .tempdir()?;
        let data = dir.path().join("data");
        let config = dir.path().join("tracker.toml");
        let bind = SocketAddr::new(host, 0);
        let toml = format!(
            "listen = \"{bind}\"\nmetrics = \"{bind}\"\ndata_dir = {:?}\n{extra_toml}",
            data.display().to_string()
        );
        std::fs::write(&config, toml)?;
        let log = dir.path().join("tracker.log");
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("--config")
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("ANOMOS_TRACKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Reads the banner, then keeps draining so the child never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Banner::default();
        let deadline = Instant::now() + START_TIMEOUT;
        while !banner.complete() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => banner.feed(&line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    bail!("tracker did not start; its log:\n{tail}");
                }
            }
        }
        let (Some(api), Some(operator), Some(pin)) = (banner.api, banner.operator, banner.pin)
        else {
            bail!("incomplete tracker banner");
        };
        Ok(SpawnedTracker {
            child,
            api,
            operator,
            pin,
            log,
            _dir: dir,
        })
    }

    /// The child's process id (for `/proc` readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to 10 s for a clean exit, then SIGKILL.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("tracker exited with {status}");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        bail!("tracker did not stop within 10 s of SIGTERM")
    }
}

impl Drop for SpawnedTracker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The three lines `anomos-tracker` prints once it listens.
#[derive(Debug, Default)]
struct Banner {
    api: Option<SocketAddr>,
    operator: Option<SocketAddr>,
    pin: Option<Pin>,
}

impl Banner {
    fn feed(&mut self, line: &str) {
        if let Some(a) = line.strip_prefix("anomos-tracker listening on https://") {
            self.api = a.trim().parse().ok();
        } else if let Some(a) = line.strip_prefix("operator endpoints on http://") {
            self.operator = a.trim().parse().ok();
        } else if let Some(p) = line.strip_prefix("tracker pin ") {
            self.pin = Pin::from_hex(p);
        }
    }

    fn complete(&self) -> bool {
        self.api.is_some() && self.operator.is_some() && self.pin.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_lines_parse() {
        let mut b = Banner::default();
        b.feed("anomos-tracker listening on https://127.0.0.1:4431");
        assert!(!b.complete());
        b.feed("operator endpoints on http://127.0.0.1:9091");
        b.feed(&format!("tracker pin {}", "ab".repeat(32)));
        assert!(b.complete());
        assert_eq!(b.api.unwrap().port(), 4431);
        assert_eq!(b.pin.unwrap().0, [0xab; 32]);
    }
}
