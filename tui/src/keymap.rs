//! Key bindings from the configuration file's `[keys]` table: each names an action that
//! works wherever the focus is and the keys that do it (`next_unread = "ctrl-o"`, or a list).
//! A bound key does its action before anything else it would do; the default keys keep
//! working unless bound to something else. Keys are written `ctrl-x`, `alt-x`, `f5`,
//! `tab`, `shift-tab`, `pageup`, `pagedown`, `up`, `down`, `home`, `end`, `insert`, `delete`.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Something a key can do wherever the focus is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GlobalAction {
    /// The help overlay.
    Help,
    /// The network panel.
    Network,
    /// The `:` command line.
    Command,
    /// Search all conversations.
    Search,
    /// The next conversation with unread messages.
    NextUnread,
    /// Retry the network now.
    Retry,
    /// The log of notices.
    Log,
    /// Write the draft in `$EDITOR`.
    Edit,
    /// The next pane.
    FocusNext,
    /// The previous pane.
    FocusPrevious,
    /// Scroll the conversation up a page.
    ScrollUp,
    /// Scroll the conversation down a page.
    ScrollDown,
}

/// Every action by its name in the configuration file, with its default keys as the help
/// shows them.
pub const ACTIONS: &[(&str, GlobalAction, &str)] = &[
    ("help", GlobalAction::Help, "F1 ?"),
    ("network", GlobalAction::Network, "F2"),
    ("command", GlobalAction::Command, ": /"),
    ("search", GlobalAction::Search, "Ctrl-F"),
    ("next_unread", GlobalAction::NextUnread, "Ctrl-N"),
    ("retry", GlobalAction::Retry, "Ctrl-R"),
    ("log", GlobalAction::Log, "Ctrl-L"),
    ("edit", GlobalAction::Edit, "Ctrl-E"),
    ("focus_next", GlobalAction::FocusNext, "Tab"),
    ("focus_previous", GlobalAction::FocusPrevious, "Shift-Tab"),
    ("scroll_up", GlobalAction::ScrollUp, "PgUp"),
    ("scroll_down", GlobalAction::ScrollDown, "PgDn"),
];

/// The action named `name` in the configuration file.
pub fn action_named(name: &str) -> Option<GlobalAction> {
    ACTIONS.iter().find(|(n, _, _)| *n == name).map(|a| a.1)
}

/// The name of `action` in the configuration file.
fn name_of(action: GlobalAction) -> &'static str {
    ACTIONS.iter().find(|a| a.1 == action).map_or("", |a| a.0)
}

/// The user's bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keymap {
    bound: Vec<(KeyCode, KeyModifiers, GlobalAction, String)>,
}

impl Keymap {
    /// Binds `key` (as written in the file) to `action`; refuses a key that cannot be
    /// parsed, one that typing or quitting needs, and one already bound.
    pub fn bind(&mut self, action: GlobalAction, key: &str) -> Result<(), String> {
        let (code, modifiers) = parse_key(key)?;
        if let Some((_, _, other, _)) = self
            .bound
            .iter()
            .find(|(c, m, _, _)| *c == code && *m == modifiers)
        {
            if *other != action {
                return Err(format!("{key:?} is already bound to {}", name_of(*other)));
            }
        }
        self.bound.push((code, modifiers, action, key.to_owned()));
        Ok(())
    }

    /// The action `key` is bound to, if any. Shift is ignored on characters (it only
    /// changes which character arrives).
    pub fn action(&self, key: &KeyEvent) -> Option<GlobalAction> {
        let modifiers = match key.code {
            KeyCode::Char(_) => key.modifiers - KeyModifiers::SHIFT,
            _ => key.modifiers,
        };
        let code = match key.code {
            KeyCode::Char(c) => KeyCode::Char(c.to_ascii_lowercase()),
            c => c,
        };
        self.bound
            .iter()
            .find(|(c, m, _, _)| *c == code && *m == modifiers)
            .map(|b| b.2)
    }

    /// Each bound key as written, with its action's name, for the help.
    pub fn listed(&self) -> Vec<(String, &'static str)> {
        self.bound
            .iter()
            .map(|(_, _, action, written)| (written.clone(), name_of(*action)))
            .collect()
    }
}

