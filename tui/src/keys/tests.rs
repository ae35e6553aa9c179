//! Key-handling tests: what each key does in each place, and the actions that come out.

use crossterm::event::{KeyEventState, KeyModifiers as M, MouseButton, MouseEvent, MouseEventKind};

use super::*;
use crate::app::Confirm;
use crate::model::{AppEvent, ContactView, UiOptions};
use crate::test_support::*;

fn with(app: &mut App, code: KeyCode, modifiers: M) -> Vec<Action> {
    app.handle_event(Event::Key(KeyEvent::new(code, modifiers)))
}

fn press(app: &mut App, code: KeyCode) -> Vec<Action> {
    with(app, code, M::NONE)
}

fn type_text(app: &mut App, text: &str) -> Vec<Action> {
    text.chars()
        .flat_map(|c| press(app, KeyCode::Char(c)))
        .collect()
}

fn draft(app: &App) -> String {
    app.draft().map(|d| d.text().to_owned()).unwrap_or_default()
}

fn send(contact: &str, text: &str) -> Action {
    Action::Send {
        contact: contact.into(),
        text: text.into(),
    }
}

fn composing(contact: &str) -> Action {
    Action::Composing {
        contact: contact.into(),
    }
}

#[test]
fn typing_tells_the_backend_once_a_while_and_again_after_a_send() {
    let mut app = alice_app();
    assert_eq!(
        type_text(&mut app, "  "),
        vec![],
        "blank: nothing to get ready for"
    );
    assert_eq!(type_text(&mut app, "h"), vec![composing("alice")]);
    assert_eq!(type_text(&mut app, "ello"), vec![]);
    let now = app.now;
    app.tick(now + COMPOSING_EVERY - 1);
    assert_eq!(type_text(&mut app, "!"), vec![]);
    app.tick(now + COMPOSING_EVERY);
    assert_eq!(
        type_text(&mut app, "!"),
        vec![composing("alice")],
        "still typing"
    );
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        vec![send("alice", "  hello!!")]
    );
    assert_eq!(
        type_text(&mut app, "more"),
        vec![composing("alice")],
        "the next message's circuits"
    );
}

#[test]
fn a_saved_draft_shown_again_readies_nothing_until_it_is_edited() {
    let mut app = alice_app();
    assert_eq!(
        type_text(&mut app, "half a thought"),
        vec![composing("alice")]
    );
    app.focus = Focus::Contacts;
    let now = app.now;
    app.tick(now + 10 * COMPOSING_EVERY);
    // Browsing, resizing, scrolling: the draft is there but nobody is typing.
    let mut shown = press(&mut app, KeyCode::Down);
    shown.extend(press(&mut app, KeyCode::Up));
    shown.extend(app.handle_event(Event::Resize(90, 30)));
    assert!(
        !shown.iter().any(|a| matches!(a, Action::Composing { .. })),
        "{shown:?}"
    );
    assert_eq!(
        app.selected,
        Some(Peer::Contact("alice".into())),
        "its draft shown again"
    );
    app.focus = Focus::Input;
    for key in [KeyCode::Left, KeyCode::Home, KeyCode::End, KeyCode::Delete] {
        assert_eq!(press(&mut app, key), vec![], "{key:?} moves, types nothing");
    }
    assert_eq!(type_text(&mut app, "."), vec![composing("alice")]);
}

#[test]
fn enter_sends_the_text_and_clears_the_input() {
    let mut app = alice_app();
    assert_eq!(app.focus(), Focus::Input);
    assert_eq!(type_text(&mut app, "hello"), vec![composing("alice")]);
    assert_eq!(draft(&app), "hello");
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        vec![send("alice", "hello")]
    );
    assert_eq!(draft(&app), "");
    assert_eq!(press(&mut app, KeyCode::Enter), vec![]);
}

#[test]
fn blank_text_is_not_sent() {
    let mut app = alice_app();
    type_text(&mut app, "   ");
    with(&mut app, KeyCode::Enter, M::ALT);
    type_text(&mut app, " ");
    assert_eq!(press(&mut app, KeyCode::Enter), vec![]);
}

#[test]
fn alt_enter_ctrl_j_and_paste_make_multi_line_messages() {
    let mut app = alice_app();
    type_text(&mut app, "one");
    with(&mut app, KeyCode::Enter, M::ALT);
    type_text(&mut app, "two");
    with(&mut app, KeyCode::Char('j'), M::CONTROL);
    app.handle_event(Event::Paste("three\r\nfour".into()));
    assert_eq!(draft(&app), "one\ntwo\nthree\nfour");
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        vec![send("alice", "one\ntwo\nthree\nfour")]
    );
}

