//! Colours: the theme from the configuration file (`config`), and the fallback for
//! terminals with fewer colours. The drawing code colours by role with four of the ANSI
//! colours (green: good, yellow: warning or new, red: bad, cyan: accent) and the terminal's
//! default foreground and background; [`Theme::paint`] then maps each role to the theme's
//! colour and brings every colour within what the terminal shows ([`ColorDepth`]), in one
//! pass over the drawn screen. Without a theme, nothing changes.

use ratatui::buffer::Buffer;
use ratatui::style::Color;

/// How many colours the terminal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorDepth {
    /// The 16 ANSI colours only.
    Ansi16,
    /// The 256-colour palette.
    Indexed256,
    /// Any 24-bit colour.
    #[default]
    TrueColor,
}

impl ColorDepth {
    /// What the terminal claims, from `$COLORTERM` and `$TERM`: 24-bit colour when
    /// `COLORTERM` says `truecolor` or `24bit`, 256 colours when `TERM` names a
    /// `256color` terminal, else the 16 ANSI colours.
    pub fn detect(colorterm: Option<&str>, term: Option<&str>) -> ColorDepth {
        let colorterm = colorterm.unwrap_or_default().to_ascii_lowercase();
        if colorterm == "truecolor" || colorterm == "24bit" {
            ColorDepth::TrueColor
        } else if term.is_some_and(|t| t.contains("256color")) {
            ColorDepth::Indexed256
        } else {
            ColorDepth::Ansi16
        }
    }

    /// [`ColorDepth::detect`] on this process's environment.
    pub fn from_env() -> ColorDepth {
        let colorterm = std::env::var("COLORTERM").ok();
        let term = std::env::var("TERM").ok();
        ColorDepth::detect(colorterm.as_deref(), term.as_deref())
    }
}

/// The colour of each role, and how many colours the terminal shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// Delivered, subscribed, working (drawn green).
    pub good: Color,
    /// Sending, unread counts, warnings (drawn yellow).
    pub warn: Color,
    /// Failed, errors, offline (drawn red).
    pub bad: Color,
    /// Stored marks, keys in the help, completions (drawn cyan).
    pub accent: Color,
    /// Ordinary text (the terminal's default foreground).
    pub text: Color,
    /// The background (the terminal's default background).
    pub background: Color,
    /// What the colours are brought within.
    pub depth: ColorDepth,
}

impl Default for Theme {
    fn default() -> Self {
        Theme {
            good: Color::Green,
            warn: Color::Yellow,
            bad: Color::Red,
            accent: Color::Cyan,
            text: Color::Reset,
            background: Color::Reset,
            depth: ColorDepth::TrueColor,
        }
    }
}

impl Theme {
    /// The colour a cell drawn in `role` gets: the theme's, within the terminal's depth.
    pub fn color(&self, role: Color, background: bool) -> Color {
        let mapped = match role {
            Color::Green => self.good,
            Color::Yellow => self.warn,
            Color::Red => self.bad,
            Color::Cyan => self.accent,
            Color::Reset if background => self.background,
            Color::Reset => self.text,
            other => other,
        };
        reduce(mapped, self.depth)
    }

    /// Recolours every cell of a drawn screen.
    pub fn paint(&self, buffer: &mut Buffer) {
        if *self == Theme::default() {
            return;
        }
        for cell in buffer.content.iter_mut() {
            cell.fg = self.color(cell.fg, false);
            cell.bg = self.color(cell.bg, true);
        }
    }
}

/// The 16 ANSI colours, in palette order, with the RGB values xterm gives them.
const ANSI16: [(Color, (u8, u8, u8)); 16] = [
    (Color::Black, (0, 0, 0)),
    (Color::Red, (205, 0, 0)),
    (Color::Green, (0, 205, 0)),
    (Color::Yellow, (205, 205, 0)),
    (Color::Blue, (0, 0, 238)),
    (Color::Magenta, (205, 0, 205)),
    (Color::Cyan, (0, 205, 205)),
    (Color::Gray, (229, 229, 229)),
    (Color::DarkGray, (127, 127, 127)),
    (Color::LightRed, (255, 0, 0)),
    (Color::LightGreen, (0, 255, 0)),
    (Color::LightYellow, (255, 255, 0)),
    (Color::LightBlue, (92, 92, 255)),
    (Color::LightMagenta, (255, 0, 255)),
    (Color::LightCyan, (0, 255, 255)),
    (Color::White, (255, 255, 255)),
];

