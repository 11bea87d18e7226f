//! DATA cells: the bulk path of the core.
//!
//! A link read holds runs of consecutive DATA cells of one circuit (a TLS
//! record carries 16 cells, mostly of the busiest circuit). The core takes
//! such a run in one step: one table look-up, one credit check, the hop's
//! layer over every body, one copy into the next link's outbound buffer
//! (or into the circuit's queue), one CREDIT decision. Per-cell work left
//! is the keystream and rewriting the circuit id. The result is exactly
//! what the cells would have done one at a time (see STATE.md, rules 6–8):
//! whatever would stop the run partway (no budget, a violation, a broken
//! circuit) ends it after the cells before it, and the rest is looked at
//! again by the caller.

use super::table::{Crypto, Dir, End, Slot, Stage};
use super::{take_credit, CircKey, LinkId, Output, RelayCore};
use crate::core::copy;
use anomos_common::cell::{BreakReason, CellMsg, CELL_LEN};
use anomos_common::CircuitId;
use std::time::Instant;

impl RelayCore {
    /// A run of whole DATA cells (`run.len()` a positive multiple of
    /// `CELL_LEN`) that arrived on `(link, circ)`. Returns how many cells it
    /// consumed (at least one); the caller hands the rest back in.
    pub(super) fn on_data_run(
        &mut self,
        now: Instant,
        link: LinkId,
        circ: CircuitId,
        run: &mut [u8],
    ) -> usize {
        let cells = run.len() / CELL_LEN;
        let key = match self.halves.get(&(link, circ)) {
            Some(Slot::Live(k)) => *k,
            Some(Slot::Breaking { .. }) => return self.drop_cells(cells, "circuit_closing"),
            None => return self.drop_cells(cells, "unknown_circuit"),
        };
        let Some(c) = self.circuits.get_mut(&key) else {
            return cells;
        };
        let Some(dir) = c.dir_of(link, circ) else {
            return cells;
        };
        if matches!(c.stage, Stage::Draining { .. }) {
            // Only the half we drain towards is left: its direction leads to
            // a half that broke, so what it sends has nowhere to go.
            return self.drop_cells(cells, "circuit_closing");
        }
        if c.stage != Stage::Open {
            self.fail(now, key, link, "unexpected_data");
            return 1;
        }
        let budget = c.side(dir).map_or(0, |s| s.flow.recv_budget) as usize;
        if budget == 0 {
            self.fail(now, key, link, "credit");
            return 1;
        }
        let n = cells.min(budget);
        let run = &mut run[..n * CELL_LEN];
        let relayed = c.is_relayed();
        let crypto = match (&mut c.crypto, dir) {
            (Crypto::Relay(l), Dir::Back) => l.remove_forward_cells(run),
            (Crypto::Relay(l), Dir::Fwd) => l.add_backward_cells(run),
            (Crypto::Origin(o), Dir::Fwd) => o.unwrap_backward_cells(run),
            _ => {
                self.fail(now, key, link, "unexpected_data");
                return 1;
            }
        };
        if crypto.is_err() {
            self.kill(now, key, BreakReason::Protocol, None);
            return 1;
        }
        let Some((this, other)) = c.pair_mut(dir) else {
            return n;
        };
        this.flow.recv_budget -= n as u32;
        let mut credit = None;
        match other.end {
            // Not reached: a circuit with a `Gone` side is draining.
            End::Gone => {}
            End::Local => {
                if this.flow.queue.is_empty() {
                    self.outputs.push_back(Output::Readable { key });
                }
                this.flow.queue.push(run);
                self.metrics.queued_cells.add(n as i64);
            }
            End::Link(l2, c2) => {
                let id = c2.0.to_be_bytes();
                for cell in run.chunks_exact_mut(CELL_LEN) {
                    cell[..id.len()].copy_from_slice(&id);
                }
                let out = self.links.get_mut(&l2).filter(|l| !l.closing);
                let mut sent = 0;
                if let Some(l) = out.filter(|_| this.flow.queue.is_empty()) {
                    sent = n.min(other.flow.send_credit as usize);
                    if sent > 0 {
                        other.flow.send_credit -= sent as u32;
                        this.flow.uncredited += sent as u32;
                        copy::extend(&mut l.out, &run[..sent * CELL_LEN]);
                        if !l.dirty {
                            l.dirty = true;
                            self.dirty.push(l2);
                        }
                        if relayed {
                            let bytes = (sent * CELL_LEN) as u64;
                            self.metrics.relay_bytes.inc_by(bytes);
                        }
                        credit = take_credit(&mut this.flow, self.cfg.window);
                    }
                }
                this.flow.queue.push(&run[sent * CELL_LEN..]);
                self.metrics.queued_cells.add((n - sent) as i64);
            }
        }
        if let Some(n) = credit {
            self.send_ctrl(link, circ, CellMsg::Credit(n));
        }
        n
    }

    /// Count `cells` dropped for `why`; returns `cells` (all consumed).
    fn drop_cells(&mut self, cells: usize, why: &'static str) -> usize {
        for _ in 0..cells {
            self.metrics.cell_dropped(why);
        }
        cells
    }

    /// Move cells queued on the side opposite `out_dir` onto `out_dir`'s
    /// link while it has credit (one copy for all of them), and return
    /// credit for them.
    pub(super) fn drain(&mut self, key: CircKey, out_dir: Dir) {
        let Some(c) = self.circuits.get_mut(&key) else {
            return;
        };
        let relayed = c.is_relayed();
        let Some((dst, src)) = c.pair_mut(out_dir) else {
            return;
        };
        let End::Link(l2, _) = dst.end else {
            return;
        };
        // A side that broke (`Gone`) gets no more CREDIT: its id is free.
        let back_to = match src.end {
            End::Link(l1, c1) => Some((l1, c1)),
            End::Local | End::Gone => None,
        };
        let Some(out) = self.links.get_mut(&l2).filter(|l| !l.closing) else {
            return;
        };
        let moved = src.flow.queue.len().min(dst.flow.send_credit as usize);
        if moved == 0 {
            return;
        }
        copy::extend(&mut out.out, src.flow.queue.front(moved));
        src.flow.queue.pop(moved);
        self.metrics.queued_cells.sub(moved as i64);
        dst.flow.send_credit -= moved as u32;
        src.flow.uncredited += moved as u32;
        if !out.dirty {
            out.dirty = true;
            self.dirty.push(l2);
        }
        if relayed {
            self.metrics.relay_bytes.inc_by((moved * CELL_LEN) as u64);
        }
        if let Some((l1, c1)) = back_to {
            if let Some(n) = take_credit(&mut src.flow, self.cfg.window) {
                self.send_ctrl(l1, c1, CellMsg::Credit(n));
            }
        }
    }

    /// A draining circuit whose queue has emptied: its BREAK goes out now,
    /// behind the last cell.
    pub(super) fn finish_drain(&mut self, now: Instant, key: CircKey) {
        let Some(c) = self.circuits.get(&key) else {
            return;
        };
        let Stage::Draining { toward, reason, .. } = c.stage else {
            return;
        };
        if c.side(toward.opposite())
            .is_none_or(|s| s.flow.queue.is_empty())
        {
            self.kill(now, key, reason, None);
        }
    }
}