#[test]
fn editing_keys_move_and_delete() {
    let mut app = alice_app();
    type_text(&mut app, "helo");
    press(&mut app, KeyCode::Left);
    type_text(&mut app, "l");
    press(&mut app, KeyCode::Home);
    press(&mut app, KeyCode::Delete);
    press(&mut app, KeyCode::End);
    press(&mut app, KeyCode::Backspace);
    press(&mut app, KeyCode::Right);
    assert_eq!(draft(&app), "ell");
    with(&mut app, KeyCode::Enter, M::ALT);
    type_text(&mut app, "x");
    press(&mut app, KeyCode::Up);
    type_text(&mut app, "!");
    assert_eq!(draft(&app), "e!ll\nx");
    with(&mut app, KeyCode::Char('u'), M::CONTROL);
    assert_eq!(draft(&app), "");
}

#[test]
fn drafts_stay_with_their_conversation() {
    let mut app = alice_app();
    type_text(&mut app, "for alice");
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.selected(), Some(&Peer::Contact("bob".into())));
    assert_eq!(draft(&app), "");
    press(&mut app, KeyCode::Up);
    assert_eq!(draft(&app), "for alice");
}

/// Selects message `index` of the open conversation from the conversation pane.
fn select_message(app: &mut App, index: usize) {
    render_once(app);
    app.focus = Focus::Conversation;
    press(app, KeyCode::Home);
    for _ in 0..index {
        press(app, KeyCode::Down);
    }
}

fn render_once(app: &mut App) {
    crate::render_to_text(app, 80, 24);
}

#[test]
fn r_retries_the_selected_failed_message() {
    let mut app = alice_app();
    select_message(&mut app, 6);
    assert_eq!(app.view.cursor, Some(6));
    assert_eq!(
        type_text(&mut app, "r"),
        vec![Action::Retry { id: "0007".into() }]
    );
    let retried = app.roster.message("0007").and_then(|m| m.delivery.clone());
    assert_eq!(retried, Some(Delivery::Sending));
    // On a message that did not fail, r only explains itself.
    select_message(&mut app, 1);
    assert_eq!(type_text(&mut app, "r"), vec![]);
    assert!(app
        .current_notice()
        .is_some_and(|n| n.contains("marked ✗ or …")));
    // A message stuck at … can be sent again too.
    select_message(&mut app, 5);
    assert_eq!(
        type_text(&mut app, "r"),
        vec![Action::Retry { id: "0006".into() }]
    );
}

#[test]
fn q_quits_only_from_the_contacts_pane() {
    let mut app = alice_app();
    assert_eq!(type_text(&mut app, "q"), vec![composing("alice")]);
    assert_eq!(draft(&app), "q");
    app.focus = Focus::Conversation;
    assert_eq!(type_text(&mut app, "q"), vec![]);
    assert!(!app.should_quit());
    app.focus = Focus::Contacts;
    assert_eq!(type_text(&mut app, "q"), vec![Action::Quit]);
    assert!(app.should_quit());
}

#[test]
fn a_opens_the_add_contact_dialog_only_outside_the_input() {
    let mut app = alice_app();
    type_text(&mut app, "a");
    assert_eq!(app.overlay(), None);
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, "a");
    assert!(matches!(app.overlay(), Some(Overlay::AddContact(_))));
}

#[test]
fn ctrl_c_quits_from_anywhere() {
    let ctrl_c = |app: &mut App| with(app, KeyCode::Char('c'), M::CONTROL);
    let mut app = alice_app();
    assert_eq!(ctrl_c(&mut app), vec![Action::Quit]);
    assert!(app.should_quit());
    let mut app = alice_app();
    press(&mut app, KeyCode::F(1));
    assert_eq!(ctrl_c(&mut app), vec![Action::Quit]);
    let mut app = demo_app(UiOptions::default());
    type_text(&mut app, "a");
    assert_eq!(ctrl_c(&mut app), vec![Action::Quit]);
    let mut app = App::new(UiOptions::default());
    assert_eq!(ctrl_c(&mut app), vec![Action::Quit]);
}

#[test]
fn tab_and_shift_tab_cycle_the_panes() {
    let mut app = alice_app();
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.focus(), Focus::Contacts);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.focus(), Focus::Conversation);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.focus(), Focus::Input);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.focus(), Focus::Conversation);
}

#[test]
fn help_opens_with_question_mark_or_f1_and_closes_with_esc() {
    let mut app = alice_app();
    type_text(&mut app, "?");
    assert_eq!(draft(&app), "", "? in an empty input line is help");
    assert_eq!(app.overlay(), Some(&Overlay::Help { scroll: 0 }));
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, "why?");
    assert_eq!(draft(&app), "why?", "? is typed after text");
    assert_eq!(app.overlay(), None);
    press(&mut app, KeyCode::F(1));
    assert_eq!(app.overlay(), Some(&Overlay::Help { scroll: 0 }));
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay(), None);
    app.focus = Focus::Contacts;
    type_text(&mut app, "?");
    assert!(app.overlay().is_some());
    type_text(&mut app, "?");
    assert_eq!(app.overlay(), None);
}

