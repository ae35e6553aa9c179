//! A realistic UI state for the tests: a few contacts, a conversation with a message in
//! every delivery state, a contact request and a healthy network.

use rand::SeedableRng;
use shallot_crypto::{Address, IdentityKeypair};

use super::app::App;
use super::model::{
    AppEvent, ContactRequest, ContactView, Delivery, MailboxState, MessageView, NetworkStatus,
    UiOptions,
};

/// 2024-06-03 14:00 UTC.
pub(crate) const T: u64 = 1_717_423_200;

/// A valid address, the same for the same seed.
pub(crate) fn address(seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Address::new(IdentityKeypair::generate(&mut rng).public()).to_string()
}

/// One message with alice (or whoever `contact` is).
pub(crate) fn message(
    id: u32,
    contact: &str,
    text: &str,
    at: u64,
    delivery: Option<Delivery>,
) -> MessageView {
    MessageView {
        id: format!("{id:04x}"),
        seq: u64::from(id),
        contact: contact.into(),
        outgoing: delivery.is_some(),
        text: text.into(),
        sent_at: at,
        received_at: delivery.is_none().then_some(at),
        delivery,
    }
}

/// The conversation with alice: an incoming message and one of mine in every state.
pub(crate) fn alice_messages() -> Vec<MessageView> {
    vec![
        message(1, "alice", "hi! is this the new onion messenger?", T, None),
        message(
            2,
            "alice",
            "yes, three hops and no metadata",
            T + 60,
            Some(Delivery::Delivered),
        ),
        message(
            3,
            "alice",
            "first copy",
            T + 120,
            Some(Delivery::Stored { copies: 1 }),
        ),
        message(
            4,
            "alice",
            "second copy",
            T + 180,
            Some(Delivery::Stored { copies: 2 }),
        ),
        message(
            5,
            "alice",
            "all three copies",
            T + 240,
            Some(Delivery::Stored { copies: 3 }),
        ),
        message(6, "alice", "on its way", T + 300, Some(Delivery::Sending)),
        message(
            7,
            "alice",
            "this one failed",
            T + 360,
            Some(Delivery::Failed {
                reason: "no circuit to the mailboxes".into(),
            }),
        ),
    ]
}

/// The snapshot behind [`demo_app`].
pub(crate) fn demo_snapshot() -> AppEvent {
    let contact = |name: &str, seed, unread, last| ContactView {
        name: name.into(),
        address: address(seed),
        unread,
        last_activity: last,
    };
    let mut messages = alice_messages();
    messages.push(message(20, "bob", "lunch tomorrow?", T - 3600, None));
    messages.push(message(21, "bob", "or friday", T - 3500, None));
    AppEvent::Snapshot {
        me: address(0),
        contacts: vec![
            contact("alice", 1, 0, Some(T + 360)),
            contact("bob", 2, 2, Some(T - 3500)),
            contact("carol", 3, 0, None),
        ],
        messages,
        requests: vec![ContactRequest {
            address: address(9),
            messages: vec![message(
                30,
                &address(9),
                "hello, we met at the meetup",
                T - 60,
                None,
            )],
        }],
    }
}

/// The network as the status bar should show it: `consensus 2m old · 8 relays · 3 circuits
/// · mailbox: subscribed (3/3)`.
pub(crate) fn healthy() -> NetworkStatus {
    NetworkStatus {
        consensus_age_secs: Some(120),
        relays_known: 8,
        circuits_ready: 3,
        mailbox: MailboxState::Subscribed { copies: 3 },
        offline: None,
    }
}

/// An app holding the demo state with alice's conversation open.
pub(crate) fn demo_app(options: UiOptions) -> App {
    let mut app = App::new(options);
    app.tick(T + 400);
    app.apply(demo_snapshot());
    app.apply(AppEvent::Status(healthy()));
    app
}

/// The demo app opened on alice with the cursor in the input line.
pub(crate) fn alice_app() -> App {
    let mut app = demo_app(UiOptions {
        select_contact: Some("alice".into()),
        focus_input: true,
        ..UiOptions::default()
    });
    app.take_actions();
    app
}
