//! `network.toml`: the authorities a node trusts and the network's parameters
//! (`docs/spec.md` §5.5).
//!
//! ```toml
//! [[authority]]
//! name = "auth1"
//! address = "127.1.0.1:7000"   # HTTP address
//! key = "<hex32 ed25519>"
//!
//! [params]                     # optional; missing values take production defaults
//! voting_interval_secs = 3600
//! ```
//!
//! `test_network = true` under `[params]` (only for networks on loopback or private
//! addresses) allows such addresses and makes every parameter the file leaves out take the
//! test-network preset ([`NetworkParams::test_network_preset`]) instead.
//!
//! Loading checks everything: unknown keys, duplicate names, keys or addresses, keys that are
//! not usable ed25519 points, and parameters that would stop the network from working.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shallot_crypto::hex;
use shallot_crypto::keys::VerifyingKey;
use shallot_proto::dir::lines::parse_key;
use shallot_proto::dir::ConsensusParams;
use thiserror::Error;

/// The longest `scan_interval_secs` allowed: a week, as for the voting interval.
pub const MAX_SCAN_INTERVAL_SECS: u64 = 7 * 86_400;

/// Why a network file could not be used.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// The file could not be read.
    #[error("cannot read network file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("network file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, on one line.
        message: String,
    },
    /// The file parses but its content cannot be used.
    #[error("network file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// One directory authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityInfo {
    /// Its operator-chosen name, for logs and messages.
    pub name: String,
    /// Its HTTP address.
    pub address: SocketAddr,
    /// Its ed25519 signing key.
    pub key: VerifyingKey,
}

impl AuthorityInfo {
    /// The `[[authority]]` table for this authority, ready to paste into a network file.
    pub fn to_toml(&self) -> String {
        format!(
            "[[authority]]\nname = \"{}\"\naddress = \"{}\"\nkey = \"{}\"\n",
            self.name,
            self.address,
            hex::encode(self.key.as_bytes())
        )
    }
}

/// The network's parameters; see `docs/spec.md` §5.5 for each one's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkParams {
    /// Length of a voting period, seconds.
    pub voting_interval_secs: u64,
    /// Length of the rounds an authority holding no valid consensus votes in at its start,
    /// seconds, until the regular schedule's first period (`docs/spec.md` §5.6); it divides
    /// the voting interval. `None` (left out): the voting interval, no initial phase.
    pub initial_voting_interval_secs: Option<u64>,
    /// Descriptors older than this are refused and dropped, seconds.
    pub descriptor_max_age_secs: u64,
    /// Time limit of each step of one reachability probe, seconds.
    pub reachability_timeout_secs: u64,
    /// Continuous Running time needed for Stable, seconds.
    pub stable_min_uptime_secs: u64,
    /// Time since first seen needed for Guard, seconds.
    pub guard_min_known_secs: u64,
    /// Time since first seen needed for Mailbox, seconds: longer than the shared random
    /// value's lead (`docs/spec.md` §5.10), so that a key ground against a known value comes
    /// too late to hold a mailbox.
    pub mailbox_min_known_secs: u64,
    /// Bandwidth needed for Fast, bytes per second.
    pub fast_min_bandwidth: u64,
    /// Bandwidth needed for Guard, bytes per second.
    pub guard_min_bandwidth: u64,
    /// Mailbox epoch length, seconds (copied into the consensus).
    pub epoch_secs: u64,
    /// Descriptor uploads accepted per client network (/24 or /64) per minute.
    pub max_uploads_per_minute: u64,
    /// Time limit for reading a request's headers and body, and for a client's request.
    pub request_timeout_secs: u64,
    /// Descriptors an authority holds in all.
    pub max_descriptors: u64,
    /// Descriptors an authority holds whose address is in one IPv4 /16.
    pub max_descriptors_per_ipv4_16: u64,
    /// Descriptors an authority holds whose address is in one IPv6 /64.
    pub max_descriptors_per_ipv6_64: u64,
    /// Descriptors (of different relays) an authority holds that claim one link key.
    pub max_descriptors_per_link_key: u64,
    /// Descriptors of relays no probe has proven yet that an authority holds from one
    /// uploader's network (/24 or /64).
    pub max_unproven_per_uploader: u64,
    /// A relay no probe has proven for this long (since its descriptor was accepted, or since
    /// its last successful probe) is dropped with its history, seconds.
    pub max_unproven_secs: u64,
    /// Connections an authority holds open at once, in all.
    pub max_connections: u64,
    /// Connections an authority holds open from one client network (/24 or /64).
    pub max_connections_per_network: u64,
    /// Of `max_connections`, those kept for the other authorities (votes, signatures).
    pub reserved_authority_connections: u64,
    /// Of `max_connections`, those kept for consensus fetches.
    pub reserved_fetch_connections: u64,
    /// Of `max_connections`, those kept for relays a probe has proven (their descriptor
    /// uploads and consensus fetches), by their addresses.
    pub reserved_relay_connections: u64,
    /// Reachability probes run at once.
    pub max_concurrent_probes: u64,
    /// Blocks of 514 bytes a relay sends after answering a probe, timed to measure it
    /// (0: no measurement).
    pub probe_transfer_blocks: u64,
    /// How often each authority measures each relay, seconds (`docs/spec.md` §5.7); `None`
    /// (left out): every voting interval. At least the voting interval.
    pub scan_interval_secs: Option<u64>,
    /// The consensus weight of a relay no authority measured: its declared bandwidth, capped
    /// at this many bytes per second.
    pub unmeasured_weight_cap: u64,
    /// The largest share of the total weight one relay may get in path selection, parts per
    /// million (copied into the consensus).
    pub max_relay_share_ppm: u64,
    /// Addresses need not be globally routable: a test network on loopback or private
    /// addresses. Never set it on a real network.
    pub test_network: bool,
}

