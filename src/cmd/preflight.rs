//! What the command line refuses before anything starts: every bad flag a user or operator
//! can give gets one line that says what to change, and a non-zero exit, instead of a daemon
//! that runs and never publishes, or a data directory created at a mistyped path.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A mistake in the command line, found before anything started.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PreflightError {
    /// The data directory does not exist, for a command that needs one made before.
    #[error("{dir}: no such directory; {hint}")]
    NoDataDir {
        /// The directory given.
        dir: PathBuf,
        /// How to make one.
        hint: String,
    },
    /// The data directory exists but lacks what the command needs.
    #[error("{dir} holds no {what}; {hint}")]
    Missing {
        /// The directory given.
        dir: PathBuf,
        /// What is missing.
        what: &'static str,
        /// How to make it.
        hint: String,
    },
    /// A relay listening on every interface did not say which address to publish.
    #[error(
        "--listen {listen} is not an address others can reach: add --advertise IP:PORT with \
         the public address of this relay"
    )]
    NeedAdvertise {
        /// The listen address.
        listen: SocketAddr,
    },
}

/// Checks a relay nickname as the directory will (1 to 19 ASCII letters and digits), for
/// clap's `value_parser`.
pub fn nickname(text: &str) -> Result<String, String> {
    shallot_proto::dir::check_nickname(text)
        .map(|()| text.to_string())
        .map_err(|why| format!("{why} (for example: myrelay1)"))
}

/// Checks an address other nodes must connect to (an authority's `--address`, a relay's
/// `--advertise`), for clap's `value_parser`: not 0.0.0.0 or `[::]`, not port 0.
pub fn reachable_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not IP:PORT (for example 203.0.113.5:7000)"))?;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "{addr} is not an address others can reach: give this host's public IP"
        ));
    }
    if addr.port() == 0 {
        return Err(format!("{addr}: give the port others connect to, not 0"));
    }
    shallot_proto::dir::lines::check_addr(&addr).map_err(|why| format!("{addr}: {why}"))?;
    Ok(addr)
}

/// A relay that listens on every interface must say what to publish.
pub fn relay_addresses(
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
) -> Result<(), PreflightError> {
    if listen.ip().is_unspecified() && advertise.is_none() {
        return Err(PreflightError::NeedAdvertise { listen });
    }
    Ok(())
}

/// `dir` must exist and hold `file`; `what` and `hint` say what it is and how to make it
/// (`{dir}` in the hint stands for the directory).
pub fn initialised(
    dir: &Path,
    file: &str,
    what: &'static str,
    hint: &str,
) -> Result<(), PreflightError> {
    let hint = hint.replace("{dir}", &dir.display().to_string());
    if !dir.is_dir() {
        return Err(PreflightError::NoDataDir {
            dir: dir.to_path_buf(),
            hint,
        });
    }
    if !dir.join(file).exists() {
        return Err(PreflightError::Missing {
            dir: dir.to_path_buf(),
            what,
            hint,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicknames_are_checked_as_the_directory_does() {
        assert_eq!(nickname("relay7"), Ok("relay7".into()));
        assert!(nickname("bad name!").is_err());
        assert!(nickname("").is_err());
        assert!(nickname("a_very_long_nickname_indeed").is_err());
    }

    #[test]
    fn unreachable_addresses_are_refused() {
        assert!(reachable_addr("203.0.113.5:7000").is_ok());
        assert!(reachable_addr("0.0.0.0:7000").is_err());
        assert!(reachable_addr("[::]:7000").is_err());
        assert!(reachable_addr("203.0.113.5:0").is_err());
        assert!(reachable_addr("example.org:7000").is_err());
    }

    #[test]
    fn a_relay_on_every_interface_needs_advertise() {
        let any: SocketAddr = "0.0.0.0:9001".parse().unwrap_or_else(|_| unreachable!());
        let public: SocketAddr = "203.0.113.9:9001"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        assert!(relay_addresses(any, None).is_err());
        assert!(relay_addresses(any, Some(public)).is_ok());
        assert!(relay_addresses(public, None).is_ok());
    }

    #[test]
    fn missing_directories_and_files_are_named() {
        let none = Path::new("/nonexistent/shallot-preflight");
        let e = initialised(none, "x", "relay keys", "run `shallot relay init` first");
        assert!(matches!(e, Err(PreflightError::NoDataDir { .. })));
        let tmp = std::env::temp_dir();
        let e = initialised(&tmp, "no-such-file-here", "relay keys", "run init");
        assert!(matches!(e, Err(PreflightError::Missing { .. })));
    }
}
