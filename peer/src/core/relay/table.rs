//! The circuit table's entries: links, circuit halves, circuits and their
//! per-direction flow-control state.
//!
//! A circuit has two sides. `back` faces the originator, `fwd` faces the
//! exit. A side is either a half on a link (`(link, circuit id)`) or the
//! local endpoint (the originator's `back`, the exit's `fwd`). Each side
//! owns the [`Flow`] of the cells that *arrive* on it and the credit for
//! the cells we *send* on it.

use super::queue::CellQueue;
use anomos_common::cell::{BreakReason, CircuitIdAllocator};
use anomos_common::relay_crypto::{OriginLayers, RelayLayer};
use anomos_common::{CircuitId, Nid};
use std::time::Instant;

/// A link as the core knows it: a fresh number per attached link, so a
/// reconnect under the same NID can never be confused with the old link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// A circuit in this peer's table; for a local endpoint also its handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircKey(pub u64);

/// Where one side of a circuit leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// A circuit id on a neighbour link.
    Link(LinkId, CircuitId),
    /// The local endpoint (originator or exit).
    Local,
    /// A link half that sent us BREAK while the other direction still had
    /// cells queued: acknowledged and freed, nothing goes there any more.
    Gone,
}

/// Which side of a circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Towards the originator.
    Back,
    /// Towards the exit.
    Fwd,
}

impl Dir {
    /// The other side.
    pub(crate) fn opposite(self) -> Dir {
        match self {
            Dir::Back => Dir::Fwd,
            Dir::Fwd => Dir::Back,
        }
    }
}

/// Hop-by-hop credit state of one side, plus the queue of DATA cells that
/// arrived on it and have not left yet (forwarded or consumed).
///
/// Invariant: `queue.len() + uncredited + recv_budget <= window`, so the
/// queue never holds more than one window whatever the neighbour sends (a
/// DATA cell with `recv_budget == 0` is a credit violation, not queued).
#[derive(Debug)]
pub(crate) struct Flow {
    /// DATA cells we may still send on this side.
    pub send_credit: u32,
    /// DATA cells the neighbour on this side may still send us.
    pub recv_budget: u32,
    /// Cells that left `queue` since we last returned CREDIT on this side.
    pub uncredited: u32,
    /// Arrived cells (relay: whole cells with the next link's id already
    /// written; endpoint: plaintext bodies at `CELL_HEADER_LEN..`).
    pub queue: CellQueue,
}

impl Flow {
    pub(crate) fn new(window: u16) -> Flow {
        Flow {
            send_credit: u32::from(window),
            recv_budget: u32::from(window),
            uncredited: 0,
            queue: CellQueue::default(),
        }
    }
}

/// One side: where it leads and its flow state.
#[derive(Debug)]
pub(crate) struct Side {
    pub end: End,
    pub flow: Flow,
}

/// How far a circuit has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// CREATE received; the code is being peeled by the shell.
    Peeling { deadline: Instant },
    /// Peeled; the link to the next hop (`nid`) is not attached yet, most
    /// likely because the tracker assigned it moments ago and it is still
    /// being dialled. The CREATE goes out when it attaches; at `deadline`
    /// the circuit is refused.
    AwaitingLink { nid: Nid, deadline: Instant },
    /// CREATE sent onwards; waiting for CONFIRM.
    Extending { deadline: Instant },
    /// CONFIRM seen (or sent, at the exit): DATA may flow.
    Open,
    /// A BREAK(`reason`) came in on the side opposite `toward` while DATA
    /// from it was still queued here for `toward`: those cells go out first
    /// (as credit allows), then the BREAK; at `deadline` the rest is dropped
    /// and the BREAK goes anyway. The other direction is torn down.
    Draining {
        toward: Dir,
        reason: BreakReason,
        deadline: Instant,
    },
}

