//! What each key does, by where the keyboard is: an open dialog or overlay first, then the
//! keys that work anywhere, then those of the focused pane (`help` lists them all).
//! Terminal events go in, actions for the backend come out; nothing here draws.

use std::ops::Range;

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};

use super::app::{App, Confirm, Focus, Overlay, Search};
use super::command::{self, Command, CommandLine};
use super::dialog::{AcceptForm, AddContactForm};
use super::editor::Editor;
use super::keymap::GlobalAction;
use super::model::{Action, Delivery, COMPOSING_EVERY};
use super::roster::Peer;
use super::transcript;
use shallot_client::e2e::wire::MAX_TEXT_LEN;

/// An editing key for a one-line field; returns whether it was one.
fn edit_field(field: &mut Editor, key: &KeyEvent) -> bool {
    match key.code {
        KeyCode::Char(c) if !has_command_modifier(key) => field.insert_char(c),
        KeyCode::Backspace => field.backspace(),
        KeyCode::Delete => field.delete(),
        KeyCode::Left => field.left(),
        KeyCode::Right => field.right(),
        KeyCode::Home => field.home(),
        KeyCode::End => field.end(),
        _ => return false,
    }
    true
}

/// Whether Control or Alt is held (Shift only changes the character).
fn has_command_modifier(key: &KeyEvent) -> bool {
    key.modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
}

fn is_ctrl(key: &KeyEvent, c: char) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
}

/// What a key does by default wherever the focus is; `free`: whether a plain `?`, `:` or
/// `/` would not be typed into a draft.
fn default_global(key: &KeyEvent, free: bool) -> Option<GlobalAction> {
    Some(match key.code {
        KeyCode::F(1) => GlobalAction::Help,
        KeyCode::F(2) => GlobalAction::Network,
        KeyCode::Char('?') if free && plain(key).is_some() => GlobalAction::Help,
        KeyCode::Char(':' | '/') if free && plain(key).is_some() => GlobalAction::Command,
        KeyCode::Tab => GlobalAction::FocusNext,
        KeyCode::BackTab => GlobalAction::FocusPrevious,
        KeyCode::PageUp => GlobalAction::ScrollUp,
        KeyCode::PageDown => GlobalAction::ScrollDown,
        _ if is_ctrl(key, 'n') => GlobalAction::NextUnread,
        _ if is_ctrl(key, 'r') => GlobalAction::Retry,
        _ if is_ctrl(key, 'l') => GlobalAction::Log,
        _ if is_ctrl(key, 'f') => GlobalAction::Search,
        _ if is_ctrl(key, 'e') => GlobalAction::Edit,
        _ => return None,
    })
}

/// A plain character key (Shift allowed).
fn plain(key: &KeyEvent) -> Option<char> {
    match key.code {
        KeyCode::Char(c) if !has_command_modifier(key) => Some(c),
        _ => None,
    }
}

