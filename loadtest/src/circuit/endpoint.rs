//! One endpoint process of a `circuit` run (`anomos-loadtest
//! circuit-endpoint`): an in-process peer (`anomos_peer::run_peer`) inside
//! an actix system, driven by command lines on stdin, answering with one
//! JSON [`Reply`] line each on stdout.
//!
//! Why separate processes: the two circuit ends and every relay then each
//! have their own actix thread, as in a real deployment, so the figures are
//! not those of one event loop serving both ends.
//!
//! The exit serves the run's infohash and a plain TLS listener; on every
//! circuit it reads one command byte (`T`: send the stream, then hold; end
//! of stream: the originator let the circuit go) and on every TLS
//! connection it sends the stream. The origin runs the measurements. The
//! process exits on `quit`, when stdin closes (the controller died) or at
//! its own deadline, whichever comes first.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anomos_common::identity::PeerIdentity;
use anomos_common::{InfoHash, Pin};
use anomos_peer::config::PeerConfig;
use anomos_peer::datapath::CircuitStream;
use anomos_peer::Peer;
use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

use super::pattern::{Pattern, Transfer};

/// Longest wait for one circuit to arrive.
const CIRCUIT_WAIT: Duration = Duration::from_secs(60);
/// The command byte that asks the exit for the stream.
const SEND: u8 = b'T';
/// First byte of a plain connection (before TLS): TLS over the links'
/// buffered socket.
const LINK_SOCKET: u8 = b'L';
/// First byte of a plain connection: TLS straight on the TCP socket.
const RAW_SOCKET: u8 = b'R';

/// Which end this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Serves the infohash (the seed).
    Exit,
    /// Asks for circuits (the downloader) and measures.
    Origin,
}

/// Command line of the hidden `circuit-endpoint` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// Which end.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Tracker base URL.
    #[arg(long)]
    pub tracker: String,
    /// Tracker certificate pin, 64 hex digits.
    #[arg(long)]
    pub tracker_pin: String,
    /// The run's infohash, 64 hex digits.
    #[arg(long)]
    pub infohash: String,
    /// Seed of the byte stream.
    #[arg(long)]
    pub seed: u64,
    /// Bytes per transfer.
    #[arg(long)]
    pub bytes: u64,
    /// Exit after this many seconds whatever happens.
    #[arg(long)]
    pub deadline_secs: u64,
}

/// One answer line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// The peer is up.
    Ready {
        /// Its operator listener.
        metrics: SocketAddr,
        /// The exit's plain TLS listener.
        tls: Option<SocketAddr>,
    },
    /// The plain TLS transfer, at the receiver.
    Plain {
        /// What arrived.
        transfer: Transfer,
        /// The negotiated TLS version and cipher suite.
        cipher: String,
    },
    /// The transfer through one circuit, at the receiver.
    Circuit {
        /// What arrived.
        transfer: Transfer,
        /// Relays on the circuit.
        relays: usize,
    },
    /// Circuits opened one after another: request → open, µs each.
    Setup {
        /// Per circuit.
        times_us: Vec<u64>,
    },
    /// More circuits opened one after another, held.
    Opened {
        /// Circuits now held.
        held: usize,
        /// Seconds they took.
        secs: f64,
    },
    /// Held circuits let go.
    Closed {
        /// How many.
        n: usize,
    },
    /// The command failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Run the endpoint process (see module docs).
pub fn main(args: EndpointArgs) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(args.deadline_secs);
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        eprintln!("circuit-endpoint: deadline passed, exiting");
        std::process::exit(3);
    });
    actix_rt::System::new().block_on(run(args))
}

fn say(r: &Reply) {
    // A controller that went away is noticed on stdin.
    if let Ok(s) = serde_json::to_string(r) {
        println!("{s}");
    }
}

