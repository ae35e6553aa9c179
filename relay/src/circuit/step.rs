//! What goes into a circuit and what comes out (`docs/spec.md` §6.3–6.5): the [`Input`]s a
//! circuit's shell feeds it, and the [`Action`]s it returns for the shell to carry out.

use shallot_crypto::keys::RelayId;
use shallot_crypto::ntor::ServerMessage;
use shallot_crypto::onion::Payload;
use shallot_proto::cell::{Create, DestroyReason};
use shallot_proto::mailbox::MailboxMsg;
use shallot_proto::relay_msg::RelayMsg;

use super::error::{CircuitError, ExtendRefusal};
use super::side::Side;

/// Something that happened to a circuit.
#[derive(Debug)]
pub(crate) enum Input {
    /// A RELAY cell from a neighbour.
    Relay(Side, Box<Payload>),
    /// A CREATED cell from a neighbour.
    Created(Side, ServerMessage),
    /// A DESTROY cell from a neighbour.
    Destroy(Side, DestroyReason),
    /// The link to a neighbour closed.
    LinkClosed(Side),
    /// The extend's link is ready and the circuit is recorded on it: send CREATE.
    NextAttached,
    /// The extend could not be carried out.
    ExtendFailed(ExtendRefusal),
    /// Time passed: the extend may have timed out.
    Timer,
    /// A neighbour's queue had no room for a cell of this circuit.
    QueueFull(Side),
    /// A message from this relay to the client (a mailbox answer).
    Reply(RelayMsg),
    /// The relay ends the circuit (out of memory, shutting down).
    Kill(CircuitError),
}

/// Events a relay counts (its `Stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// A cell was delivered to this hop.
    CellDelivered,
    /// The circuit was extended (CREATED arrived).
    Extended,
}

/// A circuit's end, for the shell to carry out: forget it on both links and send DESTROY
/// with `reason` to each neighbour flagged.
#[derive(Debug)]
pub(crate) struct Teardown {
    /// The reason sent.
    pub(crate) reason: DestroyReason,
    /// Whether the previous hop is told.
    pub(crate) tell_prev: bool,
    /// Whether the next hop (if the circuit has one) is told.
    pub(crate) tell_next: bool,
    /// Why.
    pub(crate) cause: CircuitError,
}

/// What the shell must do.
#[derive(Debug)]
pub(crate) enum Action {
    /// Queue this RELAY payload toward that neighbour, in order.
    Relay(Side, Box<Payload>),
    /// Send CREATE on the next hop's link.
    Create(Create),
    /// Find or open a link to this relay, record the circuit there, then feed
    /// [`Input::NextAttached`] (or [`Input::ExtendFailed`]).
    Extend(RelayId),
    /// Hand this request to the mailbox service.
    Mailbox(MailboxMsg),
    /// Hand this DIR_GET (the digest of the client's consensus) to the directory cache.
    Dir(Option<[u8; 32]>),
    /// The send window opened: wake whoever waits to send.
    WindowOpened,
    /// Count an event.
    Count(Count),
    /// The circuit is over.
    Destroyed(Teardown),
}
