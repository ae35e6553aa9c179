//! The out-of-memory handler's choice (`docs/spec.md` §6.6): when the cells a relay holds
//! exceed the cap, circuits are destroyed oldest queued data first until the total is back
//! under 90% of the cap. Pure: the caller lists the candidates, reads the total and destroys.

use std::time::Instant;

/// Whether `queued` cells are over the cap, and so the handler must run.
pub(crate) fn over_cap(queued: usize, cap: usize) -> bool {
    queued > cap
}

/// The total the handler brings the queues back to.
pub(crate) fn target(cap: usize) -> usize {
    cap / 10 * 9
}

/// Destroys candidates, oldest first, until `queued()` is at most [`target`]`(cap)`;
/// returns how many it destroyed. A candidate is a circuit's queue on one link, or its
/// replies waiting for the client's window, with the time its oldest cell started waiting; a
/// circuit may appear more than once (destroying one already gone must do nothing).
pub(crate) fn relieve<K>(
    mut candidates: Vec<(Instant, K)>,
    cap: usize,
    mut queued: impl FnMut() -> usize,
    mut destroy: impl FnMut(K),
) -> usize {
    candidates.sort_by_key(|(t, _)| *t);
    let target = target(cap);
    let mut destroyed = 0;
    for (_, victim) in candidates {
        if queued() <= target {
            break;
        }
        destroy(victim);
        destroyed += 1;
    }
    destroyed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::time::Duration;

    #[test]
    fn oldest_queues_go_first_until_under_ninety_percent() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        // Circuit 'a' has the oldest cells (on two links), 'b' the next, 'c' the newest.
        let held = RefCell::new(HashMap::from([('a', 40usize), ('b', 50), ('c', 30)]));
        let total = || held.borrow().values().sum::<usize>();
        assert!(over_cap(total(), 100));
        let mut order = Vec::new();
        let n = relieve(
            vec![(at(5), 'c'), (at(1), 'a'), (at(3), 'b'), (at(2), 'a')],
            100,
            total,
            |k| {
                order.push(k);
                held.borrow_mut().insert(k, 0);
            },
        );
        // 120 held, target 90: 'a' frees 40 (80 left), and nothing more is destroyed.
        assert_eq!(order, vec!['a']);
        assert_eq!(n, 1);
        assert!(!over_cap(total(), 100));
    }

    #[test]
    fn it_stops_when_nothing_is_left_to_destroy() {
        let mut destroyed = Vec::new();
        let n = relieve(
            vec![(Instant::now(), 1), (Instant::now(), 2)],
            10,
            || 50,
            |k| destroyed.push(k),
        );
        assert_eq!(n, 2);
        assert_eq!(destroyed.len(), 2);
        assert_eq!(target(10), 9);
        assert_eq!(target(522_247), 470_016);
        assert!(!over_cap(10, 10));
    }
}