impl Default for NetworkParams {
    fn default() -> Self {
        NetworkParams {
            voting_interval_secs: 3600,
            initial_voting_interval_secs: None,
            descriptor_max_age_secs: 86400,
            reachability_timeout_secs: 10,
            stable_min_uptime_secs: 86400,
            guard_min_known_secs: 691200,
            mailbox_min_known_secs: 691200,
            fast_min_bandwidth: 102400,
            guard_min_bandwidth: 262144,
            epoch_secs: 86400,
            max_uploads_per_minute: 30,
            request_timeout_secs: 10,
            max_descriptors: 20_000,
            max_descriptors_per_ipv4_16: 64,
            max_descriptors_per_ipv6_64: 8,
            max_descriptors_per_link_key: 2,
            max_unproven_per_uploader: 32,
            max_unproven_secs: 86400,
            max_connections: 1024,
            max_connections_per_network: 32,
            reserved_authority_connections: 32,
            reserved_fetch_connections: 128,
            reserved_relay_connections: 64,
            max_concurrent_probes: 16,
            probe_transfer_blocks: 256,
            scan_interval_secs: None,
            unmeasured_weight_cap: 20_480,
            max_relay_share_ppm: 50_000,
            test_network: false,
        }
    }
}

impl NetworkParams {
    /// The values `test_network = true` gives every parameter the file leaves out: the
    /// test-network relaxations in one place (a vote every 10 s, after rounds of 1 s until
    /// the first regular period when the authorities start without a consensus, every relay
    /// eligible for
    /// every flag at once, quick probes and timeouts, generous upload limits, since every
    /// relay on one machine uploads from one network). Values the
    /// file sets win.
    pub fn test_network_preset() -> Self {
        NetworkParams {
            voting_interval_secs: 10,
            initial_voting_interval_secs: Some(1),
            reachability_timeout_secs: 2,
            stable_min_uptime_secs: 0,
            guard_min_known_secs: 0,
            mailbox_min_known_secs: 0,
            fast_min_bandwidth: 0,
            guard_min_bandwidth: 0,
            max_uploads_per_minute: 600,
            max_unproven_per_uploader: 1000,
            request_timeout_secs: 5,
            test_network: true,
            ..NetworkParams::default()
        }
    }

