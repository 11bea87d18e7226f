//! The Neighbor actor: one per NID the tracker lists for us.
//!
//! If the tracker told us to dial, it dials with exponential back-off and
//! jitter until the link is up; either way it takes accepted links from the
//! listener, hands the verified link to the data path and watches it. A
//! link that ends, or a streak of failed dials, is reported to the
//! TrackerClient (failed NID → early re-announce); it keeps re-dialling
//! while the tracker still lists the NID. When the tracker drops the NID,
//! the actor tells the data path (`drop_nid`) and ends.
//!
//! Architecture invariant: a link only reaches the data path after TLS, the
//! pin the tracker gave for this NID and the hello all checked out; a failed
//! attempt never touches the link that is up.

use std::rc::Rc;
use std::time::Duration;

use anomos_common::api::Neighbour;
use anomos_common::{Nid, PeerId};
use openssl::ssl::SslConnector;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::tracker::TrackerMsg;
use super::{LinkWatch, LocalFuture, Plane};
use crate::core::backoff::Backoff;
use crate::error::LinkError;
use crate::link::EstablishedLink;
use crate::metrics::Metrics;
use crate::net::dial::dial;
use crate::net::listen::report;

/// Messages to a Neighbor actor (sent by the TrackerClient actor).
#[derive(Debug)]
pub enum NeighborMsg {
    /// The tracker still lists the NID (address or dial flag may change).
    Listed(Neighbour),
    /// The listener verified an incoming link for this NID.
    LinkAccepted(EstablishedLink),
}

/// Shared by every Neighbor actor of a peer.
pub struct NeighborDeps<P: Plane> {
    /// The data path.
    pub plane: P,
    /// Our peer id (for our hello).
    pub me: PeerId,
    /// TLS context for dialling.
    pub connector: SslConnector,
    /// Dial time budget.
    pub handshake_timeout: Duration,
    /// First re-dial delay.
    pub retry: Duration,
    /// Longest re-dial delay.
    pub retry_max: Duration,
    /// Failed dials in a row before the NID is reported.
    pub failures_reported: u32,
    /// Gauges and counters.
    pub metrics: Metrics,
    /// Where failures go.
    pub tracker: mpsc::UnboundedSender<TrackerMsg<P::Stream>>,
}

impl<P: Plane> std::fmt::Debug for NeighborDeps<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeighborDeps")
    }
}

/// Start the actor for `n`; dropping the returned sender stops it (and
/// drops the NID at the data path).
pub fn spawn<P: Plane>(
    deps: Rc<NeighborDeps<P>>,
    n: Neighbour,
) -> mpsc::UnboundedSender<NeighborMsg> {
    let (tx, rx) = mpsc::unbounded_channel();
    actix_rt::spawn(run(deps, n, rx));
    tx
}

/// Wait on an optional future; never resolves when there is none.
async fn maybe<T>(f: &mut Option<LocalFuture<T>>) -> T {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn run<P: Plane>(
    deps: Rc<NeighborDeps<P>>,
    mut n: Neighbour,
    mut rx: mpsc::UnboundedReceiver<NeighborMsg>,
) {
    let nid: Nid = n.nid;
    let mut backoff = Backoff::new(deps.retry, deps.retry_max);
    let mut up: Option<P::Link> = None;
    let mut closed: Option<LocalFuture<&'static str>> = None;
    let mut dialing: Option<LocalFuture<Result<EstablishedLink, LinkError>>> = None;
    let mut next_dial: Option<Instant> = n.dial.then(Instant::now);
    let mut rng = rand::rng();
    loop {
        let due = next_dial.is_some_and(|t| t <= Instant::now());
        if up.is_none() && dialing.is_none() && n.dial && due {
            next_dial = None;
            let d = deps.clone();
            let target = n;
            dialing = Some(Box::pin(async move {
                dial(&d.connector, d.me, &target, d.handshake_timeout).await
            }));
        }
        let wake = next_dial.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            msg = rx.recv() => match msg {
                None => break,
                Some(NeighborMsg::Listed(new)) => {
                    if new.dial && up.is_none() && next_dial.is_none() && dialing.is_none() {
                        next_dial = Some(Instant::now());
                    }
                    n = new;
                }
                Some(NeighborMsg::LinkAccepted(link)) => {
                    if link.peer.0 != n.pin.0 {
                        continue;
                    }
                    if let Some(old) = up.take() {
                        // A verified link from the pinned peer while ours is
                        // up: the other end saw ours die first. Let the data
                        // path forget the old one before attaching.
                        old.close();
                        if let Some(c) = closed.take() {
                            c.await;
                        }
                        settle(&deps.plane, nid).await;
                    }
                    dialing = None;
                    next_dial = None;
                    (up, closed) = attach(&deps, link);
                    backoff.reset();
                }
            },
            reason = maybe(&mut closed) => {
                up = None;
                closed = None;
                tracing::info!(reason, "neighbour link closed");
                let _ = deps.tracker.send(TrackerMsg::LinkFailed { nid });
                if n.dial {
                    next_dial = Some(Instant::now() + backoff.fail(&mut rng));
                }
            }
            res = maybe(&mut dialing) => {
                dialing = None;
                match res {
                    Ok(link) if up.is_none() => {
                        (up, closed) = attach(&deps, link);
                        backoff.reset();
                    }
                    // An accepted link won the race: keep it.
                    Ok(_) => {}
                    Err(e) => {
                        report(&deps.metrics, &e, "outgoing");
                        let delay = backoff.fail(&mut rng);
                        if backoff.failures() == deps.failures_reported {
                            let _ = deps.tracker.send(TrackerMsg::LinkFailed { nid });
                        }
                        next_dial = Some(Instant::now() + delay);
                    }
                }
            }
            _ = tokio::time::sleep_until(wake), if next_dial.is_some() => {}
        }
    }
    if let Some(link) = up.take() {
        link.close();
    }
    deps.plane.drop_nid(nid);
}

/// Wait (bounded) until the data path no longer holds a link for `nid`:
/// it forgets a closed link in its own task, and refuses a second link for
/// a NID it still holds.
async fn settle<P: Plane>(plane: &P, nid: Nid) {
    for _ in 0..200 {
        if !plane.links().iter().any(|(n, _)| *n == nid) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[allow(clippy::type_complexity)]
fn attach<P: Plane>(
    deps: &NeighborDeps<P>,
    link: EstablishedLink,
) -> (Option<P::Link>, Option<LocalFuture<&'static str>>) {
    let handle = deps.plane.attach_link(link);
    let closed = handle.closed();
    tracing::debug!("neighbour link up");
    (Some(handle), Some(closed))
}
