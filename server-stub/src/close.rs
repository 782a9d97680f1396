//! The WebSocket close codes the server sends (re-exported from the core's one table,
//! [`p3_lanes::core::close`]; PROTOCOL.md §5 "Close codes"), the per-socket "close this socket" signal, and
//! the mapping from a read error to its close code. Used by the session WebSocket
//! ([`crate::ws`]) and the seed 001 signaling server ([`crate::signaling`]).

use tokio::sync::watch;

// The numbers live in the core's one table (`p3_lanes::core::close::CODES`), shared with the
// SDK; this module names the ones the server sends.
pub use p3_lanes::core::close::{
    GOING_AWAY, HEARTBEAT_TIMEOUT, INTERNAL_ERROR, NORMAL, PROTOCOL, RATE_LIMITED, REPLACED,
    SESSION_NOT_FOUND, TOO_BIG, TRY_AGAIN_LATER, UNAUTHORIZED,
};

/// Why and how a socket is being closed: WebSocket close code and reason text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// WebSocket close code (one of this module's constants).
    pub code: u16,
    /// Close reason text (≤ 123 bytes).
    pub reason: &'static str,
}

impl CloseReason {
    /// `NORMAL` without a reason.
    pub const NORMAL: CloseReason = CloseReason {
        code: NORMAL,
        reason: "",
    };
}

/// A one-shot "close this socket" signal; the first reason set wins. It may carry a last
/// frame (a Control `error` saying why) that the send task writes before the close frame.
#[derive(Debug)]
pub struct CloseSignal {
    tx: watch::Sender<Option<CloseReason>>,
    farewell: std::sync::Mutex<Option<Vec<u8>>>,
}

impl Default for CloseSignal {
    fn default() -> Self {
        CloseSignal::new()
    }
}

impl CloseSignal {
    /// A signal not set yet.
    pub fn new() -> CloseSignal {
        CloseSignal {
            tx: watch::channel(None).0,
            farewell: std::sync::Mutex::new(None),
        }
    }

    /// [`CloseSignal::close`] that first writes `frame` (a §5 frame, e.g. the Control `error`
    /// that explains the close); `false` (and `frame` dropped) if it already was asked.
    pub fn close_with(&self, code: u16, reason: &'static str, frame: Vec<u8>) -> bool {
        let mut slot = self.farewell.lock().unwrap_or_else(|p| p.into_inner());
        if self.reason().is_some() {
            return false;
        }
        *slot = Some(frame);
        drop(slot);
        self.close(code, reason)
    }

    /// The frame to write before the close frame, once (see [`CloseSignal::close_with`]).
    pub fn take_farewell(&self) -> Option<Vec<u8>> {
        self.farewell
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Asks the socket to close with `code`/`reason`; returns `false` if it already was asked.
    pub fn close(&self, code: u16, reason: &'static str) -> bool {
        self.tx.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(CloseReason { code, reason });
            true
        })
    }

    /// The reason, once set.
    pub fn reason(&self) -> Option<CloseReason> {
        *self.tx.borrow()
    }

    /// Waits until a reason is set and returns it.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow it.
        let reason = match rx.wait_for(Option::is_some).await {
            Ok(r) => *r,
            Err(_) => None,
        };
        reason.unwrap_or(CloseReason::NORMAL)
    }
}

/// The close code for a WebSocket read error: [`TOO_BIG`] for a message over the size limit,
/// else [`PROTOCOL`].
pub fn read_error_close(e: &axum::Error) -> (u16, &'static str) {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<tungstenite::Error>() {
            return match t {
                tungstenite::Error::Capacity(_) => (TOO_BIG, "message too big"),
                _ => (PROTOCOL, "websocket protocol error"),
            };
        }
        source = err.source();
    }
    (PROTOCOL, "websocket error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_signal_keeps_the_first_reason() {
        let c = CloseSignal::new();
        assert!(c.close(REPLACED, "replaced"));
        assert!(!c.close(GOING_AWAY, "later"));
        assert_eq!(c.reason().unwrap().code, REPLACED);
    }

    /// Every code the server sends is in the core's table, under the name the SDK knows it by,
    /// so server and SDK use the same numbers.
    #[test]
    fn server_codes_are_the_cores() {
        use p3_lanes::core::close::{name, CODES};
        let sent = [
            (NORMAL, "normal"),
            (GOING_AWAY, "going away"),
            (PROTOCOL, "protocol error"),
            (TOO_BIG, "message too big"),
            (INTERNAL_ERROR, "internal error"),
            (TRY_AGAIN_LATER, "try again later"),
            (UNAUTHORIZED, "unauthorized"),
            (SESSION_NOT_FOUND, "session not found"),
            (HEARTBEAT_TIMEOUT, "heartbeat timeout"),
            (REPLACED, "replaced"),
            (RATE_LIMITED, "rate limited"),
        ];
        for (code, n) in sent {
            assert_eq!(name(code), Some(n), "{code}");
        }
        assert_eq!(
            p3_lanes::core::client::CLOSE_SESSION_NOT_FOUND,
            SESSION_NOT_FOUND
        );
        // Every code of the table but 1006 (never sent on the wire) is one the server sends.
        assert_eq!(sent.len() + 1, CODES.len());
    }
}
