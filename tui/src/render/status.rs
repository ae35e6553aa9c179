//! The status bar: what the network is doing (consensus age, relays, circuits, mailbox
//! subscription), or that it cannot be reached and when it is tried again; and the latest
//! notice, on a line of its own above it.

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use crate::app::App;
use crate::clock::age;
use crate::model::{MailboxState, NetworkStatus};
use crate::text::{one_line, truncate, width};

/// How many mailbox relays hold each user's mailbox.
pub(crate) const MAILBOX_REPLICAS: u8 = 3;

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The network part of the status bar, with the consensus aged by `elapsed` seconds since
/// `status` arrived.
pub(crate) fn network_spans(status: &NetworkStatus, elapsed: u64, now: u64) -> Vec<Span<'static>> {
    let warn = Style::new().fg(Color::Yellow);
    if let Some(offline) = &status.offline {
        let bad = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        let secs = offline.retry_at.saturating_sub(now);
        let error = offline.error.lines().next().unwrap_or_default();
        return vec![
            Span::styled(format!("offline, retrying in {secs} s"), bad),
            Span::styled(
                " · Ctrl-R retry now · ",
                Style::new().add_modifier(Modifier::DIM),
            ),
            Span::styled(one_line(error), warn),
        ];
    }
    let good = Style::new().fg(Color::Green);
    let dot = Span::styled(" · ", Style::new().add_modifier(Modifier::DIM));
    let consensus = match status.consensus_age_secs {
        Some(a) => Span::raw(format!("consensus {} old", age(a.saturating_add(elapsed)))),
        None => Span::styled("no consensus yet", warn),
    };
    let relays = plural(status.relays_known, "relay", "relays");
    let circuits = plural(status.circuits_ready, "circuit", "circuits");
    let circuits = if status.circuits_ready == 0 {
        Span::styled(circuits, warn)
    } else {
        Span::raw(circuits)
    };
    let mailbox = match status.mailbox {
        MailboxState::Offline => Span::styled("mailbox: offline", warn),
        MailboxState::Connecting => Span::styled("mailbox: connecting…", warn),
        MailboxState::Subscribed { copies } => Span::styled(
            format!("mailbox: subscribed ({copies}/{MAILBOX_REPLICAS})"),
            if copies >= MAILBOX_REPLICAS {
                good
            } else {
                warn
            },
        ),
    };
    vec![
        consensus,
        dot.clone(),
        Span::raw(relays),
        dot.clone(),
        circuits,
        dot,
        mailbox,
    ]
}

/// `spans` cut to `cols` cells, keeping their styles; the cut is marked with `…`.
fn fit(spans: Vec<Span<'static>>, cols: usize) -> Vec<Span<'static>> {
    let mut out = Vec::new();
    let mut used = 0;
    for span in spans {
        let w = span.width();
        if used + w <= cols {
            used += w;
            out.push(span);
            continue;
        }
        let cut = truncate(&span.content, cols - used);
        out.push(Span::styled(cut, span.style));
        break;
    }
    out
}

impl App {
    pub(super) fn render_status(&mut self, frame: &mut Frame, area: Rect) {
        let cols = usize::from(area.width);
        let elapsed = self.now.saturating_sub(self.status_at);
        let mut spans = network_spans(&self.status, elapsed, self.now);
        let used: usize = spans.iter().map(Span::width).sum();
        let help = "? help";
        if used + 1 + width(help) <= cols {
            spans.push(Span::raw(" ".repeat(cols - used - width(help))));
            spans.push(Span::styled(help, Style::new().add_modifier(Modifier::DIM)));
        }
        frame.render_widget(Paragraph::new(Line::from(fit(spans, cols))), area);
    }

    /// The latest notice's first line, and where the rest is if there is more.
    pub(super) fn render_notice(&mut self, frame: &mut Frame, area: Rect) {
        let cols = usize::from(area.width);
        let Some(notice) = self.current_notice() else {
            return;
        };
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let more = " · Ctrl-L details";
        let room = if self.notice_has_more() {
            cols.saturating_sub(width(more))
        } else {
            cols
        };
        let text = truncate(&format!("› {}", one_line(notice)), room);
        let mut spans = vec![Span::styled(text, bold)];
        if self.notice_has_more() {
            spans.push(Span::styled(more, Style::new().add_modifier(Modifier::DIM)));
        }
        frame.render_widget(Paragraph::new(Line::from(fit(spans, cols))), area);
    }
}
