//! RelayCore: the circuit table and every cell a link carries.
//!
//! One `RelayCore` per peer holds every link's circuit halves, every circuit
//! through or ending at this peer, the relay-layer crypto of each, the
//! hop-by-hop credit windows and the outbound buffer of each link. The data
//! path feeds it whole batches of received cells
//! ([`RelayCore::handle_cells`]); it applies the hop's layer in place and
//! appends forwarded cells straight to the other link's outbound buffer, so
//! the bulk path costs no message and no syscall per cell.
//!
//! Everything slow or asynchronous leaves as an [`Output`]: peeling a code
//! (one X25519, done by the shell, inline or on a pool, and fed back with
//! [`RelayCore::peel_done`]), waking a local endpoint, closing a link. Time is
//! injected (`now`); [`RelayCore::poll_timeout`] says when to call
//! [`RelayCore::handle_timeout`]. See `relay/STATE.md` for the state machine.

mod control;
mod data;
mod endpoint;
mod queue;
mod table;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use endpoint::{EndpointError, OriginateError};
pub use table::{CircKey, LinkId};

use crate::metrics::Metrics;
use anomos_common::cell::{
    peek_header, BreakReason, Cell, CellMsg, CellRef, CircuitIdAllocator, Command, CELL_HEADER_LEN,
    CELL_LEN, CREATE_CODE_LEN,
};
use anomos_common::crypto::CircuitSecret;
use anomos_common::{CircuitId, InfoHash, Nid};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use table::{Circuit, End, LinkState, Slot};

/// Limits of the core.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// Credit window W, in DATA cells per circuit and direction.
    pub window: u16,
    /// CREATE → CONFIRM (peel included) must finish within this.
    pub setup_timeout: Duration,
    /// How long a circuit waits for the link to its next hop when that link
    /// is not attached yet (a neighbour the tracker assigned moments ago,
    /// still being dialled) before it is refused. The originator waits as
    /// long for its first hop.
    pub link_wait: Duration,
    /// How long a BREAK waits for its BREAK_ACK before the id is freed anyway.
    pub break_timeout: Duration,
    /// Peels in flight at once; CREATEs beyond are refused (counted).
    pub max_pending_peels: usize,
    /// Live circuits at once; CREATEs beyond are refused (counted).
    pub max_circuits: usize,
    /// Violations charged to one neighbour before its link is closed.
    pub violation_limit: u32,
    /// Control cells one link may have waiting for its writer; a neighbour
    /// that floods us with requests while not reading our answers is closed.
    pub max_ctrl_cells: usize,
    /// TEST ONLY: take every CREATE and do nothing with it (no peel, no
    /// forward, no BREAK), like a relay that black-holes set-ups. Set only
    /// by the `anomos` binary from `ANOMOS_TEST_SWALLOW_CREATES=1`, for the
    /// fault suite; never from a config file.
    pub swallow_creates: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            window: 256,
            setup_timeout: Duration::from_secs(10),
            link_wait: Duration::from_secs(2),
            break_timeout: Duration::from_secs(30),
            max_pending_peels: 256,
            max_circuits: 10_000,
            violation_limit: 16,
            max_ctrl_cells: 16_384,
            swallow_creates: false,
        }
    }
}

