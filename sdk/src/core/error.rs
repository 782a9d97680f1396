//! Machine-readable error codes shared by server-stub (JSON bodies `{error, code}`, WebSocket
//! error frames) and the SDK (JS errors with `.code`). This is the one place a code is named,
//! classed by fault ([`ErrorCode::fault`]) and mapped to its HTTP status
//! ([`ErrorCode::http_status`]).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A machine-readable error code. Serialized as its snake_case name, e.g. `"lane_not_negotiated"`.
///
/// Each code has one fault class ([`ErrorCode::fault`], the rustls split): the peer's bytes
/// ([`Fault::Decode`]), the peer's protocol ([`Fault::PeerMisbehaved`]), the caller's API use
/// ([`Fault::ApiMisuse`]), a policy refusal ([`Fault::Refused`]), a passing condition
/// ([`Fault::Transient`]) or the local platform ([`Fault::Local`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Request body is not valid JSON of the expected shape.
    BadRequest,
    /// Bytes that are not a frame ([`crate::core::frame::FrameError`]).
    BadFrame,
    /// A payload that does not decode ([`crate::core::codec::CodecError`]).
    BadPayload,
    /// A Control message of unknown `type` or shape.
    BadControl,
    /// A frame names a dictionary version the receiver does not have.
    UnknownDictionary,
    /// A frame or message larger than the receiver's limit.
    FrameTooLarge,
    /// The handshake offered a lane id outside 1..=8.
    UnknownLane,
    /// The handshake did not offer lane 1 (Control), which carries the session's protocol.
    ControlLaneRequired,
    /// No transport both sides support.
    NoCommonTransport,
    /// No payload encoding both sides support.
    NoCommonEncoding,
    /// The session id is unknown, expired or deleted.
    SessionNotFound,
    /// A message on a lane the session did not negotiate.
    LaneNotNegotiated,
    /// A routed message names a session that is not connected.
    UnknownTarget,
    /// A room-relayed message while not in a room.
    NotInRoom,
    /// A field value outside what is allowed (e.g. an empty room name).
    InvalidArgument,
    /// A queue is full; wait for the `drain` event and retry.
    Backpressure,
    /// The client is closed.
    Closed,
    /// The connection could not be established.
    ConnectFailed,
    /// The server is shutting down or an internal error happened (details are logged only).
    Internal,
    /// A music-room change from a member that is not the room's controller (DJ).
    NotController,
    /// A music-room change names a controller epoch ahead of the receiver's: the sender's view
    /// of who controls the room differs; it should resync from the room state.
    EpochMismatch,
    /// PWA cache protection: the page is still stale although it was loaded after the allowed
    /// purge-and-reload for the server's version; the SDK does not reload again.
    StaleAfterPurge,
    /// The request is not allowed from where it came (e.g. an admin endpoint called from
    /// another machine or another origin).
    Forbidden,
    /// The signaling server (`GET /api/signaling`, PROTOCOL.md §13.7): `auth` failed (unknown
    /// or expired session, wrong signature), or `join` / `offer` / ... before `auth_ok`.
    Unauthorized,
    /// The multiplexer's per-peer reassembly memory limit would be exceeded by a chunk: the
    /// peer sends more partial messages than allowed (PROTOCOL.md "Multiplexer (v2 frames)").
    ReassemblyLimit,
    /// The peer sent well-formed frames that break the multiplexer protocol (e.g. an ack of
    /// a sequence number never sent).
    ProtocolViolation,
    /// A WebRTC operation of the peer mesh failed (creating a connection or DataChannel,
    /// `setLocalDescription`, `setRemoteDescription`, `addIceCandidate`, `getStats`); the
    /// message names the operation and the browser's error.
    WebrtcFailed,
    /// Browser storage (IndexedDB) cannot be used here: missing (some private modes, opaque
    /// origins), blocked, or failing (PROTOCOL.md §13.3 "Browser storage").
    StorageUnavailable,
    /// Browser storage refused a write because the origin's quota is used up.
    QuotaExceeded,
    /// A stored record does not have the documented shape: it is reported, never replaced
    /// silently (the app decides, e.g. `OfflineChangeQueue.remove`).
    StorageCorrupt,
    /// A `POST` to an SSE lane carried a `P3-Seq` above the next one the server expects for
    /// that session and lane (a message in between never arrived; PROTOCOL.md §14.6). The
    /// answer's `P3-Seq-Expected` header names the next seq. HTTP 409.
    SeqGap,
    /// A `POST` repeated a `P3-Seq` whose first request is still being processed (as the
    /// Idempotency-Key draft's 409 Conflict). Retry later. HTTP 409.
    SeqInProgress,
    /// A `POST` repeated the last `P3-Seq` of its lane with another message (lane, `to`,
    /// content type or body differ; as the Idempotency-Key draft's 422). HTTP 422.
    SeqReused,
    /// The SDK gave up sending a message over SSE after its bounded retries (network errors,
    /// timeouts, `backpressure`): its delivery is unknown (PROTOCOL.md §14.6).
    SendFailed,
    /// A rate limit (GCRA, per client IP or per session and lane) refused the request or
    /// message; retry after `retryAfterMs` (Control `error`) or `Retry-After` (HTTP 429).
    RateLimited,
    /// The room has its maximum number of members (`--max-room-members`).
    RoomFull,
    /// A server-wide or per-client count is at its bound: sessions, rooms, SSE streams or
    /// connections (`--max-sessions`, `--max-sessions-per-ip`, `--max-rooms`, ...).
    TooManyRequests,
    /// A request body or field is over its documented size bound (HTTP 413).
    PayloadTooLarge,
    /// A payload decodes into more values, or deeper nesting, than the decode budget allows.
    PayloadTooComplex,
    /// A bounded per-room or per-push count (music changes per push, per origin, origins per
    /// room) would be exceeded; nothing of the request was applied.
    LimitExceeded,
    /// A number the client supplied is outside the accepted range (e.g. an epoch far above the
    /// room's, or one whose successor would overflow); nothing was applied.
    OutOfRange,
    /// SDK only: no cryptographically secure random source (`globalThis.crypto.getRandomValues`)
    /// where one is needed (sealer salts for peer control, PROTOCOL.md §13.4); the SDK never
    /// falls back to `Math.random`.
    CryptoUnavailable,
    /// The room's access policy (`--room-access authenticated` or `token`) needs a verified
    /// identity and the session has none (or its identity expired): sign in (SIWE or an app
    /// JWT) with a new handshake. HTTP 401.
    AuthRequired,
    /// The handshake's `auth` did not verify; the body's `reason`
    /// ([`crate::core::auth::AuthReason`]) says why. HTTP 401.
    AuthInvalid,
    /// A call (`POST /api/nexus/calls/initiate`, PROTOCOL.md §13.16) names an identity with no
    /// live session that can be rung (unknown, offline, or none on the Messaging lane).
    /// HTTP 404.
    CalleeUnavailable,
    /// The callee declined the call (`call-declined`); the SDK rejects `call()` with it.
    CallDeclined,
    /// The call rang for its timeout unanswered, or ended before it was accepted; the SDK
    /// rejects `call()` with it.
    CallEnded,
    /// A call id that is unknown, over, or not one this session may answer or end. HTTP 404.
    CallUnknown,
    /// A payload references a learned shape (PROTOCOL.md §8.3) whose definition the receiver
    /// does not hold (it missed it, or reset with the lane's epoch or session): nothing was
    /// decoded; the sender redefines its shapes on next use (resync) and may send again.
    ShapeUnknown,
}

