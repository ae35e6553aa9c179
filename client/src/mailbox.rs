//! Talking to one mailbox relay over a circuit that ends there (`docs/spec.md` §9.3):
//! requests matched to answers by request id, and subscriptions whose pushed envelopes arrive
//! on a channel.
//!
//! [`access`] is the seam between the messenger and the mailbox relays: the operations on
//! one relay ([`MailboxOps`]) and how a relay is reached ([`MailboxAccess`]), with the real
//! implementation over the circuit manager.

pub mod access;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shallot_crypto::blind::BlindedKeypair;
use shallot_crypto::keys::RelayId;
use shallot_proto::mailbox::{auth_message, kind, MailboxAuth, MailboxId, MailboxMsg, Status};
use shallot_proto::pow::{self, Pow, MAX_CLIENT_DIFFICULTY};
use shallot_proto::relay_msg::RelayMsg;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use shallot_net::{Circuit, NetError};

pub use access::{CircuitMailboxes, Isolation, MailboxAccess, MailboxOps};

use crate::ids::EnvelopeId;
use shallot_rt::{lock, unix_now};

/// Why a mailbox request failed.
#[derive(Debug, Clone, Error)]
pub enum MailboxError {
    /// The relay refused it.
    #[error("{0}")]
    Refused(Status),
    /// No circuit to the relay, or the circuit failed.
    #[error(transparent)]
    Circuit(#[from] NetError),
    /// No answer in time.
    #[error("mailbox relay did not answer in time")]
    Timeout,
    /// The relay answered a request with an answer of another kind (a bundle to a deposit,
    /// a plain result to a bundle request).
    #[error("mailbox relay answered a {0} request out of protocol")]
    WrongAnswer(&'static str),
}

impl MailboxError {
    /// Whether asking again later, or another replica, may succeed: true unless the relay
    /// refused the request itself (a bad signature, something too large, nothing there).
    pub fn is_retryable(&self) -> bool {
        match self {
            MailboxError::Refused(status) => matches!(
                status,
                Status::Full
                    | Status::Stale
                    | Status::Unavailable
                    | Status::Internal
                    | Status::Busy
                    | Status::PuzzleRequired
            ),
            MailboxError::Circuit(_) | MailboxError::Timeout | MailboxError::WrongAnswer(_) => true,
        }
    }
}

/// A waiting envelope or a pushed one: its id and bytes.
pub type Delivered = (EnvelopeId, Vec<u8>);

enum Answer {
    Result(Status, u32),
    Bundle(Vec<u8>),
}

#[derive(Default)]
struct Pending {
    answers: HashMap<u32, oneshot::Sender<Answer>>,
    /// Envelopes for a fetch or subscription, by request id.
    streams: HashMap<u32, mpsc::UnboundedSender<Delivered>>,
}

/// A circuit to a mailbox relay, and the requests in flight on it.
pub struct MailboxLink {
    circ: Arc<Circuit>,
    relay: RelayId,
    pending: Arc<Mutex<Pending>>,
    next: AtomicU32,
}

/// How many times a request is sent again with a solution when the relay asks for a puzzle
/// (the difficulty may rise between the ask and the answer).
const PUZZLE_TRIES: usize = 3;

/// Solves relay `relay`'s puzzle of `bits` for request `op` on `mailbox` with `body`
/// (`docs/spec.md` §9.7), off the event loop; refused when the relay asks for more than
/// [`MAX_CLIENT_DIFFICULTY`] bits.
async fn solve_puzzle(
    relay: RelayId,
    op: u8,
    mailbox: MailboxId,
    body: Vec<u8>,
    bits: u32,
) -> Result<Pow, MailboxError> {
    let bits = u8::try_from(bits)
        .ok()
        .filter(|b| *b <= MAX_CLIENT_DIFFICULTY)
        .ok_or(MailboxError::Refused(Status::PuzzleRequired))?;
    let salt: [u8; 8] = rand::random();
    let started = std::time::Instant::now();
    let solved = tokio::task::spawn_blocking(move || {
        pow::solve(&relay, op, &mailbox.0, &body, bits, unix_now(), salt)
    })
    .await
    .map_err(|_| MailboxError::Refused(Status::PuzzleRequired))?;
    tracing::debug!(bits, elapsed = ?started.elapsed(), "solved a mailbox relay's puzzle");
    Ok(solved)
}

/// Signs an owner's request for `relay`.
pub fn authorize(key: &BlindedKeypair, relay: &RelayId, op: u8, body: &[u8]) -> MailboxAuth {
    let mailbox = MailboxId(key.public().to_bytes());
    let nonce: [u8; 16] = rand::random();
    let timestamp = unix_now();
    let sig = key.sign(&auth_message(relay, op, &mailbox, timestamp, &nonce, body));
    MailboxAuth {
        mailbox,
        timestamp,
        nonce,
        signature: sig.to_bytes(),
    }
}

impl MailboxLink {
    /// Wraps a circuit whose last hop is the mailbox relay `relay`, and starts reading its
    /// answers.
    pub fn new(circ: Arc<Circuit>, relay: RelayId) -> Arc<Self> {
        let link = Arc::new(MailboxLink {
            circ: circ.clone(),
            relay,
            pending: Arc::new(Mutex::new(Pending::default())),
            next: AtomicU32::new(1),
        });
        tokio::spawn(read_answers(circ, link.pending.clone()));
        link
    }

    /// The relay at the end.
    pub fn relay(&self) -> RelayId {
        self.relay
    }

    /// Whether the circuit still works.
    pub fn is_open(&self) -> bool {
        !self.circ.is_closed()
    }

    /// The circuit.
    pub fn circuit(&self) -> &Arc<Circuit> {
        &self.circ
    }

    async fn request(
        &self,
        make: impl FnOnce(u32) -> MailboxMsg,
        stream: Option<mpsc::UnboundedSender<Delivered>>,
        limit: Duration,
    ) -> Result<Answer, MailboxError> {
        let req = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            p.answers.insert(req, tx);
            if let Some(s) = stream {
                p.streams.insert(req, s);
            }
        }
        let hop = self.circ.last_hop().ok_or(NetError::NoSuchHop(0))?;
        // One deadline covers both the wait for a send window (a relay that never sends
        // SENDME) and the wait for the answer (a relay that never answers).
        let exchange = async {
            self.circ
                .send(hop, &RelayMsg::Mailbox(make(req)))
                .await
                .map_err(MailboxError::from)?;
            tracing::trace!(target: "shallot_trace", "mailbox request queued on its circuit");
            match rx.await {
                Ok(a) => Ok(a),
                Err(_) => Err(MailboxError::Circuit(
                    self.circ.close_reason().unwrap_or(NetError::Closed),
                )),
            }
        };
        let answer = match tokio::time::timeout(limit, exchange).await {
            Ok(a) => a,
            Err(_) => Err(MailboxError::Timeout),
        };
        {
            let mut p = lock(&self.pending);
            p.answers.remove(&req);
            if answer.is_err() {
                p.streams.remove(&req);
            }
        }
        answer
    }

    fn expect_ok(answer: Answer, asked: &'static str) -> Result<u32, MailboxError> {
        match answer {
            Answer::Result(Status::Ok, n) => Ok(n),
            Answer::Result(status, _) => Err(MailboxError::Refused(status)),
            Answer::Bundle(_) => Err(MailboxError::WrongAnswer(asked)),
        }
    }

    /// Sends the request `make` builds (given its number and the puzzle solution, if any)
    /// and expects Ok; when the relay asks for a puzzle, solves it over `op`, `mailbox` and
    /// `body` and sends the request again, at most [`PUZZLE_TRIES`] times, all within `limit`.
    async fn admitted(
        &self,
        (op, mailbox, body): (u8, MailboxId, &[u8]),
        asked: &'static str,
        limit: Duration,
        mut make: impl FnMut(u32, Option<Pow>) -> MailboxMsg,
    ) -> Result<(), MailboxError> {
        let attempts = async {
            let mut solution = None;
            for _ in 0..PUZZLE_TRIES {
                let answer = self.request(|req| make(req, solution), None, limit).await?;
                match answer {
                    Answer::Result(Status::PuzzleRequired, bits) => {
                        let body = body.to_vec();
                        solution = Some(solve_puzzle(self.relay, op, mailbox, body, bits).await?);
                    }
                    other => return Self::expect_ok(other, asked).map(|_| ()),
                }
            }
            Err(MailboxError::Refused(Status::PuzzleRequired))
        };
        tokio::time::timeout(limit, attempts)
            .await
            .unwrap_or(Err(MailboxError::Timeout))
    }

    /// Leaves an envelope in `mailbox`; Ok once the relay has it on disk. A relay under load
    /// asks for a puzzle: it is solved and the deposit sent again, all within `limit`.
    pub async fn deposit(
        &self,
        mailbox: MailboxId,
        envelope: Vec<u8>,
        limit: Duration,
    ) -> Result<(), MailboxError> {
        let target = (kind::DEPOSIT, mailbox, envelope.as_slice());
        self.admitted(target, "deposit", limit, |req, pow| MailboxMsg::Deposit {
            req,
            mailbox,
            envelope: envelope.clone(),
            pow,
        })
        .await
    }

    /// The prekey bundle kept for `mailbox`, if any.
    pub async fn get_bundle(
        &self,
        mailbox: MailboxId,
        limit: Duration,
    ) -> Result<Option<Vec<u8>>, MailboxError> {
        match self
            .request(|req| MailboxMsg::GetBundle { req, mailbox }, None, limit)
            .await?
        {
            Answer::Bundle(b) => Ok(Some(b)),
            Answer::Result(Status::NotFound, _) => Ok(None),
            other => Self::expect_ok(other, "bundle").and(Err(MailboxError::WrongAnswer("bundle"))),
        }
    }

    /// Stores the owner's prekey bundle beside the mailbox until `expires`.
    pub async fn put_bundle(
        &self,
        key: &BlindedKeypair,
        expires: u64,
        bundle: Vec<u8>,
        limit: Duration,
    ) -> Result<(), MailboxError> {
        let body = MailboxMsg::bundle_body(expires, &bundle);
        let mailbox = MailboxId(key.public().to_bytes());
        let target = (kind::PUT_BUNDLE, mailbox, body.as_slice());
        self.admitted(target, "put-bundle", limit, |req, pow| {
            MailboxMsg::PutBundle {
                req,
                // Signed anew each time: the relay keeps the nonce of a request it refused.
                auth: authorize(key, &self.relay, kind::PUT_BUNDLE, &body),
                expires,
                bundle: bundle.clone(),
                pow,
            }
        })
        .await
    }

    /// Subscribes to the mailbox: returns a channel that first carries every waiting envelope
    /// and then each new one as it is deposited, and the number that were waiting.
    pub async fn subscribe(
        &self,
        key: &BlindedKeypair,
        limit: Duration,
    ) -> Result<(mpsc::UnboundedReceiver<Delivered>, u32), MailboxError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let auth = authorize(key, &self.relay, kind::SUBSCRIBE, b"");
        let a = self
            .request(|req| MailboxMsg::Subscribe { req, auth }, Some(tx), limit)
            .await?;
        Ok((rx, Self::expect_ok(a, "subscribe")?))
    }

