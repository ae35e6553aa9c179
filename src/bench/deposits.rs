//! Mailbox relay figures (`README.md`, "Performance"): deposits acknowledged per second
//! through ONE mailbox relay of the test network (`docs/spec.md` §9.3, §9.4), beside what
//! could limit them, measured in the same run: the raw fsync rate of the disk the relay's
//! store is on, the store's average batch (deposits per commit of its group commit), and the
//! CPU the machine, the process and the store threads used.
//!
//! Many depositors (as many clients would be), each on a 3-hop circuit built beforehand and
//! ending at the relay, keep depositing envelopes of the size a short text message seals to
//! into a few mailboxes; a deposit counts once the relay has answered Ok, which it does only
//! after the commit that put it on disk. A client deposits on a fresh circuit each time; here
//! the circuits are built first, so that the figure is the relay's, not the clients' circuit
//! building (`shallot bench --only messaging` measures that). It runs on a test network of its
//! own whose mailbox relays have their per-circuit request rate lifted (a real depositor sends
//! one request per circuit) besides, as for the messaging figures, their deposit rate limits
//! (`super::messaging::unlimited_deposits`).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shallot_client::e2e::wire::BUCKETS;
use shallot_client::mailbox::MailboxLink;
use shallot_crypto::keys::RelayId;
use shallot_net::circmgr::{CircuitConfig, CircuitManager};
use shallot_net::netdir::NetDir;
use shallot_proto::mailbox::MailboxId;
use shallot_relay::mailbox::admission::CircuitLimits;

use super::cpu::{cpu_time, machine_busy, process_stat, threads_named};
use super::{BenchError, Figure};
use crate::testnet::Testnet;

/// Bytes of the envelope of a short text message: 175 bytes of sealing around the smallest
/// padded size (`docs/spec.md` §10.6: 415, 1,199, 4,271 or 16,559 bytes).
pub const TEXT_ENVELOPE_LEN: usize = 175 + BUCKETS[0];

/// Clients depositing, each with its own guards.
const CLIENTS: usize = 8;
/// Circuits (depositors) per client, each with one deposit in flight at a time: enough to
/// bring the run near the machine's CPU limit (which the depositors share with the relays),
/// so that the figure is not bounded by the depositors' round trips. At 8 (64 depositors)
/// neither limit was reached (store committing 64-74 % of the time, cores 78-79 % busy) and
/// the figure rose with more depositors (2026-12-01, about 19:50 UTC: 64 gave 4,775 and 5,534
/// a second; 128, 6,235 and 6,352; 384, 7,342 with every core busy).
const PER_CLIENT: usize = 48;
/// Mailboxes deposited into; each circuit deposits into one, as circuit isolation has it.
const MAILBOXES: usize = 32;
/// How long the depositors keep depositing.
const RUN: Duration = Duration::from_secs(5);
/// How long the raw fsync rate is measured.
const FSYNC_RUN: Duration = Duration::from_secs(1);
/// The limit on one deposit.
const DEPOSIT_LIMIT: Duration = Duration::from_secs(10);

/// Per-circuit request limits too high to be reached: a real depositor sends one request on
/// each circuit, the run sends thousands.
pub fn unlimited_circuits() -> CircuitLimits {
    CircuitLimits {
        rate: 1e9,
        burst: 1e9,
        ..CircuitLimits::default()
    }
}

/// Small appends each followed by `fdatasync`, one at a time, per second, in a file in `dir`
/// for about `for_how_long`: how often this disk can make a write durable, the most commits a
/// second a store can make on it (SQLite in WAL mode with `synchronous=FULL` syncs its log
/// once a commit).
pub fn fsync_per_second(dir: &Path, for_how_long: Duration) -> std::io::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < for_how_long {
        file.write_all(&block)?;
        file.sync_data()?;
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

/// What one run measured: the deposits, and what they cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Deposits acknowledged.
    pub deposits: u64,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// The relay's store commits during the run.
    pub commits: u64,
    /// Requests those commits carried.
    pub jobs: u64,
    /// Time the relay's store thread spent running transactions.
    pub committing: Duration,
    /// CPU time of the store threads.
    pub store_cpu: Duration,
    /// CPU time of this process (clients, every relay, the authorities).
    pub cpu: Duration,
    /// CPU time of the whole machine (this process and any other).
    pub machine_cpu: Duration,
    /// Cores of this machine.
    pub cores: usize,
    /// Raw fsyncs a second of the disk.
    pub fsyncs: f64,
}

