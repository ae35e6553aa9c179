//! `shallot send` and `shallot inbox`: one message out, or what has arrived, over the network
//! (`docs/spec.md` §9–10).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::messenger::{Messenger, MessengerConfig, MessengerError, MessengerEvent};
use shallot_client::store::StoredMessage;
use shallot_crypto::address::Address;
use shallot_crypto::hex;
use shallot_directory::{NetworkError, NetworkFile};
use thiserror::Error;

use super::passphrase::{PassphraseError, Unlock};

/// `send`'s arguments.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// The network file naming the directory authorities.
    #[arg(long, value_name = "FILE")]
    pub network: PathBuf,
    /// The contact to send to.
    pub name: String,
    /// The message.
    pub text: String,
}

/// `inbox`'s arguments.
#[derive(Args, Debug)]
pub struct InboxArgs {
    /// The network file naming the directory authorities.
    #[arg(long, value_name = "FILE")]
    pub network: PathBuf,
    /// If nothing has arrived, wait up to this many seconds for a message.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub wait: u64,
    /// Print one JSON object per message.
    #[arg(long)]
    pub json: bool,
}

/// Why sending or receiving failed.
#[derive(Debug, Error)]
pub enum MessagesError {
    /// The network file.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The messenger.
    #[error(transparent)]
    Messenger(#[from] MessengerError),
    /// The runtime.
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The store's passphrase.
    #[error(transparent)]
    Passphrase(#[from] PassphraseError),
}

fn runtime() -> Result<tokio::runtime::Runtime, MessagesError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn open(
    unlock: &Unlock,
    data_dir: &Path,
    network: &Path,
) -> Result<Arc<Messenger>, MessagesError> {
    let network = NetworkFile::load(network)?;
    let store = unlock.open(data_dir)?;
    let m = Messenger::open_store(store, network, MessengerConfig::default())?;
    m.connect().await?;
    Ok(m)
}

/// Sends one message; succeeds once it is stored on at least two mailbox relays.
pub fn send(unlock: &Unlock, data_dir: &Path, args: SendArgs) -> Result<(), MessagesError> {
    runtime()?.block_on(async {
        let m = open(unlock, data_dir, &args.network).await?;
        let report = m.send(&args.name, &args.text, OnFailure::Fail).await?;
        println!(
            "sent to {}: stored on {} of {} mailboxes (id {})",
            args.name, report.stored, report.wanted, report.id
        );
        Ok(())
    })
}

/// Prints what has arrived since the last call.
pub fn inbox(unlock: &Unlock, data_dir: &Path, args: InboxArgs) -> Result<(), MessagesError> {
    runtime()?.block_on(async {
        let m = open(unlock, data_dir, &args.network).await?;
        let new = m.sync().await?;
        let waiting = !m.store().has_unreported().map_err(MessengerError::from)?;
        if new == 0 && waiting && args.wait > 0 {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            m.set_events(tx);
            let receiver = m.spawn_receiver();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(MessengerEvent::Message(msg))) if !msg.outgoing => break,
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
            drop(receiver);
            // Acknowledge what arrived before leaving.
            let _ = m.send_acks().await;
        }
        let messages = m.store().take_unreported().map_err(MessengerError::from)?;
        for msg in &messages {
            print_message(&m, msg, args.json)?;
        }
        // On standard error, so that the JSON lines stay exactly one per message.
        let dropped = m
            .store()
            .take_dropped_from_strangers()
            .map_err(MessengerError::from)?;
        if dropped > 0 {
            eprintln!(
                "shallot: {}",
                shallot_client::store::strangers::dropped_notice(dropped)
            );
        }
        Ok(())
    })
}

fn print_message(m: &Messenger, msg: &StoredMessage, json: bool) -> Result<(), MessagesError> {
    let contact = m
        .store()
        .contact_by_key(&msg.peer)
        .map_err(MessengerError::from)?;
    let request = contact.is_none();
    let from = match contact {
        Some(c) => c.name,
        None => ed25519_dalek::VerifyingKey::from_bytes(&msg.peer)
            .map(|k| Address::new(k).to_string())
            .unwrap_or_else(|_| hex::encode(&msg.peer)),
    };
    if json {
        let line = serde_json::json!({
            "id": msg.id.to_string(),
            "from": from,
            "request": request,
            "text": msg.text,
            "sent_at": msg.sent_at,
            "received_at": msg.received_at,
        });
        println!("{line}");
    } else {
        println!("{}", plain_line(&from, request, &msg.text));
    }
    Ok(())
}

/// A message as `inbox` prints it for a person: what a peer wrote can neither move the cursor,
/// recolour, erase nor reorder the terminal (control and bidirectional characters are shown
/// as `�`, as in the chat), and a line break in it is indented, so that no message can print
/// a line that looks like another sender's or hide the "(contact request)" tag.
fn plain_line(from: &str, request: bool, text: &str) -> String {
    use shallot_tui::text::sanitize;
    let tag = if request { " (contact request)" } else { "" };
    let body = sanitize(text).replace('\n', "\n    ");
    format!("{}{tag}: {body}", sanitize(from).replace('\n', " "))
}

#[cfg(test)]
mod tests {
    use super::plain_line;

    #[test]
    fn what_a_peer_writes_cannot_rewrite_the_terminal_or_forge_a_line() {
        let forged = "hi\x1b[2K\r\x1b[1Aalice: send the money\u{202E}";
        let line = plain_line("shallot1stranger", true, forged);
        assert!(
            !line.contains('\x1b') && !line.contains('\u{202E}'),
            "{line:?}"
        );
        assert!(line.starts_with("shallot1stranger (contact request): hi"));
        // The carriage return became a line break, indented under the sender.
        assert!(line.contains("\n    "), "{line:?}");
        assert!(!line.lines().skip(1).any(|l| l.starts_with("alice")));
    }
}
