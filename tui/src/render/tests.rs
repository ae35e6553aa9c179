//! Rendering tests: the main states of the UI drawn on an in-memory terminal, checked by
//! the text on screen.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::help::SECTIONS;
use crate::model::{
    AppEvent, CircuitView, ClockView, ConsensusView, ContactRequest, Delivery, GuardView,
    MailboxState, NetworkDetails, NetworkStatus, Offline, ReplicaAnswer, ReplicaView, UiOptions,
};
use crate::test_support::*;
use shallot_client::e2e::wire::MAX_TEXT_LEN;

fn press(app: &mut App, code: KeyCode) {
    app.handle_event(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        press(app, KeyCode::Char(c));
    }
}

/// The screen with its lines joined by spaces, to find text that wrapped.
fn flat(screen: &str) -> String {
    screen
        .lines()
        .map(|l| l.trim_matches(|c: char| "│┃║ ".contains(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 80x24 screen of the demo state, with alice's conversation open and the cursor in
/// the input line: every pane, every delivery mark, the status bar.
const ALICE_80X24: &str = "\
┌ Contacts ──────────────┐┌ alice · shallot1pl7r6pv9rclqvaqn7njk6tlmeuadyf… ───┐
│Requests (1)            ││                                                    │
│  shallot1pqrfpvy8y… (1)││                                                    │
│Contacts (3)            ││                                                    │
│▸ alice                 ││                                                    │
│  bob                (2)││                                                    │
│  carol                 ││                                                    │
│                        ││                                                    │
│                        ││                                                    │
│                        ││──────────────────── 2024-06-03 ────────────────────│
│                        ││14:00 alice hi! is this the new onion messenger?    │
│                        ││14:01 me    yes, three hops and no metadata ✓✓      │
│                        ││14:02 me    first copy ✓1                           │
│                        ││14:03 me    second copy ✓2                          │
│                        ││14:04 me    all three copies ✓3                     │
│                        ││14:05 me    on its way …                            │
│                        ││14:06 me    this one failed                         │
│                        ││            ✗ failed: no circuit to the mailboxes   │
│                        ││            (r: retry)                              │
│                        │└────────────────────────────────────────────────────┘
│                        │┏ to alice ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
│                        │┃Enter sends · Alt-Enter new line                    ┃
└ a add · i me · ? keys ─┘┗━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┛
consensus 2m old · 8 relays · 3 circuits · mailbox: subscribed (3/3)      ? help
";

#[test]
fn conversation_at_80x24() {
    let mut app = alice_app();
    assert_eq!(render_to_text(&mut app, 80, 24), ALICE_80X24);
}

#[test]
fn every_delivery_state_and_an_incoming_message_show_as_text() {
    let mut app = alice_app();
    let screen = render_to_text(&mut app, 80, 24);
    for line in [
        "14:00 alice hi! is this the new onion messenger?",
        "14:01 me    yes, three hops and no metadata ✓✓",
        "14:02 me    first copy ✓1",
        "14:03 me    second copy ✓2",
        "14:04 me    all three copies ✓3",
        "14:05 me    on its way …",
    ] {
        assert!(screen.contains(line), "missing {line:?} in\n{screen}");
    }
    assert!(flat(&screen).contains("✗ failed: no circuit to the mailboxes (r: retry)"));
}

#[test]
fn a_delivery_change_shows_at_once() {
    let mut app = alice_app();
    app.apply(AppEvent::DeliveryChanged {
        id: "0006".into(),
        delivery: Delivery::Stored { copies: 2 },
    });
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("14:05 me    on its way ✓2"), "{screen}");
}

#[test]
fn empty_state_says_what_to_do() {
    let mut app = App::new(UiOptions::default());
    app.apply(AppEvent::Snapshot {
        me: address(0),
        contacts: vec![],
        messages: vec![],
        requests: vec![],
    });
    let screen = render_to_text(&mut app, 80, 24);
    let text = flat(&screen);
    assert!(
        text.contains("Press a to add a contact, i to show your address"),
        "{screen}"
    );
    assert!(screen.contains("no contacts yet"));
    assert!(screen.contains("no consensus yet · 0 relays · 0 circuits · mailbox: offline"));
}

#[test]
fn help_lists_every_key_at_80x24() {
    let mut app = alice_app();
    press(&mut app, KeyCode::F(1));
    // Every row is on screen at once or after scrolling down.
    let mut screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Anywhere"));
    for _ in 0..40 {
        press(&mut app, KeyCode::Down);
        screen.push_str(&render_to_text(&mut app, 80, 24));
    }
    for section in SECTIONS {
        assert!(screen.contains(section.title), "{} missing", section.title);
        for k in section.keys {
            let row = screen
                .lines()
                .find(|l| l.contains(k.keys) && l.contains(k.does));
            assert!(row.is_some(), "{k:?} missing from\n{screen}");
        }
    }
}

#[test]
fn help_scrolls_when_it_does_not_fit() {
    let mut app = alice_app();
    press(&mut app, KeyCode::F(1));
    let top = render_to_text(&mut app, 50, 20);
    assert!(top.contains("Anywhere"));
    assert!(!top.contains("Marks on my messages"));
    for _ in 0..100 {
        press(&mut app, KeyCode::Down);
    }
    let bottom = render_to_text(&mut app, 50, 20);
    assert!(bottom.contains("Marks on my messages"), "{bottom}");
    assert!(bottom.contains("delivered"));
}

#[test]
fn add_contact_dialog_shows_a_bad_address_error() {
    let mut app = demo_app(UiOptions::default());
    type_text(&mut app, "a");
    type_text(&mut app, "dave");
    press(&mut app, KeyCode::Tab);
    let mut typo = address(4);
    typo.replace_range(40..41, if &typo[40..41] == "q" { "p" } else { "q" });
    app.handle_event(Event::Paste(typo.clone()));
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Add a contact"));
    assert!(screen.contains("  dave"));
    assert!(screen.contains(&format!("> {typo}")), "{screen}");
    assert!(
        screen.contains("✗ address checksum does not match: check it for typos"),
        "{screen}"
    );
    press(&mut app, KeyCode::Enter);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("✗ address checksum does not match"));
    // Too short, when Enter is pressed: the length error.
    for _ in 0..60 {
        press(&mut app, KeyCode::Backspace);
    }
    press(&mut app, KeyCode::Enter);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(
        screen.contains("✗ an address has 67 characters, this has 7"),
        "{screen}"
    );
}

#[test]
fn my_address_is_shown_whole_on_one_line() {
    let mut app = alice_app();
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, "i");
    let screen = render_to_text(&mut app, 80, 24);
    let me = address(0);
    let line = screen.lines().find(|l| l.contains(&me));
    assert!(line.is_some(), "{screen}");
    assert!(screen.contains("c copies it to the clipboard"), "{screen}");
}

#[test]
fn contact_request_view_offers_accept_and_ignore() {
    let mut app = demo_app(UiOptions::default());
    let requester = address(9);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Requests (1)"));
    assert!(screen.contains("▸ shallot1pqrfpvy8y… (1)"));
    assert!(screen.contains("Contact request"));
    let right: String = screen
        .lines()
        .map(|l| {
            l.chars()
                .skip(27)
                .take(52)
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .collect();
    assert!(right.contains(&requester), "{screen}");
    assert!(screen.contains("y accept (you name them) · n ignore"));
    assert!(screen.contains("hello, we met at the meetup"));
    type_text(&mut app, "y");
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Accept contact request"));
    assert!(screen.contains("Name them"));
}

#[test]
fn status_bar_says_what_the_network_is_doing() {
    let mut app = alice_app();
    let screen = render_to_text(&mut app, 80, 24);
    let last = screen.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("consensus 2m old · 8 relays · 3 circuits · mailbox: subscribed (3/3)")
    );
    app.apply(AppEvent::Status(NetworkStatus {
        consensus_age_secs: Some(30),
        relays_known: 1,
        circuits_ready: 1,
        mailbox: MailboxState::Connecting,
        offline: None,
    }));
    app.apply(AppEvent::Notice("contact added".into()));
    let screen = render_to_text(&mut app, 80, 24);
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines[22], "› contact added", "{screen}");
    assert!(lines[23].starts_with("consensus 30s old · 1 relay · 1 circuit · mailbox: connecting…"));
    // The consensus ages between updates, and the notice goes after a while.
    app.tick(T + 400 + 600);
    let screen = render_to_text(&mut app, 80, 24);
    let last = screen.lines().last().unwrap_or_default();
    assert!(last.starts_with("consensus 10m old"), "{screen}");
    assert!(!screen.contains("contact added"));
    // A long notice is cut to its row; the network status stays whole below it.
    app.apply(AppEvent::Notice(format!(
        "could not reach the directory: {}",
        "x".repeat(80)
    )));
    let screen = render_to_text(&mut app, 80, 24);
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[22].starts_with("› could not reach the directory: xxx"));
    assert!(lines[22].ends_with('…'));
    assert_eq!(lines[22].chars().count(), 80);
    assert!(lines[23].starts_with("consensus 10m old"), "{screen}");
}

