//! Why a relay tears a circuit down (`docs/spec.md` §6.5): every cause named, with its source
//! kept, and the DESTROY reason each one sends.

use shallot_crypto::onion::OnionError;
use shallot_link::LinkError;
use shallot_proto::cell::DestroyReason;
use shallot_proto::flow::FlowError;
use shallot_proto::{DecodeError, EncodeError};
use thiserror::Error;

use super::side::Side;

/// A rule of the circuit protocol that a neighbour broke (each destroys the circuit with
/// reason 1, "protocol").
#[derive(Debug, Error)]
pub(crate) enum Violation {
    /// A cell marked for forwarding arrived at the circuit's last hop.
    #[error("a cell to forward arrived with no next hop")]
    ForwardWithoutNextHop,
    /// A cell marked for forwarding arrived before the extend finished.
    #[error("a cell to forward arrived while extending")]
    ForwardWhileExtending,
    /// The next hop sent a relay cell before answering CREATE.
    #[error("the next hop sent a relay cell before CREATED")]
    RelayBeforeCreated,
    /// CREATED arrived from the client's side.
    #[error("CREATED from the previous hop")]
    CreatedFromPrev,
    /// CREATE named an id already in use on the link (that circuit is destroyed).
    #[error("CREATE on a circuit id already in use")]
    CircIdInUse,
    /// CREATED arrived when no CREATE was outstanding.
    #[error("CREATED with no CREATE outstanding")]
    UnexpectedCreated,
    /// A cell body was not a well-formed fragment, or a message grew past its limit.
    #[error("bad fragment")]
    BadFragment(#[source] DecodeError),
    /// A reassembled message did not decode.
    #[error("bad relay message")]
    BadMessage(#[source] DecodeError),
    /// More counted cells arrived than the receive window allowed.
    #[error("the client overran its flow-control window")]
    WindowOverrun,
    /// A flow-control rule broke (an unexpected SENDME, or a window overrun on acknowledging).
    #[error("flow control")]
    Flow(#[from] FlowError),
    /// EXTEND on a circuit that has a next hop or is extending.
    #[error("EXTEND on a circuit already extended or extending")]
    SecondExtend,
    /// EXTENDED travels toward the client only.
    #[error("EXTENDED from the client")]
    ExtendedFromClient,
    /// RESULT, ENVELOPE and BUNDLE travel toward the client only.
    #[error("a mailbox answer from the client")]
    MailboxAnswerFromClient,
    /// DIR_ANSWER and DIR_CHUNK travel toward the client only.
    #[error("a directory answer from the client")]
    DirAnswerFromClient,
}

/// Why an EXTEND was not carried out.
#[derive(Debug, Error)]
pub(crate) enum ExtendRefusal {
    /// This hop is already as deep as circuits go.
    #[error("this hop is at depth {0}, the deepest allowed")]
    TooDeep(u8),
    /// The target is this relay.
    #[error("the target is this relay")]
    ToSelf,
    /// The target is the relay the circuit came from.
    #[error("the target is the previous hop")]
    BackAlongCircuit,
    /// The target is not a Running relay of this relay's consensus.
    #[error("the target is not in the consensus")]
    NotListed,
    /// No link to the target could be opened.
    #[error("no link to the target")]
    Unreachable(#[source] LinkError),
    /// The link to the target has no room for another circuit.
    #[error("no free circuit id on the link to the target")]
    NoFreeId,
}

impl ExtendRefusal {
    /// The DESTROY reason it sends.
    pub(crate) fn destroy_reason(&self) -> DestroyReason {
        match self {
            ExtendRefusal::TooDeep(_) | ExtendRefusal::ToSelf | ExtendRefusal::BackAlongCircuit => {
                DestroyReason::Protocol
            }
            ExtendRefusal::NotListed | ExtendRefusal::Unreachable(_) => {
                DestroyReason::ConnectFailed
            }
            ExtendRefusal::NoFreeId => DestroyReason::ResourceLimit,
        }
    }
}

/// The reason passed on to the other neighbour when one neighbour destroys a circuit: a
/// defined reason as it came, any other byte as [`DestroyReason::None`] (`docs/spec.md` §6.5).
/// Passing unknown bytes on unchanged would give two colluding relays on one circuit, not
/// adjacent, an 8-bit channel through the relays between them.
pub(crate) fn forwarded_reason(reason: DestroyReason) -> DestroyReason {
    match reason {
        DestroyReason::Other(_) => DestroyReason::None,
        defined => defined,
    }
}

/// Why a circuit ended at this relay.
#[derive(Debug, Error)]
pub(crate) enum CircuitError {
    /// A cell from the client's side failed to open under this hop's layer.
    #[error("a cell failed to authenticate at this hop")]
    Tampered(#[source] OnionError),
    /// A neighbour broke the protocol.
    #[error("protocol violation")]
    Violation(#[from] Violation),
    /// An EXTEND was refused or failed.
    #[error("extend refused")]
    Extend(#[from] ExtendRefusal),
    /// The next hop did not answer CREATE in time.
    #[error("no CREATED from the next hop in time")]
    ExtendTimedOut,
    /// A neighbour stopped reading: its queue for this circuit is full.
    #[error("the queue toward the {0} is full")]
    QueueFull(Side),
    /// The out-of-memory handler chose this circuit.
    #[error("chosen by the out-of-memory handler")]
    MemoryPressure,
    /// The relay is shutting down.
    #[error("the relay is shutting down")]
    ShuttingDown,
    /// A neighbour destroyed it.
    #[error("destroyed by the {side}: {reason}")]
    Destroyed {
        /// Who sent DESTROY.
        side: Side,
        /// The reason it gave (passed on only if it is one of the defined reasons, see
        /// [`forwarded_reason`]).
        reason: DestroyReason,
    },
    /// No cell passed on it for the circuit idle timeout.
    #[error("no cell for the circuit idle timeout")]
    Idle,
    /// A link carrying it closed.
    #[error("the link to the {0} closed")]
    LinkClosed(Side),
    /// A message to the client could not be encoded.
    #[error("cannot encode a message to the client")]
    Encode(#[source] EncodeError),
    /// A cell toward the client could not be sealed (a layer's nonces ran out).
    #[error("cannot seal a cell toward the client")]
    Seal(#[source] OnionError),
}

impl CircuitError {
    /// The DESTROY reason sent for it.
    pub(crate) fn destroy_reason(&self) -> DestroyReason {
        match self {
            CircuitError::Tampered(_) | CircuitError::Violation(_) => DestroyReason::Protocol,
            CircuitError::Extend(refusal) => refusal.destroy_reason(),
            CircuitError::ExtendTimedOut => DestroyReason::Timeout,
            CircuitError::QueueFull(_) | CircuitError::MemoryPressure => {
                DestroyReason::ResourceLimit
            }
            CircuitError::ShuttingDown => DestroyReason::ShuttingDown,
            CircuitError::Idle => DestroyReason::Timeout,
            CircuitError::Destroyed { reason, .. } => forwarded_reason(*reason),
            CircuitError::LinkClosed(_) => DestroyReason::LinkClosed,
            CircuitError::Encode(_) | CircuitError::Seal(_) => DestroyReason::Internal,
        }
    }

    /// The neighbour that ended the circuit itself (and so is not told).
    pub(crate) fn ended_by(&self) -> Option<Side> {
        match self {
            CircuitError::Destroyed { side, .. } | CircuitError::LinkClosed(side) => Some(*side),
            _ => None,
        }
    }

    /// Whether a neighbour misbehaved (rather than the network, a limit or this relay).
    pub(crate) fn is_peer_fault(&self) -> bool {
        match self {
            CircuitError::Tampered(_) | CircuitError::Violation(_) => true,
            CircuitError::Extend(refusal) => refusal.destroy_reason() == DestroyReason::Protocol,
            _ => false,
        }
    }
}
