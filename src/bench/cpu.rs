//! CPU time of a thread or a process, from `/proc` (Linux), for per-core rates.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Clock ticks per second in `/proc/*/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The CPU time this whole process (all its threads) has used so far, in nanoseconds' detail
/// (`CLOCK_PROCESS_CPUTIME_ID`); `None` where the clock cannot be read.
pub fn process_cpu() -> Option<Duration> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()?;
    Some(Duration::from(t))
}

/// User plus system CPU time recorded in a `/proc/.../stat` file.
pub fn cpu_time(stat: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name (field 2) may hold spaces; fields are counted after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) / TICKS_PER_SEC))
}

/// The `stat` file of the calling thread (`/proc/thread-self` links to `<pid>/task/<tid>`,
/// relative to `/proc`).
pub fn this_thread_stat() -> Option<PathBuf> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    Some(Path::new("/proc").join(link).join("stat"))
}

/// Runs `batch` (which returns the units of work it did) on this thread until it has used at
/// least `cpu` of CPU time, and returns units per CPU-second: the same measure the relay
/// figures use, so that raw limits and relay rates are compared like with like. Falls back to
/// wall-clock time where `/proc` cannot tell.
pub fn per_cpu_second(cpu: Duration, mut batch: impl FnMut() -> u64) -> f64 {
    let stat = this_thread_stat();
    let cpu_now = || stat.as_deref().and_then(cpu_time);
    let (start_cpu, start_wall) = (cpu_now(), std::time::Instant::now());
    let mut units = 0u64;
    loop {
        units += batch();
        let used = match (start_cpu, cpu_now()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => start_wall.elapsed(),
        };
        if used >= cpu {
            return units as f64 / used.as_secs_f64();
        }
    }
}

/// The `stat` files of this process's threads named `name` (as `/proc/self/task/*/comm`
/// gives it, at most 15 bytes).
///
/// A listing of `/proc/self/task` can skip a live thread when others exit during it: with 40
/// threads ending beside it, one listing missed a waiting thread 9 times in 12,000. The
/// directory is read three times and every thread any reading found is kept (none missed in
/// 18,000).
pub fn threads_named(name: &str) -> Vec<PathBuf> {
    let mut found = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            continue;
        };
        found.extend(
            tasks
                .filter_map(|t| t.ok())
                .map(|t| t.path())
                .filter(|t| {
                    std::fs::read_to_string(t.join("comm"))
                        .is_ok_and(|comm| comm.trim_end() == name)
                })
                .map(|t| t.join("stat")),
        );
    }
    found.into_iter().collect()
}

/// CPU time the whole machine has spent busy (every process, every core: all but idle and
/// waiting for I/O), from `/proc/stat`.
pub fn machine_busy() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    machine_busy_from(&text)
}

/// [`machine_busy`] from the text of `/proc/stat`.
fn machine_busy_from(stat: &str) -> Option<Duration> {
    let ticks = machine_ticks(stat)?;
    // All but idle (3) and waiting for I/O (4).
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(Duration::from_secs_f64(busy as f64 / TICKS_PER_SEC))
}

/// The whole machine's CPU time by kind, in clock ticks, from the text of `/proc/stat`:
/// user, nice, system, idle, iowait, irq, softirq, steal (guest time is counted in user
/// already, so the later fields are left out).
pub fn machine_ticks(stat: &str) -> Option<[u64; 8]> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let mut fields = line.split_whitespace().skip(1).map(|f| f.parse().ok());
    let mut ticks = [0u64; 8];
    for t in &mut ticks {
        *t = fields.next()??;
    }
    Some(ticks)
}

/// The `stat` file of process `pid`.
pub fn process_stat(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/stat"))
}

/// Resident memory of process `pid`, bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_threads_cpu_time() {
        let stat = this_thread_stat().unwrap();
        let before = cpu_time(&stat).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = cpu_time(&stat).unwrap() - before;
        assert!(used >= Duration::from_millis(100), "{used:?}");
        assert!(resident_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn reads_the_eight_cpu_fields_of_proc_stat() {
        let stat = "cpu  100 5 50 1000 40 3 2 9 7 0\ncpu0 50 2 25 500 20 1 1 0 0 0\n";
        assert_eq!(machine_ticks(stat), Some([100, 5, 50, 1000, 40, 3, 2, 9]));
        assert_eq!(machine_ticks("cpu  1 2 3\n"), None);
        assert_eq!(machine_ticks("cpu  1 2 3 4 5 6 7 x\n"), None);
        assert_eq!(machine_ticks("intr 5\n"), None);
    }

    #[test]
    fn machine_busy_time_leaves_out_idle_and_io_wait() {
        let stat = "cpu  100 5 50 1000 40 3 2 0 7 0\ncpu0 50 2 25 500 20 1 1 0 0 0\n";
        // 100 + 5 + 50 + 3 + 2 + 0 ticks.
        assert_eq!(machine_busy_from(stat), Some(Duration::from_millis(1600)));
        assert_eq!(machine_busy_from("cpu0 1 2 3\n"), None);
        assert!(machine_busy().is_some());
    }

    #[test]
    fn finds_threads_by_name() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("bench-cpu-probe".into())
            .spawn(move || {
                // The thread names itself as it starts: look only once it runs.
                let _ = started_tx.send(());
                let _ = rx.recv();
            })
            .unwrap();
        started.recv().unwrap();
        let found = threads_named("bench-cpu-probe");
        assert_eq!(found.len(), 1);
        assert!(cpu_time(&found[0]).is_some());
        assert!(threads_named("no-such-thread").is_empty());
        drop(tx);
        t.join().unwrap();
    }
}
