//! The transport layer's error (`docs/spec.md` §6, §11): one enum for everything a client's
//! onion transport can fail at, keeping each cause, naming each protocol violation a relay
//! can commit, and answering "may another attempt succeed?" with
//! [`NetError::is_retryable`].

use std::sync::Arc;

use shallot_crypto::ntor::NtorError;
use shallot_crypto::onion::OnionError;
use shallot_crypto::reader::DecodeError;
use shallot_link::LinkError;
use shallot_proto::cell::DestroyReason;
use thiserror::Error;

use crate::circuit::hop::HopNum;
use crate::path::PathError;
use shallot_directory::FetchError;

/// Why no consensus is available.
#[derive(Debug, Clone, Error)]
pub enum DirError {
    /// Nothing was cached and no fetch has been tried yet.
    #[error("cannot get a consensus: no consensus fetched yet")]
    NotYetFetched,
    /// No authority answered and nothing usable was cached.
    #[error("cannot get a consensus: {0}")]
    Unavailable(#[source] Arc<FetchError>),
    /// The consensus held has expired and no newer one was fetched.
    #[error("the consensus expired {ago} s ago{}", match (.last_failure, .refreshing) {
        (Some(e), _) => format!(" and no authority answered: {e}"),
        (None, true) => "; no newer one fetched yet".to_string(),
        (None, false) => "; nothing refreshes it in this process".to_string(),
    })]
    Expired {
        /// Seconds since it expired.
        ago: u64,
        /// Why the last fetch failed, if one was tried since the last success.
        #[source]
        last_failure: Option<Arc<FetchError>>,
        /// Whether a background refresh runs ([`NetDir::start_refresher`]).
        refreshing: bool,
    },
}

/// Why the transport could not do what was asked.
#[derive(Debug, Clone, Error)]
pub enum NetError {
    /// No usable consensus.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// No path satisfies the path rules.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The link to the first hop failed.
    #[error("link to the first relay failed: {0}")]
    Link(#[source] Arc<LinkError>),
    /// A relay destroyed the circuit.
    #[error("circuit destroyed by a relay: {0}")]
    Destroyed(DestroyReason),
    /// The circuit is closed (by this client, or after an earlier failure).
    #[error("circuit closed")]
    Closed,
    /// A build step took longer than its limit.
    #[error("timed out {0}")]
    Timeout(BuildStep),
    /// A hop's handshake failed: its reply does not prove it holds its onion key.
    #[error("handshake with {hop} failed: {source}")]
    Handshake {
        /// The hop's nickname.
        hop: String,
        /// Why.
        #[source]
        source: NtorError,
    },
    /// A relay broke the protocol; the circuit is destroyed.
    #[error("protocol violation: {0}")]
    Protocol(#[from] Violation),
    /// The caller named a hop the circuit does not have.
    #[error("no hop {0} on this circuit")]
    NoSuchHop(usize),
    /// The message cannot be encoded for a circuit (too long).
    #[error("cannot send: {0}")]
    Unsendable(#[source] shallot_proto::EncodeError),
    /// A circuit needs at least one hop.
    #[error("cannot build a circuit along an empty path")]
    EmptyPath,
    /// A handshake is already under way on this circuit, or it is already created.
    #[error("the circuit is already being built")]
    Busy,
    /// Every attempt to build a circuit failed.
    #[error("could not build a circuit in {attempts} attempts; last: {last} at {relay}")]
    Build {
        /// Attempts made.
        attempts: usize,
        /// The relay being added when the last attempt failed.
        relay: String,
        /// Why the last attempt failed.
        #[source]
        last: Box<NetError>,
    },
}

impl NetError {
    /// Whether another attempt, along another path or on a new circuit, may succeed: true for
    /// failures of one link, circuit or relay; false when the request itself cannot be met
    /// now (no consensus, no path, a bad request, or retries already spent).
    pub fn is_retryable(&self) -> bool {
        match self {
            NetError::Link(_)
            | NetError::Destroyed(_)
            | NetError::Closed
            | NetError::Timeout(_)
            | NetError::Handshake { .. }
            | NetError::Protocol(_) => true,
            NetError::Dir(_)
            | NetError::Path(_)
            | NetError::NoSuchHop(_)
            | NetError::Unsendable(_)
            | NetError::EmptyPath
            | NetError::Busy
            | NetError::Build { .. } => false,
        }
    }

    /// The violation, if a relay broke the protocol.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            NetError::Protocol(v) => Some(v),
            _ => None,
        }
    }
}

impl From<LinkError> for NetError {
    fn from(e: LinkError) -> Self {
        NetError::Link(Arc::new(e))
    }
}

/// A step of building a circuit, for timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStep {
    /// Opening the link to the first hop.
    Connecting,
    /// Waiting for CREATED from the first hop.
    Creating,
    /// Waiting for EXTENDED from the last hop.
    Extending,
}