/// Something the shell must do.
#[derive(Debug)]
pub enum Output {
    /// Peel `code` with the onion key and the replay cache, then call
    /// [`RelayCore::peel_done`] with `key` (always, even on error).
    Peel {
        key: CircKey,
        code: Box<[u8; CREATE_CODE_LEN]>,
    },
    /// A circuit for a served torrent ends here: run the e2e responder.
    ExitOpened {
        key: CircKey,
        infohash: InfoHash,
        secret: CircuitSecret,
        /// The originator's credit tier from the exit payload.
        credit: u8,
    },
    /// An originated circuit got its CONFIRM.
    Confirmed { key: CircKey },
    /// A local endpoint has DATA to take ([`RelayCore::endpoint_recv`]).
    Readable { key: CircKey },
    /// A local endpoint got credit back ([`RelayCore::endpoint_send`]).
    Writable { key: CircKey },
    /// A local endpoint's circuit is gone. `leftover` holds the plaintext
    /// bodies that arrived before the BREAK (`CELL_BODY_LEN` each).
    Closed {
        key: CircKey,
        reason: BreakReason,
        leftover: Vec<u8>,
        /// The NID of the first hop, if this peer originated the circuit.
        first_nid: Option<Nid>,
    },
    /// Close this link (its reader and writer), then call `link_lost`.
    CloseLink { link: LinkId, reason: &'static str },
    /// The neighbour crossed the violation limit (its link is being closed).
    Misbehaving { link: LinkId, nid: Nid },
}

/// A second link under a NID that already has one.
#[derive(Debug, thiserror::Error)]
#[error("a link with this NID is already attached")]
pub struct DuplicateNid;

/// A tracking code as it goes out in a CREATE.
type CreateCode = Box<[u8; CREATE_CODE_LEN]>;

/// The circuit table and cell processing of one peer (see module docs).
#[derive(Debug)]
pub struct RelayCore {
    cfg: CoreConfig,
    metrics: Metrics,
    links: HashMap<LinkId, LinkState>,
    by_nid: HashMap<Nid, LinkId>,
    halves: HashMap<(LinkId, CircuitId), Slot>,
    circuits: HashMap<CircKey, Circuit>,
    served: HashSet<InfoHash>,
    /// Circuits in [`table::Stage::AwaitingLink`] by the NID they wait
    /// for, with the code to send on it. Entries of circuits killed
    /// meanwhile are removed with them.
    awaiting: HashMap<Nid, Vec<(CircKey, CreateCode)>>,
    pending_peels: usize,
    next_id: u64,
    outputs: VecDeque<Output>,
    dirty: Vec<LinkId>,
}

impl RelayCore {
    /// An empty core.
    pub fn new(cfg: CoreConfig, metrics: Metrics) -> RelayCore {
        RelayCore {
            cfg,
            metrics,
            links: HashMap::new(),
            by_nid: HashMap::new(),
            halves: HashMap::new(),
            circuits: HashMap::new(),
            served: HashSet::new(),
            awaiting: HashMap::new(),
            pending_peels: 0,
            next_id: 1,
            outputs: VecDeque::new(),
            dirty: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Register a verified link. A NID that already has a link is refused:
    /// a second link never replaces the first. Circuits waiting for this
    /// NID send their CREATE on it now.
    pub fn add_link(
        &mut self,
        now: Instant,
        nid: Nid,
        dialer: bool,
    ) -> Result<LinkId, DuplicateNid> {
        if self.by_nid.contains_key(&nid) {
            return Err(DuplicateNid);
        }
        let link = LinkId(self.fresh_id());
        self.by_nid.insert(nid, link);
        self.links.insert(
            link,
            LinkState {
                nid,
                alloc: CircuitIdAllocator::new(dialer),
                out: Vec::new(),
                prio: Vec::new(),
                ctrl_cells: 0,
                violations: 0,
                closing: false,
                dirty: false,
            },
        );
        for (key, code) in self.awaiting.remove(&nid).unwrap_or_default() {
            self.extend(now, key, link, code);
        }
        Ok(link)
    }

    /// The link currently attached under `nid`.
    pub fn link_of(&self, nid: Nid) -> Option<LinkId> {
        self.by_nid.get(&nid).copied()
    }

    /// The NID of an attached link.
    pub fn nid_of(&self, link: LinkId) -> Option<Nid> {
        self.links.get(&link).map(|l| l.nid)
    }

    /// Ask the shell to close a link (it calls [`RelayCore::link_lost`] once
    /// the I/O has stopped). Input from it is ignored from now on.
    pub fn close_link(&mut self, link: LinkId, reason: &'static str) {
        if let Some(l) = self.links.get_mut(&link) {
            if !l.closing {
                l.closing = true;
                self.outputs.push_back(Output::CloseLink { link, reason });
            }
        }
    }

    /// The link's I/O is gone: forget it, and BREAK the other half of every
    /// circuit that used it (a local endpoint gets `Closed`). The link is
    /// forgotten only after its circuits, so an originator's `Closed` still
    /// names the first hop (the circuit counts as failed).
    pub fn link_lost(&mut self, now: Instant, link: LinkId) {
        let Some(state) = self.links.get_mut(&link) else {
            return;
        };
        // Nothing more goes out on it: its halves are released, not broken.
        state.closing = true;
        let mut live = Vec::new();
        self.halves.retain(|&(l, _), slot| {
            if l != link {
                return true;
            }
            if let Slot::Live(key) = slot {
                live.push(*key);
            }
            false
        });
        for key in live {
            self.kill(now, key, BreakReason::LinkLost, None);
        }
        if let Some(state) = self.links.remove(&link) {
            if self.by_nid.get(&state.nid) == Some(&link) {
                self.by_nid.remove(&state.nid);
            }
        }
    }

    /// Accept (or stop accepting) circuits whose exit payload names `infohash`.
    pub fn set_served(&mut self, infohash: InfoHash, served: bool) {
        if served {
            self.served.insert(infohash);
        } else {
            self.served.remove(&infohash);
        }
    }

    /// Process a batch of whole cells received on `link` (a multiple of
    /// `CELL_LEN` bytes; a trailing partial cell is ignored). DATA bodies are
    /// transformed in place; consecutive DATA cells of one circuit are taken
    /// as one run (see `data.rs`).
    pub fn handle_cells(&mut self, now: Instant, link: LinkId, bytes: &mut [u8]) {
        let whole = bytes.len() / CELL_LEN * CELL_LEN;
        let mut rest = &mut bytes[..whole];
        while !rest.is_empty() {
            if self.links.get(&link).is_none_or(|l| l.closing) {
                return;
            }
            let (circ, cmd) = match peek_header(rest) {
                Ok(h) => h,
                Err(_) => return self.malformed(link),
            };
            if cmd == Command::Data && circ != CircuitId::LINK {
                let cells = same_header_run(rest);
                let (run, _) = rest.split_at_mut(cells * CELL_LEN);
                let used = self.on_data_run(now, link, circ, run).clamp(1, cells);
                rest = &mut rest[used * CELL_LEN..];
                continue;
            }
            let (cell, tail) = rest.split_at_mut(CELL_LEN);
            match CellRef::new(cell).and_then(|c| c.to_cell()) {
                Ok(c) => self.on_control(now, link, c),
                Err(_) => return self.malformed(link),
            }
            rest = tail;
        }
    }

    /// Framing is broken: nothing after this cell can be trusted.
    fn malformed(&mut self, link: LinkId) {
        self.metrics.violation("malformed_cell");
        self.close_link(link, "malformed_cell");
    }

    /// Charge a violation to the neighbour on `link`.
    fn violation(&mut self, link: LinkId, kind: &'static str) {
        self.metrics.violation(kind);
        let Some(l) = self.links.get_mut(&link) else {
            return;
        };
        l.violations += 1;
        if l.violations >= self.cfg.violation_limit && !l.closing {
            let nid = l.nid;
            self.outputs.push_back(Output::Misbehaving { link, nid });
            self.close_link(link, "misbehaving");
        }
    }

    /// A violation on one circuit: count it, BREAK the circuit both ways.
    fn fail(&mut self, now: Instant, key: CircKey, link: LinkId, kind: &'static str) {
        self.violation(link, kind);
        self.kill(now, key, BreakReason::Protocol, None);
    }

    /// Append a control cell for `(link, circ)` to the link's buffers.
    ///
    /// Set-up and credit cells take the priority lane (`prio`), which the
    /// writer sends before the cells already queued in `out`, so a CREATE
    /// or CONFIRM never waits behind a link's bulk DATA (like Tor's cell
    /// priority). Per-circuit order still holds, because a cell only passes
    /// cells of *other* circuits:
    ///
    /// * CREDIT grants DATA in the opposite direction, so passing this
    ///   circuit's own outgoing DATA changes nothing; after our BREAK or
    ///   BREAK_ACK on a half no CREDIT is sent on it (the half is gone).
    /// * CREATE and CONFIRM pass only when `out` holds no cell of that
    ///   circuit id: a CREATE may reuse an id whose BREAK_ACK is still
    ///   queued (the id is freed when the BREAK arrives), and the ack must
    ///   reach the neighbour first.
    /// * BREAK and BREAK_ACK stay in order behind the circuit's DATA (the
    ///   ordered-teardown rules), PADDING is link-level and needs no hurry.
    fn send_ctrl(&mut self, link: LinkId, circ: CircuitId, msg: CellMsg) {
        let Some(l) = self.links.get_mut(&link).filter(|l| !l.closing) else {
            return;
        };
        let urgent = match msg {
            CellMsg::Credit(_) => true,
            CellMsg::Create(_) | CellMsg::Confirm => !holds_circuit(&l.out, circ),
            CellMsg::Break(_) | CellMsg::BreakAck | CellMsg::Padding | CellMsg::Data(_) => false,
        };
        let lane = if urgent { &mut l.prio } else { &mut l.out };
        Cell::new(circ, msg).encode_into(lane);
        l.ctrl_cells += 1;
        if !l.dirty {
            l.dirty = true;
            self.dirty.push(link);
        }
        if l.ctrl_cells > self.cfg.max_ctrl_cells {
            self.metrics.cell_dropped("control_overflow");
            self.close_link(link, "stalled");
        }
    }

    /// Remove circuit `key`: BREAK(`reason`) on each link half except `skip`
    /// (the half a BREAK came in on), `Closed` for a local endpoint.
    fn kill(
        &mut self,
        now: Instant,
        key: CircKey,
        reason: BreakReason,
        skip: Option<(LinkId, CircuitId)>,
    ) {
        let Some(mut c) = self.circuits.remove(&key) else {
            return;
        };
        self.metrics.circuits_active.set(self.circuits.len() as i64);
        if let table::Stage::AwaitingLink { nid, .. } = c.stage {
            if let Some(waiting) = self.awaiting.get_mut(&nid) {
                waiting.retain(|(k, _)| *k != key);
                if waiting.is_empty() {
                    self.awaiting.remove(&nid);
                }
            }
        }
        // Whatever is still queued goes with the circuit.
        self.metrics.queued_cells.sub(circuit_queued(&c) as i64);
        let local_dir = c.endpoint_dir();
        let mut leftover = Vec::new();
        if let Some(side) = local_dir.and_then(|d| c.side_mut(d)) {
            let cells = side.flow.queue.front(side.flow.queue.len());
            for cell in cells.chunks_exact(CELL_LEN) {
                leftover.extend_from_slice(&cell[CELL_HEADER_LEN..]);
            }
            side.flow.queue.clear();
        }
        let first_nid = match (c.back.end, c.fwd.as_ref().map(|s| s.end), c.stage) {
            (End::Local, Some(End::Link(l, _)), _) => self.links.get(&l).map(|s| s.nid),
            (End::Local, None, table::Stage::AwaitingLink { nid, .. }) => Some(nid),
            _ => None,
        };
        for side in [Some(c.back), c.fwd].into_iter().flatten() {
            match side.end {
                End::Link(l, ci) if Some((l, ci)) != skip => {
                    if self.links.get(&l).is_some_and(|s| !s.closing) {
                        let deadline = now + self.cfg.break_timeout;
                        self.halves.insert((l, ci), Slot::Breaking { deadline });
                        self.send_ctrl(l, ci, CellMsg::Break(reason));
                    } else {
                        self.release(l, ci);
                    }
                }
                End::Link(..) | End::Gone => {}
                End::Local => self.outputs.push_back(Output::Closed {
                    key,
                    reason,
                    leftover: std::mem::take(&mut leftover),
                    first_nid,
                }),
            }
        }
    }

    /// Forget the half `(link, circ)` and free its id if it is ours.
    fn release(&mut self, link: LinkId, circ: CircuitId) {
        self.halves.remove(&(link, circ));
        if let Some(l) = self.links.get_mut(&link) {
            l.alloc.free(circ);
        }
    }

    /// The earliest instant [`RelayCore::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let circuits = self.circuits.values().filter_map(Circuit::deadline);
        let halves = self.halves.values().filter_map(|s| match s {
            Slot::Breaking { deadline } => Some(*deadline),
            Slot::Live(_) => None,
        });
        circuits.chain(halves).min()
    }

    /// Set-up timeouts (BREAK both ways) and BREAKs never acknowledged
    /// (free the id anyway).
    pub fn handle_timeout(&mut self, now: Instant) {
        let late: Vec<CircKey> = self
            .circuits
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            let stage = self.circuits.get(&key).map(|c| c.stage);
            let reason = match stage {
                // The next hop never gave credit for the queued tail.
                Some(table::Stage::Draining { reason, .. }) => {
                    self.metrics.cell_dropped("drain_timeout");
                    reason
                }
                // The next hop's link never came.
                Some(table::Stage::AwaitingLink { .. }) => {
                    self.metrics.cell_dropped("unknown_nid");
                    BreakReason::Refused
                }
                _ => {
                    self.metrics.cell_dropped("setup_timeout");
                    BreakReason::SetupTimeout
                }
            };
            self.kill(now, key, reason, None);
        }
        let stale: Vec<(LinkId, CircuitId)> = self
            .halves
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Breaking { deadline } if *deadline <= now))
            .map(|(h, _)| *h)
            .collect();
        for (link, circ) in stale {
            self.release(link, circ);
        }
    }

    /// BREAK(destroyed) every circuit (shutdown). Local endpoints get `Closed`.
    pub fn break_all(&mut self, now: Instant) {
        let keys: Vec<CircKey> = self.circuits.keys().copied().collect();
        for key in keys {
            self.kill(now, key, BreakReason::Destroyed, None);
        }
    }

    /// Live circuits (relayed and local).
    pub fn circuit_count(&self) -> usize {
        self.circuits.len()
    }

    /// Circuit halves in the table (live or waiting for BREAK_ACK).
    pub fn half_count(&self) -> usize {
        self.halves.len()
    }

    /// Circuit ids of our side allocated on `link`.
    pub fn ids_in_use(&self, link: LinkId) -> usize {
        self.links.get(&link).map_or(0, |l| l.alloc.in_use())
    }

    /// Peels handed to the shell and not answered yet.
    pub fn pending_peels(&self) -> usize {
        self.pending_peels
    }

    /// The longest per-circuit, per-direction queue (in cells).
    pub fn max_queue(&self) -> usize {
        let sides = self
            .circuits
            .values()
            .flat_map(|c| [Some(&c.back), c.fwd.as_ref()]);
        sides
            .flatten()
            .map(|s| s.flow.queue.len())
            .max()
            .unwrap_or(0)
    }

    /// DATA cells queued over every circuit and direction (what the
    /// `anomos_relay_queued_cells` gauge tracks).
    pub fn queued_cells(&self) -> usize {
        self.circuits.values().map(circuit_queued).sum()
    }

    /// Bytes waiting in `link`'s outbound buffers (both lanes).
    pub fn outbound_len(&self, link: LinkId) -> usize {
        self.links
            .get(&link)
            .map_or(0, |l| l.prio.len() + l.out.len())
    }

    /// Attached links.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Live circuits with a half on `link` (bounds its outbound buffer).
    pub fn circuits_on(&self, link: LinkId) -> usize {
        let on = |s: &table::Side| matches!(s.end, End::Link(l, _) if l == link);
        let sides = self
            .circuits
            .values()
            .flat_map(|c| [Some(&c.back), c.fwd.as_ref()]);
        sides.flatten().filter(|s| on(s)).count()
    }

    /// Keys of every live circuit with a local endpoint.
    pub fn local_circuits(&self) -> Vec<CircKey> {
        let local = self
            .circuits
            .iter()
            .filter(|(_, c)| c.endpoint_dir().is_some());
        local.map(|(k, _)| *k).collect()
    }

    /// The next thing the shell must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Links whose outbound buffer grew since the last call.
    pub fn take_dirty(&mut self, into: &mut Vec<LinkId>) {
        for link in self.dirty.drain(..) {
            if let Some(l) = self.links.get_mut(&link) {
                l.dirty = false;
                into.push(link);
            }
        }
    }

    /// Swap `link`'s two outbound lanes with `prio` and `bulk` (pass empty
    /// ones; their capacity is reused). The writer must send `prio` before
    /// `bulk` (see `send_ctrl`). Resets the control-cell count.
    pub fn take_outbound_lanes(&mut self, link: LinkId, prio: &mut Vec<u8>, bulk: &mut Vec<u8>) {
        if let Some(l) = self.links.get_mut(&link) {
            std::mem::swap(&mut l.prio, prio);
            std::mem::swap(&mut l.out, bulk);
            l.ctrl_cells = 0;
        }
    }

    /// Everything `link` would send, in wire order (priority lane first),
    /// into `buf` (pass an empty one).
    pub fn take_outbound(&mut self, link: LinkId, buf: &mut Vec<u8>) {
        let mut bulk = Vec::new();
        self.take_outbound_lanes(link, buf, &mut bulk);
        buf.extend_from_slice(&bulk);
    }
}

