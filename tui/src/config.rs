//! The chat UI's configuration file, `tui.toml` in the platform's configuration directory
//! (`$XDG_CONFIG_HOME/shallot/`, found by the `shallot` binary as it finds `relay.toml`).
//! Every key is optional; an unknown or wrong one is refused on one line naming it:
//!
//! ```toml
//! [theme]
//! colors = "auto"        # or 16, 256, "truecolor"
//! good = "green"         # names, "#rrggbb" or 0–255; "default" is the terminal's
//! warn = "yellow"
//! bad = "red"
//! accent = "cyan"
//! text = "default"
//! background = "default"
//!
//! [keys]                 # actions that work wherever the focus is (see `keymap`)
//! next_unread = "ctrl-o"
//! edit = ["ctrl-e", "f4"]
//!
//! [notify]
//! bell = true            # terminal bell
//! desktop = true         # desktop notification through the terminal (OSC 777 or OSC 9)
//! via = "osc777"         # or "osc9"
//! content = "sender"     # "none": "new message"; "sender": "… from NAME"; "message": the text
//! ```

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::Color;
use thiserror::Error;

use super::keymap::{action_named, Keymap, ACTIONS};
use super::notify::{NotifyContent, NotifySettings, NotifyVia};
use super::theme::{ColorDepth, Theme};

/// A configuration file that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file is not TOML.
    #[error("{path}: not valid TOML: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said, on one line.
        reason: String,
    },
    /// One key's value is wrong, or the key is unknown.
    #[error("{path}: `{key}`: {fix}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The key, with its table (`theme.good`).
        key: String,
        /// What is wrong and what to write instead.
        fix: String,
    },
}

/// What the configuration file sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiConfig {
    /// The colours.
    pub theme: Theme,
    /// The user's key bindings.
    pub keys: Keymap,
    /// The bell and desktop notifications.
    pub notify: NotifySettings,
}

impl UiConfig {
    /// The configuration with nothing set, for a terminal of `depth`.
    pub fn for_depth(depth: ColorDepth) -> UiConfig {
        let mut config = UiConfig::default();
        config.theme.depth = depth;
        config
    }

    /// Parses the text of `path`; `detected` is the terminal's colour depth, used unless
    /// the file says `colors`.
    pub fn parse(text: &str, path: &Path, detected: ColorDepth) -> Result<UiConfig, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    reason: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
                })?;
        let bad = |key: &str, fix: String| ConfigError::Key {
            path: path.to_path_buf(),
            key: key.to_owned(),
            fix,
        };
        let mut config = UiConfig::for_depth(detected);
        for (name, value) in &table {
            let Some(section) = value.as_table() else {
                return Err(bad(
                    name,
                    "write it in a table: [theme], [keys] or [notify]".into(),
                ));
            };
            match name.as_str() {
                "theme" => read_theme(section, &mut config.theme, &bad)?,
                "keys" => read_keys(section, &mut config.keys, &bad)?,
                "notify" => read_notify(section, &mut config.notify, &bad)?,
                _ => {
                    return Err(bad(
                        name,
                        "unknown table; the tables are [theme], [keys] and [notify]".into(),
                    ))
                }
            }
        }
        Ok(config)
    }
}

type Bad<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn string<'t>(value: &'t toml::Value, key: &str, bad: &Bad) -> Result<&'t str, ConfigError> {
    value
        .as_str()
        .ok_or_else(|| bad(key, "write the value as a quoted string".into()))
}

fn boolean(value: &toml::Value, key: &str, bad: &Bad) -> Result<bool, ConfigError> {
    value
        .as_bool()
        .ok_or_else(|| bad(key, "write true or false".into()))
}

/// A colour: a name (`red`, `light-blue`, `dark-gray`), `#rrggbb`, a palette index
/// 0–255, or `default` (the terminal's own).
pub fn parse_color(text: &str) -> Result<Color, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "default" || t == "reset" {
        return Ok(Color::Reset);
    }
    if t.starts_with('#') && t.len() != 7 {
        return Err(format!(
            "{text:?} is not a colour: write \"#rrggbb\" with six hex digits"
        ));
    }
    Color::from_str(&t).map_err(|_| {
        format!(
            "{text:?} is not a colour: write a name (red, light-blue, dark-gray…), \
             \"#rrggbb\", a number 0–255, or \"default\""
        )
    })
}

fn read_theme(section: &toml::Table, theme: &mut Theme, bad: &Bad) -> Result<(), ConfigError> {
    for (name, value) in section {
        let key = format!("theme.{name}");
        if name == "colors" {
            theme.depth = match value {
                toml::Value::Integer(16) => ColorDepth::Ansi16,
                toml::Value::Integer(256) => ColorDepth::Indexed256,
                toml::Value::String(s) if s == "16" => ColorDepth::Ansi16,
                toml::Value::String(s) if s == "256" => ColorDepth::Indexed256,
                toml::Value::String(s) if s == "truecolor" || s == "24bit" => ColorDepth::TrueColor,
                toml::Value::String(s) if s == "auto" => theme.depth,
                _ => {
                    return Err(bad(
                        &key,
                        "write 16, 256, \"truecolor\" or \"auto\" (from $COLORTERM and $TERM)"
                            .into(),
                    ))
                }
            };
            continue;
        }
        let slot =
            match name.as_str() {
                "good" => &mut theme.good,
                "warn" => &mut theme.warn,
                "bad" => &mut theme.bad,
                "accent" => &mut theme.accent,
                "text" => &mut theme.text,
                "background" => &mut theme.background,
                _ => return Err(bad(
                    &key,
                    "unknown key; the keys are colors, good, warn, bad, accent, text, background"
                        .into(),
                )),
            };
        *slot = parse_color(string(value, &key, bad)?).map_err(|e| bad(&key, e))?;
    }
    Ok(())
}