#[test]
fn moving_through_contacts_marks_them_read() {
    let mut app = demo_app(UiOptions::default());
    app.take_actions();
    // The request comes first, then alice, then bob with 2 unread.
    assert_eq!(app.selected(), Some(&Peer::Request(address(9))));
    assert_eq!(type_text(&mut app, "j"), vec![]);
    assert_eq!(
        type_text(&mut app, "j"),
        vec![Action::MarkRead {
            contact: "bob".into()
        }]
    );
    assert_eq!(app.roster.contact("bob").map(|c| c.unread), Some(0));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    assert_eq!(app.selected(), Some(&Peer::Contact("carol".into())));
    press(&mut app, KeyCode::Up);
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        vec![Action::MarkRead {
            contact: "bob".into()
        }]
    );
    assert_eq!(app.focus(), Focus::Input);
}

#[test]
fn starting_on_a_contact_lets_typing_send_at_once() {
    let mut app = App::new(UiOptions {
        select_contact: Some("bob".into()),
        focus_input: true,
        ..UiOptions::default()
    });
    // Typed before the backend's snapshot arrived: kept for bob.
    type_text(&mut app, "hi");
    app.apply(demo_snapshot());
    assert_eq!(app.selected(), Some(&Peer::Contact("bob".into())));
    assert_eq!(
        app.take_actions(),
        vec![Action::MarkRead {
            contact: "bob".into()
        }]
    );
    type_text(&mut app, " bob");
    assert_eq!(press(&mut app, KeyCode::Enter), vec![send("bob", "hi bob")]);
}

#[test]
fn adding_a_contact_validates_the_address_in_the_dialog() {
    let mut app = demo_app(UiOptions::default());
    app.take_actions();
    type_text(&mut app, "a");
    type_text(&mut app, "dave");
    press(&mut app, KeyCode::Tab);
    let good = address(4);
    let mut bad = good.clone();
    bad.replace_range(40..41, if &good[40..41] == "q" { "p" } else { "q" });
    app.handle_event(Event::Paste(bad));
    let Some(Overlay::AddContact(form)) = app.overlay() else {
        panic!("dialog closed");
    };
    assert!(
        form.error.is_some(),
        "a full-length address is checked at once"
    );
    assert_eq!(press(&mut app, KeyCode::Enter), vec![]);
    assert!(matches!(app.overlay(), Some(Overlay::AddContact(_))));
    with(&mut app, KeyCode::Char('u'), M::CONTROL);
    for _ in 0..80 {
        press(&mut app, KeyCode::Backspace);
    }
    app.handle_event(Event::Paste(good.to_uppercase()));
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        vec![Action::AddContact {
            name: "dave".into(),
            address: good.clone(),
        }]
    );
    assert_eq!(app.overlay(), None);
    // When the backend confirms, dave's conversation opens, ready to write.
    app.apply(AppEvent::ContactAdded(ContactView {
        name: "dave".into(),
        address: good,
        unread: 0,
        last_activity: None,
    }));
    assert_eq!(app.selected(), Some(&Peer::Contact("dave".into())));
    assert_eq!(app.focus(), Focus::Input);
}

#[test]
fn esc_cancels_the_add_contact_dialog() {
    let mut app = demo_app(UiOptions::default());
    type_text(&mut app, "a");
    type_text(&mut app, "x");
    assert_eq!(press(&mut app, KeyCode::Esc), vec![]);
    assert_eq!(app.overlay(), None);
}

#[test]
fn requests_are_accepted_with_a_name_or_ignored() {
    let requester = address(9);
    let mut app = demo_app(UiOptions::default());
    app.take_actions();
    assert_eq!(app.selected(), Some(&Peer::Request(requester.clone())));
    type_text(&mut app, "y");
    assert!(matches!(app.overlay(), Some(Overlay::Accept(_))));
    assert_eq!(press(&mut app, KeyCode::Enter), vec![], "a name is needed");
    type_text(&mut app, "erin");
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        vec![Action::AcceptRequest {
            address: requester.clone(),
            name: "erin".into()
        }]
    );
    app.apply(AppEvent::ContactAdded(ContactView {
        name: "erin".into(),
        address: requester.clone(),
        unread: 0,
        last_activity: Some(T - 60),
    }));
    assert_eq!(app.selected(), Some(&Peer::Contact("erin".into())));
    assert_eq!(app.roster.messages(&Peer::Contact("erin".into())).len(), 1);

    let mut app = demo_app(UiOptions::default());
    assert_eq!(type_text(&mut app, "n"), vec![], "n asks first");
    assert!(matches!(app.overlay(), Some(Overlay::Confirm(_))));
    assert_eq!(press(&mut app, KeyCode::Esc), vec![]);
    assert!(app.roster.request(&requester).is_some());
    type_text(&mut app, "n");
    assert_eq!(
        type_text(&mut app, "y"),
        vec![Action::IgnoreRequest {
            address: requester.clone()
        }]
    );
    assert!(app.roster.request(&requester).is_none());
    assert_eq!(app.selected(), Some(&Peer::Contact("alice".into())));
}