async fn run(args: EndpointArgs) -> anyhow::Result<()> {
    let pin = Pin::from_hex(&args.tracker_pin).context("bad --tracker-pin")?;
    let infohash = Pin::from_hex(&args.infohash)
        .map(|p| InfoHash(p.0))
        .context("bad --infohash")?;
    let cfg = PeerConfig {
        tracker: args.tracker.clone(),
        tracker_pin: Some(pin),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ephemeral: true,
        // Every want_circuits announces at once: setup latency must not
        // include a self-imposed gap.
        min_announce_gap_ms: 1,
        dial_retry_ms: 100,
        dial_retry_max_ms: 2000,
        tracker_retry_ms: 200,
        tracker_retry_max_ms: 2000,
        ..PeerConfig::default()
    };
    let peer = anomos_peer::run_peer(cfg).await?;
    let metrics = peer.metrics_addr.context("no metrics listener")?;
    let pattern = Pattern::new(args.seed);
    let tls = match args.role {
        Role::Exit => Some(start_exit(&peer, infohash, &pattern, args.bytes).await?),
        Role::Origin => None,
    };
    say(&Reply::Ready { metrics, tls });

    let mut origin = Origin {
        peer: &peer,
        infohash,
        pattern,
        bytes: args.bytes,
        held: Vec::new(),
    };
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"quit") {
            break;
        }
        let reply = match args.role {
            Role::Origin => origin.command(&words).await,
            Role::Exit => Err(anyhow::anyhow!("the exit takes no commands")),
        };
        say(&reply.unwrap_or_else(|e| Reply::Error {
            message: format!("{e:#}"),
        }));
    }
    drop(origin);
    let _ = tokio::time::timeout(Duration::from_secs(10), peer.stop()).await;
    Ok(())
}

/// Lines of stdin, read on a thread of their own (blocking reads must not
/// stall the actix thread); the channel ends with stdin.
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Serve the infohash and the plain TLS listener; the listener's address.
async fn start_exit(
    peer: &Peer,
    infohash: InfoHash,
    pattern: &Pattern,
    bytes: u64,
) -> anyhow::Result<SocketAddr> {
    let mut circuits = peer.serve(infohash);
    let p = pattern.clone();
    actix_rt::spawn(async move {
        while let Some(c) = circuits.recv().await {
            actix_rt::spawn(exit_circuit(c, p.clone(), bytes));
        }
    });
    // Its own self-signed certificate, with the links' TLS settings.
    let id = PeerIdentity::generate()?;
    let acceptor = std::rc::Rc::new(anomos_peer::net::tls::link_acceptor(&id)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let p = pattern.clone();
    actix_rt::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, p) = (acceptor.clone(), p.clone());
            actix_rt::spawn(async move {
                let sent = async {
                    tcp.set_nodelay(true)?;
                    let mut tcp = tcp;
                    let mut mode = [0u8; 1];
                    tcp.read_exact(&mut mode).await?;
                    let ssl = openssl::ssl::Ssl::new(acceptor.context())?;
                    if mode[0] == LINK_SOCKET {
                        let mut s = SslStream::new(ssl, anomos_peer::link::link_socket(tcp))?;
                        std::pin::Pin::new(&mut s).accept().await?;
                        p.send(&mut s, bytes).await?;
                    } else {
                        let mut s = SslStream::new(ssl, tcp)?;
                        std::pin::Pin::new(&mut s).accept().await?;
                        p.send(&mut s, bytes).await?;
                    }
                    anyhow::Ok(())
                };
                if let Err(e) = sent.await {
                    eprintln!("plain TLS send failed: {e:#}");
                }
            });
        }
    });
    Ok(addr)
}

/// One circuit at the exit: send the stream if asked, then hold the
/// circuit until the originator lets it go.
async fn exit_circuit(mut c: CircuitStream, p: Pattern, bytes: u64) {
    let mut cmd = [0u8; 1];
    if let Ok(1) = c.read(&mut cmd).await {
        if cmd[0] == SEND {
            if let Err(e) = p.send(&mut c, bytes).await {
                eprintln!("circuit send failed: {e}");
                return;
            }
        }
        let mut sink = [0u8; 512];
        while let Ok(n) = c.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }
}

/// The origin's side of the measurements.
struct Origin<'a> {
    peer: &'a Peer,
    infohash: InfoHash,
    pattern: Pattern,
    bytes: u64,
    held: Vec<CircuitStream>,
}

fn number(words: &[&str], i: usize) -> anyhow::Result<usize> {
    words
        .get(i)
        .context("missing number")?
        .parse()
        .context("bad number")
}

