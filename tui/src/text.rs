//! Text as the terminal shows it: making what peers send safe to display, measuring it in
//! terminal cells, and wrapping (by `textwrap`) or truncating it to a width.
//!
//! Everything a peer controls (message text, and by extension names, addresses and reasons
//! that pass through the backend) goes through [`sanitize`] before it reaches the screen: a
//! control character or a bidirectional override could otherwise rewrite the terminal or
//! disguise a message, so each is shown as `�` instead of being obeyed or silently dropped.

use ratatui::text::Span;

/// The character shown in place of one that must not reach the terminal.
pub const REPLACEMENT: char = '\u{FFFD}';

/// Whether `c` reorders or hides the text around it (bidirectional embeddings, overrides and
/// isolates, and the directional marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Returns `text` safe to display: line breaks kept (`\r\n` and `\r` become `\n`), a tab
/// becomes a space, and every other control or bidirectional formatting character becomes
/// [`REPLACEMENT`].
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push('\n'),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push('\n');
            }
            '\t' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => out.push(REPLACEMENT),
            c => out.push(c),
        }
    }
    out
}

/// Returns `text` on one line: [`sanitize`]d, with line breaks shown as spaces.
pub fn one_line(text: &str) -> String {
    sanitize(text).replace('\n', " ")
}

/// Width of `text` in terminal cells.
pub fn width(text: &str) -> usize {
    Span::raw(text).width()
}

/// Width of one character in terminal cells.
pub fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    width(c.encode_utf8(&mut buf))
}

/// Returns `text` cut to at most `max` cells, ending in `…` when something was cut.
pub fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = char_width(c);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// Wraps sanitized `text` to lines of at most `max` cells, at spaces where it can and inside
/// a word where a word is longer than a line. Each `\n` starts a new line; spaces where a line
/// was broken are dropped. Always returns at least one line.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let options = textwrap::Options::new(max.max(1))
        .word_separator(textwrap::WordSeparator::AsciiSpace)
        .wrap_algorithm(textwrap::WrapAlgorithm::FirstFit)
        .break_words(true);
    textwrap::wrap(text, options)
        .into_iter()
        .map(|line| line.trim_end().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_neutralises_terminal_controls() {
        assert_eq!(sanitize("a\x1b[2Jb"), "a\u{FFFD}[2Jb");
        assert_eq!(sanitize("x\u{202E}y"), "x\u{FFFD}y");
        assert_eq!(sanitize("one\r\ntwo\rthree\tfour"), "one\ntwo\nthree four");
        assert_eq!(one_line("a\nb"), "a b");
    }

    #[test]
    fn widths_count_cells() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width("日本"), 4);
        assert_eq!(char_width('✓'), 1);
    }

    #[test]
    fn truncate_marks_the_cut() {
        assert_eq!(truncate("alice", 10), "alice");
        assert_eq!(truncate("alexandria", 5), "alex…");
        assert_eq!(truncate("日本語", 4), "日…");
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn wrap_breaks_at_spaces() {
        assert_eq!(
            wrap("the quick brown fox jumps", 10),
            vec!["the quick", "brown fox", "jumps"]
        );
    }

    #[test]
    fn wrap_keeps_line_breaks_and_empty_lines() {
        assert_eq!(wrap("a\n\nb", 10), vec!["a", "", "b"]);
        assert_eq!(wrap("", 10), vec![""]);
    }

    #[test]
    fn wrap_splits_long_words_and_wide_characters() {
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("go 日本語日本", 5), vec!["go", "日本", "語日", "本"]);
    }

    #[test]
    fn wrap_never_exceeds_the_width() {
        let text = "Lorem ipsum   dolor sit amet, consectetur adipiscing elit; 日本語 ok";
        for max in 1..30 {
            for line in wrap(text, max) {
                assert!(width(&line) <= max.max(2), "{line:?} wider than {max}");
            }
        }
    }

    /// Wide characters (CJK, emoji) take two cells: at 80 columns no line is wider than
    /// 80 cells, none is cut inside a character, and nothing is lost.
    #[test]
    fn wrap_counts_wide_characters_and_emoji_at_80_columns() {
        let text = format!(
            "{} {} {}",
            "日本語のテキスト".repeat(8),
            "🙂🎉🚀".repeat(20),
            "mixed 漢字 and emoji 🙂 words ".repeat(6)
        );
        let lines = wrap(&text, 80);
        assert!(lines.len() > 3, "{lines:?}");
        for line in &lines {
            assert!(width(line) <= 80, "{line:?} is {} cells", width(line));
        }
        // The CJK run is 128 cells: 40 characters fill the first line exactly.
        assert_eq!(lines[0], "日本語のテキスト".repeat(5));
        assert_eq!(width(&lines[0]), 80);
        assert_eq!(lines[2], "🙂🎉🚀".repeat(13) + "🙂");
        let joined: String = lines.concat().replace(' ', "");
        assert_eq!(joined, text.replace(' ', ""));
    }
}