#[test]
fn incoming_messages_in_the_open_conversation_are_marked_read() {
    let mut app = alice_app();
    app.apply(AppEvent::MessageAdded(message(
        40,
        "alice",
        "still there?",
        T + 500,
        None,
    )));
    assert_eq!(
        app.take_actions(),
        vec![Action::MarkRead {
            contact: "alice".into()
        }]
    );
    app.apply(AppEvent::MessageAdded(message(
        41,
        "bob",
        "ping",
        T + 501,
        None,
    )));
    assert_eq!(app.take_actions(), vec![]);
    assert_eq!(app.roster.contact("bob").map(|c| c.unread), Some(3));
}

#[test]
fn releases_and_resizes_do_nothing() {
    let mut app = alice_app();
    let mut release = KeyEvent::new(KeyCode::Char('x'), M::NONE);
    release.kind = KeyEventKind::Release;
    release.state = KeyEventState::NONE;
    assert_eq!(app.handle_event(Event::Key(release)), vec![]);
    assert_eq!(app.handle_event(Event::Resize(100, 40)), vec![]);
    assert_eq!(draft(&app), "");
}

#[test]
fn page_keys_scroll_the_conversation_from_the_input_line() {
    let mut app = alice_app();
    for i in 0..40 {
        app.apply(AppEvent::MessageAdded(message(
            100 + i,
            "alice",
            "filler",
            T + 1000 + u64::from(i),
            None,
        )));
    }
    render_once(&mut app);
    assert_eq!(app.view.top, None);
    press(&mut app, KeyCode::PageUp);
    assert!(app.view.top.is_some());
    assert_eq!(app.focus(), Focus::Input);
    app.apply(AppEvent::MessageAdded(message(
        200,
        "alice",
        "new",
        T + 2000,
        None,
    )));
    assert!(app.unseen_below);
    press(&mut app, KeyCode::PageDown);
    press(&mut app, KeyCode::PageDown);
    press(&mut app, KeyCode::PageDown);
    assert_eq!(app.view.top, None);
    assert!(!app.unseen_below);
}

#[test]
fn text_typed_while_waiting_for_the_start_contact_goes_to_it() {
    let mut app = App::new(UiOptions {
        select_contact: Some("echo".into()),
        focus_input: true,
        ..UiOptions::default()
    });
    // The snapshot does not hold the contact yet: nothing else gets selected meanwhile.
    app.apply(demo_snapshot());
    assert_eq!(app.selected(), None);
    type_text(&mut app, "ping");
    app.apply(AppEvent::ContactAdded(ContactView {
        name: "echo".into(),
        address: address(8),
        unread: 0,
        last_activity: None,
    }));
    assert_eq!(app.selected(), Some(&Peer::Contact("echo".into())));
    assert_eq!(app.focus(), Focus::Input);
    assert_eq!(press(&mut app, KeyCode::Enter), vec![send("echo", "ping")]);
}

#[test]
fn tab_skips_the_input_line_on_a_request() {
    let mut app = demo_app(UiOptions::default());
    assert!(matches!(app.selected(), Some(Peer::Request(_))));
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.focus(), Focus::Conversation);
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.focus(), Focus::Contacts);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.focus(), Focus::Conversation);
}

fn ctrl(app: &mut App, c: char) -> Vec<Action> {
    with(app, KeyCode::Char(c), M::CONTROL)
}

const FOCUSES: [Focus; 3] = [Focus::Contacts, Focus::Conversation, Focus::Input];

