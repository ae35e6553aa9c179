//! What draws over the panes: the help overlay (every key, in two columns when they fit)
//! and the dialogs (add a contact, my address, accept a request), with the cursor placed in
//! the field being edited.

use ratatui::layout::{Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Padding, Paragraph};
use ratatui::Frame;

use crate::app::{App, Overlay};
use crate::dialog::{Field, FormError};
use crate::editor::Editor;
use crate::help::{keys_width, SECTIONS};
use crate::text::{char_width, one_line, width, wrap};

/// Width of one column of the help overlay.
const HELP_COLUMN: u16 = 39;

/// A rectangle of at most `w` × `h` in the middle of `area`.
pub(super) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// A frame for an overlay, set apart from the panes by its double line.
pub(super) fn overlay_frame(title: &str) -> Block<'static> {
    Block::bordered()
        .border_type(BorderType::Double)
        .title(Span::styled(
            format!(" {title} "),
            Style::new().add_modifier(Modifier::BOLD),
        ))
}

/// A dialog's frame: an overlay frame with a column of space inside each side.
pub(super) fn dialog(title: &str) -> Block<'static> {
    overlay_frame(title).padding(Padding::horizontal(1))
}

pub(super) fn dim(text: &str) -> Line<'static> {
    Line::styled(text.to_owned(), Style::new().add_modifier(Modifier::DIM))
}

/// `text` wrapped to `cols`, every row in `style`.
pub(super) fn wrapped(text: &str, cols: u16, style: Style) -> Vec<Line<'static>> {
    wrap(&one_line(text), usize::from(cols))
        .into_iter()
        .map(|row| Line::styled(row, style))
        .collect()
}

fn error_lines(error: Option<&FormError>, hint: &str, cols: u16) -> Vec<Line<'static>> {
    match error {
        Some(e) => wrapped(
            &format!("✗ {e}"),
            cols,
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        None => wrapped(hint, cols, Style::new().add_modifier(Modifier::DIM)),
    }
}

