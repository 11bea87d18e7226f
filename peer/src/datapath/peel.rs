//! Peeling tracking codes: inline on the data path's thread while a small
//! per-thread budget lasts, on tokio's blocking pool beyond it.
//!
//! A peel is one X25519 plus symmetric work (~45 µs). Sent to the blocking
//! pool it waits for a pool thread and then for its task to be polled
//! again on the data path's thread, behind every link task with bulk work:
//! measured in a 200-peer network in one process (2 cores, load ~5), 17–30
//! ms mean per peel and up to 262 ms, several times per circuit, against
//! ~75 µs inline. Inline peels keep set-up crypto out of that queue. The
//! budget ([`PeelBudget`]: at most [`INLINE_PEELS`] per [`BUDGET_WINDOW`]
//! per thread) bounds how long a flood of CREATEs can hold the thread
//! (~1 ms per 10 ms); beyond it peels go to the pool as before, where the
//! core's `max_pending_peels` bounds them.

use super::{unix_now, Inner};
use crate::core::relay::CircKey;
use anomos_common::crypto::X25519Secret;
use anomos_common::onion::{self, PeelError, Peeled, TrackingCode};
use anomos_common::replay::{ReplayCache, ReplayError, ReplayTag};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Inline peels allowed per thread in one [`BUDGET_WINDOW`].
pub(crate) const INLINE_PEELS: u32 = 16;
/// The budget's window.
pub(crate) const BUDGET_WINDOW: Duration = Duration::from_millis(10);

/// How many peels may still run inline: `per_window` per `window`, counted
/// from the first peel of a window (sans-IO: the caller passes `now`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeelBudget {
    start: Option<Instant>,
    used: u32,
    per_window: u32,
    window: Duration,
}

impl PeelBudget {
    pub(crate) const fn new(per_window: u32, window: Duration) -> PeelBudget {
        PeelBudget {
            start: None,
            used: 0,
            per_window,
            window,
        }
    }

    /// Take one inline peel if the budget allows it at `now`.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let expired = self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if expired {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used >= self.per_window {
            return false;
        }
        self.used += 1;
        true
    }
}

thread_local! {
    /// Shared by every data path on this thread (an arbiter may run many
    /// peers), so the bound holds per thread, not per peer.
    static BUDGET: Cell<PeelBudget> = const { Cell::new(PeelBudget::new(INLINE_PEELS, BUDGET_WINDOW)) };
}

/// Whether the next peel on this thread may run inline.
fn inline_allowed(now: Instant) -> bool {
    BUDGET.with(|b| {
        let mut budget = b.get();
        let ok = budget.take(now);
        b.set(budget);
        ok
    })
}

/// Peel a neighbour's code and feed the result to the core: at once when
/// the budget allows (the caller's `pump` goes on with the core's outputs),
/// else on the blocking pool.
pub(super) fn start(inner: &Rc<Inner>, key: CircKey, code: Box<[u8; onion::CODE_LEN]>) {
    if inline_allowed(Instant::now()) {
        let result = TrackingCode::from_bytes(&code[..])
            .map_err(|_| PeelError::Malformed("code length"))
            .and_then(|c| peel_now(&inner.onion, &inner.replay, &c));
        inner
            .core
            .borrow_mut()
            .peel_done(Instant::now(), key, result);
        return;
    }
    tokio::task::spawn_local(peel_task(inner.clone(), key, code));
}

/// Peel a neighbour's code on the blocking pool and feed the result back.
async fn peel_task(inner: Rc<Inner>, key: CircKey, code: Box<[u8; onion::CODE_LEN]>) {
    let result = peel_blocking(&inner, &code[..]).await;
    inner
        .core
        .borrow_mut()
        .peel_done(Instant::now(), key, result);
    inner.pump();
}

/// Peel `code` (our own layer of a grant): inline within the budget, else
/// on the blocking pool.
pub(super) async fn peel(inner: &Inner, code: &[u8]) -> Result<Peeled, PeelError> {
    if inline_allowed(Instant::now()) {
        let code =
            TrackingCode::from_bytes(code).map_err(|_| PeelError::Malformed("code length"))?;
        return peel_now(&inner.onion, &inner.replay, &code);
    }
    peel_blocking(inner, code).await
}

/// One X25519 off the runtime thread. The replay cache is locked only for
/// its two look-ups (`peel_with`), so peels run in parallel on the pool.
async fn peel_blocking(inner: &Inner, code: &[u8]) -> Result<Peeled, PeelError> {
    let code = TrackingCode::from_bytes(code).map_err(|_| PeelError::Malformed("code length"))?;
    let onion = inner.onion.clone();
    let replay = inner.replay.clone();
    let job = tokio::task::spawn_blocking(move || peel_now(&onion, &replay, &code));
    job.await
        .unwrap_or(Err(PeelError::Malformed("peel task failed")))
}

/// The peel itself, with the shared replay cache.
fn peel_now(
    onion: &X25519Secret,
    replay: &Mutex<ReplayCache>,
    code: &TrackingCode,
) -> Result<Peeled, PeelError> {
    let now = unix_now();
    // A poisoned lock (a peel panicked inside the cache) fails closed:
    // no code is accepted without a working replay check.
    let seen = |tag: &ReplayTag| replay.lock().is_ok_and(|c| c.contains(tag));
    let record = |tag, expiry| match replay.lock() {
        Ok(mut cache) => cache.check_and_insert(tag, expiry, now),
        Err(_) => Err(ReplayError::Full),
    };
    onion::peel_with(onion, code, now, seen, record)
}

#[cfg(test)]
mod tests;