/// An error of many lines shows as one, with the rest a key away in the log.
#[test]
fn long_errors_show_one_line_and_the_log_has_the_rest() {
    let mut app = alice_app();
    app.apply(AppEvent::Notice(
        "not sent to alice: no circuit\n  relay 1: refused\n  relay 2: timed out".into(),
    ));
    let screen = render_to_text(&mut app, 80, 24);
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[22].starts_with("› not sent to alice: no circuit · Ctrl-L details"));
    assert!(!screen.contains("relay 2"));
    press(&mut app, KeyCode::Esc);
    app.handle_event(Event::Key(KeyEvent::new(
        KeyCode::Char('l'),
        KeyModifiers::CONTROL,
    )));
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Log"), "{screen}");
    assert!(
        screen.contains("• not sent to alice: no circuit"),
        "{screen}"
    );
    assert!(screen.contains("relay 2: timed out"), "{screen}");
}

/// Offline: when the next attempt is, the key that makes it now, and why, on one line.
#[test]
fn offline_says_when_it_retries_and_how_to_retry_now() {
    let mut app = alice_app();
    app.apply(AppEvent::Status(NetworkStatus {
        offline: Some(Offline {
            retry_at: T + 400 + 8,
            error: "no authority answered\n  a1: connection refused".into(),
        }),
        ..NetworkStatus::default()
    }));
    let screen = render_to_text(&mut app, 80, 24);
    let last = screen.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("offline, retrying in 8 s · Ctrl-R retry now · no authority answered"),
        "{screen}"
    );
    app.tick(T + 400 + 5);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("offline, retrying in 3 s"), "{screen}");
}

