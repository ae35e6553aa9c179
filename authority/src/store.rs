//! An authority's files (`docs/spec.md` §5.8): its key, the accepted descriptors, the relay
//! history and the consensuses it holds, each written atomically with mode 0600 under a 0700
//! directory.
//!
//! ```text
//! <data-dir>/authority.key                    ed25519 identity (key file)
//! <data-dir>/state/descriptors/<fp>.txt       each relay's newest accepted descriptor
//! <data-dir>/state/relays                     known-since and running-since times
//! <data-dir>/state/consensus-<valid-after>.txt each consensus held (at most 3), with its signatures
//! <data-dir>/state/reveals                     its shared-random reveals, by round
//! ```
//!
//! This module only moves text; what the text means is checked by the caller on load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shallot_crypto::keyfile::{ensure_private_dir, write_private_file, KeyFileError};
use shallot_crypto::keys::RelayId;
use shallot_proto::dir::lines::{LineReader, LineWriter};
use shallot_proto::dir::DocError;

/// The key file's name inside the data directory.
pub const KEY_FILE: &str = "authority.key";

/// Relay history kept across restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayHistory {
    /// When a probe first proved the relay (its link key, onion key and identity), unix
    /// seconds: the relay's age counts from here, not from its first descriptor. `None` until
    /// a probe proved it.
    pub known_since: Option<u64>,
    /// Since when probes have succeeded without a failure, if they do.
    pub running_since: Option<u64>,
}

/// The authority's state directory.
#[derive(Debug, Clone)]
pub struct Store {
    state: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the state directory under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, KeyFileError> {
        let state = data_dir.join("state");
        ensure_private_dir(&state.join("descriptors"))?;
        Ok(Store { state })
    }

    fn descriptor_path(&self, id: &RelayId) -> PathBuf {
        self.state.join("descriptors").join(format!("{id}.txt"))
    }

    /// Saves a relay's descriptor text.
    pub fn save_descriptor(&self, id: &RelayId, text: &str) -> Result<(), KeyFileError> {
        write_private_file(&self.descriptor_path(id), text.as_bytes())
    }

    /// Deletes a relay's descriptor (expired).
    pub fn remove_descriptor(&self, id: &RelayId) {
        let _ = std::fs::remove_file(self.descriptor_path(id));
    }

