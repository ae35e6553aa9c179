//! The chat UI's state, with no I/O: what it knows (the [`Roster`] and the network status),
//! where the user is (selection, focus, scroll, dialogs, drafts), and how the backend's
//! events change it. Keys are handled in `keys` and drawing is in `render`, both as
//! further `impl App` blocks.

use std::collections::HashMap;

use jiff::tz::TimeZone;
use shallot_rt::unix_now;

use super::command::CommandLine;
use super::dialog::{AcceptForm, AddContactForm};
use super::editor::Editor;
use super::keymap::Keymap;
use super::model::{Action, AppEvent, Delivery, NetworkDetails, NetworkStatus, UiOptions};
use super::notify::NotifySettings;
use super::roster::{Peer, Roster};
use super::theme::Theme;
use super::transcript::{self, Transcript, Viewport};

/// Which pane has the keyboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The contacts pane.
    Contacts,
    /// The conversation pane.
    Conversation,
    /// The input line.
    Input,
}

/// A window over the panes, which takes the keyboard while open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// The key list, scrolled by this many rows.
    Help {
        /// Rows scrolled.
        scroll: usize,
    },
    /// The add-contact form.
    AddContact(AddContactForm),
    /// My address, to copy.
    MyAddress,
    /// Naming the sender of a contact request being accepted.
    Accept(AcceptForm),
    /// A question before something that cannot be undone.
    Confirm(Confirm),
    /// The `:` command line.
    Command(CommandLine),
    /// Every notice and error so far, in full, newest last, scrolled up by this many rows.
    Log {
        /// Rows scrolled up from the newest.
        scroll: usize,
    },
    /// Messages found by a search across all conversations.
    Search(Search),
    /// The network panel, scrolled by this many rows.
    Network {
        /// Rows scrolled.
        scroll: usize,
    },
}

/// Something that cannot be undone, waiting for a yes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirm {
    /// Ignore the contact request from this address.
    IgnoreRequest(String),
    /// Remove this contact and the conversation.
    RemoveContact(String),
    /// Remove this contact and ignore them from now on.
    BlockContact(String),
}

/// A search's results: where each message is, and which one is selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// What was searched for.
    pub query: String,
    /// The conversation and message id of each match, newest first.
    pub hits: Vec<(super::roster::Peer, String)>,
    /// The selected match.
    pub selected: usize,
}

/// The chat UI: everything it shows and how the user moves through it.
#[derive(Debug)]
pub struct App {
    pub(super) roster: Roster,
    pub(super) status: NetworkStatus,
    /// What the network panel shows.
    pub(super) network: NetworkDetails,
    /// `now` when the status arrived, to age the consensus between updates.
    pub(super) status_at: u64,
    /// The latest notice and when (`now`) it came.
    pub(super) notice: Option<(String, u64)>,
    /// Every notice in full, oldest first, at most [`LOG_LINES`].
    pub(super) log: Vec<String>,
    /// Texts sent to each contact and not yet seen back as recorded messages: a refusal
    /// gives them back to the draft.
    pub(super) unsent: HashMap<String, Vec<String>>,
    /// The bell and desktop notifications when a message arrives in a conversation not on
    /// screen.
    pub(super) notify: NotifySettings,
    /// A bell is owed to the terminal.
    pub(super) ring: bool,
    /// A desktop notification is owed to the terminal, saying this.
    pub(super) notification: Option<String>,
    /// The colours.
    pub(super) theme: Theme,
    /// The user's key bindings.
    pub(super) keys: Keymap,
    /// The draft of this conversation is to be written in `$EDITOR`.
    pub(super) edit_request: Option<Option<Peer>>,
    /// Text to put on the clipboard through the terminal.
    pub(super) copy: Option<String>,
    pub(super) selected: Option<Peer>,
    pub(super) focus: Focus,
    pub(super) overlay: Option<Overlay>,
    /// Unsent text, per conversation (`None`: typed before any conversation was open).
    pub(super) drafts: HashMap<Option<Peer>, Editor>,
    pub(super) view: Viewport,
    /// Newer messages arrived below the view.
    pub(super) unseen_below: bool,
    /// Width and height of the conversation text at the last render.
    pub(super) conversation_size: (usize, usize),
    /// Where the panes were at the last render, for the mouse.
    pub(super) areas: Option<super::render::Areas>,
    /// The screen row of each entry of the contacts pane at the last render.
    pub(super) contact_rows: Vec<(u16, Peer)>,
    /// A contact to select as soon as it exists.
    pub(super) pending_select: Option<String>,
    pub(super) pending_focus_input: bool,
    /// Waiting for the contact the UI was started on: select nothing else meanwhile, so
    /// that text typed straight away goes to that contact.
    pub(super) awaiting_start: bool,
    pub(super) quit: bool,
    pub(super) outbox: Vec<Action>,
    /// The contact the backend was last told the user is typing to, and when (`now`).
    pub(super) composing: Option<(String, u64)>,
    /// Unix seconds, as of the last [`App::tick`].
    pub(super) now: u64,
    /// The user's time zone.
    pub(super) time_zone: TimeZone,
    /// The open conversation laid out for the screen, and what from.
    pub(super) laid_out: Option<(LayoutKey, Transcript)>,
}