const KEY_HINT: &str = "write a key such as \"ctrl-o\", \"alt-n\", \"f5\", \"tab\", \"pageup\"";

/// Parses a key as written in the configuration file.
pub fn parse_key(text: &str) -> Result<(KeyCode, KeyModifiers), String> {
    let lower = text.trim().to_ascii_lowercase();
    let mut modifiers = KeyModifiers::NONE;
    let mut rest = lower.as_str();
    loop {
        if let Some(r) = rest
            .strip_prefix("ctrl-")
            .or_else(|| rest.strip_prefix("c-"))
        {
            modifiers |= KeyModifiers::CONTROL;
            rest = r;
        } else if let Some(r) = rest
            .strip_prefix("alt-")
            .or_else(|| rest.strip_prefix("m-"))
        {
            modifiers |= KeyModifiers::ALT;
            rest = r;
        } else {
            break;
        }
    }
    let code = match rest {
        "tab" => KeyCode::Tab,
        "shift-tab" | "backtab" => KeyCode::BackTab,
        "pageup" | "pgup" => KeyCode::PageUp,
        "pagedown" | "pgdn" => KeyCode::PageDown,
        "up" => KeyCode::Up,
        "down" => KeyCode::Down,
        "left" => KeyCode::Left,
        "right" => KeyCode::Right,
        "home" => KeyCode::Home,
        "end" => KeyCode::End,
        "insert" => KeyCode::Insert,
        "delete" | "del" => KeyCode::Delete,
        "enter" | "esc" | "escape" | "backspace" => {
            return Err(format!(
                "{text:?} is needed for typing and dialogs; {KEY_HINT}"
            ))
        }
        f if f.starts_with('f') && f.len() > 1 => match f[1..].parse::<u8>() {
            Ok(n @ 1..=12) => KeyCode::F(n),
            _ => return Err(format!("{text:?} is not a key: {KEY_HINT}")),
        },
        c => {
            let mut chars = c.chars();
            match (chars.next(), chars.next()) {
                (Some(ch), None) if ch.is_ascii_graphic() => KeyCode::Char(ch),
                _ => return Err(format!("{text:?} is not a key: {KEY_HINT}")),
            }
        }
    };
    if let KeyCode::Char(c) = code {
        if modifiers.is_empty() {
            return Err(format!(
                "{text:?} alone would be typed into messages; add ctrl- or alt-, or use f1–f12"
            ));
        }
        if modifiers == KeyModifiers::CONTROL && c == 'c' {
            return Err(format!("{text:?} always quits; choose another key"));
        }
    }
    Ok((code, modifiers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_as_written() {
        assert_eq!(
            parse_key("Ctrl-O"),
            Ok((KeyCode::Char('o'), KeyModifiers::CONTROL))
        );
        assert_eq!(
            parse_key("alt-ctrl-x"),
            Ok((
                KeyCode::Char('x'),
                KeyModifiers::ALT | KeyModifiers::CONTROL
            ))
        );
        assert_eq!(parse_key("F5"), Ok((KeyCode::F(5), KeyModifiers::NONE)));
        assert_eq!(
            parse_key("shift-tab"),
            Ok((KeyCode::BackTab, KeyModifiers::NONE))
        );
        assert!(parse_key("f13").is_err());
        assert!(parse_key("x").is_err_and(|e| e.contains("typed")));
        assert!(parse_key("ctrl-c").is_err_and(|e| e.contains("quits")));
        assert!(parse_key("enter").is_err());
        assert!(parse_key("ctrl-").is_err());
        assert!(parse_key("hyper-q").is_err());
    }

    #[test]
    fn a_key_is_bound_once() {
        let mut map = Keymap::default();
        assert!(map.bind(GlobalAction::Search, "ctrl-o").is_ok());
        assert!(map
            .bind(GlobalAction::Log, "Ctrl-O")
            .is_err_and(|e| e.contains("already bound")));
        let key = KeyEvent::new(
            KeyCode::Char('O'),
            KeyModifiers::CONTROL | KeyModifiers::SHIFT,
        );
        assert_eq!(map.action(&key), Some(GlobalAction::Search));
        let plain = KeyEvent::new(KeyCode::Char('o'), KeyModifiers::NONE);
        assert_eq!(map.action(&plain), None);
    }
}
