//! How long this machine keeps a ready thread waiting, measured beside a latency figure as
//! its raw limit (`README.md`, "Performance"): a thread that sleeps 1 ms at a time and
//! records how late it wakes, and the share of the machine's CPU time the host took from
//! this virtual machine meanwhile ("steal", from `/proc/stat`, Linux).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{quantile, BenchError};

/// How long the probe thread asks to sleep each time.
const NAP: Duration = Duration::from_millis(1);

/// CPU time of the whole machine from `/proc/stat`, in clock ticks: all of it, and the part
/// the host ran something else on this machine's virtual CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MachineTicks {
    total: u64,
    steal: u64,
}

impl MachineTicks {
    /// Now, or `None` where `/proc/stat` cannot tell.
    fn now() -> Option<MachineTicks> {
        Self::from_stat(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// From the text of `/proc/stat`: user nice system idle iowait irq softirq steal (guest
    /// time is counted in user already).
    fn from_stat(stat: &str) -> Option<MachineTicks> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(MachineTicks {
            total: ticks.iter().sum(),
            steal: *ticks.get(7)?,
        })
    }
}

/// What the probe saw.
#[derive(Debug, Clone, Copy)]
pub struct Wakes {
    /// Lateness of the probe's wake-ups: p50, p99 and the largest.
    pub late: [Duration; 3],
    /// Wake-ups counted.
    pub count: usize,
    /// The share of the machine's CPU time the host took meanwhile (0 to 1), if known.
    pub steal: Option<f64>,
}

impl Wakes {
    /// "a thread sleeping 1 ms at a time woke late by p50 …, p99 …, at most … ms; the host
    /// took … % of this machine's CPU time (steal)".
    pub fn describe(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let steal = match self.steal {
            Some(s) => format!(
                "; the host took {:.1} % of this machine's CPU time meanwhile (steal)",
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

/// A running probe; [`WakeProbe::finish`] stops it.
pub struct WakeProbe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Duration>>,
    before: Option<MachineTicks>,
}

impl WakeProbe {
    /// Starts the probe thread.
    pub fn start() -> Result<WakeProbe, BenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let before = MachineTicks::now();
        let thread = std::thread::Builder::new()
            .name("bench-wake-probe".into())
            .spawn(move || {
                let mut late = Vec::new();
                // At least once, so that a probe stopped at once still reports a wake-up.
                loop {
                    let asked = Instant::now();
                    std::thread::sleep(NAP);
                    late.push(asked.elapsed().saturating_sub(NAP));
                    if flag.load(Ordering::Relaxed) {
                        return late;
                    }
                }
            })
            .map_err(BenchError::other)?;
        Ok(WakeProbe {
            stop,
            thread,
            before,
        })
    }

    /// Stops the probe and reports what it saw.
    pub async fn finish(self) -> Result<Wakes, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        let after = MachineTicks::now();
        let thread = self.thread;
        let mut late = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(BenchError::other)?
            .map_err(|_| BenchError::other("the wake-up probe thread panicked"))?;
        let steal = match (self.before, after) {
            (Some(a), Some(b)) if b.total > a.total => {
                Some(b.steal.saturating_sub(a.steal) as f64 / (b.total - a.total) as f64)
            }
            _ => None,
        };
        Ok(Wakes {
            count: late.len(),
            late: [0.5, 0.99, 1.0].map(|q| quantile(&mut late, q)),
            steal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_and_steal_ticks() {
        let stat = "cpu  100 5 50 1000 40 3 2 9 7 0\ncpu0 50 2 25 500 20 1 1 0 0 0\n";
        let t = MachineTicks::from_stat(stat).unwrap();
        assert_eq!(t.steal, 9);
        assert_eq!(t.total, 100 + 5 + 50 + 1000 + 40 + 3 + 2 + 9);
        assert_eq!(MachineTicks::from_stat("cpu  1 2 3\n"), None);
        assert_eq!(MachineTicks::from_stat("intr 5\n"), None);
    }

    #[tokio::test]
    async fn the_probe_reports_its_wake_ups_in_order() {
        let probe = WakeProbe::start().unwrap();
        tokio::task::yield_now().await;
        let wakes = probe.finish().await.unwrap();
        assert!(wakes.count >= 1, "{wakes:?}");
        assert!(wakes.late[0] <= wakes.late[1] && wakes.late[1] <= wakes.late[2]);
        let text = wakes.describe();
        assert!(
            text.contains("sleeping 1 ms") && text.contains("p99"),
            "{text}"
        );
    }
}
