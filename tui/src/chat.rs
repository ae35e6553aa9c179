//! The chat backend (`shallot chat`, `shallot demo`): connects the [`shallot_client::messenger`] to the
//! terminal UI's events and actions. Everything slow (bootstrapping, circuits, deposits) runs
//! in background tasks, so the UI never waits for the network.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use shallot_crypto::address::Address;
use shallot_crypto::hex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::{
    Action, AppEvent, ContactRequest, ContactView, Delivery, MailboxState, MessageView,
    NetworkStatus,
};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::messenger::{Messenger, MessengerEvent};
use shallot_client::store::{OutState, StoredMessage};
use shallot_client::MessageId;
use shallot_rt::unix_now;

fn address_of(key: &[u8; 32]) -> String {
    VerifyingKey::from_bytes(key)
        .map(|k| Address::new(k).to_string())
        .unwrap_or_else(|_| hex::encode(key))
}

fn delivery(state: &OutState) -> Delivery {
    match state {
        OutState::Sending => Delivery::Sending,
        OutState::Stored(k) => Delivery::Stored { copies: *k },
        OutState::Delivered => Delivery::Delivered,
        OutState::Failed(reason) => Delivery::Failed {
            reason: reason.clone(),
        },
    }
}

/// Names of contacts by identity key.
fn names(m: &Messenger) -> HashMap<[u8; 32], String> {
    m.store()
        .contacts()
        .map(|cs| {
            cs.into_iter()
                .map(|c| (*c.address.key().as_bytes(), c.name))
                .collect()
        })
        .unwrap_or_default()
}

fn view(msg: &StoredMessage, names: &HashMap<[u8; 32], String>) -> MessageView {
    MessageView {
        id: msg.id.to_string(),
        contact: names
            .get(&msg.peer)
            .cloned()
            .unwrap_or_else(|| address_of(&msg.peer)),
        outgoing: msg.outgoing,
        text: msg.text.clone(),
        sent_at: msg.sent_at,
        received_at: msg.received_at,
        delivery: msg.state.as_ref().map(delivery),
    }
}

/// The whole state, for the UI's first picture.
pub fn snapshot(m: &Messenger) -> AppEvent {
    let names = names(m);
    let history = m.store().history().unwrap_or_default();
    let mut last: HashMap<[u8; 32], u64> = HashMap::new();
    for msg in &history {
        let t = last.entry(msg.peer).or_default();
        *t = (*t).max(msg.received_at.unwrap_or(msg.sent_at));
    }
    let contacts = m
        .store()
        .contacts()
        .unwrap_or_default()
        .into_iter()
        .map(|c| ContactView {
            last_activity: last.get(c.address.key().as_bytes()).copied(),
            name: c.name,
            address: c.address.to_string(),
            unread: 0,
        })
        .collect();
    let requests = m
        .store()
        .requests()
        .unwrap_or_default()
        .into_iter()
        .map(|key| ContactRequest {
            address: address_of(&key),
            messages: history
                .iter()
                .filter(|msg| msg.peer == key)
                .map(|msg| view(msg, &names))
                .collect(),
        })
        .collect();
    let messages = history
        .iter()
        .filter(|msg| names.contains_key(&msg.peer))
        .map(|msg| view(msg, &names))
        .collect();
    AppEvent::Snapshot {
        me: m.address().to_string(),
        contacts,
        messages,
        requests,
    }
}

fn notice(ui: &UnboundedSender<AppEvent>, text: impl Into<String>) {
    let _ = ui.send(AppEvent::Notice(text.into()));
}

