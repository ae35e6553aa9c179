//! The network panel (F2): what no other chat shows its user. The guards this client enters
//! the network through, the circuits built and their relays, the relays keeping my mailbox
//! and whether a circuit to each is open, the consensus and who signed it, the clock, and
//! plainly what this setup does not protect against (`docs/threat-model.md`).

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::overlays::{dim, overlay_frame, wrapped};
use crate::app::App;
use crate::clock::age;

/// What the current setup does not protect against, in the threat model's words.
pub(crate) const NOT_PROTECTED: &[&str] = &[
    "Someone who sees the whole network, or your guard and the mailbox relay together, can link sender and recipient by timing: there is no mixing or cover traffic.",
    "Anyone who can read your files can read your messages and act as you unless the store has a passphrase (shallot id passwd); while Shallot runs, its keys are in memory.",
    "The directory authorities see when you fetch the consensus: it comes straight from them.",
    "Two colluding authorities can split one voting round.",
    "Your mailbox keeps working with one of its three relays down, not two.",
];

fn heading(text: &str) -> Line<'static> {
    Line::styled(
        text.to_owned(),
        Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
    )
}

impl App {
    /// The panel's lines, `cols` wide.
    pub(super) fn network_lines(&self, cols: u16) -> Vec<Line<'static>> {
        let n = &self.network;
        let good = Style::new().fg(Color::Green);
        let bad = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        let mut lines = vec![heading("Guards (your first hop)")];
        if n.guards.is_empty() {
            lines.push(dim("  none chosen yet"));
        }
        for g in &n.guards {
            lines.push(Line::from(format!("  {g}  (in use since: not recorded)")));
        }
        lines.push(Line::from(""));
        lines.push(heading(&format!("Circuits ready ({})", n.circuits.len())));
        if n.circuits.is_empty() {
            lines.push(dim("  none built yet"));
        }
        for c in &n.circuits {
            let path = c.relays.join(" → ");
            lines.extend(wrapped(
                &format!("  {path}  ({} old)", age(c.age_secs)),
                cols,
                Style::new(),
            ));
        }
        lines.push(Line::from(""));
        lines.push(heading("My mailbox replicas"));
        if n.replicas.is_empty() {
            lines.push(dim("  not known: no consensus yet"));
        }
        for r in &n.replicas {
            let (state, style) = if r.open {
                ("circuit open", good)
            } else {
                ("no circuit open now", bad)
            };
            lines.push(Line::from(vec![
                Span::raw(format!("  {}  ", r.relay)),
                Span::styled(state, style),
            ]));
        }
        lines.push(Line::from(""));
        lines.push(heading("Consensus"));
        match &n.consensus {
            Some(c) => {
                let old = self.now.saturating_sub(c.valid_after);
                let left = c.valid_until.saturating_sub(self.now);
                lines.push(Line::from(format!(
                    "  {} old, valid for {} more",
                    age(old),
                    age(left)
                )));
                lines.extend(wrapped(
                    &format!(
                        "  signed by {} of {} authorities: {}",
                        c.signed_by.len(),
                        c.authorities,
                        c.signed_by.join(", ")
                    ),
                    cols,
                    Style::new(),
                ));
            }
            None => lines.push(Line::styled("  none yet", bad)),
        }
        lines.push(Line::from(""));
        lines.push(heading("Clock"));
        lines.push(Line::from(match n.clock_skew_secs {
            Some(s) => format!("  this device's clock is off by {s} s"),
            None => "  skew not measured: Shallot does not compare clocks yet".to_owned(),
        }));
        lines.push(Line::from(""));
        lines.push(heading("What this does not protect against"));
        for text in NOT_PROTECTED {
            lines.extend(wrapped(&format!("• {text}"), cols, Style::new()));
        }
        lines
    }

    /// Draws the panel scrolled by `scroll` rows; returns the scroll, clamped.
    pub(super) fn render_network(&self, frame: &mut Frame, area: Rect, scroll: usize) -> usize {
        let block = overlay_frame("Network").title_bottom(" Esc closes · ↑ ↓ scroll ");
        let inner = block.inner(area);
        frame.render_widget(Clear, area);
        frame.render_widget(block, area);
        let lines = self.network_lines(inner.width);
        let scroll = scroll.min(lines.len().saturating_sub(usize::from(inner.height)));
        let shown: Vec<Line> = lines.into_iter().skip(scroll).collect();
        frame.render_widget(Paragraph::new(shown), inner);
        scroll
    }
}
