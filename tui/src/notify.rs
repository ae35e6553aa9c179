//! Notifications when a message arrives in a conversation not on screen: the terminal bell,
//! and a desktop notification asked of the terminal itself with an escape sequence (OSC 777,
//! understood by foot, WezTerm, urxvt and VTE terminals that carry the patch; or OSC 9,
//! understood by iTerm2, Windows Terminal, WezTerm and kitty). Terminals that do not know
//! the sequence ignore it. No desktop bus, no extra process. By default a notification says
//! who wrote but never what: the text of a message stays in the terminal unless the
//! configuration asks for it (`content = "message"`).

/// How the desktop notification is asked of the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyVia {
    /// `ESC ] 777 ; notify ; TITLE ; BODY BEL`.
    #[default]
    Osc777,
    /// `ESC ] 9 ; BODY BEL`.
    Osc9,
}

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyContent {
    /// "new message" only.
    Nothing,
    /// "new message from NAME".
    #[default]
    Sender,
    /// "NAME: the text" (the message is then shown by the desktop, outside the terminal).
    Message,
}

/// The notification settings, from the configuration file and `:bell` / `:notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifySettings {
    /// Ring the terminal bell.
    pub bell: bool,
    /// Ask the terminal for a desktop notification.
    pub desktop: bool,
    /// Which sequence.
    pub via: NotifyVia,
    /// What it says.
    pub content: NotifyContent,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            bell: true,
            desktop: true,
            via: NotifyVia::default(),
            content: NotifyContent::default(),
        }
    }
}

/// The most characters of a message a notification shows.
const MAX_BODY: usize = 80;

impl NotifySettings {
    /// What to say about a message from `sender` reading `text`.
    pub fn body(&self, sender: &str, text: &str) -> String {
        match self.content {
            NotifyContent::Nothing => "new message".to_owned(),
            NotifyContent::Sender => format!("new message from {sender}"),
            NotifyContent::Message => {
                let mut short: String = text.chars().take(MAX_BODY).collect();
                if text.chars().count() > MAX_BODY {
                    short.push('…');
                }
                format!("{sender}: {short}")
            }
        }
    }

    /// The escape sequence that asks the terminal to show `body`.
    pub fn sequence(&self, body: &str) -> Vec<u8> {
        let body = clean(body);
        match self.via {
            NotifyVia::Osc777 => format!("\x1b]777;notify;Shallot;{body}\x07").into_bytes(),
            NotifyVia::Osc9 => format!("\x1b]9;Shallot: {body}\x07").into_bytes(),
        }
    }
}

/// `text` without control characters (which could end the sequence early and make the rest
/// of a stranger's message reach the terminal as commands) and without `;`, which OSC 777
/// uses between fields.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() || c == ';' { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_the_text_is_not_shown() {
        let n = NotifySettings::default();
        assert_eq!(n.body("bob", "the secret"), "new message from bob");
        let n = NotifySettings {
            content: NotifyContent::Nothing,
            ..n
        };
        assert_eq!(n.body("bob", "the secret"), "new message");
        let n = NotifySettings {
            content: NotifyContent::Message,
            ..n
        };
        assert_eq!(n.body("bob", "hi"), "bob: hi");
        assert_eq!(n.body("bob", &"x".repeat(100)).chars().count(), 5 + 80 + 1);
    }

    #[test]
    fn sequences_carry_no_control_characters_from_the_message() {
        let n = NotifySettings {
            content: NotifyContent::Message,
            ..NotifySettings::default()
        };
        let body = n.body("eve", "a\x07\x1b]52;c;bad\x07;b");
        let seq = n.sequence(&body);
        assert!(seq.starts_with(b"\x1b]777;notify;Shallot;eve: a"));
        // One BEL (the end) and one ESC (the start), nothing from the message.
        assert_eq!(seq.iter().filter(|b| **b == 0x07).count(), 1);
        assert_eq!(seq.iter().filter(|b| **b == 0x1b).count(), 1);
        assert_eq!(seq.last(), Some(&0x07));
        let n = NotifySettings {
            via: NotifyVia::Osc9,
            ..NotifySettings::default()
        };
        assert_eq!(
            n.sequence("new message"),
            b"\x1b]9;Shallot: new message\x07"
        );
    }
}
