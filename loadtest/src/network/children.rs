//! Peer processes of a `procs` or `netns` run: `anomos relay | seed | get`
//! started where their [`Site`] says, their stdout lines, and stopping them.
//!
//! Every child is started with `kill_on_drop`, so a run that fails, times
//! out or panics still kills it when the guard unwinds. Its stderr goes to
//! a log file in the run's directory (a chatty child never blocks on a
//! full pipe); its stdout is drained by a task into a channel, and the
//! driver polls that channel for the start-up line (which carries the
//! metrics address) and for `anomos get`'s `downloaded …` line.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::Role;

/// Where a process runs: a command prefix and the address it binds.
#[derive(Debug, Clone)]
pub struct Site {
    /// Run the program through this (`ip netns exec NAME`), or directly.
    pub wrapper: Vec<String>,
    /// Link and metrics listeners bind here (port 0).
    pub host: IpAddr,
}

impl Site {
    /// Directly, on 127.0.0.1.
    pub fn local() -> Site {
        Site {
            wrapper: Vec::new(),
            host: IpAddr::from([127, 0, 0, 1]),
        }
    }

    fn command(&self, bin: &Path) -> Command {
        match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }
}

/// One peer process.
#[derive(Debug)]
pub struct PeerProc {
    /// Its role.
    pub role: Role,
    /// Its number within the role.
    pub index: usize,
    /// Its pid.
    pub pid: u32,
    /// Its operator listener, once it printed its start-up line.
    pub metrics: Option<SocketAddr>,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// Its stdout ended (it exited, or is about to).
    pub ended: bool,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl PeerProc {
    /// Start `bin ARGS… --listen HOST:0 --metrics HOST:0 --data-dir DIR
    /// --config CONFIG` at `site`; logs go to `DIR.log`.
    pub fn spawn(
        site: &Site,
        bin: &Path,
        args: Vec<OsString>,
        dir: &Path,
        config: &Path,
        (role, index): (Role, usize),
    ) -> anyhow::Result<PeerProc> {
        std::fs::create_dir_all(dir)?;
        let bind = SocketAddr::new(site.host, 0).to_string();
        let log = dir.with_extension("log");
        let mut child = site
            .command(bin)
            .args(args)
            .args(["--listen", &bind, "--metrics", &bind])
            .arg("--data-dir")
            .arg(dir)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", super::setup::peer_log_level())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("peer exited at once")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut it = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = it.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(PeerProc {
            role,
            index,
            pid,
            metrics: None,
            log,
            ended: false,
            child,
            lines,
        })
    }

    /// Lines printed since the last call (the start-up line is consumed
    /// here and sets `metrics`); marks `ended` once stdout closed.
    pub fn poll(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            match self.lines.try_recv() {
                Ok(line) => match parse_start_line(&line) {
                    Some(m) if self.metrics.is_none() => self.metrics = Some(m),
                    _ => out.push(line),
                },
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.ended = true;
                    break;
                }
            }
        }
        out
    }

    /// Why it is gone: its exit status (if it exited) and its log's tail.
    pub fn failure(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => s.to_string(),
            _ => "stdout closed".to_owned(),
        };
        format!(
            "{} {} {status}: {}",
            self.role.as_str(),
            self.index,
            super::setup::log_tail(&self.log, 600)
        )
    }

    /// Ask it to stop (SIGTERM: BREAK circuits, announce `stopped`).
    pub fn terminate(&self) {
        if let Some(pid) = i32::try_from(self.pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }

    /// Wait until `deadline` for it to exit, then kill it.
    pub async fn reap(mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, self.child.wait()).await.is_err() {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        }
    }
}

/// The metrics address in `anomos CMD ID listening on ADDR metrics ADDR`.
pub fn parse_start_line(line: &str) -> Option<SocketAddr> {
    let w: Vec<&str> = line.split_whitespace().collect();
    if w.len() != 8 || w[0] != "anomos" || w[3..5] != ["listening", "on"] || w[6] != "metrics" {
        return None;
    }
    w[7].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_lines_parse() {
        let l = "anomos get ab12cd listening on 10.213.0.7:4000 metrics 10.213.0.7:4001";
        assert_eq!(
            parse_start_line(l),
            Some("10.213.0.7:4001".parse().unwrap())
        );
        assert_eq!(
            parse_start_line("anomos relay x listening on a metrics off"),
            None
        );
        assert_eq!(parse_start_line("seeding t.bin; relaying"), None);
    }

    #[tokio::test]
    async fn a_child_prints_is_polled_and_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake");
        std::fs::write(
            &script,
            "#!/bin/sh\necho anomos relay ab listening on 127.0.0.1:1 metrics 127.0.0.1:9\n\
             echo oops >&2\necho hello\nexec sleep 30\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut p = PeerProc::spawn(
            &Site::local(),
            &script,
            vec![],
            &dir.path().join("r0"),
            &dir.path().join("cfg"),
            (Role::Relay, 0),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.is_empty() && Instant::now() < deadline {
            got = p.poll();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(got, vec!["hello".to_owned()]);
        assert_eq!(p.metrics, Some("127.0.0.1:9".parse().unwrap()));
        assert!(p.failure().contains("oops"));
        p.terminate();
        let t = Instant::now();
        p.reap(Instant::now() + Duration::from_secs(10)).await;
        assert!(t.elapsed() < Duration::from_secs(9), "SIGTERM ended it");
    }
}
