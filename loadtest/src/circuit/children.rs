//! The child processes of a `circuit` run: `anomos relay` processes and the
//! two endpoint processes (this binary re-executed as `circuit-endpoint`),
//! plus reading their `/metrics`.
//!
//! Every child is started with `kill_on_drop`, so a run that fails, times
//! out or panics still kills them when the guards unwind. Logs go to files
//! in the run's temp dir (a chatty child can never block on a full pipe);
//! stdout is read for the start-up line (relays) or the reply lines
//! (endpoints).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::endpoint::Reply;

/// How long a child may take to say it is up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Relay settings: announce and re-dial quickly so the overlay links up in
/// seconds (the same values the peer's own loopback test uses).
pub const RELAY_TOML: &str = "min_announce_gap_ms = 200\ndial_retry_ms = 100\n\
dial_retry_max_ms = 2000\ntracker_retry_ms = 200\ntracker_retry_max_ms = 2000\n";

/// One `anomos relay` process.
#[derive(Debug)]
pub struct RelayProc {
    child: Child,
    /// Its pid, for `/proc` readings.
    pub pid: u32,
    /// Its operator listener.
    pub metrics: SocketAddr,
    _stdout: BufReader<ChildStdout>,
}

impl RelayProc {
    /// Start `bin relay` against the tracker, with its data dir under `dir`.
    pub async fn start(bin: &Path, tracker: &str, pin: &str, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let cfg = dir.join("relay.toml");
        std::fs::write(&cfg, RELAY_TOML)?;
        let mut child = Command::new(bin)
            .arg("relay")
            .args(["--tracker", tracker, "--tracker-pin", pin])
            .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir)
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("relay.log"))?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("relay exited at once")?;
        let mut out = BufReader::new(child.stdout.take().context("no stdout pipe")?);
        let mut line = String::new();
        tokio::time::timeout(START_TIMEOUT, out.read_line(&mut line))
            .await
            .context("relay did not print its addresses")??;
        let metrics = parse_relay_line(&line)
            .with_context(|| format!("unexpected relay start-up line {line:?}"))?;
        Ok(RelayProc {
            child,
            pid,
            metrics,
            _stdout: out,
        })
    }

    /// SIGKILL and reap (relays hold nothing worth a graceful stop here).
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

/// The metrics address from `anomos relay <id> listening on <addr> metrics <addr>`.
fn parse_relay_line(line: &str) -> Option<SocketAddr> {
    let w: Vec<&str> = line.split_whitespace().collect();
    if w.len() != 8 || w[..2] != ["anomos", "relay"] || w[6] != "metrics" {
        return None;
    }
    w[7].parse().ok()
}

/// One endpoint process, driven by command lines on its stdin.
#[derive(Debug)]
pub struct EndpointProc {
    child: Child,
    /// Its pid.
    pub pid: u32,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl EndpointProc {
    /// Start `exe circuit-endpoint ARGS…`; returns it with its first reply.
    pub async fn start(exe: &Path, args: &[String], log: &Path) -> anyhow::Result<(Self, Reply)> {
        let mut child = Command::new(exe)
            .arg("circuit-endpoint")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let pid = child.id().context("endpoint exited at once")?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let lines = BufReader::new(child.stdout.take().context("no stdout pipe")?).lines();
        let mut ep = EndpointProc {
            child,
            pid,
            stdin,
            lines,
        };
        let ready = ep.reply(START_TIMEOUT).await?;
        Ok((ep, ready))
    }

    /// Send one command line and wait up to `limit` for its reply.
    pub async fn call(&mut self, cmd: &str, limit: Duration) -> anyhow::Result<Reply> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        self.reply(limit)
            .await
            .with_context(|| format!("endpoint command {cmd:?}"))
    }

    async fn reply(&mut self, limit: Duration) -> anyhow::Result<Reply> {
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .context("no reply in time")??
            .context("endpoint exited")?;
        match serde_json::from_str(&line)? {
            Reply::Error { message } => bail!("endpoint failed: {message}"),
            r => Ok(r),
        }
    }

    /// Ask it to stop its peer and exit; kill it if it does not within 15 s.
    pub async fn quit(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        let waited = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        if waited.is_err() {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// GET `path` over plain HTTP/1.1; the body.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let get = async {
        let mut s = TcpStream::connect(addr).await?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        anyhow::Ok(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(10), get)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))??;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// The value of the unlabelled sample `name` in Prometheus text (0 if absent).
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_line_gives_the_metrics_address() {
        let l = "anomos relay ab12cd listening on 127.0.0.1:4000 metrics 127.0.0.1:4001\n";
        assert_eq!(parse_relay_line(l), Some("127.0.0.1:4001".parse().unwrap()));
        assert_eq!(
            parse_relay_line("anomos relay x listening on a metrics off"),
            None
        );
        assert_eq!(parse_relay_line("garbage"), None);
    }

    #[test]
    fn unlabelled_samples_are_read() {
        let text = "# HELP x\nh_bucket{le=\"0.001\"} 2\nh_count 10\nc 4\n";
        assert_eq!(sample(text, "c"), 4.0);
        assert_eq!(sample(text, "h_count"), 10.0);
        assert_eq!(sample(text, "missing"), 0.0);
    }
}
