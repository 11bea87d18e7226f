//! A lab of real processes on 127.0.0.1: `anomos-tracker`, `anomos relay`
//! peers, `anomos seed` peers, and `anomos get` runs. Every child is killed
//! when its handle drops, and every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::util::{http_get, sample_sum, PEER_TOML};

/// Log filter of lab processes: `ANOMOS_LAB_LOG`, else warnings only.
fn lab_log() -> String {
    std::env::var("ANOMOS_LAB_LOG").unwrap_or_else(|_| "warn".into())
}

/// The `anomos` binary of this build.
pub fn anomos() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anomos"));
    c.env("RUST_LOG", lab_log()).kill_on_drop(true);
    c
}

/// `anomos-tracker`, built next to `anomos` by the workspace build.
fn tracker_bin() -> PathBuf {
    let me = Path::new(env!("CARGO_BIN_EXE_anomos"));
    let bin = me.with_file_name("anomos-tracker");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// A child process that printed a start-up line naming its metrics address.
pub struct Proc {
    pub child: Child,
    pub metrics: SocketAddr,
    /// The link listener (peers; the API address for the tracker).
    pub listen: Option<SocketAddr>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    /// Spawn `cmd` and wait (bounded) for a stdout line containing
    /// `metrics ADDR` — every peer command prints one at start-up.
    pub async fn spawn(mut cmd: Command, what: &str) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (metrics, listen) = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let mut line = String::new();
                if out.read_line(&mut line).await.unwrap() == 0 {
                    panic!("{what} exited before its start-up line");
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                if let Some(i) = words.iter().position(|w| *w == "metrics") {
                    let listen = words.iter().position(|w| *w == "on");
                    let listen = listen.and_then(|j| words.get(j + 1)?.parse().ok());
                    return (words[i + 1].parse::<SocketAddr>().unwrap(), listen);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: no start-up line within 60 s"));
        Proc {
            child,
            metrics,
            listen,
            stdout: out,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("process already reaped")
    }

    /// Send `signal` (a `kill -s` name: TERM, STOP, CONT, …).
    pub fn signal(&self, signal: &str) {
        let st = std::process::Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -s {signal} failed");
    }

    /// Read stdout (bounded) until a line containing `word`; that line.
    pub async fn line_with(&mut self, word: &str, limit: Duration) -> String {
        let found = tokio::time::timeout(limit, async {
            loop {
                let mut line = String::new();
                if self.stdout.read_line(&mut line).await.unwrap() == 0 {
                    return None;
                }
                if line.contains(word) {
                    return Some(line);
                }
            }
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            Ok(None) => panic!("stdout ended without a line containing {word:?}"),
            Err(_) => panic!("no line containing {word:?} within {limit:?}"),
        }
    }

    /// SIGTERM, then the exit status (bounded).
    pub async fn stop(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("no exit within {limit:?} of SIGTERM"))
            .unwrap()
    }

    /// Sum over all label values of `name` on its `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        sample_sum(&http_get(self.metrics, "/metrics", None).await, name)
    }

    /// SIGKILL and reap.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// The tracker process and what peers need to reach it.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub pin: String,
    pub tracker: Proc,
    pub relays: Vec<Proc>,
    config: LabConfig,
}

/// How a lab's tracker and peers are set up.
#[derive(Clone, Debug)]
pub struct LabConfig {
    /// The tracker's `--listen` address.
    pub tracker_listen: String,
    /// The tracker's announce interval.
    pub interval_secs: u64,
    /// Extra lines for the peers' config file.
    pub peer_toml: String,
    /// Extra lines for the tracker's config file.
    pub tracker_toml: String,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            tracker_listen: "127.0.0.1:0".into(),
            interval_secs: 5,
            peer_toml: String::new(),
            tracker_toml: String::new(),
        }
    }
}

impl Lab {
    /// A tracker (same-IP neighbours allowed, 5 s announces) and `relays`
    /// relay processes.
    pub async fn start(relays: usize) -> Lab {
        Lab::start_with(relays, LabConfig::default()).await
    }

