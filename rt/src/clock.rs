//! The wall clock in the protocol's units: whole seconds since the Unix epoch, as directory
//! documents, mailbox requests and stored messages carry them (`docs/spec.md` §2).
//!
//! Code that only needs the time calls [`unix_now`]; code whose behaviour over time is worth
//! testing (retransmission, expiry, guard retention) takes a [`WallClock`], and its tests give
//! it a [`FakeClock`] they move by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch now; 0 if the system clock is set before 1970.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A source of the current time in seconds since the Unix epoch.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch now.
    fn unix_now(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn unix_now(&self) -> u64 {
        unix_now()
    }
}

/// A clock that stands still until told to move, for tests.
#[derive(Debug, Default)]
pub struct FakeClock(AtomicU64);

impl FakeClock {
    /// A clock reading `now`.
    pub fn new(now: u64) -> Self {
        FakeClock(AtomicU64::new(now))
    }

    /// Sets the time to `now`.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }

    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl WallClock for FakeClock {
    fn unix_now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2024() {
        assert!(SystemClock.unix_now() > 1_700_000_000);
    }

    #[test]
    fn fake_clock_moves_only_when_told() {
        let clock = FakeClock::new(100);
        assert_eq!(clock.unix_now(), 100);
        clock.advance(5);
        assert_eq!(clock.unix_now(), 105);
        clock.set(7);
        assert_eq!(clock.unix_now(), 7);
    }
}
