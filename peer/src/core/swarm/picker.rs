//! Which block to ask whom for, and the pieces being assembled.
//!
//! Pieces are assembled in memory, one buffer per piece in flight, and
//! handed to storage whole for hashing. Memory is bounded by starting a new
//! piece only within `max_in_flight_bytes` (pieces being hashed count too)
//! and by finishing started pieces first. Each piece in flight has an
//! *owner*: the conn that started it is the only one asked for its blocks
//! until it goes away, chokes us or times out, so a piece that fails its
//! hash usually has exactly one contributor to blame. New pieces are chosen
//! rarest first (fewest conns announce them), ties broken at random so
//! downloaders spread over the torrent. Endgame: once every missing block is
//! requested, a conn with at most a few requests outstanding asks for blocks
//! already requested elsewhere (the fewest-requested first, at most two
//! copies of a block); the first copy wins and the other is cancelled.

use super::conn::Conn;
use super::ConnId;
use anomos_common::piece::{Bitfield, Layout};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// In endgame, a block is asked of at most this many conns at once: a
/// second copy hides one slow source, more mostly waste bandwidth.
const ENDGAME_COPIES: usize = 2;

/// In endgame, a conn asks for copies only while fewer than this many of its
/// requests are outstanding: it would otherwise sit idle, and a deeper pipe
/// of copies mostly duplicates blocks already on their way, which on a small
/// download is most of what is left.
const ENDGAME_QUEUE: usize = 4;

/// One block of a piece in flight.
#[derive(Debug, Default)]
struct Block {
    done: bool,
    /// Conns with an outstanding request for it (more than one in endgame).
    by: Vec<ConnId>,
}

#[derive(Debug)]
struct InFlight {
    data: Vec<u8>,
    blocks: Vec<Block>,
    done: u32,
    owner: Option<ConnId>,
    contributors: BTreeSet<ConnId>,
}

impl InFlight {
    fn first_open(&self) -> Option<u32> {
        let i = self
            .blocks
            .iter()
            .position(|b| !b.done && b.by.is_empty())?;
        u32::try_from(i).ok()
    }
}

/// What became of a received block.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// The piece is not being assembled (already done or failed meanwhile).
    Stale,
    /// Another copy of the block arrived first (endgame).
    Duplicate,
    /// Stored. `cancel`: other conns that were asked for it; `complete`:
    /// the whole piece, now waiting for its hash check.
    Stored {
        cancel: Vec<ConnId>,
        complete: Option<Vec<u8>>,
    },
}

/// Inputs of a pick that live outside the picker.
pub(super) struct PickCtx<'a> {
    pub layout: &'a Layout,
    pub have: &'a Bitfield,
    pub conns: &'a BTreeMap<ConnId, Conn>,
    pub max_in_flight_bytes: u64,
    pub rng: &'a mut StdRng,
}

#[derive(Debug)]
pub(super) struct Picker {
    /// Conns announcing each piece.
    avail: Vec<u32>,
    in_flight: BTreeMap<u32, InFlight>,
    /// Pieces handed to storage for hashing: length and contributors.
    checking: BTreeMap<u32, (u32, BTreeSet<ConnId>)>,
    /// Bytes held by `in_flight` plus pieces in `checking`.
    buffered: u64,
    /// Contributors of failed attempts at a piece, avoided while another
    /// source exists.
    bad_sources: BTreeMap<u32, BTreeSet<ConnId>>,
    /// Duplicate requests made in endgame mode.
    pub endgame_requests: u64,
}