    /// `[params]` as written, over the production defaults or, with `test_network = true`,
    /// over [`NetworkParams::test_network_preset`].
    fn from_table(given: Option<&toml::Value>) -> Result<Self, String> {
        let Some(given) = given else {
            return Ok(NetworkParams::default());
        };
        let is_test = given.get("test_network") == Some(&toml::Value::Boolean(true));
        if !is_test {
            return given
                .clone()
                .try_into()
                .map_err(|e| one_line(&e.to_string()));
        }
        let mut merged = toml::Table::try_from(NetworkParams::test_network_preset())
            .map_err(|e| one_line(&e.to_string()))?;
        if let Some(t) = given.as_table() {
            merged.extend(t.clone());
        }
        toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| one_line(&e.to_string()))
    }

    fn check(&self) -> Result<(), String> {
        let positive = [
            ("voting_interval_secs", self.voting_interval_secs),
            ("descriptor_max_age_secs", self.descriptor_max_age_secs),
            ("reachability_timeout_secs", self.reachability_timeout_secs),
            ("epoch_secs", self.epoch_secs),
            ("max_uploads_per_minute", self.max_uploads_per_minute),
            ("request_timeout_secs", self.request_timeout_secs),
            ("max_descriptors", self.max_descriptors),
            (
                "max_descriptors_per_ipv4_16",
                self.max_descriptors_per_ipv4_16,
            ),
            (
                "max_descriptors_per_ipv6_64",
                self.max_descriptors_per_ipv6_64,
            ),
            (
                "max_descriptors_per_link_key",
                self.max_descriptors_per_link_key,
            ),
            ("max_unproven_per_uploader", self.max_unproven_per_uploader),
            ("max_unproven_secs", self.max_unproven_secs),
            ("max_connections", self.max_connections),
            (
                "max_connections_per_network",
                self.max_connections_per_network,
            ),
            ("max_concurrent_probes", self.max_concurrent_probes),
            ("max_relay_share_ppm", self.max_relay_share_ppm),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("params.{name} must be at least 1"));
            }
        }
        if self.voting_interval_secs < 2 {
            return Err("params.voting_interval_secs must be at least 2".into());
        }
        if self.voting_interval_secs > 86400 * 7 {
            return Err("params.voting_interval_secs must be at most a week".into());
        }
        // The comparison's second eighth of the interval (T - 3I/8 to T - I/4) is when
        // evidence of an equivocation passes between honest authorities; a peer that stalls
        // each request for the whole timeout must not be able to fill it (docs/spec.md §5.6).
        // Test networks on one machine keep their short intervals: the defence is not
        // promised there.
        if !self.test_network
            && self.request_timeout_secs.saturating_mul(8) >= self.voting_interval_secs
        {
            return Err(format!(
                "params.request_timeout_secs ({}) must be less than voting_interval_secs / 8 \
                 ({} s), or a slow peer could hold back the evidence of an equivocation \
                 (docs/spec.md §5.6); lower it or lengthen the interval",
                self.request_timeout_secs,
                self.voting_interval_secs as f64 / 8.0
            ));
        }
        if let Some(j) = self.initial_voting_interval_secs {
            if j == 0
                || j > self.voting_interval_secs
                || !self.voting_interval_secs.is_multiple_of(j)
            {
                return Err(format!(
                    "params.initial_voting_interval_secs ({j}) must be at least 1 and divide \
                     voting_interval_secs ({}) (docs/spec.md §5.6)",
                    self.voting_interval_secs
                ));
            }
            if !self.test_network && self.request_timeout_secs.saturating_mul(8) >= j {
                return Err(format!(
                    "params.request_timeout_secs ({}) must be less than \
                     initial_voting_interval_secs / 8 ({} s), as for voting_interval_secs \
                     (docs/spec.md §5.6); lower it or lengthen the initial interval",
                    self.request_timeout_secs,
                    j as f64 / 8.0
                ));
            }
        }
        if self.max_relay_share_ppm > shallot_proto::dir::consensus::PPM {
            return Err("params.max_relay_share_ppm must be at most 1000000".into());
        }
        if self.probe_transfer_blocks > u64::from(shallot_proto::dir::probe::MAX_TRANSFER_BLOCKS) {
            return Err(format!(
                "params.probe_transfer_blocks must be at most {}",
                shallot_proto::dir::probe::MAX_TRANSFER_BLOCKS
            ));
        }
        if let Some(s) = self.scan_interval_secs {
            if s < self.voting_interval_secs || s > MAX_SCAN_INTERVAL_SECS {
                return Err(format!(
                    "params.scan_interval_secs ({s}) must be at least voting_interval_secs \
                     ({}) and at most {MAX_SCAN_INTERVAL_SECS} (docs/spec.md §5.7)",
                    self.voting_interval_secs
                ));
            }
        }
        let reserved = self
            .reserved_authority_connections
            .saturating_add(self.reserved_fetch_connections)
            .saturating_add(self.reserved_relay_connections);
        if reserved >= self.max_connections {
            return Err(
                "params.reserved_authority_connections + reserved_fetch_connections + \
                 reserved_relay_connections must be less than max_connections"
                    .into(),
            );
        }
        Ok(())
    }

    /// How often each authority measures each relay, seconds: `scan_interval_secs`, or the
    /// voting interval when it is left out (never less than the voting interval).
    pub fn scan_interval(&self) -> u64 {
        self.scan_interval_secs
            .unwrap_or(self.voting_interval_secs)
            .max(self.voting_interval_secs)
    }

    /// The length of the initial phase's rounds, seconds: `initial_voting_interval_secs`, or
    /// the voting interval when it is left out.
    pub fn initial_interval_secs(&self) -> u64 {
        self.initial_voting_interval_secs
            .unwrap_or(self.voting_interval_secs)
    }

    /// When a node holding no consensus should next ask for one (unix milliseconds, after
    /// `now_ms`): when the authorities may start serving one, as the schedule has it. With a
    /// shorter initial interval, any multiple of it can start a period of the authorities'
    /// initial phase, so that is the next one; otherwise the start of the period computed
    /// already, if still ahead, else of the next one to compute.
    pub fn next_first_consensus_at_ms(&self, now_ms: u64) -> u64 {
        let j = self.initial_interval_secs().max(1) * 1000;
        let i = self.voting_interval_secs.max(1) * 1000;
        if j < i {
            return (now_ms / j + 1) * j;
        }
        let next_ms = self.next_consensus_at(now_ms).saturating_mul(1000);
        let previous_ms = next_ms.saturating_sub(i);
        if previous_ms > now_ms {
            previous_ms
        } else {
            next_ms
        }
    }

    /// When the next consensus is due (unix seconds) at `now_ms` (unix milliseconds): the
    /// start of the first voting period whose consensus is still to be computed, as the
    /// authorities' schedule has it (`docs/spec.md` §5.6). Before a network's first
    /// consensus, this is when its authorities serve one (given relays to list).
    pub fn next_consensus_at(&self, now_ms: u64) -> u64 {
        crate::schedule::Schedule::new(self.voting_interval_secs).next_period(now_ms)
    }

    /// The parameters a consensus carries.
    pub fn consensus_params(&self) -> ConsensusParams {
        ConsensusParams {
            epoch_secs: self.epoch_secs,
            max_share_ppm: self.max_relay_share_ppm,
        }
    }
}

