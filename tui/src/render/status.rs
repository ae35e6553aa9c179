//! The status bar: what the network is doing (consensus age, relays, circuits, mailbox
//! subscription) and the latest notice, on one line.

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
pub(crate) fn network_spans(status: &NetworkStatus, elapsed: u64) -> Vec<Span<'static>> {
    let warn = Style::new().fg(Color::Yellow);
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
        let network = network_spans(&self.status, elapsed);
        // A fresh notice comes first: it answers what the user just did.
        let mut spans = match self.current_notice() {
            Some(notice) => {
                let bold = Style::new().add_modifier(Modifier::BOLD);
                let mut spans = vec![
                    Span::styled(one_line(notice), bold),
                    Span::styled(" │ ", Style::new().add_modifier(Modifier::DIM)),
                ];
                spans.extend(network);
                spans
            }
            None => network,
        };
        let used: usize = spans.iter().map(Span::width).sum();
        let help = "? help";
        if used + 1 + width(help) <= cols {
            spans.push(Span::raw(" ".repeat(cols - used - width(help))));
            spans.push(Span::styled(help, Style::new().add_modifier(Modifier::DIM)));
        }
        frame.render_widget(Paragraph::new(Line::from(fit(spans, cols))), area);
    }
}
