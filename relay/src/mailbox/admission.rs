//! What a mailbox request costs before a relay acts on it (`docs/spec.md` §9.7): per-circuit
//! limits on requests in flight and their rate, rate limits on deposits into one mailbox, on
//! new mailbox ids and on bundle puts, and the adaptive client puzzle a relay asks for when
//! those limits are reached.
//!
//! Pure bookkeeping: the caller supplies the time, checks signatures and computes puzzle
//! digests ([`shallot_proto::pow`]) outside the lock that guards this state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shallot_proto::mailbox::MailboxId;
use shallot_proto::pow::Pow;

use super::auth::{ReplayCache, FRESHNESS_SECS};

/// A token bucket: `rate` tokens a second, holding at most `burst`, full when made.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Whether a token is there at `now` (taking none).
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.has_token(now) {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether it has refilled completely by `now` (and so is no different from a new one).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Limits on one circuit's mailbox requests.
#[derive(Debug, Clone, Copy)]
pub struct CircuitLimits {
    /// Requests being handled at once for one circuit.
    pub in_flight: usize,
    /// Requests a second, sustained.
    pub rate: f64,
    /// Requests in a burst.
    pub burst: f64,
}

impl Default for CircuitLimits {
    fn default() -> Self {
        CircuitLimits {
            in_flight: 32,
            rate: 20.0,
            burst: 100.0,
        }
    }
}

/// One circuit's mailbox requests: how many are being handled, and its rate bucket.
#[derive(Debug)]
pub struct CircuitQuota {
    in_flight: usize,
    bucket: TokenBucket,
}

impl CircuitQuota {
    /// A circuit's quota, starting with a full bucket.
    pub fn new(limits: &CircuitLimits, now: Instant) -> Self {
        CircuitQuota {
            in_flight: 0,
            bucket: TokenBucket::new(limits.rate, limits.burst, now),
        }
    }

    /// Takes a place for one more request if the circuit has fewer than `limits.in_flight`
    /// being handled and a token left; the caller calls [`CircuitQuota::done`] when it ends.
    pub fn start(&mut self, limits: &CircuitLimits, now: Instant) -> bool {
        if self.in_flight >= limits.in_flight || !self.bucket.try_take(now) {
            return false;
        }
        self.in_flight += 1;
        true
    }

    /// A request started by [`CircuitQuota::start`] has ended.
    pub fn done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Rate limits on what fills a relay's store, and its puzzle.
#[derive(Debug, Clone)]
pub struct AdmissionLimits {
    /// Deposits a second relay-wide, sustained, and in a burst.
    pub deposits: (f64, f64),
    /// Deposits a second into one mailbox, sustained, and in a burst.
    pub mailbox_deposits: (f64, f64),
    /// Mailbox ids not seen recently, a second relay-wide, sustained, and in a burst.
    pub new_mailboxes: (f64, f64),
    /// Bundle puts a second relay-wide, sustained, and in a burst.
    pub bundle_puts: (f64, f64),
    /// Mailboxes whose buckets are remembered at most.
    pub tracked_mailboxes: usize,
    /// The easiest puzzle asked for, in bits.
    pub min_difficulty: u8,
    /// The hardest.
    pub max_difficulty: u8,
    /// How often the difficulty is adjusted.
    pub period: Duration,
    /// Requests admitted by solutions per period beyond which the difficulty rises.
    pub solved_per_period: u32,
    /// Solutions remembered against replay.
    pub replay_cache: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        AdmissionLimits {
            deposits: (200.0, 2000.0),
            mailbox_deposits: (0.2, 100.0),
            new_mailboxes: (20.0, 500.0),
            bundle_puts: (20.0, 500.0),
            tracked_mailboxes: 200_000,
            min_difficulty: 12,
            max_difficulty: 22,
            period: Duration::from_secs(10),
            solved_per_period: 200,
            replay_cache: 100_000,
        }
    }
}

/// What is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A deposit.
    Deposit,
    /// A bundle put.
    PutBundle,
}

/// Why a request is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Over a rate limit: solve a puzzle of this many bits.
    #[error("over the rate limit: a puzzle of {0} bits is asked for")]
    Puzzle(u8),
    /// A solution below the difficulty asked for now.
    #[error("puzzle solution too easy: {0} bits are asked for")]
    TooEasy(u8),
    /// A solution stamped too far from the relay's clock.
    #[error("puzzle solution too old or from the future")]
    Stale,
    /// A solution already used.
    #[error("puzzle solution replayed")]
    Replayed,
}