impl ErrorCode {
    /// The wire/JS name, e.g. `"backpressure"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadPayload => "bad_payload",
            ErrorCode::BadControl => "bad_control",
            ErrorCode::UnknownDictionary => "unknown_dictionary",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownLane => "unknown_lane",
            ErrorCode::ControlLaneRequired => "control_lane_required",
            ErrorCode::NoCommonTransport => "no_common_transport",
            ErrorCode::NoCommonEncoding => "no_common_encoding",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::LaneNotNegotiated => "lane_not_negotiated",
            ErrorCode::UnknownTarget => "unknown_target",
            ErrorCode::NotInRoom => "not_in_room",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Backpressure => "backpressure",
            ErrorCode::Closed => "closed",
            ErrorCode::ConnectFailed => "connect_failed",
            ErrorCode::Internal => "internal",
            ErrorCode::NotController => "not_controller",
            ErrorCode::EpochMismatch => "epoch_mismatch",
            ErrorCode::StaleAfterPurge => "stale_after_purge",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ReassemblyLimit => "reassembly_limit",
            ErrorCode::ProtocolViolation => "protocol_violation",
            ErrorCode::WebrtcFailed => "webrtc_failed",
            ErrorCode::StorageUnavailable => "storage_unavailable",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::StorageCorrupt => "storage_corrupt",
            ErrorCode::SeqGap => "seq_gap",
            ErrorCode::SeqInProgress => "seq_in_progress",
            ErrorCode::SeqReused => "seq_reused",
            ErrorCode::SendFailed => "send_failed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::PayloadTooComplex => "payload_too_complex",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::CryptoUnavailable => "crypto_unavailable",
            ErrorCode::AuthRequired => "auth_required",
            ErrorCode::AuthInvalid => "auth_invalid",
            ErrorCode::CalleeUnavailable => "callee_unavailable",
            ErrorCode::CallDeclined => "call_declined",
            ErrorCode::CallEnded => "call_ended",
            ErrorCode::CallUnknown => "call_unknown",
            ErrorCode::ShapeUnknown => "shape_unknown",
        }
    }
}

