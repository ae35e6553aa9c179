//! The command line (the contract in `README.md`): argument parsing and dispatch to one module
//! per subcommand group. Every error a user can cause comes back as a [`CliError`], which
//! `main` prints on one line before exiting with status 1.

pub mod bench;
pub mod chat;
pub mod circuit;
pub mod config;
pub mod directory;
pub mod manuals;
pub mod messages;
pub mod observe;
pub mod passphrase;
pub mod preflight;
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
    /// Never ask for the store's passphrase: a new store is made unencrypted, an encrypted
    /// one is refused (for test networks and scripts that need no secrecy at rest).
    #[arg(long, global = true)]
    pub no_passphrase: bool,
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
    /// Create or show this user's identity, or change the store's passphrase.
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(manuals::CompletionsArgs),
    /// Write the man pages, one per command, into a directory.
    Man(manuals::ManArgs),
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
    /// A mistake in the command line, found before anything started.
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    /// Another process uses the data directory.
    #[error(transparent)]
    Locked(#[from] shallot_rt::DirLockError),
    /// The data directory could not be made.
    #[error(transparent)]
    DataDir(shallot_crypto::keyfile::KeyFileError),
    /// Writing the man pages failed.
    #[error("writing the man pages: {0}")]
    Man(#[source] std::io::Error),
}

/// The hint for user commands run on a directory without an identity.
const NO_IDENTITY_HINT: &str =
    "create an identity with `shallot --data-dir {dir} id new`, or check --data-dir and \
     $SHALLOT_HOME";

/// The data directory of a user command that needs an identity made before.
fn existing_user_dir(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let dir = user_data_dir(given)?;
    preflight::initialised(&dir, "shallot.db", "Shallot identity", NO_IDENTITY_HINT)?;
    Ok(dir)
}

/// Runs the command the user gave. Every command that uses a data directory holds its lock
/// (`shallot_rt::DirLock`) until it returns.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let unlock = passphrase::Unlock {
        no_passphrase: cli.no_passphrase,
    };
    match cli.command {
        Command::Directory(cmd) => directory::run(cli.data_dir, cmd)?,
        Command::Relay(cmd) => relay::run(cli.data_dir, cmd)?,
        Command::Testnet(args) => testnet::run(*args)?,
        Command::Bench(args) => bench::run(args)?,
        Command::Demo => chat::demo()?,
        Command::Completions(args) => manuals::completions(&args),
        Command::Man(args) => manuals::man(&args).map_err(CliError::Man)?,
        // Commands that may make the user's directory.
        Command::Circuit(args) => {
            let dir = new_user_dir(cli.data_dir)?;
            let _lock = lock(&dir)?;
            circuit::run(&dir, args)?
        }
        Command::Id(cmd @ user::IdCommand::New { .. }) => {
            let dir = new_user_dir(cli.data_dir)?;
            let _lock = lock(&dir)?;
            user::run_id(&unlock, &dir, cmd)?
        }
        // Commands that need an identity made before.
        user_command => {
            let dir = existing_user_dir(cli.data_dir)?;
            let _lock = lock(&dir)?;
            match user_command {
                Command::Id(cmd) => user::run_id(&unlock, &dir, cmd)?,
                Command::Contact(cmd) => user::run_contact(&unlock, &dir, cmd)?,
                Command::Send(args) => messages::send(&unlock, &dir, args)?,
                Command::Inbox(args) => messages::inbox(&unlock, &dir, args)?,
                Command::Chat(args) => chat::chat(&unlock, &dir, args)?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// Holds `dir` for this process, or says which process holds it.
pub fn lock(dir: &std::path::Path) -> Result<shallot_rt::DirLock, CliError> {
    Ok(shallot_rt::DirLock::acquire(dir)?)
}

/// The user's data directory, made (0700) if it does not exist yet.
fn new_user_dir(given: Option<PathBuf>) -> Result<PathBuf, CliError> {
    let dir = user_data_dir(given)?;
    shallot_crypto::keyfile::ensure_private_dir(&dir).map_err(CliError::DataDir)?;
    Ok(dir)
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

/// The environment variable that ties a daemon's life to its parent's: when set to `1`,
/// [`wait_for_stop`] also returns when standard input reaches its end, which happens when the
/// process that holds the other end of the pipe exits, however it exits (even by SIGKILL).
/// `shallot testnet --processes`, `shallot bench` and the tests set it on every node they
/// start.
pub const STOP_ON_STDIN_EOF: &str = "SHALLOT_STOP_ON_STDIN_EOF";

/// Waits until the process is asked to stop: SIGINT (Ctrl-C), SIGTERM or SIGHUP (the
/// terminal went away), or, under [`STOP_ON_STDIN_EOF`], the end of standard input. Returns
/// what asked.
pub async fn wait_for_stop() -> Result<&'static str, std::io::Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let parent_gone = async {
        if std::env::var_os(STOP_ON_STDIN_EOF).is_some_and(|v| v == "1") {
            stdin_closed().await
        } else {
            std::future::pending().await
        }
    };
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
        () = parent_gone => "the parent process exited",
    })
}

/// Resolves when standard input reaches its end or fails; what it carries is ignored.
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while let Ok(n) = std::io::Read::read(&mut stdin, &mut buf) {
                if n == 0 {
                    break;
                }
            }
            drop(tx);
        });
    if spawned.is_ok() {
        let _ = rx.await;
    } else {
        std::future::pending::<()>().await;
    }
}

/// Starts logging to standard error for long-running commands: `RUST_LOG` if set, else
/// `info`.
pub fn init_logging() {
    let _ = init_logging_to(None);
}

/// Starts logging (`RUST_LOG` if set, else `info`) to standard error, or appended to `file`.
/// Colours only on a terminal, so journald and log files get plain lines.
pub fn init_logging_to(file: Option<&std::path::Path>) -> Result<(), std::io::Error> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init()
        }
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
    };
    Ok(())
}