/// The relay-wide admission state.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    deposits: TokenBucket,
    new_mailboxes: TokenBucket,
    bundle_puts: TokenBucket,
    mailboxes: HashMap<MailboxId, TokenBucket>,
    /// When full buckets were last forgotten (at most once a second: each time scans them all).
    pruned: Option<Instant>,
    difficulty: u8,
    period_start: Instant,
    /// Requests admitted by a solution in this period.
    solved: u32,
    /// Requests refused for a puzzle in this period.
    asked: u32,
    seen: ReplayCache,
}

impl Admission {
    /// Fresh state: every bucket full, the easiest puzzle.
    pub fn new(limits: AdmissionLimits, now: Instant) -> Self {
        let bucket = |(rate, burst): (f64, f64)| TokenBucket::new(rate, burst, now);
        Admission {
            deposits: bucket(limits.deposits),
            new_mailboxes: bucket(limits.new_mailboxes),
            bundle_puts: bucket(limits.bundle_puts),
            mailboxes: HashMap::new(),
            pruned: None,
            difficulty: limits.min_difficulty,
            period_start: now,
            solved: 0,
            asked: 0,
            seen: ReplayCache::new(limits.replay_cache),
            limits,
        }
    }

    /// The puzzle asked for now, in bits.
    pub fn difficulty(&mut self, now: Instant) -> u8 {
        self.adjust(now);
        self.difficulty
    }

    /// Adjusts the difficulty once per elapsed period: up when solutions admitted more than
    /// `solved_per_period` (by a bit per doubling beyond it, so a solving flood halves its
    /// rate with each bit), down a bit per period in which nobody was asked for a puzzle.
    fn adjust(&mut self, now: Instant) {
        let period = self.limits.period.max(Duration::from_millis(1));
        while now.saturating_duration_since(self.period_start) >= period {
            let target = self.limits.solved_per_period.max(1);
            if self.solved > target {
                let doublings = (self.solved / target).ilog2() + 1;
                let up = u8::try_from(doublings).unwrap_or(u8::MAX);
                self.difficulty = self
                    .difficulty
                    .saturating_add(up)
                    .min(self.limits.max_difficulty);
            } else if self.asked == 0 && self.solved <= target / 2 {
                self.difficulty = self
                    .difficulty
                    .saturating_sub(1)
                    .max(self.limits.min_difficulty);
            }
            self.solved = 0;
            self.asked = 0;
            self.period_start += period;
            if self.difficulty == self.limits.min_difficulty {
                // Nothing left to lower: skip the idle periods at once.
                let behind = now.saturating_duration_since(self.period_start);
                let whole = behind.as_nanos() / period.as_nanos().max(1);
                self.period_start += period * u32::try_from(whole).unwrap_or(u32::MAX);
            }
        }
    }

    /// Admits a request without a solution if every limit it falls under has room, taking a
    /// token from each; otherwise asks for a puzzle and takes nothing.
    pub fn admit(&mut self, op: Op, mailbox: MailboxId, now: Instant) -> Result<(), Refusal> {
        self.adjust(now);
        let prune_due = self
            .pruned
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if self.mailboxes.len() >= self.limits.tracked_mailboxes
            && !self.mailboxes.contains_key(&mailbox)
            && prune_due
        {
            // Buckets that have refilled say nothing a new one would not.
            self.mailboxes.retain(|_, b| !b.is_full(now));
            self.pruned = Some(now);
        }
        let known = self.mailboxes.contains_key(&mailbox);
        let room_for_new = known || self.mailboxes.len() < self.limits.tracked_mailboxes;
        let global = match op {
            Op::Deposit => &mut self.deposits,
            Op::PutBundle => &mut self.bundle_puts,
        };
        let mut ok = room_for_new && global.has_token(now);
        if ok && !known {
            ok = self.new_mailboxes.has_token(now);
        }
        let (rate, burst) = self.limits.mailbox_deposits;
        let mut own = self
            .mailboxes
            .get(&mailbox)
            .cloned()
            .unwrap_or_else(|| TokenBucket::new(rate, burst, now));
        ok = ok && own.has_token(now);
        if !ok {
            self.asked = self.asked.saturating_add(1);
            return Err(Refusal::Puzzle(self.difficulty));
        }
        let global = match op {
            Op::Deposit => &mut self.deposits,
            Op::PutBundle => &mut self.bundle_puts,
        };
        global.try_take(now);
        if !known {
            self.new_mailboxes.try_take(now);
        }
        own.try_take(now);
        self.mailboxes.insert(mailbox, own);
        Ok(())
    }