/// Who is at fault for an error, which decides what a receiver does with it. The split of
/// rustls (`InvalidMessage` / `PeerMisbehaved` / API misuse), plus refusals and transient
/// conditions that are nobody's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fault {
    /// Bad bytes from the wire: not a frame, a payload that does not decode, over a size
    /// bound. The peer is broken: a multiplexed transport closes (close code 1002).
    Decode,
    /// Well-formed bytes that break the protocol (an ack of a sequence never sent, a lane
    /// outside the negotiated set, a seq gap). The peer is broken: a multiplexed transport
    /// closes.
    PeerMisbehaved,
    /// The caller's own mistake (an invalid argument, a send after close); never caused by
    /// untrusted data. Nothing was sent; fix the call.
    ApiMisuse,
    /// A valid request the other side declines by policy or state: credentials, access, an
    /// unknown session or call, a full room, a non-controller's change. Retrying the same
    /// request gets the same answer; change it (sign in, handshake again, resync).
    Refused,
    /// A passing condition: backpressure, a rate limit, an outage, a server restart. The same
    /// request may succeed later (after `drain`, `retryAfterMs` or a reconnect).
    Transient,
    /// The local platform cannot do it (browser storage, a CSPRNG, WebRTC); not the peer's
    /// fault, and not fixed by retrying on this device.
    Local,
}

