//! What the UI knows about people and messages: contacts, contact requests and the
//! conversations with each, kept in display order as the backend's events arrive.
//!
//! Conversations are ordered by sequence ([`MessageView::seq`]): the order in which this
//! device recorded the messages, which a peer cannot forge and whole-second times cannot
//! shuffle. The time a peer claims to have sent a message is shown beside it when it differs
//! much from when it arrived.

use std::collections::{HashMap, HashSet};

use super::model::{ContactRequest, ContactView, Delivery, MessageView};

/// Someone the user can have a conversation with: a contact (by name) or the sender of a
/// contact request (by address).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// A contact, by name.
    Contact(String),
    /// A contact request, by the sender's address.
    Request(String),
}

/// The moment a message was sent from, or reached, this device.
pub fn local_time(m: &MessageView) -> u64 {
    if m.outgoing {
        m.sent_at
    } else {
        m.received_at.unwrap_or(m.sent_at)
    }
}

/// Inserts `m` into `list` in sequence order.
fn insert_sorted(list: &mut Vec<MessageView>, m: MessageView) {
    let at = list.partition_point(|x| x.seq <= m.seq);
    list.insert(at, m);
}

/// Contacts, requests and conversations.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    me: Option<String>,
    contacts: Vec<ContactView>,
    requests: Vec<ContactRequest>,
    /// Conversations with contacts, by contact name. Messages for a name that is not (yet) a
    /// contact wait here until it becomes one.
    conversations: HashMap<String, Vec<MessageView>>,
    /// Counts changes, so that what is derived from the roster knows when to redo it.
    generation: u64,
}

impl Roster {
    /// Replaces everything with a snapshot from the backend.
    pub fn replace(
        &mut self,
        me: String,
        contacts: Vec<ContactView>,
        messages: Vec<MessageView>,
        requests: Vec<ContactRequest>,
    ) {
        self.generation += 1;
        self.me = Some(me);
        self.contacts = contacts;
        self.conversations.clear();
        self.requests.clear();
        for r in requests {
            self.upsert_request(r);
        }
        // In bulk: one sort per conversation, not a search per message, so that a long
        // history loads at once. The snapshot's unread counts already include these.
        let mut seen = HashSet::new();
        for m in messages {
            if !seen.insert(m.id.clone()) {
                continue;
            }
            let t = local_time(&m);
            if let Some(r) = self.requests.iter_mut().find(|r| r.address == m.contact) {
                r.messages.push(m);
                continue;
            }
            if let Some(c) = self.contacts.iter_mut().find(|c| c.name == m.contact) {
                c.last_activity = c.last_activity.max(Some(t));
            }
            self.conversations
                .entry(m.contact.clone())
                .or_default()
                .push(m);
        }
        let lists = self
            .conversations
            .values_mut()
            .chain(self.requests.iter_mut().map(|r| &mut r.messages));
        for list in lists {
            list.sort_by_key(|m| m.seq);
        }
    }

    /// A number that changes whenever anything here does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// My address, once the backend has said.
    pub fn me(&self) -> Option<&str> {
        self.me.as_deref()
    }