/// A parsed and checked `network.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFile {
    /// The authorities, in file order.
    pub authorities: Vec<AuthorityInfo>,
    /// The parameters.
    pub params: NetworkParams,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    authority: Vec<RawAuthority>,
    #[serde(default)]
    params: NetworkParams,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthority {
    name: String,
    address: String,
    key: String,
}

impl NetworkFile {
    /// A network of these authorities, named `auth0`, `auth1`, … on loopback ports from 7000,
    /// with default parameters: for unit tests, which need the keys and nothing that listens.
    /// Only with the test-only `testing` feature, never in a production build.
    #[cfg(any(test, feature = "testing"))]
    pub fn of_test_authorities(keys: &[VerifyingKey]) -> NetworkFile {
        NetworkFile {
            authorities: keys
                .iter()
                .zip(0u16..)
                .map(|(k, i)| AuthorityInfo {
                    name: format!("auth{i}"),
                    address: ([127, 0, 0, 1], 7000 + i).into(),
                    key: *k,
                })
                .collect(),
            params: NetworkParams::default(),
        }
    }

    /// Reads and checks a network file.
    pub fn load(path: &Path) -> Result<NetworkFile, NetworkError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetworkError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks the text of a network file; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<NetworkFile, NetworkError> {
        let syntax = |message: String| NetworkError::Syntax {
            path: path.to_path_buf(),
            message,
        };
        let mut raw: RawFile =
            toml::from_str(text).map_err(|e| syntax(one_line(&e.to_string())))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| syntax(one_line(&e.to_string())))?;
        raw.params = NetworkParams::from_table(table.get("params")).map_err(syntax)?;
        let invalid = |message: String| NetworkError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if raw.authority.is_empty() {
            return Err(invalid("no [[authority]] entries".into()));
        }
        let mut authorities: Vec<AuthorityInfo> = Vec::new();
        for (i, a) in raw.authority.iter().enumerate() {
            let n = i + 1;
            let plain = |b: u8| b.is_ascii_graphic() && b != b'"' && b != b'\\';
            if a.name.is_empty() || !a.name.bytes().all(plain) {
                return Err(invalid(format!(
                    "authority {n}: name must be non-empty printable ASCII without spaces, \
                     quotes or backslashes"
                )));
            }
            let address: SocketAddr = a.address.parse().map_err(|_| {
                invalid(format!(
                    "authority {}: address `{}` is not ip:port",
                    a.name, a.address
                ))
            })?;
            let key = hex::decode_array::<32>(&a.key)
                .ok()
                .and_then(|b| parse_key(&b))
                .ok_or_else(|| {
                    invalid(format!(
                        "authority {}: key is not 64 lower-case hex digits of a usable ed25519 key",
                        a.name
                    ))
                })?;
            if let Some(dup) = authorities
                .iter()
                .find(|b| b.name == a.name || b.key == key || b.address == address)
            {
                return Err(invalid(format!(
                    "authorities {} and {} repeat a name, key or address",
                    dup.name, a.name
                )));
            }
            authorities.push(AuthorityInfo {
                name: a.name.clone(),
                address,
                key,
            });
        }
        raw.params.check().map_err(invalid)?;
        // An initial interval equal to the voting interval is no initial phase, as when the
        // file leaves it out (and `to_toml` writes a test network's out that way).
        if raw.params.initial_voting_interval_secs == Some(raw.params.voting_interval_secs) {
            raw.params.initial_voting_interval_secs = None;
        }
        Ok(NetworkFile {
            authorities,
            params: raw.params,
        })
    }

    /// The file's text; [`NetworkFile::parse`] reads it back to the same value.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for a in &self.authorities {
            out.push_str(&a.to_toml());
            out.push('\n');
        }
        out.push_str("[params]\n");
        let p = &self.params;
        macro_rules! lines {
            ($($field:ident),* $(,)?) => {
                $(out.push_str(&format!("{} = {}\n", stringify!($field), p.$field));)*
            };
        }
        lines!(voting_interval_secs);
        // Left out, it means "the voting interval" on a production network; a test network's
        // file would take the preset's instead, so there it is written out.
        match (p.initial_voting_interval_secs, p.test_network) {
            (Some(j), _) => out.push_str(&format!("initial_voting_interval_secs = {j}\n")),
            (None, true) => out.push_str(&format!(
                "initial_voting_interval_secs = {}\n",
                p.voting_interval_secs
            )),
            (None, false) => {}
        }
        if let Some(s) = p.scan_interval_secs {
            out.push_str(&format!("scan_interval_secs = {s}\n"));
        }
        lines!(
            descriptor_max_age_secs,
            reachability_timeout_secs,
            stable_min_uptime_secs,
            guard_min_known_secs,
            mailbox_min_known_secs,
            fast_min_bandwidth,
            guard_min_bandwidth,
            epoch_secs,
            max_uploads_per_minute,
            request_timeout_secs,
            max_descriptors,
            max_descriptors_per_ipv4_16,
            max_descriptors_per_ipv6_64,
            max_descriptors_per_link_key,
            max_unproven_per_uploader,
            max_unproven_secs,
            max_connections,
            max_connections_per_network,
            reserved_authority_connections,
            reserved_fetch_connections,
            reserved_relay_connections,
            max_concurrent_probes,
            probe_transfer_blocks,
            unmeasured_weight_cap,
            max_relay_share_ppm,
            test_network,
        );
        out
    }

    /// The authority with this key, if configured.
    pub fn authority(&self, key: &VerifyingKey) -> Option<&AuthorityInfo> {
        self.authorities.iter().find(|a| &a.key == key)
    }

    /// Every configured authority key.
    pub fn keys(&self) -> Vec<VerifyingKey> {
        self.authorities.iter().map(|a| a.key).collect()
    }

    /// How many authorities make a majority: more than half of those configured.
    pub fn majority(&self) -> usize {
        self.authorities.len() / 2 + 1
    }
}

