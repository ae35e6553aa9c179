//! One process per data directory: an exclusive lock on `DIR/lock` (as tor's
//! `DataDirectory/lock`), held for as long as the process runs. A second `shallot` on the
//! same directory (two chats, a chat and `shallot send`, two relays or two authorities) would
//! otherwise share keys and state: two clients would split a user's incoming messages and could
//! seal two messages under one ratchet key; a second relay would replace the live one in the
//! consensus.
//!
//! The lock is the operating system's advisory file lock (`flock`), so it is released when
//! the process exits however it exits; the file itself stays and carries the holder's pid for
//! the error message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "lock";

/// Why a data directory could not be locked.
#[derive(Debug, Error)]
pub enum DirLockError {
    /// Another process holds it.
    #[error(
        "{dir} is in use by another shallot process{holder}; stop it first, or give this one \
         another --data-dir"
    )]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// " (pid N)", if the holder wrote its pid.
        holder: String,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive hold on a data directory, released when dropped or when the process ends.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir` (which must exist) for this process, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, DirLockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| DirLockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text
                    .trim()
                    .parse::<u32>()
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(DirLockError::InUse {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Ours now: record who holds it, for the next one's error message.
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = crate::scratch::path(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| unreachable!("{e}"));
        dir
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = scratch("dirlock");
        let first = DirLock::acquire(&dir).unwrap_or_else(|e| unreachable!("{e}"));
        // flock locks belong to the open file, so a second open in this process conflicts
        // just as another process would.
        match DirLock::acquire(&dir) {
            Err(DirLockError::InUse { holder, .. }) => {
                assert_eq!(holder, format!(" (pid {})", std::process::id()))
            }
            other => unreachable!("expected InUse, got {other:?}"),
        }
        drop(first);
        assert!(DirLock::acquire(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
