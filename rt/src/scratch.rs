//! Scratch directories for tests: every directory a test process asks for lies under one
//! directory of that process, `<temp>/shallot-tests-<uid>/<test binary>/<pid>` (the user's id
//! where `/proc` gives it, so that users of one machine do not share it). The first time a
//! process asks, it removes those of earlier processes of the same binary that have ended, so
//! a run's stores, keys and logs stay for a look after it, until the next run, instead of
//! piling up in the temp directory run after run (a whole test run makes a few hundred).
//! Processes that run beside each other (as a test runner that starts one per test does)
//! keep apart.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's directory of scratch directories.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        // The binary's name carries a hash of its crate, build and source path, so two
        // checkouts or two test binaries of one crate do not share a directory.
        let binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".into());
        let binary = tests_dir().join(binary);
        remove_ended(&binary);
        let root = binary.join(std::process::id().to_string());
        // Made here, so that a test may make its own directory without its parents; should
        // it fail, so will the test's, saying where.
        let _ = std::fs::create_dir_all(&root);
        root
    })
}

/// `<temp>/shallot-tests-<uid>`, or `<temp>/shallot-tests` where the user's id is not known.
fn tests_dir() -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(me) = std::fs::metadata("/proc/self") {
            return std::env::temp_dir().join(format!("shallot-tests-{}", me.uid()));
        }
    }
    std::env::temp_dir().join("shallot-tests")
}

/// Removes the directories under `binary` of processes that have ended, where the system
/// says which are running (`/proc`).
fn remove_ended(binary: &Path) {
    let Ok(entries) = std::fs::read_dir(binary) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ended = name
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| {
                pid != std::process::id() && crate::process::has_ended(pid) == Some(true)
            });
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A new path for a test's file or directory, in this process's directory (which exists):
/// `<name>-<random>`.
pub fn path(name: &str) -> PathBuf {
    root().join(format!("{name}-{:016x}", random()))
}

/// A number unlikely to repeat within a process or across processes, without a random
/// number generator (this crate has none): the time, the process and a counter, mixed.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_new_and_under_this_process_directory() {
        let (a, b) = (path("x"), path("x"));
        assert_ne!(a, b);
        assert!(!a.exists() && !b.exists());
        assert!(root().is_dir());
        assert_eq!(a.parent(), Some(root()));
        assert_eq!(b.parent(), Some(root()));
        assert!(root().ends_with(std::process::id().to_string()));
    }

    #[test]
    fn directories_of_ended_processes_are_removed_and_running_ones_kept() {
        let binary = tests_dir().join(format!("scratch-test-{:016x}", random()));
        // No process has pid u32::MAX - 1 (Linux caps pids at 2^22).
        let (ended, running, other) = (
            binary.join((u32::MAX - 1).to_string()),
            binary.join(std::process::id().to_string()),
            binary.join("not-a-pid"),
        );
        for d in [&ended, &running, &other] {
            let _ = std::fs::create_dir_all(d.join("inside"));
        }
        remove_ended(&binary);
        if Path::new("/proc/self").exists() {
            assert!(!ended.exists(), "an ended process's directory was kept");
        }
        assert!(
            running.exists(),
            "a running process's directory was removed"
        );
        assert!(
            other.exists(),
            "a directory not named by a process was removed"
        );
        let _ = std::fs::remove_dir_all(&binary);
    }
}