/// The keys the help lists under "Anywhere" do the same in every pane.
#[test]
fn global_keys_work_in_every_focus() {
    for focus in FOCUSES {
        let mut app = alice_app();
        app.focus = focus;
        assert_eq!(ctrl(&mut app, 'r'), vec![Action::RetryNow], "{focus:?}");
        ctrl(&mut app, 'l');
        assert_eq!(
            app.overlay(),
            Some(&Overlay::Log { scroll: 0 }),
            "{focus:?}"
        );
        press(&mut app, KeyCode::Esc);
        ctrl(&mut app, 'f');
        assert!(
            matches!(app.overlay(), Some(Overlay::Command(c)) if c.line.text() == "search "),
            "{focus:?}"
        );
        press(&mut app, KeyCode::Esc);
        for key in [':', '/', '?'] {
            type_text(&mut app, &key.to_string());
            assert!(app.overlay().is_some(), "{key} in {focus:?}");
            press(&mut app, KeyCode::Esc);
        }
        press(&mut app, KeyCode::F(1));
        assert_eq!(app.overlay(), Some(&Overlay::Help { scroll: 0 }));
        press(&mut app, KeyCode::Esc);
        press(&mut app, KeyCode::F(2));
        assert_eq!(app.overlay(), Some(&Overlay::Network { scroll: 0 }));
        press(&mut app, KeyCode::F(2));
        assert_eq!(app.overlay(), None);
        ctrl(&mut app, 'n');
        assert_eq!(
            app.selected(),
            Some(&Peer::Contact("bob".into())),
            "{focus:?}"
        );
        assert_eq!(app.focus(), focus);
    }
    // Once text is typed, : and / are text.
    let mut app = alice_app();
    type_text(&mut app, "a:b/c");
    assert_eq!(draft(&app), "a:b/c");
    assert_eq!(app.overlay(), None);
}

/// Ctrl-N goes round the conversations with something unread, then says there is none.
#[test]
fn ctrl_n_jumps_to_the_next_unread_conversation() {
    let mut app = alice_app();
    let actions = ctrl(&mut app, 'n');
    assert_eq!(app.selected(), Some(&Peer::Contact("bob".into())));
    assert_eq!(app.roster.contact("bob").map(|c| c.unread), Some(0));
    assert!(actions.contains(&Action::MarkRead {
        contact: "bob".into()
    }));
    ctrl(&mut app, 'n');
    assert_eq!(app.selected(), Some(&Peer::Request(address(9))));
    ctrl(&mut app, 'n');
    assert_eq!(
        app.selected(),
        Some(&Peer::Request(address(9))),
        "nothing else unread"
    );
    let mut app = alice_app();
    app.roster.remove_request(&address(9));
    app.roster.clear_unread("bob");
    ctrl(&mut app, 'n');
    assert_eq!(app.selected(), Some(&Peer::Contact("alice".into())));
    assert_eq!(app.current_notice(), Some("nothing unread"));
}

/// Letters with no meaning in the contacts or conversation pane only say so.
#[test]
fn unbound_letters_run_nothing() {
    for focus in [Focus::Contacts, Focus::Conversation] {
        let mut app = alice_app();
        app.focus = focus;
        for c in "hello wxz".chars() {
            assert_eq!(type_text(&mut app, &c.to_string()), vec![], "{c}");
            assert_eq!(app.overlay(), None, "{c}");
            assert!(!app.should_quit());
        }
        assert!(app
            .current_notice()
            .is_some_and(|n| n.contains("Enter to write to alice")));
        assert_eq!(draft(&app), "");
    }
}

fn command(app: &mut App, line: &str) -> Vec<Action> {
    let mut out = type_text(app, ":");
    out.extend(type_text(app, line));
    out.extend(press(app, KeyCode::Enter));
    out
}