    /// A lab set up as `config` says, with `relays` relay processes.
    pub async fn start_with(relays: usize, config: LabConfig) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tracker.toml"),
            format!(
                "announce_interval_secs = {}\nsession_ttl_secs = 60\n\
                 rate_per_ip = 10000.0\nburst_per_ip = 10000.0\n{}",
                config.interval_secs, config.tracker_toml
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("peer.toml"),
            format!("{PEER_TOML}{}", config.peer_toml),
        )
        .unwrap();
        let (tracker, url, pin) = spawn_tracker(dir.path(), &config.tracker_listen).await;
        let mut lab = Lab {
            dir,
            url,
            pin,
            tracker,
            relays: Vec::new(),
            config,
        };
        for i in 0..relays {
            let mut cmd = anomos();
            cmd.arg("relay").args(lab.peer_args(&format!("relay{i}")));
            lab.relays.push(Proc::spawn(cmd, "relay").await);
        }
        lab
    }

    /// SIGTERM the tracker and wait for it to exit 0; `start_tracker`
    /// brings it back.
    pub async fn stop_tracker(&mut self) {
        let status = self.tracker.stop(Duration::from_secs(30)).await;
        assert!(status.success(), "tracker exit status {status:?}");
    }

    /// Start the tracker again with the same data dir and API address
    /// (`tracker_listen` must name a port): same URL, same pin.
    pub async fn start_tracker(&mut self) {
        let listen = self.config.tracker_listen.clone();
        assert!(
            !listen.ends_with(":0"),
            "a restarted tracker needs a fixed port"
        );
        let (tracker, url, pin) = spawn_tracker(self.dir.path(), &listen).await;
        assert_eq!((&url, &pin), (&self.url, &self.pin), "the tracker moved");
        self.tracker = tracker;
    }

    /// The identity a peer process named `name` keeps in its data dir.
    pub fn peer_id(&self, name: &str) -> anomos_common::PeerId {
        use anomos_peer::identity_store::{identity_dir, load_or_create};
        let url = anomos_peer::net::tracker_client::TrackerUrl::parse(&self.url).unwrap();
        let dir = identity_dir(&self.dir.path().join(name), &url);
        load_or_create(&dir, false).unwrap().peer_id()
    }

    /// The tracker's data directory.
    pub fn tracker_dir(&self) -> PathBuf {
        self.dir.path().join("tracker")
    }

    /// Options of a peer process named `name` (its own data dir).
    pub fn peer_args(&self, name: &str) -> Vec<String> {
        let d = self.dir.path();
        vec![
            "--tracker".into(),
            self.url.clone(),
            "--tracker-pin".into(),
            self.pin.clone(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            d.join(name).display().to_string(),
            "--config".into(),
            d.join("peer.toml").display().to_string(),
        ]
    }

    /// `anomos make-torrent PATH` into the lab dir.
    pub async fn make_torrent(&self, path: &Path, name: &str) -> PathBuf {
        let out = self.dir.path().join(format!("{name}.atorrent"));
        let st = anomos()
            .arg("make-torrent")
            .arg(path)
            .args(["--tracker", &self.url, "--tracker-pin", &self.pin])
            .arg("-o")
            .arg(&out)
            .output()
            .await
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        out
    }

    /// Start `anomos seed TORRENT --data DATA` named `name`.
    pub async fn seed(&self, torrent: &Path, data: &Path, name: &str) -> Proc {
        let mut cmd = anomos();
        cmd.arg("seed")
            .arg(torrent)
            .arg("--data")
            .arg(data)
            .args(self.peer_args(name));
        Proc::spawn(cmd, "seeder").await
    }

    /// An `anomos get TORRENT --out OUT` command named `name`.
    pub fn get(&self, torrent: &Path, out: &Path, name: &str) -> Command {
        let mut cmd = anomos();
        cmd.arg("get")
            .arg(torrent)
            .arg("--out")
            .arg(out)
            .args(self.peer_args(name));
        cmd
    }

    /// Sum of `name` over every relay.
    pub async fn relay_sum(&self, name: &str) -> f64 {
        let mut s = 0.0;
        for r in &self.relays {
            s += r.metric(name).await;
        }
        s
    }
}

/// Start `anomos-tracker` on `listen` with the lab's data dir and config;
/// the process, its URL and its pin.
async fn spawn_tracker(dir: &Path, listen: &str) -> (Proc, String, String) {
    let mut cmd = Command::new(tracker_bin());
    cmd.args(["--listen", listen, "--metrics", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("tracker"))
        .arg("--config")
        .arg(dir.join("tracker.toml"))
        .arg("--allow-same-ip")
        .env("RUST_LOG", lab_log())
        .kill_on_drop(true)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut url, mut pin, mut ops) = (None, None, None);
    tokio::time::timeout(Duration::from_secs(60), async {
        while url.is_none() || pin.is_none() || ops.is_none() {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).await.unwrap() > 0,
                "tracker exited"
            );
            let w: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            match w.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["anomos-tracker", "listening", "on", u] => url = Some(u.to_owned()),
                ["operator", "endpoints", "on", o] => ops = Some(o.to_owned()),
                ["tracker", "pin", p] => pin = Some(p.to_owned()),
                _ => {}
            }
        }
    })
    .await
    .expect("tracker start-up lines");
    let ops = ops.unwrap();
    let metrics = ops.trim_start_matches("http://").parse().unwrap();
    let url = url.unwrap();
    let listen = url.trim_start_matches("https://").parse().ok();
    let tracker = Proc {
        child,
        metrics,
        listen,
        stdout: out,
    };
    (tracker, url, pin.unwrap())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Run a command to completion within `limit`.
pub async fn run(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::time::timeout(limit, cmd.output())
        .await
        .expect("command did not finish in time")
        .unwrap()
}

/// Random bytes from a seeded generator.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Whether two files hold the same bytes.
pub fn same_file(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}
