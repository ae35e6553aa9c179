//! Prints the chat UI at 80x24, drawn by the real widgets from a realistic state: a few
//! contacts and a request, a conversation with a message in every delivery state, a draft
//! in the input line and a healthy network in the status bar; then the network panel (F2).
//! The README's captures come from here: `cargo run -p shallot-tui --example ui_capture`.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use rand::SeedableRng;
use shallot_crypto::{Address, IdentityKeypair};
use shallot_tui::model::{
    CircuitView, ClockView, ConsensusView, GuardView, ReplicaAnswer, ReplicaView,
};
use shallot_tui::{
    render_to_text, App, AppEvent, ContactRequest, ContactView, Delivery, MailboxState,
    MessageView, NetworkDetails, NetworkStatus, UiOptions,
};

/// 2024-06-03 18:40 UTC.
const NOW: u64 = 1_717_440_000;

fn address(seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    Address::new(IdentityKeypair::generate(&mut rng).public()).to_string()
}

fn message(
    id: u32,
    contact: &str,
    text: &str,
    ago: u64,
    delivery: Option<Delivery>,
) -> MessageView {
    let at = NOW - ago;
    MessageView {
        id: format!("{id:016x}"),
        seq: u64::from(id),
        contact: contact.to_owned(),
        outgoing: delivery.is_some(),
        text: text.to_owned(),
        sent_at: at,
        received_at: delivery.is_none().then_some(at),
        delivery,
    }
}

fn contact(name: &str, seed: u64, unread: usize, ago: Option<u64>) -> ContactView {
    ContactView {
        name: name.to_owned(),
        address: address(seed),
        unread,
        last_activity: ago.map(|a| NOW - a),
    }
}

fn main() {
    let mut app = App::new(UiOptions {
        select_contact: Some("alice".to_owned()),
        focus_input: true,
        ..UiOptions::default()
    });
    app.tick(NOW);
    let stored = |copies| Some(Delivery::Stored { copies });
    let messages = vec![
        message(1, "alice", "are you on shallot yet?", 1500, None),
        message(
            2,
            "alice",
            "set it up: three hops, no metadata",
            1440,
            Some(Delivery::Delivered),
        ),
        message(
            3,
            "alice",
            "the draft is in the shared folder:\n- intro\n- threat model",
            1380,
            stored(3),
        ),
        message(4, "alice", "reading it now", 900, None),
        message(5, "alice", "ping me when you're done", 600, stored(2)),
        message(6, "alice", "section 3 needs a diagram", 300, stored(1)),
        message(
            7,
            "alice",
            "and a citation for ntor",
            240,
            Some(Delivery::Sending),
        ),
        message(
            8,
            "alice",
            "sent from the train",
            120,
            Some(Delivery::Failed {
                reason: "no circuit to alice's mailboxes".to_owned(),
            }),
        ),
        message(20, "bob", "lunch tomorrow?", 7200, None),
        message(21, "bob", "or friday", 7000, None),
    ];
    app.apply(AppEvent::Snapshot {
        me: address(0),
        contacts: vec![
            contact("alice", 1, 0, Some(120)),
            contact("bob", 2, 2, Some(7000)),
            contact("carol", 3, 0, Some(86_400)),
            contact("dave", 4, 0, None),
        ],
        messages,
        requests: vec![ContactRequest {
            address: address(9),
            messages: vec![message(
                30,
                &address(9),
                "hi, we met at the meetup",
                3000,
                None,
            )],
        }],
    });
    app.apply(AppEvent::Status(NetworkStatus {
        consensus_age_secs: Some(120),
        relays_known: 8,
        circuits_ready: 3,
        mailbox: MailboxState::Subscribed { copies: 3 },
        offline: None,
    }));
    for c in "on my way".chars() {
        app.handle_event(Event::Key(KeyEvent::new(
            KeyCode::Char(c),
            KeyModifiers::NONE,
        )));
    }
    print!("{}", render_to_text(&mut app, 80, 24));
    println!();
    app.apply(AppEvent::Network(NetworkDetails {
        guards: ["relay3", "relay6", "relay2"]
            .iter()
            .map(|g| GuardView {
                relay: (*g).into(),
                since: Some(NOW - 3 * 86_400 - 7200),
                unlisted_since: None,
            })
            .collect(),
        circuits: vec![
            CircuitView {
                relays: vec!["relay3".into(), "relay5".into(), "relay1".into()],
                age_secs: 95,
            },
            CircuitView {
                relays: vec!["relay6".into(), "relay2".into()],
                age_secs: 40,
            },
        ],
        replicas: vec![
            ReplicaView {
                relay: "relay1".into(),
                open: true,
                last: Some((ReplicaAnswer::Answered, NOW - 4)),
            },
            ReplicaView {
                relay: "relay4".into(),
                open: true,
                last: Some((ReplicaAnswer::Answered, NOW - 4)),
            },
            ReplicaView {
                relay: "relay8".into(),
                open: false,
                last: Some((
                    ReplicaAnswer::NoAnswer("no answer in time".into()),
                    NOW - 35,
                )),
            },
        ],
        consensus: Some(ConsensusView {
            valid_after: NOW - 120,
            valid_until: NOW + 3480,
            signed_by: vec!["auth1".into(), "auth2".into(), "auth3".into()],
            authorities: 3,
        }),
        clock: Some(ClockView {
            skew_secs: 0,
            authority: "auth2".into(),
            measured_at: NOW - 95,
        }),
    }));
    app.handle_event(Event::Key(KeyEvent::new(KeyCode::F(2), KeyModifiers::NONE)));
    print!("{}", render_to_text(&mut app, 80, 24));
}
