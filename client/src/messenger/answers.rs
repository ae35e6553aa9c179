//! What each mailbox relay last answered this user's own requests (`docs/spec.md` §10.7,
//! "Replica answers"): the fetches, subscriptions and bundle puts for its own mailbox, each
//! recorded as answered, refused (and why) or not answered (and why), with the time. The
//! network panel shows it per replica, so the user sees the messenger's actual experience of
//! each relay rather than a guess from open circuits.

use std::collections::HashMap;

use shallot_crypto::keys::RelayId;

use super::MessengerError;
use crate::mailbox::MailboxError;

/// Relays remembered at most; past it the one heard from longest ago is forgotten. Three
/// replicas, their read slack and the previous ring's fit many times over.
pub const MAX_REMEMBERED: usize = 32;

/// How a relay last answered one of this user's own requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaAnswer {
    /// It did what was asked.
    Answered,
    /// It answered, refusing (why, in words).
    Refused(String),
    /// It could not be reached or said nothing in time (why, in words).
    NoAnswer(String),
}

/// A relay's last answer and when it came (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastAnswer {
    /// What it answered.
    pub answer: ReplicaAnswer,
    /// When, by the messenger's clock.
    pub at: u64,
}

/// The last answer of each relay asked, bounded by [`MAX_REMEMBERED`].
#[derive(Debug, Default)]
pub struct ReplicaAnswers {
    last: HashMap<RelayId, LastAnswer>,
}

impl ReplicaAnswers {
    /// Records how `relay` answered at `at`, from the request's result. A failure that is
    /// not the relay's doing (the local store, a message that does not open) records
    /// nothing.
    pub fn record<T>(&mut self, relay: RelayId, result: &Result<T, MessengerError>, at: u64) {
        let answer = match result {
            Ok(_) => ReplicaAnswer::Answered,
            Err(e) => match classify(e) {
                Some(a) => a,
                None => return,
            },
        };
        if !self.last.contains_key(&relay) && self.last.len() >= MAX_REMEMBERED {
            let oldest = self
                .last
                .iter()
                .min_by_key(|(_, a)| a.at)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.last.remove(&id);
            }
        }
        self.last.insert(relay, LastAnswer { answer, at });
    }

    /// `relay`'s last answer, if it was asked anything.
    pub fn get(&self, relay: &RelayId) -> Option<&LastAnswer> {
        self.last.get(relay)
    }
}

/// What a failed request says of the relay, if anything.
fn classify(e: &MessengerError) -> Option<ReplicaAnswer> {
    match e {
        MessengerError::Mailbox(MailboxError::Refused(status)) => {
            Some(ReplicaAnswer::Refused(status.to_string()))
        }
        MessengerError::Mailbox(e @ MailboxError::WrongAnswer(_)) => {
            Some(ReplicaAnswer::Refused(e.to_string()))
        }
        MessengerError::Mailbox(MailboxError::Timeout) => {
            Some(ReplicaAnswer::NoAnswer("no answer in time".into()))
        }
        MessengerError::Mailbox(MailboxError::Circuit(e)) => {
            Some(ReplicaAnswer::NoAnswer(format!("not reached: {e}")))
        }
        MessengerError::Net(e) => Some(ReplicaAnswer::NoAnswer(format!("not reached: {e}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use shallot_proto::mailbox::Status;

    #[test]
    fn each_relay_keeps_its_last_answer_and_local_failures_say_nothing() {
        let mut a = ReplicaAnswers::default();
        let r = RelayId([1; 20]);
        a.record(r, &Ok::<(), MessengerError>(()), 10);
        assert_eq!(a.get(&r).unwrap().answer, ReplicaAnswer::Answered);
        a.record::<()>(r, &Err(MailboxError::Refused(Status::Full).into()), 20);
        assert!(matches!(
            a.get(&r).unwrap(),
            LastAnswer {
                answer: ReplicaAnswer::Refused(_),
                at: 20
            }
        ));
        a.record::<()>(r, &Err(MailboxError::Timeout.into()), 30);
        assert!(matches!(
            a.get(&r).unwrap().answer,
            ReplicaAnswer::NoAnswer(_)
        ));
        // The message did not open: not the relay's doing; the last answer stands.
        a.record::<()>(r, &Err(MessengerError::EmptyText), 40);
        assert_eq!(a.get(&r).unwrap().at, 30);
        assert!(a.get(&RelayId([2; 20])).is_none());
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_longest_silent() {
        let mut a = ReplicaAnswers::default();
        for i in 0..=MAX_REMEMBERED {
            let id = RelayId([u8::try_from(i).unwrap(); 20]);
            a.record(id, &Ok::<(), MessengerError>(()), 100 + i as u64);
        }
        assert_eq!(a.last.len(), MAX_REMEMBERED);
        assert!(a.get(&RelayId([0; 20])).is_none(), "the oldest went");
        assert!(a.get(&RelayId([1; 20])).is_some());
    }
}
