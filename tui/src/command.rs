//! The `:` command line: every thing the keys do, by name, with completion. Parsing is
//! pure: a line goes in, a [`Command`] (or why not) comes out; `keys` carries it out.

use super::editor::Editor;

/// One command's name, its argument (if any) and what it does, for completion and help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandHelp {
    /// The name typed after `:`.
    pub name: &'static str,
    /// What follows the name, if anything.
    pub argument: &'static str,
    /// What it does.
    pub does: &'static str,
}

const fn cmd(name: &'static str, argument: &'static str, does: &'static str) -> CommandHelp {
    CommandHelp {
        name,
        argument,
        does,
    }
}

/// Every command, in the order completion offers them.
pub const COMMANDS: &[CommandHelp] = &[
    cmd("accept", "", "accept the selected request"),
    cmd("add", "", "add a contact"),
    cmd("bell", "", "bell on new messages on/off"),
    cmd("block", "", "remove and ignore this contact"),
    cmd("edit", "", "write the message in $EDITOR"),
    cmd("help", "", "list every key"),
    cmd("ignore", "", "ignore the selected request"),
    cmd("ignored", "", "list ignored addresses"),
    cmd("log", "", "every notice and error in full"),
    cmd("me", "", "show my address"),
    cmd("network", "", "the network panel"),
    cmd("next", "", "next conversation with unread"),
    cmd("notify", "on|off", "desktop notifications on/off"),
    cmd("quit", "", "quit"),
    cmd("remove", "", "remove this contact"),
    cmd("rename", "NAME", "rename this contact"),
    cmd("retry", "", "retry the network and waiting messages"),
    cmd("search", "TEXT", "search all conversations"),
];

/// A command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `accept`.
    Accept,
    /// `add`.
    Add,
    /// `bell`.
    Bell,
    /// `block`.
    Block,
    /// `edit`.
    Edit,
    /// `help`.
    Help,
    /// `ignore`.
    Ignore,
    /// `ignored`.
    Ignored,
    /// `log`.
    Log,
    /// `me`.
    Me,
    /// `network`.
    Network,
    /// `next`.
    Next,
    /// `notify on` or `notify off`.
    Notify(bool),
    /// `quit`.
    Quit,
    /// `remove`.
    Remove,
    /// `rename NAME`.
    Rename(String),
    /// `retry`.
    Retry,
    /// `search TEXT`.
    Search(String),
}

/// Parses a command line (without its `:`). A unique prefix of a name will do.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let matches: Vec<&CommandHelp> = COMMANDS
        .iter()
        .filter(|c| c.name.starts_with(word))
        .collect();
    let found = match matches.as_slice() {
        _ if word.is_empty() => return Err("type a command; Tab lists them".to_owned()),
        [one] => one,
        _ => match matches.iter().find(|c| c.name == word) {
            Some(exact) => exact,
            None if matches.is_empty() => return Err(format!("no command {word:?}")),
            None => {
                let names: Vec<&str> = matches.iter().map(|c| c.name).collect();
                return Err(format!("{word:?} could be {}", names.join(", ")));
            }
        },
    };
    if found.argument.is_empty() && !rest.is_empty() {
        return Err(format!(":{} takes nothing after it", found.name));
    }
    if !found.argument.is_empty() && rest.is_empty() {
        return Err(format!("usage: :{} {}", found.name, found.argument));
    }
    Ok(match found.name {
        "accept" => Command::Accept,
        "add" => Command::Add,
        "bell" => Command::Bell,
        "block" => Command::Block,
        "edit" => Command::Edit,
        "help" => Command::Help,
        "ignore" => Command::Ignore,
        "ignored" => Command::Ignored,
        "log" => Command::Log,
        "me" => Command::Me,
        "network" => Command::Network,
        "next" => Command::Next,
        "notify" => match rest {
            "on" => Command::Notify(true),
            "off" => Command::Notify(false),
            _ => return Err("usage: :notify on|off".to_owned()),
        },
        "quit" => Command::Quit,
        "remove" => Command::Remove,
        "rename" => Command::Rename(rest.to_owned()),
        "retry" => Command::Retry,
        _ => Command::Search(rest.to_owned()),
    })
}

/// The command line being typed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandLine {
    /// The text after `:`.
    pub line: Editor,
    /// Why the last Enter was refused.
    pub error: Option<String>,
}

impl CommandLine {
    /// The commands the first word could still become.
    pub fn candidates(&self) -> Vec<&'static CommandHelp> {
        let text = self.line.text();
        if text.contains(' ') {
            return Vec::new();
        }
        COMMANDS
            .iter()
            .filter(|c| c.name.starts_with(text.as_str()))
            .collect()
    }

    /// Tab: completes the first word as far as the candidates agree (and a space after a
    /// single one that takes an argument).
    pub fn complete(&mut self) {
        let candidates = self.candidates();
        let Some(first) = candidates.first() else {
            return;
        };
        let mut common = first.name.to_owned();
        for c in &candidates[1..] {
            let n = common
                .chars()
                .zip(c.name.chars())
                .take_while(|(a, b)| a == b)
                .count();
            common.truncate(n);
        }
        if candidates.len() == 1 && !first.argument.is_empty() {
            common.push(' ');
        }
        if common.len() > self.line.text().len() {
            self.line.take();
            self.line.insert_str(&common);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_unique_prefixes_parse() {
        assert_eq!(parse("help"), Ok(Command::Help));
        assert_eq!(
            parse(" se hello  world "),
            Ok(Command::Search("hello  world".into()))
        );
        assert_eq!(parse("rename bob"), Ok(Command::Rename("bob".into())));
        assert_eq!(parse("ignore"), Ok(Command::Ignore));
        assert_eq!(parse("ignored"), Ok(Command::Ignored));
        assert!(parse("re").is_err_and(|e| e.contains("remove, rename, retry")));
        assert!(parse("rename").is_err_and(|e| e.contains("usage")));
        assert!(parse("quit now").is_err());
        assert!(parse("zap").is_err_and(|e| e.contains("no command")));
        assert!(parse("").is_err());
        assert_eq!(parse("notify off"), Ok(Command::Notify(false)));
        assert_eq!(parse("no on"), Ok(Command::Notify(true)));
        assert!(parse("notify maybe").is_err_and(|e| e.contains("on|off")));
        assert_eq!(parse("ed"), Ok(Command::Edit));
    }

    #[test]
    fn every_command_parses_by_its_name() {
        for c in COMMANDS {
            let line = match c.argument {
                "" => c.name.to_owned(),
                "on|off" => format!("{} on", c.name),
                _ => format!("{} x", c.name),
            };
            assert!(parse(&line).is_ok(), "{line}");
        }
    }

    #[test]
    fn tab_completes_as_far_as_the_candidates_agree() {
        let mut c = CommandLine::default();
        c.line.insert_str("r");
        c.complete();
        assert_eq!(c.line.text(), "re");
        assert_eq!(c.candidates().len(), 3);
        c.line.insert_str("n");
        c.complete();
        assert_eq!(c.line.text(), "rename ");
        assert!(c.candidates().is_empty());
        let mut c = CommandLine::default();
        c.line.insert_str("bl");
        c.complete();
        assert_eq!(c.line.text(), "block");
    }
}
