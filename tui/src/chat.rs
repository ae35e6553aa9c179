//! The chat backend (`shallot chat`, `shallot demo`): connects the [`shallot_client::messenger`] to the
//! terminal UI's events and actions. Everything slow (bootstrapping, circuits, deposits) runs
//! in background tasks, so the UI never waits for the network.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use shallot_crypto::address::Address;
use shallot_crypto::hex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::Notify;

use crate::model::{CircuitView, ClockView, ConsensusView, GuardView, NetworkDetails, ReplicaView};
use crate::{
    Action, AppEvent, ContactRequest, ContactView, Delivery, MailboxState, MessageView,
    NetworkStatus, Offline,
};
use shallot_client::messenger::outgoing::OnFailure;
use shallot_client::messenger::{Messenger, MessengerError, MessengerEvent};
use shallot_client::store::{OutState, StoredMessage};
use shallot_client::MessageId;
use shallot_crypto::keys::RelayId;
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

fn view(msg: &StoredMessage, seq: u64, names: &HashMap<[u8; 32], String>) -> MessageView {
    MessageView {
        id: msg.id.to_string(),
        seq,
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
    snapshot_numbered(m, &AtomicU64::new(0))
}

/// [`snapshot`], numbering the messages in the order they were recorded and moving
/// `next_seq` past them, so that messages reported later sort after them.
fn snapshot_numbered(m: &Messenger, next_seq: &AtomicU64) -> AppEvent {
    let names = names(m);
    let history = m.store().history().unwrap_or_default();
    next_seq.fetch_max(history.len() as u64, Ordering::Relaxed);
    let unread: HashMap<[u8; 32], usize> = m
        .store()
        .unread_counts()
        .unwrap_or_default()
        .into_iter()
        .collect();
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
            unread: unread.get(c.address.key().as_bytes()).copied().unwrap_or(0),
            name: c.name,
            address: c.address.to_string(),
        })
        .collect();
    let numbered = || history.iter().zip(0u64..);
    let requests = m
        .store()
        .requests()
        .unwrap_or_default()
        .into_iter()
        .map(|key| ContactRequest {
            address: address_of(&key),
            messages: numbered()
                .filter(|(msg, _)| msg.peer == key)
                .map(|(msg, seq)| view(msg, seq, &names))
                .collect(),
        })
        .collect();
    let messages = numbered()
        .filter(|(msg, _)| names.contains_key(&msg.peer))
        .map(|(msg, seq)| view(msg, seq, &names))
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
    let next_seq = Arc::new(AtomicU64::new(0));
    let _ = ui.send(snapshot_numbered(&m, &next_seq));
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    m.set_events(tx);
    let copies = Arc::new(AtomicU8::new(0));
    let online = Arc::new(Reconnect::default());
    let mut tasks = vec![
        tokio::spawn({
            let ui = ui.clone();
            keep_online_with(m.clone(), online.clone(), move |text| notice(&ui, text))
        }),
        tokio::spawn(status(
            m.clone(),
            ui.clone(),
            copies.clone(),
            online.clone(),
        )),
    ];
    let forward = {
        let (m, ui, next_seq) = (m.clone(), ui.clone(), next_seq.clone());
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                forward(&m, &ui, &next_seq, &copies, e);
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
                        let reason = e.to_string();
                        let event = match e {
                            MessengerError::SentNotRecorded { .. } => AppEvent::SentUnsaved {
                                contact,
                                text,
                                reason,
                            },
                            _ => AppEvent::SendFailed {
                                contact,
                                text,
                                reason,
                            },
                        };
                        let _ = ui.send(event);
                    }
                });
            }
            Action::Composing { contact } => {
                if let Err(e) = m.composing(&contact) {
                    tracing::debug!("no circuits made ready for {contact}: {e}");
                }
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
            Action::RetryNow => {
                online.now.notify_one();
                let m = m.clone();
                tokio::spawn(async move { retry_waiting(&m).await });
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
                        let unread = m
                            .store()
                            .unread_counts()
                            .unwrap_or_default()
                            .into_iter()
                            .find(|(k, _)| k == a.key().as_bytes())
                            .map_or(0, |(_, n)| n);
                        let _ = ui.send(AppEvent::ContactAdded(ContactView {
                            name: name.clone(),
                            address: a.to_string(),
                            unread,
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
            Action::MarkRead { contact } => {
                let store = m.store();
                let marked = store.contact(&contact).and_then(|c| {
                    c.map_or(Ok(()), |c| store.mark_read(c.address.key().as_bytes()))
                });
                if let Err(e) = marked {
                    notice(&ui, format!("keeping read state: {e}"));
                }
            }
            Action::ListIgnored => {
                let ignored = m.store().ignored().unwrap_or_default();
                let mut text = match ignored.len() {
                    0 => "nobody is ignored".to_owned(),
                    1 => "1 ignored address (Ctrl-L shows it)".to_owned(),
                    n => format!("{n} ignored addresses (Ctrl-L shows them)"),
                };
                for key in ignored {
                    text.push('\n');
                    text.push_str(&address_of(&key));
                }
                notice(&ui, text);
            }
            Action::RenameContact { from, to } => {
                let done = m.store().rename_contact(&from, &to);
                edited(
                    &m,
                    &ui,
                    &next_seq,
                    done.map(|_| format!("{from} is now {to}")),
                );
            }
            Action::RemoveContact { name } => {
                let done = m.store().remove_contact(&name);
                edited(&m, &ui, &next_seq, done.map(|_| format!("removed {name}")));
            }
            Action::BlockContact { name } => {
                let store = m.store();
                let done = store
                    .remove_contact(&name)
                    .and_then(|key| store.ignore_key(&key, unix_now()));
                drop(store);
                edited(&m, &ui, &next_seq, done.map(|_| format!("blocked {name}")));
            }
        }
    }
    for t in tasks {
        t.abort();
    }
}

/// After a change to the contact list: the whole state again and what happened, or why not.
fn edited(
    m: &Messenger,
    ui: &UnboundedSender<AppEvent>,
    next_seq: &AtomicU64,
    done: Result<String, shallot_client::store::StoreError>,
) {
    match done {
        Ok(text) => {
            let _ = ui.send(snapshot_numbered(m, next_seq));
            notice(ui, text);
        }
        Err(e) => notice(ui, e.to_string()),
    }
}

/// Passes one messenger event on to the UI. A message from an ignored address is dropped
/// here, so that it does not bring its request back.
fn forward(
    m: &Messenger,
    ui: &UnboundedSender<AppEvent>,
    next_seq: &AtomicU64,
    copies: &AtomicU8,
    e: MessengerEvent,
) {
    match e {
        MessengerEvent::Message(msg) => {
            let names = names(m);
            let stranger = !names.contains_key(&msg.peer);
            if stranger && m.store().is_ignored(&msg.peer).unwrap_or(false) {
                return;
            }
            let v = view(&msg, next_seq.fetch_add(1, Ordering::Relaxed), &names);
            if stranger && !msg.outgoing {
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
        MessengerEvent::Notice(text) => notice(ui, text),
        MessengerEvent::Subscribed { copies: n } => copies.store(n, Ordering::Relaxed),
    }
}

/// Sends every message still waiting for its first copy to be stored, now.
async fn retry_waiting(m: &Messenger) {
    let waiting: Vec<MessageId> = m
        .store()
        .history()
        .unwrap_or_default()
        .into_iter()
        .filter(|msg| msg.outgoing && msg.state == Some(OutState::Sending))
        .map(|msg| msg.id)
        .collect();
    for id in waiting {
        let _ = m.retry(&id).await;
    }
    let _ = m.send_acks().await;
}

/// How [`keep_online_with`] is doing, for the status bar, and a way to cut its waiting
/// short (the retry-now key).
#[derive(Debug, Default)]
pub struct Reconnect {
    /// Set while not connected: when the next attempt starts, and why the last one failed.
    offline: Mutex<Option<Offline>>,
    /// Wakes the connection loop or the periodic work at once.
    now: Notify,
}

impl Reconnect {
    /// Whether the network is unreachable now, and until when.
    pub fn offline(&self) -> Option<Offline> {
        shallot_rt::lock(&self.offline).clone()
    }

    fn set(&self, state: Option<Offline>) {
        *shallot_rt::lock(&self.offline) = state;
    }

    /// Waits `d`, or less if asked to retry now.
    async fn wait(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.now.notified()).await;
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
    keep_online_with(m, Arc::new(Reconnect::default()), notice).await;
}

/// [`keep_online`], saying in `state` while it is offline and when it tries again, and
/// trying again at once when `state` is told to.
pub async fn keep_online_with(
    m: Arc<Messenger>,
    state: Arc<Reconnect>,
    notice: impl Fn(String) + Send + Sync + 'static,
) {
    let mut wait = Duration::from_millis(500);
    loop {
        match m.connect().await {
            Ok(()) => break,
            Err(e) => {
                state.set(Some(Offline {
                    retry_at: unix_now().saturating_add(wait.as_secs().max(1)),
                    error: e.to_string(),
                }));
                state.wait(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
    state.set(None);
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
        state.wait(PERIODIC_WORK).await;
    }
}

/// What the network panel shows, from the messenger's read-only views.
async fn details(m: &Messenger) -> NetworkDetails {
    let consensus = m.netdir().consensus().ok();
    let nickname = |id: &RelayId| {
        consensus
            .as_ref()
            .and_then(|c| c.relay(id))
            .map_or_else(|| id.to_string(), |r| r.nickname.clone())
    };
    let open = m.mailboxes().open_relays().await;
    let replicas = m
        .my_replicas()
        .unwrap_or_default()
        .iter()
        .map(|id| ReplicaView {
            relay: nickname(id),
            open: open.contains(id),
            last: m.last_answer(id).map(|a| (a.answer, a.at)),
        })
        .collect();
    let network = m.netdir().network();
    let consensus_view = consensus.as_ref().map(|c| ConsensusView {
        valid_after: c.valid_after,
        valid_until: c.valid_until,
        signed_by: c
            .signatures
            .iter()
            .map(|(key, _)| {
                network
                    .authorities
                    .iter()
                    .find(|a| a.key == *key)
                    .map_or_else(|| hex::encode(key.as_bytes()), |a| a.name.clone())
            })
            .collect(),
        authorities: network.authorities.len(),
    });
    NetworkDetails {
        guards: m
            .circuits()
            .guard_history()
            .iter()
            .map(|g| GuardView {
                relay: nickname(&g.id),
                since: g.sampled_at,
                unlisted_since: g.unlisted_since,
            })
            .collect(),
        circuits: m
            .circuits()
            .snapshot()
            .into_iter()
            .map(|c| CircuitView {
                relays: c.relays,
                age_secs: c.age.as_secs(),
            })
            .collect(),
        replicas,
        consensus: consensus_view,
        clock: m.netdir().clock_skew().map(|s| ClockView {
            skew_secs: s.secs,
            authority: s.authority,
            measured_at: s.measured_at,
        }),
    }
}

/// Reports the network's state every second.
async fn status(
    m: Arc<Messenger>,
    ui: UnboundedSender<AppEvent>,
    copies: Arc<AtomicU8>,
    online: Arc<Reconnect>,
) {
    loop {
        let consensus = m.netdir().consensus().ok();
        let n = copies.load(Ordering::Relaxed);
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
            offline: online.offline(),
        };
        let _ = ui.send(AppEvent::Status(status));
        let _ = ui.send(AppEvent::Network(details(&m).await));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