fn read_keys(section: &toml::Table, keys: &mut Keymap, bad: &Bad) -> Result<(), ConfigError> {
    for (name, value) in section {
        let key = format!("keys.{name}");
        let Some(action) = action_named(name) else {
            let names: Vec<&str> = ACTIONS.iter().map(|a| a.0).collect();
            return Err(bad(
                &key,
                format!("unknown action; the actions are {}", names.join(", ")),
            ));
        };
        let written: Vec<&str> = match value {
            toml::Value::String(s) => vec![s.as_str()],
            toml::Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str().ok_or_else(|| {
                        bad(&key, "write a key or a list of keys, [\"…\", \"…\"]".into())
                    })
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(bad(
                    &key,
                    "write a key as a quoted string, \"ctrl-o\"".into(),
                ))
            }
        };
        for k in written {
            keys.bind(action, k).map_err(|e| bad(&key, e))?;
        }
    }
    Ok(())
}

fn read_notify(
    section: &toml::Table,
    notify: &mut NotifySettings,
    bad: &Bad,
) -> Result<(), ConfigError> {
    for (name, value) in section {
        let key = format!("notify.{name}");
        match name.as_str() {
            "bell" => notify.bell = boolean(value, &key, bad)?,
            "desktop" => notify.desktop = boolean(value, &key, bad)?,
            "via" => {
                notify.via = match string(value, &key, bad)? {
                    "osc777" => NotifyVia::Osc777,
                    "osc9" => NotifyVia::Osc9,
                    _ => return Err(bad(&key, "write \"osc777\" or \"osc9\"".into())),
                }
            }
            "content" => {
                notify.content = match string(value, &key, bad)? {
                    "none" => NotifyContent::Nothing,
                    "sender" => NotifyContent::Sender,
                    "message" => NotifyContent::Message,
                    _ => {
                        return Err(bad(
                            &key,
                            "write \"none\", \"sender\" or \"message\"".into(),
                        ))
                    }
                }
            }
            _ => {
                return Err(bad(
                    &key,
                    "unknown key; the keys are bell, desktop, via, content".into(),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keymap::GlobalAction;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn parse(text: &str) -> Result<UiConfig, ConfigError> {
        UiConfig::parse(text, Path::new("tui.toml"), ColorDepth::TrueColor)
    }

    fn refused(text: &str, key: &str) -> String {
        match parse(text) {
            Err(e @ ConfigError::Key { .. }) => {
                let line = e.to_string();
                assert!(line.contains(&format!("`{key}`")), "{line}");
                assert_eq!(line.lines().count(), 1);
                line
            }
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(parse(""), Ok(UiConfig::default()));
    }

    #[test]
    fn a_whole_file_is_read() {
        let config = parse(
            "[theme]\ncolors = 16\ngood = \"#0080ff\"\nbackground = \"black\"\n\
             [keys]\nnext_unread = \"ctrl-o\"\nedit = [\"ctrl-e\", \"f4\"]\n\
             [notify]\nbell = false\ndesktop = false\nvia = \"osc9\"\ncontent = \"none\"\n",
        )
        .unwrap();
        assert_eq!(config.theme.depth, ColorDepth::Ansi16);
        assert_eq!(config.theme.good, Color::Rgb(0, 0x80, 0xff));
        assert_eq!(config.theme.background, Color::Black);
        let ctrl_o = KeyEvent::new(KeyCode::Char('o'), KeyModifiers::CONTROL);
        assert_eq!(config.keys.action(&ctrl_o), Some(GlobalAction::NextUnread));
        let f4 = KeyEvent::new(KeyCode::F(4), KeyModifiers::NONE);
        assert_eq!(config.keys.action(&f4), Some(GlobalAction::Edit));
        assert!(!config.notify.bell && !config.notify.desktop);
        assert_eq!(config.notify.via, NotifyVia::Osc9);
        assert_eq!(config.notify.content, NotifyContent::Nothing);
    }

    #[test]
    fn detected_depth_is_kept_unless_the_file_says() {
        let p = Path::new("t");
        let c = UiConfig::parse("", p, ColorDepth::Ansi16).unwrap();
        assert_eq!(c.theme.depth, ColorDepth::Ansi16);
        let c = UiConfig::parse("[theme]\ncolors = \"auto\"", p, ColorDepth::Ansi16).unwrap();
        assert_eq!(c.theme.depth, ColorDepth::Ansi16);
        let c = UiConfig::parse("[theme]\ncolors = \"truecolor\"", p, ColorDepth::Ansi16).unwrap();
        assert_eq!(c.theme.depth, ColorDepth::TrueColor);
    }

    #[test]
    fn bad_keys_are_refused_by_name() {
        refused("[keys]\nnext_unread = \"x\"", "keys.next_unread");
        refused("[keys]\nfly = \"ctrl-o\"", "keys.fly");
        let twice = refused(
            "[keys]\nlog = \"ctrl-o\"\nsearch = \"ctrl-o\"",
            "keys.search",
        );
        assert!(twice.contains("already bound to log"), "{twice}");
        refused("[keys]\nsearch = 5", "keys.search");
        refused("[theme]\ngood = \"blurple\"", "theme.good");
        refused("[theme]\ngood = \"#12345\"", "theme.good");
        refused("[theme]\ncolors = 88", "theme.colors");
        refused("[theme]\nshade = \"red\"", "theme.shade");
        refused("[notify]\ncontent = \"all\"", "notify.content");
        refused("[notify]\nbell = \"yes\"", "notify.bell");
        refused("[colours]\na = 1", "colours");
        refused("colors = 16", "colors");
        assert!(matches!(parse("[theme"), Err(ConfigError::Syntax { .. })));
    }
}
