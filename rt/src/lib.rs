//! Runtime facilities shared by every Shallot crate that does I/O, each written once:
//!
//! * [`clock`]: the wall clock in the protocol's units (whole seconds since the Unix epoch),
//!   behind a trait so that managers can be tested with a fake clock;
//! * [`sync`]: a mutex lock that survives a panicked holder;
//! * [`task`]: a spawned task that is aborted when its owner drops it;
//! * [`dirlock`]: one process per data directory;
//! * [`priority`]: threads whose work can wait give way to those forwarding cells;
//! * [`process`]: whether another process has ended;
//! * [`scratch`]: directories for tests, kept from piling up.
//!
//! It sits at the bottom of the layering beside `crypto` and `proto`, and depends on tokio
//! and (for thread priorities, on Linux) rustix.

#![forbid(unsafe_code)]

pub mod clock;
pub mod dirlock;
pub mod priority;
pub mod process;
pub mod scratch;
pub mod sync;
pub mod task;

pub use clock::{unix_now, FakeClock, SystemClock, WallClock};
pub use dirlock::{DirLock, DirLockError};
pub use sync::lock;
pub use task::AbortOnDrop;