/// What a laid-out conversation depends on: when any of it changes, it is laid out again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LayoutKey {
    peer: Option<Peer>,
    cols: usize,
    generation: u64,
    time_zone: TimeZone,
}

/// How long a notice stays in the status bar, in seconds.
pub const NOTICE_SECS: u64 = 15;
/// How many notices the log (Ctrl-L) keeps.
pub const LOG_LINES: usize = 200;

impl App {
    /// A UI with nothing known yet, started as `options` asks.
    pub fn new(options: UiOptions) -> Self {
        App {
            roster: Roster::default(),
            status: NetworkStatus::default(),
            network: NetworkDetails::default(),
            status_at: 0,
            notice: None,
            log: Vec::new(),
            unsent: HashMap::new(),
            notify: options.config.notify,
            ring: false,
            notification: None,
            theme: options.config.theme,
            keys: options.config.keys,
            edit_request: None,
            copy: None,
            selected: None,
            focus: if options.focus_input {
                Focus::Input
            } else {
                Focus::Contacts
            },
            overlay: None,
            drafts: HashMap::new(),
            view: Viewport::default(),
            unseen_below: false,
            conversation_size: (0, 0),
            areas: None,
            contact_rows: Vec::new(),
            pending_focus_input: options.focus_input && options.select_contact.is_some(),
            awaiting_start: options.select_contact.is_some(),
            pending_select: options.select_contact,
            quit: false,
            outbox: Vec::new(),
            composing: None,
            now: unix_now(),
            time_zone: TimeZone::UTC,
            laid_out: None,
        }
    }

    /// Shows times in time zone `tz` (UTC until told).
    pub fn set_time_zone(&mut self, tz: TimeZone) {
        self.time_zone = tz;
    }

    /// Tells the UI the time (unix seconds), to age what it shows.
    pub fn tick(&mut self, now: u64) {
        self.now = now;
    }

    /// Whether a bell is owed to the terminal (a message arrived in a conversation not on
    /// screen, with the bell on); clears it.
    pub fn take_bell(&mut self) -> bool {
        std::mem::take(&mut self.ring)
    }

    /// A desktop notification owed to the terminal (its text), if any; clears it.
    pub fn take_notification(&mut self) -> Option<String> {
        self.notification.take()
    }

    /// The bell and a desktop notification saying `body`, as switched on.
    fn alert(&mut self, body: String) {
        self.ring |= self.notify.bell;
        if self.notify.desktop {
            self.notification = Some(body);
        }
    }

    /// The notification settings (for the escape sequence to send).
    pub fn notify_settings(&self) -> &NotifySettings {
        &self.notify
    }

    /// The draft the user asked to write in `$EDITOR`, if any (its text); clears the
    /// request. Give the edited text back with [`App::edited`].
    pub fn take_edit_request(&mut self) -> Option<String> {
        let peer = self.edit_request.clone()?;
        Some(self.drafts.get(&peer).map(|d| d.text()).unwrap_or_default())
    }

    /// The text written in `$EDITOR` (or why not) replaces the draft it started from.
    pub fn edited(&mut self, result: Result<String, String>) {
        let Some(peer) = self.edit_request.take() else {
            return;
        };
        match result {
            Ok(text) => {
                let draft = self.drafts.entry(peer).or_default();
                draft.take();
                draft.insert_str(&text);
                self.focus = Focus::Input;
            }
            Err(e) => self.say(format!("editor: {e}; the draft is kept")),
        }
    }

