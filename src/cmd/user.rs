//! `shallot id new|show|passwd` and `shallot contact add`: the user's identity and contacts, kept in
//! the local store (`docs/spec.md` §10.7). No network is used.

use std::path::Path;

use clap::Subcommand;
use shallot_client::store::StoreError;
use shallot_crypto::address::{Address, AddressError};
use shallot_rt::unix_now;
use thiserror::Error;

use super::passphrase::{self, PassphraseError, Unlock};

/// The `id` subcommands.
#[derive(Subcommand, Debug)]
pub enum IdCommand {
    /// Create this user's identity and print its address.
    New {
        /// A name for yourself (kept locally, never sent).
        #[arg(long)]
        name: Option<String>,
    },
    /// Print this user's address.
    Show,
    /// Set or change the store's passphrase (the new one is asked twice, or read from the
    /// file named by SHALLOT_NEW_PASSPHRASE_FILE).
    Passwd {
        /// Remove the passphrase instead: the store is no longer encrypted.
        #[arg(long)]
        remove: bool,
    },
}

/// The `contact` subcommands.
#[derive(Subcommand, Debug)]
pub enum ContactCommand {
    /// Add a contact by address.
    Add {
        /// The name to know them by.
        name: String,
        /// Their address (it starts with shallot1).
        address: String,
    },
    /// List contacts.
    List,
}

/// Why an identity or contact command failed.
#[derive(Debug, Error)]
pub enum UserError {
    /// The store.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A mistyped address.
    #[error("invalid address: {0}")]
    Address(#[from] AddressError),
    /// The store's passphrase.
    #[error(transparent)]
    Passphrase(#[from] PassphraseError),
}

/// Runs an `id` subcommand.
pub fn run_id(unlock: &Unlock, data_dir: &Path, cmd: IdCommand) -> Result<(), UserError> {
    if let IdCommand::Passwd { remove } = cmd {
        println!("{}", passphrase::change(unlock, data_dir, remove)?);
        return Ok(());
    }
    let store = match cmd {
        IdCommand::New { .. } => unlock.create(data_dir)?,
        _ => unlock.open(data_dir)?,
    };
    match cmd {
        IdCommand::Passwd { .. } => {}
        IdCommand::New { name } => {
            let id = store.create_identity(name.as_deref(), unix_now())?;
            println!("{}", Address::new(id.public()));
        }
        IdCommand::Show => println!("{}", Address::new(store.identity()?.public())),
    }
    Ok(())
}

/// Runs a `contact` subcommand.
pub fn run_contact(unlock: &Unlock, data_dir: &Path, cmd: ContactCommand) -> Result<(), UserError> {
    let store = unlock.open(data_dir)?;
    match cmd {
        ContactCommand::Add { name, address } => {
            let address: Address = address.parse()?;
            store.add_contact(&name, &address, unix_now())?;
            println!("added {name}");
        }
        ContactCommand::List => {
            for c in store.contacts()? {
                println!("{}\t{}", c.name, c.address);
            }
        }
    }
    Ok(())
}