    /// Every saved descriptor, by the fingerprint its file is named after. Files whose name
    /// is not a fingerprint, or that cannot be read as text, are reported and skipped.
    pub fn load_descriptors(&self) -> Vec<(RelayId, String)> {
        let dir = self.state.join("descriptors");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(id) = name
                .strip_suffix(".txt")
                .and_then(|h| RelayId::from_hex(h).ok())
            else {
                tracing::warn!("ignoring unexpected file {}", entry.path().display());
                continue;
            };
            match std::fs::read_to_string(entry.path()) {
                Ok(text) => out.push((id, text)),
                Err(e) => tracing::warn!("cannot read {}: {e}", entry.path().display()),
            }
        }
        out
    }

    /// Saves the relay history.
    pub fn save_relays(
        &self,
        relays: &BTreeMap<RelayId, RelayHistory>,
    ) -> Result<(), KeyFileError> {
        write_private_file(&self.state.join("relays"), encode_relays(relays).as_bytes())
    }

    /// Loads the relay history (empty if there is none or it is unreadable, with a warning).
    pub fn load_relays(&self) -> BTreeMap<RelayId, RelayHistory> {
        let path = self.state.join("relays");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return BTreeMap::new();
        };
        decode_relays(&text).unwrap_or_else(|e| {
            tracing::warn!("ignoring {}: {e}", path.display());
            BTreeMap::new()
        })
    }

    /// Saves this authority's shared-random reveals (secret until revealed: mode 0600, like
    /// every file here). Called before the vote that commits to the newest one is sent, so a
    /// restart cannot lose a reveal the network is waiting for.
    pub fn save_reveals(&self, reveals: &BTreeMap<u64, [u8; 32]>) -> Result<(), KeyFileError> {
        write_private_file(
            &self.state.join("reveals"),
            encode_reveals(reveals).as_bytes(),
        )
    }

    /// Loads the saved reveals (none if there are none or the file is unreadable, with a
    /// warning).
    pub fn load_reveals(&self) -> BTreeMap<u64, [u8; 32]> {
        let path = self.state.join("reveals");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return BTreeMap::new();
        };
        decode_reveals(&text).unwrap_or_else(|e| {
            tracing::warn!("ignoring {}: {e}", path.display());
            BTreeMap::new()
        })
    }

    /// Saves the text of the consensus valid after `valid_after`, then removes the saved
    /// consensuses of every other period not in `kept`: all of them are saved, not only the
    /// newest, so that an authority restarted while too few have signed the newest still
    /// serves the previous one (`docs/spec.md` §5.6), as it did before the restart.
    pub fn save_consensus(
        &self,
        valid_after: u64,
        text: &[u8],
        kept: &[u64],
    ) -> Result<(), KeyFileError> {
        write_private_file(&self.consensus_path(valid_after), text)?;
        for (period, path) in self.saved_consensuses() {
            if period != Some(valid_after) && !period.is_some_and(|p| kept.contains(&p)) {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Every saved consensus text, oldest period first (and `consensus.txt`, where versions
    /// before one file per period kept the newest, first of all). A file that cannot be read
    /// as text is reported and skipped.
    pub fn load_consensuses(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, path) in self.saved_consensuses() {
            match std::fs::read_to_string(&path) {
                Ok(text) => out.push(text),
                Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
            }
        }
        out
    }

    fn consensus_path(&self, valid_after: u64) -> PathBuf {
        self.state.join(format!("consensus-{valid_after}.txt"))
    }

    /// The saved consensus files with the period each names (`None` for the old
    /// `consensus.txt`), sorted by period.
    fn saved_consensuses(&self) -> Vec<(Option<u64>, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.state) else {
            return Vec::new();
        };
        let mut out: Vec<(Option<u64>, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                let period = match name {
                    "consensus.txt" => None,
                    _ => Some(
                        name.strip_prefix("consensus-")?
                            .strip_suffix(".txt")?
                            .parse::<u64>()
                            .ok()?,
                    ),
                };
                Some((period, e.path()))
            })
            .collect();
        out.sort();
        out
    }
}

/// `shallot-authority-reveals 1` then `reveal <round> <hex32>` per round, ascending.
fn encode_reveals(reveals: &BTreeMap<u64, [u8; 32]>) -> String {
    let mut w = LineWriter::new();
    w.line("shallot-authority-reveals", [1]);
    for (round, r) in reveals {
        w.line(
            "reveal",
            [round.to_string(), shallot_crypto::hex::encode(r)],
        );
    }
    w.finish()
}

fn decode_reveals(text: &str) -> Result<BTreeMap<u64, [u8; 32]>, DocError> {
    let mut r = LineReader::new(text)?;
    let mut a = r.expect("shallot-authority-reveals")?;
    if a.word("version")? != "1" {
        return Err(a.error("unsupported version"));
    }
    a.end()?;
    let mut out = BTreeMap::new();
    while let Some(mut a) = r.maybe("reveal")? {
        let round = a.u64("round")?;
        let reveal = a.hex32("reveal")?;
        a.end()?;
        if out.insert(round, reveal).is_some() {
            return Err(DocError::Malformed {
                line: r.line_no(),
                reason: "a round is listed twice".into(),
            });
        }
    }
    r.finish()?;
    Ok(out)
}

/// `shallot-authority-relays 2` then `relay <fp> <known-since or -> <running-since or ->`
/// per relay, sorted by fingerprint.
fn encode_relays(relays: &BTreeMap<RelayId, RelayHistory>) -> String {
    let time = |t: Option<u64>| t.map_or_else(|| "-".to_string(), |s| s.to_string());
    let mut w = LineWriter::new();
    w.line("shallot-authority-relays", [2]);
    for (id, h) in relays {
        w.line(
            "relay",
            [id.to_string(), time(h.known_since), time(h.running_since)],
        );
    }
    w.finish()
}