    /// Admits a request carrying solution `pow`, whose digest shows `effort` bits, if the
    /// effort meets the difficulty asked for now, it is fresh at `unix` (the relay's clock,
    /// within the freshness of owner requests) and it was never used before. A solution
    /// admits the request whatever the rate limits say; it is remembered until it is stale.
    pub fn admit_solved(
        &mut self,
        mailbox: MailboxId,
        pow: &Pow,
        effort: u32,
        unix: u64,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.adjust(now);
        if effort < u32::from(self.difficulty) {
            return Err(Refusal::TooEasy(self.difficulty));
        }
        if pow.timestamp.abs_diff(unix) > FRESHNESS_SECS {
            return Err(Refusal::Stale);
        }
        let until = pow.timestamp.saturating_add(FRESHNESS_SECS + 1);
        if !self.seen.insert(mailbox, pow.nonce, until, unix) {
            return Err(Refusal::Replayed);
        }
        self.solved = self.solved.saturating_add(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::RelayId;
    use shallot_proto::mailbox::kind;
    use shallot_proto::pow;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            deposits: (10.0, 20.0),
            mailbox_deposits: (1.0, 3.0),
            new_mailboxes: (2.0, 5.0),
            bundle_puts: (1.0, 2.0),
            tracked_mailboxes: 8,
            min_difficulty: 4,
            max_difficulty: 16,
            period: Duration::from_secs(1),
            solved_per_period: 4,
            replay_cache: 100,
        }
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        assert!(b.is_full(t0));
        for _ in 0..3 {
            assert!(b.try_take(t0));
        }
        assert!(!b.try_take(t0), "burst spent");
        assert!(!b.try_take(t0 + Duration::from_millis(400)));
        assert!(
            b.try_take(t0 + Duration::from_millis(500)),
            "refills at the rate"
        );
        assert!(!b.is_full(t0 + Duration::from_millis(600)));
        // It never holds more than its burst, however long it waits.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.is_full(later));
        for _ in 0..3 {
            assert!(b.try_take(later));
        }
        assert!(!b.try_take(later));
        // A clock read that goes backwards takes nothing and adds nothing.
        assert!(!b.try_take(t0));
    }

    #[test]
    fn a_circuit_is_limited_in_flight_and_in_rate() {
        let t0 = Instant::now();
        let limits = CircuitLimits {
            in_flight: 2,
            rate: 1.0,
            burst: 4.0,
        };
        let mut q = CircuitQuota::new(&limits, t0);
        assert!(q.start(&limits, t0));
        assert!(q.start(&limits, t0));
        assert!(!q.start(&limits, t0), "two in flight");
        q.done();
        assert!(q.start(&limits, t0));
        q.done();
        q.done();
        assert!(q.start(&limits, t0), "fourth of the burst");
        q.done();
        assert!(!q.start(&limits, t0), "burst spent, none in flight");
        assert_eq!(q.in_flight(), 0);
        assert!(q.start(&limits, t0 + Duration::from_secs(1)));
    }

