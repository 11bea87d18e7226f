//! The connection tasks: each holds one keep-alive connection and sends
//! announces back to back, taking the next job number from a shared
//! counter, so `C` connections keep exactly `C` announces in flight.
//!
//! A job number `k` maps to a body through a [`Jobs`]: registration sends
//! peer `k`'s `Started` once, the heartbeat phase cycles `k % N` forever
//! (pre-signed bodies first, then signed on the spot). Only announces that
//! complete inside the measurement window are counted, so warm-up and the
//! tail after the deadline never blur the figures. A transport error is
//! counted, the connection re-made, and the task goes on.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anomos_common::api::{AnnounceResponse, Message, PeerEvent};
use anomos_common::Pin;
use openssl::ssl::SslConnector;
use tokio::task::JoinSet;

use crate::client::TrackerClient;
use crate::report::{Tally, BAD_RESPONSE, TRANSPORT};
use crate::sim::{SimConfig, SimPeer};
use crate::unix_now;

/// Pre-signed bodies are used only while their timestamp is this fresh
/// (the tracker's default skew tolerance is 120 s).
const PRESIGNED_FRESH: Duration = Duration::from_secs(100);

/// What job `k` sends.
#[derive(Debug)]
pub enum Jobs {
    /// Peer `k`'s `Started`, for `k < N`; then nothing.
    Register,
    /// A heartbeat of peer `k % N`: `presigned[k]` while it lasts and is
    /// fresh, else signed now.
    Heartbeat {
        /// Bodies signed before the phase.
        presigned: Vec<Vec<u8>>,
        /// When they were signed.
        signed_at: Instant,
    },
}

/// Where and how to send.
#[derive(Debug)]
pub struct Target {
    /// The tracker's API address.
    pub addr: SocketAddr,
    /// Its certificate pin.
    pub pin: Pin,
    /// Per-request and per-connect timeout.
    pub timeout: Duration,
}

/// Everything the tasks of one phase share.
#[derive(Debug)]
pub struct Phase {
    /// The simulated peers.
    pub peers: Arc<Vec<SimPeer>>,
    /// Their wire settings.
    pub sim: SimConfig,
    /// The body source.
    pub jobs: Jobs,
    /// Count completions at or after this instant…
    pub window_start: Instant,
    /// …and before this one; no new announce starts after it.
    pub window_end: Instant,
    next: AtomicUsize,
}

impl Phase {
    /// A phase over `peers`, measured in `[window_start, window_end)`.
    pub fn new(
        peers: Arc<Vec<SimPeer>>,
        sim: SimConfig,
        jobs: Jobs,
        window_start: Instant,
        window_end: Instant,
    ) -> Self {
        Phase {
            peers,
            sim,
            jobs,
            window_start,
            window_end,
            next: AtomicUsize::new(0),
        }
    }

    /// The next body, or `None` when the phase has no more work.
    fn next_body(&self, tally: &mut Tally) -> Option<anyhow::Result<Body<'_>>> {
        let n = self.peers.len();
        if n == 0 || Instant::now() >= self.window_end {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        match &self.jobs {
            Jobs::Register => {
                let p = self.peers.get(k)?;
                tally.signed_live += 1;
                Some(
                    p.signed(&self.sim, PeerEvent::Started, unix_now())
                        .map(Body::Owned),
                )
            }
            Jobs::Heartbeat {
                presigned,
                signed_at,
            } => {
                if let Some(b) = presigned.get(k) {
                    if signed_at.elapsed() < PRESIGNED_FRESH {
                        return Some(Ok(Body::Shared(b)));
                    }
                }
                tally.signed_live += 1;
                let p = &self.peers[k % n];
                Some(
                    p.signed(&self.sim, PeerEvent::Heartbeat, unix_now())
                        .map(Body::Owned),
                )
            }
        }
    }
}

enum Body<'a> {
    Shared(&'a [u8]),
    Owned(Vec<u8>),
}

impl Body<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Shared(b) => b,
            Body::Owned(b) => b,
        }
    }
}

/// Open `connections` connections and run the phase on them; returns the
/// merged tally. Connection failures before the first announce are errors.
pub async fn run_phase(
    connector: &SslConnector,
    target: &Target,
    phase: Arc<Phase>,
    connections: usize,
) -> anyhow::Result<Tally> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        clients.push(
            TrackerClient::connect(connector, target.addr, target.pin, target.timeout).await?,
        );
    }
    let mut set = JoinSet::new();
    for client in clients {
        let (phase, connector) = (phase.clone(), connector.clone());
        let (addr, pin, timeout) = (target.addr, target.pin, target.timeout);
        set.spawn(async move {
            let mut tally = Tally::default();
            let mut client = Some(client);
            while let Some(body) = phase.next_body(&mut tally) {
                let body = body?;
                let c = match client.take() {
                    Some(c) => c,
                    None => match TrackerClient::connect(&connector, addr, pin, timeout).await {
                        Ok(c) => c,
                        Err(_) => {
                            tally.error(TRANSPORT);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                client = Some(c);
                let started = Instant::now();
                let result = match client.as_mut() {
                    Some(c) => c.announce(body.bytes()).await,
                    None => continue,
                };
                let done = Instant::now();
                let counted = done >= phase.window_start && done < phase.window_end;
                match result {
                    Ok((200, resp)) if AnnounceResponse::decode(&resp).is_ok() => {
                        if counted {
                            tally.ok += 1;
                            let us = done.duration_since(started).as_micros();
                            tally.latency.record(u64::try_from(us).unwrap_or(u64::MAX));
                        }
                    }
                    Ok((200, _)) => tally.error(BAD_RESPONSE),
                    Ok((status, _)) => {
                        if counted {
                            tally.error(&status.to_string());
                        }
                    }
                    Err(_) => {
                        client = None;
                        if counted {
                            tally.error(TRANSPORT);
                        }
                    }
                }
            }
            anyhow::Ok(tally)
        });
    }
    let mut total = Tally::default();
    while let Some(joined) = set.join_next().await {
        total.merge(&joined??);
    }
    Ok(total)
}
