//! Rendering tests of the message input box at 80x24 in its states: empty, several lines,
//! a line longer than the box, and near the length limit.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};

use super::render_to_text;
use crate::app::App;
use crate::test_support::alice_app;
use shallot_client::e2e::wire::MAX_TEXT_LEN;

/// The input box's rows at 80x24, from its top border to its bottom border, without the
/// contacts pane to its left.
fn input_box(app: &mut App) -> Vec<String> {
    let screen = render_to_text(app, 80, 24);
    let rows: Vec<String> = screen
        .lines()
        .map(|l| l.chars().skip(26).collect::<String>())
        .collect();
    let top = rows.iter().position(|r| r.starts_with('┏'));
    let bottom = rows.iter().position(|r| r.starts_with('┗'));
    match (top, bottom) {
        (Some(top), Some(bottom)) => rows[top..=bottom].to_vec(),
        _ => panic!("no focused input box in\n{screen}"),
    }
}

fn key(app: &mut App, code: KeyCode, modifiers: KeyModifiers) {
    app.handle_event(Event::Key(KeyEvent::new(code, modifiers)));
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        key(app, KeyCode::Char(c), KeyModifiers::NONE);
    }
}

#[test]
fn empty_input_shows_how_to_send() {
    let mut app = alice_app();
    assert_eq!(
        input_box(&mut app),
        [
            "┏ to alice ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓",
            "┃Enter sends · Alt-Enter new line                    ┃",
            "┗━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┛",
        ]
    );
}

#[test]
fn multi_line_input_grows_with_its_lines() {
    let mut app = alice_app();
    type_text(&mut app, "first");
    key(&mut app, KeyCode::Enter, KeyModifiers::ALT);
    type_text(&mut app, "second");
    key(&mut app, KeyCode::Char('j'), KeyModifiers::CONTROL);
    type_text(&mut app, "third");
    // Up then typing edits the line above, at the same column.
    key(&mut app, KeyCode::Up, KeyModifiers::NONE);
    type_text(&mut app, "!");
    assert_eq!(
        input_box(&mut app),
        [
            "┏ to alice ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓",
            "┃first                                               ┃",
            "┃secon!d                                             ┃",
            "┃third                                               ┃",
            "┗━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┛",
        ]
    );
}

#[test]
fn a_long_line_wraps_inside_the_box() {
    let mut app = alice_app();
    app.handle_event(Event::Paste("0123456789".repeat(6) + "日本語🙂"));
    assert_eq!(
        input_box(&mut app),
        [
            "┏ to alice ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓",
            "┃0123456789012345678901234567890123456789012345678901┃",
            "┃23456789日本語🙂                                    ┃",
            "┗━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┛",
        ]
    );
}

#[test]
fn near_the_limit_the_box_counts_bytes() {
    let mut app = alice_app();
    app.handle_event(Event::Paste("x".repeat(MAX_TEXT_LEN - 10)));
    let rows = input_box(&mut app);
    let bottom = &rows[rows.len() - 1];
    assert!(
        bottom.contains(&format!(" {}/{MAX_TEXT_LEN} bytes ", MAX_TEXT_LEN - 10)),
        "{bottom}"
    );
    // The box shows the end of the text, where the cursor is.
    assert_eq!(rows.len(), 7, "{rows:?}");
    let full = format!("┃{}┃", "x".repeat(52));
    assert!(rows[1..5].iter().all(|r| *r == full), "{rows:?}");
}
