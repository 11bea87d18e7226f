//! Driving the set-up probe of `inproc` runs (what is measured and why:
//! [`super::probe`]). Everything here runs on the driver's thread, talking
//! to the probe origins through their [`PeerHandle`]s, the same path a
//! download's Swarm uses to ask the tracker for circuits.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anomos_common::InfoHash;
use anomos_peer::datapath::{CircuitStream, DataPath};
use anomos_peer::PeerHandle;
use anyhow::Context as _;
use tokio::io::AsyncReadExt as _;

use super::observe;
use super::probe::{self, PhaseContext, ProbePhase, Sample};
use super::prom::Hist;
use super::scrape::Scraper;
use crate::procstat::{load_average, ProcReader};

/// Longest wait for one probe circuit; a slower one counts as not opened.
const PROBE_WAIT: Duration = Duration::from_secs(30);
/// Pause after each probe, so its BREAK has left before the next request
/// and the probes stay one at a time.
const PROBE_GAP: Duration = Duration::from_millis(100);
/// Longest wait for one held circuit while filling.
const FILL_WAIT: Duration = Duration::from_secs(60);

/// The probe origins and what they hold.
pub struct Prober {
    /// The origins, asked in turn.
    pub origins: Vec<PeerHandle<DataPath>>,
    /// Their operator listeners (for their set-up histograms).
    pub origin_metrics: Vec<SocketAddr>,
    /// The torrent the probe circuits go to (its seeders are the exits).
    pub target: InfoHash,
    /// Held idle circuits still open (each watcher subtracts its own when
    /// the circuit ends).
    pub held: Rc<Cell<u64>>,
}

/// Serve `infohash` at a probe exit: hold every circuit until its
/// originator lets it go. Runs on the exit's arbiter.
pub fn serve_exit(peer: &anomos_peer::Peer, infohash: InfoHash) {
    let mut circuits = peer.serve(infohash);
    actix_rt::spawn(async move {
        while let Some(c) = circuits.recv().await {
            actix_rt::spawn(hold_open(c, None));
        }
    });
}

/// Keep `c` until its other end closes it (nothing is ever sent on a held
/// circuit), then count it out of `alive`.
async fn hold_open(mut c: CircuitStream, alive: Option<Rc<Cell<u64>>>) {
    let mut sink = [0u8; 64];
    while let Ok(n) = c.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
    if let Some(a) = alive {
        a.set(a.get().saturating_sub(1));
    }
}

impl Prober {
    /// Open `hold` idle circuits to the probe exits serving `exits`, spread
    /// over the origins (concurrently), `per_round` per request (the
    /// tracker grants at most one circuit per source per announce, so one
    /// per exit); they stay open until the origins stop. Seconds taken.
    pub async fn fill(
        &self,
        exits: InfoHash,
        hold: usize,
        per_round: usize,
    ) -> anyhow::Result<f64> {
        let t = Instant::now();
        let n = self.origins.len().max(1);
        let mut tasks = Vec::new();
        for (k, o) in self.origins.iter().enumerate() {
            let quota = hold / n + usize::from(k < hold % n);
            let (o, held) = (o.clone(), self.held.clone());
            tasks.push(actix_rt::spawn(async move {
                let mut got = 0;
                while got < quota {
                    let want = per_round.clamp(1, 64).min(quota - got);
                    let mut rx = o.want_circuits(exits, want as u16);
                    for _ in 0..want {
                        let c = tokio::time::timeout(FILL_WAIT, rx.recv())
                            .await
                            .with_context(|| format!("held circuit {got} did not open"))?
                            .context("circuit requests dropped")?;
                        held.set(held.get() + 1);
                        actix_rt::spawn(hold_open(c, Some(held.clone())));
                        got += 1;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for task in tasks {
            task.await.context("a fill task ended")??;
        }
        Ok(t.elapsed().as_secs_f64())
    }

    /// One phase: up to `n` probe circuits one after another, each asked of
    /// the next origin, timed from the request to the open stream and
    /// dropped at once (its circuit closes). `downloads` gives the
    /// downloads' open circuits and whether any download still runs, at
    /// each request; with `bulk_only` the phase ends when none does.
    pub async fn phase(
        &self,
        name: &str,
        n: usize,
        bulk_only: bool,
        downloads: &dyn Fn() -> (u64, bool),
    ) -> anyhow::Result<ProbePhase> {
        let scraper = Scraper::default();
        let me = ProcReader::new(None);
        let before = self.setup_hist(&scraper).await?;
        let (cpu0, t0, held) = (me.sample()?.cpu_secs, Instant::now(), self.held.get());
        let mut samples = Vec::with_capacity(n);
        for k in 0..n {
            let (open, bulk) = downloads();
            if bulk_only && !bulk {
                break;
            }
            let live = open + self.held.get();
            let origin = &self.origins[k % self.origins.len().max(1)];
            let t = Instant::now();
            let mut rx = origin.want_circuits(self.target, 1);
            let took = match tokio::time::timeout(PROBE_WAIT, rx.recv()).await {
                Ok(Some(c)) => {
                    let us = t.elapsed().as_micros() as u64;
                    drop(c);
                    Some(us)
                }
                _ => None,
            };
            // Withdraws the demand if it did not open.
            drop(rx);
            samples.push(Sample {
                request_to_open_us: took,
                live,
                bulk,
            });
            tokio::time::sleep(PROBE_GAP).await;
        }
        let after = self.setup_hist(&scraper).await?;
        let ctx = PhaseContext {
            held,
            origins_setup: after.since(&before),
            cpu_secs: me.sample()?.cpu_secs - cpu0,
            secs: t0.elapsed().as_secs_f64(),
            load_1m: load_average().map(|l| l[0]),
        };
        Ok(probe::summarize(name, &samples, &ctx))
    }

    /// The origins' `anomos_circuit_setup_seconds`, added up.
    async fn setup_hist(&self, s: &Scraper) -> anyhow::Result<Hist> {
        let mut h = Hist::default();
        for sc in observe::scrape_all(s, &self.origin_metrics)
            .await?
            .into_iter()
            .flatten()
        {
            h.add(&sc.histogram("anomos_circuit_setup_seconds"));
        }
        Ok(h)
    }
}