/// My messages to someone who has answered nothing yet say what they wait for.
#[test]
fn unanswered_messages_wait_for_acceptance() {
    let mut app = demo_app(UiOptions {
        select_contact: Some("carol".into()),
        focus_input: false,
        ..UiOptions::default()
    });
    app.apply(AppEvent::MessageAdded(message(
        40,
        "carol",
        "hello carol",
        T + 390,
        Some(Delivery::Stored { copies: 3 }),
    )));
    let screen = render_to_text(&mut app, 80, 24);
    assert!(
        flat(&screen).contains("hello carol ✓3 waiting for them to accept"),
        "{screen}"
    );
    app.apply(AppEvent::MessageAdded(message(
        41,
        "carol",
        "hi!",
        T + 395,
        None,
    )));
    let screen = render_to_text(&mut app, 80, 24);
    assert!(!screen.contains("waiting for them"), "{screen}");
}

/// Near the limit the input box counts bytes; over it, in red, and Enter keeps the text.
#[test]
fn the_input_counts_bytes_near_the_limit() {
    let mut app = alice_app();
    app.handle_event(Event::Paste("x".repeat(100)));
    let screen = render_to_text(&mut app, 80, 24);
    assert!(!screen.contains("bytes"));
    app.handle_event(Event::Paste("x".repeat(MAX_TEXT_LEN)));
    let screen = render_to_text(&mut app, 80, 24);
    assert!(
        screen.contains(&format!("{}/{MAX_TEXT_LEN} bytes", MAX_TEXT_LEN + 100)),
        "{screen}"
    );
    assert!(app
        .handle_event(Event::Key(KeyEvent::new(
            KeyCode::Enter,
            KeyModifiers::NONE
        )))
        .is_empty());
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("too long to send"), "{screen}");
    assert!(screen.contains(&format!("{}/{MAX_TEXT_LEN} bytes", MAX_TEXT_LEN + 100)));
}

