//! Scratch directories of benchmark runs (`README.md`, "Performance"): each run's test
//! networks live under `<temp>/shallot-bench-<pid>-<random>`, which the run removes when it
//! ends. A run killed part-way cannot, and its directory (tens of megabytes: stores, keys,
//! logs) would stay for good, so each run first removes those of runs that have ended.
//!
//! Whether a run has ended is told by a lock on its directory (`shallot_rt::dirlock`, the
//! data directories' flock, which the kernel lets go however the process ends), and by its
//! process id where `/proc` shows it (`shallot_rt::process`): a directory is taken for
//! abandoned only when no process holds its lock and no process of its id runs here. The
//! lock keeps a run in another PID namespace (a container sharing the temp directory) from
//! losing its directory; the process id, a run of a build from before the lock. A run locks
//! its directory before the directory takes its name, and where the file system keeps no
//! locks it keeps a name the clean-up ignores. Only this user's directories of exactly that
//! name are touched, and only in a temp directory no other user could have renamed them
//! into: owned by this user or root, and sticky or writable by its owner alone.

use std::fs::DirBuilder;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use shallot_rt::dirlock::DirLock;

use super::BenchError;

/// What a scratch directory's name begins with; `<pid>-<random>` follows, both decimal.
const PREFIX: &str = "shallot-bench-";

/// The locks on this process's scratch directories, held until it exits.
static HELD: Mutex<Vec<DirLock>> = Mutex::new(Vec::new());

/// A new scratch directory in `temp`, private to this user (mode 0700) and locked for as long
/// as this process lives; those left in `temp` by runs that ended are removed first.
pub fn create(temp: &Path) -> Result<PathBuf, BenchError> {
    let name = format!("{PREFIX}{}-{}", std::process::id(), rand::random::<u32>());
    // Made and locked under a name the clean-up does not take, then renamed: under its own
    // name it is locked from the start, so no run beside this one takes it for abandoned.
    let staging = temp.join(format!(".{name}"));
    let mut builder = DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    // Not recursive: a directory already there (made by someone else) is refused.
    builder.create(&staging).map_err(BenchError::other)?;
    let Ok(lock) = DirLock::acquire(&staging) else {
        // No lock (a file system that keeps none): the run keeps the name nothing removes.
        return Ok(staging);
    };
    let dir = temp.join(&name);
    if let Err(e) = std::fs::rename(&staging, &dir) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(BenchError::other(e));
    }
    shallot_rt::lock(&HELD).push(lock);
    remove_abandoned(temp, &dir);
    Ok(dir)
}

/// Whether `name` is a scratch directory's: the prefix, then two decimal numbers joined by
/// `-`, and nothing else; the first, the process id.
fn scratch_pid(name: &str) -> Option<u32> {
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (pid, tag) = name.strip_prefix(PREFIX)?.split_once('-')?;
    number(tag)?;
    number(pid)
}

/// Removes from `temp` the scratch directories no running benchmark holds, this user's only
/// (`mine`, this run's own, says who that is), saying on stderr what it removed.
#[cfg(unix)]
fn remove_abandoned(temp: &Path, mine: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata(mine).map(|m| m.uid()) else {
        return;
    };
    let Ok(place) = std::fs::metadata(temp) else {
        return;
    };
    let sticky = place.mode() & 0o1000 != 0;
    let others_write = place.mode() & 0o022 != 0;
    if !(place.uid() == me || place.uid() == 0) || (others_write && !sticky) {
        // Others could rename their directories (or ours) into such a name here.
        return;
    }
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pid) = entry.file_name().to_str().and_then(scratch_pid) else {
            continue;
        };
        // The entry itself, not what a symbolic link points to.
        if path == mine || !entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me) {
            continue;
        }
        // A process of that id here: perhaps its run, of a build that locks nothing.
        if shallot_rt::process::has_ended(pid) == Some(false) {
            continue;
        }
        // Held by a running benchmark, or not to be had: left alone. (A directory whose lock
        // file went in a partial removal gets a new one here, and goes.)
        if DirLock::acquire(&path).is_err() {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => eprintln!(
                "removed {}, which a benchmark run that did not end cleanly left",
                path.display()
            ),
            // Another run's clean-up beside this one was first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "could not remove {}, left by a benchmark run: {e}",
                path.display()
            ),
        }
    }
}

