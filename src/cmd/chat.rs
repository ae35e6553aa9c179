//! `shallot chat` and `shallot demo`: the terminal chat, on a given network or on a whole
//! network started for the purpose with an echo contact to talk to.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::messenger::{Messenger, MessengerConfig, MessengerError, MessengerEvent};
use shallot_client::store::{Store, StoreError};
use shallot_directory::{NetworkError, NetworkFile};
use shallot_tui::{self as ui, UiConfig, UiError, UiOptions};
use thiserror::Error;

use crate::testnet::{Testnet, TestnetError, TestnetOptions};

/// `chat`'s arguments.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The network file naming the directory authorities.
    #[arg(long, value_name = "FILE")]
    pub network: PathBuf,
}

/// Why the chat or the demo stopped.
#[derive(Debug, Error)]
pub enum ChatError {
    /// The network file.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The messenger.
    #[error(transparent)]
    Messenger(#[from] MessengerError),
    /// The local store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The terminal UI.
    #[error("{0}")]
    Ui(#[from] UiError),
    /// The demo network.
    #[error(transparent)]
    Testnet(#[from] TestnetError),
    /// The runtime or a file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store's passphrase.
    #[error(transparent)]
    Passphrase(#[from] super::passphrase::PassphraseError),
    /// The UI's configuration file (`tui.toml`).
    #[error(transparent)]
    UiConfig(#[from] shallot_tui::ConfigError),
    /// The UI's configuration file could not be read.
    #[error("cannot read {path}: {reason}")]
    UiConfigRead {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
}

/// The UI's configuration: `tui.toml` in the platform's configuration directory (found as
/// `relay.toml` is, [`super::config::default_path`]) if there is one, read and checked
/// before anything starts; the colour depth comes from the terminal unless it says.
fn ui_config() -> Result<UiConfig, ChatError> {
    let depth = ui::theme::ColorDepth::from_env();
    let Some(path) = super::config::default_path("tui.toml").filter(|p| p.is_file()) else {
        return Ok(UiConfig::for_depth(depth));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| ChatError::UiConfigRead {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(UiConfig::parse(&text, &path, depth)?)
}

fn runtime() -> Result<tokio::runtime::Runtime, ChatError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Runs the UI in the terminal over `messenger` until the user quits.
async fn chat_ui(messenger: Arc<Messenger>, options: UiOptions) -> Result<(), ChatError> {
    let (ui_tx, ui_rx) = tokio::sync::mpsc::unbounded_channel();
    let (act_tx, act_rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = tokio::spawn(shallot_tui::chat::run(messenger, ui_tx, act_rx));
    let result = ui::run_in_terminal(ui_rx, act_tx, options).await;
    backend.abort();
    Ok(result?)
}

/// `shallot chat`.
pub fn chat(
    unlock: &super::passphrase::Unlock,
    data_dir: &Path,
    args: ChatArgs,
) -> Result<(), ChatError> {
    let config = ui_config()?;
    let network = NetworkFile::load(&args.network)?;
    let store = unlock.open(data_dir)?;
    let messenger = Messenger::open_store(store, network, MessengerConfig::default())?;
    let options = UiOptions {
        config,
        data_dir: Some(data_dir.to_path_buf()),
        ..UiOptions::default()
    };
    runtime()?.block_on(chat_ui(messenger, options))
}

/// Creates an identity in `dir` and opens its messenger.
fn user(dir: &Path, name: &str, network: &NetworkFile) -> Result<Arc<Messenger>, ChatError> {
    let store = Store::open(dir)?;
    store.create_identity(Some(name), shallot_rt::unix_now())?;
    drop(store);
    Ok(Messenger::open(
        dir,
        network.clone(),
        MessengerConfig::default(),
    )?)
}

/// The demo's echo contact: a whole client, kept online by the same background work as the
/// chat ([`shallot_tui::chat::keep_online`]), that answers every message from `me` with an
/// echo of it, for as long as the demo runs.
async fn echo_bot(echo: Arc<Messenger>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    echo.set_events(tx);
    let online = tokio::spawn(shallot_tui::chat::keep_online(echo.clone(), |notice| {
        tracing::debug!("echo contact: {notice}")
    }));
    let mut replies = tokio::task::JoinSet::new();
    while let Some(event) = rx.recv().await {
        if let MessengerEvent::Message(m) = event {
            if !m.outgoing {
                let reply = format!("echo: {}", m.text);
                let echo = echo.clone();
                // Each reply on its own, so one slow deposit does not hold up the next.
                replies.spawn(async move {
                    if let Err(e) = echo.send("me", &reply, OnFailure::Retry).await {
                        tracing::debug!("echo reply: {e}");
                    }
                });
            }
        }
        while replies.try_join_next().is_some() {}
    }
    online.abort();
}

/// `shallot demo`: a network in a temporary directory, an echo contact, and the chat UI with
/// that conversation open. Everything is stopped and removed on quit.
pub fn demo() -> Result<(), ChatError> {
    let config = ui_config()?;
    let dir = std::env::temp_dir().join(format!("shallot-demo-{}", std::process::id()));
    shallot_crypto::keyfile::ensure_private_dir(&dir).map_err(StoreError::from)?;
    let result = runtime()?.block_on(async {
        // Installed first, so that a signal at any point ends in the cleanup below.
        let stop = crate::cmd::wait_for_stop();
        tokio::pin!(stop);
        say("Starting a local Shallot network: 3 authorities and 8 relays on 127.x.0.1 …");
        let mut options = TestnetOptions::new(dir.join("network"));
        options.first_octet = 200;
        let net = tokio::select! {
            net = Testnet::start(options) => net?,
            _ = &mut stop => return Ok(()),
        };
        let run = async {
            let ready = net.wait_ready(Duration::from_secs(60)).await?;
            say(&format!(
                "Network ready: {} relays in the consensus. Opening the chat …",
                ready.relays.len()
            ));
            let me = user(&dir.join("me"), "me", &net.network)?;
            let echo = user(&dir.join("echo"), "echo", &net.network)?;
            me.store().add_contact("echo", &echo.address(), 0)?;
            echo.store().add_contact("me", &me.address(), 0)?;
            // Published before the chat opens, so the first message can start a session.
            echo.connect().await?;
            let bot = tokio::spawn(echo_bot(echo));
            let options = UiOptions {
                select_contact: Some("echo".into()),
                focus_input: true,
                config,
                data_dir: Some(dir.join("me")),
            };
            let r = chat_ui(me, options).await;
            bot.abort();
            r
        };
        // A signal during the chat reaches the UI too, which restores the terminal and
        // returns; one before it ends the run here. Either way the network is stopped.
        let r = tokio::select! {
            r = run => r,
            _ = &mut stop => Ok(()),
        };
        net.stop().await;
        r
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A progress line on standard error; after SIGHUP there may be no terminal to write to, and
/// that must not stop the cleanup.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
