//! Which relays keep failing circuit set-ups, from originators' reports.
//!
//! A relay that accepts CREATE but never forwards it (or refuses every
//! one) costs each circuit through it the originator's set-up timeout, and
//! nothing else notices: its links stay up. The originator cannot tell
//! which hop failed (that is the point of the onion), but the tracker
//! planned the path, so it can attribute: the announce lists the ids of
//! grants that failed to open, and this core counts each failure against
//! every relay on that path.
//!
//! One bad relay makes every path through it fail, honest co-hops
//! included, so raw counts would blame them too. Three rules keep the
//! blame where it belongs:
//!
//! * a relay is judged by its failure *rate* over the circuits planned
//!   through it in the window, and an honest co-hop also carries circuits
//!   that avoid the bad relay, which open;
//! * it must fail clearly more often than the paths that avoid it
//!   (`factor` ×), so a network-wide problem (or an originator whose own
//!   link is down) excludes nobody;
//! * exclusions are decided greedily, the relay on the most failed paths
//!   first (a bad relay is on every path it broke, a co-hop only on some),
//!   and a failed path through an excluded relay counts against nobody
//!   else ("explained").
//!
//! A reporter cannot aim at a chosen relay: it never learns who is on its
//! paths, and only ids granted to it count. An excluded relay gets no relay
//! hops for `exclude_for`; its counts start again afterwards. Memory is
//! bounded: paths are remembered only until their code expires (and at
//! most `max_paths`), failures only within the window (at most
//! `max_failures`).

use std::collections::{HashMap, HashSet, VecDeque};

use anomos_common::PeerId;

/// Knobs of the attribution.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Seconds over which planned circuits and failures are counted.
    pub window_secs: u64,
    /// Failures a relay needs before it can be excluded.
    pub min_failures: u32,
    /// Failure rate a relay needs before it can be excluded.
    pub min_rate: f64,
    /// How many times the failure rate of the paths that avoid it.
    pub factor: f64,
    /// Seconds an excluded relay gets no relay hops.
    pub exclude_secs: u64,
    /// Seconds a planned path is remembered (the code lifetime).
    pub path_secs: u64,
    /// Planned paths remembered at most (oldest forgotten first).
    pub max_paths: usize,
    /// Failed paths remembered at most (oldest forgotten first).
    pub max_failures: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window_secs: 600,
            min_failures: 3,
            min_rate: 0.5,
            factor: 2.0,
            exclude_secs: 600,
            path_secs: 300,
            max_paths: 200_000,
            max_failures: 10_000,
        }
    }
}

struct Planned {
    origin: PeerId,
    relays: Vec<PeerId>,
}

/// What changed: relays to exclude from relay hops now, and relays whose
/// exclusion ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Newly excluded.
    pub excluded: Vec<PeerId>,
    /// Back in service.
    pub restored: Vec<PeerId>,
}

/// Set-up failure attribution (see module docs). Time is Unix seconds.
pub struct SetupHealth {
    cfg: HealthConfig,
    paths: HashMap<u64, Planned>,
    /// Planned path ids in planning order, with when they expire.
    path_order: VecDeque<(u64, u64)>,
    /// (when, relays) of every planned circuit in the window.
    planned: VecDeque<(u64, Vec<PeerId>)>,
    /// (when, relays) of every reported failure in the window.
    failures: VecDeque<(u64, Vec<PeerId>)>,
    /// Excluded relays and when their exclusion ends.
    excluded: HashMap<PeerId, u64>,
    /// Failures accepted since start (a metric).
    accepted: u64,
}

impl std::fmt::Debug for SetupHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SetupHealth({} paths, {} excluded)",
            self.paths.len(),
            self.excluded.len()
        )
    }
}

impl SetupHealth {
    /// Empty.
    pub fn new(cfg: HealthConfig) -> Self {
        SetupHealth {
            cfg,
            paths: HashMap::new(),
            path_order: VecDeque::new(),
            planned: VecDeque::new(),
            failures: VecDeque::new(),
            excluded: HashMap::new(),
            accepted: 0,
        }
    }

    /// Relays excluded right now.
    pub fn excluded(&self) -> usize {
        self.excluded.len()
    }

    /// Whether `relay` is excluded right now.
    pub fn is_excluded(&self, relay: &PeerId) -> bool {
        self.excluded.contains_key(relay)
    }

    /// Failure reports accepted since start.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// A circuit `id` was planned for `origin` through `relays` at `now`.
    pub fn planned(&mut self, now: u64, id: u64, origin: PeerId, relays: Vec<PeerId>) {
        self.planned.push_back((now, relays.clone()));
        // Under a planning rate this cap cuts, rates cover the most recent
        // `max_paths` circuits rather than the whole window.
        while self.planned.len() > self.cfg.max_paths {
            self.planned.pop_front();
        }
        self.paths.insert(id, Planned { origin, relays });
        self.path_order
            .push_back((id, now.saturating_add(self.cfg.path_secs)));
        while self.paths.len() > self.cfg.max_paths {
            match self.path_order.pop_front() {
                Some((old, _)) => self.paths.remove(&old),
                None => break,
            };
        }
    }

