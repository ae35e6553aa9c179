//! Sealing content for a peer and opening what arrives (`docs/spec.md` §10.6): choosing or
//! starting the ratchet session, and keeping sessions in the store.
//!
//! A peer may have up to three sessions (two users who start sessions with each other at the
//! same moment each end up with one of each); a message is sent on the session most recently
//! used to receive (or, before any, the newest), and an arriving message is tried against
//! each. A message sent before its session's peer has answered carries the session start.

use ed25519_dalek::VerifyingKey;
use shallot_crypto::keys::IdentityKeypair;
use shallot_crypto::ratchet::{Header, Ratchet, RatchetError, SendKey};
use shallot_crypto::sealed::{self, EnvelopeKey, SealError};
use shallot_crypto::x3dh::{self, InitialHeader, PrekeyBundle, X3dhError};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::e2e::wire::{Content, Inner};
use crate::store::{SessionRow, Store, StoreError};

/// Why content could not be sealed or an envelope opened.
#[derive(Debug, Error)]
pub enum SessionError {
    /// There is no session yet and no prekey bundle was given to start one.
    #[error("no session with this contact yet")]
    NeedBundle,
    /// The peer's prekey bundle was refused.
    #[error("the contact's prekey bundle was refused: {0}")]
    Bundle(#[from] X3dhError),
    /// The envelope is not for us, or was changed.
    #[error("envelope refused: {0}")]
    Envelope(#[from] SealError),
    /// The envelope's contents are malformed.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The session start names a prekey we no longer hold.
    #[error("the message starts a session with a prekey this client no longer holds")]
    UnknownPrekey,
    /// A session start seen before, whose session is gone: a replay.
    #[error("replayed session start")]
    ReplayedStart,
    /// No session could decrypt it (changed, replayed, or from a forgotten session).
    #[error("message could not be decrypted: {0}")]
    Undecryptable(RatchetError),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// An opened envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's identity key.
    pub sender: [u8; 32],
    /// What it said.
    pub content: Content,
    /// Whether it moved the session a key taken ahead for the sender would come from
    /// ([`ReadyKey::is_current`]): it started a session, or took a ratchet step.
    pub stepped: bool,
}

fn ratchet_of(row: &SessionRow) -> Result<Ratchet, SessionError> {
    Ratchet::from_bytes(&row.state).map_err(|e| SessionError::Malformed(e.to_string()))
}

/// Seals `content` for `peer`, starting a session from `bundle` if there is none.
pub fn seal_for(
    store: &Store,
    me: &IdentityKeypair,
    peer: &VerifyingKey,
    content: &Content,
    bundle: Option<&PrekeyBundle>,
    now: u64,
) -> Result<Vec<u8>, SessionError> {
    // Reading the session, using its next message key and saving the advanced state are one
    // transaction, holding the store's write lock throughout: two sealers (two processes, or
    // one interrupted) can never use one message key twice or save an older state over a
    // newer one.
    store.atomically(|store| seal_in(store, me, peer, content, bundle, now))
}

fn seal_in(
    store: &Store,
    me: &IdentityKeypair,
    peer: &VerifyingKey,
    content: &Content,
    bundle: Option<&PrekeyBundle>,
    now: u64,
) -> Result<Vec<u8>, SessionError> {
    let mut rng = rand::thread_rng();
    let peer_key = peer.to_bytes();
    let (mut row, mut ratchet, used_at) = match store.sessions(&peer_key)?.into_iter().next() {
        Some(row) => {
            let ratchet = ratchet_of(&row)?;
            (row, ratchet, 0)
        }
        None => {
            let bundle = bundle.ok_or(SessionError::NeedBundle)?;
            bundle.verify(peer, now)?;
            let (sk, start, ad) = x3dh::initiate(&mut rng, me, bundle)?;
            let ratchet = Ratchet::init_initiator(sk, bundle.prekey(), ad);
            let row = SessionRow {
                sid: start.ephemeral,
                state: Zeroizing::new(Vec::new()),
                start: Some(start.to_bytes().to_vec()),
            };
            (row, ratchet, now)
        }
    };
    let padded = padded(content)?;
    let (header, ciphertext) = ratchet
        .encrypt(&mut rng, &padded)
        .map_err(SessionError::Undecryptable)?;
    let envelope_key = EnvelopeKey::new(&mut rng, peer)?;
    let envelope = seal_inner(envelope_key, me, row.start.as_deref(), header, ciphertext)?;
    row.state = ratchet.to_bytes();
    store.save_session(&peer_key, &row, used_at)?;
    Ok(envelope)
}

/// `content` encoded and padded for a ratchet message.
fn padded(content: &Content) -> Result<Zeroizing<Vec<u8>>, SessionError> {
    content
        .encode_padded()
        .map(Zeroizing::new)
        .map_err(|e| SessionError::Malformed(e.to_string()))
}

/// The envelope of one ratchet message, sealed with `envelope_key` (made for the peer), with
/// the session start `start` while the peer has not answered.
fn seal_inner(
    envelope_key: EnvelopeKey,
    me: &IdentityKeypair,
    start: Option<&[u8]>,
    header: Header,
    ciphertext: Vec<u8>,
) -> Result<Vec<u8>, SessionError> {
    let start = start
        .map(InitialHeader::from_bytes)
        .transpose()
        .map_err(|e| SessionError::Malformed(e.to_string()))?;
    let inner = Inner {
        sender: me.public().to_bytes(),
        start,
        header,
        ciphertext,
    };
    Ok(envelope_key.seal(&inner.encode())?)
}

/// A message key for one peer taken ahead of its message ([`take_ready_key`]), with the
/// session start its message must carry and the key of its envelope, made ahead too. It seals
/// one message ([`seal_ready`]); its keys are wiped when it is dropped, used or not.
pub struct ReadyKey {
    key: SendKey,
    envelope: EnvelopeKey,
    start: Option<Vec<u8>>,
    /// The session it was taken from.
    sid: [u8; 32],
    /// The peer's ratchet key in that session when the key was taken.
    remote: Option<[u8; 32]>,
}

impl ReadyKey {
    /// The header the message sealed with this key will carry.
    pub fn header(&self) -> shallot_crypto::ratchet::Header {
        self.key.header()
    }

    /// Whether the key may still be used, given the peer's sessions as the store holds them
    /// now (`Store::sessions`): the one [`seal_for`] would use is the one the key was taken
    /// from, and no message from the peer has taken a ratchet step in it since (its ratchet
    /// key is the same). A message from the peer opened meanwhile with a new ratchet key (by
    /// this process or another sharing the store), a new session, or the contact's sessions
    /// removed make the key stale: the next message must take the step the peer called for,
    /// as post-compromise security wants. Seals since (an acknowledgement, another process's
    /// message) do not: they took later keys of the same chain, saved past this one, and the
    /// peer keeps this one's place as a skipped message until it comes.
    ///
    /// The session must also still be past the key: its sending chain's next number above
    /// the key's. Our sending chain changes only with a step of ours, which follows one of the
    /// peer's, so with the peer's ratchet key unchanged this is the key's chain; a state put
    /// back from before the take (a restored backup) would give the key's number again, and
    /// is refused.
    pub fn is_current(&self, sessions: &[SessionRow]) -> bool {
        let number = self.key.header().n;
        sessions.first().is_some_and(|row| {
            row.sid == self.sid
                && ratchet_of(row).is_ok_and(|r| {
                    r.peer_ratchet_key() == self.remote
                        && r.next_send_number().is_some_and(|next| next > number)
                })
        })
    }
}

/// Takes the next message key of the session [`seal_for`] would use for `peer`, and saves
/// the session moved past it, in one transaction; `envelope` (made for `peer` beforehand,
/// outside any transaction) goes with it: once this returns, no message sealed later
/// (by this process or any other, or after a restart) can get the same key. `None` if there
/// is no session with `peer` yet.
pub fn take_ready_key(
    store: &Store,
    peer: &VerifyingKey,
    envelope: EnvelopeKey,
) -> Result<Option<ReadyKey>, SessionError> {
    store.atomically(|store| {
        let peer_key = peer.to_bytes();
        let Some(mut row) = store.sessions(&peer_key)?.into_iter().next() else {
            return Ok(None);
        };
        let mut ratchet = ratchet_of(&row)?;
        let key = ratchet
            .take_send_key(&mut rand::thread_rng())
            .map_err(SessionError::Undecryptable)?;
        row.state = ratchet.to_bytes();
        store.save_session(&peer_key, &row, 0)?;
        Ok(Some(ReadyKey {
            key,
            envelope,
            start: row.start.clone(),
            sid: row.sid,
            remote: ratchet.peer_ratchet_key(),
        }))
    })
}

/// Seals `content` with a key taken ahead for its peer: no store is touched, since the
/// session was saved past this key when it was taken, and the envelope's Diffie-Hellman was
/// done then too.
pub fn seal_ready(
    me: &IdentityKeypair,
    ready: ReadyKey,
    content: &Content,
) -> Result<Vec<u8>, SessionError> {
    let padded = padded(content)?;
    let (header, ciphertext) = ready
        .key
        .encrypt(&padded)
        .map_err(SessionError::Undecryptable)?;
    seal_inner(
        ready.envelope,
        me,
        ready.start.as_deref(),
        header,
        ciphertext,
    )
}

/// Opens an envelope sealed for `me`, advancing (or starting) the sender's session. Nothing is
/// saved unless the message decrypts, so a changed or replayed envelope leaves every session
/// as it was.
pub fn open(
    store: &Store,
    me: &IdentityKeypair,
    envelope: &[u8],
    now: u64,
) -> Result<Opened, SessionError> {
    store.atomically(|store| open_in(store, me, envelope, now))
}

fn open_in(
    store: &Store,
    me: &IdentityKeypair,
    envelope: &[u8],
    now: u64,
) -> Result<Opened, SessionError> {
    let inner = Zeroizing::new(sealed::open(me, envelope)?);
    let inner = Inner::decode(&inner).map_err(|e| SessionError::Malformed(e.to_string()))?;
    let sender = VerifyingKey::from_bytes(&inner.sender)
        .map_err(|_| SessionError::Malformed("sender is not a key".into()))?;
    let sessions = store.sessions(&inner.sender)?;
    let known = inner
        .start
        .as_ref()
        .and_then(|s| sessions.iter().find(|row| row.sid == s.ephemeral));
    let (plaintext, row, stepped) = match (&inner.start, known) {
        (Some(start), None) => {
            let prekey = store
                .prekeys()?
                .into_iter()
                .find(|p| p.id() == start.prekey_id)
                .ok_or(SessionError::UnknownPrekey)?;
            let (sk, ad) = x3dh::respond(me, &prekey, &sender, start)?;
            let mut ratchet = Ratchet::init_responder(sk, prekey.secret(), ad);
            let plaintext = ratchet
                .decrypt(&inner.header, &inner.ciphertext)
                .map_err(SessionError::Undecryptable)?;
            // The content must decode too before the start counts as seen: a start that
            // cannot be used must not block the genuine one.
            Content::decode_padded(&plaintext)
                .map_err(|e| SessionError::Malformed(e.to_string()))?;
            if !store.first_sight_of_start(&start.ephemeral, now)? {
                return Err(SessionError::ReplayedStart);
            }
            let row = SessionRow {
                sid: start.ephemeral,
                state: ratchet.to_bytes(),
                start: None,
            };
            (plaintext, row, true)
        }
        _ => {
            let candidates: Vec<&SessionRow> = match known {
                Some(row) => vec![row],
                None => sessions.iter().collect(),
            };
            let mut last = RatchetError::BadMessage;
            let mut opened = None;
            for row in candidates {
                let mut ratchet = ratchet_of(row)?;
                let remote = ratchet.peer_ratchet_key();
                match ratchet.decrypt(&inner.header, &inner.ciphertext) {
                    Ok(plaintext) => {
                        // A session other than the first in line may become it.
                        let stepped = ratchet.peer_ratchet_key() != remote
                            || sessions.first().is_none_or(|first| first.sid != row.sid);
                        let row = SessionRow {
                            sid: row.sid,
                            state: ratchet.to_bytes(),
                            // The peer has answered on this session: no more start headers.
                            start: None,
                        };
                        opened = Some((plaintext, row, stepped));
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            opened.ok_or(SessionError::Undecryptable(last))?
        }
    };
    let plaintext = Zeroizing::new(plaintext);
    let content =
        Content::decode_padded(&plaintext).map_err(|e| SessionError::Malformed(e.to_string()))?;
    store.save_session(&inner.sender, &row, now)?;
    Ok(Opened {
        sender: inner.sender,
        content,
        stepped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::x3dh::SignedPrekey;

    struct User {
        store: Store,
        id: IdentityKeypair,
    }

    fn user() -> User {
        let dir = shallot_rt::scratch::path("session");
        let store = Store::open(&dir).unwrap();
        let id = store.create_identity(None, 1).unwrap();
        User { store, id }
    }

    fn bundle(u: &User, id: u32) -> PrekeyBundle {
        let spk = SignedPrekey::generate(&mut rand::thread_rng(), id, 0, 10_000);
        u.store.add_prekey(&spk, 20_000).unwrap();
        spk.bundle(&u.id)
    }

    fn text(n: u8) -> Content {
        Content::Text {
            id: crate::ids::MessageId([n; 16]),
            sent_at: 100,
            text: format!("message {n}"),
        }
    }

    /// The ratchet header an envelope for `to` carries.
    fn header_of(to: &User, envelope: &[u8]) -> (Vec<u8>, u32) {
        let inner = sealed::open(&to.id, envelope).unwrap();
        let h = Inner::decode(&inner).unwrap().header;
        (h.dh.to_vec(), h.n)
    }

    #[test]
    fn two_sealers_on_one_store_never_share_a_message_key() {
        // Two handles on one file, as two processes without the directory lock would have:
        // every envelope must use its own message key (its own ratchet key and number), and
        // the saved state must have counted every one of them.
        let (alice, bob) = (user(), user());
        let b = bundle(&bob, 7);
        let first = seal_for(
            &alice.store,
            &alice.id,
            &bob.id.public(),
            &text(0),
            Some(&b),
            100,
        )
        .unwrap();
        let dir = alice.store.dir().to_path_buf();
        let seed = alice.id.secret_bytes();
        let peer = bob.id.public();
        const EACH: u8 = 40;
        let sealers: Vec<_> = (0..2)
            .map(|_| {
                let (dir, seed) = (dir.clone(), seed.clone());
                std::thread::spawn(move || {
                    let store = Store::open(&dir).unwrap();
                    let me = IdentityKeypair::from_secret_bytes(&seed);
                    (1..=EACH)
                        .map(|n| seal_for(&store, &me, &peer, &text(n), None, 101).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut envelopes = vec![first];
        for s in sealers {
            envelopes.extend(s.join().unwrap());
        }
        let mut keys: Vec<_> = envelopes.iter().map(|e| header_of(&bob, e)).collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), total, "a message key was used twice");
        let next = seal_for(&alice.store, &alice.id, &peer, &text(99), None, 102).unwrap();
        assert_eq!(
            header_of(&bob, &next).1 as usize,
            total,
            "the saved state went back"
        );
    }

    #[test]
    fn a_conversation_starts_and_continues() {
        let (alice, bob) = (user(), user());
        let b = bundle(&bob, 7);
        let e1 = seal_for(
            &alice.store,
            &alice.id,
            &bob.id.public(),
            &text(1),
            Some(&b),
            100,
        )
        .unwrap();
        let e2 = seal_for(
            &alice.store,
            &alice.id,
            &bob.id.public(),
            &text(2),
            None,
            101,
        )
        .unwrap();
        // Out of order, both open; both carried the start.
        assert_eq!(
            open(&bob.store, &bob.id, &e2, 102).unwrap().content,
            text(2)
        );
        assert_eq!(
            open(&bob.store, &bob.id, &e1, 103).unwrap().content,
            text(1)
        );
        let r = seal_for(&bob.store, &bob.id, &alice.id.public(), &text(3), None, 104).unwrap();
        let got = open(&alice.store, &alice.id, &r, 105).unwrap();
        assert_eq!(
            (got.sender, got.content),
            (bob.id.public().to_bytes(), text(3))
        );
        // After the answer, Alice's messages no longer carry the start.
        let e4 = seal_for(
            &alice.store,
            &alice.id,
            &bob.id.public(),
            &text(4),
            None,
            106,
        )
        .unwrap();
        assert!(
            alice.store.sessions(&bob.id.public().to_bytes()).unwrap()[0]
                .start
                .is_none()
        );
        assert_eq!(
            open(&bob.store, &bob.id, &e4, 107).unwrap().content,
            text(4)
        );
    }

    /// Cells a deposit of `envelope` with no puzzle solution takes to a mailbox relay at the
    /// end of a 3-hop circuit.
    fn deposit_cells(envelope: &[u8]) -> usize {
        let deposit = shallot_proto::relay_msg::RelayMsg::Mailbox(
            shallot_proto::mailbox::MailboxMsg::Deposit {
                req: u32::MAX,
                mailbox: shallot_proto::mailbox::MailboxId([0xff; 32]),
                envelope: envelope.to_vec(),
                pow: None,
            },
        );
        let bytes = deposit.encode().unwrap();
        shallot_proto::relay_msg::fragment(&bytes, shallot_crypto::onion::body_len(3))
            .unwrap()
            .len()
    }

    #[test]
    fn the_longest_short_message_is_deposited_in_one_cell() {
        let (alice, bob) = (user(), user());
        let b = bundle(&bob, 7);
        // Text framing (27 bytes) and the length prefix (2) inside the smallest bucket.
        let longest = crate::e2e::wire::BUCKETS[0] - 2 - 27;
        let seal = |len: usize, bundle: Option<&PrekeyBundle>| {
            let content = Content::Text {
                id: crate::ids::MessageId([9; 16]),
                sent_at: 100,
                text: "x".repeat(len),
            };
            seal_for(
                &alice.store,
                &alice.id,
                &bob.id.public(),
                &content,
                bundle,
                100,
            )
            .unwrap()
        };
        // With a session start (Bob has not answered yet) and without (once he has), the
        // same size.
        let started = seal(longest, Some(&b));
        open(&bob.store, &bob.id, &started, 101).unwrap();
        let answer =
            seal_for(&bob.store, &bob.id, &alice.id.public(), &text(3), None, 102).unwrap();
        open(&alice.store, &alice.id, &answer, 103).unwrap();
        let ratchet_only = seal(longest, None);
        let carries_start = |envelope: &[u8]| {
            let inner = sealed::open(&bob.id, envelope).unwrap();
            Inner::decode(&inner).unwrap().start.is_some()
        };
        assert!(carries_start(&started));
        assert!(!carries_start(&ratchet_only));
        for envelope in [started, ratchet_only, seal(1, None)] {
            assert_eq!(envelope.len(), 175 + crate::e2e::wire::BUCKETS[0]);
            assert_eq!(deposit_cells(&envelope), 1);
        }
        let longer = seal(longest + 1, None);
        assert_eq!(longer.len(), 175 + crate::e2e::wire::BUCKETS[1]);
        assert_eq!(deposit_cells(&longer), 3);
    }

    #[test]
    fn replays_and_tampering_change_nothing() {
        let (alice, bob) = (user(), user());
        let b = bundle(&bob, 1);
        let e1 = seal_for(
            &alice.store,
            &alice.id,
            &bob.id.public(),
            &text(1),
            Some(&b),
            100,
        )
        .unwrap();
        open(&bob.store, &bob.id, &e1, 101).unwrap();
        assert!(
            open(&bob.store, &bob.id, &e1, 102).is_err(),
            "replay refused"
        );
        let e2 = seal_for(
            &alice.store,
            &alice.id,
            &bob.id.public(),
            &text(2),
            None,
            103,
        )
        .unwrap();
        let mut bad = e2.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            open(&bob.store, &bob.id, &bad, 104),
            Err(SessionError::Envelope(_))
        ));
        assert_eq!(
            open(&bob.store, &bob.id, &e2, 105).unwrap().content,
            text(2)
        );
    }

    #[test]
    fn simultaneous_starts_converge() {
        let (alice, bob) = (user(), user());
        let (ba, bb) = (bundle(&alice, 1), bundle(&bob, 2));
        let a1 = seal_for(
            &alice.store,
            &alice.id,
            &bob.id.public(),
            &text(1),
            Some(&bb),
            100,
        )
        .unwrap();
        let b1 = seal_for(
            &bob.store,
            &bob.id,
            &alice.id.public(),
            &text(2),
            Some(&ba),
            100,
        )
        .unwrap();
        assert_eq!(
            open(&bob.store, &bob.id, &a1, 101).unwrap().content,
            text(1)
        );
        assert_eq!(
            open(&alice.store, &alice.id, &b1, 101).unwrap().content,
            text(2)
        );
        for n in 3..8u8 {
            let a = seal_for(
                &alice.store,
                &alice.id,
                &bob.id.public(),
                &text(n),
                None,
                102 + u64::from(n),
            )
            .unwrap();
            assert_eq!(
                open(&bob.store, &bob.id, &a, 103 + u64::from(n))
                    .unwrap()
                    .content,
                text(n)
            );
            let b = seal_for(
                &bob.store,
                &bob.id,
                &alice.id.public(),
                &text(n + 100),
                None,
                104 + u64::from(n),
            )
            .unwrap();
            assert_eq!(
                open(&alice.store, &alice.id, &b, 105 + u64::from(n))
                    .unwrap()
                    .content,
                text(n + 100)
            );
        }
    }

    #[test]
    fn a_start_needs_a_valid_bundle_and_a_held_prekey() {
        let (alice, bob, eve) = (user(), user(), user());
        assert!(matches!(
            seal_for(
                &alice.store,
                &alice.id,
                &bob.id.public(),
                &text(1),
                None,
                100
            ),
            Err(SessionError::NeedBundle)
        ));
        // Eve's bundle offered as Bob's.
        let evil = bundle(&eve, 1);
        assert!(matches!(
            seal_for(
                &alice.store,
                &alice.id,
                &bob.id.public(),
                &text(1),
                Some(&evil),
                100
            ),
            Err(SessionError::Bundle(_))
        ));
        // A start naming a prekey Bob dropped.
        let b = bundle(&bob, 5);
        let e = seal_for(
            &alice.store,
            &alice.id,
            &bob.id.public(),
            &text(1),
            Some(&b),
            100,
        )
        .unwrap();
        bob.store.drop_old_prekeys(30_000).unwrap();
        assert!(matches!(
            open(&bob.store, &bob.id, &e, 101),
            Err(SessionError::UnknownPrekey)
        ));
    }

    fn envelope_key(peer: &VerifyingKey) -> EnvelopeKey {
        EnvelopeKey::new(&mut rand::thread_rng(), peer).unwrap()
    }

    #[test]
    fn a_key_taken_ahead_is_never_given_again_even_after_a_restart() {
        let (alice, bob) = (user(), user());
        let peer = bob.id.public();
        assert!(
            take_ready_key(&alice.store, &peer, envelope_key(&peer))
                .unwrap()
                .is_none(),
            "no session, no key"
        );
        let b = bundle(&bob, 7);
        let first = seal_for(&alice.store, &alice.id, &peer, &text(1), Some(&b), 100).unwrap();
        let ready = take_ready_key(&alice.store, &peer, envelope_key(&peer))
            .unwrap()
            .unwrap();
        // The process stops here, the key unused in its memory; a new one opens the store.
        let reopened = Store::open(alice.store.dir()).unwrap();
        let after = seal_for(&reopened, &alice.id, &peer, &text(2), None, 101).unwrap();
        let late = seal_ready(&alice.id, ready, &text(3)).unwrap();
        let keys: Vec<_> = [&first, &after, &late]
            .iter()
            .map(|e| header_of(&bob, e))
            .collect();
        assert_eq!(
            keys.iter().map(|k| k.1).collect::<Vec<_>>(),
            [0, 2, 1],
            "the key taken ahead was number 1, and the restarted sealer went on from 2"
        );
        // All three open, in the order they arrive; the taken key's message still carries the
        // session start, as the peer has not answered.
        for (e, n) in [(&first, 1), (&after, 2), (&late, 3)] {
            assert_eq!(open(&bob.store, &bob.id, e, 102).unwrap().content, text(n));
        }
        let inner = Inner::decode(&sealed::open(&bob.id, &late).unwrap()).unwrap();
        assert!(inner.start.is_some());
    }
}
