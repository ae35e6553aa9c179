//! A link's outbound queue: one FIFO per circuit, served round-robin, with link-level cells
//! (create, created, destroy) first (`docs/spec.md` §6.6).
//!
//! Every queued cell is counted against the relay-wide [`QueueBudget`]; a circuit's queue is
//! capped, and removing a circuit frees its cells at once, so the out-of-memory handler can
//! reclaim memory even from a link whose peer has stopped reading.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use shallot_proto::cell::{CircId, CELL_LEN};

/// An encoded cell, ready for the link.
pub type RawCell = [u8; CELL_LEN];

/// The unit the memory budget counts in, bytes: what one queued cell takes in a link's queue
/// (the cell and when it was queued). Replies waiting for a window take one unit each, and an
/// unfinished message the units its allocation spans, so the budget counts what is allocated,
/// not payload bytes (`docs/spec.md` §6.6).
pub const HELD_CELL_BYTES: usize = std::mem::size_of::<(Instant, RawCell)>();

/// Spare capacity a drained queue may keep; beyond it, a queue left empty after a burst is
/// freed rather than kept at the burst's size.
const KEEP_EMPTY: usize = 64;

/// Relay-wide count of cells held in memory for sending (link queues and replies waiting for
/// a circuit's window), shared by every link; and of the circuits alive, whose fixed state
/// the budget caps by their number.
#[derive(Debug, Default)]
pub struct QueueBudget {
    queued: AtomicUsize,
    /// Of those, link-level cells (CREATE, CREATED, DESTROY) queued on links.
    control: AtomicUsize,
    /// Circuits in memory (created and not yet dropped).
    circuits: AtomicUsize,
}

impl QueueBudget {
    /// Circuits in memory now.
    pub fn circuits(&self) -> usize {
        self.circuits.load(Ordering::Relaxed)
    }

