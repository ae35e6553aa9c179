//! How long this machine keeps a ready thread waiting, measured beside a latency figure as
//! its raw limit (`README.md`, "Performance"): a thread that sleeps 1 ms at a time and
//! records how late it wakes, and the share of the machine's CPU time the host took from this
//! virtual machine meanwhile ("steal", from `/proc/stat`, Linux). The lateness includes the
//! kernel's timer slack (50 µs by default), so its median is not zero on an idle machine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cpu::machine_ticks;
use super::{quantile, BenchError};

/// How long the probe thread asks to sleep each time.
const NAP: Duration = Duration::from_millis(1);

/// Index of steal time among [`machine_ticks`]'s fields.
const STEAL: usize = 7;

/// What the probe saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wakes {
    /// Lateness of the probe's wake-ups: p50, p99 and the largest.
    pub late: [Duration; 3],
    /// Wake-ups counted: 0 if the probe was stopped before its first nap ended (the
    /// lateness is then reported as zero).
    pub count: usize,
    /// The share of the machine's CPU time the host took meanwhile (0 to 1), if known.
    pub steal: Option<f64>,
}

impl Wakes {
    /// Sums up the lateness of each wake-up and the machine's CPU ticks (as
    /// [`machine_ticks`] reads them) before and after; no steal share if either reading is
    /// missing or no tick passed.
    fn summarize(
        mut late: Vec<Duration>,
        before: Option<[u64; 8]>,
        after: Option<[u64; 8]>,
    ) -> Wakes {
        let steal = match (before, after) {
            (Some(a), Some(b)) => {
                let total = b.iter().sum::<u64>().saturating_sub(a.iter().sum());
                let stolen = b[STEAL].saturating_sub(a[STEAL]);
                (total > 0).then(|| stolen as f64 / total as f64)
            }
            _ => None,
        };
        Wakes {
            count: late.len(),
            late: [0.5, 0.99, 1.0].map(|q| quantile(&mut late, q)),
            steal,
        }
    }

    /// "a thread sleeping 1 ms at a time beside them woke late by p50 …, p99 …, at most … ms
    /// (… wake-ups); the host took about … % of this machine's CPU time meanwhile (steal)".
    /// The steal share is given to whole per cent: `/proc/stat` counts 10-ms ticks.
    pub fn describe(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let steal = match self.steal {
            Some(s) => format!(
                "; the host took about {:.0} % of this machine's CPU time meanwhile (steal)",
                s * 100.0
            ),
            None => String::new(),
        };
        format!(
            "a thread sleeping {} ms at a time beside them woke late by p50 {:.3}, p99 {:.3}, at most {:.3} ms ({} wake-ups){steal}",
            NAP.as_secs_f64() * 1e3,
            ms(self.late[0]),
            ms(self.late[1]),
            ms(self.late[2]),
            self.count
        )
    }
}

/// A running probe; [`WakeProbe::finish`] stops it and reports, and dropping it stops it too
/// (a figure that fails half-way leaves no thread behind).
pub struct WakeProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Duration>>>,
    before: Option<[u64; 8]>,
}

/// `/proc/stat` now, if it can be read.
fn ticks_now() -> Option<[u64; 8]> {
    machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

impl WakeProbe {
    /// Starts the probe thread.
    pub fn start() -> Result<WakeProbe, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let before = ticks_now();
        let thread = std::thread::Builder::new()
            .name("bench-wake-probe".into())
            .spawn(move || {
                let mut late = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    std::thread::sleep(NAP);
                    late.push(asked.elapsed().saturating_sub(NAP));
                }
                late
            })
            .map_err(BenchError::other)?;
        Ok(WakeProbe {
            stop,
            thread: Some(thread),
            before,
        })
    }

    /// Stops the probe and reports what it saw.
    pub async fn finish(mut self) -> Result<Wakes, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        let after = ticks_now();
        let late = match self.thread.take() {
            Some(thread) => tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(BenchError::other)?
                .map_err(|_| BenchError::other("the wake-up probe thread panicked"))?,
            None => Vec::new(),
        };
        Ok(Wakes::summarize(late, self.before, after))
    }
}

impl Drop for WakeProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn summarizes_lateness_and_the_hosts_share() {
        let late: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let before = [100, 0, 100, 700, 0, 0, 0, 100];
        // 200 ticks pass, 50 of them stolen.
        let after = [150, 0, 150, 750, 0, 0, 0, 150];
        let w = Wakes::summarize(late, Some(before), Some(after));
        assert_eq!(w.count, 100);
        // p50 of 1..=100 ms: the value at index round(99 × 0.5) = 50.
        assert_eq!(w.late, [ms(51), ms(99), ms(100)]);
        assert_eq!(w.steal, Some(0.25));
        let text = w.describe();
        assert!(
            text.contains("p99 99.000, at most 100.000 ms (100 wake-ups)"),
            "{text}"
        );
        assert!(text.contains("about 25 %"), "{text}");
    }

    #[test]
    fn no_steal_share_without_two_readings_or_a_tick_between_them() {
        let t = [1, 0, 1, 10, 0, 0, 0, 0];
        for (before, after) in [(None, Some(t)), (Some(t), None), (Some(t), Some(t))] {
            let w = Wakes::summarize(vec![ms(1)], before, after);
            assert_eq!(w.steal, None);
            assert!(!w.describe().contains("host"), "{}", w.describe());
        }
    }

    #[tokio::test]
    async fn a_dropped_probe_stops_its_thread() {
        let probe = WakeProbe::start().unwrap();
        let stop = probe.stop.clone();
        drop(probe);
        // The thread holds the other reference to the flag until it returns.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&stop) > 1 {
            assert!(Instant::now() < deadline, "the probe thread still runs");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn finishing_a_probe_stops_and_joins_its_thread() {
        let probe = WakeProbe::start().unwrap();
        let stop = probe.stop.clone();
        let wakes = probe.finish().await.unwrap();
        // Joined: the thread's reference to the flag is gone the moment `finish` returns.
        assert_eq!(Arc::strong_count(&stop), 1);
        assert!(wakes.late[0] <= wakes.late[1] && wakes.late[1] <= wakes.late[2]);
    }
}