    /// Every envelope waiting in the mailbox.
    pub async fn fetch(
        &self,
        key: &BlindedKeypair,
        limit: Duration,
    ) -> Result<Vec<Delivered>, MailboxError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let auth = authorize(key, &self.relay, kind::FETCH, b"");
        let req_answer = self
            .request(|req| MailboxMsg::Fetch { req, auth }, Some(tx), limit)
            .await;
        let n = Self::expect_ok(req_answer?, "fetch")?;
        // The result follows the envelopes it counts, so they are all here; the stream is
        // done (its entry is dropped at the next message, its receiver being gone).
        let mut out = Vec::with_capacity(n as usize);
        while let Ok(d) = rx.try_recv() {
            out.push(d);
        }
        drop(rx);
        lock(&self.pending).streams.retain(|_, s| !s.is_closed());
        Ok(out)
    }

    /// Deletes envelopes; returns how many the relay still had.
    pub async fn ack(
        &self,
        key: &BlindedKeypair,
        ids: Vec<EnvelopeId>,
        limit: Duration,
    ) -> Result<u32, MailboxError> {
        let auth = authorize(key, &self.relay, kind::ACK, &MailboxMsg::ack_body(&ids));
        let a = self
            .request(|req| MailboxMsg::Ack { req, auth, ids }, None, limit)
            .await?;
        Self::expect_ok(a, "ack")
    }
}