#[test]
fn input_grows_to_five_lines_and_follows_the_cursor() {
    let mut app = alice_app();
    for i in 1..=7 {
        type_text(&mut app, &format!("line {i}"));
        app.handle_event(Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)));
    }
    type_text(&mut app, "last");
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("┃last"));
    assert!(screen.contains("┃line 4"));
    assert!(!screen.contains("line 3"));
    let rows = screen
        .lines()
        .filter(|l| l.contains("┃line") || l.contains("┃last"))
        .count();
    assert_eq!(rows, 5);
}

#[test]
fn focus_shows_as_a_heavy_frame() {
    let mut app = alice_app();
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("┏ to alice"));
    assert!(screen.contains("┌ Contacts"));
    press(&mut app, KeyCode::Esc);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("┏ Contacts"));
    assert!(screen.contains("┌ to alice"));
}

#[test]
fn tiny_terminals_get_a_message_not_a_panic() {
    let mut app = alice_app();
    let screen = render_to_text(&mut app, 20, 5);
    assert!(screen.starts_with("terminal too small"), "{screen}");
    for (w, h) in [(0, 0), (1, 1), (43, 30), (200, 9), (44, 10)] {
        render_to_text(&mut app, w, h);
    }
    press(&mut app, KeyCode::F(1));
    render_to_text(&mut app, 44, 10);
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, "a");
    render_to_text(&mut app, 44, 10);
}

#[test]
fn layout_follows_resizes() {
    let mut app = alice_app();
    for (w, h) in [(80, 24), (120, 40), (44, 10), (60, 16), (80, 24)] {
        let screen = render_to_text(&mut app, w, h);
        assert_eq!(screen.lines().count(), usize::from(h));
        assert!(screen
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("consensus")));
        assert!(screen.contains("retry)"), "{w}x{h}:\n{screen}");
    }
    assert_eq!(render_to_text(&mut app, 80, 24), ALICE_80X24);
}

#[test]
fn long_requests_and_many_contacts_stay_in_their_pane() {
    let mut app = demo_app(UiOptions::default());
    for i in 0..30 {
        app.apply(AppEvent::ContactRequest(ContactRequest {
            address: address(100 + i),
            messages: vec![],
        }));
    }
    // The selection stays visible however long the list.
    for _ in 0..32 {
        press(&mut app, KeyCode::Down);
    }
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("▸ bob"), "{screen}");
}

#[test]
fn the_selected_message_stays_in_view_across_a_resize() {
    let mut app = alice_app();
    render_to_text(&mut app, 80, 24);
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Up);
    press(&mut app, KeyCode::Up);
    let screen = render_to_text(&mut app, 44, 10);
    assert!(screen.contains("14:04 me    all three"), "{screen}");
    assert!(screen.contains("↓ more below · End"));
}

