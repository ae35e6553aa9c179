//! The three panes: contacts (requests first, then contacts by recent activity, with unread
//! counts), the open conversation (or a hint when there is none), and the input box.

use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::pane;
use shallot_client::e2e::wire::MAX_TEXT_LEN;

/// From this length on (three quarters of the limit), the input box counts the bytes.
const COUNT_FROM: usize = MAX_TEXT_LEN / 4 * 3;
use crate::app::{App, Focus};
use crate::roster::Peer;
use crate::text::{one_line, truncate, width, wrap};

/// One row of the contacts pane.
fn entry(label: &str, count: usize, selected: bool, focused: bool, cols: usize) -> Line<'static> {
    let count = if count > 0 {
        format!(" ({count})")
    } else {
        String::new()
    };
    let marker = if selected { "▸ " } else { "  " };
    let name = truncate(&one_line(label), cols.saturating_sub(2 + width(&count)));
    let pad = " ".repeat(cols.saturating_sub(2 + width(&name) + width(&count)));
    let mut style = Style::new();
    if selected {
        style = style.add_modifier(Modifier::BOLD);
        if focused {
            style = style.add_modifier(Modifier::REVERSED);
        }
    }
    Line::from(vec![
        Span::styled(format!("{marker}{name}{pad}"), style),
        Span::styled(count, style.fg(Color::Yellow).add_modifier(Modifier::BOLD)),
    ])
}

fn heading(text: String) -> Line<'static> {
    Line::styled(text, Style::new().add_modifier(Modifier::UNDERLINED))
}

