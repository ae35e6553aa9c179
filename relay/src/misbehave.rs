//! Test-only misbehaviour: a relay that attacks the clients whose circuits pass through it or
//! end at it, so that end-to-end tests can show what honest clients do about it
//! (`docs/spec.md` §9.3: only the last hop speaks for a mailbox; every wait has a deadline).
//! Compiled only with the `misbehave` feature, which no production build enables: the root
//! package turns it on for its tests alone, and nothing but a test calls
//! [`RelayHandle::set_misbehaviour`](crate::RelayHandle::set_misbehaviour).

use std::sync::atomic::{AtomicU8, Ordering};

/// How a relay misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// As a hop before the last one: once the circuit reaches past it to the last hop, it
    /// drops every cell the client sends onward (mailbox requests among them) and answers
    /// each with a forged RESULT(Ok) under its own layer, numbered 1, 2, … as a client numbers
    /// its requests, to make a dropped deposit look stored.
    ForgeResults,
    /// As the last hop: never sends SENDME, so the client's window to it runs out and its
    /// next send waits for good. Everything else it does honestly.
    WithholdSendme,
    /// As the last hop: drops every mailbox request and answers none.
    NeverAnswer,
    /// As a directory cache: serves the newest consensus with one relay's entry changed and
    /// the authorities' signatures kept.
    DirForged,
    /// As a directory cache: serves the oldest consensus it keeps, whole.
    DirStale,
    /// As a directory cache: announces the whole answer, sends half of it, and stops.
    DirTruncated,
    /// As a directory cache: announces an answer of 4 GiB.
    DirOversized,
    /// As a directory cache: answers that it has nothing.
    DirWithheld,
}

impl Misbehaviour {
    fn code(this: Option<Misbehaviour>) -> u8 {
        match this {
            None => 0,
            Some(Misbehaviour::ForgeResults) => 1,
            Some(Misbehaviour::WithholdSendme) => 2,
            Some(Misbehaviour::NeverAnswer) => 3,
            Some(Misbehaviour::DirForged) => 4,
            Some(Misbehaviour::DirStale) => 5,
            Some(Misbehaviour::DirTruncated) => 6,
            Some(Misbehaviour::DirOversized) => 7,
            Some(Misbehaviour::DirWithheld) => 8,
        }
    }

    fn from_code(code: u8) -> Option<Misbehaviour> {
        match code {
            1 => Some(Misbehaviour::ForgeResults),
            2 => Some(Misbehaviour::WithholdSendme),
            3 => Some(Misbehaviour::NeverAnswer),
            4 => Some(Misbehaviour::DirForged),
            5 => Some(Misbehaviour::DirStale),
            6 => Some(Misbehaviour::DirTruncated),
            7 => Some(Misbehaviour::DirOversized),
            8 => Some(Misbehaviour::DirWithheld),
            _ => None,
        }
    }
}

/// The relay-wide setting, which a test may change while the relay runs; each circuit reads
/// it at every input.
#[derive(Debug, Default)]
pub(crate) struct Switch(AtomicU8);

impl Switch {
    /// Misbehaves as `how` from now on (`None`: behaves again).
    pub(crate) fn set(&self, how: Option<Misbehaviour>) {
        self.0.store(Misbehaviour::code(how), Ordering::Relaxed);
    }

    /// How it misbehaves now.
    pub(crate) fn get(&self) -> Option<Misbehaviour> {
        Misbehaviour::from_code(self.0.load(Ordering::Relaxed))
    }
}

/// What a misbehaving hop remembers of one circuit.
#[derive(Debug, Default)]
pub(crate) struct Forger {
    /// How the relay misbehaved at the latest input.
    pub(crate) how: Option<Misbehaviour>,
    /// RELAY cells that came back from the next hop (each EXTENDED of a later hop is one).
    from_next: u32,
    /// The request id the next forged answer carries.
    forged: u32,
}

impl Forger {
    /// A RELAY cell came back from the next hop.
    pub(crate) fn saw_cell_from_next(&mut self) {
        self.from_next = self.from_next.saturating_add(1);
    }

    /// Whether the circuit reaches its last hop, for a hop with `between` hops between it
    /// and the last: it does once each of them has sent its EXTENDED back.
    pub(crate) fn circuit_complete(&self, between: u8) -> bool {
        self.from_next >= u32::from(between)
    }

    /// The request id to forge an answer for next: 1, 2, …
    pub(crate) fn next_req(&mut self) -> u32 {
        self.forged = self.forged.wrapping_add(1);
        self.forged
    }
}