fn network_details() -> NetworkDetails {
    NetworkDetails {
        guards: vec![
            GuardView {
                relay: "relay3".into(),
                since: Some(T + 400 - 3 * 86_400),
                unlisted_since: None,
            },
            GuardView {
                relay: "relay6".into(),
                since: None,
                unlisted_since: Some(T + 400 - 7200),
            },
        ],
        circuits: vec![CircuitView {
            relays: vec!["relay3".into(), "relay5".into(), "relay1".into()],
            age_secs: 90,
        }],
        replicas: vec![
            ReplicaView {
                relay: "relay1".into(),
                open: true,
                last: Some((ReplicaAnswer::Answered, T + 400 - 12)),
            },
            ReplicaView {
                relay: "relay7".into(),
                open: false,
                last: None,
            },
        ],
        consensus: Some(ConsensusView {
            valid_after: T + 400 - 120,
            valid_until: T + 400 + 3600,
            signed_by: vec!["auth1".into(), "auth2".into()],
            authorities: 3,
        }),
        clock: Some(ClockView {
            skew_secs: 1,
            authority: "auth2".into(),
            measured_at: T + 400 - 20,
        }),
    }
}

/// The panel opened at 80x24, then scrolled to its end: every row seen on the way.
fn whole_network_panel(app: &mut App) -> String {
    press(app, KeyCode::F(2));
    let mut screen = render_to_text(app, 80, 24);
    for _ in 0..30 {
        press(app, KeyCode::Down);
        screen.push_str(&render_to_text(app, 80, 24));
    }
    screen
}

/// F2 shows guards and since when, circuits, replicas and their last answers, the consensus
/// and its signers, the clock, and what is not protected; every part at 80x24, scrolling
/// where needed.
#[test]
fn network_panel_at_80x24() {
    let mut app = alice_app();
    app.apply(AppEvent::Network(network_details()));
    press(&mut app, KeyCode::F(2));
    let first = render_to_text(&mut app, 80, 24);
    assert!(first.contains("Network"), "{first}");
    assert!(first.contains("relay3  in use · chosen 3d ago"), "{first}");
    assert!(
        flat(&first).contains("relay6  unused: not listed as a guard since 2h ago"),
        "{first}"
    );
    assert!(
        flat(&first).contains("chosen before this was recorded"),
        "{first}"
    );
    assert!(
        first.contains("relay3 → relay5 → relay1  (1m old)"),
        "{first}"
    );
    assert!(
        first.contains("relay1  answered 12s ago · circuit open"),
        "{first}"
    );
    assert!(
        first.contains("relay7  not asked yet · no circuit open now"),
        "{first}"
    );
    press(&mut app, KeyCode::Esc);
    let screen = whole_network_panel(&mut app);
    assert!(screen.contains("2m old, valid for 1h more"), "{screen}");
    assert!(
        screen.contains("signed by 2 of 3 authorities: auth1, auth2"),
        "{screen}"
    );
    assert!(
        screen.contains("in step with auth2's clock (within 2 s; 20s ago)"),
        "{screen}"
    );
    assert!(
        screen.contains("What this does not protect against"),
        "{screen}"
    );
    assert!(
        flat(&screen).contains("no mixing or cover traffic"),
        "{screen}"
    );
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay(), None);
}

/// A clock two hours fast is named, in red, with what it breaks; a few minutes off is named
/// without the alarm.
#[test]
fn network_panel_with_a_skewed_clock() {
    let mut app = alice_app();
    let mut details = network_details();
    details.clock = Some(ClockView {
        skew_secs: 7200,
        authority: "auth1".into(),
        measured_at: T + 400 - 5,
    });
    app.apply(AppEvent::Network(details.clone()));
    let screen = whole_network_panel(&mut app);
    assert!(
        flat(&screen).contains("this device's clock is 2h ahead of auth1's (5s ago)"),
        "{screen}"
    );
    assert!(
        flat(&screen).contains("they look expired or not yet valid"),
        "{screen}"
    );
    press(&mut app, KeyCode::Esc);
    details.clock = Some(ClockView {
        skew_secs: -90,
        authority: "auth3".into(),
        measured_at: T + 400,
    });
    app.apply(AppEvent::Network(details));
    let screen = whole_network_panel(&mut app);
    assert!(
        flat(&screen).contains("this device's clock is 90 s behind auth3's (just now)"),
        "{screen}"
    );
    assert!(!flat(&screen).contains("not yet valid"), "{screen}");
}

