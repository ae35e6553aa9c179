//! The network panel (F2): what no other chat shows its user. The guards this client enters
//! the network through and since when, the circuits built and their relays, the relays
//! keeping my mailbox and how each last answered the messenger (`docs/spec.md` §10.7), the
//! consensus and who signed it, this clock beside an authority's (§11.1), and plainly what
//! this setup does not protect against (`docs/threat-model.md`).

use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::overlays::{dim, overlay_frame, wrapped};
use crate::app::App;
use crate::clock::age;
use crate::model::ReplicaAnswer;

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

/// A span of seconds for the clock: exact under two minutes, else in one unit.
fn seconds(secs: u64) -> String {
    if secs < 120 {
        format!("{secs} s")
    } else {
        age(secs)
    }
}

/// Skews up to this many seconds either way are the header's rounding and the answer's time.
const IN_STEP_SECS: u64 = 2;

/// Skews beyond this many seconds make consensuses look not yet valid or expired.
const HARMFUL_SKEW_SECS: u64 = 600;

impl App {
    /// How long ago `t` was, by the UI's clock: "12s ago", "just now".
    fn ago(&self, t: u64) -> String {
        match self.now.saturating_sub(t) {
            0 => "just now".to_owned(),
            d => format!("{} ago", age(d)),
        }
    }

    fn guard_lines(&self, lines: &mut Vec<Line<'static>>, cols: u16) {
        let n = &self.network;
        lines.push(heading(
            "Guards (your first hop: the only relays that see your address)",
        ));
        if n.guards.is_empty() {
            lines.push(dim("  none chosen yet"));
        }
        for g in &n.guards {
            let since = match g.since {
                Some(t) => format!("chosen {}", self.ago(t)),
                None => "chosen before this was recorded".to_owned(),
            };
            let text = match g.unlisted_since {
                None => format!("  {}  in use · {since}", g.relay),
                Some(t) => format!(
                    "  {}  unused: not listed as a guard since {}; kept for its return · {since}",
                    g.relay,
                    self.ago(t)
                ),
            };
            lines.extend(wrapped(&text, cols, Style::new()));
        }
    }

    fn replica_lines(&self, lines: &mut Vec<Line<'static>>, cols: u16) {
        let good = Style::new().fg(Color::Green);
        let warn = Style::new().fg(Color::Yellow);
        let bad = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        lines.push(heading("My mailbox replicas (their last answer to me)"));
        if self.network.replicas.is_empty() {
            lines.push(dim("  not known: no consensus yet"));
        }
        for r in &self.network.replicas {
            let (state, style, why) = match &r.last {
                None => ("not asked yet".to_owned(), warn, None),
                Some((ReplicaAnswer::Answered, at)) => {
                    (format!("answered {}", self.ago(*at)), good, None)
                }
                Some((ReplicaAnswer::Refused(why), at)) => {
                    (format!("refused {}", self.ago(*at)), bad, Some(why))
                }
                Some((ReplicaAnswer::NoAnswer(why), at)) => {
                    (format!("no answer {}", self.ago(*at)), bad, Some(why))
                }
            };
            let circuit = if r.open {
                "circuit open"
            } else {
                "no circuit open now"
            };
            lines.push(Line::from(vec![
                Span::raw(format!("  {}  ", r.relay)),
                Span::styled(state, style),
                Span::raw(format!(" · {circuit}")),
            ]));
            if let Some(why) = why {
                lines.extend(wrapped(&format!("      {why}"), cols, Style::new()));
            }
        }
    }

    fn clock_lines(&self, lines: &mut Vec<Line<'static>>, cols: u16) {
        lines.push(heading("Clock (beside an authority's HTTP Date header)"));
        let Some(c) = &self.network.clock else {
            lines.extend(wrapped(
                "  not measured yet: it is compared with the authority's clock at each consensus fetch",
                cols,
                Style::new(),
            ));
            return;
        };
        let off = c.skew_secs.unsigned_abs();
        let when = self.ago(c.measured_at);
        if off <= IN_STEP_SECS {
            lines.extend(wrapped(
                &format!(
                    "  in step with {}'s clock (within {IN_STEP_SECS} s; {when})",
                    c.authority
                ),
                cols,
                Style::new().fg(Color::Green),
            ));
            return;
        }
        let way = if c.skew_secs > 0 {
            "ahead of"
        } else {
            "behind"
        };
        let style = if off > HARMFUL_SKEW_SECS {
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::new().fg(Color::Yellow)
        };
        lines.extend(wrapped(
            &format!(
                "  this device's clock is {} {way} {}'s ({when})",
                seconds(off),
                c.authority
            ),
            cols,
            style,
        ));
        if off > HARMFUL_SKEW_SECS {
            lines.extend(wrapped(
                "  consensuses are checked against this clock: set it right, or they look expired or not yet valid",
                cols,
                style,
            ));
        }
    }

    /// The panel's lines, `cols` wide.
    pub(super) fn network_lines(&self, cols: u16) -> Vec<Line<'static>> {
        let n = &self.network;
        let bad = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        let mut lines = Vec::new();
        self.guard_lines(&mut lines, cols);
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
        self.replica_lines(&mut lines, cols);
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
        self.clock_lines(&mut lines, cols);
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
