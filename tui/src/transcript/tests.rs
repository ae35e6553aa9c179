//! Tests of conversation layout and of moving through it.

use super::*;

fn text_of(line: &Line<'_>) -> String {
    line.spans.iter().map(|s| s.content.as_ref()).collect()
}

fn msg(id: u32, outgoing: bool, text: &str, at: u64, delivery: Option<Delivery>) -> MessageView {
    MessageView {
        id: format!("{id:02x}"),
        seq: u64::from(id),
        contact: "alice".into(),
        outgoing,
        text: text.into(),
        sent_at: at,
        received_at: (!outgoing).then_some(at),
        delivery,
    }
}

/// 2024-06-03 10:00 UTC.
const T: u64 = 1_717_408_800;

#[test]
fn lays_out_time_sender_text_and_marks() {
    let messages = [
        msg(1, false, "hi there", T, None),
        msg(
            2,
            true,
            "hello",
            T + 60,
            Some(Delivery::Stored { copies: 2 }),
        ),
        msg(3, true, "ok", T + 120, Some(Delivery::Delivered)),
    ];
    let t = build(&messages, "alice", 40, &TimeZone::UTC);
    let lines: Vec<String> = t.lines.iter().map(text_of).collect();
    assert_eq!(
        lines,
        [
            "────────────── 2024-06-03 ──────────────",
            "10:00 alice hi there",
            "10:01 me    hello ✓2",
            "10:02 me    ok ✓✓",
        ]
    );
    assert_eq!(t.ranges, vec![0..2, 2..3, 3..4]);
    assert_eq!(t.rows, vec![1..2, 2..3, 3..4]);
}

#[test]
fn wraps_under_the_text_column_and_wraps_long_failures() {
    let failed = Delivery::Failed {
        reason: "no circuit to the mailbox relays".into(),
    };
    let messages = [msg(1, true, "one two three four five", T, Some(failed))];
    let t = build(&messages, "bob", 24, &TimeZone::UTC);
    let lines: Vec<String> = t.lines.iter().skip(1).map(text_of).collect();
    assert_eq!(
        lines,
        [
            "10:00 me  one two three",
            "          four five",
            "          ✗ failed: no",
            "          circuit to the",
            "          mailbox relays",
            "          (r: retry)",
        ]
    );
}

#[test]
fn shows_a_claimed_time_far_from_arrival_and_new_days() {
    let mut late = msg(1, false, "sent yesterday", T, None);
    late.sent_at = T - 86_400;
    let messages = [late, msg(2, false, "next day", T + 86_400, None)];
    let t = build(&messages, "alice", 60, &TimeZone::UTC);
    let lines: Vec<String> = t.lines.iter().map(text_of).collect();
    assert!(lines[1].ends_with("sent yesterday (sent 2024-06-02 10:00)"));
    assert!(lines[2].contains("2024-06-04"));
    assert_eq!(t.ranges, vec![0..2, 2..4]);
}

#[test]
fn neutralises_escape_sequences_in_text() {
    let messages = [msg(1, false, "a\x1b]0;pwned\x07b", T, None)];
    let t = build(&messages, "alice", 60, &TimeZone::UTC);
    assert!(text_of(&t.lines[1]).ends_with("a\u{FFFD}]0;pwned\u{FFFD}b"));
}

#[test]
fn selection_is_a_bar_in_the_time_column() {
    let messages = [
        msg(1, false, "a b c d e f", T, None),
        msg(2, false, "g", T, None),
    ];
    let t = build(&messages, "al", 14, &TimeZone::UTC);
    assert_eq!(t.rows, vec![1..3, 3..4]);
    let barred = |lines: &[Line<'_>]| -> Vec<bool> {
        lines
            .iter()
            .map(|l| l.spans[0].style.add_modifier.contains(Modifier::REVERSED))
            .collect()
    };
    assert_eq!(
        barred(&t.window(0, 10, Some(0))),
        [false, true, true, false]
    );
    assert_eq!(barred(&t.window(2, 2, Some(0))), [true, false]);
    assert_eq!(barred(&t.window(1, 5, Some(1))), [false, false, true]);
    assert_eq!(barred(&t.window(3, 5, None)), [false]);
    assert_eq!(t.window(9, 5, Some(1)).len(), 0);
}

/// Ranges of `heights.len()` messages of the given heights, back to back.
fn ranges(heights: &[usize]) -> Vec<Range<usize>> {
    let mut start = 0;
    heights
        .iter()
        .map(|h| {
            let r = start..start + h;
            start += h;
            r
        })
        .collect()
}

#[test]
fn follows_the_newest_until_scrolled() {
    let r = ranges(&[2, 2, 2, 2, 2]);
    let mut v = Viewport::default();
    assert_eq!(v.top(10, 4), 6);
    assert!(!v.scrolled_up(10, 4));
    v.up(&r, 4);
    assert_eq!(v.cursor, Some(3));
    assert_eq!(v.top(10, 4), 6);
    v.up(&r, 4);
    assert_eq!((v.cursor, v.top(10, 4)), (Some(2), 4));
    assert!(v.scrolled_up(10, 4));
    v.down(&r, 4);
    v.down(&r, 4);
    assert_eq!((v.cursor, v.top), (Some(4), None));
}

#[test]
fn scrolls_by_line_through_a_tall_message() {
    let r = ranges(&[1, 6, 1]);
    let mut v = Viewport::default();
    v.end(&r);
    v.up(&r, 3);
    assert_eq!((v.cursor, v.top(8, 3)), (Some(1), 4));
    v.up(&r, 3);
    assert_eq!((v.cursor, v.top(8, 3)), (Some(1), 3));
    v.up(&r, 3);
    v.up(&r, 3);
    assert_eq!((v.cursor, v.top(8, 3)), (Some(1), 1));
    v.up(&r, 3);
    assert_eq!((v.cursor, v.top(8, 3)), (Some(0), 0));
    v.up(&r, 3);
    assert_eq!((v.cursor, v.top(8, 3)), (Some(0), 0));
}

#[test]
fn pages_keep_the_selection_in_view() {
    let r = ranges(&[1; 20]);
    let mut v = Viewport::default();
    v.end(&r);
    v.page_up(&r, 5);
    assert_eq!((v.top(20, 5), v.cursor), (11, Some(15)));
    v.page_up(&r, 5);
    v.page_up(&r, 5);
    v.page_up(&r, 5);
    assert_eq!((v.top(20, 5), v.cursor), (0, Some(4)));
    v.page_down(&r, 5);
    assert_eq!((v.top(20, 5), v.cursor), (4, Some(4)));
    v.home(&r, 5);
    assert_eq!((v.top(20, 5), v.cursor), (0, Some(0)));
    v.page_down(&r, 100);
    assert_eq!(v.top, None);
}

#[test]
fn empty_conversations_are_harmless() {
    let mut v = Viewport::default();
    v.up(&[], 5);
    v.down(&[], 5);
    v.page_up(&[], 5);
    v.page_down(&[], 0);
    v.home(&[], 5);
    v.end(&[]);
    assert_eq!(v, Viewport::default());
}

#[test]
fn a_resize_keeps_the_selection_in_view() {
    let r = ranges(&[1; 20]);
    let mut v = Viewport {
        top: Some(0),
        cursor: Some(15),
    };
    v.keep_in_view(&r, 5);
    assert_eq!(v.top(20, 5), 11);
    v.cursor = Some(2);
    v.keep_in_view(&r, 5);
    assert_eq!(v.top(20, 5), 2);
    v.keep_in_view(&r, 5);
    assert_eq!(v.top(20, 5), 2);
}