/// A replica that refused, and one that did not answer, say so and why, beside one that
/// answered.
#[test]
fn network_panel_with_a_replica_not_answering() {
    let mut app = alice_app();
    let mut details = network_details();
    details.replicas = vec![
        ReplicaView {
            relay: "relay1".into(),
            open: true,
            last: Some((ReplicaAnswer::Answered, T + 400 - 3)),
        },
        ReplicaView {
            relay: "relay4".into(),
            open: false,
            last: Some((
                ReplicaAnswer::NoAnswer("no answer in time".into()),
                T + 400 - 75,
            )),
        },
        ReplicaView {
            relay: "relay8".into(),
            open: true,
            last: Some((ReplicaAnswer::Refused("mailbox full".into()), T + 400 - 30)),
        },
    ];
    app.apply(AppEvent::Network(details));
    press(&mut app, KeyCode::F(2));
    let screen = render_to_text(&mut app, 80, 24);
    assert!(
        screen.contains("relay1  answered 3s ago · circuit open"),
        "{screen}"
    );
    assert!(
        screen.contains("relay4  no answer 1m ago · no circuit open now"),
        "{screen}"
    );
    assert!(screen.contains("      no answer in time"), "{screen}");
    assert!(
        screen.contains("relay8  refused 30s ago · circuit open"),
        "{screen}"
    );
    assert!(screen.contains("      mailbox full"), "{screen}");
}

/// Before anything is known (a fresh start), the panel says so rather than showing nothing.
#[test]
fn network_panel_before_the_first_consensus() {
    let mut app = App::new(UiOptions::default());
    app.tick(T);
    let screen = whole_network_panel(&mut app);
    assert!(screen.contains("none chosen yet"), "{screen}");
    assert!(screen.contains("none built yet"), "{screen}");
    assert!(screen.contains("not known: no consensus yet"), "{screen}");
    assert!(screen.contains("none yet"), "{screen}");
    assert!(flat(&screen).contains("not measured yet"), "{screen}");
}

/// The command line shows what the typed word can become, and why a line was refused.
#[test]
fn command_line_at_80x24() {
    let mut app = alice_app();
    type_text(&mut app, ":re");
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Command"), "{screen}");
    assert!(screen.contains("rename NAME"), "{screen}");
    assert!(screen.contains("remove"), "{screen}");
    assert!(screen.contains("retry"), "{screen}");
    assert!(!screen.contains("search"), "{screen}");
    press(&mut app, KeyCode::Enter);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(
        screen.contains("✗ \"re\" could be remove, rename, retry"),
        "{screen}"
    );
}

/// Confirmation, log and search views at 80x24.
#[test]
fn confirm_log_and_search_at_80x24() {
    let mut app = alice_app();
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, ":block");
    press(&mut app, KeyCode::Enter);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Block contact"), "{screen}");
    assert!(
        flat(&screen).contains("Remove alice and ignore whatever they send"),
        "{screen}"
    );
    assert!(screen.contains("y yes · n or Esc no"), "{screen}");
    press(&mut app, KeyCode::Esc);
    app.handle_event(Event::Key(KeyEvent::new(
        KeyCode::Char('l'),
        KeyModifiers::CONTROL,
    )));
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Log"), "{screen}");
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, ":search copy");
    press(&mut app, KeyCode::Enter);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Search: copy"), "{screen}");
    assert!(screen.contains("alice        me: second copy"), "{screen}");
    assert!(!screen.contains("all three copies"), "{screen}");
    assert!(screen.contains("alice        me: first copy"), "{screen}");
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, ":search nothing like this");
    press(&mut app, KeyCode::Enter);
    let screen = render_to_text(&mut app, 80, 24);
    assert!(screen.contains("No message contains that."), "{screen}");
}