    /// Text the user asked to copy to the clipboard, if any; clears it.
    pub fn take_copy(&mut self) -> Option<String> {
        self.copy.take()
    }

    /// Whether the user has quit.
    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// Which pane has the keyboard.
    pub fn focus(&self) -> Focus {
        self.focus
    }

    /// The open dialog or overlay, if any.
    pub fn overlay(&self) -> Option<&Overlay> {
        self.overlay.as_ref()
    }

    /// The contact or request whose conversation is shown.
    pub fn selected(&self) -> Option<&Peer> {
        self.selected.as_ref()
    }

    /// Takes the actions the UI decided on outside [`App::handle_event`], such as marking a
    /// conversation read when a message arrives in it while it is open.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.outbox)
    }

    /// Applies what the backend says.
    pub fn apply(&mut self, event: AppEvent) {
        match event {
            AppEvent::Snapshot {
                me,
                contacts,
                messages,
                requests,
            } => {
                self.roster.replace(me, contacts, messages, requests);
                self.view = Viewport::default();
            }
            AppEvent::MessageAdded(m) => {
                let here = match &self.selected {
                    Some(Peer::Contact(name)) => *name == m.contact,
                    Some(Peer::Request(address)) => *address == m.contact,
                    None => false,
                };
                if m.outgoing {
                    self.sent_back(&m.contact, &m.text);
                }
                let body = self.notify.body(&m.contact, &m.text);
                let counts = self.roster.add_message(m);
                if here {
                    if counts {
                        self.mark_read();
                    }
                    let (_, height) = self.conversation_size;
                    if self.view.top.is_some() && height > 0 {
                        self.unseen_below = true;
                    }
                } else if counts {
                    self.alert(body);
                }
            }
            AppEvent::DeliveryChanged { id, delivery } => {
                if let Delivery::Failed { reason } = &delivery {
                    let to = self.roster.message(&id).map(|m| m.contact.clone());
                    self.log_line(format!(
                        "not delivered to {}: {reason}",
                        to.unwrap_or_default()
                    ));
                }
                self.roster.set_delivery(&id, delivery);
            }
            AppEvent::SendFailed {
                contact,
                text,
                reason,
            } => {
                if self.sent_back(&contact, &text) {
                    let draft = self
                        .drafts
                        .entry(Some(Peer::Contact(contact.clone())))
                        .or_default();
                    let rest = draft.take();
                    draft.insert_str(&text);
                    if !rest.trim().is_empty() {
                        draft.insert_str("\n");
                        draft.insert_str(&rest);
                    }
                }
                self.say(format!("not sent to {contact} (text kept): {reason}"));
            }
            AppEvent::SentUnsaved {
                contact,
                text,
                reason,
            } => {
                self.sent_back(&contact, &text);
                // Neither in the history nor in the draft: the log keeps what was sent.
                self.log_line(format!(
                    "sent to {contact}, not saved in the history: {text}"
                ));
                self.say(format!("sent to {contact} (not saved here): {reason}"));
            }
            AppEvent::ContactAdded(contact) => {
                let name = contact.name.clone();
                let folded = self.roster.upsert_contact(contact);
                if folded.is_some() && self.selected == folded.map(Peer::Request) {
                    self.selected = Some(Peer::Contact(name.clone()));
                    self.view = Viewport::default();
                }
                if self.selected == Some(Peer::Contact(name)) {
                    self.mark_read();
                }
            }
            AppEvent::ContactRequest(request) => {
                if self.selected != Some(Peer::Request(request.address.clone())) {
                    self.alert("new contact request".to_owned());
                }
                self.roster.upsert_request(request);
            }
            AppEvent::Status(status) => {
                self.status = status;
                self.status_at = self.now;
            }
            AppEvent::Network(details) => self.network = details,
            AppEvent::Notice(text) => self.say(text),
        }
        self.settle_selection();
    }

    /// Selects the contact asked for (at start-up or by adding it) once it exists, and
    /// otherwise keeps a selection that still exists, or picks the first in the list (but
    /// not while waiting for the contact the UI was started on).
    fn settle_selection(&mut self) {
        if let Some(name) = self.pending_select.clone() {
            let peer = Peer::Contact(name);
            if self.roster.contains(&peer) {
                self.pending_select = None;
                self.awaiting_start = false;
                self.select(peer);
                if std::mem::take(&mut self.pending_focus_input) {
                    self.focus = Focus::Input;
                }
                return;
            }
        }
        if self.awaiting_start {
            return;
        }
        let still_there = self
            .selected
            .as_ref()
            .is_some_and(|p| self.roster.contains(p));
        if !still_there {
            match self.roster.peers().into_iter().next() {
                Some(first) => self.select(first),
                None => self.selected = None,
            }
        }
    }

    /// Shows the first line of `text` in the status bar for a while, and keeps all of it in
    /// the log.
    pub(super) fn say(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.log_line(text.clone());
        self.notice = Some((text, self.now));
    }

    /// Keeps `text` in the log only.
    pub(super) fn log_line(&mut self, text: String) {
        if self.log.len() >= LOG_LINES {
            self.log.remove(0);
        }
        self.log.push(text);
    }

    /// Forgets `text` as unsent to `contact`; returns whether it was.
    fn sent_back(&mut self, contact: &str, text: &str) -> bool {
        let Some(list) = self.unsent.get_mut(contact) else {
            return false;
        };
        match list.iter().position(|t| t == text) {
            Some(i) => {
                list.remove(i);
                true
            }
            None => false,
        }
    }

    /// The notice to show now, if one is recent enough.
    pub(super) fn current_notice(&self) -> Option<&str> {
        self.notice
            .as_ref()
            .filter(|(_, at)| self.now < at.saturating_add(NOTICE_SECS))
            .map(|(text, _)| text.lines().next().unwrap_or_default())
    }

    /// Whether the current notice has more than its first line (shown in the log).
    pub(super) fn notice_has_more(&self) -> bool {
        self.notice
            .as_ref()
            .is_some_and(|(text, _)| text.trim_end().contains('\n'))
    }

    /// Shows the conversation with `peer`, marking it read. An unsent draft typed before any
    /// conversation was open moves into it.
    pub(super) fn select(&mut self, peer: Peer) {
        if self.selected.as_ref() != Some(&peer) {
            self.view = Viewport::default();
            self.unseen_below = false;
        }
        if let Some(orphan) = self.drafts.remove(&None) {
            let draft = self.drafts.entry(Some(peer.clone())).or_default();
            if draft.text().is_empty() {
                *draft = orphan;
            }
        }
        self.selected = Some(peer);
        self.mark_read();
    }

    /// Marks the open conversation read, telling the backend if anything was unread.
    pub(super) fn mark_read(&mut self) {
        if let Some(Peer::Contact(name)) = &self.selected {
            if self.roster.clear_unread(name) {
                self.outbox.push(Action::MarkRead {
                    contact: name.clone(),
                });
            }
        }
    }

    /// The draft of the open conversation.
    pub(super) fn draft_mut(&mut self) -> &mut Editor {
        self.drafts.entry(self.selected.clone()).or_default()
    }

    /// The draft of the open conversation, if any text was typed.
    pub(super) fn draft(&self) -> Option<&Editor> {
        self.drafts.get(&self.selected)
    }

    /// Lays the open conversation out `cols` wide into `laid_out`, unless it already is.
    pub(super) fn lay_out(&mut self, cols: usize) {
        let key = LayoutKey {
            peer: self.selected.clone(),
            cols,
            generation: self.roster.generation(),
            time_zone: self.time_zone.clone(),
        };
        if self.laid_out.as_ref().is_some_and(|(k, _)| *k == key) {
            return;
        }
        let transcript = match &self.selected {
            Some(peer) => {
                let label = match peer {
                    Peer::Contact(name) => name,
                    Peer::Request(address) => address,
                };
                let messages = self.roster.messages(peer);
                transcript::build(messages, label, cols, &self.time_zone)
            }
            None => Transcript::default(),
        };
        self.laid_out = Some((key, transcript));
    }

    /// The open conversation as last laid out.
    pub(super) fn laid_out(&self) -> Option<&Transcript> {
        self.laid_out.as_ref().map(|(_, t)| t)
    }
}
