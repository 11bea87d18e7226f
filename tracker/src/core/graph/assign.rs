//! Neighbour assignment: whom a peer gets when it needs more links.
//!
//! Partners are drawn **uniformly over the whole graph**, whatever their
//! degree. The first version sorted candidates by degree, so a peer always
//! linked to whoever had the fewest links: in a settled overlay every old
//! peer sits at `max_degree`, so peers that arrived together (downloaders
//! started at once) were each other's only "free" candidates. They ended
//! up linked almost only to each other (0.97 of their edge ends in the
//! 150 relays + 10 seeders + 40 downloaders staging of issue 7), every path
//! from a downloader began and mostly ran through other downloaders, and
//! they relayed 2.37 GB while the 150 relay-only peers relayed 50 MB.
//!
//! A drawn partner `Y` that has room gets a plain new edge. A *full* `Y`
//! still accepts: it hands over one of its edges `Y–Z`, which becomes
//! `Y–X–Z` (`X` gains two links, `Y` and `Z` keep their degree). An edge
//! with no planned circuit is handed over at once (both ends learn the
//! dropped NID like any other drop). An edge that carries circuits is
//! handed over make-before-break: `Y–Z` *retires*
//! (`Link::retiring`): it stays up for the circuits on it, takes no new
//! one, no longer counts towards the degree of `Y` and `Z`, and is dropped
//! when its last circuit is uncounted. A vertex holds at most
//! `MAX_RETIRING` retiring edges. `Z` is drawn uniformly among the
//! neighbours of `Y` (idle edges are not preferred: in a loaded overlay
//! they are the ones other newcomers just got). So a newcomer never breaks
//! a circuit in use, and still lands uniformly in a loaded overlay.
//!
//! Architecture invariant: assignment never disconnects the graph and never
//! exceeds `max_degree` (retiring edges aside, at most `MAX_RETIRING` per
//! peer): it only adds edges between peers with room, or replaces an edge
//! `Y–Z` by the path `Y–X–Z` (at once, or once `Y–Z` has retired).
//!
//! Without retiring (it came later), a second wave of newcomers into an
//! overlay whose edges all carried circuits found no idle edge and fell
//! back to the scan, i.e. to the newest peers, linking mostly to itself
//! again (0.64 of its edge ends against 0.16 uniform; BENCHMARKS.md).
//!
//! Cost: a draw is O(1) (a random slot of the vertex table, rejected if
//! empty or not eligible), so a refill costs O(want × degree) in a healthy
//! graph. Only when `DRAWS_PER_SLOT` draws per missing link all miss (tiny
//! graphs, or a graph of mostly unreachable peers) does it scan every vertex,
//! as the first version always did, so a peer is never left short while a
//! partner exists.

use petgraph::stable_graph::NodeIndex;
use petgraph::visit::{EdgeRef, IntoEdgeReferences, NodeIndexable};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use super::{NeighbourGraph, Vertex};
use anomos_common::PeerId;

/// Uniform draws per missing link before the full scan.
const DRAWS_PER_SLOT: usize = 16;

impl NeighbourGraph {
    /// Give the peer new neighbours until it has `min_degree` (counting
    /// pending claims), drawn uniformly among usable peers (see the module
    /// doc). Returns the peers that got a new edge (the other ends).
    pub fn refill<R: Rng + ?Sized>(&mut self, id: PeerId, rng: &mut R) -> Vec<PeerId> {
        let mut added = Vec::new();
        let Some(&ix) = self.index.get(&id) else {
            return added;
        };
        if !self.g.node_weight(ix).is_some_and(Vertex::usable) {
            return added;
        }
        let want = self
            .cfg
            .min_degree
            .saturating_sub(self.degree(ix) + self.claim_count(id));
        let mut draws = want.saturating_mul(DRAWS_PER_SLOT);
        while added.len() < want && draws > 0 {
            draws -= 1;
            let Some(y) = self.draw_partner(ix, rng) else {
                continue;
            };
            if self.room(y) > 0 {
                if let Some(nid) = self.free_common_nid(ix, y) {
                    self.add_edge(ix, y, nid, id);
                    added.extend(self.g.node_weight(y).map(|v| v.id));
                }
            } else if self.room(ix) >= 2 {
                if let Some(z) = self.handover_edge(ix, y, rng) {
                    added.extend(self.hand_over(ix, y, z));
                }
            }
        }
        if added.len() < want {
            self.refill_by_scan(ix, want - added.len(), rng, &mut added);
        }
        added
    }