/// What limited a run, as far as its figures tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The store committed all the time, mostly waiting for the disk.
    Disk,
    /// The store committed all the time, mostly on the CPU.
    StoreThread,
    /// The machine's cores were nearly all busy.
    Cpu,
    /// None of these: the depositors kept too few deposits in flight, or waits elsewhere.
    Neither,
}

/// Above this share of a resource a run counts as limited by it.
const NEAR: f64 = 0.85;

/// `part` as a share of `whole`.
fn share(part: Duration, whole: Duration) -> f64 {
    part.as_secs_f64() / whole.as_secs_f64().max(1e-9)
}

impl Load {
    /// Deposits acknowledged per second.
    pub fn per_second(&self) -> f64 {
        self.deposits as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Commits per second.
    pub fn commits_per_second(&self) -> f64 {
        self.commits as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Requests per commit, on average (0 without commits).
    pub fn batch(&self) -> f64 {
        match self.commits {
            0 => 0.0,
            c => self.jobs as f64 / c as f64,
        }
    }

    /// One commit's time, on average.
    pub fn commit_time(&self) -> Duration {
        match self.commits {
            0 => Duration::ZERO,
            c => self.committing / u32::try_from(c).unwrap_or(u32::MAX),
        }
    }

    /// What limited the run: the store if its thread was committing `NEAR` the whole time or
    /// more (the disk if it spent most of that waiting, else its own CPU work), else the CPU
    /// if the machine's cores were `NEAR` fully busy or more; else neither.
    pub fn limit(&self) -> Limit {
        if share(self.committing, self.wall) >= NEAR {
            if share(self.store_cpu, self.committing) < 0.5 {
                Limit::Disk
            } else {
                Limit::StoreThread
            }
        } else if share(self.machine_cpu, self.wall) >= NEAR * self.cores as f64 {
            Limit::Cpu
        } else {
            Limit::Neither
        }
    }

    /// The note printed beside the figure.
    pub fn note(&self, depositors: usize, mailboxes: usize) -> String {
        let store = share(self.committing, self.wall);
        let cores = share(self.machine_cpu, self.wall) / self.cores.max(1) as f64;
        let limit = match self.limit() {
            Limit::Disk => "the relay is at the disk's limit (its store commits all the time, mostly waiting for the disk)".to_string(),
            Limit::StoreThread => "the relay is at its store thread's limit (it commits all the time, mostly on the CPU)".to_string(),
            Limit::Cpu => "the machine's CPU is the limit (every core busy), not the relay's store".to_string(),
            Limit::Neither if cores >= store => format!("neither limit reached; the nearer is the CPU ({:.0} % busy)", 100.0 * cores),
            Limit::Neither => format!("neither limit reached; the nearer is the store ({:.0} % of the time committing)", 100.0 * store),
        };
        format!(
            "{} deposits of {} bytes in {:.2} s by {} depositors on 3-hop circuits into {} mailboxes; \
             {:.1} deposits per commit, {:.0} commits/s, one commit {:.2} ms beside one raw fsync {:.2} ms; \
             the store committing {:.0} % of the time, on the CPU {:.0} %; \
             the machine's {} cores {:.0} % busy, this process (clients, every relay) {:.2} cores: {}",
            self.deposits,
            TEXT_ENVELOPE_LEN,
            self.wall.as_secs_f64(),
            depositors,
            mailboxes,
            self.batch(),
            self.commits_per_second(),
            super::ms(self.commit_time()),
            1000.0 / self.fsyncs.max(1e-9),
            100.0 * store,
            100.0 * share(self.store_cpu, self.wall),
            self.cores,
            100.0 * cores,
            share(self.cpu, self.wall),
            limit
        )
    }
}

/// CPU time of the store threads now (all of them: the other mailbox relays' are idle).
fn store_cpu() -> Duration {
    threads_named("mailbox-store")
        .iter()
        .filter_map(|t| cpu_time(t))
        .sum()
}

fn machine_cpu() -> Result<Duration, BenchError> {
    machine_busy().ok_or_else(|| BenchError::other("cannot read /proc/stat"))
}

fn process_cpu() -> Result<Duration, BenchError> {
    cpu_time(&process_stat(std::process::id()))
        .ok_or_else(|| BenchError::other("cannot read this process's CPU time"))
}

/// `CLIENTS` × `PER_CLIENT` links to `relay`, each on a 3-hop circuit of its own.
async fn links(
    net: &Testnet,
    scratch: &Path,
    relay: RelayId,
) -> Result<Vec<Arc<MailboxLink>>, BenchError> {
    let mut links = Vec::new();
    for c in 0..CLIENTS {
        let client_dir = scratch.join(format!("depositor{c}"));
        let dir = Arc::new(NetDir::new(net.network.clone(), &client_dir));
        dir.bootstrap().await.map_err(BenchError::other)?;
        let config = CircuitConfig {
            preemptive: 0,
            ..CircuitConfig::default()
        };
        let mgr = CircuitManager::new(dir, client_dir, config);
        for _ in 0..PER_CLIENT {
            let built = mgr.get(relay).await.map_err(BenchError::other)?;
            links.push(MailboxLink::new(built.circuit.clone(), relay));
        }
    }
    Ok(links)
}

/// An envelope unique to depositor `who` and its deposit number `n`, random-looking as sealed
/// ones are.
fn envelope(base: &[u8], who: usize, n: u64) -> Vec<u8> {
    let mut e = base.to_vec();
    e[..8].copy_from_slice(&(who as u64).to_be_bytes());
    e[8..16].copy_from_slice(&n.to_be_bytes());
    e
}

/// The figures: deposits a second through the first relay of `net` (a mailbox relay), the
/// raw fsync rate of `scratch`'s disk, and the store's batch.
pub async fn run(net: &Testnet, scratch: &Path) -> Result<Vec<Figure>, BenchError> {
    shallot_crypto::keyfile::ensure_private_dir(scratch).map_err(BenchError::other)?;
    let handle = net
        .relay(0)
        .ok_or_else(|| BenchError::other("the test network's first relay is not in-process"))?;
    let relay = handle.id();
    if handle.mailbox_commits().is_none() {
        return Err(BenchError::other(
            "the test network's first relay has no mailboxes",
        ));
    }
    let links = links(net, scratch, relay).await?;
    let mailboxes: Vec<MailboxId> = (0..MAILBOXES).map(|_| MailboxId(rand::random())).collect();
    let mut base = vec![0u8; TEXT_ENVELOPE_LEN];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut base);
    let base = Arc::new(base);
    // One deposit on each circuit first: any refusal shows here, not as a low figure.
    for (i, link) in links.iter().enumerate() {
        link.deposit(
            mailboxes[i % MAILBOXES],
            envelope(&base, i, 0),
            DEPOSIT_LIMIT,
        )
        .await
        .map_err(|e| BenchError::other(format!("warm-up deposit refused: {e}")))?;
    }

    let before = handle.mailbox_commits().unwrap_or_default();
    let (cpu_before, store_before, machine_before) = (process_cpu()?, store_cpu(), machine_cpu()?);
    let started = Instant::now();
    let deadline = started + RUN;
    let tasks: Vec<_> = links
        .iter()
        .enumerate()
        .map(|(i, link)| {
            let (link, base, mailbox) = (link.clone(), base.clone(), mailboxes[i % MAILBOXES]);
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut n = 1;
                while Instant::now() < deadline {
                    match link
                        .deposit(mailbox, envelope(&base, i, n), DEPOSIT_LIMIT)
                        .await
                    {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            failed += 1;
                            tracing::debug!("deposit failed: {e}");
                        }
                    }
                    n += 1;
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut deposits, mut failed) = (0, 0);
    for t in tasks {
        let (ok, no) = t.await.map_err(BenchError::other)?;
        deposits += ok;
        failed += no;
    }
    let wall = started.elapsed();
    let (cpu, store, machine) = (
        process_cpu()?.saturating_sub(cpu_before),
        store_cpu().saturating_sub(store_before),
        machine_cpu()?.saturating_sub(machine_before),
    );
    let after = handle.mailbox_commits().unwrap_or_default();
    drop(links);
    let dir = scratch.to_path_buf();
    let fsyncs = tokio::task::spawn_blocking(move || fsync_per_second(&dir, FSYNC_RUN))
        .await
        .map_err(BenchError::other)?
        .map_err(BenchError::other)?;
    let load = Load {
        deposits,
        wall,
        commits: after.commits.saturating_sub(before.commits),
        jobs: after.jobs.saturating_sub(before.jobs),
        committing: after.busy.saturating_sub(before.busy),
        store_cpu: store,
        cpu,
        machine_cpu: machine,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        fsyncs,
    };
    let mut note = load.note(CLIENTS * PER_CLIENT, MAILBOXES);
    if failed > 0 {
        note.push_str(&format!("; {failed} deposits failed"));
    }
    Ok(vec![
        Figure::new(
            "mailbox relay: deposits per second sustained through one relay",
            load.per_second(),
            "deposits/s",
        )
        .note(format!("aim ≥ 5,000; {note}")),
        Figure::new(
            "raw fsync rate of the relay's disk (4 KiB append + fdatasync)",
            fsyncs,
            "fsyncs/s",
        )
        .note("the most commits a second the relay's store can make"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> Load {
        Load {
            deposits: 10_000,
            wall: Duration::from_secs(5),
            commits: 500,
            jobs: 10_000,
            committing: Duration::from_secs(2),
            store_cpu: Duration::from_secs(1),
            cpu: Duration::from_secs(4),
            machine_cpu: Duration::from_secs(6),
            cores: 2,
            fsyncs: 1_000.0,
        }
    }

    #[test]
    fn rates_and_batch() {
        let l = load();
        assert_eq!(l.per_second(), 2_000.0);
        assert_eq!(l.commits_per_second(), 100.0);
        assert_eq!(l.batch(), 20.0);
        assert_eq!(l.commit_time(), Duration::from_millis(4));
        let none = Load { commits: 0, ..l };
        assert_eq!(none.batch(), 0.0);
        assert_eq!(none.commit_time(), Duration::ZERO);
    }

    #[test]
    fn the_limit_is_whichever_resource_was_nearly_used_up() {
        // Committing 40 % of the time, 6 of 10 core-seconds busy: neither.
        assert_eq!(load().limit(), Limit::Neither);
        let cpu = Load {
            machine_cpu: Duration::from_secs(9),
            ..load()
        };
        assert_eq!(cpu.limit(), Limit::Cpu);
        // Committing all the time, a fifth of it on the CPU: the disk, busy cores or not.
        let disk = Load {
            committing: Duration::from_millis(4_900),
            ..cpu
        };
        assert_eq!(disk.limit(), Limit::Disk, "the store first");
        let store = Load {
            store_cpu: Duration::from_millis(4_000),
            ..disk
        };
        assert_eq!(store.limit(), Limit::StoreThread);
        assert!(disk.note(64, 16).contains("the disk's limit"));
        let note = load().note(64, 16);
        assert!(note.contains("10000 deposits of 415 bytes"), "{note}");
        assert!(
            note.contains("one commit 4.00 ms beside one raw fsync 1.00 ms"),
            "{note}"
        );
        assert!(note.contains("cores 60 % busy"), "{note}");
        assert!(note.contains("the nearer is the CPU (60 % busy)"), "{note}");
        let store_nearer = Load {
            machine_cpu: Duration::from_secs(2),
            ..load()
        };
        assert!(store_nearer
            .note(64, 16)
            .contains("the nearer is the store (40 % of the time committing)"));
    }

    #[test]
    fn envelopes_are_of_a_text_message_size_and_unique() {
        assert_eq!(TEXT_ENVELOPE_LEN, 415);
        let base = vec![7u8; TEXT_ENVELOPE_LEN];
        let a = envelope(&base, 1, 2);
        assert_eq!(a.len(), TEXT_ENVELOPE_LEN);
        assert_ne!(a, envelope(&base, 2, 1));
        assert_ne!(a, envelope(&base, 1, 3));
    }

    #[test]
    fn fsync_rate_is_counted() {
        let dir = std::env::temp_dir().join(format!("shallot-fsync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rate = fsync_per_second(&dir, Duration::from_millis(20)).unwrap();
        assert!(rate > 0.0);
        assert!(!dir.join("fsync-probe").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
