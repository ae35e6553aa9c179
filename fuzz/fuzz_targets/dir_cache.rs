//! A directory cache's answer as a client reads it: the bytes are a sequence of relay
//! messages, each after a one-byte length; every directory message among them goes to a
//! `DirDownload`. Never panics, never holds more than its cap, and whatever decodes
//! re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_proto::dir_cache::DirDownload;
use shallot_proto::relay_msg::RelayMsg;

const CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut download = DirDownload::new(CAP);
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (raw, tail) = tail.split_at(n);
        rest = tail;
        let Ok(msg) = RelayMsg::decode(raw) else {
            continue;
        };
        assert_eq!(msg.encode().expect("decoded messages encode"), raw);
        let RelayMsg::Dir(m) = msg else { continue };
        match download.push(m) {
            Ok(Some(done)) => assert!(done.bytes.len() <= CAP),
            Ok(None) => assert!(download.progress().0 <= CAP),
            Err(_) => break,
        }
    }
});
