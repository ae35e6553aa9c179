//! `shallot bench`: performance figures measured on a local network started for the purpose,
//! each printed beside the raw limit it should be compared with, measured in the same run
//! (`README.md`, "Performance").

pub mod circuits;
pub mod compare;
pub mod cpu;
pub mod deposits;
pub mod many;
pub mod many_plot;
pub mod messaging;
pub mod relay;
pub mod sched;
pub mod soak;
pub mod trace;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// How often each authority of the bench's test networks measures each relay through a
/// circuit: once an hour, as on a production network (where it is the voting interval),
/// rather than every 3-second voting period, which would put on each relay about a thousand
/// times the measurement traffic a production relay carries, beside the figures measured.
pub const PRODUCTION_SCAN_INTERVAL_SECS: u64 = 3600;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// What the figure should be compared with, if anything.
    pub note: String,
}

impl Figure {
    /// A figure with no comparison note.
    pub fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Self {
        Figure {
            name: name.into(),
            value,
            unit,
            note: String::new(),
        }
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }
}

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The test network.
    #[error(transparent)]
    Testnet(#[from] crate::testnet::TestnetError),
    /// Something else, in words.
    #[error("{0}")]
    Other(String),
}

impl BenchError {
    /// Wraps any displayable error.
    pub fn other(e: impl std::fmt::Display) -> Self {
        BenchError::Other(e.to_string())
    }
}

/// Milliseconds of a duration.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value at quantile `q` of `values` (sorted here).
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    values.sort();
    if values.is_empty() {
        return Duration::ZERO;
    }
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i.min(values.len() - 1)]
}

/// How a benchmark run's scratch directory is named: this, its process id, `-`, a random
/// number.
const SCRATCH_PREFIX: &str = "shallot-bench-";

/// A scratch directory for one benchmark run (removed when it ends). Those of earlier runs
/// that never removed theirs, being killed, are removed first.
pub fn scratch() -> Result<PathBuf, BenchError> {
    let temp = std::env::temp_dir();
    remove_abandoned(&temp);
    let dir = temp.join(format!(
        "{SCRATCH_PREFIX}{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    shallot_crypto::keyfile::ensure_private_dir(&dir).map_err(BenchError::other)?;
    Ok(dir)
}

/// Removes from `temp` the scratch directories of benchmark runs whose process has ended,
/// where the system says which are running (`/proc`): only this user's, and only names of
/// [`scratch`]'s form. A relay's test network holds some tens of megabytes; a run killed
/// part-way would otherwise leave its copy behind for good.
fn remove_abandoned(temp: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let proc = Path::new("/proc");
        let Ok(me) = std::fs::metadata(proc.join("self")) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(temp) else {
            return;
        };
        for entry in entries.flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix(SCRATCH_PREFIX))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok());
            let Some(pid) = pid else {
                continue;
            };
            let mine = entry
                .metadata()
                .is_ok_and(|m| m.is_dir() && m.uid() == me.uid());
            if mine && pid != std::process::id() && !proc.join(pid.to_string()).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    #[cfg(not(unix))]
    let _ = temp;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scratch_of_a_run_that_ended_is_removed_and_others_stay() {
        let temp = shallot_rt::scratch::path("bench-scratch");
        std::fs::create_dir_all(&temp).unwrap();
        // No process has this id (Linux's ids stop far below it).
        let ended = temp.join(format!("{SCRATCH_PREFIX}4000000000-7"));
        let running = temp.join(format!("{SCRATCH_PREFIX}{}-8", std::process::id()));
        let other = temp.join("shallot-benchmark-notes");
        let file = temp.join(format!("{SCRATCH_PREFIX}4000000001-9"));
        for dir in [&ended, &running, &other] {
            std::fs::create_dir_all(dir.join("relay1")).unwrap();
        }
        std::fs::write(&file, b"not a directory").unwrap();
        remove_abandoned(&temp);
        if Path::new("/proc/self").exists() {
            assert!(!ended.exists(), "an ended run's scratch stayed");
        }
        assert!(running.join("relay1").exists(), "a running one's went");
        assert!(
            other.exists() && file.exists(),
            "a name of another form went"
        );
    }
}
