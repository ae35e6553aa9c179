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
pub mod scratch;
pub mod soak;
pub mod trace;

use std::path::PathBuf;
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

/// A scratch directory for one benchmark run, in the temp directory (removed when the run
/// ends; those of earlier runs that did not end cleanly are removed first, as
/// [`scratch::create`] says).
pub fn scratch() -> Result<PathBuf, BenchError> {
    scratch::create(&std::env::temp_dir())
}