    /// `origin` reports circuits `ids` as failed to open. Ids not granted
    /// to it, or forgotten, are ignored. Returns what the reports changed.
    pub fn failed(&mut self, now: u64, origin: PeerId, ids: &[u64]) -> Changes {
        let mut any = false;
        for id in ids {
            let mine = self.paths.get(id).is_some_and(|p| p.origin == origin);
            if let Some(p) = mine.then(|| self.paths.remove(id)).flatten() {
                self.failures.push_back((now, p.relays));
                self.accepted += 1;
                any = true;
            }
        }
        while self.failures.len() > self.cfg.max_failures {
            self.failures.pop_front();
        }
        let mut changes = self.tick(now);
        if any {
            changes.excluded = self.judge(now);
        }
        changes
    }

    /// Forget what left the window; end exclusions that ran out.
    pub fn tick(&mut self, now: u64) -> Changes {
        let since = now.saturating_sub(self.cfg.window_secs);
        while self.planned.front().is_some_and(|(t, _)| *t < since) {
            self.planned.pop_front();
        }
        while self.failures.front().is_some_and(|(t, _)| *t < since) {
            self.failures.pop_front();
        }
        while let Some(&(id, until)) = self.path_order.front() {
            if until > now && self.path_order.len() <= self.cfg.max_paths {
                break;
            }
            self.path_order.pop_front();
            self.paths.remove(&id);
        }
        let mut restored: Vec<PeerId> = self
            .excluded
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(r, _)| *r)
            .collect();
        restored.sort();
        for r in &restored {
            self.excluded.remove(r);
        }
        Changes {
            excluded: Vec::new(),
            restored,
        }
    }

    /// Exclude, worst first, every relay that fails clearly more often
    /// than the paths that avoid it, not counting failures an excluded
    /// relay explains.
    fn judge(&mut self, now: u64) -> Vec<PeerId> {
        let mut out = Vec::new();
        loop {
            let explained = |relays: &[PeerId], ex: &HashMap<PeerId, u64>| {
                relays.iter().any(|r| ex.contains_key(r))
            };
            let failed: Vec<&Vec<PeerId>> = self
                .failures
                .iter()
                .map(|(_, r)| r)
                .filter(|r| !explained(r, &self.excluded))
                .collect();
            let planned: Vec<&Vec<PeerId>> = self
                .planned
                .iter()
                .map(|(_, r)| r)
                .filter(|r| !explained(r, &self.excluded))
                .collect();
            let mut f: HashMap<PeerId, u32> = HashMap::new();
            for relays in &failed {
                for r in unique(relays) {
                    *f.entry(r).or_default() += 1;
                }
            }
            let mut p: HashMap<PeerId, u32> = HashMap::new();
            for relays in &planned {
                for r in unique(relays) {
                    *p.entry(r).or_default() += 1;
                }
            }
            let (all_f, all_p) = (failed.len() as f64, planned.len() as f64);
            let mut worst: Option<((u32, f64), PeerId)> = None;
            for (r, fr) in &f {
                let pr = f64::from(p.get(r).copied().unwrap_or(0).max(*fr));
                let rate = f64::from(*fr) / pr;
                // The paths that avoid r (clamped: counts are windowed).
                let others = ((all_f - f64::from(*fr)).max(0.0)) / (all_p - pr).max(1.0);
                let bad = *fr >= self.cfg.min_failures
                    && rate >= self.cfg.min_rate
                    && rate >= self.cfg.factor * others;
                // The relay on the most unexplained failures goes first (a
                // bad relay is on every path it broke; a co-hop only on
                // some), then the higher rate, then the smaller id.
                let key = (*fr, rate);
                let first = |(wf, wr): (u32, f64), id: PeerId| {
                    key.0 > wf || (key.0 == wf && (key.1 > wr || (key.1 == wr && *r < id)))
                };
                if bad && worst.is_none_or(|(w, id)| first(w, id)) {
                    worst = Some((key, *r));
                }
            }
            let Some((_, r)) = worst else {
                return out;
            };
            self.excluded
                .insert(r, now.saturating_add(self.cfg.exclude_secs));
            // Its failures are explained (co-hops are not charged with
            // them), and its counts start again when it comes back.
            self.planned.retain(|(_, rs)| !rs.contains(&r));
            self.failures.retain(|(_, rs)| !rs.contains(&r));
            out.push(r);
        }
    }
}

/// The relays of a path, each once.
fn unique(relays: &[PeerId]) -> HashSet<PeerId> {
    relays.iter().copied().collect()
}

#[cfg(test)]
mod tests;
