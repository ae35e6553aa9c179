//! Catching an authority that shows different votes to different peers (`docs/spec.md`
//! §5.6): the vote lists authorities exchange, and the pure judgement over them.
//!
//! After the vote exchange closes, each authority serves the list of every vote it holds
//! (`GET /votes/<valid-after>`, [`VoteList`]): for each voting authority the digest of the vote
//! it got, and of a second, different vote signed by the same authority if it was shown one.
//! Each authority fetches its peers' lists, fetches (and verifies) every vote a peer lists that
//! it does not hold, and then [`judge`]s:
//!
//! * an authority with two different votes, both validly signed by it, held here, equivocated:
//!   its vote is dropped (and the drop logged);
//! * any other authority's vote is *confirmed* when this authority holds it and more than half
//!   of all configured authorities (this one included) list that same digest for it.
//!
//! Only confirmed votes go into the consensus this authority signs. A peer that lies in its
//! list can withhold a confirmation, but cannot make anyone drop an honest vote: only two
//! signed votes are evidence.

use std::collections::{BTreeMap, BTreeSet};

use shallot_crypto::hex;
use shallot_proto::dir::lines::{LineReader, LineWriter};
use shallot_proto::dir::DocError;

/// The largest vote list accepted, in bytes (two digests for each of 1,000 authorities).
pub const MAX_VOTE_LIST_LEN: usize = 300_000;

/// For each voting authority (by key bytes), the digests of the votes held from it.
pub type Holdings = BTreeMap<[u8; 32], BTreeSet<[u8; 32]>>;

/// What one authority says it holds for one period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoteList {
    /// The period.
    pub valid_after: u64,
    /// The votes, by voting authority.
    pub votes: Holdings,
}

impl VoteList {
    /// The text form:
    ///
    /// ```text
    /// shallot-vote-list 1
    /// valid-after <unix seconds>
    /// vote <authority hex32> <vote digest hex32>     sorted, unique; at most 2 per authority
    /// ```
    pub fn encode(&self) -> String {
        let mut w = LineWriter::new();
        w.line("shallot-vote-list", [1]);
        w.line("valid-after", [self.valid_after]);
        for (author, digests) in &self.votes {
            for d in digests {
                w.line("vote", [hex::encode(author), hex::encode(d)]);
            }
        }
        w.finish()
    }

    /// Parses the text form strictly.
    pub fn parse(text: &str) -> Result<VoteList, DocError> {
        if text.len() > MAX_VOTE_LIST_LEN {
            return Err(DocError::TooLarge {
                len: text.len(),
                max: MAX_VOTE_LIST_LEN,
            });
        }
        let mut r = LineReader::new(text)?;
        let mut a = r.expect("shallot-vote-list")?;
        if a.word("version")? != "1" {
            return Err(a.error("unsupported version"));
        }
        a.end()?;
        let mut a = r.expect("valid-after")?;
        let valid_after = a.u64("time")?;
        a.end()?;
        let mut votes = Holdings::new();
        let mut last: Option<([u8; 32], [u8; 32])> = None;
        while let Some(mut a) = r.maybe("vote")? {
            let author = a.hex32("authority key")?;
            let digest = a.hex32("vote digest")?;
            a.end()?;
            if last.is_some_and(|l| l >= (author, digest)) {
                return Err(DocError::Malformed {
                    line: r.line_no(),
                    reason: "votes are not sorted, or repeat one".into(),
                });
            }
            last = Some((author, digest));
            let held = votes.entry(author).or_default();
            if held.len() == 2 {
                return Err(DocError::Malformed {
                    line: r.line_no(),
                    reason: "more than two votes from one authority".into(),
                });
            }
            held.insert(digest);
        }
        r.finish()?;
        Ok(VoteList { valid_after, votes })
    }
}

/// The outcome of comparing views.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// The votes to use: voting authority → digest.
    pub confirmed: BTreeMap<[u8; 32], [u8; 32]>,
    /// Authorities caught with two signed votes.
    pub equivocators: BTreeSet<[u8; 32]>,
}