    /// The slow path: every vertex with room in random order, then splits
    /// of the least loaded edges anywhere.
    fn refill_by_scan<R: Rng + ?Sized>(
        &mut self,
        ix: NodeIndex,
        want: usize,
        rng: &mut R,
        added: &mut Vec<PeerId>,
    ) {
        let Some(id) = self.g.node_weight(ix).map(|v| v.id) else {
            return;
        };
        let goal = added.len() + want;
        let mut cands: Vec<NodeIndex> = self
            .g
            .node_indices()
            .filter(|&o| o != ix && self.can_link(ix, o))
            .collect();
        cands.shuffle(rng);
        for o in cands {
            if added.len() >= goal {
                return;
            }
            if let Some(nid) = self.free_common_nid(ix, o) {
                self.add_edge(ix, o, nid, id);
                added.extend(self.g.node_weight(o).map(|v| v.id));
            }
        }
        while added.len() < goal && self.room(ix) >= 2 {
            let Some((y, z)) = self.least_loaded_split(ix) else {
                break;
            };
            // With nothing idle and no room to retire, the newcomer's links
            // come first: the scan's last resort may break circuits.
            added.extend(self.hand_over(ix, y, z));
        }
    }

    /// One uniform draw from the vertex table: a usable peer that may link
    /// to `x` (not `x`, not already a neighbour, IP rule), or `None`.
    fn draw_partner<R: Rng + ?Sized>(&self, x: NodeIndex, rng: &mut R) -> Option<NodeIndex> {
        let bound = self.g.node_bound();
        if bound == 0 {
            return None;
        }
        let y = NodeIndex::new(rng.random_range(0..bound));
        (y != x && self.partner_ok(x, y)).then_some(y)
    }

    /// `w` may become a neighbour of `x` (ignoring degree).
    fn partner_ok(&self, x: NodeIndex, w: NodeIndex) -> bool {
        w != x
            && self.g.node_weight(w).is_some_and(Vertex::usable)
            && self.g.find_edge(x, w).is_none()
            && self.ip_ok(x, w)
    }

    /// Links a vertex may still take (pending claims count as links).
    fn room(&self, ix: NodeIndex) -> usize {
        self.g.node_weight(ix).map_or(0, |v| {
            self.cfg
                .max_degree
                .saturating_sub(v.degree() + self.claim_count(v.id))
        })
    }

    /// A neighbour `z` of the full vertex `y` whose edge `y–z` it may hand
    /// over to `x`, drawn uniformly: `z` may link to `x`, and a loaded edge
    /// only if it may retire (neither end holds `MAX_RETIRING` retiring
    /// edges yet). Uniform over `y`'s neighbours, not idle edges first: in
    /// a loaded overlay the idle edges are the ones newcomers just got, and
    /// preferring them links newcomers to each other.
    fn handover_edge<R: Rng + ?Sized>(
        &self,
        x: NodeIndex,
        y: NodeIndex,
        rng: &mut R,
    ) -> Option<NodeIndex> {
        let zs: Vec<NodeIndex> = self
            .g
            .edges(y)
            .filter(|e| !e.weight().retiring)
            .map(|e| (super::far_end(&e, y), e.weight().circuits))
            .filter(|&(z, circuits)| {
                self.partner_ok(x, z) && (circuits == 0 || self.may_retire(y, z))
            })
            .map(|(z, _)| z)
            .collect();
        zs.choose(rng).copied()
    }

    /// The edge `y–z` carries circuits and may retire: neither end holds
    /// `MAX_RETIRING` retiring edges yet. An idle edge is split instead.
    fn may_retire(&self, y: NodeIndex, z: NodeIndex) -> bool {
        let loaded = self
            .g
            .find_edge(y, z)
            .and_then(|e| self.g.edge_weight(e))
            .is_some_and(|l| l.circuits > 0);
        loaded && self.retire_room(y) && self.retire_room(z)
    }

    /// The least loaded edge `y–z` anywhere whose ends may both link to `x`
    /// (retiring edges are on their way out already).
    fn least_loaded_split(&self, x: NodeIndex) -> Option<(NodeIndex, NodeIndex)> {
        (&self.g)
            .edge_references()
            .filter(|e| !e.weight().retiring)
            .filter(|e| self.partner_ok(x, e.source()) && self.partner_ok(x, e.target()))
            .min_by_key(|e| e.weight().circuits)
            .map(|e| (e.source(), e.target()))
    }

    /// Replace the edge `y–z` by `x–y` and `x–z` (`x` dials both); returns
    /// the ends that got a new edge. A `y–z` that carries circuits retires
    /// if it may (make-before-break: nobody is told anything until its
    /// circuits are uncounted); otherwise it is dropped now and `y` and `z`
    /// learn the NID.
    fn hand_over(&mut self, x: NodeIndex, y: NodeIndex, z: NodeIndex) -> Vec<PeerId> {
        let Some(e) = self.g.find_edge(y, z) else {
            return Vec::new();
        };
        let Some(xid) = self.g.node_weight(x).map(|v| v.id) else {
            return Vec::new();
        };
        if self.may_retire(y, z) {
            self.retire(y, z);
        } else {
            self.drop_edge(e, None);
        }
        let mut got = Vec::new();
        for w in [y, z] {
            if let Some(nid) = self.free_common_nid(x, w) {
                self.add_edge(x, w, nid, xid);
                got.extend(self.g.node_weight(w).map(|v| v.id));
            }
        }
        got
    }
}
