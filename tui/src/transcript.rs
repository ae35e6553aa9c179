//! A conversation laid out as terminal lines, and where the user is in it.
//!
//! [`build`] turns messages into lines for a width: a date line whenever the day changes,
//! then for each message its time, its sender and its text wrapped beside them, and, after
//! each of my messages, its delivery mark in words as well as colour. [`Viewport`] is the
//! scroll position and the selected message, moved by lines, messages and pages; the
//! selection is drawn over the laid-out lines ([`Transcript::window`]), so moving it does not
//! lay the conversation out again.

use std::ops::Range;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use jiff::tz::TimeZone;

use super::clock::LocalTime;
use super::model::{Delivery, MessageView};
use super::roster::local_time;
use super::text::{one_line, sanitize, truncate, width, wrap};

/// How far a peer's claimed sending time may be from the local time before it is shown.
const CLAIMED_TIME_SHOWN_AFTER: u64 = 5 * 60;
/// The widest sender column.
const MAX_SENDER_WIDTH: usize = 12;

/// A conversation as lines.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    /// Every line, oldest first.
    pub lines: Vec<Line<'static>>,
    /// For each message, the lines it occupies (with the date line before it, if any).
    pub ranges: Vec<Range<usize>>,
    /// For each message, the lines of the message itself (without the date line).
    pub rows: Vec<Range<usize>>,
}

impl Transcript {
    /// The lines from `top`, at most `height` of them, with message `selected` (if any)
    /// marked by a bar in the time column.
    pub fn window(&self, top: usize, height: usize, selected: Option<usize>) -> Vec<Line<'static>> {
        let mut shown: Vec<Line<'static>> =
            self.lines.iter().skip(top).take(height).cloned().collect();
        let rows = selected.and_then(|i| self.rows.get(i)).cloned();
        for i in rows.into_iter().flatten() {
            let span = i
                .checked_sub(top)
                .and_then(|at| shown.get_mut(at))
                .and_then(|line| line.spans.first_mut());
            if let Some(span) = span {
                span.style = span.style.add_modifier(Modifier::REVERSED);
            }
        }
        shown
    }
}

/// The delivery mark of one of my messages, as text.
pub fn delivery_mark(delivery: &Delivery) -> String {
    match delivery {
        Delivery::Sending => "…".to_owned(),
        Delivery::Stored { copies } => format!("✓{copies}"),
        Delivery::Delivered => "✓✓".to_owned(),
        Delivery::Failed { reason } => format!(
            "✗ failed: {} (r: retry)",
            one_line(reason.lines().next().unwrap_or_default())
        ),
    }
}

