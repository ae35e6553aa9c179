//! Daemon configuration files, `relay.toml` and `authority.toml` (README "Configuration"):
//! every flag of `relay run` and `directory run` has a key of the same name (dashes become
//! underscores); a flag given on the command line wins over the file. Durations and sizes are
//! written for people (`10m`, `1h30m`, `7d`; `256M`, `1GiB`), bare numbers are seconds and
//! bytes. Every value is checked when the file is read, before anything starts, and a bad one
//! is refused on one line naming the file, the key and what to write instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

/// A configuration file that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
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
        /// The key.
        key: String,
        /// What is wrong and what to write instead.
        fix: String,
    },
}

/// A configuration file read and checked against the keys a command knows.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    /// The file to read: `--config FILE` if given (it must exist), else `name` in the
    /// platform's configuration directory (`$XDG_CONFIG_HOME/shallot/` or
    /// `~/.config/shallot/`) if it exists there, else none.
    pub fn locate(given: Option<&Path>, name: &str) -> Result<Option<ConfigFile>, ConfigError> {
        if let Some(path) = given {
            return Self::load(path).map(Some);
        }
        match default_path(name) {
            Some(path) if path.is_file() => Self::load(&path).map(Some),
            _ => Ok(None),
        }
    }

    /// Reads and parses `path`; the keys are checked by [`ConfigFile::only`].
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a file; `path` is used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    reason: e.message().split_whitespace().collect::<Vec<_>>().join(" "),
                })?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            table,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses any key not in `known`, naming the keys that are.
    pub fn only(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self.table.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(self.bad(k, format!("unknown key; the keys are {}", known.join(", ")))),
            None => Ok(()),
        }
    }

    fn bad(&self, key: &str, fix: String) -> ConfigError {
        ConfigError::Key {
            path: self.path.clone(),
            key: key.to_string(),
            fix,
        }
    }

    /// A string value parsed by `parse` (the same check as the flag's), if the key is set.
    pub fn text<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => parse(s).map(Some).map_err(|e| self.bad(key, e)),
            Some(_) => Err(self.bad(key, "write the value as a quoted string".into())),
        }
    }

    /// A list of strings, each parsed by `parse`.
    pub fn list<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<Vec<T>>, ConfigError> {
        let Some(v) = self.table.get(key) else {
            return Ok(None);
        };
        let wrong = || self.bad(key, "write a list of quoted strings, [\"…\", \"…\"]".into());
        let items = v.as_array().ok_or_else(wrong)?;
        items
            .iter()
            .map(|i| {
                let s = i.as_str().ok_or_else(wrong)?;
                parse(s).map_err(|e| self.bad(key, e))
            })
            .collect::<Result<Vec<T>, _>>()
            .map(Some)
    }

    /// A path.
    pub fn path_value(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        self.text(key, |s| {
            if s.is_empty() {
                Err("give a path, not an empty string".into())
            } else {
                Ok(PathBuf::from(s))
            }
        })
    }

    /// An `IP:PORT` address.
    pub fn addr(&self, key: &str) -> Result<Option<SocketAddr>, ConfigError> {
        self.text(key, |s| {
            s.parse()
                .map_err(|_| format!("{s:?} is not IP:PORT (for example \"203.0.113.5:9001\")"))
        })
    }

    /// `true` or `false`.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(key, "write true or false (no quotes)".into())),
        }
    }

    /// A whole number at least 1.
    pub fn count(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n >= 1 => Ok(Some(n.unsigned_abs())),
            Some(_) => Err(self.bad(key, "write a whole number of at least 1".into())),
        }
    }

    /// A positive number, whole or not.
    pub fn number(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        let v = match self.table.get(key) {
            None => return Ok(None),
            Some(toml::Value::Integer(n)) => *n as f64,
            Some(toml::Value::Float(f)) => *f,
            Some(_) => f64::NAN,
        };
        if v.is_finite() && v > 0.0 {
            Ok(Some(v))
        } else {
            Err(self.bad(key, "write a positive number, for example 20 or 2.5".into()))
        }
    }

    /// A duration: `"90s"`, `"10m"`, `"1h30m"`, or a whole number of seconds.
    pub fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n >= 0 => {
                Ok(Some(Duration::from_secs(n.unsigned_abs())))
            }
            Some(toml::Value::String(s)) => {
                parse_duration(s).map(Some).map_err(|e| self.bad(key, e))
            }
            Some(_) => Err(self.bad(key, DURATION_HINT.into())),
        }
    }

    /// A size in bytes: `"256M"`, `"1GiB"`, or a whole number of bytes.
    pub fn size(&self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n >= 1 => Ok(Some(n.unsigned_abs())),
            Some(toml::Value::String(s)) => parse_size(s).map(Some).map_err(|e| self.bad(key, e)),
            Some(_) => Err(self.bad(key, SIZE_HINT.into())),
        }
    }
}

