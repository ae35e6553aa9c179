//! Relay messages (including the mailbox protocol) and fragment reassembly: never panic;
//! whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shallot_proto::relay_msg::{Reassembler, RelayMsg, MAX_RELAY_MSG_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = RelayMsg::decode(data) {
        assert_eq!(msg.encode().expect("decoded messages encode"), data);
    }
    let mut r = Reassembler::new(MAX_RELAY_MSG_LEN);
    for chunk in data.chunks(458) {
        if r.push(chunk).is_err() {
            break;
        }
    }
});