/// Every command does what its key does; Tab completes; a bad one says why and stays open.
#[test]
fn commands_run_with_completion() {
    let mut app = alice_app();
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, ":ren");
    press(&mut app, KeyCode::Tab);
    assert!(matches!(app.overlay(), Some(Overlay::Command(c)) if c.line.text() == "rename "));
    type_text(&mut app, "alicia");
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        vec![Action::RenameContact {
            from: "alice".into(),
            to: "alicia".into()
        }]
    );
    assert_eq!(app.overlay(), None);
    assert_eq!(command(&mut app, "zap"), vec![]);
    assert!(matches!(app.overlay(), Some(Overlay::Command(c)) if c.error.is_some()));
    press(&mut app, KeyCode::Esc);
    assert_eq!(command(&mut app, "retry"), vec![Action::RetryNow]);
    assert_eq!(command(&mut app, "ignored"), vec![Action::ListIgnored]);
    command(&mut app, "help");
    assert_eq!(app.overlay(), Some(&Overlay::Help { scroll: 0 }));
    press(&mut app, KeyCode::Esc);
    command(&mut app, "me");
    assert_eq!(app.overlay(), Some(&Overlay::MyAddress));
    press(&mut app, KeyCode::Esc);
    command(&mut app, "add");
    assert!(matches!(app.overlay(), Some(Overlay::AddContact(_))));
    press(&mut app, KeyCode::Esc);
    command(&mut app, "log");
    assert_eq!(app.overlay(), Some(&Overlay::Log { scroll: 0 }));
    press(&mut app, KeyCode::Esc);
    command(&mut app, "network");
    assert_eq!(app.overlay(), Some(&Overlay::Network { scroll: 0 }));
    press(&mut app, KeyCode::Esc);
    command(&mut app, "bell");
    assert!(!app.notify.bell);
    command(&mut app, "bell");
    assert!(app.notify.bell);
    command(&mut app, "next");
    assert_eq!(app.selected(), Some(&Peer::Contact("bob".into())));
    command(&mut app, "next");
    assert_eq!(app.selected(), Some(&Peer::Request(address(9))));
    command(&mut app, "accept");
    assert!(matches!(app.overlay(), Some(Overlay::Accept(_))));
    press(&mut app, KeyCode::Esc);
    command(&mut app, "ignore");
    assert!(matches!(
        app.overlay(),
        Some(Overlay::Confirm(Confirm::IgnoreRequest(_)))
    ));
    press(&mut app, KeyCode::Esc);
    // Backspace on an empty command line closes it.
    type_text(&mut app, ":");
    press(&mut app, KeyCode::Backspace);
    assert_eq!(app.overlay(), None);
    assert_eq!(command(&mut app, "quit"), vec![Action::Quit]);
}

/// Remove and block ask first, and act on the open contact only.
#[test]
fn remove_and_block_ask_first() {
    let mut app = alice_app();
    press(&mut app, KeyCode::Esc);
    assert_eq!(command(&mut app, "remove"), vec![]);
    assert_eq!(
        app.overlay(),
        Some(&Overlay::Confirm(Confirm::RemoveContact("alice".into())))
    );
    assert_eq!(type_text(&mut app, "n"), vec![]);
    assert_eq!(app.overlay(), None);
    command(&mut app, "remove");
    assert_eq!(
        type_text(&mut app, "y"),
        vec![Action::RemoveContact {
            name: "alice".into()
        }]
    );
    command(&mut app, "block");
    assert_eq!(
        type_text(&mut app, "y"),
        vec![Action::BlockContact {
            name: "alice".into()
        }]
    );
    let mut app = demo_app(UiOptions::default());
    assert_eq!(command(&mut app, "block"), vec![]);
    assert_eq!(app.overlay(), None, "a request is not a contact");
}

/// Search finds text in every conversation and opens the one chosen at that message.
#[test]
fn search_finds_across_conversations_and_opens_a_hit() {
    let mut app = alice_app();
    render_once(&mut app);
    ctrl(&mut app, 'f');
    type_text(&mut app, "O");
    press(&mut app, KeyCode::Enter);
    let Some(Overlay::Search(found)) = app.overlay() else {
        panic!("no search results");
    };
    // "or friday" (bob), "hello, we met…" (request) and alice's.
    assert!(found
        .hits
        .iter()
        .any(|(p, _)| *p == Peer::Contact("bob".into())));
    assert!(found
        .hits
        .iter()
        .any(|(p, _)| *p == Peer::Request(address(9))));
    let bob = found
        .hits
        .iter()
        .position(|(_, id)| id == "0015")
        .unwrap_or(usize::MAX);
    for _ in 0..bob {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.overlay(), None);
    assert_eq!(app.selected(), Some(&Peer::Contact("bob".into())));
    assert_eq!(app.focus(), Focus::Conversation);
    assert_eq!(app.view.cursor, Some(1));
}

/// A send refused by the backend gives its text back to the draft, before anything typed
/// since; a send recorded as a message does not.
#[test]
fn a_refused_send_keeps_the_text() {
    let mut app = alice_app();
    type_text(&mut app, "first");
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "second");
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "third");
    app.apply(AppEvent::MessageAdded(message(
        50,
        "alice",
        "second",
        T + 400,
        Some(Delivery::Sending),
    )));
    app.apply(AppEvent::SendFailed {
        contact: "alice".into(),
        text: "second".into(),
        reason: "no".into(),
    });
    assert_eq!(draft(&app), "third");
    app.apply(AppEvent::SendFailed {
        contact: "alice".into(),
        text: "first".into(),
        reason: "database locked\nmore".into(),
    });
    assert_eq!(draft(&app), "first\nthird");
    assert!(app
        .current_notice()
        .is_some_and(|n| n.starts_with("not sent to alice (text kept): database locked")));
}