/// The relay-layer crypto this peer applies on a circuit.
#[derive(Debug)]
pub(crate) enum Crypto {
    /// Not known yet (peel pending).
    None,
    /// A relay's or the exit's own layer.
    Relay(Box<RelayLayer>),
    /// The originator: every hop's layer.
    Origin(Box<OriginLayers>),
}

/// One circuit through (or ending at) this peer.
#[derive(Debug)]
pub(crate) struct Circuit {
    pub back: Side,
    /// `None` while the code is being peeled.
    pub fwd: Option<Side>,
    pub stage: Stage,
    pub crypto: Crypto,
}

impl Circuit {
    pub(crate) fn side(&self, dir: Dir) -> Option<&Side> {
        match dir {
            Dir::Back => Some(&self.back),
            Dir::Fwd => self.fwd.as_ref(),
        }
    }

    pub(crate) fn side_mut(&mut self, dir: Dir) -> Option<&mut Side> {
        match dir {
            Dir::Back => Some(&mut self.back),
            Dir::Fwd => self.fwd.as_mut(),
        }
    }

    /// `(side dir, the other side)`, both mutable.
    pub(crate) fn pair_mut(&mut self, dir: Dir) -> Option<(&mut Side, &mut Side)> {
        let fwd = self.fwd.as_mut()?;
        Some(match dir {
            Dir::Back => (&mut self.back, fwd),
            Dir::Fwd => (fwd, &mut self.back),
        })
    }

    /// Which side is the half `(link, circ)`.
    pub(crate) fn dir_of(&self, link: LinkId, circ: CircuitId) -> Option<Dir> {
        let me = End::Link(link, circ);
        if self.back.end == me {
            Some(Dir::Back)
        } else if self.fwd.as_ref().is_some_and(|s| s.end == me) {
            Some(Dir::Fwd)
        } else {
            None
        }
    }

    /// Neither side is local: the cells are someone else's (relayed bytes).
    pub(crate) fn is_relayed(&self) -> bool {
        self.back.end != End::Local && self.fwd.as_ref().is_some_and(|s| s.end != End::Local)
    }

    /// The side facing the link for a local endpoint (originator: `Fwd`,
    /// exit: `Back`); `None` for a relayed circuit.
    pub(crate) fn endpoint_dir(&self) -> Option<Dir> {
        if self.back.end == End::Local {
            Some(Dir::Fwd)
        } else if self.fwd.as_ref().is_some_and(|s| s.end == End::Local) {
            Some(Dir::Back)
        } else {
            None
        }
    }

    /// The set-up deadline, if the circuit is not open yet, or the drain
    /// deadline of an ordered BREAK.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Peeling { deadline }
            | Stage::AwaitingLink { deadline, .. }
            | Stage::Extending { deadline }
            | Stage::Draining { deadline, .. } => Some(deadline),
            Stage::Open => None,
        }
    }
}

/// What a `(link, circuit id)` half is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Part of a live circuit.
    Live(CircKey),
    /// We sent BREAK and wait for BREAK_ACK (or the deadline) before the id
    /// may be reused.
    Breaking { deadline: Instant },
}

/// One attached link.
#[derive(Debug)]
pub(crate) struct LinkState {
    pub nid: Nid,
    /// Our side's ids (the dialer allocates odd ids).
    pub alloc: CircuitIdAllocator,
    /// Cells waiting for the writer in arrival order (DATA, BREAK,
    /// BREAK_ACK, PADDING): swapped out whole by `take_outbound`.
    pub out: Vec<u8>,
    /// Control cells that may pass the cells in `out` (CREATE, CONFIRM,
    /// CREDIT; see `RelayCore::send_ctrl`): they leave before `out`.
    pub prio: Vec<u8>,
    /// Control cells appended (to either buffer) since the writer last
    /// took them.
    pub ctrl_cells: usize,
    /// Protocol violations charged to this neighbour.
    pub violations: u32,
    /// CloseLink was emitted: ignore further input, send nothing more.
    pub closing: bool,
    /// Already in the dirty list.
    pub dirty: bool,
}
