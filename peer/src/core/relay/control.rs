//! Control cells (CREATE, CONFIRM, BREAK, BREAK_ACK, CREDIT) and the
//! result of a peel (inline or on the blocking pool).

use super::table::{Circuit, Crypto, Dir, End, Flow, Side, Slot, Stage};
use super::{CircKey, LinkId, Output, RelayCore};
use anomos_common::cell::{BreakReason, Cell, CellMsg, CREATE_CODE_LEN};
use anomos_common::onion::{PeelError, Peeled};
use anomos_common::relay_crypto::RelayLayer;
use anomos_common::CircuitId;
use std::num::NonZeroU16;
use std::time::Instant;

impl RelayCore {
    /// Any validated cell other than DATA.
    pub(super) fn on_control(&mut self, now: Instant, link: LinkId, cell: Cell) {
        let circ = cell.circ;
        match cell.msg {
            CellMsg::Padding | CellMsg::Data(_) => {}
            CellMsg::Create(code) => self.on_create(now, link, circ, code),
            CellMsg::Confirm => self.on_confirm(now, link, circ),
            CellMsg::Break(reason) => self.on_break(now, link, circ, reason),
            CellMsg::BreakAck => self.on_break_ack(link, circ),
            CellMsg::Credit(n) => self.on_credit(now, link, circ, n),
        }
    }

