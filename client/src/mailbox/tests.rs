//! Routing of what comes up a mailbox circuit: only the last hop is listened to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn waiting(p: &mut Pending, req: u32) -> oneshot::Receiver<Answer> {
    let (tx, rx) = oneshot::channel();
    p.answers.insert(req, tx);
    rx
}

fn ok(req: u32) -> RelayMsg {
    RelayMsg::Mailbox(MailboxMsg::Result {
        req,
        status: Status::Ok,
        count: 0,
    })
}

#[test]
fn a_result_forged_by_the_guard_or_middle_is_not_taken_for_the_relays() {
    let mut p = Pending::default();
    let mut rx = waiting(&mut p, 7);
    // The guard (or middle) originates RESULT(Ok) for a deposit it dropped.
    assert!(!route(&mut p, false, ok(7)));
    assert!(rx.try_recv().is_err(), "the deposit is still unanswered");
    assert!(p.answers.contains_key(&7));
    // The mailbox relay's own answer is still heard.
    assert!(route(&mut p, true, ok(7)));
    assert!(matches!(rx.try_recv(), Ok(Answer::Result(Status::Ok, 0))));
}

#[test]
fn bundles_and_envelopes_from_an_earlier_hop_are_ignored_too() {
    let mut p = Pending::default();
    let mut rx = waiting(&mut p, 1);
    let bundle = RelayMsg::Mailbox(MailboxMsg::Bundle {
        req: 1,
        bundle: b"forged".to_vec(),
    });
    assert!(!route(&mut p, false, bundle));
    assert!(rx.try_recv().is_err());

    let (tx, mut stream) = mpsc::unbounded_channel();
    p.streams.insert(2, tx);
    let envelope = |id: u8| {
        RelayMsg::Mailbox(MailboxMsg::Envelope {
            req: 2,
            id: EnvelopeId([id; 16]),
            envelope: vec![id],
        })
    };
    assert!(!route(&mut p, false, envelope(1)));
    assert!(stream.try_recv().is_err());
    assert!(route(&mut p, true, envelope(2)));
    assert_eq!(stream.try_recv().unwrap().1, vec![2]);
}

#[test]
fn an_answer_to_no_request_is_dropped() {
    let mut p = Pending::default();
    assert!(!route(&mut p, true, ok(9)));
    let refused = RelayMsg::Mailbox(MailboxMsg::Result {
        req: 3,
        status: Status::Full,
        count: 0,
    });
    let (tx, _stream) = mpsc::unbounded_channel();
    p.streams.insert(3, tx);
    route(&mut p, true, refused);
    assert!(p.streams.is_empty(), "a refused fetch's stream ends");
}
