//! The circuits on one link, by the id the link uses for each (`docs/spec.md` §6.3). Pure
//! bookkeeping: ids this relay picks have the parity of whichever side opened the link, are
//! drawn at random, and are never zero or already in use; a link holds at most a set number.

use std::collections::HashMap;

use shallot_proto::cell::CircId;

/// One link's circuits, each under its id on that link.
#[derive(Debug)]
pub(crate) struct CircTable<T> {
    map: HashMap<CircId, T>,
}

impl<T> Default for CircTable<T> {
    fn default() -> Self {
        CircTable {
            map: HashMap::new(),
        }
    }
}

impl<T> CircTable<T> {
    /// How many circuits the link carries.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The circuit the link knows as `id`.
    pub(crate) fn get(&self, id: CircId) -> Option<&T> {
        self.map.get(&id)
    }

    /// Records a circuit the peer opened under `id` (the caller has checked the id is free).
    pub(crate) fn insert(&mut self, id: CircId, entry: T) {
        self.map.insert(id, entry);
    }

    /// Forgets the circuit under `id`.
    pub(crate) fn remove(&mut self, id: CircId) -> Option<T> {
        self.map.remove(&id)
    }

    /// Every circuit, forgetting them all.
    pub(crate) fn drain(&mut self) -> Vec<(CircId, T)> {
        self.map.drain().collect()
    }

    /// Every circuit.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (CircId, &T)> {
        self.map.iter().map(|(id, t)| (*id, t))
    }

    /// Records a circuit this relay opens on the link under a fresh id of the right parity
    /// (`we_opened_link`), drawn from `draw`; `None` when the link already holds `cap`.
    pub(crate) fn add_outbound(
        &mut self,
        we_opened_link: bool,
        cap: usize,
        mut draw: impl FnMut() -> u32,
        entry: T,
    ) -> Option<CircId> {
        if self.map.len() >= cap {
            return None;
        }
        loop {
            let Some(id) = CircId::from_random(draw(), we_opened_link) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(slot) = self.map.entry(id) {
                slot.insert(entry);
                return Some(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_ids_take_the_openers_parity_and_skip_zero_and_ids_in_use() {
        let mut table = CircTable::default();
        let taken = CircId::new(5).unwrap();
        table.insert(taken, "theirs");
        let mut draws = vec![0u32, 5, 0x8000_0005, 9].into_iter();
        // As the side that did not open the link: 0 is skipped, 5 is taken, and the top bit
        // of 0x8000_0005 is cleared (giving 5 again, taken); 9 is free.
        let id = table
            .add_outbound(false, 10, || draws.next().unwrap(), "mine")
            .unwrap();
        assert_eq!(id.get(), 9);
        assert!(!id.chosen_by_initiator());
        // As the opener, every id has the top bit set, even a draw of zero.
        let id = table.add_outbound(true, 10, || 0, "mine").unwrap();
        assert_eq!(id.get(), CircId::INITIATOR_BIT);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_full_link_takes_no_more_circuits() {
        let mut table = CircTable::default();
        let mut n = 0u32;
        for _ in 0..3 {
            assert!(table
                .add_outbound(
                    true,
                    3,
                    || {
                        n += 1;
                        n
                    },
                    ()
                )
                .is_some());
        }
        assert_eq!(table.add_outbound(true, 3, || 77, ()), None);
        let (id, ()) = table.drain().remove(0);
        assert!(table.get(id).is_none());
        assert_eq!(table.len(), 0);
    }
}
