//! The chat UI's forms: adding a contact (a name and an address, the address checked with
//! [`Address`]'s checksum) and naming the sender of an accepted contact request. Each form
//! keeps its fields, which one has the cursor, and the last error to show inline.

use std::str::FromStr;

use shallot_crypto::address::{Address, AddressError, ADDRESS_LEN};
use thiserror::Error;

use super::editor::Editor;
use super::roster::Roster;

/// The longest contact name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a form cannot be submitted yet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FormError {
    /// The name is empty.
    #[error("give them a name")]
    EmptyName,
    /// The name is too long.
    #[error("a name has at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    /// Another contact has this name.
    #[error("you already have a contact named {0}")]
    NameTaken(String),
    /// The address is empty.
    #[error("type or paste their address (it starts with shallot1)")]
    EmptyAddress,
    /// The address is not valid.
    #[error("{0}")]
    Address(#[from] AddressError),
    /// The address is already a contact's.
    #[error("that address is already your contact {0}")]
    AlreadyContact(String),
    /// The address is mine.
    #[error("that is your own address")]
    OwnAddress,
}

/// Checks a new contact name; returns it trimmed.
fn check_name(name: &str, roster: &Roster) -> Result<String, FormError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(FormError::EmptyName);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(FormError::NameTooLong);
    }
    if roster.contact(name).is_some() {
        return Err(FormError::NameTaken(name.to_owned()));
    }
    Ok(name.to_owned())
}

/// Checks a new contact's address; returns it in canonical form.
fn check_address(text: &str, roster: &Roster) -> Result<String, FormError> {
    if text.trim().is_empty() {
        return Err(FormError::EmptyAddress);
    }
    let address = Address::from_str(text)?.to_string();
    if let Some(c) = roster.contact_by_address(&address) {
        return Err(FormError::AlreadyContact(c.name.clone()));
    }
    if roster
        .me()
        .is_some_and(|me| me.eq_ignore_ascii_case(&address))
    {
        return Err(FormError::OwnAddress);
    }
    Ok(address)
}

/// Which field of the add-contact form has the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The name.
    Name,
    /// The address.
    Address,
}

/// The add-contact form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddContactForm {
    /// The name field.
    pub name: Editor,
    /// The address field.
    pub address: Editor,
    /// Where the cursor is.
    pub field: Field,
    /// What is wrong, shown under the fields.
    pub error: Option<FormError>,
}

impl Default for AddContactForm {
    fn default() -> Self {
        AddContactForm {
            name: Editor::new(),
            address: Editor::new(),
            field: Field::Name,
            error: None,
        }
    }
}

impl AddContactForm {
    /// The field with the cursor.
    pub fn field_mut(&mut self) -> &mut Editor {
        match self.field {
            Field::Name => &mut self.name,
            Field::Address => &mut self.address,
        }
    }

    /// Moves the cursor to the other field.
    pub fn switch_field(&mut self) {
        self.field = match self.field {
            Field::Name => Field::Address,
            Field::Address => Field::Name,
        };
    }

    /// Re-checks after an edit. An address is checked as soon as it is long enough to be
    /// one, so a typo in a pasted address shows at once; shorter ones wait for Enter.
    pub fn edited(&mut self, roster: &Roster) {
        self.error = None;
        if self.field == Field::Address && self.address.text().trim().len() >= ADDRESS_LEN {
            self.error = check_address(&self.address.text(), roster).err();
        }
    }

    /// Checks both fields; returns the name and canonical address when both are good, and
    /// otherwise keeps the error and puts the cursor in the field at fault.
    pub fn submit(&mut self, roster: &Roster) -> Option<(String, String)> {
        let name = check_name(&self.name.text(), roster);
        let address = check_address(&self.address.text(), roster);
        match (name, address) {
            (Ok(name), Ok(address)) => Some((name, address)),
            (Err(e), _) => {
                self.field = Field::Name;
                self.error = Some(e);
                None
            }
            (_, Err(e)) => {
                self.field = Field::Address;
                self.error = Some(e);
                None
            }
        }
    }
}

