//! Circuits at a relay, pure (`docs/spec.md` §4.3–4.6, §6.3–6.5): what a circuit does with
//! each cell, timer and link event, as a state machine its shell (`crate::shell`) drives.
//!
//! * [`machine`]: [`CircuitMachine`], the circuit's state and its one entry point `handle`;
//! * [`step`]: the [`Input`]s it takes and the [`Action`]s it returns;
//! * [`error`]: why a circuit ends, and the DESTROY reason for each cause;
//! * [`side`]: which neighbour, previous or next.

pub(crate) mod error;
pub(crate) mod machine;
pub(crate) mod side;
pub(crate) mod step;
#[cfg(test)]
mod tests;

pub(crate) use error::{CircuitError, ExtendRefusal, Violation};
pub(crate) use machine::{CircuitMachine, Placement, MAX_CIRCUIT_DEPTH};
pub(crate) use side::Side;
pub(crate) use step::{Action, Count, Input, Teardown};
