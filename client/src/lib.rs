//! The Shallot client's messaging (`docs/spec.md` §9, §10): end-to-end sessions, the mailbox
//! client, where mailboxes live, the local store, and the messenger that puts them to work.
//!
//! Where it sits: above `shallot-net`, which gives it circuits to mailbox relays, and
//! `shallot-crypto` (X3DH, the Double Ratchet, sealed envelopes, key blinding); below
//! `shallot-tui` (the chat UI) and the `shallot` binary (`send`, `inbox`). It draws nothing
//! and knows no terminal.
//!
//! * [`messenger`]: sending and receiving messages over the network, retransmission and
//!   acknowledgements;
//! * [`e2e`]: what envelopes carry and the sessions that seal and open them;
//! * [`mailbox`]: the mailbox protocol over a circuit, and [`mailbox::access`], the seam
//!   through which the messenger reaches mailbox relays;
//! * [`ring`]: where mailboxes live;
//! * [`store`]: the local SQLite store;
//! * [`ids`]: [`MessageId`] and [`EnvelopeId`], kept apart by type;
//! * [`err`]: [`MessengerError`], the error of this layer.
//!
//! # The life of a message
//!
//! Alice sends "hi" to her contact Bob.
//!
//! 1. **Recorded and sealed.** [`Messenger::send`] checks the text, picks a random
//!    [`MessageId`] and records the message as *sending* ([`store::Store::insert_outgoing`]).
//!    If Alice has a session with Bob, the same transaction seals it
//!    ([`e2e::session::seal_for`]: the content padded to a size bucket,
//!    [`e2e::wire::Content::encode_padded`], encrypted by the ratchet, framed with Alice's
//!    identity as [`e2e::wire::Inner`], and sealed to Bob's identity key). If not,
//!    `Messenger::seal_and_deposit` first fetches Bob's prekey bundle from his mailbox
//!    replicas (`Messenger::fetch_bundle`, each record opened and verified by `check_bundle`)
//!    and `seal_for` starts an X3DH session from it.
//! 2. **Placed.** `Messenger::deposit_everywhere` finds Bob's mailbox for this epoch and the
//!    relays that keep it (`Messenger::placement`: [`ring::mailbox_id`], Bob's identity key
//!    blinded for the epoch, and the three Mailbox relays after it on the ring, each computed
//!    once per epoch and consensus by [`ring::PlacementCache`]).
//! 3. **Carried.** For each replica at once, each within its own deadline
//!    (`Messenger::on_replica`), `Messenger::link` asks the [`mailbox::MailboxAccess`] for a
//!    deposit handle ([`mailbox::Isolation::Deposit`]): [`mailbox::CircuitMailboxes`] gets a
//!    circuit of its own from [`shallot_net::circmgr::CircuitManager::get_readied`], which
//!    hands out the one finished to that relay while the user typed, if any, or extends a
//!    circuit built ahead to that relay (or builds one), and closes it after this one
//!    request. Then
//!    [`mailbox::MailboxLink::deposit`] sends a DEPOSIT request with
//!    [`shallot_net::Circuit::send`]: the circuit's state machine takes the cells from the
//!    last hop's window and wraps one onion layer per hop
//!    ([`shallot_net::circuit::CircuitState::send`]), and the channel's writer sends them.
//! 4. **Stored.** Each relay answers once the envelope is on its disk. When two of three have,
//!    `Messenger::record_attempt` marks the message *stored*
//!    ([`store::OutState::Stored`]), schedules a retransmission
//!    ([`messenger::outgoing::backoff`]) and tells the UI ([`messenger::MessengerEvent`]).
//! 5. **Pushed.** Bob's [`Messenger::spawn_receiver`] keeps a subscription on each replica
//!    of his mailbox ([`mailbox::MailboxLink::subscribe`], signed with his blinded key by
//!    [`mailbox::authorize`]), each over an owner circuit carrying nothing but his requests
//!    for that one mailbox ([`mailbox::Isolation::Owner`]); the relay pushes the new
//!    envelope, and the link's reader task routes it to the subscription, listening to the
//!    last hop only.
//! 6. **Handled once.** [`Messenger::handle_arrived`] checks that the envelope hashes to
//!    its [`EnvelopeId`], drops copies from the other replicas
//!    ([`store::Store::first_sight_of_envelope`]), opens it ([`e2e::session::open`]: unseal,
//!    ratchet, [`e2e::wire::Content::decode_padded`]), records the text
//!    ([`store::Store::insert_incoming`]) and queues an acknowledgement
//!    ([`store::Store::queue_ack`]), all in one transaction; then the subscription deletes the
//!    envelope at the relay ([`mailbox::MailboxLink::ack`]).
//! 7. **Acknowledged.** Bob's [`Messenger::send_acks`] seals a
//!    [`e2e::wire::Content::Ack`] naming the [`MessageId`] and deposits it in Alice's mailbox
//!    the same way (steps 1–4). Alice handles it like any envelope (steps 5–6):
//!    [`store::Store::mark_delivered`] marks "hi" *delivered*, and
//!    [`Messenger::retransmit_due`] no longer sends it. Had no acknowledgement come,
//!    `retransmit_due` would have sealed and deposited it again at doubling intervals until
//!    its lifetime ended, and then reported it *failed*.

#![forbid(unsafe_code)]
#![warn(clippy::await_holding_lock, unreachable_pub)]

pub mod e2e;
pub mod err;
pub mod ids;
pub mod mailbox;
pub mod messenger;
pub mod ring;
pub mod store;

pub use err::MessengerError;
pub use ids::{EnvelopeId, MessageId};
pub use messenger::Messenger;