impl Picker {
    pub fn new(piece_count: u32) -> Picker {
        Picker {
            avail: vec![0; piece_count as usize],
            in_flight: BTreeMap::new(),
            checking: BTreeMap::new(),
            buffered: 0,
            bad_sources: BTreeMap::new(),
            endgame_requests: 0,
        }
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    pub fn buffered_bytes(&self) -> u64 {
        self.buffered
    }

    /// A conn announced `piece`.
    pub fn add_avail(&mut self, piece: u32) {
        if let Some(a) = self.avail.get_mut(piece as usize) {
            *a += 1;
        }
    }

    /// The most conns any one block is requested from (tests: ≤ 2).
    #[cfg(test)]
    pub fn max_requesters(&self) -> usize {
        let blocks = self.in_flight.values().flat_map(|f| f.blocks.iter());
        blocks.map(|b| b.by.len()).max().unwrap_or(0)
    }

    /// A conn is gone: its pieces, requests and ownerships.
    pub fn forget_conn(&mut self, id: ConnId, c: &Conn) {
        for p in c.pieces.iter_set() {
            if let Some(a) = self.avail.get_mut(p as usize) {
                *a = a.saturating_sub(1);
            }
        }
        for r in &c.requests {
            self.unrequest(r.piece, r.block, id);
        }
        self.orphan(id);
    }

    /// `id` is no longer asked for `(piece, block)`.
    pub fn unrequest(&mut self, piece: u32, block: u32, id: ConnId) {
        if let Some(b) = self
            .in_flight
            .get_mut(&piece)
            .and_then(|f| f.blocks.get_mut(block as usize))
        {
            b.by.retain(|&c| c != id);
        }
    }

    /// `id` was banned: nothing it sent can be trusted. Every piece in
    /// flight it contributed to starts over (the others' blocks in it too:
    /// blocks do not remember their source); returns the `(piece, block)`s
    /// dropped. Without this, an honest conn adopting such a piece would
    /// complete it with the banned conn's blocks and take the blame.
    pub fn untrust(&mut self, id: ConnId) -> Vec<(u32, u32)> {
        let mut dropped = Vec::new();
        for (&piece, f) in self.in_flight.iter_mut() {
            if !f.contributors.remove(&id) {
                continue;
            }
            for (i, b) in f.blocks.iter_mut().enumerate() {
                if std::mem::take(&mut b.done) {
                    dropped.extend(u32::try_from(i).ok().map(|i| (piece, i)));
                }
            }
            f.done = 0;
            f.contributors.clear();
        }
        dropped
    }

    /// `id` gives up the pieces it owns; any conn may adopt them.
    pub fn orphan(&mut self, id: ConnId) {
        for f in self.in_flight.values_mut() {
            if f.owner == Some(id) {
                f.owner = None;
            }
        }
    }

    /// Whether `piece` is being assembled or hashed.
    pub fn in_progress(&self, piece: u32) -> bool {
        self.in_flight.contains_key(&piece) || self.checking.contains_key(&piece)
    }

    /// Every missing block is requested: no piece left to start and no
    /// open block in the pieces in flight.
    pub fn is_endgame(&self, have: &Bitfield) -> bool {
        let missing = (have.len() - have.count()) as usize;
        missing == self.in_flight.len() + self.checking.len()
            && self.in_flight.values().all(|f| f.first_open().is_none())
    }

    /// Whether `id` should not be given `piece`: it contributed to a failed
    /// attempt and another handshaken conn has the piece.
    fn avoid(&self, piece: u32, id: ConnId, conns: &BTreeMap<ConnId, Conn>) -> bool {
        let Some(bad) = self.bad_sources.get(&piece) else {
            return false;
        };
        bad.contains(&id)
            && conns
                .iter()
                .any(|(c, s)| !bad.contains(c) && s.handshaken && s.pieces.get(piece))
    }

    /// Choose the next block to request from `id` and mark it requested.
    /// Returns `(piece, block, endgame)`.
    pub fn pick(&mut self, id: ConnId, mut ctx: PickCtx<'_>) -> Option<(u32, u32, bool)> {
        let conn = ctx.conns.get(&id)?;
        // 1. Pieces it owns; 2. orphaned pieces it has (adopting them),
        // unless it is snubbed: a slow conn must not re-adopt what it lost.
        let mine = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.owner == Some(id))
            .find_map(|(&p, f)| Some((p, f.first_open()?)));
        let adopt = || {
            self.in_flight
                .iter()
                .filter(|(&p, f)| f.owner.is_none() && !conn.snubbed && conn.pieces.get(p))
                .filter(|(&p, _)| !self.avoid(p, id, ctx.conns))
                .find_map(|(&p, f)| Some((p, f.first_open()?)))
        };
        if let Some((p, b)) = mine.or_else(adopt) {
            let f = self.in_flight.get_mut(&p)?;
            f.owner = Some(id);
            f.blocks.get_mut(b as usize)?.by.push(id);
            return Some((p, b, false));
        }
        // 3. A new piece, rarest first, within the memory budget.
        if let Some(p) = self.rarest_new(id, &mut ctx) {
            let len = ctx.layout.piece_len(p)?;
            let blocks = ctx.layout.block_count(p)?;
            let mut f = InFlight {
                data: vec![0; len as usize],
                blocks: (0..blocks).map(|_| Block::default()).collect(),
                done: 0,
                owner: Some(id),
                contributors: BTreeSet::new(),
            };
            f.blocks.first_mut()?.by.push(id);
            self.in_flight.insert(p, f);
            self.buffered += u64::from(len);
            return Some((p, 0, false));
        }
        // 4. Endgame: a block requested elsewhere, fewest requesters first,
        // the last block of the highest piece first (an owner asks for a
        // piece's blocks in order, so its last ones arrive last).
        if conn.requests.len() >= ENDGAME_QUEUE || !self.is_endgame(ctx.have) {
            return None;
        }
        let (p, b) = self
            .in_flight
            .iter()
            .rev()
            .filter(|(&p, _)| conn.pieces.get(p))
            .flat_map(|(&p, f)| {
                let blocks = f.blocks.iter().enumerate().rev();
                blocks.map(move |(b, s)| (p, b, s))
            })
            .filter(|(_, _, s)| !s.done && s.by.len() < ENDGAME_COPIES && !s.by.contains(&id))
            .min_by_key(|(_, _, s)| s.by.len())
            .map(|(p, b, _)| (p, b))?;
        self.in_flight.get_mut(&p)?.blocks.get_mut(b)?.by.push(id);
        self.endgame_requests += 1;
        Some((p, u32::try_from(b).ok()?, true))
    }