/// The alice screen drawn into a buffer, with the configuration file `toml` at `depth`.
fn themed_buffer(toml: &str, depth: crate::theme::ColorDepth) -> ratatui::buffer::Buffer {
    let config =
        crate::config::UiConfig::parse(toml, std::path::Path::new("tui.toml"), depth).unwrap();
    let mut app = demo_app(UiOptions {
        select_contact: Some("alice".into()),
        focus_input: true,
        config,
        ..UiOptions::default()
    });
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(80, 24)).unwrap();
    terminal.draw(|frame| app.render(frame)).unwrap();
    terminal.backend().buffer().clone()
}

/// Under a custom theme the same text is drawn, each role in the theme's colour: ✓✓ in
/// `good`, the failed message in `bad`, the background everywhere.
#[test]
fn a_custom_theme_colours_each_role() {
    use ratatui::style::Color;
    let plain = themed_buffer("", crate::theme::ColorDepth::TrueColor);
    let themed = themed_buffer(
        "[theme]\ngood = \"#00aa55\"\nbad = \"#ff5f00\"\nwarn = \"214\"\nbackground = \"#101010\"\n",
        crate::theme::ColorDepth::TrueColor,
    );
    assert_eq!(buffer_text(&plain), buffer_text(&themed));
    assert_eq!(buffer_text(&themed), ALICE_80X24);
    let mut roles = 0;
    for (a, b) in plain.content.iter().zip(themed.content.iter()) {
        let expected = match a.fg {
            Color::Green => Color::Rgb(0, 0xaa, 0x55),
            Color::Red => Color::Rgb(0xff, 0x5f, 0),
            Color::Yellow => Color::Indexed(214),
            other => other,
        };
        roles += usize::from(expected != a.fg);
        assert_eq!(b.fg, expected, "{:?}", a.symbol());
        assert_eq!(b.bg, Color::Rgb(0x10, 0x10, 0x10));
    }
    assert!(roles > 10, "only {roles} coloured cells");
    // The ✓✓ of the delivered message is drawn in the theme's `good`.
    let area = themed.area;
    let ticks = (0..area.height)
        .flat_map(|y| (0..area.width).map(move |x| (x, y)))
        .find(|&(x, y)| themed[(x, y)].symbol() == "✓" && themed[(x + 1, y)].symbol() == "✓")
        .unwrap();
    assert_eq!(themed[ticks].fg, Color::Rgb(0, 0xaa, 0x55));
}

/// With 16 colours (said in the file, or detected), a theme of 24-bit and palette colours
/// is drawn with the 16 ANSI colours only.
#[test]
fn the_16_colour_fallback_uses_only_ansi_colours() {
    let toml =
        "[theme]\ngood = \"#00aa55\"\nbad = \"#ff5f00\"\nwarn = \"214\"\naccent = \"#8787ff\"\n\
                text = \"250\"\nbackground = \"#101010\"\n";
    let detected = themed_buffer(toml, crate::theme::ColorDepth::Ansi16);
    let said = themed_buffer(
        &format!("{toml}colors = 16\n"),
        crate::theme::ColorDepth::TrueColor,
    );
    for buffer in [&detected, &said] {
        for cell in buffer.content.iter() {
            assert!(crate::theme::is_ansi16(cell.fg), "{:?}", cell.fg);
            assert!(crate::theme::is_ansi16(cell.bg), "{:?}", cell.bg);
        }
        assert_eq!(buffer_text(buffer), ALICE_80X24);
    }
    assert_eq!(detected, said);
    assert_eq!(detected.content[0].bg, ratatui::style::Color::Black);
    // The 256-colour terminal gets palette colours, no 24-bit ones.
    let indexed = themed_buffer(toml, crate::theme::ColorDepth::Indexed256);
    assert!(indexed
        .content
        .iter()
        .all(|c| !matches!(c.fg, ratatui::style::Color::Rgb(..))
            && !matches!(c.bg, ratatui::style::Color::Rgb(..))));
}
