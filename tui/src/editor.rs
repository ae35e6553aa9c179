//! An editable piece of text with a cursor: the message input line (several lines of text)
//! and the fields of dialogs (one line). The buffer, cursor moves and edits are
//! `tui-textarea`'s; this adds sanitizing of pastes and a layout that wraps long lines,
//! which the widget does not. Pure: it knows characters and widths, not keys.

use tui_textarea::{CursorMove, TextArea};

use super::text::{char_width, sanitize};

/// Text being edited, with a cursor: `tui-textarea`'s buffer, fed only sanitized text.
#[derive(Debug, Clone, Default)]
pub struct Editor {
    /// Boxed: the widget is large and forms hold several editors.
    area: Box<TextArea<'static>>,
}

impl PartialEq for Editor {
    fn eq(&self, other: &Self) -> bool {
        self.area.lines() == other.area.lines() && self.area.cursor() == other.area.cursor()
    }
}

impl Eq for Editor {}

/// Editor text laid out in a box of some width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditorLayout {
    /// The rows of text, each at most the width.
    pub rows: Vec<String>,
    /// Row and column (in cells) of the cursor.
    pub cursor: (usize, usize),
}

impl Editor {
    /// An empty editor.
    pub fn new() -> Self {
        Editor::default()
    }

    /// The text.
    pub fn text(&self) -> String {
        self.area.lines().join("\n")
    }

    /// Whether the text is empty or only whitespace.
    pub fn is_blank(&self) -> bool {
        self.area.lines().iter().all(|l| l.trim().is_empty())
    }

    /// Empties the editor and returns what it held.
    pub fn take(&mut self) -> String {
        let text = self.text();
        *self.area = TextArea::default();
        text
    }

    /// Inserts one character at the cursor (`\n` starts a new line).
    pub fn insert_char(&mut self, c: char) {
        self.area.insert_char(c);
    }

    /// Inserts text at the cursor (a paste), made safe with [`sanitize`].
    pub fn insert_str(&mut self, text: &str) {
        self.area.insert_str(sanitize(text));
    }

    /// Inserts a paste on one line: line breaks become spaces and surrounding space goes.
    pub fn insert_line(&mut self, text: &str) {
        self.area
            .insert_str(sanitize(text).replace('\n', " ").trim());
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        self.area.delete_char();
    }

    /// Deletes the character after the cursor.
    pub fn delete(&mut self) {
        self.area.delete_next_char();
    }

    /// Moves the cursor one character left.
    pub fn left(&mut self) {
        self.area.move_cursor(CursorMove::Back);
    }

    /// Moves the cursor one character right.
    pub fn right(&mut self) {
        self.area.move_cursor(CursorMove::Forward);
    }

    /// Moves the cursor to the start of its line.
    pub fn home(&mut self) {
        self.area.move_cursor(CursorMove::Head);
    }

    /// Moves the cursor to the end of its line.
    pub fn end(&mut self) {
        self.area.move_cursor(CursorMove::End);
    }

    /// Moves the cursor to the line above, keeping its column where it can; returns false
    /// when it is already on the first line.
    pub fn up(&mut self) -> bool {
        let moves = self.area.cursor().0 > 0;
        self.area.move_cursor(CursorMove::Up);
        moves
    }

    /// Moves the cursor to the line below, keeping its column where it can; returns false
    /// when it is already on the last line.
    pub fn down(&mut self) -> bool {
        let moves = self.area.cursor().0 + 1 < self.area.lines().len();
        self.area.move_cursor(CursorMove::Down);
        moves
    }

    /// Lays the text out in rows of at most `width` cells, breaking at line breaks and
    /// wherever a row is full, and finds the cursor in them.
    pub fn layout(&self, width: usize) -> EditorLayout {
        let width = width.max(1);
        let at = self.area.cursor();
        let mut rows = Vec::new();
        let mut cursor = None;
        for (n, line) in self.area.lines().iter().enumerate() {
            rows.push(String::new());
            let mut col = 0;
            for (i, c) in line.chars().enumerate() {
                let w = char_width(c);
                if col + w > width && col > 0 {
                    rows.push(String::new());
                    col = 0;
                }
                if (n, i) == at {
                    cursor = Some((rows.len() - 1, col));
                }
                if let Some(last) = rows.last_mut() {
                    last.push(c);
                }
                col += w;
            }
            if cursor.is_none() && n == at.0 {
                cursor = Some((rows.len() - 1, col));
            }
        }
        let mut cursor = cursor.unwrap_or((0, 0));
        if cursor.1 >= width {
            cursor = (cursor.0 + 1, 0);
            if cursor.0 >= rows.len() {
                rows.push(String::new());
            }
        }
        EditorLayout { rows, cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(text: &str) -> Editor {
        let mut e = Editor::new();
        for c in text.chars() {
            e.insert_char(c);
        }
        e
    }

    #[test]
    fn edits_at_the_cursor() {
        let mut e = typed("helo");
        e.left();
        e.insert_char('l');
        assert_eq!(e.text(), "hello");
        e.home();
        e.delete();
        assert_eq!(e.text(), "ello");
        e.end();
        e.backspace();
        assert_eq!(e.text(), "ell");
        e.right();
        e.delete();
        assert_eq!(e.text(), "ell");
        assert_eq!(e.take(), "ell");
        assert!(e.is_blank());
    }

    #[test]
    fn handles_multibyte_characters() {
        let mut e = typed("héllo 日本");
        e.backspace();
        e.left();
        e.left();
        e.backspace();
        assert_eq!(e.text(), "héll 日");
    }

    #[test]
    fn moves_between_lines() {
        let mut e = typed("first line\nab\nthird");
        assert!(e.up());
        e.insert_char('X');
        assert_eq!(e.text(), "first line\nabX\nthird");
        assert!(e.up());
        e.insert_char('Y');
        assert_eq!(e.text(), "firYst line\nabX\nthird");
        assert!(!e.up());
        assert!(e.down());
        assert!(e.down());
        assert!(!e.down());
        e.home();
        e.insert_char('>');
        assert_eq!(e.text(), "firYst line\nabX\n>third");
    }

    #[test]
    fn pastes_are_sanitized() {
        let mut e = Editor::new();
        e.insert_str("one\r\ntwo\x1b");
        assert_eq!(e.text(), "one\ntwo\u{FFFD}");
        let mut f = Editor::new();
        f.insert_line("  shallot1abc\n");
        assert_eq!(f.text(), "shallot1abc");
    }

    #[test]
    fn layout_wraps_and_places_the_cursor() {
        let e = typed("abcdef\ngh");
        let l = e.layout(4);
        assert_eq!(l.rows, vec!["abcd", "ef", "gh"]);
        assert_eq!(l.cursor, (2, 2));
        let full = typed("abcd");
        assert_eq!(full.layout(4).cursor, (1, 0));
        assert_eq!(full.layout(4).rows.len(), 2);
        let mut mid = typed("abcdef");
        mid.home();
        mid.right();
        assert_eq!(mid.layout(4).cursor, (0, 1));
        assert_eq!(Editor::new().layout(4).cursor, (0, 0));
    }
}