/// One vote to fetch: (peer to fetch it from, voting authority, vote digest).
pub type Fetch = ([u8; 32], [u8; 32], [u8; 32]);

/// What to fetch of the votes peers list and this authority does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wanted {
    /// The fetches, at most one per configured voting authority.
    pub fetch: Vec<Fetch>,
    /// For each peer whose list names authorities that are not configured, how many: those
    /// entries are ignored (the caller logs them).
    pub strangers: BTreeMap<[u8; 32], usize>,
}

/// The votes peers list that this authority does not hold, to fetch from that peer and
/// check. `authorities` are the configured authorities' keys; `tried` the fetches already
/// made this period (none is made twice).
///
/// A peer's list is the peer's word only, so what it can make this authority fetch is
/// bounded: entries by authorities that are not configured are ignored; nothing is fetched
/// for an author of whom two votes are held already (that is the proof of equivocation,
/// and the most kept); and at most one vote per author per call, so one call makes at most
/// one fetch per configured authority, each at most once per period.
pub fn missing(
    mine: &Holdings,
    lists: &BTreeMap<[u8; 32], VoteList>,
    authorities: &BTreeSet<[u8; 32]>,
    tried: &BTreeSet<Fetch>,
) -> Wanted {
    let mut wanted = Wanted::default();
    let mut chosen: BTreeMap<[u8; 32], Fetch> = BTreeMap::new();
    for (peer, list) in lists {
        for (author, digests) in &list.votes {
            if !authorities.contains(author) {
                *wanted.strangers.entry(*peer).or_default() += 1;
                continue;
            }
            let held = mine.get(author);
            if chosen.contains_key(author) || held.is_some_and(|h| h.len() >= 2) {
                continue;
            }
            let pick = digests
                .iter()
                .map(|d| (*peer, *author, *d))
                .find(|f| !held.is_some_and(|h| h.contains(&f.2)) && !tried.contains(f));
            if let Some(f) = pick {
                chosen.insert(*author, f);
            }
        }
    }
    wanted.fetch = chosen.into_values().collect();
    wanted
}

/// Like [`missing`], but only votes listed by a peer that is not their author, each from such
/// a peer: late in the comparison, evidence is believed only once another authority holds it.
pub fn missing_from_others(
    mine: &Holdings,
    lists: &BTreeMap<[u8; 32], VoteList>,
    authorities: &BTreeSet<[u8; 32]>,
    tried: &BTreeSet<Fetch>,
) -> Wanted {
    let others: BTreeMap<[u8; 32], VoteList> = lists
        .iter()
        .map(|(peer, list)| {
            let mut list = list.clone();
            list.votes.remove(peer);
            (*peer, list)
        })
        .collect();
    missing(mine, &others, authorities, tried)
}

