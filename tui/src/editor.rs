//! An editable piece of text with a cursor: the message input line (several lines of text)
//! and the fields of dialogs (one line). Pure: it knows characters and widths, not keys.

use super::text::{char_width, sanitize};

/// Text being edited, with a cursor between two characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Editor {
    text: String,
    /// Byte offset of the cursor, always on a character boundary.
    cursor: usize,
}

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
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the text is empty or only whitespace.
    pub fn is_blank(&self) -> bool {
        self.text.trim().is_empty()
    }

    /// Empties the editor and returns what it held.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Inserts one character at the cursor.
    pub fn insert_char(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    /// Inserts text at the cursor (a paste), made safe with [`sanitize`].
    pub fn insert_str(&mut self, text: &str) {
        let clean = sanitize(text);
        self.text.insert_str(self.cursor, &clean);
        self.cursor += clean.len();
    }

    /// Inserts a paste on one line: line breaks become spaces and surrounding space goes.
    pub fn insert_line(&mut self, text: &str) {
        let clean = sanitize(text).replace('\n', " ");
        let clean = clean.trim();
        self.text.insert_str(self.cursor, clean);
        self.cursor += clean.len();
    }

    fn prev_boundary(&self) -> Option<usize> {
        self.text[..self.cursor]
            .char_indices()
            .next_back()
            .map(|(i, _)| i)
    }

    fn next_boundary(&self) -> Option<usize> {
        self.text[self.cursor..]
            .chars()
            .next()
            .map(|c| self.cursor + c.len_utf8())
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if let Some(i) = self.prev_boundary() {
            self.text.replace_range(i..self.cursor, "");
            self.cursor = i;
        }
    }

    /// Deletes the character after the cursor.
    pub fn delete(&mut self) {
        if let Some(i) = self.next_boundary() {
            self.text.replace_range(self.cursor..i, "");
        }
    }

    /// Moves the cursor one character left.
    pub fn left(&mut self) {
        if let Some(i) = self.prev_boundary() {
            self.cursor = i;
        }
    }

    /// Moves the cursor one character right.
    pub fn right(&mut self) {
        if let Some(i) = self.next_boundary() {
            self.cursor = i;
        }
    }

    /// Start of the line the cursor is on.
    fn line_start(&self, at: usize) -> usize {
        self.text[..at].rfind('\n').map_or(0, |i| i + 1)
    }

    /// End of the line the cursor is on (before its `\n`).
    fn line_end(&self, at: usize) -> usize {
        self.text[at..]
            .find('\n')
            .map_or(self.text.len(), |i| at + i)
    }

    /// Moves the cursor to the start of its line.
    pub fn home(&mut self) {
        self.cursor = self.line_start(self.cursor);
    }

    /// Moves the cursor to the end of its line.
    pub fn end(&mut self) {
        self.cursor = self.line_end(self.cursor);
    }

    /// Byte offset `column` characters into the line starting at `start`, or its end.
    fn offset_in_line(&self, start: usize, column: usize) -> usize {
        let end = self.line_end(start);
        self.text[start..end]
            .char_indices()
            .nth(column)
            .map_or(end, |(i, _)| start + i)
    }

    /// Moves the cursor to the line above, keeping its column where it can; returns false
    /// when it is already on the first line.
    pub fn up(&mut self) -> bool {
        let start = self.line_start(self.cursor);
        if start == 0 {
            return false;
        }
        let column = self.text[start..self.cursor].chars().count();
        let above = self.line_start(start - 1);
        self.cursor = self.offset_in_line(above, column);
        true
    }

    /// Moves the cursor to the line below, keeping its column where it can; returns false
    /// when it is already on the last line.
    pub fn down(&mut self) -> bool {
        let end = self.line_end(self.cursor);
        if end == self.text.len() {
            return false;
        }
        let column = self.text[self.line_start(self.cursor)..self.cursor]
            .chars()
            .count();
        self.cursor = self.offset_in_line(end + 1, column);
        true
    }

    /// Lays the text out in rows of at most `width` cells, breaking at line breaks and
    /// wherever a row is full, and finds the cursor in them.
    pub fn layout(&self, width: usize) -> EditorLayout {
        let width = width.max(1);
        let mut rows = vec![String::new()];
        let (mut row, mut col) = (0usize, 0usize);
        let mut cursor = None;
        for (i, c) in self.text.char_indices() {
            if i == self.cursor {
                cursor = Some((row, col));
            }
            if c == '\n' {
                rows.push(String::new());
                row += 1;
                col = 0;
                continue;
            }
            let w = char_width(c);
            if col + w > width && col > 0 {
                rows.push(String::new());
                row += 1;
                col = 0;
            }
            if let Some(last) = rows.last_mut() {
                last.push(c);
            }
            col += w;
        }
        let mut cursor = cursor.unwrap_or((row, col));
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