/// `name` in the platform's configuration directory for Shallot.
pub fn default_path(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("shallot").join(name))
}

const DURATION_HINT: &str =
    "write a duration such as \"90s\", \"10m\", \"1h30m\" or \"7d\" (units ms, s, m, h, d)";
const SIZE_HINT: &str =
    "write a size such as \"512K\", \"256M\" or \"1GiB\" (K, M, G are ×1024), or bytes";

/// Parses a duration: one or more `<number><unit>` parts (`ms`, `s`, `m`, `h`, `d`, `w`),
/// as in `1h30m`, or a bare whole number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let hint = || format!("{text:?} is not a duration: {DURATION_HINT}");
    let mut rest = t;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(hint());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let units = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 || units == 0 {
            return Err(hint());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| hint())?;
        let unit_ms: u64 = match &rest[digits..digits + units] {
            "ms" => 1,
            "s" | "sec" | "secs" => 1000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "w" | "week" | "weeks" => 7 * 86_400_000,
            _ => return Err(hint()),
        };
        let ms = n.checked_mul(unit_ms).ok_or_else(hint)?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(hint)?;
        rest = &rest[digits + units..];
    }
    Ok(total)
}

/// Parses a size in bytes: a whole number with an optional `K`, `M`, `G` or `T` suffix
/// (binary multiples; `KiB`, `KB` and the like mean the same), at least 1.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let hint = || format!("{text:?} is not a size: {SIZE_HINT}");
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = t[..digits].parse().map_err(|_| hint())?;
    let shift = match t[digits..].trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(hint()),
    };
    n.checked_mul(1u64 << shift)
        .filter(|&b| b > 0)
        .ok_or_else(hint)
}

/// Formats a duration the way [`parse_duration`] reads it (`1h30m`, `10s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(text, Path::new("relay.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn durations_parse() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("90"), Ok(s(90)));
        assert_eq!(parse_duration("90s"), Ok(s(90)));
        assert_eq!(parse_duration("10m"), Ok(s(600)));
        assert_eq!(parse_duration("1h30m"), Ok(s(5400)));
        assert_eq!(parse_duration("7d"), Ok(s(7 * 86400)));
        assert_eq!(parse_duration("2w"), Ok(s(14 * 86400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in [
            "",
            "m",
            "10 minutes",
            "10x",
            "1.5h",
            "-3s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_format_as_they_parse() {
        for secs in [1, 59, 60, 61, 3600, 5400, 86_400, 691_200, 90_061] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{secs}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256 MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2gb"), Ok(2 << 30));
        for bad in ["", "0", "0M", "M", "1.5G", "12Q", "99999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn values_are_checked_by_type_and_named_by_key() {
        let f = file(
            "heartbeat = \"10m\"\nqueue = \"256M\"\nmailbox = true\nrate = 2.5\n\
             listen = \"127.0.0.1:9001\"\nbad = \"soon\"\ncount = 0\n",
        );
        assert_eq!(f.duration("heartbeat"), Ok(Some(Duration::from_secs(600))));
        assert_eq!(f.size("queue"), Ok(Some(256 << 20)));
        assert_eq!(f.boolean("mailbox"), Ok(Some(true)));
        assert_eq!(f.number("rate"), Ok(Some(2.5)));
        assert_eq!(f.duration("absent"), Ok(None));
        assert!(f.addr("listen").is_ok());
        let e = f.duration("bad").unwrap_err().to_string();
        assert!(e.contains("relay.toml: `bad`") && e.contains("10m"), "{e}");
        assert!(f.count("count").is_err());
        assert!(f.boolean("listen").is_err());
        assert!(f.addr("heartbeat").is_err());
        let e = f.only(&["heartbeat"]).unwrap_err().to_string();
        assert!(e.contains("unknown key"), "{e}");
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let e = ConfigFile::parse("listen = ", Path::new("x.toml")).unwrap_err();
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
