//! The passphrase of the user's store (`README.md`, "Your store's passphrase"): read from the
//! file named by `SHALLOT_PASSPHRASE_FILE` for scripts, else asked on the terminal without
//! echo; never asked under `--no-passphrase`, which makes new stores unencrypted (for test
//! networks). A store that is not encrypted (made with `--no-passphrase`, or before stores
//! were encrypted) opens without one until `shallot id passwd` sets one.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use shallot_client::store::at_rest::{at_rest, AtRest};
use shallot_client::store::{Store, StoreError, DB_FILE};
use thiserror::Error;
use zeroize::Zeroizing;

/// The environment variable naming a file that holds the passphrase (its first line).
pub const PASSPHRASE_FILE: &str = "SHALLOT_PASSPHRASE_FILE";
/// The environment variable naming a file that holds the new passphrase for `id passwd`.
pub const NEW_PASSPHRASE_FILE: &str = "SHALLOT_NEW_PASSPHRASE_FILE";

/// Why the store could not be unlocked.
#[derive(Debug, Error)]
pub enum PassphraseError {
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--no-passphrase` on an encrypted store.
    #[error("the store in {0} is encrypted; --no-passphrase cannot open it")]
    Encrypted(PathBuf),
    /// There is no terminal to ask on and no passphrase file.
    #[error("no terminal to ask for the passphrase on; set {PASSPHRASE_FILE} to a file holding it, or give --no-passphrase for a store without one")]
    NoTerminal,
    /// The passphrase file could not be read.
    #[error("cannot read the passphrase file {0}: {1}")]
    File(PathBuf, #[source] std::io::Error),
    /// Reading from the terminal failed.
    #[error("reading the passphrase: {0}")]
    Terminal(#[source] std::io::Error),
    /// An empty passphrase.
    #[error("the passphrase is empty; give --no-passphrase for a store without one")]
    Empty,
    /// The two entries differ.
    #[error("the passphrases differ; nothing was changed")]
    Mismatch,
}

/// How a user command unlocks the store: with a passphrase (asked, or read from a file), or
/// explicitly without one.
#[derive(Debug, Clone, Copy)]
pub struct Unlock {
    /// `--no-passphrase`: never ask; new stores are not encrypted.
    pub no_passphrase: bool,
}

impl Unlock {
    /// Opens the store in `dir`, asking for its passphrase if it is encrypted.
    pub fn open(&self, dir: &Path) -> Result<Store, PassphraseError> {
        match at_rest(&dir.join(DB_FILE))? {
            AtRest::Encrypted(_) if self.no_passphrase => {
                Err(PassphraseError::Encrypted(dir.to_path_buf()))
            }
            AtRest::Encrypted(_) => {
                let p = passphrase(
                    PASSPHRASE_FILE,
                    &format!("Passphrase for {}: ", dir.display()),
                    false,
                )?;
                Ok(Store::open_with(dir, Some(p.as_bytes()))?)
            }
            AtRest::New | AtRest::Plain => Ok(Store::open(dir)?),
        }
    }

    /// Opens the store in `dir` for `id new`: a new one is encrypted under a passphrase
    /// chosen now, unless `--no-passphrase`.
    pub fn create(&self, dir: &Path) -> Result<Store, PassphraseError> {
        if self.no_passphrase || at_rest(&dir.join(DB_FILE))? != AtRest::New {
            return self.open(dir);
        }
        let p = passphrase(PASSPHRASE_FILE, "New passphrase for your store: ", true)?;
        Ok(Store::open_with(dir, Some(p.as_bytes()))?)
    }
}

/// `shallot id passwd`: sets, changes or (with `remove`) removes the store's passphrase.
pub fn change(unlock: &Unlock, dir: &Path, remove: bool) -> Result<&'static str, PassphraseError> {
    let store = unlock.open(dir)?;
    if remove {
        store.change_passphrase(None)?;
        return Ok("the store is no longer encrypted");
    }
    let new = passphrase(NEW_PASSPHRASE_FILE, "New passphrase: ", true)?;
    store.change_passphrase(Some(new.as_bytes()))?;
    Ok("passphrase changed")
}

/// A passphrase: the first line of the file named by `$var`, else asked on the terminal
/// (twice when `confirm`).
fn passphrase(
    var: &str,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<String>, PassphraseError> {
    let p = if let Some(file) = std::env::var_os(var) {
        let file = PathBuf::from(file);
        let text = Zeroizing::new(
            std::fs::read_to_string(&file).map_err(|e| PassphraseError::File(file.clone(), e))?,
        );
        Zeroizing::new(text.lines().next().unwrap_or("").to_string())
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(PassphraseError::NoTerminal);
        }
        let first =
            Zeroizing::new(rpassword::prompt_password(prompt).map_err(PassphraseError::Terminal)?);
        if confirm {
            let again = Zeroizing::new(
                rpassword::prompt_password("Again: ").map_err(PassphraseError::Terminal)?,
            );
            if *first != *again {
                return Err(PassphraseError::Mismatch);
            }
        }
        first
    };
    if p.is_empty() {
        return Err(PassphraseError::Empty);
    }
    Ok(p)
}
