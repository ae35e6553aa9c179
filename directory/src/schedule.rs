//! The voting schedule as pure functions of time (`docs/spec.md` §5.6).
//!
//! Periods start at multiples of the voting interval `I` (unix time). For the period starting
//! at `T`, authorities vote at `T − 3I/4`, fetch each other's votes until `T − I/2`, when the
//! exchange closes; compare what each holds until `T − I/4`; compute and sign the consensus
//! at `T − I/4`, collect signatures until `T + I/2`, and serve it from `T`. Its valid-after is
//! `T`, fresh-until `T + I`, valid-until `T + 3I`. Times here are unix milliseconds unless a
//! name says seconds.

use crate::compute::Period;

/// The schedule of one network, from its voting interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    interval_ms: u64,
}

impl Schedule {
    /// The schedule for a voting interval of `interval_secs` (at least 1).
    pub fn new(interval_secs: u64) -> Self {
        Schedule {
            interval_ms: interval_secs.max(1).saturating_mul(1000),
        }
    }

    /// The voting interval in seconds.
    pub fn interval_secs(&self) -> u64 {
        self.interval_ms / 1000
    }

    /// The first period (start, seconds) whose consensus is still to be computed at `now_ms`:
    /// the smallest multiple `T` of `I` with `compute_at(T) > now_ms`.
    pub fn next_period(&self, now_ms: u64) -> u64 {
        let i = self.interval_ms;
        // compute_at(T) = T − I/4 > now  ⇔  T > now + I/4.
        let t_ms = (now_ms + i / 4) / i * i + i;
        t_ms / 1000
    }

    /// When to vote for the period starting at `t` seconds.
    pub fn vote_at(&self, t: u64) -> u64 {
        (t * 1000).saturating_sub(self.interval_ms * 3 / 4)
    }

    /// When the vote exchange for period `t` closes and the comparison of views begins.
    pub fn freeze_at(&self, t: u64) -> u64 {
        (t * 1000).saturating_sub(self.interval_ms / 2)
    }

    /// When to stop fetching votes and compute the consensus for period `t`.
    pub fn compute_at(&self, t: u64) -> u64 {
        (t * 1000).saturating_sub(self.interval_ms / 4)
    }

    /// When to stop collecting signatures for period `t`.
    pub fn signatures_until(&self, t: u64) -> u64 {
        t * 1000 + self.interval_ms / 2
    }

    /// The validity times of the consensus for period `t`.
    pub fn period(&self, t: u64) -> Period {
        let i = self.interval_secs();
        Period {
            valid_after: t,
            fresh_until: t + i,
            valid_until: t + 3 * i,
        }
    }

    /// Whether `t` (seconds) can start a period at all.
    pub fn is_period_start(&self, t: u64) -> bool {
        (t * 1000).is_multiple_of(self.interval_ms)
    }
}

/// The time now, unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time now, unix seconds.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// Sleeps until the unix-millisecond time `at` (returns at once if it has passed).
pub async fn sleep_until_ms(at: u64) {
    let now = now_ms();
    if at > now {
        tokio::time::sleep(std::time::Duration::from_millis(at - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_one_period() {
        let s = Schedule::new(3600);
        let t = 7200;
        assert_eq!(s.vote_at(t), 7_200_000 - 2_700_000);
        assert_eq!(s.freeze_at(t), 7_200_000 - 1_800_000);
        assert_eq!(s.compute_at(t), 7_200_000 - 900_000);
        assert_eq!(s.signatures_until(t), 7_200_000 + 1_800_000);
        let p = s.period(t);
        assert_eq!(
            (p.valid_after, p.fresh_until, p.valid_until),
            (7200, 10800, 18000)
        );
        assert!(s.is_period_start(7200) && !s.is_period_start(7201));
    }

    #[test]
    fn next_period_leaves_time_to_compute() {
        let s = Schedule::new(4);
        // At 0 ms the period at 0 has passed its compute time (−1 s); next is 4.
        assert_eq!(s.next_period(0), 4);
        // Just before compute time of period 4 (3000 ms), it is still 4.
        assert_eq!(s.next_period(2999), 4);
        // At or after compute time, the next one.
        assert_eq!(s.next_period(3000), 8);
        assert_eq!(s.next_period(5000), 8);
        for now in (0..20_000).step_by(7) {
            let t = s.next_period(now);
            assert!(s.is_period_start(t));
            assert!(s.compute_at(t) > now);
            assert!(s.compute_at(t) <= now + 4000);
        }
    }
}