#[cfg(not(unix))]
fn remove_abandoned(_temp: &Path, _mine: &Path) {}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory of scratch form under `temp`, unlocked; with `hold`, the returned lock is
    /// held as a running benchmark would hold it.
    fn left(temp: &Path, name: &str, hold: bool) -> (PathBuf, Option<DirLock>) {
        let dir = temp.join(name);
        std::fs::create_dir_all(dir.join("net")).unwrap();
        let lock = hold.then(|| DirLock::acquire(&dir).unwrap());
        (dir, lock)
    }

    /// A temp directory for one test, with `mode`.
    fn temp(name: &str, mode: u32) -> PathBuf {
        let temp = shallot_rt::scratch::path(name);
        std::fs::create_dir_all(&temp).unwrap();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode)).unwrap();
        temp
    }

    #[test]
    fn only_unlocked_scratch_directories_of_runs_that_ended_are_removed() {
        let temp = temp("bench-scratch", 0o700);
        // No process has these ids (Linux's stop far below).
        let (ended, _) = left(&temp, "shallot-bench-4000000000-7", false);
        // Held by a running benchmark (here, this test's own open directory).
        let (held, _lock) = left(&temp, "shallot-bench-4000000001-8", true);
        // Unlocked, but a process of its id runs: a run of a build that locks nothing.
        let (running, _) = left(
            &temp,
            &format!("shallot-bench-{}-9", std::process::id()),
            false,
        );
        let (kept, _) = left(&temp, "shallot-bench-1234-baseline", false);
        let (plus, _) = left(&temp, "shallot-bench-+12-3", false);
        let file = temp.join("shallot-bench-4000000003-1");
        std::fs::write(&file, b"not a directory").unwrap();
        // A link in the temp directory to an abandoned-looking directory elsewhere.
        let elsewhere = temp.join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("data")).unwrap();
        let link = temp.join("shallot-bench-4000000004-2");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();

        let mine = create(&temp).unwrap();
        assert!(!ended.exists(), "an ended run's directory stayed");
        for stays in [&held, &running, &kept, &plus, &file, &link] {
            assert!(stays.symlink_metadata().is_ok(), "{} went", stays.display());
        }
        assert!(elsewhere.join("data").exists(), "a link was followed");
        // The new one is held: a second run does not take it for abandoned.
        let again = create(&temp).unwrap();
        assert!(mine.exists() && again.exists());
        assert_eq!(
            std::fs::metadata(&mine).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(scratch_pid(&mine.file_name().unwrap().to_string_lossy()).is_some());
    }

    #[test]
    fn nothing_is_removed_where_other_users_may_rename_entries() {
        for (n, mode) in [0o777, 0o770, 0o707].into_iter().enumerate() {
            let temp = temp(&format!("bench-scratch-open-{n}"), 0o700);
            let (ended, _) = left(&temp, "shallot-bench-4000000000-7", false);
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode)).unwrap();
            create(&temp).unwrap();
            assert!(ended.exists(), "removed in a directory of mode {mode:o}");
            // Sticky, as /tmp is: others can no longer rename what is not theirs.
            std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o1000 | mode))
                .unwrap();
            create(&temp).unwrap();
            assert!(
                !ended.exists(),
                "kept in a sticky directory of mode {mode:o}"
            );
        }
    }

    #[test]
    fn scratch_names_are_exactly_two_numbers() {
        assert_eq!(scratch_pid("shallot-bench-12-345"), Some(12));
        for name in [
            "shallot-bench-12",
            "shallot-bench-12-",
            "shallot-bench--3",
            "shallot-bench-+12-3",
            "shallot-bench-12-+3",
            "shallot-bench-12-3-4",
            "shallot-bench-12-keep",
            "shallot-bench-99999999999-1",
            ".shallot-bench-12-3",
        ] {
            assert_eq!(scratch_pid(name), None, "{name}");
        }
    }
}