    #[test]
    fn deposits_into_one_mailbox_are_limited_then_ask_for_a_puzzle() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(), t0);
        let m = MailboxId([1; 32]);
        for _ in 0..3 {
            a.admit(Op::Deposit, m, t0).unwrap();
        }
        assert_eq!(a.admit(Op::Deposit, m, t0), Err(Refusal::Puzzle(4)));
        // Another mailbox is not held up by this one.
        a.admit(Op::Deposit, MailboxId([2; 32]), t0).unwrap();
        // One a second again.
        a.admit(Op::Deposit, m, t0 + Duration::from_secs(1))
            .unwrap();
    }

    #[test]
    fn new_mailbox_ids_and_bundle_puts_are_limited_relay_wide() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(), t0);
        for i in 0..5 {
            a.admit(Op::Deposit, MailboxId([i; 32]), t0).unwrap();
        }
        let refused = a.admit(Op::Deposit, MailboxId([99; 32]), t0);
        assert_eq!(refused, Err(Refusal::Puzzle(4)), "sixth new id");
        // A known mailbox still takes deposits.
        a.admit(Op::Deposit, MailboxId([0; 32]), t0).unwrap();
        // Bundle puts have their own relay-wide bucket (known mailboxes: no new-id token).
        a.admit(Op::PutBundle, MailboxId([1; 32]), t0).unwrap();
        a.admit(Op::PutBundle, MailboxId([2; 32]), t0).unwrap();
        assert_eq!(
            a.admit(Op::PutBundle, MailboxId([3; 32]), t0),
            Err(Refusal::Puzzle(4))
        );
        // The table of mailboxes stays bounded: once full of buckets in use, a new id waits
        // for a puzzle even when the new-id bucket has refilled.
        let t1 = t0 + Duration::from_millis(10);
        let slow = AdmissionLimits {
            mailbox_deposits: (0.001, 3.0),
            ..limits()
        };
        let mut b = Admission::new(slow, t1);
        for i in 0..8 {
            let t = t1 + Duration::from_secs(u64::from(i));
            b.admit(Op::Deposit, MailboxId([i; 32]), t).unwrap();
            b.admit(Op::Deposit, MailboxId([i; 32]), t).unwrap();
            b.admit(Op::Deposit, MailboxId([i; 32]), t).unwrap();
        }
        let t = t1 + Duration::from_secs(7);
        assert!(b.mailboxes.len() <= 8);
        assert_eq!(
            b.admit(Op::Deposit, MailboxId([200; 32]), t),
            Err(Refusal::Puzzle(4))
        );
        // Long after, their buckets have refilled and are forgotten to make room.
        let much_later = t + Duration::from_secs(3600);
        b.admit(Op::Deposit, MailboxId([200; 32]), much_later)
            .unwrap();
        assert!(b.mailboxes.len() <= 8);
    }

    fn solved(relay: &RelayId, m: &MailboxId, bits: u8, ts: u64, salt: u8) -> (Pow, u32) {
        let p = pow::solve(relay, kind::DEPOSIT, &m.0, b"env", bits, ts, [salt; 8]);
        let e = pow::effort(&pow::digest(relay, kind::DEPOSIT, &m.0, b"env", &p));
        (p, e)
    }

    #[test]
    fn a_solution_must_meet_the_difficulty_be_fresh_and_be_new() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(), t0);
        let (relay, m) = (RelayId([1; 20]), MailboxId([7; 32]));
        let (p, effort) = solved(&relay, &m, 4, 1000, 1);
        a.admit_solved(m, &p, effort, 1000, t0).unwrap();
        assert_eq!(
            a.admit_solved(m, &p, effort, 1001, t0),
            Err(Refusal::Replayed)
        );
        let (p2, e2) = solved(&relay, &m, 4, 1000, 2);
        assert_eq!(
            a.admit_solved(m, &p2, e2, 1000 + FRESHNESS_SECS + 1, t0),
            Err(Refusal::Stale)
        );
        // A bad solution: its digest shows less than the difficulty.
        assert_eq!(
            a.admit_solved(m, &p2, 3, 1000, t0),
            Err(Refusal::TooEasy(4))
        );
        a.admit_solved(m, &p2, e2, 1000, t0).unwrap();
    }

    #[test]
    fn difficulty_rises_under_a_solving_flood_and_falls_back_when_it_ends() {
        let t0 = Instant::now();
        let mut a = Admission::new(limits(), t0);
        let m = MailboxId([3; 32]);
        let mut n = 0u32;
        let mut flood = |a: &mut Admission, t: Instant, count: u32| {
            for _ in 0..count {
                n += 1;
                let mut nonce = [0; 16];
                nonce[..4].copy_from_slice(&n.to_be_bytes());
                let pow = Pow {
                    timestamp: 1000,
                    nonce,
                };
                let _ = a.admit_solved(m, &pow, 64, 1000, t);
            }
        };
        assert_eq!(a.difficulty(t0), 4);
        // 20 solved in a period whose target is 4: up by ilog2(5) + 1 = 3 bits.
        flood(&mut a, t0, 20);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(a.difficulty(t1), 7);
        flood(&mut a, t1, 9);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(a.difficulty(t2), 9, "9 solved: up 2");
        // It never passes the maximum.
        let mut t = t2;
        for _ in 0..10 {
            flood(&mut a, t, 100);
            t += Duration::from_secs(1);
        }
        assert_eq!(a.difficulty(t), 16);
        // Quiet periods bring it down a bit each, to the minimum and no further.
        t += Duration::from_secs(5);
        assert_eq!(a.difficulty(t), 11);
        t += Duration::from_secs(60);
        assert_eq!(a.difficulty(t), 4);
        // A period in which clients were asked for puzzles holds it where it is.
        let mut b = Admission::new(limits(), t0);
        flood(&mut b, t0, 20);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.difficulty(t1), 7);
        for _ in 0..10 {
            let _ = b.admit(Op::PutBundle, m, t1);
        }
        assert_eq!(b.difficulty(t1 + Duration::from_secs(1)), 7);
        assert_eq!(b.difficulty(t1 + Duration::from_secs(2)), 6);
    }
}