/// Judges the votes of one period. `me` is this authority; `mine` what it holds (every digest
/// in it is a vote it verified, signed by that authority); `lists` what each peer says it
/// holds; `n` the number of configured authorities.
pub fn judge(
    n: usize,
    me: &[u8; 32],
    mine: &Holdings,
    lists: &BTreeMap<[u8; 32], VoteList>,
) -> Verdict {
    let mut verdict = Verdict::default();
    for (author, digests) in mine {
        if digests.len() > 1 {
            verdict.equivocators.insert(*author);
            continue;
        }
        let Some(digest) = digests.first() else {
            continue;
        };
        let agreeing = lists
            .iter()
            .filter(|(peer, _)| *peer != me)
            .filter(|(_, list)| {
                list.votes
                    .get(author)
                    .is_some_and(|d| d.len() == 1 && d.contains(digest))
            })
            .count();
        if (agreeing + 1) * 2 > n {
            verdict.confirmed.insert(*author, *digest);
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holdings(entries: &[(u8, &[u8])]) -> Holdings {
        entries
            .iter()
            .map(|(a, ds)| ([*a; 32], ds.iter().map(|d| [*d; 32]).collect()))
            .collect()
    }

    /// Authorities 1 to 4 are configured.
    fn configured() -> BTreeSet<[u8; 32]> {
        (1..=4u8).map(|a| [a; 32]).collect()
    }

    fn fetch(mine: &Holdings, lists: &BTreeMap<[u8; 32], VoteList>) -> Vec<Fetch> {
        missing(mine, lists, &configured(), &BTreeSet::new()).fetch
    }

    fn fetch_from_others(mine: &Holdings, lists: &BTreeMap<[u8; 32], VoteList>) -> Vec<Fetch> {
        missing_from_others(mine, lists, &configured(), &BTreeSet::new()).fetch
    }

    fn list(entries: &[(u8, &[u8])]) -> VoteList {
        VoteList {
            valid_after: 60,
            votes: holdings(entries),
        }
    }

    #[test]
    fn lists_round_trip_and_refuse_junk() {
        let l = list(&[(1, &[7]), (2, &[8, 9])]);
        let text = l.encode();
        assert_eq!(VoteList::parse(&text).unwrap(), l);
        let lines: Vec<&str> = text.lines().collect();
        let unsorted = format!(
            "{}\n{}\n{}\n{}\n{}\n",
            lines[0], lines[1], lines[3], lines[2], lines[4]
        );
        assert!(VoteList::parse(&unsorted).is_err());
        let dup = format!("{text}{}\n", lines[4]);
        assert!(VoteList::parse(&dup).is_err());
        let three = list(&[(2, &[7, 8, 9])]).encode();
        assert!(VoteList::parse(&three).is_err());
    }

    /// Review finding 2: a rogue showing V1 to one honest authority and V2 to another is
    /// caught by both, once each has fetched the vote the other lists.
    #[test]
    fn an_authority_with_two_signed_votes_is_dropped_everywhere() {
        // Authorities 1 and 2 are honest; 3 gave vote 31 to 1 and vote 32 to 2.
        let n = 3;
        let lists_for_1: BTreeMap<[u8; 32], VoteList> = [
            ([2; 32], list(&[(1, &[10]), (2, &[20]), (3, &[32])])),
            ([3; 32], list(&[(1, &[10]), (2, &[20]), (3, &[31])])),
        ]
        .into();
        let mine_1 = holdings(&[(1, &[10]), (2, &[20]), (3, &[31])]);
        // Before fetching, authority 1 sees what it lacks.
        assert_eq!(
            fetch(&mine_1, &lists_for_1),
            vec![([2; 32], [3; 32], [32; 32])]
        );
        // After fetching and verifying vote 32, it holds both.
        let mine_1 = holdings(&[(1, &[10]), (2, &[20]), (3, &[31, 32])]);
        let v1 = judge(n, &[1; 32], &mine_1, &lists_for_1);
        let mine_2 = holdings(&[(1, &[10]), (2, &[20]), (3, &[31, 32])]);
        let lists_for_2: BTreeMap<[u8; 32], VoteList> = [
            ([1; 32], list(&[(1, &[10]), (2, &[20]), (3, &[31])])),
            ([3; 32], list(&[(1, &[10]), (2, &[20]), (3, &[32])])),
        ]
        .into();
        let v2 = judge(n, &[2; 32], &mine_2, &lists_for_2);
        for v in [&v1, &v2] {
            assert_eq!(v.equivocators, [[3; 32]].into());
            assert_eq!(
                v.confirmed,
                [([1; 32], [10; 32]), ([2; 32], [20; 32])].into()
            );
        }
    }

    /// Late in the comparison, a rogue listing a second vote of its own (to some only) is not
    /// believed; the same vote listed by another authority is.
    #[test]
    fn late_evidence_is_taken_only_from_others() {
        let mine = holdings(&[(1, &[10]), (3, &[31])]);
        let lists: BTreeMap<[u8; 32], VoteList> = [
            ([3; 32], list(&[(1, &[10]), (3, &[32])])),
            ([2; 32], list(&[(1, &[10]), (3, &[31])])),
        ]
        .into();
        assert_eq!(fetch(&mine, &lists), vec![([3; 32], [3; 32], [32; 32])]);
        assert!(fetch_from_others(&mine, &lists).is_empty());
        let mut passed_on = lists.clone();
        passed_on.insert([2; 32], list(&[(1, &[10]), (3, &[31, 32])]));
        assert_eq!(
            fetch_from_others(&mine, &passed_on),
            vec![([2; 32], [3; 32], [32; 32])]
        );
    }

    #[test]
    fn confirmation_needs_a_majority_of_all_authorities() {
        let mine = holdings(&[(1, &[10]), (2, &[20])]);
        // Five authorities; only one peer answered, agreeing on both: 2 of 5 is not enough.
        let one: BTreeMap<[u8; 32], VoteList> = [([2; 32], list(&[(1, &[10]), (2, &[20])]))].into();
        assert!(judge(5, &[1; 32], &mine, &one).confirmed.is_empty());
        // Two more agree on vote 10 only; a lying peer lists another digest for 2 (without
        // the vote itself, that is no evidence: nobody is dropped).
        let three: BTreeMap<[u8; 32], VoteList> = [
            ([2; 32], list(&[(1, &[10]), (2, &[20])])),
            ([3; 32], list(&[(1, &[10])])),
            ([4; 32], list(&[(1, &[10]), (2, &[21])])),
        ]
        .into();
        let v = judge(5, &[1; 32], &mine, &three);
        assert_eq!(v.confirmed, [([1; 32], [10; 32])].into());
        assert!(v.equivocators.is_empty());
    }
    /// Finding D: a rogue's list naming 1,000 authors that are not configured, and two
    /// digests for each configured one, makes this authority fetch nothing for the strangers
    /// and at most one vote per configured author.
    #[test]
    fn a_hostile_list_asks_for_little() {
        let mine = holdings(&[(1, &[10])]);
        let mut votes = Holdings::new();
        for i in 0..1000u32 {
            let mut author = [0xaa; 32];
            author[..4].copy_from_slice(&i.to_be_bytes());
            votes.insert(author, [[1; 32], [2; 32]].into());
        }
        for a in 1..=3u8 {
            votes.insert([a; 32], [[a + 40; 32], [a + 50; 32]].into());
        }
        let lists: BTreeMap<[u8; 32], VoteList> = [(
            [3; 32],
            VoteList {
                valid_after: 60,
                votes,
            },
        )]
        .into();
        let authorities: BTreeSet<[u8; 32]> = (1..=3u8).map(|a| [a; 32]).collect();
        let mut tried = BTreeSet::new();
        let wanted = missing(&mine, &lists, &authorities, &tried);
        assert_eq!(wanted.strangers, [([3; 32], 1000)].into());
        // One per configured author: 1 already held one vote, 2 and 3 none.
        assert_eq!(
            wanted.fetch,
            vec![
                ([3; 32], [1; 32], [41; 32]),
                ([3; 32], [2; 32], [42; 32]),
                ([3; 32], [3; 32], [43; 32]),
            ]
        );
        // Those fetches failed (the rogue serves nothing): the next call asks for the other
        // digests, then nothing more, ever.
        tried.extend(wanted.fetch);
        let next = missing(&mine, &lists, &authorities, &tried).fetch;
        assert_eq!(next.len(), 3);
        assert!(next.iter().all(|f| f.2[0] > 50));
        tried.extend(next);
        assert!(missing(&mine, &lists, &authorities, &tried)
            .fetch
            .is_empty());
        // An author of whom two votes are held already: nothing more is fetched.
        let both = holdings(&[(1, &[10, 11])]);
        let w = missing(&both, &lists, &authorities, &BTreeSet::new());
        assert!(w.fetch.iter().all(|f| f.1 != [1; 32]));
    }
}
