//! The chat UI's event loop driven with key events against a real network: a message typed
//! and sent in the UI arrives at another client, and that client's reply appears in the UI,
//! with the sent message's delivery state updated as the network reports it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use shallot::testnet::{Testnet, TestnetOptions};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::messenger::MessengerEvent;
use shallot_client::store::OutState;
use shallot_tui::crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use shallot_tui::ratatui::Terminal;
use shallot_tui::shared_backend::SharedBackend;
use shallot_tui::{self as ui, UiOptions};

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

async fn wait_for(screen: &SharedBackend, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !screen.screen().contains(text) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the UI never showed {text:?}:\n{}",
            screen.screen()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Types `text` into the chat, key by key.
fn type_text(input: &tokio::sync::mpsc::UnboundedSender<Event>, text: &str) {
    for c in text.chars() {
        input.send(key(KeyCode::Char(c))).unwrap();
    }
}

/// Presses Enter and waits until Bob has received `text`.
async fn send_and_see_bob_get(
    input: &tokio::sync::mpsc::UnboundedSender<Event>,
    got: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    text: &str,
) {
    input.send(key(KeyCode::Enter)).unwrap();
    let arrived = tokio::time::timeout(Duration::from_secs(30), got.recv())
        .await
        .unwrap();
    assert_eq!(arrived.as_deref(), Some(text));
}

/// Waits until `me` holds a message key taken ahead for Bob.
async fn key_taken(me: &TestUser) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !me.messenger.key_ready_for("bob").unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "no message key was taken for Bob"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn typing_a_message_reaches_bob_and_his_reply_appears() {
    rt().block_on(async {
        let mut options = TestnetOptions::new(scratch("chat-ui"));
        options.first_octet = 140;
        let net = Testnet::start(options).await.unwrap();
        net.wait_ready(Duration::from_secs(60)).await.unwrap();
        let me = TestUser::new("ui-me", &net.network).await;
        let bob = TestUser::new("ui-bob", &net.network).await;
        me.add_contact("bob", &bob);
        bob.add_contact("me", &me);

        // Bob answers whatever he receives.
        let (tx, mut bob_events) = tokio::sync::mpsc::unbounded_channel();
        bob.messenger.set_events(tx);
        let _bob_receiver = bob.messenger.spawn_receiver();
        let bob_messenger = bob.messenger.clone();
        let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(e) = bob_events.recv().await {
                if let MessengerEvent::Message(m) = e {
                    if !m.outgoing {
                        let _ = got_tx.send(m.text.clone());
                        let _ = bob_messenger
                            .send("me", &format!("got: {}", m.text), OnFailure::Retry)
                            .await;
                    }
                }
            }
        });

        // The real backend and the real event loop, on an in-memory terminal.
        let screen = SharedBackend::new(80, 24);
        let (input_tx, input_rx) = tokio::sync::mpsc::unbounded_channel();
        let (ui_tx, ui_rx) = tokio::sync::mpsc::unbounded_channel();
        let (act_tx, act_rx) = tokio::sync::mpsc::unbounded_channel();
        let backend = tokio::spawn(shallot_tui::chat::run(me.messenger.clone(), ui_tx, act_rx));
        let ui_screen = screen.clone();
        let ui_task = tokio::spawn(async move {
            let mut terminal = Terminal::new(ui_screen).unwrap();
            let options = UiOptions {
                select_contact: Some("bob".into()),
                focus_input: true,
                ..UiOptions::default()
            };
            ui::run(&mut terminal, input_rx, ui_rx, act_tx, options).await
        });
        wait_for(&screen, "mailbox: subscribed").await;

        type_text(&input_tx, "hello through the onion");
        // Bob has it...
        send_and_see_bob_get(&input_tx, &mut got_rx, "hello through the onion").await;
        // ...his reply shows in the conversation, and my message shows as delivered.
        wait_for(&screen, "got: hello through the onion").await;
        wait_for(&screen, "hello through the onion ✓✓").await;

        // With the session started, typing the next message through the real event loop also
        // takes its key (the chat reports the typing; `docs/spec.md` §10.7), and the message
        // sent on Enter arrives. (Whether it used that key is checked in the messenger's tests
        // and `tests/messaging_e2e.rs`.)
        type_text(&input_tx, "and a second one");
        key_taken(&me).await;
        send_and_see_bob_get(&input_tx, &mut got_rx, "and a second one").await;
        wait_for(&screen, "got: and a second one").await;

        // Bob writes while I type a third. Once he has my acknowledgement of his reply (it
        // carries my newest ratchet key), his next message takes a ratchet step: the key
        // taken for my third predates it and is dropped when his message is opened, then
        // taken again (with the step his message calls for) once it is recorded, though I
        // type nothing more.
        eventually(
            "Bob's reply acknowledged",
            Duration::from_secs(30),
            || async {
                let history = bob.messenger.store().history().unwrap();
                history
                    .iter()
                    .any(|m| {
                        m.outgoing
                            && m.text == "got: and a second one"
                            && m.state == Some(OutState::Delivered)
                    })
                    .then_some(())
            },
        )
        .await;
        type_text(&input_tx, "and a third");
        key_taken(&me).await;
        let before = me.messenger.ready_key_header("bob").unwrap().unwrap();
        bob.messenger
            .send("me", "are you still there?", OnFailure::Fail)
            .await
            .unwrap();
        wait_for(&screen, "are you still there?").await;
        eventually(
            "a key taken again on a new ratchet key",
            Duration::from_secs(20),
            || async {
                let now = me.messenger.ready_key_header("bob").unwrap()?;
                (now.dh != before.dh).then_some(())
            },
        )
        .await;
        send_and_see_bob_get(&input_tx, &mut got_rx, "and a third").await;

        // Esc to the contacts pane, q quits; the backend stops.
        input_tx.send(key(KeyCode::Esc)).unwrap();
        input_tx.send(key(KeyCode::Char('q'))).unwrap();
        tokio::time::timeout(Duration::from_secs(10), ui_task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), backend)
            .await
            .unwrap()
            .unwrap();
        net.stop().await;
    });
}