impl Origin<'_> {
    async fn command(&mut self, w: &[&str]) -> anyhow::Result<Reply> {
        match w.first().copied() {
            Some("plain") => {
                let addr = w.get(1).context("no address")?.parse()?;
                self.plain(addr, w.get(2) != Some(&"raw")).await
            }
            Some("circuit") => self.circuit().await,
            Some("setup") => self.setup(number(w, 1)?).await,
            Some("open") => self.open(number(w, 1)?).await,
            Some("close") => {
                let n = self.held.len();
                self.held.clear();
                Ok(Reply::Closed { n })
            }
            _ => bail!("unknown command {w:?}"),
        }
    }

    /// Receive the stream over a direct TLS connection to the exit: over
    /// the links' buffered socket (`link`), or TLS straight on TCP.
    async fn plain(&self, addr: SocketAddr, link: bool) -> anyhow::Result<Reply> {
        let id = PeerIdentity::generate()?;
        let connector = anomos_peer::net::tls::link_connector(&id)?;
        let ssl = connector
            .configure()?
            .verify_hostname(false)
            .into_ssl("anomos")?;
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        tcp.write_all(&[if link { LINK_SOCKET } else { RAW_SOCKET }])
            .await?;
        let cipher = |s: &openssl::ssl::SslRef| {
            let name = s.current_cipher().map_or("?", |c| c.name());
            format!("{} {name}", s.version_str())
        };
        if link {
            let mut s = SslStream::new(ssl, anomos_peer::link::link_socket(tcp))?;
            std::pin::Pin::new(&mut s).connect().await?;
            let cipher = cipher(s.ssl());
            let transfer = self.pattern.receive(&mut s, self.bytes).await?;
            Ok(Reply::Plain { transfer, cipher })
        } else {
            let mut s = SslStream::new(ssl, tcp)?;
            std::pin::Pin::new(&mut s).connect().await?;
            let cipher = cipher(s.ssl());
            let transfer = self.pattern.receive(&mut s, self.bytes).await?;
            Ok(Reply::Plain { transfer, cipher })
        }
    }

    /// Receive the stream through one new circuit.
    async fn circuit(&mut self) -> anyhow::Result<Reply> {
        let mut c = self.one_circuit().await?;
        c.write_all(&[SEND]).await?;
        c.flush().await?;
        let transfer = self.pattern.receive(&mut c, self.bytes).await?;
        Ok(Reply::Circuit {
            transfer,
            relays: c.relays,
        })
    }

    async fn one_circuit(&self) -> anyhow::Result<CircuitStream> {
        let mut rx = self.peer.want_circuits(self.infohash, 1);
        tokio::time::timeout(CIRCUIT_WAIT, rx.recv())
            .await
            .context("no circuit within 60 s")?
            .context("circuit requests dropped")
    }

    /// `n` circuits one after another, timed from request to open; held.
    async fn setup(&mut self, n: usize) -> anyhow::Result<Reply> {
        let mut times_us = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let c = self.one_circuit().await?;
            times_us.push(t.elapsed().as_micros() as u64);
            self.held.push(c);
        }
        Ok(Reply::Setup { times_us })
    }

    /// `n` more circuits, one request each (the tracker plans at most one
    /// circuit per source per announce, and there is one exit); held.
    async fn open(&mut self, n: usize) -> anyhow::Result<Reply> {
        let t = Instant::now();
        for _ in 0..n {
            let c = self
                .one_circuit()
                .await
                .with_context(|| format!("circuit {} did not open", self.held.len()))?;
            self.held.push(c);
        }
        Ok(Reply::Opened {
            held: self.held.len(),
            secs: t.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_as_one_json_line() {
        let r = Reply::Setup {
            times_us: vec![1, 2],
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(!s.contains('\n'));
        assert!(s.contains("\"reply\":\"setup\""), "{s}");
        let back: Reply = serde_json::from_str(&s).unwrap();
        assert!(matches!(back, Reply::Setup { times_us } if times_us == [1, 2]));
        assert_eq!(number(&["open", "12", "x"], 1).unwrap(), 12);
        assert!(number(&["open", "12", "x"], 2).is_err());
        assert!(number(&["open"], 1).is_err());
    }
}