/// Runs the backend until the UI quits: sends the UI a snapshot, then every change, and
/// carries out the UI's actions.
pub async fn run(
    m: Arc<Messenger>,
    ui: UnboundedSender<AppEvent>,
    mut actions: UnboundedReceiver<Action>,
) {
    let _ = ui.send(snapshot(&m));
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    m.set_events(tx);
    let copies = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let mut tasks = vec![
        tokio::spawn({
            let ui = ui.clone();
            keep_online(m.clone(), move |text| notice(&ui, text))
        }),
        tokio::spawn(status(m.clone(), ui.clone(), copies.clone())),
    ];
    let forward = {
        let (m, ui) = (m.clone(), ui.clone());
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                match e {
                    MessengerEvent::Message(msg) => {
                        let names = names(&m);
                        let v = view(&msg, &names);
                        if !names.contains_key(&msg.peer) && !msg.outgoing {
                            let _ = ui.send(AppEvent::ContactRequest(ContactRequest {
                                address: address_of(&msg.peer),
                                messages: vec![v],
                            }));
                        } else {
                            let _ = ui.send(AppEvent::MessageAdded(v));
                        }
                    }
                    MessengerEvent::Delivery { id, state } => {
                        let _ = ui.send(AppEvent::DeliveryChanged {
                            id: id.to_string(),
                            delivery: delivery(&state),
                        });
                    }
                    MessengerEvent::Request { .. } => {}
                    MessengerEvent::Notice(text) => notice(&ui, text),
                    MessengerEvent::Subscribed { copies: n } => {
                        copies.store(n, std::sync::atomic::Ordering::Relaxed)
                    }
                }
            }
        })
    };
    tasks.push(forward);
    while let Some(action) = actions.recv().await {
        match action {
            Action::Quit => break,
            Action::Send { contact, text } => {
                let m = m.clone();
                let ui = ui.clone();
                tokio::spawn(async move {
                    if let Err(e) = m.send(&contact, &text, OnFailure::Retry).await {
                        notice(&ui, format!("{contact}: {e}"));
                    }
                });
            }
            Action::Retry { id } => {
                let Some(id) = MessageId::from_hex(&id) else {
                    continue;
                };
                let (m, ui) = (m.clone(), ui.clone());
                tokio::spawn(async move {
                    if let Err(e) = m.retry(&id).await {
                        notice(&ui, format!("retry failed: {e}"));
                    }
                });
            }
            Action::AddContact { name, address } | Action::AcceptRequest { address, name } => {
                let added = address
                    .parse::<Address>()
                    .map_err(|e| e.to_string())
                    .and_then(|a| {
                        m.store()
                            .add_contact(&name, &a, unix_now())
                            .map(|_| a)
                            .map_err(|e| e.to_string())
                    });
                match added {
                    Ok(a) => {
                        let _ = ui.send(AppEvent::ContactAdded(ContactView {
                            name: name.clone(),
                            address: a.to_string(),
                            unread: 0,
                            last_activity: None,
                        }));
                        notice(&ui, format!("added {name}"));
                        // Messages they sent as a stranger are acknowledged now.
                        let m = m.clone();
                        tokio::spawn(async move {
                            let _ = m.send_acks().await;
                        });
                    }
                    Err(e) => notice(&ui, e),
                }
            }
            Action::IgnoreRequest { address } => {
                if let Ok(a) = address.parse::<Address>() {
                    if let Err(e) = m.store().ignore_request(a.key().as_bytes()) {
                        notice(&ui, e.to_string());
                    }
                }
            }
            // Read state lives in the UI for now.
            Action::MarkRead { .. } => {}
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// How often [`keep_online`] fetches what waits, retransmits what is due, sends owed
/// acknowledgements and checks the prekey bundle (each its own task).
const PERIODIC_WORK: Duration = Duration::from_secs(10);

/// Keeps a messenger online for as long as the returned future runs: bootstraps (retrying
/// with backoff), then keeps the consensus fresh, circuits built ahead, the subscriptions up,
/// and retransmits, acknowledges and republishes what is due. Every client that stays
/// connected runs exactly this: the chat, and the demo's echo contact. `notice` is told what
/// a user should see. Dropping or aborting the future stops all of its tasks.
pub async fn keep_online(m: Arc<Messenger>, notice: impl Fn(String) + Send + Sync + 'static) {
    let mut wait = Duration::from_millis(500);
    loop {
        match m.connect().await {
            Ok(()) => break,
            Err(e) => {
                notice(format!("not connected yet: {e}"));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
    // Owned here, so that they stop when this future is dropped or aborted.
    let _ahead = m.circuits().spawn_maintenance();
    let receiver = m.spawn_receiver();
    if let Err(e) = m.sync().await {
        notice(format!("fetching waiting messages: {e}"));
    }
    // Fetching, acknowledging, retransmitting and publishing each run on their own, so that
    // one silent relay stalls none of the others (`docs/spec.md` §10.7).
    let notice = std::sync::Arc::new(notice);
    let told = notice.clone();
    let _periodic = m.spawn_periodic(PERIODIC_WORK, move |job, e| {
        if job == shallot_client::messenger::tasks::Job::Bundles {
            told(format!("publishing your prekey bundle: {e}"));
        }
    });
    while !receiver.is_finished() {
        tokio::time::sleep(PERIODIC_WORK).await;
    }
}

/// Reports the network's state every second.
async fn status(
    m: Arc<Messenger>,
    ui: UnboundedSender<AppEvent>,
    copies: Arc<std::sync::atomic::AtomicU8>,
) {
    loop {
        let consensus = m.netdir().consensus().ok();
        let n = copies.load(std::sync::atomic::Ordering::Relaxed);
        let status = NetworkStatus {
            consensus_age_secs: consensus
                .as_ref()
                .map(|c| unix_now().saturating_sub(c.valid_after)),
            relays_known: consensus.as_ref().map(|c| c.relays.len()).unwrap_or(0),
            circuits_ready: m.open_links().await + m.circuits().ready(),
            mailbox: match (consensus.is_some(), n) {
                (false, _) => MailboxState::Offline,
                (true, 0) => MailboxState::Connecting,
                (true, n) => MailboxState::Subscribed { copies: n },
            },
        };
        let _ = ui.send(AppEvent::Status(status));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
