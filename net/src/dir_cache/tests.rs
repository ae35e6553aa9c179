//! A hostile guard's answers, each refused with its reason; honest ones, whole or as a diff,
//! accepted; and the order sources are tried in.
#![allow(clippy::unwrap_used)]

use shallot_crypto::keys::IdentityKeypair;
use shallot_directory::compress::compress;
use shallot_directory::network::{AuthorityInfo, NetworkParams};
use shallot_proto::dir::diff::consensus_diff;

use super::*;
use crate::testing;

/// Three authorities' keys and the network file naming them.
fn network() -> (Vec<IdentityKeypair>, NetworkFile) {
    let keys: Vec<_> = (0..3)
        .map(|_| IdentityKeypair::generate(&mut rand::thread_rng()))
        .collect();
    let authorities = keys
        .iter()
        .enumerate()
        .map(|(i, k)| AuthorityInfo {
            name: format!("auth{i}"),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
            key: k.public(),
        })
        .collect();
    let network = NetworkFile {
        authorities,
        params: NetworkParams::default(),
    };
    (keys, network)
}

/// A consensus valid from `after` for 300 s, listing `n` relays, signed by `signers`.
fn signed(after: u64, n: u8, signers: &[IdentityKeypair]) -> Consensus {
    let mut c = testing::consensus(testing::relays(n), after, after + 100, after + 300);
    for k in signers {
        let sig = c.sign_body(k).unwrap();
        c.add_signature(k.public(), sig);
    }
    c
}

fn full(c: &Consensus) -> Download {
    Download {
        form: AnswerForm::Full,
        bytes: compress(c.encode().unwrap().as_bytes()),
    }
}

#[test]
fn an_honest_answer_is_accepted_whole_or_as_a_diff() {
    let (keys, network) = network();
    let held = signed(1000, 3, &keys);
    let next = signed(1100, 4, &keys);
    let (c, text) = accept_answer(full(&next), Some(&held), &network, 1150).unwrap();
    assert_eq!(*c, next);
    assert_eq!(text, next.encode().unwrap());
    let diff = consensus_diff(&held, &next).unwrap();
    let answer = Download {
        form: AnswerForm::Diff,
        bytes: compress(&diff),
    };
    let (c, _) = accept_answer(answer, Some(&held), &network, 1150).unwrap();
    assert_eq!(*c, next);
    // The request names the held consensus by its body digest.
    assert_eq!(
        request(Some(&held)),
        DirMsg::Get {
            base: Some(text_body_digest(&held.encode().unwrap()))
        }
    );
    assert_eq!(request(None), DirMsg::Get { base: None });
}

/// A client back after its consensus expired takes a current one as a diff from the expired
/// one it holds; a guard answering it with any consensus that is not current (the one it
/// holds, a later one that has expired too) is refused, and the client asks elsewhere.
#[test]
fn a_client_holding_an_expired_consensus_takes_only_a_current_one() {
    let (keys, network) = network();
    let held = signed(1000, 3, &keys);
    let stale = signed(50_000, 4, &keys);
    let now_current = signed(90_000, 5, &keys);
    let now = 90_100;
    let diff = |to: &Consensus| Download {
        form: AnswerForm::Diff,
        bytes: compress(&consensus_diff(&held, to).unwrap()),
    };
    let (c, _) = accept_answer(diff(&now_current), Some(&held), &network, now).unwrap();
    assert_eq!(*c, now_current);
    for answer in [diff(&stale), full(&stale), full(&held)] {
        let err = accept_answer(answer, Some(&held), &network, now).unwrap_err();
        assert!(matches!(&err, CacheError::Verify(_)), "{err}");
        assert!(err.to_string().contains("expired"), "{err}");
    }
}

/// A guard that changes any field keeps the authorities' signatures over the old body: the
/// client refuses it. One signed by a minority of the authorities is refused too.
#[test]
fn a_forged_consensus_is_refused() {
    let (keys, network) = network();
    let held = signed(1000, 3, &keys);
    let mut forged = signed(1100, 4, &keys);
    forged.relays[0].bandwidth += 1_000_000;
    let err = accept_answer(full(&forged), Some(&held), &network, 1150).unwrap_err();
    assert!(matches!(err, CacheError::Verify(_)), "{err}");
    assert!(err.to_string().contains("does not verify"), "{err}");
    let minority = signed(1100, 4, &keys[..1]);
    let err = accept_answer(full(&minority), Some(&held), &network, 1150).unwrap_err();
    assert!(err.to_string().contains("only 1 of the 3"), "{err}");
    // A diff that turns the held consensus into a forged one fails the same way.
    let diff = consensus_diff(&held, &forged).unwrap();
    let answer = Download {
        form: AnswerForm::Diff,
        bytes: compress(&diff),
    };
    let err = accept_answer(answer, Some(&held), &network, 1150).unwrap_err();
    assert!(matches!(err, CacheError::Verify(_)), "{err}");
}

