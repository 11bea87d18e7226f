//! The overlay graph and neighbour assignment, as a pure state machine.
//!
//! Vertices are registered peers, edges are the links the tracker told two
//! peers to hold. Every edge carries ONE [`Nid`] that names it at both ends;
//! an edge's NID is chosen free at both ends, so no peer ever has two links
//! with the same NID. A NID that was dropped at a peer stays quarantined until
//! that peer has been told (its next announce drains `dropped`), so a stale
//! link can never be confused with a fresh one under the same NID.
//!
//! After a tracker restart the graph is rebuilt from `held_links`: an edge
//! comes back only when both ends claim it with the same NID. A one-sided
//! claim waits in [`GraphConfig::claim_ttl_secs`] for the other end, is
//! refuted as soon as the other end announces without it, and in both cases
//! the claimer is told to drop it. See `STATE.md` next to this file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use anomos_common::{Nid, PeerId};
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableUnGraph};
use petgraph::visit::EdgeRef;

/// Retiring edges a vertex may hold at once, besides its `max_degree`
/// links (see `Link::retiring`).
pub const MAX_RETIRING: usize = 2;

/// Knobs of neighbour assignment.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Refill a peer until it has at least this many neighbours.
    pub min_degree: usize,
    /// Never give a peer more than this many neighbours.
    pub max_degree: usize,
    /// Let two peers with the same IP be neighbours (labs and tests only).
    pub allow_same_ip: bool,
    /// How long a one-sided `held_links` claim waits for the other end.
    pub claim_ttl_secs: u64,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            min_degree: 4,
            max_degree: 6,
            allow_same_ip: false,
            claim_ttl_secs: 120,
        }
    }
}

/// One registered peer.
#[derive(Debug, Clone)]
pub struct Vertex {
    /// The peer's identity (its certificate pin).
    pub id: PeerId,
    /// Where its link listener is (announce source IP + announced port).
    pub addr: SocketAddr,
    /// The reachability check passed: only then may it get edges or relay.
    pub reachable: bool,
    /// A neighbour reported its link to this peer failed, and the peer has
    /// not announced since. A peer that died shows up like this first (its
    /// session only expires after the TTL): until it speaks again it gets no
    /// new edges and carries no new circuits, so repairs route around it.
    pub suspect: bool,
    /// Failed circuit set-ups clearly more often than its peers
    /// (`core::health`): no relay hops until the exclusion ends. It may
    /// still be a destination or an originator.
    pub excluded: bool,
    /// Circuits currently planned through this vertex (any position).
    pub circuits: u32,
    /// Relayed bytes per second reported by the peer, in MiB/s.
    pub relay_rate: f64,
    nids: BTreeMap<Nid, EdgeIndex>,
    /// How many of its edges are retiring (`Link::retiring`).
    retiring: usize,
    dropped: BTreeSet<Nid>,
}

impl Vertex {
    /// May get new edges and carry new circuits: checked reachable and not
    /// suspected dead.
    pub fn usable(&self) -> bool {
        self.reachable && !self.suspect
    }

    /// Load used to weight path choice: circuits plus relay rate.
    pub fn load(&self) -> f64 {
        f64::from(self.circuits) + self.relay_rate
    }

    /// Number of links that take new circuits (retiring ones left out).
    pub fn degree(&self) -> usize {
        self.nids.len() - self.retiring
    }
}

/// One link between two peers.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The NID naming this link at both ends.
    pub nid: Nid,
    /// Circuits currently planned across this link.
    pub circuits: u32,
    /// The end that opens the link: the peer whose refill created it (its
    /// address was just checked), or the lower id for a restored edge.
    pub dialer: PeerId,
    /// Handed over to a newcomer while it carried circuits: it takes no
    /// new circuit and no longer counts towards its ends' degree, and it is
    /// dropped (both ends told) when the last circuit counted on it is
    /// uncounted (make-before-break, `graph/assign.rs`).
    pub retiring: bool,
}

