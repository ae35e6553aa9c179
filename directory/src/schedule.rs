//! The voting schedule as pure functions of time (`docs/spec.md` §5.6).
//!
//! Periods start at multiples of the voting interval `I` (unix time). For the period starting
//! at `T`, authorities vote at `T − 3I/4`, fetch each other's votes until `T − I/2`, when the
//! exchange closes; compare what each holds until `T − I/4`; compute and sign the consensus
//! at `T − I/4`, collect signatures until `T + I/2`, and serve it from `T`. Its valid-after is
//! `T`, fresh-until `T + I`, valid-until `T + 3I`. Times here are unix milliseconds unless a
//! name says seconds.
//!
//! An authority that starts holding no valid consensus, on a network whose initial voting
//! interval `J` is shorter than `I`, begins with an initial phase ([`Schedule::starting`]):
//! rounds of length `J` (the same fractions of `J`), back to back, from the first multiple of
//! `J` it can still vote for, until the regular schedule's first period `R`, the first
//! multiple of `I` whose vote comes after the second initial round is computed. Each initial
//! consensus is fresh until the next period of the schedule (the next initial one, or `R`
//! after the last) and valid until two regular intervals after that, so that a node holding
//! one never holds an expired consensus while the regular schedule gets going. The phase is
//! a pure function of the intervals and the time the authority starts, so authorities
//! started together vote for the same periods.
//!
//! Clients and relays following the consensus share two rules of when to fetch again
//! ([`brings_nothing_new`], [`failure_backoff`]; §6.7, §11.1).

use crate::compute::Period;

/// The initial phase of a schedule, periods in unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InitialPhase {
    /// The initial interval `J`, seconds.
    interval: u64,
    /// The first initial period.
    first: u64,
    /// The last initial period.
    last: u64,
    /// The first period of the regular schedule.
    regular: u64,
}

impl InitialPhase {
    fn contains(&self, t: u64) -> bool {
        t >= self.first && t <= self.last && (t - self.first).is_multiple_of(self.interval)
    }
}

/// The schedule of one network, from its voting interval (and, for an authority that starts
/// without a consensus, its initial phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    interval_ms: u64,
    initial: Option<InitialPhase>,
}

impl Schedule {
    /// The regular schedule for a voting interval of `interval_secs` (at least 1).
    pub fn new(interval_secs: u64) -> Self {
        Schedule {
            interval_ms: interval_secs.max(1).saturating_mul(1000),
            initial: None,
        }
    }

    /// The schedule of an authority that starts at `now_ms` holding no valid consensus: an
    /// initial phase of rounds of `initial_secs` (which divides `interval_secs`), then the
    /// regular schedule. Without a shorter initial interval, the regular schedule.
    pub fn starting(interval_secs: u64, initial_secs: u64, now_ms: u64) -> Self {
        let mut s = Schedule::new(interval_secs);
        let i = s.interval_ms;
        let j = initial_secs.max(1).saturating_mul(1000);
        if j >= i {
            return s;
        }
        // The first multiple of J whose vote (T − 3J/4) is not yet past.
        let first = (now_ms + j * 3 / 4).div_ceil(j) * j;
        // The first multiple of I whose vote (R − 3I/4) comes no earlier than the compute
        // time of the second initial round ((first + J) − J/4).
        let second_computed = first + j - j / 4;
        let regular = (second_computed + i * 3 / 4).div_ceil(i) * i;
        // The last multiple of J computed (T − J/4) no later than the regular vote.
        let last = (regular - i * 3 / 4 + j / 4) / j * j;
        s.initial = Some(InitialPhase {
            interval: j / 1000,
            first: first / 1000,
            last: last / 1000,
            regular: regular / 1000,
        });
        s
    }

    /// The regular voting interval in seconds.
    pub fn interval_secs(&self) -> u64 {
        self.interval_ms / 1000
    }

    /// The initial phase, if any: its first period and the regular schedule's first period
    /// (seconds).
    pub fn initial_phase(&self) -> Option<(u64, u64)> {
        self.initial.map(|p| (p.first, p.regular))
    }

    /// Whether `t` is a period of the initial phase.
    pub fn is_initial(&self, t: u64) -> bool {
        self.initial.is_some_and(|p| p.contains(t))
    }

    /// The length of the round for period `t`, milliseconds: the initial interval in the
    /// initial phase, the voting interval otherwise.
    pub fn round_ms(&self, t: u64) -> u64 {
        match self.initial {
            Some(p) if p.contains(t) => p.interval * 1000,
            _ => self.interval_ms,
        }
    }