impl std::fmt::Display for BuildStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BuildStep::Connecting => "connecting to the first hop",
            BuildStep::Creating => "creating the first hop",
            BuildStep::Extending => "extending",
        })
    }
}

/// A way a relay broke the circuit protocol. Each one destroys the circuit.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Violation {
    /// CREATED arrived when no CREATE was waiting.
    #[error("CREATED on a circuit that was not being created")]
    UnexpectedCreated,
    /// EXTENDED arrived when no EXTEND was waiting, or from a hop other than the last.
    #[error("EXTENDED that answers no EXTEND")]
    UnexpectedExtended,
    /// A relay sent EXTEND toward the client.
    #[error("{0} sent EXTEND toward the client")]
    ExtendFromRelay(HopNum),
    /// A cell a relay never sends to a client (CREATE, or PADDING addressed to a circuit).
    #[error("unexpected {0} cell on a client circuit")]
    UnexpectedCell(&'static str),
    /// A relay cell arrived before the first hop was built.
    #[error("relay cell before the circuit was created")]
    RelayBeforeCreated,
    /// A layer failed to authenticate, or a cell claims to come from past the last hop.
    #[error("{0}")]
    Layer(#[from] OnionError),
    /// A hop sent more counted cells than its window allowed.
    #[error("{0} overran its flow-control window")]
    WindowOverrun(HopNum),
    /// A hop sent a SENDME for cells never sent to it.
    #[error("{0} sent a SENDME for cells never sent")]
    UnexpectedSendme(HopNum),
    /// A hop's fragments could not be reassembled (bad framing, or over the message limit).
    #[error("{hop} sent a bad fragment: {source}")]
    Reassembly {
        /// The hop.
        hop: HopNum,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// A hop's reassembled message does not decode.
    #[error("{hop} sent a malformed message: {source}")]
    Malformed {
        /// The hop.
        hop: HopNum,
        /// Why.
        #[source]
        source: DecodeError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_failures_are_retryable_and_request_failures_are_not() {
        assert!(NetError::Destroyed(DestroyReason::Timeout).is_retryable());
        assert!(NetError::Timeout(BuildStep::Extending).is_retryable());
        assert!(NetError::from(LinkError::Closed).is_retryable());
        assert!(NetError::Protocol(Violation::UnexpectedCreated).is_retryable());
        assert!(!NetError::EmptyPath.is_retryable());
        assert!(!NetError::NoSuchHop(4).is_retryable());
        assert!(!NetError::Dir(DirError::NotYetFetched).is_retryable());
        let spent = NetError::Build {
            attempts: 4,
            relay: "r1".into(),
            last: Box::new(NetError::Closed),
        };
        assert!(!spent.is_retryable());
        assert!(
            spent.to_string().contains("circuit closed at r1"),
            "{spent}"
        );
    }

    #[test]
    fn a_link_failure_keeps_its_cause() {
        use std::error::Error as _;
        let e = NetError::from(LinkError::Timeout);
        let source = e.source().map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("link handshake timed out"));
    }
}