/// A send that left but could not be saved is not given back to the draft: the contact may
/// have it already.
#[test]
fn a_send_that_left_unsaved_is_not_offered_again() {
    let mut app = alice_app();
    type_text(&mut app, "sent");
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "next");
    app.apply(AppEvent::SentUnsaved {
        contact: "alice".into(),
        text: "sent".into(),
        reason: "the message was stored on 2 of 3 mailboxes but could not be saved".into(),
    });
    assert_eq!(draft(&app), "next");
    assert!(app
        .current_notice()
        .is_some_and(|n| n.starts_with("sent to alice (not saved here): the message was stored")));
    assert!(
        app.log
            .iter()
            .any(|l| l == "sent to alice, not saved in the history: sent"),
        "the log keeps what was sent"
    );
    // Nothing is left waiting to be given back.
    app.apply(AppEvent::SendFailed {
        contact: "alice".into(),
        text: "sent".into(),
        reason: "no".into(),
    });
    assert_eq!(draft(&app), "next");
}

/// A message in a conversation not on screen rings the bell, unless switched off.
#[test]
fn the_bell_rings_for_other_conversations_only() {
    let mut app = alice_app();
    app.apply(AppEvent::MessageAdded(message(
        60,
        "alice",
        "here",
        T + 401,
        None,
    )));
    assert!(!app.take_bell());
    app.apply(AppEvent::MessageAdded(message(
        61,
        "bob",
        "there",
        T + 402,
        None,
    )));
    assert!(app.take_bell());
    assert!(!app.take_bell());
    press(&mut app, KeyCode::Esc);
    command(&mut app, "bell");
    app.apply(AppEvent::MessageAdded(message(
        62,
        "bob",
        "again",
        T + 403,
        None,
    )));
    assert!(!app.take_bell());
}

/// c in the my-address dialog copies the address (the event loop sends it as OSC 52).
#[test]
fn c_copies_my_address() {
    let mut app = alice_app();
    press(&mut app, KeyCode::Esc);
    type_text(&mut app, "i");
    assert_eq!(app.overlay(), Some(&Overlay::MyAddress));
    type_text(&mut app, "c");
    assert_eq!(app.overlay(), None);
    assert_eq!(app.take_copy(), Some(address(0)));
    assert_eq!(app.take_copy(), None);
}

fn mouse(app: &mut App, kind: MouseEventKind, column: u16, row: u16) -> Vec<Action> {
    app.handle_event(Event::Mouse(MouseEvent {
        kind,
        column,
        row,
        modifiers: M::NONE,
    }))
}

/// A click on a contact selects it; a click on a pane focuses it; the wheel scrolls the
/// conversation wherever the focus is.
#[test]
fn the_mouse_selects_contacts_and_scrolls() {
    let mut app = alice_app();
    render_once(&mut app);
    let click = MouseEventKind::Down(MouseButton::Left);
    // Row 5 of the 80x24 screen is bob (see the capture in render/tests.rs).
    mouse(&mut app, click, 5, 5);
    assert_eq!(app.selected(), Some(&Peer::Contact("bob".into())));
    assert_eq!(app.focus(), Focus::Contacts);
    mouse(&mut app, click, 5, 2);
    assert_eq!(app.selected(), Some(&Peer::Request(address(9))));
    mouse(&mut app, click, 5, 4);
    assert_eq!(app.selected(), Some(&Peer::Contact("alice".into())));
    mouse(&mut app, click, 40, 21);
    assert_eq!(app.focus(), Focus::Input);
    mouse(&mut app, click, 40, 10);
    assert_eq!(app.focus(), Focus::Conversation);
    // alice's conversation fits; make it taller than the pane to scroll.
    for i in 0..30 {
        app.apply(AppEvent::MessageAdded(message(
            100 + i,
            "alice",
            "more",
            T + 390,
            None,
        )));
    }
    render_once(&mut app);
    app.focus = Focus::Input;
    assert_eq!(app.view.top, None);
    mouse(&mut app, MouseEventKind::ScrollUp, 40, 10);
    assert!(app.view.top.is_some());
    mouse(&mut app, MouseEventKind::ScrollDown, 40, 10);
    assert_eq!(app.view.top, None);
    assert_eq!(app.focus(), Focus::Input);
}

/// The app of `alice_app` with a configuration file's text.
fn configured_alice_app(toml: &str) -> App {
    let config = crate::config::UiConfig::parse(
        toml,
        std::path::Path::new("tui.toml"),
        crate::theme::ColorDepth::TrueColor,
    )
    .unwrap();
    let mut app = demo_app(UiOptions {
        select_contact: Some("alice".into()),
        focus_input: true,
        config,
        ..UiOptions::default()
    });
    app.take_actions();
    app
}