/// A unix time as `HH:MM:SS UTC`, for messages that say when something is due.
pub fn clock_utc(unix_secs: u64) -> String {
    let s = unix_secs % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shallot_crypto::keys::IdentityKeypair;

    fn key_hex() -> String {
        hex::encode(
            IdentityKeypair::generate(&mut rand::thread_rng())
                .public()
                .as_bytes(),
        )
    }

    fn parse(text: &str) -> Result<NetworkFile, NetworkError> {
        NetworkFile::parse(text, Path::new("network.toml"))
    }

    #[test]
    fn parses_defaults_and_round_trips() {
        let text = format!(
            "[[authority]]\nname = \"a\"\naddress = \"127.1.0.1:7000\"\nkey = \"{}\"\n\n\
             [[authority]]\nname = \"b\"\naddress = \"127.2.0.1:7000\"\nkey = \"{}\"\n\n\
             [params]\nvoting_interval_secs = 400\n",
            key_hex(),
            key_hex()
        );
        let net = parse(&text).unwrap();
        assert_eq!(net.authorities.len(), 2);
        assert_eq!(net.params.voting_interval_secs, 400);
        assert_eq!(net.params.epoch_secs, 86400);
        assert!(!net.params.test_network);
        assert_eq!(net.majority(), 2);
        assert_eq!(parse(&net.to_toml()).unwrap(), net);
        let mut test = net.clone();
        test.params.test_network = true;
        test.params.max_descriptors = 7;
        assert!(test.to_toml().contains("test_network = true\n"));
        assert_eq!(parse(&test.to_toml()).unwrap(), test);
        // The scan interval: the voting interval when left out, written out when set.
        assert_eq!(net.params.scan_interval(), 400);
        assert!(!net.to_toml().contains("scan_interval_secs"));
        let mut paced = test.clone();
        paced.params.scan_interval_secs = Some(3600);
        assert_eq!(paced.params.scan_interval(), 3600);
        assert_eq!(parse(&paced.to_toml()).unwrap(), paced);
        assert_eq!(net.authority(&net.authorities[1].key).unwrap().name, "b");
    }

    #[test]
    fn due_times_are_on_the_voting_schedule() {
        let p = NetworkParams {
            voting_interval_secs: 60,
            ..NetworkParams::default()
        };
        // At 12:00:10 the 12:01:00 consensus is still to be computed (at 12:00:45).
        assert_eq!(p.next_consensus_at(43_210_000), 43_260);
        // At 12:00:50 it is too late for 12:01:00: the next is 12:02:00.
        assert_eq!(p.next_consensus_at(43_250_000), 43_320);
        assert_eq!(clock_utc(43_260), "12:01:00 UTC");
        // Without an initial phase, a node holding no consensus asks at the start of the
        // period computed already (at 12:00:50, 12:01:00), else of the next to compute.
        assert_eq!(p.next_first_consensus_at_ms(43_250_000), 43_260_000);
        assert_eq!(p.next_first_consensus_at_ms(43_210_000), 43_260_000);
        // With one, at every multiple of the initial interval.
        let q = NetworkParams {
            voting_interval_secs: 3,
            initial_voting_interval_secs: Some(1),
            ..NetworkParams::default()
        };
        assert_eq!(q.next_first_consensus_at_ms(43_250_000), 43_251_000);
        assert_eq!(q.next_first_consensus_at_ms(43_250_999), 43_251_000);
        assert_eq!(
            (q.initial_interval_secs(), p.initial_interval_secs()),
            (1, 60)
        );
        assert_eq!(clock_utc(86_399), "23:59:59 UTC");
    }

    #[test]
    fn test_network_is_a_preset_that_explicit_values_override() {
        let head = format!(
            "[[authority]]\nname = \"a\"\naddress = \"127.1.0.1:7000\"\nkey = \"{}\"\n",
            key_hex()
        );
        let preset = parse(&format!("{head}[params]\ntest_network = true\n")).unwrap();
        assert_eq!(preset.params, NetworkParams::test_network_preset());
        assert_eq!(preset.params.guard_min_known_secs, 0);
        assert_eq!(preset.params.mailbox_min_known_secs, 0);
        assert_eq!(preset.params.voting_interval_secs, 10);
        assert_eq!(preset.params.initial_voting_interval_secs, Some(1));
        assert_eq!(
            NetworkParams::default().initial_voting_interval_secs,
            None,
            "the production preset has no initial phase"
        );
        let tuned = parse(&format!(
            "{head}[params]\nvoting_interval_secs = 3\ntest_network = true\n\
             guard_min_known_secs = 60\n"
        ))
        .unwrap();
        assert_eq!(tuned.params.voting_interval_secs, 3);
        assert_eq!(tuned.params.guard_min_known_secs, 60);
        assert_eq!(tuned.params.stable_min_uptime_secs, 0);
        assert_eq!(tuned.params.initial_voting_interval_secs, Some(1));
        assert_eq!(parse(&tuned.to_toml()).unwrap(), tuned);
        // Set to the voting interval, there is no initial phase.
        let off = parse(&format!(
            "{head}[params]\nvoting_interval_secs = 3\ntest_network = true\n\
             initial_voting_interval_secs = 3\n"
        ))
        .unwrap();
        assert_eq!(off.params.initial_voting_interval_secs, None);
        assert_eq!(parse(&off.to_toml()).unwrap(), off);
        // Without the preset, production defaults.
        let real = parse(&format!("{head}[params]\nvoting_interval_secs = 300\n")).unwrap();
        assert_eq!(real.params.guard_min_known_secs, 691_200);
        // Unknown keys are still refused under the preset.
        let e = parse(&format!(
            "{head}[params]\ntest_network = true\nvoting = 3\n"
        ));
        assert!(e.unwrap_err().to_string().contains("voting"));
    }

    #[test]
    fn refuses_bad_files_with_clear_errors() {
        let k = key_hex();
        let entry = |name: &str, addr: &str, key: &str| {
            format!("[[authority]]\nname = \"{name}\"\naddress = \"{addr}\"\nkey = \"{key}\"\n")
        };
        // Just under the limit, and the test-network preset: accepted.
        let ok = entry("a", "127.0.0.1:1", &k)
            + "[params]\nvoting_interval_secs = 81\nrequest_timeout_secs = 10\n";
        assert!(parse(&ok).is_ok());
        let test = entry("a", "127.0.0.1:1", &k) + "[params]\ntest_network = true\n";
        assert!(parse(&test).is_ok());
        let initial = entry("a", "127.0.0.1:1", &k)
            + "[params]\nvoting_interval_secs = 3600\ninitial_voting_interval_secs = 600\n";
        assert_eq!(
            parse(&initial).unwrap().params.initial_voting_interval_secs,
            Some(600)
        );
        let cases = [
            (String::new(), "no [[authority]]"),
            (entry("a", "nowhere", &k), "not ip:port"),
            (entry("a", "127.0.0.1:1", "00"), "key is not"),
            (
                entry("a", "127.0.0.1:1", &k) + &entry("a", "127.0.0.2:1", &key_hex()),
                "repeat",
            ),
            (
                entry("a", "127.0.0.1:1", &k) + "[params]\nvoting_interval_secs = 1\n",
                "voting_interval_secs",
            ),
            (
                entry("a", "127.0.0.1:1", &k) + "[params]\nbogus = 1\n",
                "unknown field",
            ),
            (
                entry("a", "127.0.0.1:1", &k) + "[params]\nmax_descriptors = 0\n",
                "max_descriptors",
            ),
            (
                entry("a", "127.0.0.1:1", &k) + "[params]\nreserved_fetch_connections = 5000\n",
                "less than max_connections",
            ),
            (
                entry("a", "127.0.0.1:1", &k)
                    + "[params]\nmax_connections = 200\nreserved_relay_connections = 40\n",
                "reserved_relay_connections must be less than max_connections",
            ),
            (
                entry("a", "127.0.0.1:1", &k) + "[params]\nmax_unproven_per_uploader = 0\n",
                "max_unproven_per_uploader",
            ),
            (
                entry("a", "127.0.0.1:1", &k) + "[params]\nmax_unproven_secs = 0\n",
                "max_unproven_secs",
            ),
            (
                entry("a", "127.0.0.1:1", &k)
                    + "[params]\nvoting_interval_secs = 600\nscan_interval_secs = 599\n",
                "params.scan_interval_secs (599) must be at least voting_interval_secs (600)",
            ),
            (
                entry("a", "127.0.0.1:1", &k) + "[params]\nscan_interval_secs = 604801\n",
                "at most 604800",
            ),
            ("[[authority]]\nname = \"a\"\n".to_string(), "missing field"),
            // Issue 10, finding I: a request may not take an eighth of the interval.
            (
                entry("a", "127.0.0.1:1", &k)
                    + "[params]\nvoting_interval_secs = 80\nrequest_timeout_secs = 10\n",
                "params.request_timeout_secs",
            ),
            (
                entry("a", "127.0.0.1:1", &k) + "[params]\nvoting_interval_secs = 60\n",
                "voting_interval_secs / 8",
            ),
            (
                entry("a", "127.0.0.1:1", &k)
                    + "[params]\ntest_network = true\ninitial_voting_interval_secs = 0\n",
                "initial_voting_interval_secs (0) must be at least 1 and divide",
            ),
            (
                entry("a", "127.0.0.1:1", &k)
                    + "[params]\ntest_network = true\ninitial_voting_interval_secs = 3\n",
                "must be at least 1 and divide voting_interval_secs (10)",
            ),
            (
                entry("a", "127.0.0.1:1", &k)
                    + "[params]\ntest_network = true\ninitial_voting_interval_secs = 20\n",
                "initial_voting_interval_secs (20)",
            ),
            (
                entry("a", "127.0.0.1:1", &k)
                    + "[params]\nvoting_interval_secs = 3600\ninitial_voting_interval_secs = 60\n",
                "initial_voting_interval_secs / 8",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }
}
