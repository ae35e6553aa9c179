//! The command line (the contract in `README.md`): argument parsing and dispatch to one module
//! per subcommand group. Every error a user can cause comes back as a [`CliError`], which
//! `main` prints on one line before exiting with status 1.

pub mod bench;
pub mod chat;
pub mod circuit;
pub mod directory;
pub mod messages;
pub mod relay;
pub mod testnet;
pub mod user;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use thiserror::Error;

/// Onion-routed anonymous messaging in the terminal.
#[derive(Parser, Debug)]
#[command(name = "shallot", version, about, long_about = None)]
pub struct Cli {
    /// The directory holding this node's keys and state.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Set up or run a directory authority.
    #[command(subcommand)]
    Directory(directory::DirectoryCommand),
    /// Set up or run a relay.
    #[command(subcommand)]
    Relay(relay::RelayCommand),
    /// Run a whole network on this machine, in the foreground.
    Testnet(Box<testnet::TestnetArgs>),
    /// Build circuits and print their paths and build times (a diagnostic).
    Circuit(circuit::CircuitArgs),
    /// Measure performance on a local network, beside the raw limits.
    Bench(bench::BenchArgs),
    /// Create or show this user's identity.
    #[command(subcommand)]
    Id(user::IdCommand),
    /// Manage contacts.
    #[command(subcommand)]
    Contact(user::ContactCommand),
    /// Send a message to a contact.
    Send(messages::SendArgs),
    /// Print messages received since the last time.
    Inbox(messages::InboxArgs),
    /// The terminal chat.
    Chat(chat::ChatArgs),
    /// A whole network on this machine and the chat, with an echo contact to talk to.
    Demo,
}

/// A failure to report to the user, on one line.
#[derive(Debug, Error)]
pub enum CliError {
    /// The command needs `--data-dir`.
    #[error("this command needs --data-dir DIR")]
    NeedDataDir,
    /// A directory authority command failed.
    #[error(transparent)]
    Directory(#[from] directory::DirectoryError),
    /// A relay command failed.
    #[error(transparent)]
    Relay(#[from] relay::RelayCmdError),
    /// An identity or contact command failed.
    #[error(transparent)]
    User(#[from] user::UserError),
    /// Sending or receiving failed.
    #[error(transparent)]
    Messages(#[from] messages::MessagesError),
    /// The chat or the demo failed.
    #[error(transparent)]
    Chat(#[from] chat::ChatError),
    /// The benchmark failed.
    #[error(transparent)]
    Bench(#[from] crate::bench::BenchError),
    /// The circuit diagnostic failed.
    #[error(transparent)]
    Circuit(#[from] circuit::CircuitCmdError),
    /// The test network failed.
    #[error(transparent)]
    Testnet(#[from] crate::testnet::TestnetError),
}

/// Runs the command the user gave.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Directory(cmd) => {
            let data_dir = cli.data_dir.ok_or(CliError::NeedDataDir)?;
            directory::run(&data_dir, cmd)?;
        }
        Command::Relay(cmd) => {
            let data_dir = cli.data_dir.ok_or(CliError::NeedDataDir)?;
            relay::run(&data_dir, cmd)?;
        }
        Command::Testnet(args) => testnet::run(*args)?,
        Command::Circuit(args) => circuit::run(&user_data_dir(cli.data_dir)?, args)?,
        Command::Bench(args) => bench::run(args)?,
        Command::Id(cmd) => user::run_id(&user_data_dir(cli.data_dir)?, cmd)?,
        Command::Contact(cmd) => user::run_contact(&user_data_dir(cli.data_dir)?, cmd)?,
        Command::Send(args) => messages::send(&user_data_dir(cli.data_dir)?, args)?,
        Command::Inbox(args) => messages::inbox(&user_data_dir(cli.data_dir)?, args)?,
        Command::Chat(args) => chat::chat(&user_data_dir(cli.data_dir)?, args)?,
        Command::Demo => chat::demo()?,
    }
    Ok(())
}

/// The data directory of a user command: `--data-dir`, else `$SHALLOT_HOME`, else
/// `~/.shallot`.
pub fn user_data_dir(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    if let Some(d) = given {
        return Ok(d);
    }
    if let Some(d) = std::env::var_os("SHALLOT_HOME") {
        return Ok(PathBuf::from(d));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".shallot"))
        .ok_or(CliError::NeedDataDir)
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_stop() -> Result<(), std::io::Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// Starts logging to standard error for long-running commands: `RUST_LOG` if set, else
/// `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
