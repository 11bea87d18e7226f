//! LinkCore: the timers of one link (keep-alive and idle timeout).
//!
//! A link that has written nothing for `keepalive` sends one PADDING cell,
//! so a healthy but quiet neighbour is never mistaken for a dead one; a link
//! that has *received* nothing for `idle_timeout` (longer than the
//! neighbour's keep-alive) is closed with reason `idle_timeout`. Sans-IO:
//! the link tasks report reads and writes and ask what is due.

use std::time::{Duration, Instant};

/// What a link's timers ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkTimer {
    /// Nothing due.
    Idle,
    /// Send one PADDING cell (nothing was written for `keepalive`).
    SendPadding,
    /// Close the link: nothing was received for `idle_timeout`.
    Close(&'static str),
}

/// Keep-alive and idle-timeout state of one link.
#[derive(Clone, Debug)]
pub struct LinkCore {
    keepalive: Duration,
    idle_timeout: Duration,
    last_rx: Instant,
    last_tx: Instant,
}

impl LinkCore {
    /// A link that just came up at `now`.
    pub fn new(now: Instant, keepalive: Duration, idle_timeout: Duration) -> LinkCore {
        LinkCore {
            keepalive,
            idle_timeout,
            last_rx: now,
            last_tx: now,
        }
    }

    /// Bytes arrived.
    pub fn on_rx(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// Bytes were written.
    pub fn on_tx(&mut self, now: Instant) {
        self.last_tx = now;
    }

    /// When [`LinkCore::poll`] next has something to say.
    pub fn next_deadline(&self) -> Instant {
        (self.last_tx + self.keepalive).min(self.last_rx + self.idle_timeout)
    }

    /// What is due at `now`. Closing wins over padding.
    pub fn poll(&self, now: Instant) -> LinkTimer {
        if now >= self.last_rx + self.idle_timeout {
            LinkTimer::Close("idle_timeout")
        } else if now >= self.last_tx + self.keepalive {
            LinkTimer::SendPadding
        } else {
            LinkTimer::Idle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_then_idle_timeout() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = LinkCore::new(t0, 10 * s, 30 * s);
        assert_eq!(l.poll(t0 + 9 * s), LinkTimer::Idle);
        assert_eq!(l.next_deadline(), t0 + 10 * s);
        assert_eq!(l.poll(t0 + 10 * s), LinkTimer::SendPadding);
        l.on_tx(t0 + 10 * s);
        assert_eq!(l.poll(t0 + 15 * s), LinkTimer::Idle);
        l.on_rx(t0 + 15 * s);
        l.on_tx(t0 + 40 * s);
        assert_eq!(l.poll(t0 + 44 * s), LinkTimer::Idle);
        assert_eq!(l.poll(t0 + 45 * s), LinkTimer::Close("idle_timeout"));
    }
}