    /// Contacts, most recent activity first (then by name).
    pub fn contacts(&self) -> Vec<&ContactView> {
        let mut list: Vec<&ContactView> = self.contacts.iter().collect();
        list.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then_with(|| a.name.cmp(&b.name))
        });
        list
    }

    /// Requests, most recent message first.
    pub fn requests(&self) -> Vec<&ContactRequest> {
        let mut list: Vec<&ContactRequest> = self.requests.iter().collect();
        let newest = |r: &ContactRequest| r.messages.iter().map(local_time).max();
        list.sort_by(|a, b| newest(b).cmp(&newest(a)).then(a.address.cmp(&b.address)));
        list
    }

    /// Everyone in display order: requests, then contacts.
    pub fn peers(&self) -> Vec<Peer> {
        let requests = self.requests().into_iter();
        let contacts = self.contacts().into_iter();
        requests
            .map(|r| Peer::Request(r.address.clone()))
            .chain(contacts.map(|c| Peer::Contact(c.name.clone())))
            .collect()
    }

    /// Whether `peer` is still here.
    pub fn contains(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Contact(name) => self.contact(name).is_some(),
            Peer::Request(address) => self.request(address).is_some(),
        }
    }

    /// The contact named `name`.
    pub fn contact(&self, name: &str) -> Option<&ContactView> {
        self.contacts.iter().find(|c| c.name == name)
    }

    /// The contact whose address is `address` (compared ignoring case).
    pub fn contact_by_address(&self, address: &str) -> Option<&ContactView> {
        self.contacts
            .iter()
            .find(|c| c.address.eq_ignore_ascii_case(address))
    }

    /// The request from `address`.
    pub fn request(&self, address: &str) -> Option<&ContactRequest> {
        self.requests.iter().find(|r| r.address == address)
    }

    /// The messages exchanged with `peer`, oldest first.
    pub fn messages(&self, peer: &Peer) -> &[MessageView] {
        match peer {
            Peer::Contact(name) => self.conversations.get(name).map_or(&[], |v| v.as_slice()),
            Peer::Request(address) => self.request(address).map_or(&[], |r| &r.messages),
        }
    }

    /// Finds the message with id `id`.
    pub fn message(&self, id: &str) -> Option<&MessageView> {
        self.conversations
            .values()
            .flatten()
            .chain(self.requests.iter().flat_map(|r| &r.messages))
            .find(|m| m.id == id)
    }

    /// Removes the message with id `id` from wherever it is.
    fn remove_message(&mut self, id: &str) -> Option<MessageView> {
        let lists = self
            .conversations
            .values_mut()
            .chain(self.requests.iter_mut().map(|r| &mut r.messages));
        for list in lists {
            if let Some(i) = list.iter().position(|m| m.id == id) {
                return Some(list.remove(i));
            }
        }
        None
    }

    /// Adds a message (replacing one with the same id). Returns whether it is a new incoming
    /// message for a contact, which then counts as unread.
    pub fn add_message(&mut self, m: MessageView) -> bool {
        self.insert_message(m, true)
    }

    fn insert_message(&mut self, mut m: MessageView, count_unread: bool) -> bool {
        self.generation += 1;
        let old = self.remove_message(&m.id);
        let known = old.is_some();
        // A message reported again keeps its place.
        if let Some(old) = old {
            m.seq = old.seq;
        }
        let t = local_time(&m);
        if let Some(r) = self.requests.iter_mut().find(|r| r.address == m.contact) {
            insert_sorted(&mut r.messages, m);
            return false;
        }
        let counts = !m.outgoing && !known && count_unread;
        let contact = self.contacts.iter_mut().find(|c| c.name == m.contact);
        let counts = match contact {
            Some(c) => {
                c.last_activity = c.last_activity.max(Some(t));
                if counts {
                    c.unread += 1;
                }
                counts
            }
            None => false,
        };
        insert_sorted(self.conversations.entry(m.contact.clone()).or_default(), m);
        counts
    }

    /// Sets the delivery state of my message `id`; returns false if there is none.
    pub fn set_delivery(&mut self, id: &str, delivery: Delivery) -> bool {
        self.generation += 1;
        let found = self
            .conversations
            .values_mut()
            .flatten()
            .find(|m| m.id == id && m.outgoing);
        match found {
            Some(m) => {
                m.delivery = Some(delivery);
                true
            }
            None => false,
        }
    }

    /// Adds a contact or updates the one with the same name. A request from the same address
    /// becomes part of the contact's conversation; its address is returned.
    pub fn upsert_contact(&mut self, contact: ContactView) -> Option<String> {
        self.generation += 1;
        let name = contact.name.clone();
        match self.contacts.iter_mut().find(|c| c.name == name) {
            Some(c) => *c = contact,
            None => self.contacts.push(contact),
        }
        let address = self.contact(&name).map(|c| c.address.clone())?;
        let i = self
            .requests
            .iter()
            .position(|r| r.address.eq_ignore_ascii_case(&address))?;
        let request = self.requests.remove(i);
        let folded = request.address.clone();
        for mut m in request.messages {
            m.contact = name.clone();
            // The backend's count already covers the request's messages.
            self.insert_message(m, false);
        }
        Some(folded)
    }

    /// Adds a request or replaces the one from the same address.
    pub fn upsert_request(&mut self, mut request: ContactRequest) {
        self.generation += 1;
        request.messages.sort_by_key(|m| m.seq);
        match self
            .requests
            .iter_mut()
            .find(|r| r.address == request.address)
        {
            Some(r) => *r = request,
            None => self.requests.push(request),
        }
    }

    /// Every message in every conversation and request, for searching.
    pub fn all_messages(&self) -> impl Iterator<Item = &MessageView> {
        self.conversations
            .values()
            .flatten()
            .chain(self.requests.iter().flat_map(|r| &r.messages))
    }

    /// Drops the request from `address`.
    pub fn remove_request(&mut self, address: &str) {
        self.generation += 1;
        self.requests.retain(|r| r.address != address);
    }

    /// Marks the conversation with `name` read; returns whether anything was unread.
    pub fn clear_unread(&mut self, name: &str) -> bool {
        self.generation += 1;
        match self.contacts.iter_mut().find(|c| c.name == name) {
            Some(c) if c.unread > 0 => {
                c.unread = 0;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(name: &str, last: Option<u64>) -> ContactView {
        ContactView {
            name: name.into(),
            address: format!("addr-{name}"),
            unread: 0,
            last_activity: last,
        }
    }

    fn msg(id: &str, contact: &str, outgoing: bool, at: u64) -> MessageView {
        MessageView {
            id: id.into(),
            seq: at,
            contact: contact.into(),
            outgoing,
            text: format!("text {id}"),
            sent_at: at,
            received_at: (!outgoing).then_some(at),
            delivery: outgoing.then_some(Delivery::Sending),
        }
    }

    #[test]
    fn contacts_are_newest_first() {
        let mut r = Roster::default();
        let contacts = vec![
            contact("old", Some(10)),
            contact("never", None),
            contact("new", Some(20)),
        ];
        let seen = msg("0", "old", false, 10);
        r.replace("me".into(), contacts, vec![seen], vec![]);
        assert_eq!(r.contact("old").map(|c| c.unread), Some(0));
        let names: Vec<_> = r.contacts().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["new", "old", "never"]);
        r.add_message(msg("1", "never", false, 30));
        assert_eq!(r.contacts()[0].name, "never");
        assert_eq!(r.contacts()[0].unread, 1);
    }

    #[test]
    fn messages_are_ordered_and_deduplicated() {
        let mut r = Roster::default();
        r.replace("me".into(), vec![contact("a", None)], vec![], vec![]);
        assert!(r.add_message(msg("2", "a", false, 20)));
        assert!(!r.add_message(msg("1", "a", true, 10)));
        assert!(!r.add_message(msg("2", "a", false, 20)));
        let a = Peer::Contact("a".into());
        let ids: Vec<_> = r.messages(&a).iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(r.contact("a").map(|c| c.unread), Some(1));
        assert!(r.set_delivery("1", Delivery::Delivered));
        assert!(!r.set_delivery("2", Delivery::Delivered));
        assert_eq!(r.messages(&a)[0].delivery, Some(Delivery::Delivered));
        assert!(r.clear_unread("a"));
        assert!(!r.clear_unread("a"));
    }

    /// Two messages in the same second, or a peer whose clock runs behind, keep the order
    /// in which they were recorded.
    #[test]
    fn messages_follow_their_sequence_not_their_times() {
        let mut r = Roster::default();
        r.replace("me".into(), vec![contact("a", None)], vec![], vec![]);
        let mut reply = msg("r", "a", false, 100);
        reply.seq = 2;
        let mut mine = msg("m", "a", true, 100);
        mine.seq = 1;
        let mut late = msg("l", "a", false, 50);
        late.seq = 3;
        r.add_message(late);
        r.add_message(reply);
        r.add_message(mine.clone());
        let a = Peer::Contact("a".into());
        let ids: Vec<_> = r.messages(&a).iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, ["m", "r", "l"]);
        // Reported again with a later number (a retry), it stays where it was.
        mine.seq = 9;
        r.add_message(mine);
        let ids: Vec<_> = r.messages(&a).iter().map(|m| m.id.clone()).collect();
        assert_eq!(ids, ["m", "r", "l"]);
    }

    #[test]
    fn snapshots_load_in_order_without_duplicates() {
        let mut r = Roster::default();
        let messages = vec![
            msg("3", "a", false, 30),
            msg("1", "a", true, 10),
            msg("2", "a", false, 20),
            msg("1", "a", true, 10),
            msg("9", "addr-z", false, 5),
        ];
        let request = ContactRequest {
            address: "addr-z".into(),
            messages: vec![],
        };
        let before = r.generation();
        r.replace(
            "me".into(),
            vec![contact("a", None)],
            messages,
            vec![request],
        );
        assert!(r.generation() > before);
        let ids: Vec<_> = r
            .messages(&Peer::Contact("a".into()))
            .iter()
            .map(|m| m.id.clone())
            .collect();
        assert_eq!(ids, ["1", "2", "3"]);
        assert_eq!(r.messages(&Peer::Request("addr-z".into())).len(), 1);
        assert_eq!(
            r.contact("a").map(|c| (c.unread, c.last_activity)),
            Some((0, Some(30)))
        );
    }

    #[test]
    fn requests_fold_into_a_new_contact() {
        let mut r = Roster::default();
        let request = ContactRequest {
            address: "addr-z".into(),
            messages: vec![msg("9", "addr-z", false, 5)],
        };
        r.replace("me".into(), vec![], vec![], vec![request]);
        assert_eq!(r.peers(), vec![Peer::Request("addr-z".into())]);
        r.add_message(msg("10", "addr-z", false, 6));
        assert_eq!(r.messages(&Peer::Request("addr-z".into())).len(), 2);
        assert_eq!(r.upsert_contact(contact("z", None)), Some("addr-z".into()));
        assert_eq!(r.peers(), vec![Peer::Contact("z".into())]);
        let folded = r.messages(&Peer::Contact("z".into()));
        assert_eq!(folded.len(), 2);
        assert_eq!(r.contact("z").map(|c| c.unread), Some(0));
        assert!(folded.iter().all(|m| m.contact == "z"));
    }
}
