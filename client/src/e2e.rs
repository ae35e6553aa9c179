//! End-to-end messaging (`docs/spec.md` §10): what envelopes carry, and the sessions that seal
//! and open them.

pub mod session;
pub mod wire;
