//! Every WebSocket close code of the protocol, in one table (RFC 6455 §7.4.1 plus the 4xxx
//! private range; PROTOCOL.md "Close codes"). The SDK (driver and [`crate::core::client`])
//! and server-stub (`server_stub::close`) both name codes from here, so the numbers exist
//! once.
//!
//! The 4xxx codes mirror the HTTP status of the same meaning (4401 ~ 401, 4404 ~ 404,
//! 4408 ~ 408, 4409 ~ 409, 4429 ~ 429).

/// Normal closure: the client closed, or the server ended the socket without a reason.
pub const NORMAL: u16 = 1000;
/// Going away: the server is shutting down.
pub const GOING_AWAY: u16 = 1001;
/// Protocol error at the WebSocket layer, or a fatal multiplexer error (a peer fault,
/// [`crate::core::error::Fault::closes_transport`]).
pub const PROTOCOL: u16 = 1002;
/// Abnormal closure: never sent on the wire (RFC 6455 §7.4.1); a client reports it to its core
/// when the socket dropped without a close frame or could not be created.
pub const ABNORMAL: u16 = 1006;
/// Message too big: a WebSocket message larger than twice `--max-frame-bytes`, or a
/// multiplexed message declared larger than `--max-frame-bytes` (after an `error`
/// `frame_too_large`).
pub const TOO_BIG: u16 = 1009;
/// Internal error: the server lost this socket's state (a panic); the client reconnects.
pub const INTERNAL_ERROR: u16 = 1011;
/// Try again later: the socket's outbound queue overflowed with protocol (Control or server)
/// messages, which are never dropped silently; the client reconnects and rejoins.
pub const TRY_AGAIN_LATER: u16 = 1013;
/// Unauthorized: the socket was opened without a valid ticket (`?ticket=`: missing, unknown,
/// used or expired; also for an unknown session, so a stranger learns nothing). The client
/// starts a new session, as after [`SESSION_NOT_FOUND`], and reports `unauthorized`.
pub const UNAUTHORIZED: u16 = 4401;
/// Session not found: the session is unknown, expired or deleted; the client handshakes again.
pub const SESSION_NOT_FOUND: u16 = 4404;
/// Heartbeat timeout: no frame received for `--heartbeat-timeout-ms` (seed 001
/// `HEARTBEAT_TIMEOUT`).
pub const HEARTBEAT_TIMEOUT: u16 = 4408;
/// Replaced: another socket opened for the same session and replaced this one.
pub const REPLACED: u16 = 4409;
/// Rate limited: the socket kept sending past `--rate-strikes` refused frames within 10 s; the
/// client reconnects no sooner than 10 s later.
pub const RATE_LIMITED: u16 = 4429;

/// The table: every close code with its name, in ascending order. A code the protocol uses is
/// listed here exactly once.
pub const CODES: [(u16, &str); 12] = [
    (NORMAL, "normal"),
    (GOING_AWAY, "going away"),
    (PROTOCOL, "protocol error"),
    (ABNORMAL, "abnormal closure"),
    (TOO_BIG, "message too big"),
    (INTERNAL_ERROR, "internal error"),
    (TRY_AGAIN_LATER, "try again later"),
    (UNAUTHORIZED, "unauthorized"),
    (SESSION_NOT_FOUND, "session not found"),
    (HEARTBEAT_TIMEOUT, "heartbeat timeout"),
    (REPLACED, "replaced"),
    (RATE_LIMITED, "rate limited"),
];

/// The name of close code `code` in [`CODES`], if it is one of the protocol's.
pub fn name(code: u16) -> Option<&'static str> {
    CODES.iter().find(|c| c.0 == code).map(|c| c.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_appears_once_in_order() {
        for w in CODES.windows(2) {
            assert!(w[0].0 < w[1].0, "{:?} before {:?}", w[0], w[1]);
        }
        let mut names: Vec<&str> = CODES.iter().map(|c| c.1).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CODES.len(), "a name appears twice");
    }

    #[test]
    fn codes_are_standard_or_private_range() {
        for (code, name) in CODES {
            assert!(
                (1000..=1015).contains(&code) || (4000..=4999).contains(&code),
                "{name}: {code}"
            );
        }
        assert_eq!(name(4404), Some("session not found"));
        assert_eq!(name(4000), None);
    }
}
