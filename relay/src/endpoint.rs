//! What a relay does with a relay message delivered to it (`docs/spec.md` §4.5): flow
//! control, the data echo, extend requests, and mailbox requests (handed to the mailbox
//! service).

use std::sync::Arc;

use shallot_proto::cell::DestroyReason;
use shallot_proto::relay_msg::RelayMsg;

use crate::circuit::{CircState, Circuit};
use crate::core::Core;

/// Acts on one message delivered to this hop. An error destroys the circuit with that reason.
pub(crate) fn handle(
    core: &Arc<Core>,
    circ: &Arc<Circuit>,
    st: &mut CircState,
    msg: RelayMsg,
) -> Result<(), DestroyReason> {
    match msg {
        RelayMsg::Sendme => circ.on_sendme(core, st),
        RelayMsg::Data(bytes) => circ.send_msg(core, st, &RelayMsg::Data(bytes)),
        RelayMsg::Extend(ext) => {
            if st.next.is_some() || st.extending {
                return Err(DestroyReason::Protocol);
            }
            st.extending = true;
            tokio::spawn(crate::extend::run(core.clone(), circ.clone(), ext));
            Ok(())
        }
        RelayMsg::Mailbox(m) => crate::mailbox::dispatch(core, circ, st, m),
        // Only a relay sends this, toward the client.
        RelayMsg::Extended(_) => Err(DestroyReason::Protocol),
    }
}