/// The form that names the sender of a contact request being accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptForm {
    /// The requester's address.
    pub address: String,
    /// The name field.
    pub name: Editor,
    /// What is wrong with the name.
    pub error: Option<FormError>,
}

impl AcceptForm {
    /// A form for the request from `address`.
    pub fn new(address: String) -> Self {
        AcceptForm {
            address,
            name: Editor::new(),
            error: None,
        }
    }

    /// Checks the name; returns it when good, and otherwise keeps the error.
    pub fn submit(&mut self, roster: &Roster) -> Option<String> {
        match check_name(&self.name.text(), roster) {
            Ok(name) => Some(name),
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ContactView;
    use shallot_crypto::IdentityKeypair;

    fn address(seed: u64) -> String {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Address::new(IdentityKeypair::generate(&mut rng).public()).to_string()
    }

    fn roster() -> Roster {
        let mut r = Roster::default();
        let alice = ContactView {
            name: "alice".into(),
            address: address(1),
            unread: 0,
            last_activity: None,
        };
        r.replace(address(0), vec![alice], vec![], vec![]);
        r
    }

    fn form(name: &str, addr: &str) -> AddContactForm {
        let mut f = AddContactForm::default();
        f.name.insert_line(name);
        f.address.insert_line(addr);
        f
    }

    #[test]
    fn accepts_a_good_contact_in_canonical_form() {
        let good = address(2);
        let mut f = form(" bob ", &good.to_uppercase());
        assert_eq!(f.submit(&roster()), Some(("bob".into(), good)));
    }

    #[test]
    fn refuses_with_the_reason() {
        let r = roster();
        let mut typo = address(2);
        typo.replace_range(20..21, if &typo[20..21] == "q" { "p" } else { "q" });
        let cases = [
            (form("", &address(2)), FormError::EmptyName),
            (
                form("alice", &address(2)),
                FormError::NameTaken("alice".into()),
            ),
            (form("bob", ""), FormError::EmptyAddress),
            (
                form("bob", &typo),
                FormError::Address(AddressError::BadChecksum),
            ),
            (
                form("bob", &address(1)),
                FormError::AlreadyContact("alice".into()),
            ),
            (form("bob", &address(0)), FormError::OwnAddress),
            (form(&"x".repeat(33), &address(2)), FormError::NameTooLong),
        ];
        for (mut f, want) in cases {
            assert_eq!(f.submit(&r), None);
            assert_eq!(f.error, Some(want));
        }
        let mut f = form("bob", "shallot1short");
        f.submit(&r);
        assert_eq!(f.field, Field::Address);
        assert_eq!(
            f.error.map(|e| e.to_string()),
            Some(format!(
                "an address has {ADDRESS_LEN} characters, this has 13"
            ))
        );
    }

    #[test]
    fn checks_a_full_length_address_while_typing() {
        let r = roster();
        let mut typo = address(3);
        typo.replace_range(30..31, if &typo[30..31] == "q" { "p" } else { "q" });
        let mut f = AddContactForm::default();
        f.switch_field();
        f.field_mut().insert_line(&typo[..10]);
        f.edited(&r);
        assert_eq!(f.error, None);
        f.field_mut().insert_line(&typo[10..]);
        f.edited(&r);
        assert_eq!(f.error, Some(FormError::Address(AddressError::BadChecksum)));
    }

    #[test]
    fn accept_form_needs_a_free_name() {
        let r = roster();
        let mut f = AcceptForm::new(address(5));
        f.name.insert_line("alice");
        assert_eq!(f.submit(&r), None);
        assert_eq!(f.error, Some(FormError::NameTaken("alice".into())));
        f.name.take();
        f.name.insert_line("zed");
        assert_eq!(f.submit(&r), Some("zed".into()));
    }
}
