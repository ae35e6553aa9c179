//! End-to-end circuit flow control: windows of cells acknowledged with SENDME
//! (`docs/spec.md` §4.6).
//!
//! Each end of a circuit's conversation (the client and the hop it talks to) may have at most
//! [`WINDOW_START`] counted cells outstanding toward the other. The receiver acknowledges every
//! [`WINDOW_INCREMENT`] counted cells it has consumed with one SENDME message, which the sender
//! adds back to its window. Cells carrying a SENDME message are not counted. A receiver that
//! gets more cells than the window allows, or a sender that gets a SENDME for cells it never
//! sent, treats it as a protocol violation.

use thiserror::Error;

/// Cells a sender may have unacknowledged.
pub const WINDOW_START: u32 = 500;
/// Cells acknowledged by one SENDME.
pub const WINDOW_INCREMENT: u32 = 50;

/// A flow-control rule was broken by the peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FlowError {
    /// The peer sent more cells than its window allowed.
    #[error("peer exceeded its flow-control window")]
    WindowExceeded,
    /// The peer acknowledged cells that were never sent.
    #[error("unexpected SENDME")]
    UnexpectedSendme,
}

/// The sending side's window.
#[derive(Debug, Clone)]
pub struct SendWindow {
    window: u32,
}

impl Default for SendWindow {
    fn default() -> Self {
        SendWindow {
            window: WINDOW_START,
        }
    }
}

impl SendWindow {
    /// How many more counted cells may be sent now.
    pub fn available(&self) -> u32 {
        self.window
    }

    /// Takes `n` cells from the window; returns false (taking nothing) if they do not fit.
    pub fn take(&mut self, n: u32) -> bool {
        if n > self.window {
            return false;
        }
        self.window -= n;
        true
    }

    /// A SENDME arrived.
    pub fn sendme(&mut self) -> Result<(), FlowError> {
        if self.window + WINDOW_INCREMENT > WINDOW_START {
            return Err(FlowError::UnexpectedSendme);
        }
        self.window += WINDOW_INCREMENT;
        Ok(())
    }
}

/// The receiving side's window.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    window: u32,
    unacked: u32,
}

impl Default for RecvWindow {
    fn default() -> Self {
        RecvWindow {
            window: WINDOW_START,
            unacked: 0,
        }
    }
}

impl RecvWindow {
    /// Counted cells the peer may still send before it must wait for a SENDME.
    pub fn remaining(&self) -> u32 {
        self.window
    }

    /// `n` counted cells were received and consumed. Returns how many SENDMEs to send now.
    pub fn received(&mut self, n: u32) -> Result<u32, FlowError> {
        if n > self.window {
            return Err(FlowError::WindowExceeded);
        }
        self.window -= n;
        self.unacked += n;
        let sendmes = self.unacked / WINDOW_INCREMENT;
        self.unacked %= WINDOW_INCREMENT;
        self.window += sendmes * WINDOW_INCREMENT;
        Ok(sendmes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_closes_and_reopens() {
        let mut s = SendWindow::default();
        assert!(s.take(WINDOW_START));
        assert!(!s.take(1));
        s.sendme().unwrap();
        assert_eq!(s.available(), WINDOW_INCREMENT);
        assert!(s.take(WINDOW_INCREMENT));
    }

    #[test]
    fn unexpected_sendme_is_an_error() {
        let mut s = SendWindow::default();
        assert_eq!(s.sendme(), Err(FlowError::UnexpectedSendme));
    }

    #[test]
    fn receiver_refuses_an_overrun() {
        let mut r = RecvWindow::default();
        // A sender that never waits for SENDMEs but whose SENDMEs were sent keeps going; one
        // that ignores its window entirely is caught.
        assert_eq!(r.received(WINDOW_INCREMENT - 1).unwrap(), 0);
        assert_eq!(r.received(1).unwrap(), 1);
        let mut greedy = RecvWindow::default();
        assert_eq!(
            greedy.received(WINDOW_START + 1),
            Err(FlowError::WindowExceeded)
        );
    }

    proptest! {
        /// A sender and receiver that follow the rules never error and never stall: whenever
        /// the sender's window is empty, a SENDME is on its way.
        #[test]
        fn honest_ends_never_stall(wants in proptest::collection::vec(1u32..120, 1..400)) {
            let mut s = SendWindow::default();
            let mut r = RecvWindow::default();
            let mut in_flight = 0u32;
            for want in wants {
                let n = want.min(s.available());
                if n == 0 {
                    prop_assert!(in_flight > 0, "stalled with no SENDME in flight");
                    s.sendme().unwrap();
                    in_flight -= 1;
                    continue;
                }
                prop_assert!(s.take(n));
                in_flight += r.received(n).unwrap();
                // SENDMEs arrive late: deliver one only when two are waiting.
                if in_flight > 1 {
                    s.sendme().unwrap();
                    in_flight -= 1;
                }
            }
        }
    }
}