/// Whether `color` is the terminal's default or one of the 16 ANSI colours.
pub fn is_ansi16(color: Color) -> bool {
    color == Color::Reset || ANSI16.iter().any(|(c, _)| *c == color)
}

/// The RGB value of a 256-palette index (the 16 ANSI colours, the 6×6×6 cube, the greys).
fn indexed_rgb(i: u8) -> (u8, u8, u8) {
    match i {
        0..=15 => ANSI16[usize::from(i)].1,
        16..=231 => {
            let level = |v: u8| if v == 0 { 0 } else { 55 + 40 * v };
            let n = i - 16;
            (level(n / 36), level((n / 6) % 6), level(n % 6))
        }
        _ => {
            let grey = 8 + 10 * (i - 232);
            (grey, grey, grey)
        }
    }
}

fn distance(a: (u8, u8, u8), b: (u8, u8, u8)) -> u32 {
    let d = |x: u8, y: u8| u32::from(x.abs_diff(y)).pow(2);
    d(a.0, b.0) + d(a.1, b.1) + d(a.2, b.2)
}

/// The nearest of the 16 ANSI colours to an RGB value.
fn nearest_ansi16(rgb: (u8, u8, u8)) -> Color {
    ANSI16
        .iter()
        .min_by_key(|(_, c)| distance(*c, rgb))
        .map_or(Color::Reset, |(c, _)| *c)
}

/// The nearest entry of the 256-colour palette (cube and greys) to an RGB value.
fn nearest_indexed(rgb: (u8, u8, u8)) -> Color {
    (16..=255u8)
        .min_by_key(|i| distance(indexed_rgb(*i), rgb))
        .map_or(Color::Reset, Color::Indexed)
}

/// `color` as the terminal of `depth` can show it.
pub fn reduce(color: Color, depth: ColorDepth) -> Color {
    match (depth, color) {
        (ColorDepth::TrueColor, c) => c,
        (ColorDepth::Indexed256, Color::Rgb(r, g, b)) => nearest_indexed((r, g, b)),
        (ColorDepth::Indexed256, c) => c,
        (ColorDepth::Ansi16, Color::Rgb(r, g, b)) => nearest_ansi16((r, g, b)),
        (ColorDepth::Ansi16, Color::Indexed(i)) => nearest_ansi16(indexed_rgb(i)),
        (ColorDepth::Ansi16, c) => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_is_detected_from_the_environment() {
        use ColorDepth::*;
        assert_eq!(
            ColorDepth::detect(Some("truecolor"), Some("xterm")),
            TrueColor
        );
        assert_eq!(ColorDepth::detect(Some("24bit"), None), TrueColor);
        assert_eq!(ColorDepth::detect(None, Some("xterm-256color")), Indexed256);
        assert_eq!(ColorDepth::detect(None, Some("linux")), Ansi16);
        assert_eq!(ColorDepth::detect(None, None), Ansi16);
    }

    #[test]
    fn every_colour_reduces_to_the_16_ansi_colours() {
        for i in 0..=255u8 {
            assert!(is_ansi16(reduce(Color::Indexed(i), ColorDepth::Ansi16)));
        }
        for v in (0..=255u8).step_by(17) {
            let c = reduce(Color::Rgb(v, 255 - v, v / 2), ColorDepth::Ansi16);
            assert!(is_ansi16(c), "{c:?}");
        }
        assert_eq!(
            reduce(Color::Rgb(250, 10, 10), ColorDepth::Ansi16),
            Color::LightRed
        );
        assert_eq!(reduce(Color::Indexed(2), ColorDepth::Ansi16), Color::Green);
        assert_eq!(
            reduce(Color::Rgb(255, 0, 0), ColorDepth::Indexed256),
            Color::Indexed(196)
        );
        assert_eq!(
            reduce(Color::Rgb(1, 2, 3), ColorDepth::TrueColor),
            Color::Rgb(1, 2, 3)
        );
    }

    #[test]
    fn roles_map_to_the_theme() {
        let theme = Theme {
            good: Color::Rgb(0, 128, 255),
            background: Color::Black,
            ..Theme::default()
        };
        assert_eq!(theme.color(Color::Green, false), Color::Rgb(0, 128, 255));
        assert_eq!(theme.color(Color::Reset, true), Color::Black);
        assert_eq!(theme.color(Color::Reset, false), Color::Reset);
        assert_eq!(theme.color(Color::Magenta, false), Color::Magenta);
    }
}