impl Fault {
    /// Whether an error of this class, raised while decoding what a peer sent, means the peer
    /// is broken and the transport should close ([`Fault::Decode`], [`Fault::PeerMisbehaved`]).
    pub fn closes_transport(self) -> bool {
        matches!(self, Fault::Decode | Fault::PeerMisbehaved)
    }
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 49] = [
        ErrorCode::BadRequest,
        ErrorCode::BadFrame,
        ErrorCode::BadPayload,
        ErrorCode::BadControl,
        ErrorCode::UnknownDictionary,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownLane,
        ErrorCode::ControlLaneRequired,
        ErrorCode::NoCommonTransport,
        ErrorCode::NoCommonEncoding,
        ErrorCode::SessionNotFound,
        ErrorCode::LaneNotNegotiated,
        ErrorCode::UnknownTarget,
        ErrorCode::NotInRoom,
        ErrorCode::InvalidArgument,
        ErrorCode::Backpressure,
        ErrorCode::Closed,
        ErrorCode::ConnectFailed,
        ErrorCode::Internal,
        ErrorCode::NotController,
        ErrorCode::EpochMismatch,
        ErrorCode::StaleAfterPurge,
        ErrorCode::Forbidden,
        ErrorCode::Unauthorized,
        ErrorCode::ReassemblyLimit,
        ErrorCode::ProtocolViolation,
        ErrorCode::WebrtcFailed,
        ErrorCode::StorageUnavailable,
        ErrorCode::QuotaExceeded,
        ErrorCode::StorageCorrupt,
        ErrorCode::SeqGap,
        ErrorCode::SeqInProgress,
        ErrorCode::SeqReused,
        ErrorCode::SendFailed,
        ErrorCode::RateLimited,
        ErrorCode::RoomFull,
        ErrorCode::TooManyRequests,
        ErrorCode::PayloadTooLarge,
        ErrorCode::PayloadTooComplex,
        ErrorCode::LimitExceeded,
        ErrorCode::OutOfRange,
        ErrorCode::CryptoUnavailable,
        ErrorCode::AuthRequired,
        ErrorCode::AuthInvalid,
        ErrorCode::CalleeUnavailable,
        ErrorCode::CallDeclined,
        ErrorCode::CallEnded,
        ErrorCode::CallUnknown,
        ErrorCode::ShapeUnknown,
    ];

    /// The fault class of this code as it arrives on the wire (see [`Fault`]). A typed local
    /// error that knows more says so itself (e.g. [`crate::core::mux::MuxError::fault`]: a
    /// message the caller made too large is [`Fault::ApiMisuse`] although its code,
    /// `frame_too_large`, is [`Fault::Decode`] when a peer sends it).
    pub fn fault(self) -> Fault {
        use ErrorCode as C;
        match self {
            C::BadRequest
            | C::BadFrame
            | C::BadPayload
            | C::BadControl
            | C::UnknownDictionary
            | C::FrameTooLarge
            | C::PayloadTooLarge
            | C::PayloadTooComplex => Fault::Decode,
            C::UnknownLane
            | C::ControlLaneRequired
            | C::LaneNotNegotiated
            | C::ReassemblyLimit
            | C::ProtocolViolation
            | C::SeqGap
            | C::SeqReused
            | C::LimitExceeded
            | C::OutOfRange => Fault::PeerMisbehaved,
            C::InvalidArgument | C::Closed | C::NotInRoom => Fault::ApiMisuse,
            C::NoCommonTransport
            | C::NoCommonEncoding
            | C::SessionNotFound
            | C::UnknownTarget
            | C::NotController
            | C::EpochMismatch
            | C::StaleAfterPurge
            | C::Forbidden
            | C::Unauthorized
            | C::RoomFull
            | C::AuthRequired
            | C::AuthInvalid
            | C::CalleeUnavailable
            | C::CallDeclined
            | C::CallEnded
            | C::CallUnknown => Fault::Refused,
            C::Backpressure
            | C::ConnectFailed
            | C::Internal
            | C::SeqInProgress
            | C::SendFailed
            | C::RateLimited
            | C::TooManyRequests
            | C::ShapeUnknown => Fault::Transient,
            C::WebrtcFailed
            | C::StorageUnavailable
            | C::QuotaExceeded
            | C::StorageCorrupt
            | C::CryptoUnavailable => Fault::Local,
        }
    }

    /// The HTTP status of an answer carrying this code (PROTOCOL.md §7), when the server's own
    /// logic raises it: 404 unknown session or call, 401 credentials, 413 over a size bound,
    /// 429 rate or count limits, 409 a full room, 403 forbidden, 500 internal, else 400. A
    /// route may answer a documented other status (e.g. 409 `seq_gap`, PROTOCOL.md §14.6).
    pub fn http_status(self) -> u16 {
        use ErrorCode as C;
        match self {
            C::SessionNotFound | C::CalleeUnavailable | C::CallUnknown => 404,
            C::Unauthorized | C::AuthRequired | C::AuthInvalid => 401,
            C::FrameTooLarge | C::PayloadTooLarge => 413,
            C::RateLimited | C::TooManyRequests => 429,
            C::RoomFull => 409,
            C::Forbidden => 403,
            C::Internal => 500,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A coded error as it travels: JSON body of a 4xx/5xx answer and payload of a Control
/// `error` message: `{"error": "<human text>", "code": "<ErrorCode>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {error}")]
pub struct WireError {
    /// Human-readable description.
    pub error: String,
    /// Machine-readable code.
    pub code: ErrorCode,
}

impl WireError {
    /// A wire error with `code` and message `error`.
    pub fn new(code: ErrorCode, error: impl Into<String>) -> WireError {
        WireError {
            error: error.into(),
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` lists every variant of the enum (counted in this file's source), once.
    #[test]
    fn all_lists_every_code_once() {
        let src = include_str!("error.rs");
        let body = &src[src.find("pub enum ErrorCode {").unwrap()..];
        let body = &body[..body.find("\n}").unwrap()];
        let variants = body
            .lines()
            .filter(|l| {
                let t = l.trim();
                l.starts_with("    ") && !t.starts_with("//") && t.ends_with(',')
            })
            .count();
        assert_eq!(variants, ErrorCode::ALL.len());
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    /// Every code has a fault class, and it agrees with what the code means on the wire: a
    /// peer's bad bytes or protocol closes the transport, a 401/403/404 is a refusal, a 429 or
    /// 500 is transient, and only the peer's faults close a multiplexed transport.
    #[test]
    fn every_code_has_a_consistent_fault() {
        for code in ErrorCode::ALL {
            let fault = code.fault();
            let status = code.http_status();
            match status {
                401 | 403 | 404 | 409 => assert_eq!(fault, Fault::Refused, "{code}"),
                429 | 500 => assert_eq!(fault, Fault::Transient, "{code}"),
                413 => assert_eq!(fault, Fault::Decode, "{code}"),
                _ => assert_eq!(status, 400, "{code}"),
            }
            assert_eq!(
                fault.closes_transport(),
                matches!(fault, Fault::Decode | Fault::PeerMisbehaved),
                "{code}"
            );
        }
        for (code, fault) in [
            (ErrorCode::BadFrame, Fault::Decode),
            (ErrorCode::ProtocolViolation, Fault::PeerMisbehaved),
            (ErrorCode::InvalidArgument, Fault::ApiMisuse),
            (ErrorCode::AuthInvalid, Fault::Refused),
            (ErrorCode::Backpressure, Fault::Transient),
            (ErrorCode::QuotaExceeded, Fault::Local),
        ] {
            assert_eq!(code.fault(), fault, "{code}");
        }
    }

    #[test]
    fn serde_name_matches_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().into()));
        }
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::LaneNotNegotiated,
            ErrorCode::Backpressure,
            ErrorCode::NotController,
            ErrorCode::EpochMismatch,
            ErrorCode::StaleAfterPurge,
            ErrorCode::Forbidden,
            ErrorCode::Unauthorized,
            ErrorCode::ReassemblyLimit,
            ErrorCode::ProtocolViolation,
            ErrorCode::WebrtcFailed,
            ErrorCode::StorageUnavailable,
            ErrorCode::QuotaExceeded,
            ErrorCode::StorageCorrupt,
            ErrorCode::SeqGap,
            ErrorCode::SeqInProgress,
            ErrorCode::SeqReused,
            ErrorCode::SendFailed,
            ErrorCode::RateLimited,
            ErrorCode::RoomFull,
            ErrorCode::TooManyRequests,
            ErrorCode::PayloadTooLarge,
            ErrorCode::PayloadTooComplex,
            ErrorCode::LimitExceeded,
            ErrorCode::OutOfRange,
            ErrorCode::CryptoUnavailable,
            ErrorCode::AuthRequired,
            ErrorCode::AuthInvalid,
            ErrorCode::CalleeUnavailable,
            ErrorCode::CallDeclined,
            ErrorCode::CallEnded,
            ErrorCode::CallUnknown,
            ErrorCode::ShapeUnknown,
        ] {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().into()));
        }
    }
}