/// Whether the whole cells in `out` include one of circuit `circ`.
fn holds_circuit(out: &[u8], circ: CircuitId) -> bool {
    let id = circ.0.to_be_bytes();
    out.chunks_exact(CELL_LEN).any(|c| c[..id.len()] == id)
}

/// How many whole cells at the front of `cells` share the first one's
/// header (circuit id and command): a run for `on_data_run`.
fn same_header_run(cells: &[u8]) -> usize {
    let head = &cells[..CELL_HEADER_LEN];
    let more = cells[CELL_LEN..]
        .chunks_exact(CELL_LEN)
        .take_while(|c| &c[..CELL_HEADER_LEN] == head)
        .count();
    1 + more
}

/// DATA cells queued on both sides of `c`.
fn circuit_queued(c: &Circuit) -> usize {
    let sides = [Some(&c.back), c.fwd.as_ref()];
    sides
        .into_iter()
        .flatten()
        .map(|s| s.flow.queue.len())
        .sum()
}

/// Return credit on a side once half a window has left its queue.
fn take_credit(flow: &mut table::Flow, window: u16) -> Option<std::num::NonZeroU16> {
    let threshold = u32::from(window / 2).max(1);
    if flow.uncredited < threshold {
        return None;
    }
    let n = std::num::NonZeroU16::new(u16::try_from(flow.uncredited).ok()?)?;
    flow.recv_budget += flow.uncredited;
    flow.uncredited = 0;
    Some(n)
}