    /// A neighbour opens a circuit through us: check the id, then hand the
    /// code to the shell for peeling (bounded).
    fn on_create(
        &mut self,
        now: Instant,
        link: LinkId,
        circ: CircuitId,
        code: Box<[u8; CREATE_CODE_LEN]>,
    ) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        // The neighbour allocates ids of its own parity only.
        if !circ.belongs_to(!l.alloc.is_dialer()) {
            return self.violation(link, "circuit_id_side");
        }
        if self.halves.contains_key(&(link, circ)) {
            return self.violation(link, "circuit_id_in_use");
        }
        if self.cfg.swallow_creates {
            return; // Test-only black hole (`CoreConfig::swallow_creates`).
        }
        if self.circuits.len() >= self.cfg.max_circuits {
            self.metrics.cell_dropped("circuit_limit");
            return self.refuse(now, link, circ, BreakReason::Overloaded);
        }
        if self.pending_peels >= self.cfg.max_pending_peels {
            self.metrics.cell_dropped("peel_backlog");
            return self.refuse(now, link, circ, BreakReason::Overloaded);
        }
        let key = CircKey(self.fresh_id());
        let circuit = Circuit {
            back: Side {
                end: End::Link(link, circ),
                flow: Flow::new(self.cfg.window),
            },
            fwd: None,
            stage: Stage::Peeling {
                deadline: now + self.cfg.setup_timeout,
            },
            crypto: Crypto::None,
        };
        self.circuits.insert(key, circuit);
        self.metrics.circuits_active.set(self.circuits.len() as i64);
        self.halves.insert((link, circ), Slot::Live(key));
        self.pending_peels += 1;
        self.outputs.push_back(Output::Peel { key, code });
    }

    /// Answer a CREATE we will not serve with BREAK, remembering the half
    /// until the ack (if the table has room; otherwise the cell is dropped).
    fn refuse(&mut self, now: Instant, link: LinkId, circ: CircuitId, reason: BreakReason) {
        if self.halves.len() >= self.cfg.max_circuits.saturating_mul(4) {
            return;
        }
        let deadline = now + self.cfg.break_timeout;
        self.halves
            .insert((link, circ), Slot::Breaking { deadline });
        self.send_ctrl(link, circ, CellMsg::Break(reason));
    }

    /// Send a peeled circuit's CREATE on `next` (its link to the next hop)
    /// and wait for CONFIRM; BREAK(overloaded) if `next` has no free id.
    pub(super) fn extend(
        &mut self,
        now: Instant,
        key: CircKey,
        next: LinkId,
        code: Box<[u8; CREATE_CODE_LEN]>,
    ) {
        if !self.create_on(now, key, next, code) {
            self.kill(now, key, BreakReason::Overloaded, None);
        }
    }

    /// Circuit `key` sends its CREATE on a fresh id of `next` and waits
    /// for CONFIRM (Extending, with a set-up deadline). False, with
    /// nothing changed, if `next` has no free id; true if the circuit is
    /// gone.
    pub(super) fn create_on(
        &mut self,
        now: Instant,
        key: CircKey,
        next: LinkId,
        code: Box<[u8; CREATE_CODE_LEN]>,
    ) -> bool {
        if !self.circuits.contains_key(&key) {
            return true;
        }
        let Some(id) = self.links.get_mut(&next).and_then(|l| l.alloc.allocate()) else {
            return false;
        };
        let Some(c) = self.circuits.get_mut(&key) else {
            return true;
        };
        c.fwd = Some(Side {
            end: End::Link(next, id),
            flow: Flow::new(self.cfg.window),
        });
        c.stage = Stage::Extending {
            deadline: now + self.cfg.setup_timeout,
        };
        self.halves.insert((next, id), Slot::Live(key));
        self.send_ctrl(next, id, CellMsg::Create(code));
        true
    }

    /// The shell's answer to [`Output::Peel`].
    pub fn peel_done(&mut self, now: Instant, key: CircKey, result: Result<Peeled, PeelError>) {
        self.pending_peels = self.pending_peels.saturating_sub(1);
        let Some(c) = self.circuits.get(&key) else {
            return; // Broken while peeling.
        };
        if !matches!(c.stage, Stage::Peeling { .. }) {
            return;
        }
        let peeled = match result {
            Ok(p) => p,
            Err(e) => {
                // Not charged to the neighbour: a code tampered further up
                // arrives through an honest one.
                self.metrics.violation(e.kind());
                return self.kill(now, key, BreakReason::Refused, None);
            }
        };
        match peeled {
            Peeled::Relay {
                next_nid,
                next_code,
                layer_keys,
                ..
            } => {
                let Ok(layer) = RelayLayer::new(&layer_keys) else {
                    return self.kill(now, key, BreakReason::Protocol, None);
                };
                let mut code = Box::new([0u8; CREATE_CODE_LEN]);
                code.copy_from_slice(next_code.as_bytes());
                let Some(c) = self.circuits.get_mut(&key) else {
                    return;
                };
                c.crypto = Crypto::Relay(Box::new(layer));
                let next = self
                    .link_of(next_nid)
                    .filter(|l| self.links.get(l).is_some_and(|s| !s.closing));
                match next {
                    Some(next) => self.extend(now, key, next, code),
                    None => {
                        // Assigned moments ago and still being dialled, or
                        // gone: wait a little for it (bounded by the
                        // circuit table) instead of failing the set-up.
                        let deadline = now + self.cfg.link_wait;
                        if let Some(c) = self.circuits.get_mut(&key) {
                            c.stage = Stage::AwaitingLink {
                                nid: next_nid,
                                deadline,
                            };
                        }
                        self.awaiting.entry(next_nid).or_default().push((key, code));
                    }
                }
            }
            Peeled::Exit {
                payload,
                layer_keys,
            } => {
                if !self.served.contains(&payload.infohash) {
                    self.metrics.cell_dropped("not_served");
                    return self.kill(now, key, BreakReason::Refused, None);
                }
                let Ok(layer) = RelayLayer::new(&layer_keys) else {
                    return self.kill(now, key, BreakReason::Protocol, None);
                };
                let Some(c) = self.circuits.get_mut(&key) else {
                    return;
                };
                c.fwd = Some(Side {
                    end: End::Local,
                    flow: Flow::new(self.cfg.window),
                });
                c.crypto = Crypto::Relay(Box::new(layer));
                c.stage = Stage::Open;
                if let End::Link(l, ci) = c.back.end {
                    self.send_ctrl(l, ci, CellMsg::Confirm);
                }
                self.outputs.push_back(Output::ExitOpened {
                    key,
                    infohash: payload.infohash,
                    secret: payload.circuit_secret.clone(),
                    credit: payload.credit,
                });
            }
        }
    }

    /// The live circuit and side of a half, or count the cell as dropped.
    fn live(&mut self, link: LinkId, circ: CircuitId) -> Option<(CircKey, Dir)> {
        match self.halves.get(&(link, circ)) {
            Some(Slot::Live(key)) => {
                let dir = self.circuits.get(key)?.dir_of(link, circ)?;
                Some((*key, dir))
            }
            Some(Slot::Breaking { .. }) => {
                self.metrics.cell_dropped("circuit_closing");
                None
            }
            None => {
                self.metrics.cell_dropped("unknown_circuit");
                None
            }
        }
    }

    /// CONFIRM comes back from the exit side of an extending circuit.
    fn on_confirm(&mut self, now: Instant, link: LinkId, circ: CircuitId) {
        let Some((key, dir)) = self.live(link, circ) else {
            return;
        };
        let Some(c) = self.circuits.get_mut(&key) else {
            return;
        };
        if dir != Dir::Fwd || !matches!(c.stage, Stage::Extending { .. }) {
            return self.fail(now, key, link, "unexpected_confirm");
        }
        c.stage = Stage::Open;
        match c.back.end {
            End::Link(l, ci) => self.send_ctrl(l, ci, CellMsg::Confirm),
            End::Local => self.outputs.push_back(Output::Confirmed { key }),
            End::Gone => {}
        }
    }

    /// BREAK: acknowledge, free the half, pass the BREAK on to the other side.
    fn on_break(&mut self, now: Instant, link: LinkId, circ: CircuitId, reason: BreakReason) {
        match self.halves.get(&(link, circ)).copied() {
            Some(Slot::Live(key)) => {
                self.send_ctrl(link, circ, CellMsg::BreakAck);
                self.release(link, circ);
                if !self.order_break(now, key, link, circ, reason) {
                    self.kill(now, key, reason, Some((link, circ)));
                }
            }
            // Both ends broke at once: ack theirs, keep waiting for ours.
            Some(Slot::Breaking { .. }) => self.send_ctrl(link, circ, CellMsg::BreakAck),
            None => {
                // Acknowledge anyway, so the neighbour can free its id.
                self.metrics.cell_dropped("unknown_circuit");
                self.send_ctrl(link, circ, CellMsg::BreakAck);
            }
        }
    }

    /// BREAK came in on `(link, circ)` (already acked and freed) while DATA
    /// from that side still waits here for the next hop's credit. Keep the
    /// order of that direction: the cells go out first, the BREAK behind
    /// them ([`Stage::Draining`]); the other direction, which leads to the
    /// half that broke, is dropped at once. Returns `false` when there is
    /// nothing to wait for and the BREAK passes on now.
    fn order_break(
        &mut self,
        now: Instant,
        key: CircKey,
        link: LinkId,
        circ: CircuitId,
        reason: BreakReason,
    ) -> bool {
        let deadline = now + self.cfg.break_timeout;
        let Some(c) = self.circuits.get_mut(&key) else {
            return false;
        };
        // Draining already: the BREAK comes from where we drain to.
        if c.stage != Stage::Open {
            return false;
        }
        let Some(from) = c.dir_of(link, circ) else {
            return false;
        };
        let Some((src, dst)) = c.pair_mut(from) else {
            return false;
        };
        let End::Link(out, _) = dst.end else {
            return false; // A local end takes the queue with `Closed`.
        };
        if src.flow.queue.is_empty() || self.links.get(&out).is_none_or(|l| l.closing) {
            return false;
        }
        src.end = End::Gone;
        self.metrics.queued_cells.sub(dst.flow.queue.len() as i64);
        dst.flow.queue.clear();
        c.stage = Stage::Draining {
            toward: from.opposite(),
            reason,
            deadline,
        };
        true
    }

    /// BREAK_ACK: the half is free on both ends now.
    fn on_break_ack(&mut self, link: LinkId, circ: CircuitId) {
        match self.halves.get(&(link, circ)) {
            Some(Slot::Breaking { .. }) => self.release(link, circ),
            Some(Slot::Live(_)) => self.violation(link, "unexpected_break_ack"),
            None => self.metrics.cell_dropped("unknown_circuit"),
        }
    }

    /// CREDIT: more DATA may go out on this half; drain what waits for it.
    fn on_credit(&mut self, now: Instant, link: LinkId, circ: CircuitId, n: NonZeroU16) {
        let Some((key, dir)) = self.live(link, circ) else {
            return;
        };
        let window = u32::from(self.cfg.window);
        let Some(side) = self.circuits.get_mut(&key).and_then(|c| c.side_mut(dir)) else {
            return;
        };
        let before = side.flow.send_credit;
        let after = before + u32::from(n.get());
        if after > window {
            return self.fail(now, key, link, "credit");
        }
        side.flow.send_credit = after;
        let local = self.circuits.get(&key).and_then(|c| c.endpoint_dir()) == Some(dir);
        if local {
            if before == 0 {
                self.outputs.push_back(Output::Writable { key });
            }
        } else {
            self.drain(key, dir);
            self.finish_drain(now, key);
        }
    }
}
