//! The command line (the contract in `README.md`): argument parsing and dispatch to one module
//! per subcommand group. Every error a user can cause comes back as a [`CliError`], which
//! `main` prints on one line before exiting with status 1.

pub mod directory;

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
}

/// Runs the command the user gave.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Directory(cmd) => {
            let data_dir = cli.data_dir.ok_or(CliError::NeedDataDir)?;
            directory::run(&data_dir, cmd)?;
        }
    }
    Ok(())
}

/// Starts logging to standard error for long-running commands: `RUST_LOG` if set, else
/// `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
