//! The messaging layer's error (`docs/spec.md` §9–10): [`MessengerError`], in the user's
//! words, keeping its cause (the store, the transport, a mailbox relay, a contact's bundle),
//! and answering "may trying again later succeed?" with [`MessengerError::is_retryable`].

use shallot_crypto::blind::BlindError;
use shallot_crypto::published::PublishedError;
use shallot_crypto::reader::DecodeError;
use shallot_crypto::x3dh::X3dhError;
use shallot_net::netdir::DirError;
use shallot_net::NetError;
use thiserror::Error;

use crate::e2e::session::SessionError;
use crate::mailbox::MailboxError;
use crate::messenger::outgoing::DepositOutcome;
use crate::store::StoreError;

/// Why a messenger operation failed.
#[derive(Debug, Error)]
pub enum MessengerError {
    /// The local store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport: no consensus, or no circuit.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A mailbox relay.
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
    /// The consensus lists no mailbox relays.
    #[error("the network has no mailbox relays for this contact right now")]
    NoMailboxes,
    /// The message was stored on too few mailboxes.
    #[error("{0}")]
    NotStored(DepositOutcome),
    /// The message left and some mailboxes stored it, but it could not be saved in the
    /// sender's history (a message sealed with a key taken while typing is recorded beside
    /// its deposits): it will not be retransmitted or shown as sent.
    #[error(
        "the message was stored on {stored} of {wanted} mailboxes but could not be saved in \
         your history, so it will not be sent again: {reason}"
    )]
    SentNotRecorded {
        /// Mailboxes that stored it.
        stored: u8,
        /// Mailboxes asked.
        wanted: u8,
        /// Why it could not be saved.
        #[source]
        reason: StoreError,
    },
    /// A session with the contact could not be started or used.
    #[error("cannot start a conversation with {name}: {reason}")]
    NoBundle {
        /// The contact.
        name: String,
        /// Why.
        #[source]
        reason: BundleError,
    },
    /// The message is empty.
    #[error("the message is empty")]
    EmptyText,
    /// The message is longer than one message may be.
    #[error("the message is {len} bytes; the most is {max}")]
    TextTooLong {
        /// Its length in bytes.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// This user's mailbox key for an epoch could not be derived.
    #[error("cannot derive this user's mailbox key: {0}")]
    MailboxKey(#[from] BlindError),
    /// This user's prekey bundle could not be sealed for publication.
    #[error("cannot seal this user's prekey bundle: {0}")]
    SealBundle(#[source] PublishedError),
}

impl From<DirError> for MessengerError {
    fn from(e: DirError) -> Self {
        MessengerError::Net(NetError::Dir(e))
    }
}

impl MessengerError {
    /// Whether trying again later may succeed: network trouble and a contact not yet
    /// reachable are worth another attempt; bad input, a broken store or a refused bundle
    /// are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            MessengerError::Net(_) | MessengerError::NoMailboxes | MessengerError::NotStored(_) => {
                true
            }
            MessengerError::Mailbox(e) => e.is_retryable(),
            MessengerError::NoBundle { reason, .. } => reason.is_retryable(),
            MessengerError::Store(_)
            | MessengerError::SentNotRecorded { .. }
            | MessengerError::EmptyText
            | MessengerError::TextTooLong { .. }
            | MessengerError::MailboxKey(_)
            | MessengerError::SealBundle(_) => false,
        }
    }
}

/// Why a contact's prekey bundle could not start a session.
#[derive(Debug, Error)]
pub enum BundleError {
    /// No replica of the contact's mailbox holds a bundle.
    #[error("no mailbox relay holds their prekey bundle (they may never have been online)")]
    Missing,
    /// The replicas could not be asked.
    #[error("{0}")]
    Unreachable(#[source] Box<MessengerError>),
    /// The bundle does not open with the contact's address.
    #[error("their bundle could not be opened: {0}")]
    Unreadable(#[source] PublishedError),
    /// The bundle does not parse.
    #[error("their bundle is malformed: {0}")]
    Malformed(#[source] DecodeError),
    /// The bundle parses but was refused (wrong identity, bad signature, expired).
    #[error("their bundle was refused: {0}")]
    Refused(#[source] X3dhError),
    /// Sealing with the session failed.
    #[error("{0}")]
    Session(#[source] SessionError),
}

impl BundleError {
    /// Whether asking again later may succeed: when the bundle was missing or the replicas
    /// unreachable, not when what they hold is bad.
    pub fn is_retryable(&self) -> bool {
        match self {
            BundleError::Missing => true,
            BundleError::Unreachable(e) => e.is_retryable(),
            BundleError::Unreadable(_)
            | BundleError::Malformed(_)
            | BundleError::Refused(_)
            | BundleError::Session(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_proto::mailbox::Status;

    #[test]
    fn network_trouble_is_retryable_and_bad_input_is_not() {
        assert!(MessengerError::NoMailboxes.is_retryable());
        assert!(MessengerError::Mailbox(MailboxError::Timeout).is_retryable());
        assert!(MessengerError::Mailbox(MailboxError::Refused(Status::Full)).is_retryable());
        assert!(
            !MessengerError::Mailbox(MailboxError::Refused(Status::BadSignature)).is_retryable()
        );
        assert!(!MessengerError::EmptyText.is_retryable());
        assert!(!MessengerError::TextTooLong { len: 2, max: 1 }.is_retryable());
        let missing = MessengerError::NoBundle {
            name: "bob".into(),
            reason: BundleError::Missing,
        };
        assert!(missing.is_retryable());
        let refused = MessengerError::NoBundle {
            name: "bob".into(),
            reason: BundleError::Refused(X3dhError::WrongIdentity),
        };
        assert!(!refused.is_retryable());
        assert!(refused
            .to_string()
            .starts_with("cannot start a conversation with bob"));
    }
}
