//! The chat UI's vocabulary: what the messaging backend tells the UI ([`AppEvent`]) and what
//! the UI asks of the backend ([`Action`]), in plain data with no behaviour. These types are
//! the whole interface between the terminal UI and the rest of the client.

/// A contact as the UI shows it in the contacts pane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactView {
    /// The name the user gave this contact; unique among contacts.
    pub name: String,
    /// Their address (`shallot1…`).
    pub address: String,
    /// Messages from them not yet read.
    pub unread: usize,
    /// When a message last went either way (unix seconds), if ever.
    pub last_activity: Option<u64>,
}

/// Where one of my messages has got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Queued or on its way to the recipient's mailboxes.
    Sending,
    /// Stored on this many of the recipient's mailbox relays (1 to 3).
    Stored {
        /// How many mailbox relays hold a copy.
        copies: u8,
    },
    /// The recipient acknowledged it.
    Delivered,
    /// It could not be delivered; the user may retry.
    Failed {
        /// Why, in the user's words.
        reason: String,
    },
}

/// One message in a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageView {
    /// Unique id, in hex.
    pub id: String,
    /// The contact's name, or the sender's address for a message in a contact request.
    pub contact: String,
    /// Where it stands in the conversation: the order in which this device recorded the
    /// messages, which neither a peer's clock nor whole-second times can shuffle.
    pub seq: u64,
    /// Whether I sent it.
    pub outgoing: bool,
    /// The text, which may span several lines.
    pub text: String,
    /// When it was sent (unix seconds; for incoming messages, as the sender claims).
    pub sent_at: u64,
    /// When it reached this device (unix seconds), for incoming messages.
    pub received_at: Option<u64>,
    /// Delivery state: `Some` for my messages, `None` for incoming ones.
    pub delivery: Option<Delivery>,
}

/// Messages from an address that is not a contact, waiting to be accepted or ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRequest {
    /// The sender's address.
    pub address: String,
    /// What they sent so far.
    pub messages: Vec<MessageView>,
}

/// The state of my subscription to my own mailboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxState {
    /// Not subscribed: messages wait on the mailboxes until I come online.
    Offline,
    /// Subscribing.
    Connecting,
    /// Subscribed for push delivery on this many of my mailbox relays.
    Subscribed {
        /// How many of my mailbox relays push to me.
        copies: u8,
    },
}

/// What the network looks like from here, for the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    /// Age of the consensus in use, in seconds; `None` before the first one.
    pub consensus_age_secs: Option<u64>,
    /// Relays listed in the consensus.
    pub relays_known: usize,
    /// Circuits built and ready to carry messages.
    pub circuits_ready: usize,
    /// My mailbox subscription.
    pub mailbox: MailboxState,
    /// Not connected: the last attempt failed and the next one is due; `None` once
    /// connected.
    pub offline: Option<Offline>,
}

/// The network could not be reached: why, and when it is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offline {
    /// When the next attempt starts (unix seconds).
    pub retry_at: u64,
    /// Why the last attempt failed, in full (it may span lines).
    pub error: String,
}

impl Default for NetworkStatus {
    /// The status before the backend has said anything: nothing known, nothing ready.
    fn default() -> Self {
        NetworkStatus {
            consensus_age_secs: None,
            relays_known: 0,
            circuits_ready: 0,
            mailbox: MailboxState::Offline,
            offline: None,
        }
    }
}

/// What the network panel shows: where this client's traffic goes and what it trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkDetails {
    /// The guards kept, in order of preference.
    pub guards: Vec<GuardView>,
    /// Circuits built and ready.
    pub circuits: Vec<CircuitView>,
    /// The relays keeping my mailbox this epoch.
    pub replicas: Vec<ReplicaView>,
    /// The consensus in use, if any.
    pub consensus: Option<ConsensusView>,
    /// How far the local clock is from an authority's, when measured.
    pub clock: Option<ClockView>,
}

/// One guard of the guard set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardView {
    /// The relay's nickname, or its fingerprint when the consensus does not list it.
    pub relay: String,
    /// When it was added to the set (unix seconds); `None` when that was not recorded.
    pub since: Option<u64>,
    /// Since when the consensus has not listed it as a usable guard; `None` while it is
    /// listed (and so in use).
    pub unlisted_since: Option<u64>,
}

/// How a relay last answered this user's own requests: the messenger's own record, shown as
/// it is.
pub use shallot_client::messenger::answers::ReplicaAnswer;

/// This device's clock beside an authority's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockView {
    /// Seconds this clock is ahead (negative: behind); -1 to 1 when in step.
    pub skew_secs: i64,
    /// The authority compared with: its `Date` header on the last consensus fetch.
    pub authority: String,
    /// When (unix seconds, by this clock).
    pub measured_at: u64,
}

/// One circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitView {
    /// Relay nicknames, guard first.
    pub relays: Vec<String>,
    /// Seconds since it was built.
    pub age_secs: u64,
}

