//! Drawing the chat UI into a ratatui frame: the layout of its panes at any size, and
//! [`render_to_text`], which draws into an in-memory terminal and returns the text (for
//! tests and the README's capture). The panes are drawn in `panes`, the status bar in
//! `status`, and dialogs and the help overlay in `overlays`.
//!
//! ```text
//! ┌ contacts ┐┌ conversation ───────────┐
//! │          ││                         │
//! │          │└─────────────────────────┘
//! │          │┌ input (1 to 5 lines) ───┐
//! └──────────┘└─────────────────────────┘
//!  status bar
//! ```

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, BorderType, Paragraph, Wrap};
use ratatui::{Frame, Terminal};

use super::app::{App, Focus};
use super::text;

mod network;
mod overlays;
mod panels;
mod panes;
mod status;

/// The smallest terminal the UI lays out in; below it, it says so instead.
pub const MIN_SIZE: (u16, u16) = (44, 10);
/// The most lines the input box grows to.
pub const MAX_INPUT_ROWS: usize = 5;

/// Where each part of the UI goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// The contacts pane.
    pub contacts: Rect,
    /// The conversation pane.
    pub conversation: Rect,
    /// The input box.
    pub input: Rect,
    /// The status bar.
    pub status: Rect,
}

/// Width of the contacts pane in a terminal `total` columns wide: 26 at 80 columns.
fn contacts_width(total: u16) -> u16 {
    (u32::from(total) * 26 / 80).clamp(16, 32) as u16
}

/// Splits `area` (at least [`MIN_SIZE`]) for an input box of `input_rows` lines.
pub fn areas(area: Rect, input_rows: u16) -> Areas {
    let main_height = area.height.saturating_sub(1);
    let left = contacts_width(area.width).min(area.width);
    let right_width = area.width - left;
    let input_height = (input_rows + 2).min(main_height / 2);
    Areas {
        contacts: Rect::new(area.x, area.y, left, main_height),
        conversation: Rect::new(
            area.x + left,
            area.y,
            right_width,
            main_height - input_height,
        ),
        input: Rect::new(
            area.x + left,
            area.y + main_height - input_height,
            right_width,
            input_height,
        ),
        status: Rect::new(area.x, area.y + main_height, area.width, 1),
    }
}

/// A pane's frame, drawn heavier when it has the keyboard (so focus shows without colour).
pub(super) fn pane(title: impl Into<Line<'static>>, focused: bool) -> Block<'static> {
    let block = Block::bordered().title(title);
    if focused {
        block
            .border_type(BorderType::Thick)
            .title_style(Style::new().add_modifier(Modifier::BOLD))
    } else {
        block.border_style(Style::new().add_modifier(Modifier::DIM))
    }
}

impl App {
    /// Draws the whole UI into `frame`, remembering the conversation's size for scrolling.
    pub fn render(&mut self, frame: &mut Frame) {
        let area = frame.area();
        if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
            let text = format!(
                "terminal too small ({}x{}): Shallot needs {}x{}. Ctrl-C quits.",
                area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
            );
            let p = Paragraph::new(text).wrap(Wrap { trim: true });
            frame.render_widget(p, area);
            self.theme.paint(frame.buffer_mut());
            return;
        }
        let input_width = usize::from(contacts_width(area.width).min(area.width));
        let input_width = usize::from(area.width).saturating_sub(input_width + 2);
        let input_rows = self.input_rows(input_width);
        // A notice takes a row of its own above the status bar, so that the network's
        // state stays in sight.
        let notice = self.current_notice().is_some();
        let panes = Rect {
            height: area.height - u16::from(notice),
            ..area
        };
        let areas = areas(panes, input_rows);
        self.areas = Some(areas);
        self.render_contacts(frame, areas.contacts);
        self.render_conversation(frame, areas.conversation);
        self.render_input(frame, areas.input);
        if notice {
            self.render_notice(frame, areas.status);
            let below = Rect {
                y: areas.status.y + 1,
                ..areas.status
            };
            self.render_status(frame, below);
        } else {
            self.render_status(frame, areas.status);
        }
        if self.overlay.is_some() {
            let over = Rect::new(area.x, area.y, area.width, area.height.saturating_sub(1));
            self.render_overlay(frame, over);
        }
        self.theme.paint(frame.buffer_mut());
    }

    /// Lines the input box needs for the current draft, 1 to [`MAX_INPUT_ROWS`].
    fn input_rows(&self, width: usize) -> u16 {
        let rows = self.draft().map_or(1, |d| d.layout(width).rows.len());
        rows.clamp(1, MAX_INPUT_ROWS) as u16
    }

    /// Whether the input line has the keyboard.
    pub(super) fn typing(&self) -> bool {
        self.focus == Focus::Input && self.overlay.is_none()
    }
}

/// The text in `buffer`, one line per row, trailing spaces removed. A wide character's
/// hidden second cell is skipped, so each line reads as on screen.
pub fn buffer_text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        let mut skip = 0;
        for x in area.left()..area.right() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let symbol = buffer[(x, y)].symbol();
            line.push_str(symbol);
            skip = text::width(symbol).saturating_sub(1);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Draws `app` in an in-memory terminal of `width` × `height` and returns the screen as
/// text ([`buffer_text`]).
pub fn render_to_text(app: &mut App, width: u16, height: u16) -> String {
    let Ok(mut terminal) = Terminal::new(TestBackend::new(width, height)) else {
        return String::new();
    };
    match terminal.draw(|frame| app.render(frame)) {
        Ok(_) => buffer_text(terminal.backend().buffer()),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod input_tests;
#[cfg(test)]
mod tests;
