//! Counting what a link's buffers hold (`docs/spec.md` §6.6): each link's [`BufferMeter`]
//! knows the bytes of buffer capacity its reader and its writer hold now, and since when each
//! direction has held them without moving a record; a [`BufferTotal`] sums them over every
//! link that counts in it. A relay gives each of its links a meter counting in one relay-wide
//! total, and closes the links stalled longest when the total passes its cap. A client's
//! meters ([`BufferMeter::default`]) count in no total.
//!
//! The reader and writer report every change of capacity before they next wait, so what a
//! link holds while a peer stalls it (a record trickling in, a peer that does not read) is
//! always counted. Pure bookkeeping: nothing here allocates a buffer or touches a socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Bytes of link buffers held, summed over every link counting in it, and the cap beyond
/// which their owner wants to hear about it.
#[derive(Debug)]
pub struct BufferTotal {
    bytes: AtomicUsize,
    cap: usize,
    over: Notify,
}

impl BufferTotal {
    /// A total that signals [`BufferTotal::over_cap`] whenever a link's buffers grow while it
    /// is above `cap` bytes.
    pub fn new(cap: usize) -> Self {
        BufferTotal {
            bytes: AtomicUsize::new(0),
            cap,
            over: Notify::new(),
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The cap it was made with.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether more than the cap is held.
    pub fn is_over(&self) -> bool {
        self.bytes() > self.cap
    }

    /// Waits until a link's buffers grow while the total is over its cap (a growth that
    /// happened while nobody waited is remembered once).
    pub async fn over_cap(&self) {
        self.over.notified().await
    }

    fn grow(&self, n: usize) {
        let now = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if now > self.cap {
            self.over.notify_one();
        }
    }

    fn shrink(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

/// One direction of a link: bytes held, and since when without progress.
#[derive(Debug, Default, Clone, Copy)]
struct Direction {
    held: usize,
    since: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    read: Direction,
    write: Direction,
    /// The link's bytes have left the total for good (its owner dropped it).
    detached: bool,
}

/// Which half of a link reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Half {
    Read,
    Write,
}

/// What one link's buffers hold, shared by its owner and its two halves.
#[derive(Debug, Default)]
pub struct BufferMeter {
    total: Option<Arc<BufferTotal>>,
    state: Mutex<State>,
}

impl BufferMeter {
    /// A meter whose bytes count in `total`.
    pub fn counted(total: Arc<BufferTotal>) -> Self {
        BufferMeter {
            total: Some(total),
            state: Mutex::default(),
        }
    }

    /// Bytes of buffer the link holds now, both directions.
    pub fn held(&self) -> usize {
        let s = shallot_rt::lock(&self.state);
        s.read.held + s.write.held
    }

    /// When the longest stall among the directions holding buffers began: the later of when
    /// that direction took its buffers and when it last moved a whole record. `None` when the
    /// link holds no buffer.
    pub fn stalled_since(&self) -> Option<Instant> {
        let s = shallot_rt::lock(&self.state);
        [s.read, s.write]
            .iter()
            .filter(|d| d.held > 0)
            .filter_map(|d| d.since)
            .min()
    }

    /// Takes the link's bytes out of the total for good, as its owner gives it up (the link
    /// is closing, and its buffers are freed as its loops stop); later reports change only
    /// the link's own figures.
    pub fn detach(&self) {
        let mut s = shallot_rt::lock(&self.state);
        if !s.detached {
            s.detached = true;
            if let Some(total) = &self.total {
                total.shrink(s.read.held + s.write.held);
            }
        }
    }

    /// `half` now holds `bytes` of buffer capacity.
    pub(crate) fn set(&self, half: Half, bytes: usize, now: Instant) {
        let mut s = shallot_rt::lock(&self.state);
        let detached = s.detached;
        let d = match half {
            Half::Read => &mut s.read,
            Half::Write => &mut s.write,
        };
        let old = std::mem::replace(&mut d.held, bytes);
        if old == 0 && bytes > 0 {
            d.since = Some(now);
        }
        if let (Some(total), false) = (&self.total, detached) {
            if bytes > old {
                total.grow(bytes - old);
            } else {
                total.shrink(old - bytes);
            }
        }
    }

    /// `half` moved a whole record at `now`.
    pub(crate) fn progress(&self, half: Half, now: Instant) {
        let mut s = shallot_rt::lock(&self.state);
        match half {
            Half::Read => s.read.since = Some(now),
            Half::Write => s.write.since = Some(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn links_count_in_their_total_until_detached() {
        let total = Arc::new(BufferTotal::new(100));
        let (a, b) = (
            BufferMeter::counted(total.clone()),
            BufferMeter::counted(total.clone()),
        );
        let t0 = Instant::now();
        a.set(Half::Read, 60, t0);
        a.set(Half::Write, 30, t0);
        b.set(Half::Read, 5, t0);
        assert_eq!((total.bytes(), a.held(), b.held()), (95, 90, 5));
        assert!(!total.is_over());
        b.set(Half::Read, 20, t0);
        assert!(total.is_over());
        a.set(Half::Read, 10, t0);
        assert_eq!(total.bytes(), 60);
        a.detach();
        assert_eq!(total.bytes(), 20);
        // A detached link's halves still report as they free, without touching the total.
        a.set(Half::Write, 0, t0);
        a.detach();
        assert_eq!((total.bytes(), a.held()), (20, 10));
        // A client's meter counts nowhere.
        let c = BufferMeter::default();
        c.set(Half::Read, 1000, t0);
        assert_eq!((c.held(), total.bytes()), (1000, 20));
    }

    #[tokio::test]
    async fn growth_over_the_cap_is_signalled() {
        let total = Arc::new(BufferTotal::new(10));
        let m = BufferMeter::counted(total.clone());
        m.set(Half::Read, 10, Instant::now());
        let waited = tokio::time::timeout(Duration::from_millis(20), total.over_cap()).await;
        assert!(waited.is_err(), "at the cap is not over it");
        m.set(Half::Write, 1, Instant::now());
        tokio::time::timeout(Duration::from_secs(5), total.over_cap())
            .await
            .expect("growth over the cap was not signalled");
    }

    /// A stall starts when a direction takes buffers or last moved a record, whichever is
    /// later; the link's is its oldest direction's that holds buffers.
    #[test]
    fn a_stall_starts_at_the_last_progress_or_when_buffers_were_taken() {
        let m = BufferMeter::default();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        m.progress(Half::Read, at(0));
        assert_eq!(m.stalled_since(), None, "holds nothing");
        // Quiet since 0, then a record starts arriving at 10: stalled since 10, not 0.
        m.set(Half::Read, 4096, at(10));
        assert_eq!(m.stalled_since(), Some(at(10)));
        m.set(Half::Read, 8192, at(11));
        assert_eq!(m.stalled_since(), Some(at(10)), "growing is not progress");
        m.progress(Half::Read, at(12));
        assert_eq!(m.stalled_since(), Some(at(12)));
        // The writer blocks from 13 on while the reader keeps moving records.
        m.set(Half::Write, 65_000, at(13));
        m.progress(Half::Read, at(20));
        assert_eq!(m.stalled_since(), Some(at(13)));
        m.set(Half::Write, 0, at(21));
        assert_eq!(m.stalled_since(), Some(at(20)));
    }
}
