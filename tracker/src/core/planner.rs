//! Path selection for circuits, as pure functions over the graph.
//!
//! The original Anomos always built 3-hop paths and picked sources in hash
//! order, so a path's length told a relay its position and the first seeder
//! in hash order carried the whole swarm. Here:
//!
//! * destinations are a uniform random sample of the swarm members that can
//!   serve, distinct per circuit;
//! * the relay count is uniform in `[min_relays, max_relays]` per circuit,
//!   and a circuit keeps its drawn count while it tries destinations: in a
//!   well-mixed overlay long paths are found far more often than short
//!   ones (0.99 against 0.31 of random pairs at 300 peers), so redrawing
//!   per destination skewed the lengths handed out towards the longest;
//!   the search budget is one search per destination plus one per circuit;
//! * next hops are drawn at random with weight `1 / (1 + load)`, so busy
//!   peers get proportionally less new traffic, with BFS-distance pruning
//!   towards the destination and a bounded number of expansions, so a search
//!   that cannot succeed ends quickly instead of exploring the whole graph;
//! * a path never repeats a vertex, uses only reachability-checked relays
//!   that no neighbour reported dead since they last announced, that are
//!   not excluded for failing set-ups (`core::health`) and,
//!   unless same-IP is allowed, never holds two peers with the same IP.
//!
//! Building the tracking code itself (public-key work) happens in the
//! planner actor; this module only decides *where* circuits go.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;

use anomos_common::{Nid, PeerId};
use rand::seq::SliceRandom;
use rand::Rng;

use super::graph::NeighbourGraph;

/// Most layers in a tracking code, both endpoints included.
pub const MAX_PATH_HOPS: usize = 8;

/// Knobs of path selection.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Fewest relays between originator and destination.
    pub min_relays: usize,
    /// Most relays (at most `MAX_PATH_HOPS - 2`).
    pub max_relays: usize,
    /// Vertex expansions one path search may spend before giving up.
    pub max_expansions: usize,
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            min_relays: 2,
            max_relays: 4,
            max_expansions: 400,
        }
    }
}

/// One chosen path: `hops[0]` is the originator, the last is the
/// destination; `nids[i]` names the edge `hops[i] – hops[i + 1]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPath {
    /// Originator, relays, destination.
    pub hops: Vec<PeerId>,
    /// NID of each consecutive edge (`hops.len() - 1` of them).
    pub nids: Vec<Nid>,
}

impl PlannedPath {
    /// Relays between the endpoints.
    pub fn relays(&self) -> usize {
        self.hops.len().saturating_sub(2)
    }
}

/// Plan up to `wanted` circuits from `origin`, each to a distinct
/// destination drawn uniformly from `servers`, each with its own relay
/// count drawn uniformly. A circuit tries destinations in random order
/// with its count; fewer (or no) paths is a normal outcome.
pub fn plan<R: Rng + ?Sized>(
    g: &NeighbourGraph,
    rng: &mut R,
    cfg: &PlanConfig,
    origin: PeerId,
    servers: &[PeerId],
    wanted: usize,
) -> Vec<PlannedPath> {
    let usable = |d: &PeerId| g.vertex(*d).is_some_and(|v| v.usable());
    let mut dests: Vec<PeerId> = servers
        .iter()
        .copied()
        .filter(|d| *d != origin && usable(d))
        .collect();
    dests.shuffle(rng);
    let mut out = Vec::new();
    // One search per destination as before, plus one per circuit: a slot
    // may revisit destinations another relay count could not reach.
    let mut searches = dests.len().saturating_add(wanted);
    while out.len() < wanted && !dests.is_empty() && searches > 0 {
        let relays = rng.random_range(cfg.min_relays..=cfg.max_relays.max(cfg.min_relays));
        let mut found = None;
        for (i, d) in dests.iter().enumerate() {
            if searches == 0 {
                break;
            }
            searches -= 1;
            if let Some(p) = find_path(g, rng, cfg, origin, *d, relays) {
                found = Some((i, p));
                break;
            }
        }
        if let Some((i, p)) = found {
            dests.swap_remove(i);
            out.push(p);
        }
    }
    out
}

/// Find a simple path `origin → k relays → dest`, or `None`.
pub fn find_path<R: Rng + ?Sized>(
    g: &NeighbourGraph,
    rng: &mut R,
    cfg: &PlanConfig,
    origin: PeerId,
    dest: PeerId,
    relays: usize,
) -> Option<PlannedPath> {
    if origin == dest || relays + 2 > MAX_PATH_HOPS {
        return None;
    }
    let o_ip = g.vertex(origin)?.addr.ip();
    let d_ip = g.vertex(dest)?.addr.ip();
    if !g.ips_compatible(o_ip, d_ip) {
        return None;
    }
    let dist = distances_to(g, dest, origin, relays);
    let mut search = Search {
        g,
        dest,
        relays,
        dist,
        budget: cfg.max_expansions,
    };
    let mut path = vec![origin];
    let mut ips = vec![o_ip, d_ip];
    if !search.extend(rng, &mut path, &mut ips) {
        return None;
    }
    path.push(dest);
    let nids = path
        .windows(2)
        .map(|w| g.nid_between(w[0], w[1]))
        .collect::<Option<Vec<_>>>()?;
    Some(PlannedPath { hops: path, nids })
}