fn delivery_style(delivery: &Delivery) -> Style {
    match delivery {
        Delivery::Sending => Style::new().fg(Color::Yellow),
        Delivery::Stored { .. } => Style::new().fg(Color::Cyan),
        Delivery::Delivered => Style::new().fg(Color::Green),
        Delivery::Failed { .. } => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// What follows a message's text: my message's delivery mark, or when an incoming
/// message says it was sent long before (or after) it arrived, that time.
fn suffix(m: &MessageView, tz: &TimeZone, unanswered: bool) -> Option<(String, Style)> {
    if let Some(d) = &m.delivery {
        let mut mark = delivery_mark(d);
        if unanswered && matches!(d, Delivery::Stored { .. }) {
            mark.push_str(" waiting for them to accept");
        }
        return Some((mark, delivery_style(d)));
    }
    let arrived = local_time(m);
    if m.outgoing || arrived.abs_diff(m.sent_at) <= CLAIMED_TIME_SHOWN_AFTER {
        return None;
    }
    let sent = LocalTime::new(m.sent_at, tz);
    let text = if sent.day() == LocalTime::new(arrived, tz).day() {
        format!("(sent {})", sent.hhmm())
    } else {
        format!("(sent {} {})", sent.date(), sent.hhmm())
    };
    Some((text, Style::new().add_modifier(Modifier::DIM)))
}

fn date_line(day: &LocalTime, cols: usize) -> Line<'static> {
    let label = format!(" {} ", day.date());
    let side = cols.saturating_sub(label.len()) / 2;
    let right = cols.saturating_sub(label.len() + side);
    Line::styled(
        format!("{}{label}{}", "─".repeat(side), "─".repeat(right)),
        Style::new().add_modifier(Modifier::DIM),
    )
}

/// Lays out `messages` with the peer called `peer` in `cols` cells.
///
/// While nothing has come back from the peer (no message, no acknowledgement), my stored
/// messages say they wait for the peer to accept me: a peer acknowledges nothing from a
/// stranger until it has made them a contact.
pub fn build(messages: &[MessageView], peer: &str, cols: usize, tz: &TimeZone) -> Transcript {
    let unanswered = messages
        .iter()
        .all(|m| m.outgoing && m.delivery != Some(Delivery::Delivered));
    let cols = cols.max(1);
    let peer = truncate(&one_line(peer), MAX_SENDER_WIDTH.min(cols / 4).max(2));
    let sender_width = width(&peer).max(2);
    let indent = 5 + 1 + sender_width + 1;
    let text_width = cols.saturating_sub(indent).max(1);
    let time_style = Style::new().add_modifier(Modifier::DIM);
    let mut out = Transcript::default();
    let mut last_day = None;
    for m in messages {
        let start = out.lines.len();
        let at = LocalTime::new(local_time(m), tz);
        if last_day != Some(at.day()) {
            out.lines.push(date_line(&at, cols));
            last_day = Some(at.day());
        }
        let (who, who_style) = if m.outgoing {
            ("me".to_owned(), Style::new().add_modifier(Modifier::DIM))
        } else {
            (peer.clone(), Style::new().add_modifier(Modifier::BOLD))
        };
        let pad = " ".repeat(sender_width.saturating_sub(width(&who)));
        let mut rows: Vec<Vec<Span<'static>>> = wrap(&sanitize(&m.text), text_width)
            .into_iter()
            .map(|row| vec![Span::raw(row)])
            .collect();
        if let Some((text, style)) = suffix(m, tz, unanswered) {
            let last_width = rows
                .last()
                .map_or(0, |r| r.iter().map(|s| s.width()).sum::<usize>());
            let fits = last_width + 1 + width(&text) <= text_width;
            match rows.last_mut() {
                Some(row) if fits => {
                    row.push(Span::raw(" "));
                    row.push(Span::styled(text, style));
                }
                _ => rows.extend(
                    wrap(&text, text_width)
                        .into_iter()
                        .map(|r| vec![Span::styled(r, style)]),
                ),
            }
        }
        let first_row = out.lines.len();
        for (n, row) in rows.into_iter().enumerate() {
            let mut spans = if n == 0 {
                vec![
                    Span::styled(at.hhmm(), time_style),
                    Span::raw(" "),
                    Span::styled(who.clone(), who_style),
                    Span::raw(format!("{pad} ")),
                ]
            } else {
                vec![
                    Span::styled("     ", time_style),
                    Span::raw(" ".repeat(sender_width + 2)),
                ]
            };
            spans.extend(row);
            out.lines.push(Line::from(spans));
        }
        out.ranges.push(start..out.lines.len());
        out.rows.push(first_row..out.lines.len());
    }
    out
}

/// Where the user is in a conversation: the first line shown and the selected message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Viewport {
    /// First line shown; `None` follows the newest line.
    pub top: Option<usize>,
    /// The selected message, used when the conversation pane has the focus.
    pub cursor: Option<usize>,
}

impl Viewport {
    /// The first line shown, for `total` lines in `height` rows.
    pub fn top(&self, total: usize, height: usize) -> usize {
        let last = total.saturating_sub(height);
        self.top.map_or(last, |t| t.min(last))
    }

    /// Whether lines below the view are hidden.
    pub fn scrolled_up(&self, total: usize, height: usize) -> bool {
        self.top(total, height) + height < total
    }

    fn set_top(&mut self, top: usize, total: usize, height: usize) {
        self.top = (top < total.saturating_sub(height)).then_some(top);
    }

    /// Makes sure a message is selected, choosing the nearest one in view.
    pub fn ensure_cursor(&mut self, ranges: &[Range<usize>], height: usize) {
        let total = ranges.last().map_or(0, |r| r.end);
        if ranges.is_empty() {
            self.cursor = None;
            return;
        }
        let top = self.top(total, height);
        let bottom = top + height;
        if let Some(c) = self.cursor {
            if c < ranges.len() && ranges[c].start < bottom && ranges[c].end > top {
                return;
            }
        }
        let visible = |r: &Range<usize>| r.start < bottom && r.end > top;
        let below = self
            .cursor
            .is_some_and(|c| c < ranges.len() && ranges[c].start >= bottom);
        let pick = if below || self.cursor.is_none() {
            ranges.iter().rposition(visible)
        } else {
            ranges.iter().position(visible)
        };
        self.cursor = Some(pick.unwrap_or(ranges.len() - 1));
    }

