//! The overlays that list things or ask one question: the confirmation before something
//! that cannot be undone, the `:` command line with its completions, the log of every
//! notice in full, and search results.

use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

use super::overlays::{centered, dialog, dim, field, overlay_frame, wrapped};
use crate::app::{App, Confirm, Overlay, Search};
use crate::command::CommandLine;
use crate::roster::Peer;
use crate::text::{one_line, truncate, width};

impl App {
    /// Draws `overlay`, one of those this module knows.
    pub(super) fn render_panel(&mut self, frame: &mut Frame, area: Rect, overlay: &Overlay) {
        match overlay {
            Overlay::Confirm(what) => self.render_confirm(frame, area, what),
            Overlay::Command(line) => render_command(frame, area, line),
            Overlay::Log { scroll } => self.render_log(frame, area, *scroll),
            Overlay::Search(found) => self.render_search(frame, area, found),
            _ => {}
        }
    }

    fn render_confirm(&self, frame: &mut Frame, area: Rect, what: &Confirm) {
        let cols = area.width.min(60).saturating_sub(4);
        let (title, question) = match what {
            Confirm::IgnoreRequest(address) => (
                "Ignore request",
                format!("Ignore {address}? Their messages stay hidden, now and later."),
            ),
            Confirm::RemoveContact(name) => (
                "Remove contact",
                format!("Remove {name} and your conversation with them? If they write again, it is a new request."),
            ),
            Confirm::BlockContact(name) => (
                "Block contact",
                format!("Remove {name} and ignore whatever they send from now on?"),
            ),
        };
        let mut lines = wrapped(&question, cols, Style::new());
        lines.push(Line::from(""));
        lines.push(dim("y yes · n or Esc no"));
        self.draw_dialog(frame, area, dialog(title), lines, cols, None);
    }

    fn render_log(&self, frame: &mut Frame, area: Rect, scroll: usize) {
        let block = overlay_frame("Log").title_bottom(" Esc closes · ↑ ↓ scroll ");
        let inner = block.inner(area);
        frame.render_widget(Clear, area);
        frame.render_widget(block, area);
        let cols = usize::from(inner.width);
        let mut lines: Vec<Line> = Vec::new();
        for entry in &self.log {
            for (i, text) in entry.lines().enumerate() {
                let text = if i == 0 {
                    format!("• {text}")
                } else {
                    format!("  {text}")
                };
                lines.extend(wrapped(&text, cols as u16, Style::new()));
            }
        }
        if lines.is_empty() {
            lines.push(dim("Nothing yet: notices and errors appear here in full."));
        }
        let height = usize::from(inner.height);
        let end = lines
            .len()
            .saturating_sub(scroll.min(lines.len().saturating_sub(height)));
        let start = end.saturating_sub(height);
        let shown: Vec<Line> = lines.drain(start..end).collect();
        frame.render_widget(Paragraph::new(shown), inner);
    }

    fn render_search(&self, frame: &mut Frame, area: Rect, found: &Search) {
        let title = format!("Search: {}", truncate(&one_line(&found.query), 30));
        let block = overlay_frame(&title).title_bottom(" Enter opens · ↑ ↓ select · Esc closes ");
        let inner = block.inner(area);
        frame.render_widget(Clear, area);
        frame.render_widget(block, area);
        let cols = usize::from(inner.width);
        if found.hits.is_empty() {
            frame.render_widget(Paragraph::new(dim("No message contains that.")), inner);
            return;
        }
        let height = usize::from(inner.height).max(1);
        let skip = (found.selected + 1).saturating_sub(height);
        let lines: Vec<Line> = found
            .hits
            .iter()
            .enumerate()
            .skip(skip)
            .take(height)
            .map(|(i, (peer, id))| {
                let who = match peer {
                    Peer::Contact(name) => name.clone(),
                    Peer::Request(address) => truncate(address, 12),
                };
                let text = self
                    .roster
                    .message(id)
                    .map(|m| {
                        let from = if m.outgoing { "me" } else { who.as_str() };
                        format!("{who:<12} {from}: {}", one_line(&m.text))
                    })
                    .unwrap_or_default();
                let style = if i == found.selected {
                    Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
                } else {
                    Style::new()
                };
                Line::styled(truncate(&text, cols), style)
            })
            .collect();
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

/// The command line, at the bottom of `area`, with what the word typed could become.
fn render_command(frame: &mut Frame, area: Rect, line: &CommandLine) {
    let cols = area.width.saturating_sub(4);
    let (input, x) = field(&line.line, true, cols);
    let mut lines = vec![input];
    match &line.error {
        Some(e) => lines.push(Line::styled(
            format!("✗ {}", one_line(e)),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        None => {
            for c in line.candidates().into_iter().take(6) {
                let name = format!("{} {}", c.name, c.argument);
                let pad = " ".repeat(16usize.saturating_sub(width(&name)));
                lines.push(Line::from(vec![
                    Span::styled(format!("{name}{pad}"), Style::new().fg(Color::Cyan)),
                    Span::raw(c.does),
                ]));
            }
        }
    }
    lines.push(dim("Enter runs · Tab completes · Esc cancels"));
    let h = lines.len() as u16 + 2;
    let rect = Rect::new(
        area.x,
        area.bottom().saturating_sub(h),
        area.width,
        h.min(area.height),
    );
    let rect = centered(rect, area.width, h);
    let block = dialog("Command  :");
    let inner = block.inner(rect);
    frame.render_widget(Clear, rect);
    frame.render_widget(block, rect);
    frame.render_widget(Paragraph::new(lines), inner);
    if x < inner.width && inner.height > 0 {
        frame.set_cursor_position(Position::new(inner.x + x, inner.y));
    }
}