/// One of my mailbox replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    /// The relay's nickname.
    pub relay: String,
    /// Whether a circuit to it is open and working now.
    pub open: bool,
    /// What it last answered, and when (unix seconds); `None` if not asked yet.
    pub last: Option<(ReplicaAnswer, u64)>,
}

/// The consensus in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsensusView {
    /// When it became valid (unix seconds).
    pub valid_after: u64,
    /// When it stops being valid.
    pub valid_until: u64,
    /// The authorities whose signatures it carries (names from the network file).
    pub signed_by: Vec<String>,
    /// Authorities in the network file.
    pub authorities: usize,
}

/// Everything the backend tells the UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// The whole state, replacing whatever the UI held.
    Snapshot {
        /// My address.
        me: String,
        /// Every contact.
        contacts: Vec<ContactView>,
        /// Every message with a contact.
        messages: Vec<MessageView>,
        /// Pending contact requests.
        requests: Vec<ContactRequest>,
    },
    /// A message, incoming or outgoing; one with a known id replaces the old copy.
    MessageAdded(MessageView),
    /// One of my messages moved to a new delivery state.
    DeliveryChanged {
        /// The message's id.
        id: String,
        /// Its new state.
        delivery: Delivery,
    },
    /// A contact was added, or an existing one (same name) changed, for example its unread
    /// count. A pending request from the same address is folded into it.
    ContactAdded(ContactView),
    /// A new or updated contact request (same address replaces).
    ContactRequest(ContactRequest),
    /// The network status changed.
    Status(NetworkStatus),
    /// What the network panel shows, refreshed.
    Network(NetworkDetails),
    /// One line for the status bar: errors, "contact added", … Only the first line shows
    /// there; the whole text is kept in the log (Ctrl-L).
    Notice(String),
    /// A message asked for with [`Action::Send`] was refused before it was recorded (too
    /// long, no such contact, …): the UI gives its text back to the draft.
    SendFailed {
        /// The contact it was for.
        contact: String,
        /// The text, as sent.
        text: String,
        /// Why, in the user's words.
        reason: String,
    },
    /// A message asked for with [`Action::Send`] left and was stored on some mailboxes, but
    /// could not be saved in the history: the UI says so and does not offer it again (the
    /// contact may have it already).
    SentUnsaved {
        /// The contact it was for.
        contact: String,
        /// The text, as sent.
        text: String,
        /// What happened, in the user's words.
        reason: String,
    },
}

/// Seconds between two [`Action::Composing`] for one conversation while its draft has text
/// (a circuit made ready is kept 120 s: `shallot_net::circmgr::CircuitConfig`).
pub const COMPOSING_EVERY: u64 = 30;

/// Everything the UI asks of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `text` to the contact named `contact`. The backend answers with
    /// [`AppEvent::MessageAdded`] for the new message.
    Send {
        /// The contact's name.
        contact: String,
        /// The text, which may span several lines; never empty or only whitespace.
        text: String,
    },
    /// The user is typing to the contact named `contact` (sent again every
    /// [`COMPOSING_EVERY`] seconds while the draft has text): the backend gets
    /// the message's circuits ready. Nothing is sent to anyone.
    Composing {
        /// The contact's name.
        contact: String,
    },
    /// Send a failed message again.
    Retry {
        /// The message's id.
        id: String,
    },
    /// Add a contact; the address was validated with `shallot_crypto::Address`.
    AddContact {
        /// The name to know them by.
        name: String,
        /// Their address.
        address: String,
    },
    /// Accept a contact request under `name`; the backend answers with
    /// [`AppEvent::ContactAdded`].
    AcceptRequest {
        /// The requester's address.
        address: String,
        /// The name to know them by.
        name: String,
    },
    /// Ignore a contact request and drop its messages.
    IgnoreRequest {
        /// The requester's address.
        address: String,
    },
    /// The user has seen the conversation with `contact`.
    MarkRead {
        /// The contact's name.
        contact: String,
    },
    /// Try the network again now: cut short the wait before the next connection attempt
    /// and send every message still waiting.
    RetryNow,
    /// Give the contact `from` the name `to`.
    RenameContact {
        /// The contact's name now.
        from: String,
        /// The new name.
        to: String,
    },
    /// Remove the contact `name` (their messages go with them).
    RemoveContact {
        /// The contact's name.
        name: String,
    },
    /// Remove the contact `name` and ignore whatever they send from now on.
    BlockContact {
        /// The contact's name.
        name: String,
    },
    /// List the ignored addresses (the backend answers with a notice).
    ListIgnored,
    /// The user quit: the UI is gone.
    Quit,
}

/// How the UI starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UiOptions {
    /// Open the conversation with this contact as soon as it is known.
    pub select_contact: Option<String>,
    /// Start with the cursor in the input line (with `select_contact`, typing and Enter sends
    /// at once).
    pub focus_input: bool,
    /// The configuration file's theme, keys and notifications.
    pub config: crate::config::UiConfig,
    /// Where drafts being written in `$EDITOR` are kept meanwhile (the user's data
    /// directory); the system's temporary directory when not given.
    pub data_dir: Option<std::path::PathBuf>,
}