    /// Scrolls so that message `i` is in view: all of it when it fits, and otherwise the
    /// end of it nearest the previous view (`from_below`: its bottom).
    fn reveal(&mut self, range: &Range<usize>, from_below: bool, total: usize, height: usize) {
        let top = self.top(total, height);
        let fits = range.len() <= height;
        if range.start < top && from_below {
            let t = if fits {
                range.start
            } else {
                range.end - height
            };
            self.set_top(t, total, height);
        } else if range.end > top + height && !from_below {
            let t = if fits {
                range.end - height
            } else {
                range.start
            };
            self.set_top(t, total, height);
        }
    }

    /// Scrolls the selected message back into view if it is out of it (after a resize).
    pub fn keep_in_view(&mut self, ranges: &[Range<usize>], height: usize) {
        let total = ranges.last().map_or(0, |r| r.end);
        let Some(range) = self.cursor.and_then(|c| ranges.get(c)) else {
            return;
        };
        let top = self.top(total, height);
        if range.end <= top {
            self.reveal(range, true, total, height);
        } else if range.start >= top + height {
            self.reveal(range, false, total, height);
        }
    }

    /// Up: scrolls a line within a selected message taller than the view, and otherwise
    /// selects the message above.
    pub fn up(&mut self, ranges: &[Range<usize>], height: usize) {
        let total = ranges.last().map_or(0, |r| r.end);
        self.ensure_cursor(ranges, height);
        let Some(c) = self.cursor else { return };
        let top = self.top(total, height);
        if ranges[c].start < top {
            self.set_top(top - 1, total, height);
        } else if c > 0 {
            self.cursor = Some(c - 1);
            self.reveal(&ranges[c - 1], true, total, height);
        }
    }

    /// Down: scrolls a line within a selected message taller than the view, and otherwise
    /// selects the message below.
    pub fn down(&mut self, ranges: &[Range<usize>], height: usize) {
        let total = ranges.last().map_or(0, |r| r.end);
        self.ensure_cursor(ranges, height);
        let Some(c) = self.cursor else { return };
        let top = self.top(total, height);
        if ranges[c].end > top + height {
            self.set_top(top + 1, total, height);
        } else if c + 1 < ranges.len() {
            self.cursor = Some(c + 1);
            self.reveal(&ranges[c + 1], false, total, height);
        }
    }

    /// Scrolls up one page (keeping a line of overlap) and keeps the selection in view.
    pub fn page_up(&mut self, ranges: &[Range<usize>], height: usize) {
        let total = ranges.last().map_or(0, |r| r.end);
        let top = self.top(total, height);
        self.set_top(
            top.saturating_sub(height.saturating_sub(1).max(1)),
            total,
            height,
        );
        if self.cursor.is_some() {
            self.ensure_cursor(ranges, height);
        }
    }

    /// Scrolls down one page (keeping a line of overlap) and keeps the selection in view.
    pub fn page_down(&mut self, ranges: &[Range<usize>], height: usize) {
        let total = ranges.last().map_or(0, |r| r.end);
        let top = self.top(total, height);
        self.set_top(top + height.saturating_sub(1).max(1), total, height);
        if self.cursor.is_some() {
            self.ensure_cursor(ranges, height);
        }
    }

    /// Scrolls `by` lines (negative: up, towards older), as a mouse wheel does, keeping
    /// the selection in view if there is one.
    pub fn scroll_lines(&mut self, by: isize, ranges: &[Range<usize>], height: usize) {
        let total = ranges.last().map_or(0, |r| r.end);
        let top = self.top(total, height).saturating_add_signed(by);
        self.set_top(top, total, height);
        if self.cursor.is_some() {
            self.ensure_cursor(ranges, height);
        }
    }

    /// Goes to the oldest message.
    pub fn home(&mut self, ranges: &[Range<usize>], height: usize) {
        let total = ranges.last().map_or(0, |r| r.end);
        self.set_top(0, total, height);
        self.cursor = (!ranges.is_empty()).then_some(0);
    }

    /// Goes to the newest message and follows new ones.
    pub fn end(&mut self, ranges: &[Range<usize>]) {
        self.top = None;
        self.cursor = ranges.len().checked_sub(1);
    }
}

#[cfg(test)]
mod tests;