/// A key bound in tui.toml does its action in every focus, even where it would be typed or
/// mean something else; the default key keeps working.
#[test]
fn a_rebound_key_works_in_every_focus() {
    let mut app = configured_alice_app("[keys]\nnext_unread = \"alt-u\"\nnetwork = \"f9\"\n");
    // In the input line, with text typed: alt-u is not typed, it opens bob (unread).
    type_text(&mut app, "draft");
    with(&mut app, KeyCode::Char('u'), M::ALT);
    assert_eq!(app.selected(), Some(&Peer::Contact("bob".into())));
    for focus in [Focus::Contacts, Focus::Conversation, Focus::Input] {
        app.focus = focus;
        press(&mut app, KeyCode::F(9));
        assert_eq!(
            app.overlay(),
            Some(&Overlay::Network { scroll: 0 }),
            "{focus:?}"
        );
        press(&mut app, KeyCode::Esc);
    }
    // Ctrl-N still does what it did.
    with(&mut app, KeyCode::Char('n'), M::CONTROL);
    assert_eq!(app.selected(), Some(&Peer::Request(address(9))));
    // The help lists the user's keys.
    press(&mut app, KeyCode::F(1));
    let screen = crate::render_to_text(&mut app, 80, 24);
    assert!(screen.contains("Your keys (tui.toml)"), "{screen}");
    assert!(
        screen.contains("alt-u") && screen.contains("next unread"),
        "{screen}"
    );
}

/// Ctrl-E and :edit ask for the draft to go to $EDITOR; what comes back replaces it, and a
/// failed editor keeps it.
#[test]
fn ctrl_e_and_edit_hand_the_draft_to_the_editor() {
    let mut app = alice_app();
    type_text(&mut app, "short");
    assert_eq!(with(&mut app, KeyCode::Char('e'), M::CONTROL), vec![]);
    assert_eq!(app.take_edit_request().as_deref(), Some("short"));
    app.edited(Ok("a long\nmessage".into()));
    assert_eq!(draft(&app), "a long\nmessage");
    assert_eq!(app.take_edit_request(), None);
    assert_eq!(
        press(&mut app, KeyCode::Enter),
        vec![send("alice", "a long\nmessage")]
    );

    press(&mut app, KeyCode::Esc);
    command(&mut app, "edit");
    assert_eq!(app.take_edit_request().as_deref(), Some(""));
    app.edited(Err("vi exited with status 1".into()));
    assert!(app
        .current_notice()
        .is_some_and(|n| n.contains("vi exited") && n.contains("kept")));
    // On a request there is nothing to write.
    with(&mut app, KeyCode::Char('n'), M::CONTROL);
    with(&mut app, KeyCode::Char('n'), M::CONTROL);
    assert!(matches!(app.selected(), Some(Peer::Request(_))));
    with(&mut app, KeyCode::Char('e'), M::CONTROL);
    assert_eq!(app.take_edit_request(), None);
}

/// A message in a conversation not on screen asks for a desktop notification that names
/// the sender but not the text (unless configured); :notify switches it while running.
#[test]
fn desktop_notifications_name_the_sender_not_the_text() {
    let mut app = alice_app();
    app.apply(AppEvent::MessageAdded(message(
        60,
        "alice",
        "here",
        T + 401,
        None,
    )));
    assert_eq!(app.take_notification(), None);
    app.apply(AppEvent::MessageAdded(message(
        61,
        "bob",
        "secret",
        T + 402,
        None,
    )));
    let body = app.take_notification().unwrap();
    assert_eq!(body, "new message from bob");
    let seq = app.notify_settings().sequence(&body);
    assert!(!String::from_utf8_lossy(&seq).contains("secret"));
    press(&mut app, KeyCode::Esc);
    command(&mut app, "notify off");
    app.apply(AppEvent::MessageAdded(message(
        62,
        "bob",
        "again",
        T + 403,
        None,
    )));
    assert_eq!(app.take_notification(), None);
    assert!(app.take_bell(), "the bell is switched on its own");
    command(&mut app, "notify on");
    app.apply(AppEvent::MessageAdded(message(
        63,
        "bob",
        "more",
        T + 404,
        None,
    )));
    assert_eq!(
        app.take_notification().as_deref(),
        Some("new message from bob")
    );

    let mut app = configured_alice_app("[notify]\ncontent = \"none\"\nbell = false\n");
    app.apply(AppEvent::MessageAdded(message(
        61,
        "bob",
        "secret",
        T + 402,
        None,
    )));
    assert_eq!(app.take_notification().as_deref(), Some("new message"));
    assert!(!app.take_bell());
    let mut app = configured_alice_app("[notify]\ndesktop = false\n");
    app.apply(AppEvent::MessageAdded(message(
        61,
        "bob",
        "secret",
        T + 402,
        None,
    )));
    assert_eq!(app.take_notification(), None);
}