    /// The first period (start, seconds) whose consensus is still to be computed at `now_ms`:
    /// the first period `T` of the schedule with `compute_at(T) > now_ms`.
    pub fn next_period(&self, now_ms: u64) -> u64 {
        let i = self.interval_ms;
        // compute_at(T) = T − I/4 > now  ⇔  T > now + I/4.
        let regular = ((now_ms + i / 4) / i * i + i) / 1000;
        let Some(p) = self.initial else {
            return regular;
        };
        let j = p.interval * 1000;
        let t = ((now_ms + j / 4) / j * j + j).max(p.first * 1000) / 1000;
        if t <= p.last {
            t
        } else {
            regular.max(p.regular)
        }
    }

    /// The period after period `t`.
    pub fn after(&self, t: u64) -> u64 {
        match self.initial {
            Some(p) if p.contains(t) && t + p.interval <= p.last => t + p.interval,
            Some(p) if p.contains(t) => p.regular,
            _ => t + self.interval_secs(),
        }
    }

    /// The period before period `t` (whose consensus the shared random values of `t`'s
    /// continue from, `docs/spec.md` §5.10).
    pub fn previous(&self, t: u64) -> u64 {
        match self.initial {
            Some(p) if p.contains(t) => t.saturating_sub(p.interval),
            Some(p) if t == p.regular => p.last,
            _ => t.saturating_sub(self.interval_secs()),
        }
    }

    /// When to vote for the period starting at `t` seconds.
    pub fn vote_at(&self, t: u64) -> u64 {
        (t * 1000).saturating_sub(self.round_ms(t) * 3 / 4)
    }

    /// When the vote exchange for period `t` closes and the comparison of views begins.
    pub fn freeze_at(&self, t: u64) -> u64 {
        (t * 1000).saturating_sub(self.round_ms(t) / 2)
    }

    /// When to stop fetching votes and compute the consensus for period `t`.
    pub fn compute_at(&self, t: u64) -> u64 {
        (t * 1000).saturating_sub(self.round_ms(t) / 4)
    }

    /// When to stop collecting signatures for period `t`.
    pub fn signatures_until(&self, t: u64) -> u64 {
        t * 1000 + self.round_ms(t) / 2
    }

    /// The validity times of the consensus for period `t`: fresh until the next period, valid
    /// for two voting intervals more.
    pub fn period(&self, t: u64) -> Period {
        let fresh_until = self.after(t);
        Period {
            valid_after: t,
            fresh_until,
            valid_until: fresh_until + 2 * self.interval_secs(),
        }
    }

