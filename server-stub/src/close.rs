//! Every WebSocket close code the server sends, in one place (RFC 6455 §7.4 plus the 4xxx
//! private range; PROTOCOL.md §5 "Close codes"), the per-socket "close this socket" signal, and
//! the mapping from a read error to its close code. Used by the session WebSocket
//! ([`crate::ws`]) and the seed 001 signaling server ([`crate::signaling`]).

use tokio::sync::watch;

/// Rate limited: the socket kept sending past `--rate-strikes` refused frames within 10 s
/// (PROTOCOL.md §15); the client reconnects after a backoff.
pub use p3_lanes::core::client::CLOSE_RATE_LIMITED as RATE_LIMITED;
pub use p3_lanes::core::client::CLOSE_SESSION_NOT_FOUND as SESSION_NOT_FOUND;
/// Unauthorized: the socket was opened without a valid ticket (missing, unknown, used,
/// expired; or an unknown session: the same answer), issue 12.
pub use p3_lanes::core::client::CLOSE_UNAUTHORIZED as UNAUTHORIZED;
/// Normal closure (the peer closed, or the server ended the socket without a reason).
pub const NORMAL: u16 = 1000;
/// Going away: the server is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// Protocol error at the WebSocket layer, or a fatal multiplexer error.
pub const PROTOCOL: u16 = 1002;
/// A WebSocket message larger than twice `--max-frame-bytes`, or a multiplexed message
/// declared larger than `--max-frame-bytes` (after an `error` `frame_too_large`).
pub const TOO_BIG: u16 = 1009;
/// Internal error: the server lost this socket's state (a panic); the client reconnects.
pub const INTERNAL_ERROR: u16 = 1011;
/// Try again later: this socket's outbound queue overflowed with protocol (Control or server)
/// messages, which are never dropped silently; the client reconnects and rejoins.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// No frame received for `--heartbeat-timeout-ms` (seed 001 `HEARTBEAT_TIMEOUT`).
pub const HEARTBEAT_TIMEOUT: u16 = 4408;
/// Another socket opened for the same session and replaced this one.
pub const REPLACED: u16 = 4409;

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
}