/// An older consensus, or the one held again, is refused: a guard cannot hold a client back.
#[test]
fn a_stale_consensus_is_refused() {
    let (keys, network) = network();
    let older = signed(900, 3, &keys);
    let held = signed(1000, 3, &keys);
    let err = accept_answer(full(&older), Some(&held), &network, 1150).unwrap_err();
    assert!(err.to_string().contains("older"), "{err}");
    let err = accept_answer(full(&held), Some(&held), &network, 1150).unwrap_err();
    assert!(
        matches!(err, CacheError::NotNewer { valid_after: 1000 }),
        "{err}"
    );
    // An expired one is refused whatever the client holds.
    let err = accept_answer(full(&older), None, &network, 1250).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn truncated_garbled_and_bomb_answers_are_refused() {
    let (keys, network) = network();
    let held = signed(1000, 3, &keys);
    let mut cut = full(&signed(1100, 4, &keys));
    cut.bytes.truncate(cut.bytes.len() / 2);
    let err = accept_answer(cut, Some(&held), &network, 1150).unwrap_err();
    assert!(matches!(err, CacheError::Decompress(_)), "{err}");
    let bomb = Download {
        form: AnswerForm::Full,
        bytes: compress(&vec![b'a'; MAX_CONSENSUS_LEN + 1]),
    };
    let err = accept_answer(bomb, Some(&held), &network, 1150).unwrap_err();
    assert!(
        matches!(err, CacheError::Decompress(DecompressError::TooLarge(_))),
        "{err}"
    );
    let not_text = Download {
        form: AnswerForm::Full,
        bytes: compress(&[0xff, 0xfe]),
    };
    assert!(matches!(
        accept_answer(not_text, Some(&held), &network, 1150),
        Err(CacheError::NotText)
    ));
    let bad_diff = Download {
        form: AnswerForm::Diff,
        bytes: compress(b"no diff at all\n"),
    };
    assert!(matches!(
        accept_answer(bad_diff.clone(), Some(&held), &network, 1150),
        Err(CacheError::Diff(_))
    ));
    assert!(matches!(
        accept_answer(bad_diff, None, &network, 1150),
        Err(CacheError::DiffWithoutBase)
    ));
}

/// An answer announced over the cap is refused before any byte of it is held; one that
/// withholds says so.
#[test]
fn oversized_and_withheld_answers_are_refused() {
    let mut d = DirDownload::new(MAX_CONSENSUS_LEN);
    let len = u32::try_from(MAX_CONSENSUS_LEN + 1).unwrap();
    let err = d
        .push(DirMsg::Answer {
            form: AnswerForm::Full,
            len,
        })
        .unwrap_err();
    assert_eq!(
        err,
        DownloadError::TooLarge {
            len,
            max: MAX_CONSENSUS_LEN
        }
    );
    assert!(CacheError::from(err).to_string().contains("over the limit"));
    let (_, network) = network();
    let withheld = Download {
        form: AnswerForm::Unavailable,
        bytes: Vec::new(),
    };
    assert!(matches!(
        accept_answer(withheld, None, &network, 0),
        Err(CacheError::Unavailable)
    ));
}

#[test]
fn guards_are_asked_while_the_consensus_held_is_at_most_a_day_and_two_periods_old() {
    let c = testing::consensus(testing::relays(3), 1000, 4600, 11_800);
    assert!(guards_asked_holding(&c, 1000));
    assert!(guards_asked_holding(&c, 11_800), "valid");
    assert!(
        guards_asked_holding(&c, 1000 + 26 * 3600),
        "expired, a cache keeps it"
    );
    assert!(!guards_asked_holding(&c, 1001 + 26 * 3600));
    // A consensus valid for longer than the caches keep one is asked for while valid.
    let long = testing::consensus(testing::relays(3), 1000, 4600, 200_000);
    assert!(guards_asked_holding(&long, 200_000));
    assert!(!guards_asked_holding(&long, 200_001));
}

#[test]
fn guards_come_first_only_once_a_recent_consensus_is_held() {
    let [a, b, c] = [RelayId([1; 20]), RelayId([2; 20]), RelayId([3; 20])];
    assert_eq!(
        sources(true, &[a, b, c]),
        [Source::Guard(a), Source::Guard(b), Source::Authorities]
    );
    assert_eq!(sources(true, &[a]), [Source::Guard(a), Source::Authorities]);
    assert_eq!(sources(true, &[]), [Source::Authorities]);
    assert_eq!(sources(false, &[a, b]), [Source::Authorities]);
}