    /// Whether `t` (seconds) can start a period at all: an initial period, or a multiple of
    /// the voting interval outside the initial phase.
    pub fn is_period_start(&self, t: u64) -> bool {
        if self.is_initial(t) {
            return true;
        }
        (t * 1000).is_multiple_of(self.interval_ms)
            && self.initial.is_none_or(|p| t < p.first || t >= p.regular)
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

/// Whether a consensus just fetched brings nothing new to its holder: it is no newer than the
/// one held (`held_valid_after`), and no longer fresh at `now_secs`. Authorities serve the
/// previous consensus while too few have signed the next (§5.6), which can last until the
/// previous one expires; a fetcher that counts this answer as a success and asks again each
/// second meanwhile floods them, so it counts as a failure for [`failure_backoff`].
pub fn brings_nothing_new(
    fetched: &shallot_proto::dir::Consensus,
    held_valid_after: Option<u64>,
    now_secs: u64,
) -> bool {
    now_secs >= fetched.fresh_until && held_valid_after.is_some_and(|h| fetched.valid_after <= h)
}

/// The wait before the next fetch after `failures` consecutive failed ones: `2^min(f, cap)`
/// seconds (1 s with none, 2 s after one, doubling up to `2^cap`).
pub fn failure_backoff(failures: u32, cap: u32) -> std::time::Duration {
    std::time::Duration::from_secs(1 << failures.min(cap).min(63))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_the_wait_up_to_the_cap() {
        let waits: Vec<u64> = (0..9).map(|f| failure_backoff(f, 5).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 32, 32, 32]);
        assert_eq!(failure_backoff(u32::MAX, 6).as_secs(), 64);
    }

    #[test]
    fn only_the_held_consensus_or_an_older_one_once_stale_is_nothing_new() {
        let c = crate::test_consensus::signed(7200, vec![], &[]);
        let fresh_until = c.fresh_until;
        // Held, or older than the one held, once no longer fresh: nothing new.
        assert!(brings_nothing_new(&c, Some(7200), fresh_until));
        assert!(brings_nothing_new(&c, Some(10_800), fresh_until + 5));
        // Still fresh: the next one is not due, so getting this one again is no failure.
        assert!(!brings_nothing_new(&c, Some(7200), fresh_until - 1));
        // Newer than the one held, or none held: news.
        assert!(!brings_nothing_new(&c, Some(3600), fresh_until));
        assert!(!brings_nothing_new(&c, None, fresh_until));
    }

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

    /// The initial phase of a 3-s network with 1-s initial rounds, started at 0 ms: rounds
    /// for 1, 2, 3 and 4 s, then the regular schedule from 6 s; validity bridges the gap.
    #[test]
    fn initial_phase_of_a_three_second_network() {
        let s = Schedule::starting(3, 1, 0);
        assert_eq!(s.initial_phase(), Some((1, 6)));
        assert_eq!(s.next_period(0), 1);
        let mut t = s.next_period(0);
        let mut walked = vec![t];
        for _ in 0..6 {
            t = s.after(t);
            walked.push(t);
        }
        assert_eq!(walked, [1, 2, 3, 4, 6, 9, 12]);
        assert_eq!(
            (s.vote_at(1), s.freeze_at(1), s.compute_at(1)),
            (250, 500, 750)
        );
        assert_eq!(s.signatures_until(1), 1500);
        assert_eq!((s.vote_at(6), s.compute_at(6)), (3750, 5250));
        let times = |t| {
            let p = s.period(t);
            (p.valid_after, p.fresh_until, p.valid_until)
        };
        assert_eq!(times(1), (1, 2, 8));
        // The last initial consensus is fresh until the regular schedule's first period.
        assert_eq!(times(4), (4, 6, 12));
        assert_eq!(times(6), (6, 9, 15));
        assert_eq!((s.previous(6), s.previous(4), s.previous(9)), (4, 3, 6));
        assert!(s.is_period_start(3) && s.is_period_start(4) && s.is_period_start(9));
        assert!(!s.is_period_start(5) && !s.is_period_start(7));
        // Authorities started within the same part of a second get the same schedule.
        assert_eq!(Schedule::starting(3, 1, 249), s);
        assert_ne!(Schedule::starting(3, 1, 251), s);
    }

    #[test]
    fn no_initial_phase_without_a_shorter_initial_interval() {
        for now in [0, 1234, 999_999] {
            assert_eq!(Schedule::starting(3, 3, now), Schedule::new(3));
            assert_eq!(Schedule::starting(60, 120, now), Schedule::new(60));
        }
        assert_eq!(Schedule::new(3).initial_phase(), None);
    }

    /// For any start and pair of intervals: rounds never overlap, the first vote is not in
    /// the past, at least two initial rounds come before the regular schedule, which starts
    /// on a multiple of the voting interval, and every consensus is fresh until the next
    /// period and still valid when the third period after it is served.
    #[test]
    fn initial_phase_properties() {
        for (i, j) in [(3, 1), (2, 1), (10, 1), (10, 5), (60, 20), (3600, 600)] {
            for now in (0..40 * i * 1000).step_by(usize::try_from(37 * i).unwrap()) {
                let s = Schedule::starting(i, j, now);
                let (first, regular) = s.initial_phase().unwrap();
                assert_eq!(s.next_period(now), first);
                assert!(s.vote_at(first) >= now && s.vote_at(first) < now + j * 1000);
                assert!(regular.is_multiple_of(i) && s.is_period_start(regular));
                assert!(!s.is_initial(regular));
                let mut t = first;
                let mut initial_rounds = 0;
                while t <= regular + 3 * i {
                    let next = s.after(t);
                    assert!(s.is_period_start(t), "{i} {j} {now} {t}");
                    assert!(next > t);
                    assert!(s.compute_at(t) <= s.vote_at(next), "{i} {j} {now} {t}");
                    assert_eq!(s.previous(next), t);
                    assert_eq!(s.next_period(s.compute_at(t)), next);
                    let p = s.period(t);
                    assert_eq!(p.fresh_until, next);
                    assert!(p.valid_until >= s.after(s.after(next)), "{i} {j} {now} {t}");
                    if s.is_initial(t) {
                        assert_eq!(s.round_ms(t), j * 1000);
                        initial_rounds += 1;
                    } else {
                        assert_eq!(t, regular.max(t));
                        assert_eq!(s.round_ms(t), i * 1000);
                        assert_eq!((p.fresh_until, p.valid_until), (t + i, t + 3 * i));
                    }
                    t = next;
                }
                assert!(initial_rounds >= 2, "{i} {j} {now}");
            }
        }
    }
}
