//! Every key the chat UI understands, by where it works: the one table the help overlay
//! shows, kept beside the key handling it describes. A key handled without a row here is a
//! bug.

/// One key (or a few keys doing one thing) and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHelp {
    /// The keys, as the user types them.
    pub keys: &'static str,
    /// What they do.
    pub does: &'static str,
}

/// The keys that work in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelpSection {
    /// Where they work.
    pub title: &'static str,
    /// The keys.
    pub keys: &'static [KeyHelp],
}

const fn key(keys: &'static str, does: &'static str) -> KeyHelp {
    KeyHelp { keys, does }
}

/// The help overlay's content, in order.
pub const SECTIONS: &[HelpSection] = &[
    HelpSection {
        title: "Anywhere",
        keys: &[
            key("Tab Shift-Tab", "next / previous pane"),
            key("PgUp PgDn", "scroll conversation"),
            key("?  F1", "help; ? not mid-text"),
            key(":  /", "command line (Tab)"),
            key("F2", "network panel"),
            key("Ctrl-N", "next unread chat"),
            key("Ctrl-F", "search all chats"),
            key("Ctrl-R", "retry network now"),
            key("Ctrl-L", "log of notices"),
            key("Ctrl-E", "write in $EDITOR"),
            key("click  wheel", "select / scroll"),
            key("Ctrl-C", "quit"),
        ],
    },
    HelpSection {
        title: "Contacts pane",
        keys: &[
            key("↑ ↓  k j", "select"),
            key("Enter", "open, write a message"),
            key("a", "add a contact"),
            key("i", "show my address"),
            key("y  n", "accept/ignore request"),
            key("q", "quit"),
        ],
    },
    HelpSection {
        title: "Conversation pane",
        keys: &[
            key("↑ ↓  k j", "select, scroll"),
            key("Home End", "oldest / newest"),
            key("r", "resend ✗ or … message"),
            key("Enter", "write a message"),
            key("Esc", "back to contacts"),
            key("a i y n", "as in contacts"),
        ],
    },
    HelpSection {
        title: "Input line",
        keys: &[
            key("Enter", "send"),
            key("Alt-Enter Ctrl-J", "new line"),
            key("← → Home End", "move in the line"),
            key("↑ ↓", "move between lines"),
            key("Backspace Del", "delete"),
            key("Ctrl-U", "clear the input"),
            key("paste", "inserts, lines kept"),
            key("Esc", "back to contacts"),
        ],
    },
    HelpSection {
        title: "Commands (after :)",
        keys: &[
            key("rename NAME", "rename this contact"),
            key("remove  block", "remove / block (asks)"),
            key("ignored", "list ignored people"),
            key("search TEXT", "as Ctrl-F"),
            key("bell  edit", "bell on/off, Ctrl-E"),
            key("notify on|off", "desktop alerts on/off"),
            key("next retry log", "as Ctrl-N, -R, -L"),
            key("network", "as F2"),
            key("help me add", "as ?, i, a"),
            key("accept ignore", "as y, n"),
            key("quit", "quit"),
        ],
    },
    HelpSection {
        title: "Dialogs and help",
        keys: &[
            key("Enter", "confirm, close"),
            key("Tab ↑ ↓", "next field / scroll"),
            key("y  n", "answer a question"),
            key("c", "copy my address"),
            key("Esc", "cancel, close"),
        ],
    },
    HelpSection {
        title: "Marks on my messages",
        keys: &[
            key("…", "sending"),
            key("✓1 ✓2 ✓3", "stored on k mailboxes"),
            key("✓✓", "delivered"),
            key("✗ failed", "not sent; r retries"),
        ],
    },
];

/// The widest `keys` in [`SECTIONS`], in characters.
pub fn keys_width() -> usize {
    SECTIONS
        .iter()
        .flat_map(|s| s.keys)
        .map(|k| k.keys.chars().count())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command of the command line is in the help.
    #[test]
    fn every_command_is_listed() {
        let listed: String = SECTIONS
            .iter()
            .flat_map(|s| s.keys)
            .map(|k| format!(" {} ", k.keys))
            .collect();
        for c in crate::command::COMMANDS {
            assert!(listed.contains(&format!(" {}", c.name)), "{}", c.name);
        }
    }

    /// Two columns of help fit in 80 columns: each row at most 39 cells.
    #[test]
    fn rows_fit_half_of_80_columns() {
        for k in SECTIONS.iter().flat_map(|s| s.keys) {
            let row = 1 + keys_width() + 1 + k.does.chars().count();
            assert!(row <= 39, "{k:?} is too wide for two columns");
        }
    }
}