/// A neighbour as handed to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeighbourEntry {
    /// The link's NID.
    pub nid: Nid,
    /// The neighbour's identity (its pin).
    pub peer: PeerId,
    /// The neighbour's link listener.
    pub addr: SocketAddr,
    /// Whether the peer asking opens this link (exactly one end does).
    pub dial: bool,
}

#[derive(Debug, Clone, Copy)]
struct Claim {
    target: PeerId,
    expiry: u64,
}

/// The overlay: vertices, edges with NIDs, pending restart claims.
#[derive(Debug)]
pub struct NeighbourGraph {
    cfg: GraphConfig,
    g: StableUnGraph<Vertex, Link>,
    index: HashMap<PeerId, NodeIndex>,
    /// claimer → (nid → claim): one-sided `held_links` awaiting the other end.
    claims: HashMap<PeerId, BTreeMap<Nid, Claim>>,
    /// target → claimers, to refute claims when the target announces.
    claims_on: HashMap<PeerId, HashSet<(PeerId, Nid)>>,
}

impl NeighbourGraph {
    /// An empty graph.
    pub fn new(cfg: GraphConfig) -> Self {
        NeighbourGraph {
            cfg,
            g: StableUnGraph::default(),
            index: HashMap::new(),
            claims: HashMap::new(),
            claims_on: HashMap::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &GraphConfig {
        &self.cfg
    }

    /// (vertices, edges).
    pub fn size(&self) -> (usize, usize) {
        (self.g.node_count(), self.g.edge_count())
    }

    /// Register a peer or update its address. Returns true when a
    /// reachability check is needed (new peer, or its address changed, which
    /// also drops its links: neighbours must reconnect to the new address).
    /// The peer announced, so it is alive: no longer suspect.
    pub fn upsert(&mut self, id: PeerId, addr: SocketAddr) -> bool {
        if let Some(&ix) = self.index.get(&id) {
            if let Some(v) = self.g.node_weight_mut(ix) {
                v.suspect = false;
            }
            let same = self.g.node_weight(ix).is_some_and(|v| v.addr == addr);
            if same {
                return !self.g.node_weight(ix).is_some_and(|v| v.reachable);
            }
            self.drop_all_edges(ix);
            if let Some(v) = self.g.node_weight_mut(ix) {
                v.addr = addr;
                v.reachable = false;
            }
            return true;
        }
        let ix = self.g.add_node(Vertex {
            id,
            addr,
            reachable: false,
            suspect: false,
            excluded: false,
            circuits: 0,
            relay_rate: 0.0,
            nids: BTreeMap::new(),
            retiring: 0,
            dropped: BTreeSet::new(),
        });
        self.index.insert(id, ix);
        true
    }

    /// Record the outcome of a reachability check for the peer at `addr`
    /// (ignored when the peer has moved since the check started).
    pub fn set_reachable(&mut self, id: PeerId, addr: SocketAddr, ok: bool) {
        if let Some(v) = self
            .index
            .get(&id)
            .and_then(|&ix| self.g.node_weight_mut(ix))
        {
            if v.addr == addr {
                v.reachable = ok;
            }
        }
    }

    /// Unregister a peer: its links die and their other ends learn it.
    pub fn remove(&mut self, id: PeerId) {
        let Some(ix) = self.index.remove(&id) else {
            return;
        };
        self.drop_all_edges(ix);
        self.g.remove_node(ix);
        if let Some(own) = self.claims.remove(&id) {
            for (nid, c) in own {
                if let Some(set) = self.claims_on.get_mut(&c.target) {
                    set.remove(&(id, nid));
                }
            }
        }
        if let Some(on) = self.claims_on.remove(&id) {
            for (claimer, nid) in on {
                self.refute(claimer, nid);
            }
        }
    }

    /// The peer reports these NIDs as failed: drop the edges at both ends;
    /// the other ends learn through `dropped` and become suspect until they
    /// announce (a dead peer never does, and must not be handed out again).
    pub fn fail_links(&mut self, id: PeerId, nids: &[Nid]) {
        let Some(&ix) = self.index.get(&id) else {
            return;
        };
        for nid in nids {
            let edge = self
                .g
                .node_weight(ix)
                .and_then(|v| v.nids.get(nid).copied());
            if let Some(e) = edge {
                let other = self
                    .g
                    .edge_endpoints(e)
                    .map(|(a, b)| if a == ix { b } else { a });
                self.drop_edge(e, Some(ix));
                if let Some(v) = other.and_then(|o| self.g.node_weight_mut(o)) {
                    v.suspect = true;
                }
            }
        }
    }

    /// Reconcile the links a peer says it holds. Existing edges are kept;
    /// a claim that matches the other end's pending claim becomes an edge;
    /// other claims wait; claims by others on this peer that it does not
    /// confirm are refuted.
    ///
    /// A confirmed link with a full end (it was retiring before a tracker
    /// restart, which forgot that) is restored as retiring while both ends
    /// have room for one, counting one circuit so it stays: the caller
    /// uncounts that circuit (`account_path(.., false)` on the returned
    /// pair) after its load window, and the edge goes then.
    pub fn hold_links(&mut self, id: PeerId, held: &[(Nid, PeerId)], now: u64) -> Vec<[PeerId; 2]> {
        let mut retired = Vec::new();
        let Some(&ix) = self.index.get(&id) else {
            return retired;
        };
        let held_set: HashSet<(Nid, PeerId)> = held.iter().copied().collect();
        // Refute claims on us we do not confirm.
        let on: Vec<(PeerId, Nid)> = self
            .claims_on
            .get(&id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for (claimer, nid) in on {
            if !held_set.contains(&(nid, claimer)) {
                self.refute(claimer, nid);
            }
        }
        // Our own stale claims (no longer held) just disappear.
        let own: Vec<Nid> = self
            .claims
            .get(&id)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default();
        for nid in own {
            let target = self
                .claims
                .get(&id)
                .and_then(|m| m.get(&nid))
                .map(|c| c.target);
            if let Some(t) = target.filter(|t| !held_set.contains(&(nid, *t))) {
                self.unclaim(id, nid, t);
            }
        }
        for &(nid, other) in held {
            if other == id || self.edge_between(ix, other).is_some() {
                continue;
            }
            let Some(&oix) = self.index.get(&other) else {
                self.claim(id, nid, other, now);
                continue;
            };
            let theirs = self
                .claims
                .get(&other)
                .and_then(|m| m.get(&nid))
                .map(|c| c.target);
            if theirs == Some(id) {
                self.unclaim(other, nid, id);
                self.unclaim(id, nid, other);
                let free = self.nid_in_use(ix, nid).is_none()
                    && self.nid_in_use(oix, nid).is_none()
                    && self.ip_ok(ix, oix);
                let fits = |w: NodeIndex| self.degree(w) < self.cfg.max_degree;
                if free && fits(ix) && fits(oix) {
                    self.add_edge(ix, oix, nid, id.min(other));
                } else if free && self.retire_room(ix) && self.retire_room(oix) {
                    self.add_edge(ix, oix, nid, id.min(other));
                    self.retire(ix, oix);
                    self.account_path(&[id, other], true);
                    retired.push([id, other]);
                } else {
                    self.mark_dropped(ix, nid);
                    self.mark_dropped(oix, nid);
                }
            } else if self.nid_in_use(ix, nid).is_none() {
                self.claim(id, nid, other, now);
            }
        }
        retired
    }

    /// Drop claims whose other end never confirmed in time.
    pub fn expire_claims(&mut self, now: u64) {
        let expired: Vec<(PeerId, Nid)> = self
            .claims
            .iter()
            .flat_map(|(c, m)| {
                m.iter()
                    .filter(|(_, cl)| cl.expiry <= now)
                    .map(|(n, _)| (*c, *n))
            })
            .collect();
        for (claimer, nid) in expired {
            self.refute(claimer, nid);
        }
    }

    /// The peer's full current neighbour set, sorted by NID.
    pub fn neighbours(&self, id: PeerId) -> Vec<NeighbourEntry> {
        let Some(&ix) = self.index.get(&id) else {
            return Vec::new();
        };
        self.g
            .edges(ix)
            .filter_map(|e| {
                let other = far_end(&e, ix);
                let v = self.g.node_weight(other)?;
                let dial = e.weight().dialer == id;
                Some(NeighbourEntry {
                    nid: e.weight().nid,
                    peer: v.id,
                    addr: v.addr,
                    dial,
                })
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// NIDs dropped at this peer since it was last told; telling it ends
    /// their quarantine.
    pub fn take_dropped(&mut self, id: PeerId) -> Vec<Nid> {
        self.index
            .get(&id)
            .and_then(|&ix| self.g.node_weight_mut(ix))
            .map(|v| std::mem::take(&mut v.dropped).into_iter().collect())
            .unwrap_or_default()
    }

    /// The vertex of a peer.
    pub fn vertex(&self, id: PeerId) -> Option<&Vertex> {
        self.index.get(&id).and_then(|&ix| self.g.node_weight(ix))
    }

    /// Exclude a peer from relay hops (or end that); see `core::health`.
    pub fn set_excluded(&mut self, id: PeerId, excluded: bool) {
        if let Some(v) = self
            .index
            .get(&id)
            .and_then(|&ix| self.g.node_weight_mut(ix))
        {
            v.excluded = excluded;
        }
    }

    /// The relay rate the peer reported (MiB/s), for load weighting.
    pub fn set_relay_rate(&mut self, id: PeerId, rate: f64) {
        if let Some(v) = self
            .index
            .get(&id)
            .and_then(|&ix| self.g.node_weight_mut(ix))
        {
            v.relay_rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        }
    }

    /// Count (`add`) or uncount a circuit along `path` for load weighting.
    pub fn account_path(&mut self, path: &[PeerId], add: bool) {
        let bump = |c: &mut u32| {
            *c = if add {
                c.saturating_add(1)
            } else {
                c.saturating_sub(1)
            }
        };
        for w in path.windows(2) {
            let (Some(&a), Some(&b)) = (self.index.get(&w[0]), self.index.get(&w[1])) else {
                continue;
            };
            if let Some(e) = self.g.find_edge(a, b) {
                let Some(l) = self.g.edge_weight_mut(e) else {
                    continue;
                };
                bump(&mut l.circuits);
                if l.retiring && l.circuits == 0 {
                    self.drop_edge(e, None);
                }
            }
        }
        for id in path {
            if let Some(v) = self
                .index
                .get(id)
                .and_then(|&ix| self.g.node_weight_mut(ix))
            {
                bump(&mut v.circuits);
            }
        }
    }

    /// Neighbours of a peer as (peer, nid) over links that take new
    /// circuits (retiring ones left out), for path search: straight from
    /// the edge list, in no particular order. Path search calls this for
    /// every vertex it touches, and in a well-mixed overlay a search touches
    /// many, so it skips the sorted `NeighbourEntry` set `neighbours` builds.
    pub fn adjacent(&self, id: PeerId) -> Vec<(PeerId, Nid)> {
        let Some(&ix) = self.index.get(&id) else {
            return Vec::new();
        };
        self.g
            .edges(ix)
            .filter(|e| !e.weight().retiring)
            .filter_map(|e| {
                let other = far_end(&e, ix);
                Some((self.g.node_weight(other)?.id, e.weight().nid))
            })
            .collect()
    }

    /// The NID of the edge between two peers, if they are neighbours.
    pub fn nid_between(&self, a: PeerId, b: PeerId) -> Option<Nid> {
        let ia = *self.index.get(&a)?;
        let e = self.edge_between(ia, b)?;
        self.g.edge_weight(e).map(|l| l.nid)
    }

    /// All registered peers.
    pub fn peers(&self) -> impl Iterator<Item = &Vertex> {
        self.g.node_weights()
    }

    /// Whether two IPs may sit next to each other (or on one path).
    pub fn ips_compatible(&self, a: IpAddr, b: IpAddr) -> bool {
        self.cfg.allow_same_ip || a != b
    }

    /// Check every structural invariant; used by tests and debug assertions.
    pub fn check_invariants(&self) -> Result<(), String> {
        for e in self.g.edge_indices() {
            let (a, b) = self.g.edge_endpoints(e).ok_or("dangling edge")?;
            let nid = self.g.edge_weight(e).ok_or("edge without weight")?.nid;
            for end in [a, b] {
                let v = self.g.node_weight(end).ok_or("edge to missing vertex")?;
                if v.nids.get(&nid) != Some(&e) {
                    return Err(format!("nid {nid:?} not mapped at {:?}", v.id));
                }
            }
            if a == b {
                return Err("self loop".into());
            }
        }
        for ix in self.g.node_indices() {
            let v = self.g.node_weight(ix).ok_or("missing vertex")?;
            if v.nids.len() != self.g.edges(ix).count() {
                return Err(format!("nid map size mismatch at {:?}", v.id));
            }
            let retiring = self.g.edges(ix).filter(|e| e.weight().retiring).count();
            if retiring != v.retiring || retiring > MAX_RETIRING {
                return Err(format!("{retiring} retiring edges at {:?}", v.id));
            }
            if self
                .g
                .edges(ix)
                .any(|e| e.weight().retiring && e.weight().circuits == 0)
            {
                return Err(format!("an idle retiring edge at {:?}", v.id));
            }
            if v.degree() > self.cfg.max_degree {
                return Err(format!("degree {} above max at {:?}", v.degree(), v.id));
            }
            let mut others = HashSet::new();
            for e in self.g.edges(ix) {
                let o = far_end(&e, ix);
                if !others.insert(o) {
                    return Err("parallel edges".into());
                }
            }
        }
        Ok(())
    }

    fn degree(&self, ix: NodeIndex) -> usize {
        self.g.node_weight(ix).map_or(0, Vertex::degree)
    }

    fn claim_count(&self, id: PeerId) -> usize {
        self.claims.get(&id).map_or(0, BTreeMap::len)
    }

    fn can_link(&self, a: NodeIndex, b: NodeIndex) -> bool {
        let Some(vb) = self.g.node_weight(b) else {
            return false;
        };
        vb.usable()
            && vb.degree() + self.claim_count(vb.id) < self.cfg.max_degree
            && self.g.find_edge(a, b).is_none()
            && self.ip_ok(a, b)
    }

    fn ip_ok(&self, a: NodeIndex, b: NodeIndex) -> bool {
        match (self.g.node_weight(a), self.g.node_weight(b)) {
            (Some(x), Some(y)) => self.ips_compatible(x.addr.ip(), y.addr.ip()),
            _ => false,
        }
    }

    fn edge_between(&self, a: NodeIndex, other: PeerId) -> Option<EdgeIndex> {
        let b = *self.index.get(&other)?;
        self.g.find_edge(a, b)
    }

    /// Why a NID is not free at a vertex: in use, quarantined or claimed.
    fn nid_in_use(&self, ix: NodeIndex, nid: Nid) -> Option<&'static str> {
        let v = self.g.node_weight(ix)?;
        if v.nids.contains_key(&nid) {
            Some("in use")
        } else if v.dropped.contains(&nid) {
            Some("quarantined")
        } else if self.claims.get(&v.id).is_some_and(|m| m.contains_key(&nid)) {
            Some("claimed")
        } else {
            None
        }
    }

    fn free_common_nid(&self, a: NodeIndex, b: NodeIndex) -> Option<Nid> {
        (1..=u16::MAX)
            .map(Nid)
            .find(|&n| self.nid_in_use(a, n).is_none() && self.nid_in_use(b, n).is_none())
    }

    fn add_edge(&mut self, a: NodeIndex, b: NodeIndex, nid: Nid, dialer: PeerId) {
        let e = self.g.add_edge(
            a,
            b,
            Link {
                nid,
                circuits: 0,
                dialer,
                retiring: false,
            },
        );
        for end in [a, b] {
            if let Some(v) = self.g.node_weight_mut(end) {
                v.nids.insert(nid, e);
            }
        }
    }

    /// The vertex may take one more retiring edge (`MAX_RETIRING`).
    fn retire_room(&self, w: NodeIndex) -> bool {
        self.g
            .node_weight(w)
            .is_some_and(|v| v.retiring < MAX_RETIRING)
    }

    /// Mark the edge `a–b` retiring (`Link::retiring`).
    fn retire(&mut self, a: NodeIndex, b: NodeIndex) {
        let Some(l) = self
            .g
            .find_edge(a, b)
            .and_then(|e| self.g.edge_weight_mut(e))
        else {
            return;
        };
        if std::mem::replace(&mut l.retiring, true) {
            return;
        }
        for w in [a, b] {
            if let Some(v) = self.g.node_weight_mut(w) {
                v.retiring += 1;
            }
        }
    }

    /// Remove one edge; every end except `reporter` learns via `dropped`.
    fn drop_edge(&mut self, e: EdgeIndex, reporter: Option<NodeIndex>) {
        let Some((a, b)) = self.g.edge_endpoints(e) else {
            return;
        };
        let Some(link) = self.g.remove_edge(e) else {
            return;
        };
        for end in [a, b] {
            if let Some(v) = self.g.node_weight_mut(end) {
                v.nids.remove(&link.nid);
                v.retiring -= usize::from(link.retiring);
                if Some(end) != reporter {
                    v.dropped.insert(link.nid);
                }
            }
        }
    }

    fn drop_all_edges(&mut self, ix: NodeIndex) {
        let edges: Vec<EdgeIndex> = self.g.edges(ix).map(|e| e.id()).collect();
        for e in edges {
            self.drop_edge(e, Some(ix));
        }
    }

    fn mark_dropped(&mut self, ix: NodeIndex, nid: Nid) {
        if let Some(v) = self.g.node_weight_mut(ix) {
            v.dropped.insert(nid);
        }
    }

    fn claim(&mut self, id: PeerId, nid: Nid, target: PeerId, now: u64) {
        let expiry = now.saturating_add(self.cfg.claim_ttl_secs);
        self.claims
            .entry(id)
            .or_default()
            .insert(nid, Claim { target, expiry });
        self.claims_on.entry(target).or_default().insert((id, nid));
    }

    fn unclaim(&mut self, id: PeerId, nid: Nid, target: PeerId) {
        if let Some(m) = self.claims.get_mut(&id) {
            m.remove(&nid);
            if m.is_empty() {
                self.claims.remove(&id);
            }
        }
        if let Some(s) = self.claims_on.get_mut(&target) {
            s.remove(&(id, nid));
            if s.is_empty() {
                self.claims_on.remove(&target);
            }
        }
    }

    /// A one-sided claim is dropped: the claimer is told to close that link.
    fn refute(&mut self, claimer: PeerId, nid: Nid) {
        let target = self
            .claims
            .get(&claimer)
            .and_then(|m| m.get(&nid))
            .map(|c| c.target);
        if let Some(t) = target {
            self.unclaim(claimer, nid, t);
            if let Some(&ix) = self.index.get(&claimer) {
                self.mark_dropped(ix, nid);
            }
        }
    }
}

/// The end of edge `e` that is not `ix`.
fn far_end<E: EdgeRef<NodeId = NodeIndex>>(e: &E, ix: NodeIndex) -> NodeIndex {
    if e.source() == ix {
        e.target()
    } else {
        e.source()
    }
}

mod assign;
#[cfg(test)]
pub(crate) mod tests;