/// Reads version 2, and version 1 (`relay <fp> <first-seen> <running-since or ->`), whose
/// first-seen time proved nothing: a relay running then was proven since it started running.
fn decode_relays(text: &str) -> Result<BTreeMap<RelayId, RelayHistory>, DocError> {
    let mut r = LineReader::new(text)?;
    let mut a = r.expect("shallot-authority-relays")?;
    let version = a.word("version")?;
    if version != "1" && version != "2" {
        return Err(a.error("unsupported version"));
    }
    let v1 = version == "1";
    a.end()?;
    let mut out = BTreeMap::new();
    while let Some(mut a) = r.maybe("relay")? {
        let id = a.relay_id("fingerprint")?;
        let mut time = |what: &str| -> Result<Option<u64>, DocError> {
            match a.word(what)? {
                "-" => Ok(None),
                w => shallot_proto::dir::lines::parse_u64(w)
                    .map(Some)
                    .ok_or_else(|| a.error(format!("{what} is not an integer or -"))),
            }
        };
        let history = if v1 {
            let _first_seen = time("first-seen")?;
            let running_since = time("running-since")?;
            RelayHistory {
                known_since: running_since,
                running_since,
            }
        } else {
            RelayHistory {
                known_since: time("known-since")?,
                running_since: time("running-since")?,
            }
        };
        a.end()?;
        if out.insert(id, history).is_some() {
            return Err(a_dup(&r));
        }
    }
    r.finish()?;
    Ok(out)
}

