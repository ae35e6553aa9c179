//! The out-of-memory handler's choices (`docs/spec.md` §6.6): when the cells a relay holds
//! exceed their cap, circuits are destroyed oldest queued data first until the total is back
//! under 90% of the cap ([`relieve`]); when busy links' buffers exceed theirs, the links
//! stalled longest are closed until the buffers are back under 90% of it
//! ([`relieve_buffers`]). Pure: the caller lists the candidates, reads the totals and acts.

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

/// Closes links holding buffers, the one stalled longest first (a candidate is a link with
/// the time its stall began and the bytes its buffers hold), until the `total` held is at most
/// [`target`]`(cap)`; returns how many it closed. A link closed leaves the total at once
/// (its buffers are freed as its loops stop), so what each frees is known before it goes.
pub(crate) fn relieve_buffers<K>(
    mut candidates: Vec<(Instant, usize, K)>,
    total: usize,
    cap: usize,
    mut close: impl FnMut(K),
) -> usize {
    candidates.sort_by_key(|(t, _, _)| *t);
    let target = target(cap);
    let mut left = total;
    let mut closed = 0;
    for (_, held, victim) in candidates {
        if left <= target {
            break;
        }
        close(victim);
        left = left.saturating_sub(held);
        closed += 1;
    }
    closed
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

    /// Many stalled links and one honest busy link whose stall began last: the stalled ones
    /// go, oldest first, until the buffers are under 90% of the cap; the honest one stays.
    #[test]
    fn the_links_stalled_longest_are_closed_until_under_ninety_percent() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let mut candidates: Vec<_> = (0..20u64).map(|i| (at(i), 100, i)).collect();
        candidates.push((at(100), 100, 99));
        candidates.reverse();
        // 2,100 held, cap 1,000: target 900 means 12 of 100 bytes each must go.
        let mut closed = Vec::new();
        let n = relieve_buffers(candidates, 2100, 1000, |k| closed.push(k));
        assert_eq!(n, 12);
        assert_eq!(closed, (0..12).collect::<Vec<_>>());
        assert!(!closed.contains(&99), "the honest link stays");
        // Under the target already: nothing is closed.
        let n = relieve_buffers(vec![(at(0), 500, 0u64)], 900, 1000, |_| panic!("closed"));
        assert_eq!(n, 0);
        // Not enough to close: everything goes, and it stops.
        let mut closed = 0;
        assert_eq!(
            relieve_buffers(vec![(at(0), 10, ()), (at(1), 10, ())], 5000, 1000, |_| {
                closed += 1
            }),
            2
        );
        assert_eq!(closed, 2);
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
