//! Scratch directories of benchmark runs (`README.md`, "Performance"): each run's test
//! networks live under `<temp>/shallot-bench-<pid>-<random>`, which the run removes when it
//! ends. A run killed part-way cannot, and its directory (tens of megabytes: stores, keys,
//! logs) would stay for good, so each run first removes those of runs that have ended.
//!
//! Whether a run has ended is told by a lock, not by its process id (which names nothing in
//! another PID namespace or on another host sharing the directory): a run holds a lock on the
//! `.lock` file of its directory from before the directory takes its name until the process
//! exits, and the kernel lets the lock go however the process ends. Only this user's
//! directories of exactly that name are touched, and only in a temp directory no other user
//! could have put them in: owned by this user or root, and sticky or writable by its owner
//! alone.

use std::fs::{DirBuilder, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::BenchError;

/// What a scratch directory's name begins with; `<pid>-<random>` follows, both decimal.
const PREFIX: &str = "shallot-bench-";

/// The lock file in each scratch directory.
const LOCK: &str = ".lock";

/// The locks on this process's scratch directories, held until it exits.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A new scratch directory in `temp`, private to this user (mode 0700) and locked for as long
/// as this process lives; those left in `temp` by runs that ended are removed first.
pub fn create(temp: &Path) -> Result<PathBuf, BenchError> {
    let name = format!("{PREFIX}{}-{}", std::process::id(), rand::random::<u32>());
    // Made and locked under a name the clean-up does not take, then renamed: under its own
    // name it is locked from the start, so no run beside this one takes it for abandoned.
    let staging = temp.join(format!(".{name}"));
    let dir = temp.join(&name);
    let mut builder = DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    // Not recursive: a directory already there (made by someone else) is refused.
    builder.create(&staging).map_err(BenchError::other)?;
    let lock = File::create(staging.join(LOCK)).map_err(BenchError::other)?;
    // Where the file system keeps no locks this fails, and so does every run's attempt to
    // take another's: nothing is removed there, and the run goes on.
    let _ = lock.try_lock();
    std::fs::rename(&staging, &dir).map_err(BenchError::other)?;
    shallot_rt::lock(&HELD).push(lock);
    remove_abandoned(temp, &dir);
    Ok(dir)
}

/// Whether `name` is a scratch directory's: the prefix, then two decimal numbers joined by
/// `-`, and nothing else.
fn is_scratch_name(name: &str) -> bool {
    let number = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok()
    };
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(pid, tag)| number(pid) && number(tag))
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
        if path == mine || !entry.file_name().to_str().is_some_and(is_scratch_name) {
            continue;
        }
        // The entry itself, not what a symbolic link points to.
        if !entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me) {
            continue;
        }
        // No lock file: not made by a run that locks (or not ours to judge): left alone.
        let Ok(lock) = File::open(path.join(LOCK)) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => eprintln!(
                "removed {}, which a benchmark run that did not end cleanly left",
                path.display()
            ),
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

    /// A directory of scratch form under `temp`, with a lock file unless `locked` is `None`;
    /// with `Some(true)`, the returned file holds its lock.
    fn left(temp: &Path, name: &str, locked: Option<bool>) -> (PathBuf, Option<File>) {
        let dir = temp.join(name);
        std::fs::create_dir_all(dir.join("net")).unwrap();
        let lock = locked.map(|held| {
            let f = File::create(dir.join(LOCK)).unwrap();
            if held {
                f.try_lock().unwrap();
            }
            f
        });
        (dir, lock)
    }

    #[test]
    fn only_unlocked_scratch_directories_of_runs_that_ended_are_removed() {
        let temp = shallot_rt::scratch::path("bench-scratch");
        std::fs::create_dir_all(&temp).unwrap();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o700)).unwrap();
        let (ended, _) = left(&temp, "shallot-bench-4000000000-7", Some(false));
        // Held by a running benchmark (here, this test's own open file).
        let (running, _held) = left(&temp, "shallot-bench-4000000001-8", Some(true));
        let (unlocked, _) = left(&temp, "shallot-bench-4000000002-9", None);
        let (kept, _) = left(&temp, "shallot-bench-1234-baseline", Some(false));
        let (plus, _) = left(&temp, "shallot-bench-+12-3", Some(false));
        let file = temp.join("shallot-bench-4000000003-1");
        std::fs::write(&file, b"not a directory").unwrap();

        let mine = create(&temp).unwrap();
        assert!(mine.join(LOCK).exists(), "the new directory has its lock");
        assert!(!ended.exists(), "an ended run's directory stayed");
        for stays in [&running, &unlocked, &kept, &plus, &file] {
            assert!(stays.exists(), "{} went", stays.display());
        }
        // The new one is held: a second run does not take it for abandoned.
        let again = create(&temp).unwrap();
        assert!(mine.exists() && again.exists());
        assert_eq!(
            std::fs::metadata(&mine).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn nothing_is_removed_where_other_users_may_rename_entries() {
        let temp = shallot_rt::scratch::path("bench-scratch-open");
        std::fs::create_dir_all(&temp).unwrap();
        let (ended, _) = left(&temp, "shallot-bench-4000000000-7", Some(false));
        // Writable by everyone, not sticky.
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o777)).unwrap();
        create(&temp).unwrap();
        assert!(
            ended.exists(),
            "removed where others could have renamed it in"
        );
        // Sticky, as /tmp is: others can no longer rename what is not theirs.
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o1777)).unwrap();
        create(&temp).unwrap();
        assert!(!ended.exists());
    }

    #[test]
    fn scratch_names_are_exactly_two_numbers() {
        assert!(is_scratch_name("shallot-bench-12-345"));
        for name in [
            "shallot-bench-12",
            "shallot-bench-12-",
            "shallot-bench--3",
            "shallot-bench-+12-3",
            "shallot-bench-12-3-4",
            "shallot-bench-12-keep",
            "shallot-bench-99999999999-1",
            ".shallot-bench-12-3",
        ] {
            assert!(!is_scratch_name(name), "{name}");
        }
    }
}