    /// The rarest piece `id` has that nobody is fetching, random among
    /// equals; `None` if none or the memory budget is spent.
    fn rarest_new(&mut self, id: ConnId, ctx: &mut PickCtx<'_>) -> Option<u32> {
        let conn = ctx.conns.get(&id)?;
        let idle = self.in_flight.is_empty() && self.checking.is_empty();
        let budget = ctx.max_in_flight_bytes.saturating_sub(self.buffered);
        let mut best: Option<(u32, u32)> = None; // (availability, piece)
        let mut ties = 0u32;
        for p in conn.pieces.iter_set() {
            if ctx.have.get(p) || self.in_progress(p) || self.avoid(p, id, ctx.conns) {
                continue;
            }
            let fits = u64::from(ctx.layout.piece_len(p).unwrap_or(u32::MAX)) <= budget;
            if !(fits || idle) {
                continue;
            }
            let a = self.avail.get(p as usize).copied().unwrap_or(0);
            match best {
                Some((ba, _)) if a > ba => {}
                Some((ba, _)) if a == ba => {
                    ties += 1;
                    if ctx.rng.random_range(0..ties) == 0 {
                        best = Some((a, p));
                    }
                }
                _ => {
                    best = Some((a, p));
                    ties = 1;
                }
            }
        }
        best.map(|(_, p)| p)
    }

    /// Block `block` of `piece` (at `offset`) arrived from `id`, which had
    /// asked for it.
    pub fn receive(
        &mut self,
        piece: u32,
        block: u32,
        offset: u32,
        data: &[u8],
        id: ConnId,
    ) -> Received {
        let Some(f) = self.in_flight.get_mut(&piece) else {
            return Received::Stale;
        };
        let Some(b) = f.blocks.get_mut(block as usize) else {
            return Received::Stale;
        };
        b.by.retain(|&c| c != id);
        if b.done {
            return Received::Duplicate;
        }
        let start = offset as usize;
        let Some(dst) = f.data.get_mut(start..start + data.len()) else {
            return Received::Stale;
        };
        dst.copy_from_slice(data);
        b.done = true;
        let cancel = std::mem::take(&mut b.by);
        f.done += 1;
        f.contributors.insert(id);
        if f.done as usize != f.blocks.len() {
            return Received::Stored {
                cancel,
                complete: None,
            };
        }
        let Some(f) = self.in_flight.remove(&piece) else {
            return Received::Stale;
        };
        let len = f.data.len() as u32;
        self.checking.insert(piece, (len, f.contributors));
        Received::Stored {
            cancel,
            complete: Some(f.data),
        }
    }

    /// Storage finished hashing `piece`: its contributors, `None` if the
    /// piece was not being checked. On failure they are remembered as bad
    /// sources of the piece; on success that memory is cleared.
    pub fn checked(&mut self, piece: u32, ok: bool) -> Option<BTreeSet<ConnId>> {
        let (len, contributors) = self.checking.remove(&piece)?;
        self.buffered = self.buffered.saturating_sub(u64::from(len));
        if ok {
            self.bad_sources.remove(&piece);
        } else {
            self.bad_sources
                .entry(piece)
                .or_default()
                .extend(contributors.iter().copied());
        }
        Some(contributors)
    }
}
