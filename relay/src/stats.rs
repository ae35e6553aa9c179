//! Counters a relay keeps about its own work, for logs, tests and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident),* $(,)?) => {
        /// Live counters, updated as the relay works.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl StatsSnapshot {
            /// Every counter as (name, what it counts, value), in declaration order: for
            /// heartbeats and the metrics endpoint.
            pub fn named(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc),*).trim_start(), self.$name),)*]
            }
        }

        impl Stats {
            /// Copies every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Links accepted or opened.
    links_opened,
    /// Links opened because an EXTEND found none open to its target (also counted in
    /// links_opened).
    links_opened_for_extends,
    /// Connections refused by the per-IP or total connection limit.
    connections_refused,
    /// Links that failed their handshake.
    handshakes_failed,
    /// Links closed for a protocol violation.
    links_dropped_for_protocol,
    /// Circuits created here.
    circuits_created,
    /// Circuit creations refused (limits, bad handshakes, reused ids).
    creates_refused,
    /// Circuits destroyed, for any reason.
    circuits_destroyed,
    /// Circuits destroyed because a layer failed to authenticate.
    circuits_destroyed_for_tamper,
    /// Circuits destroyed by the out-of-memory handler.
    circuits_destroyed_for_memory,
    /// Circuits destroyed because their queue was full.
    circuits_destroyed_for_queue,
    /// Circuits destroyed because no cell passed for the circuit idle timeout.
    circuits_destroyed_idle,
    /// Links closed because they carried no circuit for the link idle timeout.
    links_closed_idle,
    /// Links closed because busy links' buffers passed their share of the memory budget
    /// (the links stalled longest go first).
    links_closed_for_memory,
    /// Relay cells forwarded in either direction.
    cells_forwarded,
    /// Relay cells delivered to this hop.
    cells_delivered,
    /// Relay cells for circuits this link does not have (dropped).
    cells_for_unknown_circuits,
    /// Circuits extended onward.
    circuits_extended,
    /// Extend requests refused.
    extends_refused,
    /// Directory requests answered with the whole consensus, compressed (§5.13).
    dir_answers_full,
    /// Directory requests answered with a diff from the client's consensus (§5.13).
    dir_answers_diff,
    /// Directory requests answered "unavailable": no consensus yet, or too many answers
    /// being sent (§5.13).
    dir_answers_unavailable,
    /// Diffs computed on a client's request from one of the day's older consensuses, each
    /// base once per consensus followed, counted as each starts (§5.13).
    dir_older_diffs,
    /// The valid-after time (unix seconds) of the newest consensus the directory cache
    /// serves; 0 before the first. A gauge (§5.13).
    dir_cache_valid_after,
    /// Link records written.
    records_written,
    /// Cells written, in all records.
    cells_written,
    /// Mailbox requests handled (deposits, fetches, acknowledgements, bundles, subscriptions).
    mailbox_requests,
    /// Envelopes newly stored by the mailbox service.
    mailbox_envelopes_stored,
    /// Envelopes sent to their owners from the store.
    mailbox_envelopes_sent,
    /// Circuits seen carrying mailbox requests that circuit isolation keeps apart
    /// (`docs/spec.md` §10.7): two mailbox ids, or an owner's requests beside any other.
    mailbox_isolation_violations,
    /// Anti-entropy summaries (SYNC) sent to other holders (`docs/spec.md` §9.6).
    mailbox_sync_sent,
    /// Envelopes pushed to other holders because their answer to a SYNC said they lacked them.
    mailbox_sync_pushed,
    /// Mailbox requests refused as busy at once: for their circuit's limits (in flight or
    /// rate, §9.7), or with no relay-wide place free.
    mailbox_refused_busy,
    /// Deposits and bundle puts answered with a puzzle to solve (§9.7).
    mailbox_puzzles_asked,
    /// Deposits and bundle puts admitted by a puzzle solution (§9.7).
    mailbox_puzzles_solved,
    /// Fetches cut short because the relay's memory budget had no room (§9.7).
    mailbox_fetches_cut,
    /// Pages of a mailbox loaded from the store to answer fetches (§9.7).
    mailbox_fetch_pages,
    /// The most envelope bytes one fetch page held in memory, a gauge (§9.7): FETCH loads a
    /// mailbox a page at a time, never whole.
    mailbox_fetch_page_peak,
    /// Puzzles this relay solved to get its repair and anti-entropy pushes admitted by
    /// another relay's per-mailbox limits (§9.6, §9.7).
    mailbox_push_puzzles_solved,
    /// Descriptor uploads an authority accepted (`docs/spec.md` §6.7).
    descriptor_uploads_accepted,
    /// Descriptor uploads that failed: the authority could not be reached, was busy, or
    /// refused the descriptor (§6.7).
    descriptor_uploads_failed,
    /// The valid-after time (unix seconds) of the consensus in use; 0 before the first. A
    /// gauge, not a counter.
    consensus_valid_after,
}

impl Stats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