fn a_dup(r: &LineReader<'_>) -> DocError {
    DocError::Malformed {
        line: r.line_no(),
        reason: "a relay is listed twice".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own for one test ([`shallot_rt::scratch`]).
    fn scratch(name: &str) -> std::path::PathBuf {
        shallot_rt::scratch::path(name)
    }

    /// Every consensus held is saved and loaded, oldest first; a save removes the files of
    /// periods no longer held, the old single `consensus.txt` among them.
    #[test]
    fn consensuses_held_survive_a_restart() {
        let dir = scratch("shallot-consensuses");
        let store = Store::open(&dir).unwrap();
        assert!(store.load_consensuses().is_empty());
        std::fs::write(dir.join("state/consensus.txt"), "old layout").unwrap();
        std::fs::write(dir.join("state/consensus-x.txt"), "not a period").unwrap();
        store.save_consensus(20, b"twenty", &[10, 20]).unwrap();
        store.save_consensus(10, b"ten", &[10, 20]).unwrap();
        assert_eq!(
            Store::open(&dir).unwrap().load_consensuses(),
            ["ten", "twenty"],
            "both held periods saved; the old file removed; a stray name ignored"
        );
        store.save_consensus(30, b"thirty", &[20, 30]).unwrap();
        store
            .save_consensus(20, b"twenty, signed", &[20, 30])
            .unwrap();
        assert_eq!(store.load_consensuses(), ["twenty, signed", "thirty"]);
        assert!(dir.join("state/consensus-x.txt").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Finding J: reveals survive a restart, and a damaged file is refused.
    #[test]
    fn reveals_survive_a_restart() {
        let dir = scratch("shallot-reveals");
        let store = Store::open(&dir).unwrap();
        assert!(store.load_reveals().is_empty());
        let reveals: BTreeMap<u64, [u8; 32]> = [(10, [1; 32]), (20, [2; 32])].into();
        store.save_reveals(&reveals).unwrap();
        assert_eq!(Store::open(&dir).unwrap().load_reveals(), reveals);
        let text = encode_reveals(&reveals);
        assert!(decode_reveals(&text.replace("reveal 20", "reveal 10")).is_err());
        assert!(decode_reveals(&text.replace(" 10 ", " x ")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A truncated or corrupt `state/reveals` file is refused with an error naming the line,
    /// never a panic, and loading it leaves the authority without reveals (it then reveals
    /// nothing for those rounds, and the others' values stand) rather than stopping it.
    #[test]
    fn a_corrupt_reveals_file_is_refused_not_panicked_on() {
        let reveals: BTreeMap<u64, [u8; 32]> = [(10, [0xab; 32]), (20, [0xcd; 32])].into();
        let text = encode_reveals(&reveals);
        // Cut anywhere: a whole-line prefix (with its newline) still reads; anything cut
        // inside a line is an error naming the line, never a panic.
        for cut in 0..text.len() {
            match decode_reveals(&text[..cut]) {
                Ok(got) => assert!(got.iter().all(|(k, v)| reveals.get(k) == Some(v))),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains("line"), "cut at {cut}: {msg}");
                }
            }
        }
        let err = decode_reveals(&text[..text.len() - 10]).unwrap_err();
        assert!(
            matches!(err, DocError::Malformed { line: 3, .. }),
            "truncated in the last reveal: {err}"
        );
        for bad in [
            "",
            "shallot-authority-reveals 2\n",
            "shallot-authority-reveals 1\nreveal 10\n",
            "shallot-authority-reveals 1\nreveal ten 00\n",
            "shallot-authority-reveals 1\nreveal 10 abab\n",
            "shallot-authority-reveals 1\nreveal 10 ab ab\n",
            "shallot-authority-reveals 1\nsomething else\n",
            "\u{0}\u{ff}\u{1f600}",
        ] {
            assert!(decode_reveals(bad).is_err(), "{bad:?} accepted");
        }
        // On disk: truncated, and not text at all.
        let dir = scratch("shallot-reveals-bad");
        let store = Store::open(&dir).unwrap();
        let path = dir.join("state").join("reveals");
        std::fs::write(&path, &text.as_bytes()[..text.len() - 10]).unwrap();
        assert!(store.load_reveals().is_empty());
        std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
        assert!(store.load_reveals().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    mod garbage {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(5_000))]

            /// Any text: an error or reveals, never a panic.
            #[test]
            fn any_text_decodes_or_errs(text in "\\PC{0,300}") {
                let _ = decode_reveals(&text);
            }

            /// A valid file with one byte replaced, cut, or garbage appended: the same.
            #[test]
            fn damaged_files_decode_or_err(
                reveals in proptest::collection::btree_map(any::<u64>(), any::<[u8; 32]>(), 0..6),
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
                tail in "\\PC{0,40}",
            ) {
                let text = encode_reveals(&reveals);
                prop_assert_eq!(decode_reveals(&text).unwrap(), reveals);
                let mut bytes = text.clone().into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = byte;
                if let Ok(damaged) = String::from_utf8(bytes) {
                    let _ = decode_reveals(&damaged);
                }
                let _ = decode_reveals(&text[..at.index(text.len() + 1)]);
                let _ = decode_reveals(&(text + &tail));
            }
        }
    }

    #[test]
    fn relay_history_round_trips() {
        let mut m = BTreeMap::new();
        m.insert(
            RelayId([1; 20]),
            RelayHistory {
                known_since: Some(5),
                running_since: None,
            },
        );
        m.insert(
            RelayId([2; 20]),
            RelayHistory {
                known_since: Some(6),
                running_since: Some(7),
            },
        );
        m.insert(RelayId([3; 20]), RelayHistory::default());
        let text = encode_relays(&m);
        assert_eq!(decode_relays(&text).unwrap(), m);
        assert!(decode_relays(&text.replace(" 7\n", " 07\n")).is_err());
        assert!(decode_relays("shallot-authority-relays 2\n")
            .unwrap()
            .is_empty());
        assert!(decode_relays("shallot-authority-relays 3\n").is_err());
        // Version 1 (first-seen, running-since): only a running relay keeps an age, counted
        // from when it started running.
        let fp = |b: u8| RelayId([b; 20]).to_string();
        let v1 = format!(
            "shallot-authority-relays 1\nrelay {} 5 -\nrelay {} 6 7\n",
            fp(1),
            fp(2)
        );
        let old = decode_relays(&v1).unwrap();
        assert_eq!(old[&RelayId([1; 20])], RelayHistory::default());
        assert_eq!(
            old[&RelayId([2; 20])],
            RelayHistory {
                known_since: Some(7),
                running_since: Some(7),
            }
        );
    }
}