impl App {
    /// Handles a terminal event (a key, a paste or a resize) and returns what the backend
    /// must do about it.
    pub fn handle_event(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            Event::Paste(text) => self.on_paste(&text),
            Event::Mouse(mouse) if self.overlay.is_none() => self.on_mouse(mouse),
            // A resize needs nothing but the next render, which lays out afresh.
            _ => {}
        }
        self.take_actions()
    }

    /// Tells the backend that the user is typing to the open contact (called on edits of
    /// the draft only, not when a conversation with a saved draft is merely shown), at most
    /// every [`COMPOSING_EVERY`] seconds while the draft has text, so that the message's
    /// circuits are ready by the time it is sent (`docs/spec.md` §11.3).
    fn note_composing(&mut self) {
        let Some(Peer::Contact(contact)) = self.selected.clone() else {
            return;
        };
        if self.draft().is_none_or(|d| d.is_blank()) {
            return;
        }
        if let Some((told, at)) = &self.composing {
            if *told == contact && self.now < at.saturating_add(COMPOSING_EVERY) {
                return;
            }
        }
        self.composing = Some((contact.clone(), self.now));
        self.outbox.push(Action::Composing { contact });
    }

    /// The wheel scrolls the conversation; a click selects a contact or moves the focus to
    /// the pane clicked.
    fn on_mouse(&mut self, mouse: MouseEvent) {
        let Some(areas) = self.areas else { return };
        let at = Position::new(mouse.column, mouse.row);
        let inside = |r: Rect| r.contains(at);
        match mouse.kind {
            MouseEventKind::ScrollUp => self.scroll(|v, ranges, h| v.scroll_lines(-3, ranges, h)),
            MouseEventKind::ScrollDown => self.scroll(|v, ranges, h| v.scroll_lines(3, ranges, h)),
            MouseEventKind::Down(MouseButton::Left) if inside(areas.contacts) => {
                self.focus = Focus::Contacts;
                let peer = self
                    .contact_rows
                    .iter()
                    .find(|(row, _)| *row == mouse.row)
                    .map(|(_, p)| p.clone());
                if let Some(peer) = peer {
                    self.awaiting_start = false;
                    self.pending_select = None;
                    self.select(peer);
                }
            }
            MouseEventKind::Down(MouseButton::Left) if inside(areas.conversation) => {
                self.focus = Focus::Conversation;
            }
            MouseEventKind::Down(MouseButton::Left)
                if inside(areas.input) && !matches!(self.selected, Some(Peer::Request(_))) =>
            {
                self.focus = Focus::Input;
            }
            _ => {}
        }
    }

    fn quit(&mut self) {
        self.quit = true;
        self.outbox.push(Action::Quit);
    }

    fn on_key(&mut self, key: KeyEvent) {
        if is_ctrl(&key, 'c') {
            self.quit();
            return;
        }
        if let Some(overlay) = self.overlay.take() {
            self.overlay = self.on_overlay_key(overlay, &key);
            return;
        }
        if self.on_global_key(&key) {
            return;
        }
        match self.focus {
            Focus::Contacts => self.on_contacts_key(&key),
            Focus::Conversation => self.on_conversation_key(&key),
            Focus::Input => self.on_input_key(&key),
        }
    }

    /// The keys that do the same wherever the focus is; returns whether `key` was one.
    /// A key bound in the configuration file comes first. `?`, `:` and `/` count only
    /// where they would not be typed: outside the input line, or in it while it is empty.
    fn on_global_key(&mut self, key: &KeyEvent) -> bool {
        let empty_input = self.draft().is_none_or(|d| d.text().is_empty());
        let free = self.focus != Focus::Input || empty_input;
        let action = self.keys.action(key).or_else(|| default_global(key, free));
        match action {
            Some(action) => {
                self.global(action);
                true
            }
            None => false,
        }
    }

    /// Does what a key that works anywhere does.
    fn global(&mut self, action: GlobalAction) {
        match action {
            GlobalAction::Help => self.overlay = Some(Overlay::Help { scroll: 0 }),
            GlobalAction::Network => self.overlay = Some(Overlay::Network { scroll: 0 }),
            GlobalAction::Command => self.overlay = Some(Overlay::Command(CommandLine::default())),
            GlobalAction::FocusNext => self.cycle_focus(true),
            GlobalAction::FocusPrevious => self.cycle_focus(false),
            GlobalAction::ScrollUp => self.scroll(transcript::Viewport::page_up),
            GlobalAction::ScrollDown => self.scroll(transcript::Viewport::page_down),
            GlobalAction::NextUnread => self.next_unread(),
            GlobalAction::Retry => self.retry_now(),
            GlobalAction::Log => self.overlay = Some(Overlay::Log { scroll: 0 }),
            GlobalAction::Edit => self.edit_in_editor(),
            GlobalAction::Search => {
                let mut line = CommandLine::default();
                line.line.insert_str("search ");
                self.overlay = Some(Overlay::Command(line));
            }
        }
    }

    /// Asks for the open conversation's draft to be written in `$EDITOR`.
    fn edit_in_editor(&mut self) {
        match &self.selected {
            Some(Peer::Contact(_)) => self.edit_request = Some(self.selected.clone()),
            Some(Peer::Request(_)) => {
                self.say("accept this request (y in the contacts pane) to reply");
            }
            None => self.say("no conversation open: add a contact first (Esc, then a)"),
        }
    }

    /// Opens the next conversation (after the open one, wrapping) with unread messages,
    /// or a request.
    fn next_unread(&mut self) {
        let peers = self.roster.peers();
        let at = self
            .selected
            .as_ref()
            .and_then(|s| peers.iter().position(|p| p == s))
            .map_or(0, |i| i + 1);
        let unread = |p: &Peer| match p {
            Peer::Contact(name) => self.roster.contact(name).is_some_and(|c| c.unread > 0),
            Peer::Request(_) => true,
        };
        let n = peers.len();
        let next = (0..n)
            .map(|k| &peers[(at + k) % n])
            .find(|p| unread(p) && Some(*p) != self.selected.as_ref())
            .cloned();
        match next {
            Some(peer) => {
                self.awaiting_start = false;
                self.pending_select = None;
                self.select(peer);
            }
            None => self.say("nothing unread"),
        }
    }

    /// Asks the backend to try the network and every waiting message now.
    fn retry_now(&mut self) {
        self.outbox.push(Action::RetryNow);
        self.say("trying the network again now");
    }

    /// Tab and Shift-Tab. The input line is skipped on a contact request, which cannot be
    /// answered until accepted.
    fn cycle_focus(&mut self, forward: bool) {
        let next = |focus| match (focus, forward) {
            (Focus::Contacts, true) | (Focus::Input, false) => Focus::Conversation,
            (Focus::Conversation, true) | (Focus::Contacts, false) => Focus::Input,
            (Focus::Input, true) | (Focus::Conversation, false) => Focus::Contacts,
        };
        self.focus = next(self.focus);
        if self.focus == Focus::Input && matches!(self.selected, Some(Peer::Request(_))) {
            self.focus = next(self.focus);
        }
        if self.focus == Focus::Conversation {
            self.scroll(|v, ranges, height| v.ensure_cursor(ranges, height));
        }
    }

    /// Moves through the open conversation with `step`, laid out as last shown.
    fn scroll(&mut self, step: impl FnOnce(&mut transcript::Viewport, &[Range<usize>], usize)) {
        let (cols, height) = self.conversation_size;
        let height = height.max(1);
        self.lay_out(cols);
        let ranges = self.laid_out.as_ref().map_or(&[][..], |(_, t)| &t.ranges);
        step(&mut self.view, ranges, height);
        let total = ranges.last().map_or(0, |r| r.end);
        if !self.view.scrolled_up(total, height) {
            self.unseen_below = false;
        }
    }

    fn on_contacts_key(&mut self, key: &KeyEvent) {
        match key.code {
            KeyCode::Up => self.move_selection(-1),
            KeyCode::Down => self.move_selection(1),
            KeyCode::Enter => self.open(),
            _ => match plain(key) {
                Some('k') => self.move_selection(-1),
                Some('j') => self.move_selection(1),
                Some('q') => self.quit(),
                Some(c) => self.on_command(c),
                None => {}
            },
        }
    }

    /// Letters that work in both the contacts and the conversation panes. Any other letter
    /// only says where typing goes: nothing runs by surprise.
    fn on_command(&mut self, c: char) {
        match c {
            'a' => self.overlay = Some(Overlay::AddContact(AddContactForm::default())),
            'i' => self.overlay = Some(Overlay::MyAddress),
            'y' => self.accept(),
            'n' => self.ignore(),
            _ => {
                let hint = match &self.selected {
                    Some(Peer::Contact(name)) => format!("Enter to write to {name}"),
                    _ => "a to add a contact".to_owned(),
                };
                self.say(format!(
                    "{c} does nothing here: {hint}, : for commands, ? for keys"
                ));
            }
        }
    }

    fn accept(&mut self) {
        match self.selected.clone() {
            Some(Peer::Request(address)) => {
                self.overlay = Some(Overlay::Accept(AcceptForm::new(address)));
            }
            _ => self.say("y accepts a contact request: select one in the contacts pane"),
        }
    }

    fn ignore(&mut self) {
        match self.selected.clone() {
            Some(Peer::Request(address)) => {
                self.overlay = Some(Overlay::Confirm(Confirm::IgnoreRequest(address)));
            }
            _ => self.say("n ignores a contact request: select one in the contacts pane"),
        }
    }

    /// Asks before removing or blocking the open contact.
    fn confirm_on_contact(&mut self, make: fn(String) -> Confirm, what: &str) {
        match self.selected.clone() {
            Some(Peer::Contact(name)) => self.overlay = Some(Overlay::Confirm(make(name))),
            _ => self.say(format!(":{what} works on a contact: select one first")),
        }
    }

    /// Carries out what was confirmed.
    fn confirmed(&mut self, what: Confirm) {
        match what {
            Confirm::IgnoreRequest(address) => {
                self.roster.remove_request(&address);
                self.outbox.push(Action::IgnoreRequest { address });
                self.say("request ignored");
                self.selected = None;
                self.settle_after_removal();
            }
            Confirm::RemoveContact(name) => {
                self.say(format!("removing {name}…"));
                self.outbox.push(Action::RemoveContact { name });
            }
            Confirm::BlockContact(name) => {
                self.say(format!("blocking {name}…"));
                self.outbox.push(Action::BlockContact { name });
            }
        }
    }

    /// Runs a command from the `:` line.
    fn run_command(&mut self, command: Command) -> Option<Overlay> {
        match command {
            Command::Accept => self.accept(),
            Command::Add => return Some(Overlay::AddContact(AddContactForm::default())),
            Command::Bell => {
                self.notify.bell = !self.notify.bell;
                self.say(if self.notify.bell {
                    "bell on"
                } else {
                    "bell off"
                });
            }
            Command::Edit => self.edit_in_editor(),
            Command::Notify(on) => {
                self.notify.desktop = on;
                self.say(if on {
                    "desktop notifications on (if your terminal shows them)"
                } else {
                    "desktop notifications off"
                });
            }
            Command::Block => self.confirm_on_contact(Confirm::BlockContact, "block"),
            Command::Help => return Some(Overlay::Help { scroll: 0 }),
            Command::Ignore => self.ignore(),
            Command::Ignored => self.outbox.push(Action::ListIgnored),
            Command::Log => return Some(Overlay::Log { scroll: 0 }),
            Command::Me => return Some(Overlay::MyAddress),
            Command::Network => return Some(Overlay::Network { scroll: 0 }),
            Command::Next => self.next_unread(),
            Command::Quit => self.quit(),
            Command::Remove => self.confirm_on_contact(Confirm::RemoveContact, "remove"),
            Command::Rename(to) => match self.selected.clone() {
                Some(Peer::Contact(from)) => {
                    self.say(format!("renaming {from}…"));
                    self.pending_select = Some(to.clone());
                    self.outbox.push(Action::RenameContact { from, to });
                }
                _ => self.say(":rename works on a contact: select one first"),
            },
            Command::Retry => self.retry_now(),
            Command::Search(query) => return Some(Overlay::Search(self.search(&query))),
        }
        self.overlay.take()
    }

    /// Every message containing `query` (ignoring case), newest first.
    fn search(&self, query: &str) -> Search {
        let needle = query.to_lowercase();
        let mut found: Vec<(u64, Peer, String)> = self
            .roster
            .all_messages()
            .filter(|m| m.text.to_lowercase().contains(&needle))
            .map(|m| {
                let peer = if self.roster.request(&m.contact).is_some() {
                    Peer::Request(m.contact.clone())
                } else {
                    Peer::Contact(m.contact.clone())
                };
                (crate::roster::local_time(m), peer, m.id.clone())
            })
            .collect();
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.cmp(&b.2)));
        Search {
            query: query.to_owned(),
            hits: found.into_iter().map(|(_, p, id)| (p, id)).collect(),
            selected: 0,
        }
    }

    /// Opens the conversation of a search hit with that message selected.
    fn open_hit(&mut self, peer: Peer, id: &str) {
        self.awaiting_start = false;
        self.pending_select = None;
        self.select(peer.clone());
        let index = self.roster.messages(&peer).iter().position(|m| m.id == id);
        self.focus = Focus::Conversation;
        self.view.cursor = index;
        self.view.top = None;
        self.scroll(|v, ranges, height| v.ensure_cursor(ranges, height));
    }

    fn settle_after_removal(&mut self) {
        if let Some(first) = self.roster.peers().into_iter().next() {
            self.select(first);
        }
    }

    fn move_selection(&mut self, by: isize) {
        // The user chose: stop waiting to select something else.
        self.awaiting_start = false;
        self.pending_select = None;
        let peers = self.roster.peers();
        if peers.is_empty() {
            return;
        }
        let at = self
            .selected
            .as_ref()
            .and_then(|s| peers.iter().position(|p| p == s))
            .unwrap_or(0);
        let to = at.saturating_add_signed(by).min(peers.len() - 1);
        if let Some(peer) = peers.into_iter().nth(to) {
            self.select(peer);
        }
    }

    /// Enter on a contact: its conversation, with the keyboard in the input line.
    fn open(&mut self) {
        match self.selected.clone() {
            Some(Peer::Contact(name)) => {
                self.roster.clear_unread(&name);
                self.outbox
                    .retain(|a| !matches!(a, Action::MarkRead { contact } if *contact == name));
                self.outbox.push(Action::MarkRead { contact: name });
                self.focus = Focus::Input;
            }
            Some(Peer::Request(_)) => {
                self.focus = Focus::Conversation;
                self.scroll(|v, ranges, height| v.ensure_cursor(ranges, height));
            }
            None => {
                self.say("no contacts yet: press a to add one");
            }
        }
    }

    fn on_conversation_key(&mut self, key: &KeyEvent) {
        match key.code {
            KeyCode::Up => self.scroll(transcript::Viewport::up),
            KeyCode::Down => self.scroll(transcript::Viewport::down),
            KeyCode::Home => self.scroll(transcript::Viewport::home),
            KeyCode::End => self.scroll(|v, ranges, _| v.end(ranges)),
            KeyCode::Enter => self.open(),
            KeyCode::Esc => self.focus = Focus::Contacts,
            _ => match plain(key) {
                Some('k') => self.scroll(transcript::Viewport::up),
                Some('j') => self.scroll(transcript::Viewport::down),
                Some('r') => self.retry(),
                Some('q') => {
                    self.say("q quits from the contacts pane (Esc), Ctrl-C from anywhere");
                }
                Some(c) => self.on_command(c),
                None => {}
            },
        }
    }

    /// Sends the selected message again if it failed or is still waiting for its first copy
    /// to be stored.
    fn retry(&mut self) {
        let Some(peer) = self.selected.clone() else {
            return;
        };
        let stuck = self
            .view
            .cursor
            .and_then(|i| self.roster.messages(&peer).get(i))
            .filter(|m| {
                matches!(
                    m.delivery,
                    Some(Delivery::Failed { .. } | Delivery::Sending)
                )
            })
            .map(|m| m.id.clone());
        match stuck {
            Some(id) => {
                self.roster.set_delivery(&id, Delivery::Sending);
                self.outbox.push(Action::Retry { id });
                self.say("sending again");
            }
            None => {
                self.say("r sends a message again: select one marked ✗ or … with ↑ ↓");
            }
        }
    }

    fn on_input_key(&mut self, key: &KeyEvent) {
        let newline = (key.code == KeyCode::Enter && key.modifiers.contains(KeyModifiers::ALT))
            || is_ctrl(key, 'j');
        if newline {
            self.draft_mut().insert_char('\n');
            self.note_composing();
            return;
        }
        if is_ctrl(key, 'u') {
            self.draft_mut().take();
            return;
        }
        match key.code {
            KeyCode::Enter => self.send(),
            KeyCode::Esc => self.focus = Focus::Contacts,
            KeyCode::Up => {
                self.draft_mut().up();
            }
            KeyCode::Down => {
                self.draft_mut().down();
            }
            _ => {
                // Only a change of the text is typing: moving the cursor in a saved draft is
                // not.
                let before = self.draft().map(|d| d.text());
                edit_field(self.draft_mut(), key);
                if self.draft().map(|d| d.text()) != before {
                    self.note_composing();
                }
            }
        }
    }

    fn send(&mut self) {
        match self.selected.clone() {
            Some(Peer::Contact(contact)) => {
                if self.draft().is_none_or(|d| d.is_blank()) {
                    return;
                }
                let len = self.draft().map_or(0, |d| d.text().len());
                if len > MAX_TEXT_LEN {
                    self.say(format!(
                        "too long to send: {len} of at most {MAX_TEXT_LEN} bytes; the text is kept"
                    ));
                    return;
                }
                let text = self.draft_mut().take();
                let text = text.trim_end().trim_start_matches('\n').to_owned();
                self.unsent
                    .entry(contact.clone())
                    .or_default()
                    .push(text.clone());
                self.outbox.push(Action::Send { contact, text });
                // The circuits made ready went with it: the next draft asks again.
                self.composing = None;
                self.view = transcript::Viewport::default();
                self.unseen_below = false;
            }
            Some(Peer::Request(_)) => {
                self.say("accept this request (y in the contacts pane) to reply");
            }
            None => {
                self.say("no conversation open: add a contact first (Esc, then a)");
            }
        }
    }

    fn on_paste(&mut self, text: &str) {
        match &mut self.overlay {
            Some(Overlay::AddContact(form)) => {
                form.field_mut().insert_line(text);
                form.edited(&self.roster);
            }
            Some(Overlay::Accept(form)) => form.name.insert_line(text),
            Some(Overlay::Command(line)) => line.line.insert_line(text),
            Some(_) => {}
            None => {
                if matches!(self.selected, Some(Peer::Contact(_))) {
                    self.focus = Focus::Input;
                }
                if self.focus == Focus::Input {
                    self.draft_mut().insert_str(text);
                    self.note_composing();
                }
            }
        }
    }

    /// Handles a key while `overlay` is open; returns the overlay to keep open, if any.
    fn on_overlay_key(&mut self, overlay: Overlay, key: &KeyEvent) -> Option<Overlay> {
        if key.code == KeyCode::Esc {
            return None;
        }
        match overlay {
            Overlay::Help { scroll } => match key.code {
                KeyCode::Up => Some(Overlay::Help {
                    scroll: scroll.saturating_sub(1),
                }),
                KeyCode::Down => Some(Overlay::Help { scroll: scroll + 1 }),
                KeyCode::PageUp => Some(Overlay::Help {
                    scroll: scroll.saturating_sub(10),
                }),
                KeyCode::PageDown => Some(Overlay::Help {
                    scroll: scroll + 10,
                }),
                KeyCode::F(1) | KeyCode::Char('?') => None,
                _ => Some(Overlay::Help { scroll }),
            },
            Overlay::MyAddress => match key.code {
                KeyCode::Enter => None,
                KeyCode::Char('c') => {
                    if let Some(me) = self.roster.me() {
                        self.copy = Some(me.to_owned());
                        self.say("address copied (if your terminal allows OSC 52)");
                    }
                    None
                }
                _ => Some(Overlay::MyAddress),
            },
            Overlay::Log { scroll } => match key.code {
                KeyCode::Up => Some(Overlay::Log { scroll: scroll + 1 }),
                KeyCode::Down => Some(Overlay::Log {
                    scroll: scroll.saturating_sub(1),
                }),
                KeyCode::PageUp => Some(Overlay::Log {
                    scroll: scroll + 10,
                }),
                KeyCode::PageDown => Some(Overlay::Log {
                    scroll: scroll.saturating_sub(10),
                }),
                KeyCode::Enter => None,
                _ if is_ctrl(key, 'l') => None,
                _ => Some(Overlay::Log { scroll }),
            },
            Overlay::Network { scroll } => match key.code {
                KeyCode::Up => Some(Overlay::Network {
                    scroll: scroll.saturating_sub(1),
                }),
                KeyCode::Down => Some(Overlay::Network { scroll: scroll + 1 }),
                KeyCode::PageUp => Some(Overlay::Network {
                    scroll: scroll.saturating_sub(10),
                }),
                KeyCode::PageDown => Some(Overlay::Network {
                    scroll: scroll + 10,
                }),
                KeyCode::F(2) | KeyCode::Enter => None,
                _ => Some(Overlay::Network { scroll }),
            },
            Overlay::Confirm(what) => match plain(key) {
                Some('y') => {
                    self.confirmed(what);
                    None
                }
                Some('n') => None,
                _ => Some(Overlay::Confirm(what)),
            },
            Overlay::Command(mut line) => match key.code {
                KeyCode::Tab => {
                    line.complete();
                    Some(Overlay::Command(line))
                }
                KeyCode::Enter => match command::parse(&line.line.text()) {
                    Ok(c) => self.run_command(c),
                    Err(e) => {
                        line.error = Some(e);
                        Some(Overlay::Command(line))
                    }
                },
                KeyCode::Backspace if line.line.text().is_empty() => None,
                _ => {
                    if edit_field(&mut line.line, key) {
                        line.error = None;
                    }
                    Some(Overlay::Command(line))
                }
            },
            Overlay::Search(mut found) => match key.code {
                KeyCode::Up | KeyCode::Char('k') => {
                    found.selected = found.selected.saturating_sub(1);
                    Some(Overlay::Search(found))
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    found.selected = (found.selected + 1).min(found.hits.len().saturating_sub(1));
                    Some(Overlay::Search(found))
                }
                KeyCode::Enter => {
                    if let Some((peer, id)) = found.hits.get(found.selected).cloned() {
                        self.open_hit(peer, &id);
                    }
                    None
                }
                _ => Some(Overlay::Search(found)),
            },
            Overlay::AddContact(mut form) => {
                match key.code {
                    KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down => {
                        form.switch_field();
                    }
                    KeyCode::Enter => {
                        if let Some((name, address)) = form.submit(&self.roster) {
                            self.say(format!("adding {name}…"));
                            self.pending_select = Some(name.clone());
                            self.pending_focus_input = true;
                            self.outbox.push(Action::AddContact { name, address });
                            return None;
                        }
                    }
                    _ => {
                        if edit_field(form.field_mut(), key) {
                            form.edited(&self.roster);
                        }
                    }
                }
                Some(Overlay::AddContact(form))
            }
            Overlay::Accept(mut form) => {
                if key.code == KeyCode::Enter {
                    if let Some(name) = form.submit(&self.roster) {
                        self.say(format!("accepting {name}…"));
                        self.pending_select = Some(name.clone());
                        self.outbox.push(Action::AcceptRequest {
                            address: form.address,
                            name,
                        });
                        return None;
                    }
                } else if edit_field(&mut form.name, key) {
                    form.error = None;
                }
                Some(Overlay::Accept(form))
            }
        }
    }
}

#[cfg(test)]
mod tests;