impl App {
    pub(super) fn render_contacts(&mut self, frame: &mut Frame, area: Rect) {
        let focused = self.focus == Focus::Contacts;
        let block = pane(" Contacts ", focused).title_bottom(" a add · i me · ? keys ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let cols = usize::from(inner.width);
        let requests = self.roster.requests();
        let contacts = self.roster.contacts();
        let mut lines = Vec::new();
        let mut rows: Vec<(usize, Peer)> = Vec::new();
        let mut selected_row = 0;
        if !requests.is_empty() {
            lines.push(heading(format!("Requests ({})", requests.len())));
            for r in &requests {
                let selected = self.selected.as_ref() == Some(&Peer::Request(r.address.clone()));
                rows.push((lines.len(), Peer::Request(r.address.clone())));
                if selected {
                    selected_row = lines.len();
                }
                lines.push(entry(&r.address, r.messages.len(), selected, focused, cols));
            }
            lines.push(heading(format!("Contacts ({})", contacts.len())));
        }
        for c in &contacts {
            let selected = self.selected.as_ref() == Some(&Peer::Contact(c.name.clone()));
            rows.push((lines.len(), Peer::Contact(c.name.clone())));
            if selected {
                selected_row = lines.len();
            }
            lines.push(entry(&c.name, c.unread, selected, focused, cols));
        }
        if contacts.is_empty() {
            let dim = Style::new().add_modifier(Modifier::DIM);
            lines.push(Line::styled("  no contacts yet", dim));
            lines.push(Line::styled("  a adds one", dim));
        }
        let height = usize::from(inner.height);
        let skip = (selected_row + 1).saturating_sub(height);
        self.contact_rows = rows
            .into_iter()
            .filter(|(row, _)| *row >= skip && *row < skip + height)
            .map(|(row, peer)| (inner.y + (row - skip) as u16, peer))
            .collect();
        let shown: Vec<Line> = lines.into_iter().skip(skip).collect();
        frame.render_widget(Paragraph::new(shown), inner);
    }

    pub(super) fn render_conversation(&mut self, frame: &mut Frame, area: Rect) {
        let focused = self.focus == Focus::Conversation;
        let (title, subtitle) = match &self.selected {
            Some(Peer::Contact(name)) => (
                one_line(name),
                self.roster
                    .contact(name)
                    .map(|c| one_line(&c.address))
                    .unwrap_or_default(),
            ),
            Some(Peer::Request(_)) => ("Contact request".to_owned(), String::new()),
            None => ("Shallot".to_owned(), String::new()),
        };
        let room = usize::from(area.width).saturating_sub(width(&title) + 8);
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut spans = vec![Span::raw(" "), Span::styled(title, bold), Span::raw(" ")];
        if !subtitle.is_empty() && room > 12 {
            let dim = Style::new().add_modifier(Modifier::DIM);
            spans.push(Span::styled(
                format!("· {} ", truncate(&subtitle, room - 2)),
                dim,
            ));
        }
        let mut block = pane(Line::from(spans), focused);
        let mut inner = block.inner(area);
        let dim = Style::new().add_modifier(Modifier::DIM);
        let hint = |lines: Vec<Line<'static>>| Paragraph::new(lines).wrap(Wrap { trim: true });
        let Some(peer) = self.selected.clone() else {
            frame.render_widget(block, area);
            let lines = vec![
                Line::from("No contacts yet."),
                Line::from(""),
                Line::from(
                    "Press a to add a contact, i to show your address so that people can add you.",
                ),
                Line::from(""),
                Line::styled("? lists every key. Ctrl-C quits.", dim),
            ];
            frame.render_widget(hint(lines), inner);
            self.conversation_size = (usize::from(inner.width), usize::from(inner.height));
            return;
        };
        if let Peer::Request(address) = &peer {
            let bold = Style::new().add_modifier(Modifier::BOLD);
            let keys = Style::new().fg(Color::Yellow);
            let banner: Vec<Line> = [
                ("Not in your contacts:", Style::new()),
                (address.as_str(), bold),
                ("y accept (you name them) · n ignore", keys),
            ]
            .into_iter()
            .flat_map(|(text, style)| {
                wrap(&one_line(text), usize::from(inner.width))
                    .into_iter()
                    .map(move |row| Line::styled(row, style))
            })
            .take(usize::from(inner.height))
            .collect();
            let rows = banner.len() as u16;
            frame.render_widget(
                Paragraph::new(banner),
                Rect {
                    height: rows,
                    ..inner
                },
            );
            inner.y += rows;
            inner.height -= rows;
        }
        let cols = usize::from(inner.width);
        let height = usize::from(inner.height);
        self.conversation_size = (cols, height);
        self.lay_out(cols);
        let (total, empty) = self
            .laid_out()
            .map_or((0, true), |t| (t.lines.len(), t.ranges.is_empty()));
        if empty {
            frame.render_widget(block, area);
            if let Peer::Contact(name) = &peer {
                let line = Line::styled(
                    format!(
                        "No messages with {} yet. Write below; Enter sends.",
                        one_line(name)
                    ),
                    dim,
                );
                frame.render_widget(hint(vec![line]), inner);
            }
            return;
        }
        if focused {
            if let Some(t) = &self.laid_out {
                self.view.keep_in_view(&t.1.ranges, height);
            }
        }
        if !self.view.scrolled_up(total, height) {
            self.unseen_below = false;
        } else if self.unseen_below {
            let new = Style::new().fg(Color::Yellow);
            block = block.title_bottom(Line::styled(" ↓ new messages below · End ", new));
        } else {
            block = block.title_bottom(" ↓ more below · End ");
        }
        frame.render_widget(block, area);
        let top = self.view.top(total, height);
        let cursor = self.view.cursor.filter(|_| focused);
        let shown = self
            .laid_out()
            .map(|t| t.window(top, height, cursor))
            .unwrap_or_default();
        // A short conversation sits at the bottom, next to the input line.
        let blank = inner.height.saturating_sub(shown.len() as u16);
        inner.y += blank;
        inner.height -= blank;
        frame.render_widget(Paragraph::new(shown), inner);
    }

    pub(super) fn render_input(&mut self, frame: &mut Frame, area: Rect) {
        let typing = self.typing();
        let title = match &self.selected {
            Some(Peer::Contact(name)) => format!("to {}", truncate(&one_line(name), 20)),
            Some(Peer::Request(_)) => "accept the request to reply".to_owned(),
            None => "message".to_owned(),
        };
        let mut block = pane(format!(" {title} "), self.focus == Focus::Input);
        let len = self.draft().map_or(0, |d| d.text().len());
        if len >= COUNT_FROM {
            let style = if len > MAX_TEXT_LEN {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::new().fg(Color::Yellow)
            };
            let counter = Line::styled(format!(" {len}/{MAX_TEXT_LEN} bytes "), style);
            block = block.title_bottom(counter.right_aligned());
        }
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if inner.width == 0 || inner.height == 0 {
            return;
        }
        let layout = self.draft().map(|d| d.layout(usize::from(inner.width)));
        let Some(layout) =
            layout.filter(|l| l.rows.iter().any(|r| !r.is_empty()) || l.rows.len() > 1)
        else {
            let placeholder = match &self.selected {
                Some(Peer::Contact(_)) if typing => "Enter sends · Alt-Enter new line",
                Some(Peer::Contact(_)) => "Tab or Enter to write",
                Some(Peer::Request(_)) => "accept with y to reply",
                None => "add a contact first (a, from the contacts pane)",
            };
            let dim = Style::new().add_modifier(Modifier::DIM);
            frame.render_widget(Paragraph::new(Line::styled(placeholder, dim)), inner);
            if typing {
                frame.set_cursor_position(Position::new(inner.x, inner.y));
            }
            return;
        };
        let height = usize::from(inner.height);
        let skip = (layout.cursor.0 + 1).saturating_sub(height);
        let rows: Vec<Line> = layout
            .rows
            .into_iter()
            .skip(skip)
            .take(height)
            .map(Line::from)
            .collect();
        frame.render_widget(Paragraph::new(rows), inner);
        if typing {
            let (row, col) = layout.cursor;
            let x = inner.x + (col as u16).min(inner.width - 1);
            let y = inner.y + ((row - skip) as u16).min(inner.height - 1);
            frame.set_cursor_position(Position::new(x, y));
        }
    }
}