/// Hop distances to `dest` through usable relays (the originator is not
/// a relay), bounded by `limit` edges. A path with `k` relays only ever
/// asks for relays within `k` edges of `dest` (the first relay has `k`
/// edges left), so `limit = k`: one level less than the whole path, which
/// in a well-mixed overlay of degree 4–6 is a ball about 4 × smaller.
fn distances_to(
    g: &NeighbourGraph,
    dest: PeerId,
    origin: PeerId,
    limit: usize,
) -> HashMap<PeerId, usize> {
    let mut dist = HashMap::from([(dest, 0usize)]);
    let mut queue = VecDeque::from([dest]);
    while let Some(v) = queue.pop_front() {
        let dv = dist.get(&v).copied().unwrap_or(0);
        if dv >= limit {
            continue;
        }
        for (u, _) in g.adjacent(v) {
            let relay_ok = g.vertex(u).is_some_and(|x| x.usable() && !x.excluded);
            if u == origin || dist.contains_key(&u) || !relay_ok {
                continue;
            }
            dist.insert(u, dv + 1);
            queue.push_back(u);
        }
    }
    dist
}

struct Search<'a> {
    g: &'a NeighbourGraph,
    dest: PeerId,
    relays: usize,
    dist: HashMap<PeerId, usize>,
    budget: usize,
}

impl Search<'_> {
    /// Depth-first, weighted-random extension of `path` (which holds the
    /// originator and the relays so far) until it can step onto `dest`.
    fn extend<R: Rng + ?Sized>(
        &mut self,
        rng: &mut R,
        path: &mut Vec<PeerId>,
        ips: &mut Vec<IpAddr>,
    ) -> bool {
        let Some(&here) = path.last() else {
            return false;
        };
        let placed = path.len() - 1;
        if placed == self.relays {
            return self.g.nid_between(here, self.dest).is_some();
        }
        if self.budget == 0 {
            return false;
        }
        self.budget -= 1;
        let seen: HashSet<PeerId> = path.iter().copied().collect();
        let edges_left_after = self.relays - placed;
        let mut cands: Vec<(PeerId, IpAddr, f64)> = self
            .g
            .adjacent(here)
            .into_iter()
            .filter(|(u, _)| *u != self.dest && !seen.contains(u))
            .filter(|(u, _)| self.dist.get(u).is_some_and(|d| *d <= edges_left_after))
            .filter_map(|(u, _)| {
                let v = self.g.vertex(u)?;
                let ip = v.addr.ip();
                let ok =
                    v.usable() && !v.excluded && ips.iter().all(|p| self.g.ips_compatible(*p, ip));
                ok.then(|| (u, ip, 1.0 / (1.0 + v.load())))
            })
            .collect();
        while !cands.is_empty() {
            let i = weighted_index(rng, &cands);
            let (u, ip, _) = cands.swap_remove(i);
            path.push(u);
            ips.push(ip);
            if self.extend(rng, path, ips) {
                return true;
            }
            path.pop();
            ips.pop();
            if self.budget == 0 {
                return false;
            }
        }
        false
    }
}

/// Index drawn with probability proportional to the third field.
fn weighted_index<R: Rng + ?Sized>(rng: &mut R, cands: &[(PeerId, IpAddr, f64)]) -> usize {
    let total: f64 = cands.iter().map(|c| c.2).sum();
    let mut x = rng.random::<f64>() * total;
    for (i, c) in cands.iter().enumerate() {
        if x < c.2 {
            return i;
        }
        x -= c.2;
    }
    cands.len() - 1
}

/// Share-ratio policy: how many circuits a peer may get for one torrent.
///
/// A peer that has downloaded more than `grace_bytes` while its ratio
/// `(uploaded + relayed) / downloaded` is below `threshold` gets at most
/// `low_ratio_circuits`; everyone else gets up to `max_circuits`. Relaying
/// counts, so a peer can always earn its way back by staying online.
#[derive(Debug, Clone)]
pub struct RatioPolicy {
    /// Cap for peers in good standing.
    pub max_circuits: usize,
    /// Cap for low-ratio peers (still > 0: never starve a downloader).
    pub low_ratio_circuits: usize,
    /// Ratio below which the low cap applies.
    pub threshold: f64,
    /// Bytes a newcomer may download before the ratio is looked at.
    pub grace_bytes: u64,
}

impl Default for RatioPolicy {
    fn default() -> Self {
        RatioPolicy {
            max_circuits: 8,
            low_ratio_circuits: 2,
            threshold: 0.5,
            grace_bytes: 1 << 30,
        }
    }
}

impl RatioPolicy {
    /// Circuits granted for a request of `wanted`, given ledger totals.
    pub fn allowance(&self, wanted: u32, uploaded: u64, downloaded: u64, relayed: u64) -> usize {
        let wanted = wanted as usize;
        let credit = uploaded.saturating_add(relayed) as f64;
        let low = downloaded > self.grace_bytes && credit / (downloaded as f64) < self.threshold;
        wanted.min(if low {
            self.low_ratio_circuits
        } else {
            self.max_circuits
        })
    }

    /// The credit tier sealed into a circuit's exit payload (PROTOCOL.md
    /// §3.4): 0 nothing on record, 1 below `threshold`, 2 below 1, 3 at
    /// least 1 — `(uploaded + relayed) / downloaded`, so relaying counts.
    pub fn tier(&self, uploaded: u64, downloaded: u64, relayed: u64) -> u8 {
        let credit = uploaded.saturating_add(relayed);
        if credit == 0 && downloaded == 0 {
            return 0;
        }
        let ratio = credit as f64 / downloaded.max(1) as f64;
        if ratio >= 1.0 {
            3
        } else if ratio >= self.threshold {
            2
        } else {
            1
        }
    }
}

#[cfg(test)]
mod tests;