/// A one-line field `cols` wide: `> ` when it has the cursor, then as much of the text as
/// fits around the cursor. Returns the line and the cursor's column in it.
pub(super) fn field(editor: &Editor, active: bool, cols: u16) -> (Line<'static>, u16) {
    let layout = editor.layout(usize::MAX / 4);
    let text = layout.rows.concat();
    let room = usize::from(cols).saturating_sub(2).max(1);
    let mut cursor = layout.cursor.1;
    let mut shown = text.as_str();
    while cursor >= room {
        let Some(c) = shown.chars().next() else { break };
        cursor = cursor.saturating_sub(char_width(c));
        shown = &shown[c.len_utf8()..];
    }
    let mut used = 0;
    let visible: String = shown
        .chars()
        .take_while(|&c| {
            used += char_width(c);
            used <= room
        })
        .collect();
    let marker = if active { "> " } else { "  " };
    let style = Style::new().add_modifier(Modifier::UNDERLINED);
    let line = Line::from(vec![
        Span::styled(marker, Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(visible, if active { style } else { Style::new() }),
    ]);
    (line, 2 + cursor as u16)
}

/// The help overlay's sections as lines, one block of lines per section; the keys bound in
/// the configuration file first, if any.
fn help_sections(bound: &[(String, &'static str)]) -> Vec<Vec<Line<'static>>> {
    let kw = keys_width();
    let title = |t: &str| {
        Line::styled(
            format!(" {t}"),
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
        )
    };
    let mine = (!bound.is_empty()).then(|| {
        let mut lines = vec![title("Your keys (tui.toml)")];
        for (k, action) in bound {
            let pad = " ".repeat(kw.saturating_sub(width(k)));
            lines.push(Line::from(vec![
                Span::styled(format!(" {k}{pad} "), Style::new().fg(Color::Cyan)),
                Span::raw(action.replace('_', " ")),
            ]));
        }
        lines
    });
    mine.into_iter()
        .chain(SECTIONS.iter().map(|section| {
            let mut lines = vec![Line::styled(
                format!(" {}", section.title),
                Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
            )];
            for k in section.keys {
                let pad = " ".repeat(kw.saturating_sub(width(k.keys)));
                lines.push(Line::from(vec![
                    Span::styled(format!(" {}{pad} ", k.keys), Style::new().fg(Color::Cyan)),
                    Span::raw(k.does),
                ]));
            }
            lines
        }))
        .collect()
}

/// Sections joined into one column, a blank line between them.
fn join(sections: &[Vec<Line<'static>>]) -> Vec<Line<'static>> {
    let mut out = Vec::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.push(Line::from(""));
        }
        out.extend(s.iter().cloned());
    }
    out
}

impl App {
    pub(super) fn render_overlay(&mut self, frame: &mut Frame, area: Rect) {
        match self.overlay.take() {
            Some(Overlay::Help { scroll }) => {
                let scroll = self.render_help(frame, area, scroll);
                self.overlay = Some(Overlay::Help { scroll });
            }
            Some(Overlay::MyAddress) => {
                self.render_my_address(frame, area);
                self.overlay = Some(Overlay::MyAddress);
            }
            Some(Overlay::AddContact(form)) => {
                let block = dialog("Add a contact");
                let cols = area.width.min(75).saturating_sub(4);
                let (name, name_x) = field(&form.name, form.field == Field::Name, cols);
                let (address, address_x) = field(&form.address, form.field == Field::Address, cols);
                let mut lines = vec![
                    Line::from("Name"),
                    name,
                    Line::from(""),
                    Line::from("Address (starts with shallot1)"),
                    address,
                    Line::from(""),
                ];
                lines.extend(error_lines(
                    form.error.as_ref(),
                    "The address is checked for typos before it is added.",
                    cols,
                ));
                lines.push(Line::from(""));
                lines.push(dim("Enter add · Tab next field · Esc cancel"));
                let (row, x) = match form.field {
                    Field::Name => (1, name_x),
                    Field::Address => (4, address_x),
                };
                self.draw_dialog(frame, area, block, lines, cols, Some((row, x)));
                self.overlay = Some(Overlay::AddContact(form));
            }
            Some(Overlay::Accept(form)) => {
                let block = dialog("Accept contact request");
                let cols = area.width.min(75).saturating_sub(4);
                let (name, name_x) = field(&form.name, true, cols);
                let mut lines = vec![Line::from("From")];
                let bold = Style::new().add_modifier(Modifier::BOLD);
                lines.extend(wrapped(&form.address, cols, bold));
                lines.push(Line::from(""));
                lines.push(Line::from("Name them"));
                let row = lines.len() as u16;
                lines.push(name);
                lines.push(Line::from(""));
                let hint = "They become a contact and you can reply.";
                lines.extend(error_lines(form.error.as_ref(), hint, cols));
                lines.push(Line::from(""));
                lines.push(dim("Enter accept · Esc cancel"));
                self.draw_dialog(frame, area, block, lines, cols, Some((row, name_x)));
                self.overlay = Some(Overlay::Accept(form));
            }
            Some(Overlay::Network { scroll }) => {
                let scroll = self.render_network(frame, area, scroll);
                self.overlay = Some(Overlay::Network { scroll });
            }
            Some(other) => {
                self.render_panel(frame, area, &other);
                self.overlay = Some(other);
            }
            None => {}
        }
    }

    /// Draws a dialog of `lines` (`cols` wide inside) centred in `area`, with the cursor at
    /// `cursor` (row, column) inside it.
    pub(super) fn draw_dialog(
        &self,
        frame: &mut Frame,
        area: Rect,
        block: Block<'static>,
        lines: Vec<Line<'static>>,
        cols: u16,
        cursor: Option<(u16, u16)>,
    ) {
        let rect = centered(area, cols + 4, lines.len() as u16 + 2);
        let inner = block.inner(rect);
        frame.render_widget(Clear, rect);
        frame.render_widget(block, rect);
        frame.render_widget(Paragraph::new(lines), inner);
        if let Some((row, col)) = cursor {
            if row < inner.height && col < inner.width {
                frame.set_cursor_position(Position::new(inner.x + col, inner.y + row));
            }
        }
    }

    fn render_my_address(&self, frame: &mut Frame, area: Rect) {
        let cols = area.width.min(75).saturating_sub(4);
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut lines = wrapped(
            "Your address: give it to the people who should be able to write to you.",
            cols,
            Style::new(),
        );
        lines.push(Line::from(""));
        match self.roster.me() {
            Some(me) => {
                // Broken only where it must be, inside the address, with nothing added.
                lines.extend(wrapped(me, cols, bold));
                lines.push(Line::from(""));
                lines.extend(wrapped(
                    "c copies it to the clipboard, or select it with the mouse.",
                    cols,
                    Style::new(),
                ));
            }
            None => lines.extend(wrapped(
                "Not known yet: the client is still starting.",
                cols,
                Style::new(),
            )),
        }
        lines.push(Line::from(""));
        lines.push(dim("c copy · Esc closes"));
        self.draw_dialog(frame, area, dialog("My address"), lines, cols, None);
    }

    /// Draws the help overlay scrolled by `scroll` rows; returns the scroll, clamped.
    fn render_help(&self, frame: &mut Frame, area: Rect, scroll: usize) -> usize {
        let block = overlay_frame("Keys").title_bottom(" Esc closes · ↑ ↓ scroll ");
        let inner = block.inner(area);
        frame.render_widget(Clear, area);
        frame.render_widget(block, area);
        let sections = help_sections(&self.keys.listed());
        let columns: Vec<Vec<Line<'static>>> = if inner.width >= 2 * HELP_COLUMN {
            // The split that makes the taller column shortest.
            let rows = |s: &[Vec<Line>]| s.iter().map(Vec::len).sum::<usize>() + s.len();
            let split = (1..sections.len())
                .min_by_key(|&i| rows(&sections[..i]).max(rows(&sections[i..])))
                .unwrap_or(1);
            vec![join(&sections[..split]), join(&sections[split..])]
        } else {
            vec![join(&sections)]
        };
        let height = columns.iter().map(Vec::len).max().unwrap_or(0);
        let scroll = scroll.min(height.saturating_sub(usize::from(inner.height)));
        for (i, column) in columns.into_iter().enumerate() {
            let x = inner.x + i as u16 * HELP_COLUMN;
            let w = HELP_COLUMN.min(inner.right().saturating_sub(x));
            let shown: Vec<Line> = column.into_iter().skip(scroll).collect();
            frame.render_widget(
                Paragraph::new(shown),
                Rect {
                    x,
                    width: w,
                    ..inner
                },
            );
        }
        scroll
    }
}