impl Drop for MailboxLink {
    /// The circuit serves this link alone: when the last handle goes, so does the circuit
    /// (its reader task holds the circuit, not the link).
    fn drop(&mut self) {
        self.circ.close();
    }
}

/// Routes what the relay sends to the requests waiting on `pending`. Ends when the circuit
/// does.
async fn read_answers(circ: Arc<Circuit>, pending: Arc<Mutex<Pending>>) {
    while let Ok((hop, msg)) = circ.recv().await {
        let from_last = circ.last_hop() == Some(hop);
        route(&mut lock(&pending), from_last, msg);
    }
    let mut p = lock(&pending);
    p.answers.clear();
    p.streams.clear();
}

/// Routes one message that came up the circuit: results and bundles to their requests,
/// envelopes to their fetch or subscription. Only the last hop (the mailbox relay) speaks
/// for the mailbox (`docs/spec.md` §9.3): a guard or middle relay that originates a RESULT,
/// BUNDLE or ENVELOPE (to make a dropped deposit look stored, say) is not listened to.
/// Returns whether the message was taken.
fn route(p: &mut Pending, from_last: bool, msg: RelayMsg) -> bool {
    let RelayMsg::Mailbox(msg) = msg else {
        return false;
    };
    if !from_last {
        tracing::debug!("a relay before the mailbox relay sent a mailbox message; ignored");
        return false;
    }
    match msg {
        MailboxMsg::Result { req, status, count } => {
            let known = match p.answers.remove(&req) {
                Some(tx) => tx.send(Answer::Result(status, count)).is_ok(),
                None => false,
            };
            // A fetch's stream ends with its result; a subscription's lives on.
            if status != Status::Ok {
                p.streams.remove(&req);
            }
            known
        }
        MailboxMsg::Bundle { req, bundle } => match p.answers.remove(&req) {
            Some(tx) => tx.send(Answer::Bundle(bundle)).is_ok(),
            None => false,
        },
        MailboxMsg::Envelope { req, id, envelope } => match p.streams.get(&req) {
            Some(s) => {
                tracing::trace!(target: "shallot_trace", "recipient: envelope pushed");
                if s.send((id, envelope)).is_err() {
                    p.streams.remove(&req);
                    return false;
                }
                true
            }
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests;