    /// Counts a circuit made.
    pub(crate) fn circuit_made(&self) {
        self.circuits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a circuit freed.
    pub(crate) fn circuit_freed(&self) {
        self.circuits.fetch_sub(1, Ordering::Relaxed);
    }

    /// Cells queued across all links now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The cells held that destroying circuits can free: all but the link-level cells, which
    /// leave as soon as the links' writers run. The out-of-memory handler measures its progress
    /// by these, since each circuit it destroys queues a DESTROY of its own: by the total, a
    /// circuit holding one cell would free nothing, and the handler would destroy them all.
    pub fn freeable(&self) -> usize {
        self.queued()
            .saturating_sub(self.control.load(Ordering::Relaxed))
    }

    fn add_control(&self, n: usize) {
        self.control.fetch_add(n, Ordering::Relaxed);
    }

    fn sub_control(&self, n: usize) {
        self.control.fetch_sub(n, Ordering::Relaxed);
    }

    /// Counts `n` more cells held; returns the new total.
    pub fn add(&self, n: usize) -> usize {
        self.queued.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Counts `n` cells no longer held.
    pub fn sub(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Link-level cells that may wait on one link.
pub const MAX_CONTROL_CELLS: usize = 4096;

/// A queue is full: the circuit (or, for link-level cells, the link) must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitQueueFull;

#[derive(Debug, Default)]
struct CircQueue {
    cells: VecDeque<(Instant, RawCell)>,
}

/// The outbound queue of one link.
#[derive(Debug, Default)]
pub struct OutQueue {
    control: VecDeque<RawCell>,
    circuits: HashMap<CircId, CircQueue>,
    active: VecDeque<CircId>,
}

impl OutQueue {
    /// Queues a link-level cell (create, created, destroy). These go first and are counted
    /// against the budget like any other; at most [`MAX_CONTROL_CELLS`] wait at once (a peer
    /// that lets more pile up is not reading, and its link is closed).
    pub fn push_control(
        &mut self,
        cell: RawCell,
        budget: &QueueBudget,
    ) -> Result<usize, CircuitQueueFull> {
        if self.control.len() >= MAX_CONTROL_CELLS {
            return Err(CircuitQueueFull);
        }
        self.control.push_back(cell);
        budget.add_control(1);
        Ok(budget.add(1))
    }

    /// Queues a relay cell for circuit `id`, refusing if that circuit already has `cap` cells
    /// waiting. Returns the relay-wide count of queued cells.
    pub fn push_circuit(
        &mut self,
        id: CircId,
        cell: RawCell,
        cap: usize,
        budget: &QueueBudget,
    ) -> Result<usize, CircuitQueueFull> {
        let q = self.circuits.entry(id).or_default();
        if q.cells.len() >= cap {
            return Err(CircuitQueueFull);
        }
        if q.cells.is_empty() {
            self.active.push_back(id);
        }
        q.cells.push_back((Instant::now(), cell));
        Ok(budget.add(1))
    }

    /// Drops every cell queued for circuit `id`, returning how many there were.
    pub fn remove_circuit(&mut self, id: CircId, budget: &QueueBudget) -> usize {
        match self.circuits.remove(&id) {
            Some(q) => {
                self.active.retain(|c| *c != id);
                budget.sub(q.cells.len());
                q.cells.len()
            }
            None => 0,
        }
    }

    /// Whether anything is waiting.
    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.active.is_empty()
    }

    /// Moves up to `max` cells into `out` (concatenated), control cells first, then one cell
    /// per circuit in turn. Returns how many were moved.
    pub fn drain_into(&mut self, max: usize, out: &mut Vec<u8>, budget: &QueueBudget) -> usize {
        let mut n = 0;
        while n < max {
            let Some(cell) = self.control.pop_front() else {
                break;
            };
            out.extend_from_slice(&cell);
            n += 1;
        }
        budget.sub_control(n);
        while n < max {
            let Some(id) = self.active.pop_front() else {
                break;
            };
            let Some(q) = self.circuits.get_mut(&id) else {
                continue;
            };
            if let Some((_, cell)) = q.cells.pop_front() {
                out.extend_from_slice(&cell);
                n += 1;
            }
            if q.cells.is_empty() {
                self.circuits.remove(&id);
            } else {
                self.active.push_back(id);
            }
        }
        budget.sub(n);
        if self.control.is_empty() && self.control.capacity() > KEEP_EMPTY {
            self.control = VecDeque::new();
        }
        if self.active.is_empty() {
            if self.active.capacity() > KEEP_EMPTY {
                self.active = VecDeque::new();
            }
            if self.circuits.capacity() > KEEP_EMPTY {
                self.circuits = HashMap::new();
            }
        }
        n
    }

    /// Each circuit with queued cells, with the time its oldest cell was queued.
    pub fn oldest_cells(&self) -> Vec<(Instant, CircId)> {
        self.circuits
            .iter()
            .filter_map(|(id, q)| q.cells.front().map(|(t, _)| (*t, *id)))
            .collect()
    }

    /// Drops everything (the link is closing), returning how many cells were dropped.
    pub fn clear(&mut self, budget: &QueueBudget) -> usize {
        let n = self.control.len() + self.circuits.values().map(|q| q.cells.len()).sum::<usize>();
        budget.sub_control(self.control.len());
        self.control = VecDeque::new();
        self.circuits = HashMap::new();
        self.active = VecDeque::new();
        budget.sub(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(v: u32) -> CircId {
        CircId::new(v).unwrap()
    }

    fn cell(tag: u8) -> RawCell {
        let mut c = [0u8; CELL_LEN];
        c[10] = tag;
        c
    }

    #[test]
    fn control_first_then_round_robin() {
        let budget = QueueBudget::default();
        let mut q = OutQueue::default();
        for i in 0..3 {
            q.push_circuit(id(1), cell(10 + i), 100, &budget).unwrap();
            q.push_circuit(id(2), cell(20 + i), 100, &budget).unwrap();
        }
        q.push_control(cell(1), &budget).unwrap();
        assert_eq!(budget.queued(), 7);
        assert_eq!(budget.freeable(), 6, "the link-level cell leaves by itself");
        let mut out = Vec::new();
        assert_eq!(q.drain_into(127, &mut out, &budget), 7);
        let tags: Vec<u8> = out.chunks(CELL_LEN).map(|c| c[10]).collect();
        assert_eq!(tags, vec![1, 10, 20, 11, 21, 12, 22]);
        assert_eq!(budget.queued(), 0);
        assert_eq!(budget.freeable(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn per_circuit_cap_is_enforced() {
        let budget = QueueBudget::default();
        let mut q = OutQueue::default();
        for _ in 0..5 {
            q.push_circuit(id(1), cell(0), 5, &budget).unwrap();
        }
        assert_eq!(
            q.push_circuit(id(1), cell(0), 5, &budget),
            Err(CircuitQueueFull)
        );
        // Other circuits are unaffected.
        assert!(q.push_circuit(id(2), cell(0), 5, &budget).is_ok());
    }

    #[test]
    fn removing_a_circuit_frees_its_cells() {
        let budget = QueueBudget::default();
        let mut q = OutQueue::default();
        for _ in 0..4 {
            q.push_circuit(id(7), cell(0), 10, &budget).unwrap();
        }
        q.push_circuit(id(8), cell(0), 10, &budget).unwrap();
        assert_eq!(q.oldest_cells().len(), 2);
        assert_eq!(q.remove_circuit(id(7), &budget), 4);
        assert_eq!(budget.queued(), 1);
        let mut out = Vec::new();
        assert_eq!(q.drain_into(10, &mut out, &budget), 1);
        assert_eq!(q.clear(&budget), 0);
        assert_eq!(budget.queued(), 0);
    }

    #[test]
    fn link_level_cells_are_capped() {
        let budget = QueueBudget::default();
        let mut q = OutQueue::default();
        for _ in 0..MAX_CONTROL_CELLS {
            q.push_control(cell(0), &budget).unwrap();
        }
        assert_eq!(q.push_control(cell(0), &budget), Err(CircuitQueueFull));
        assert_eq!(budget.freeable(), 0);
        assert_eq!(q.clear(&budget), MAX_CONTROL_CELLS);
        assert_eq!(budget.queued(), 0);
        assert_eq!(budget.control.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn drain_respects_max() {
        let budget = QueueBudget::default();
        let mut q = OutQueue::default();
        for _ in 0..200 {
            q.push_circuit(id(1), cell(0), 1000, &budget).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(q.drain_into(127, &mut out, &budget), 127);
        assert_eq!(out.len(), 127 * CELL_LEN);
        assert_eq!(budget.queued(), 73);
    }
}
