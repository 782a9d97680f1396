//! Size and count bounds on what one client can make the server hold (issue 11 "Bounds",
//! PROTOCOL.md §15). Each bound is a documented default here, overridable by a flag and an
//! environment variable in [`crate::config::Config`], and answers with a typed refusal:
//!
//! | bound | flag (env) | default | refusal |
//! | --- | --- | --- | --- |
//! | handshake body | `--max-handshake-bytes` (`MAX_HANDSHAKE_BYTES`) | 8192 B | 413 `payload_too_large` |
//! | `clientId` | (core `MAX_CLIENT_ID_BYTES`) | 1..=128 B | 400 `invalid_argument` |
//! | `wallet` | [`MAX_WALLET_BYTES`] | 128 B | 400 `invalid_argument` |
//! | `deviceInfo` size | `--max-device-info-bytes` (`MAX_DEVICE_INFO_BYTES`) | 2048 B serialized | 413 `payload_too_large` |
//! | `deviceInfo` depth | [`MAX_DEVICE_INFO_DEPTH`] | 4 | 400 `invalid_argument` |
//! | values in the body | [`MAX_HANDSHAKE_VALUES`] | 512 | 400 `payload_too_complex` |
//! | `capabilities.*`, `features` | [`MAX_HANDSHAKE_LIST`], [`MAX_HANDSHAKE_NAME_BYTES`] | 16 entries of ≤ 32 B | 400 `invalid_argument` |
//! | sessions in total | `--max-sessions` (`MAX_SESSIONS`) | 10000 | 429 `too_many_requests` |
//! | sessions per client IP | `--max-sessions-per-ip` (`MAX_SESSIONS_PER_IP`) | 256 | 429 `too_many_requests` |
//! | a session that never attached | `--unattached-ttl-s` (`UNATTACHED_TTL_SECONDS`) | 60 s | expires (then 401 `unauthorized`, PROTOCOL.md §2.1) |
//! | rooms in total | `--max-rooms` (`MAX_ROOMS`) | 10000 | Control `error` `too_many_requests` on `join` |
//! | members per room | `--max-room-members` (`MAX_ROOM_MEMBERS`) | 256 | Control `error` `room_full` on `join` |
//! | outbound queue per session and lane | `--lane-queue-bytes` (`LANE_QUEUE_BYTES`) | 1 MiB | `backpressure` to the sender |
//! | SSE streams per session | `--max-sse-streams-per-session` | 8 | 429 `too_many_requests` |
//! | SSE streams per client IP | `--max-sse-per-ip` | 256 | 429 `too_many_requests` |
//! | SSE write | `--sse-write-timeout-ms` | 10000 ms | the stream is closed |
//! | SSE stream age | `--sse-max-age-s` | 3600 s | the stream ends; the client resumes with `Last-Event-ID` |
//! | signaling queue per peer | `--signaling-queue-bytes` | 4 MiB | the message is refused |
//! | Sync-lane payload ([`lane_budget`]) | from `--max-changes-per-push` | arrays and maps of ≤ 2,048 elements, ≤ 32,768 values | `payload_too_complex` |
//!
//! The handshake body is read into memory only up to its bound (a `Content-Length` above it is
//! refused before reading), and it is parsed with the core's decode budget
//! ([`HANDSHAKE_BUDGET`]: nesting and value count checked while the value is built, parsing
//! stops at the first value over it), so what parsing allocates stays within a small multiple
//! of `--max-handshake-bytes` (its strings, plus at most [`MAX_HANDSHAKE_VALUES`] values).

use super::ip::IpKey;
use crate::config::Config;
use crate::error::{ApiJson, AppError};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use p3_lanes::core::codec::{self, CodecError, DecodeBudget};
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::handshake::HandshakeRequest;
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Default `--max-handshake-bytes`: the largest handshake body, bytes.
pub const DEFAULT_MAX_HANDSHAKE_BYTES: usize = 8192;
/// Default `--max-device-info-bytes`: the largest `deviceInfo`, serialized JSON bytes.
pub const DEFAULT_MAX_DEVICE_INFO_BYTES: usize = 2048;
/// Deepest `deviceInfo` nesting: the object itself is depth 1, `{"a": {"b": {"c": {}}}}` is 4.
pub const MAX_DEVICE_INFO_DEPTH: usize = 4;
/// Largest handshake `wallet`, bytes.
pub const MAX_WALLET_BYTES: usize = 128;
/// Most entries in each handshake list: `capabilities.transports`, `capabilities.encodings`,
/// `capabilities.lanes` and `features`.
pub const MAX_HANDSHAKE_LIST: usize = 16;
/// Longest name in `capabilities.transports`, `capabilities.encodings` and `features`, bytes.
pub const MAX_HANDSHAKE_NAME_BYTES: usize = 32;
/// Deepest value of a whole handshake body, the body object being depth 0: the scalars inside
/// a `deviceInfo` of depth [`MAX_DEVICE_INFO_DEPTH`] (itself at depth 1). Checked while the
/// body is parsed ([`HANDSHAKE_BUDGET`]).
pub const MAX_HANDSHAKE_DEPTH: usize = MAX_DEVICE_INFO_DEPTH + 1;
/// Most JSON values in a handshake body (map keys not counted, as in the core's
/// [`DecodeBudget`]), counted while it is parsed: the parsed request stays a small multiple of
/// the body, at most this many `serde_json::Value`s besides the body's own string bytes.
pub const MAX_HANDSHAKE_VALUES: usize = 512;
/// The core's decode budget for a handshake body ([`codec::decode_json_with`]): over
/// [`MAX_HANDSHAKE_DEPTH`] is 400 `invalid_argument`, over [`MAX_HANDSHAKE_VALUES`] 400
/// `payload_too_complex`.
pub const HANDSHAKE_BUDGET: DecodeBudget = DecodeBudget {
    max_nodes: MAX_HANDSHAKE_VALUES,
    max_depth: MAX_HANDSHAKE_DEPTH,
    max_len: MAX_HANDSHAKE_VALUES,
};
/// Values per element of the longest list a Sync-lane payload may hold ([`lane_budget`]): a
/// `music-changes` change is about 12 values (`origin`, `localSeq`, `epoch`, `timestamp` and a
/// `music-control` op), a `change-track` one a few more.
pub const SYNC_VALUES_PER_ELEMENT: usize = 16;

/// The decode budget of a payload on `lane`, with `--max-changes-per-push`
/// `max_changes_per_push` (issue 11 "music-changes bomb"). Sync-lane (7) payloads are music
/// messages, whose longest list is a push's `changes`: no array or map of more than twice
/// `--max-changes-per-push` elements (2,048 by default: a push just over the bound still gets
/// its own `limit_exceeded`, a longer one is refused at its MessagePack header, before any
/// change is decoded), and [`SYNC_VALUES_PER_ELEMENT`] values per such element (32,768 by
/// default). Other lanes: [`DecodeBudget::DEFAULT`]. Over it: `payload_too_complex`.
pub fn lane_budget(lane: p3_lanes::core::lane::Lane, max_changes_per_push: usize) -> DecodeBudget {
    if lane != p3_lanes::core::lane::Lane::Sync {
        return DecodeBudget::DEFAULT;
    }
    let max_len = max_changes_per_push.saturating_mul(2);
    DecodeBudget {
        max_nodes: max_len
            .saturating_mul(SYNC_VALUES_PER_ELEMENT)
            .min(DecodeBudget::DEFAULT.max_nodes),
        max_len,
        ..DecodeBudget::DEFAULT
    }
}

/// Default `--max-sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default `--max-sessions-per-ip`.
pub const DEFAULT_MAX_SESSIONS_PER_IP: usize = 256;
/// Default `--unattached-ttl-s`, s.
pub const DEFAULT_UNATTACHED_TTL_S: u64 = 60;
/// Default `--max-rooms`.
pub const DEFAULT_MAX_ROOMS: usize = 10_000;
/// Default `--max-room-members`.
pub const DEFAULT_MAX_ROOM_MEMBERS: usize = 256;
/// Default `--lane-queue-bytes`: outbound bytes queued per session and lane (1 MiB).
pub const DEFAULT_LANE_QUEUE_BYTES: usize = 1 << 20;
/// Default `--max-sse-streams-per-session`.
pub const DEFAULT_MAX_SSE_STREAMS_PER_SESSION: usize = 8;
/// Default `--max-sse-per-ip`.
pub const DEFAULT_MAX_SSE_PER_IP: usize = 256;
/// Default `--sse-write-timeout-ms`, ms.
pub const DEFAULT_SSE_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Default `--sse-max-age-s`, s.
pub const DEFAULT_SSE_MAX_AGE_S: u64 = 3600;
/// Default `--signaling-queue-bytes`: outbound bytes queued per signaling peer (4 MiB).
pub const DEFAULT_SIGNALING_QUEUE_BYTES: usize = 4 << 20;

/// The peer address of a request (`ConnectInfo<SocketAddr>`, set by [`crate::serve`]); `None`
/// when the app runs without connect info.
#[derive(Clone, Copy, Debug)]
pub struct PeerIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Counts per client address (keyed as the per-IP rate limits are: [`IpKey`]), for the per-IP
/// bounds. Entries at zero are removed.
#[derive(Debug, Default)]
pub struct PerIp(HashMap<IpKey, usize>);

impl PerIp {
    /// The count of `key`.
    pub fn get(&self, key: IpKey) -> usize {
        self.0.get(&key).copied().unwrap_or(0)
    }

    /// One more for `key`.
    pub fn add(&mut self, key: IpKey) {
        *self.0.entry(key).or_default() += 1;
    }

    /// One fewer for `key`.
    pub fn remove(&mut self, key: IpKey) {
        if let Some(n) = self.0.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.0.remove(&key);
            }
        }
    }
}

/// The bounds the session registry enforces (from [`Config`]).
#[derive(Clone, Copy, Debug)]
pub struct RegistryBounds {
    /// `--max-sessions`.
    pub max_sessions: usize,
    /// `--max-sessions-per-ip`.
    pub max_sessions_per_ip: usize,
    /// `--unattached-ttl-s`.
    pub unattached_ttl: Duration,
    /// `--max-rooms`.
    pub max_rooms: usize,
    /// `--max-room-members`.
    pub max_room_members: usize,
    /// `--max-sse-streams-per-session`.
    pub max_sse_streams_per_session: usize,
    /// `--max-sse-per-ip`.
    pub max_sse_per_ip: usize,
    /// An SSE stream not polled by its connection for this long is stalled (its client stopped
    /// reading): `--sse-keepalive-ms` (an idle stream is polled at least that often) plus
    /// `--sse-write-timeout-ms`, ms. A stalled stream ends at its next poll and no longer keeps
    /// its session alive.
    pub sse_stall_ms: u64,
}

impl RegistryBounds {
    /// The registry's bounds in `config`.
    pub fn from_config(config: &Config) -> RegistryBounds {
        RegistryBounds {
            max_sessions: config.max_sessions,
            max_sessions_per_ip: config.max_sessions_per_ip,
            unattached_ttl: Duration::from_secs(config.unattached_ttl_s),
            max_rooms: config.max_rooms,
            max_room_members: config.max_room_members,
            max_sse_streams_per_session: config.max_sse_streams_per_session,
            max_sse_per_ip: config.max_sse_per_ip,
            sse_stall_ms: config
                .sse_keepalive_ms
                .saturating_add(config.sse_write_timeout_ms),
        }
    }
}

/// A count bound reached: `too_many_requests` (HTTP 429) with `error`.
pub fn too_many(error: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::TooManyRequests, error)
}

/// 413 `payload_too_large` with `error`.
pub fn payload_too_large(error: impl Into<String>) -> AppError {
    AppError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        error,
    )
}

/// 400 `invalid_argument` with `error`.
fn invalid(error: impl Into<String>) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, error)
}

/// The body of `POST /api/protocol/v2/session/handshake`, read up to `--max-handshake-bytes`
/// and checked against every handshake bound ([`check_handshake`]).
///
/// Errors: 413 `payload_too_large` (body or `deviceInfo` too big), 400 `invalid_argument` (a
/// field out of bounds, nesting too deep), 400 `payload_too_complex` (more than
/// [`MAX_HANDSHAKE_VALUES`] values), and [`ApiJson`]'s 400/415 `bad_request`.
#[derive(Debug)]
pub struct HandshakeBody(pub HandshakeRequest);

impl FromRequest<Arc<crate::AppState>> for HandshakeBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &Arc<crate::AppState>) -> Result<Self, AppError> {
        let limit = state.config().max_handshake_bytes;
        let too_large = || payload_too_large(format!("handshake body exceeds {limit} bytes"));
        let (parts, body) = req.into_parts();
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            if is_length_limit(&e) {
                too_large()
            } else {
                AppError::bad_request(format!("cannot read the handshake body: {e}"))
            }
        })?;
        // `Content-Type` as `axum::Json` checks it (415 `bad_request`), before any parsing.
        let typed = Request::from_parts(parts, Body::from("0"));
        ApiJson::<serde::de::IgnoredAny>::from_request(typed, state).await?;
        // Nesting and value count are checked while the value is built (the core's decode
        // budget), so an over-budget body stops early and what parsing allocates stays
        // within MAX_HANDSHAKE_VALUES values besides the body's own strings.
        let value = codec::decode_json_with(&bytes, HANDSHAKE_BUDGET).map_err(|e| match e {
            CodecError::TooDeep => invalid(format!(
                "handshake JSON nests deeper than {MAX_HANDSHAKE_DEPTH} (deviceInfo: at most {MAX_DEVICE_INFO_DEPTH})"
            )),
            CodecError::TooComplex => AppError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::PayloadTooComplex,
                format!("handshake JSON has more than {MAX_HANDSHAKE_VALUES} values"),
            ),
            e => AppError::bad_request(format!("Failed to parse the request body as JSON: {e}")),
        })?;
        let hs: HandshakeRequest = serde_json::from_value(value).map_err(|e| {
            AppError::bad_request(format!(
                "Failed to deserialize the JSON body into the target type: {e}"
            ))
        })?;
        check_handshake(&hs, state.config())?;
        Ok(HandshakeBody(hs))
    }
}

/// Whether a body read failed on its length limit (rather than on I/O).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Checks every field bound of a parsed handshake (the table in the module docs); `clientId`
/// is checked by `negotiate`.
///
/// Errors: 400 `invalid_argument` naming the field and its bound, 413 `payload_too_large` for
/// `deviceInfo` above `--max-device-info-bytes`.
pub fn check_handshake(req: &HandshakeRequest, config: &Config) -> Result<(), AppError> {
    if let Some(w) = &req.wallet {
        if w.len() > MAX_WALLET_BYTES {
            return Err(invalid(format!(
                "wallet must be at most {MAX_WALLET_BYTES} bytes"
            )));
        }
    }
    let caps = &req.capabilities;
    for (name, len) in [
        ("capabilities.transports", caps.transports.len()),
        ("capabilities.encodings", caps.encodings.len()),
        ("capabilities.lanes", caps.lanes.len()),
        ("features", req.features.len()),
    ] {
        if len > MAX_HANDSHAKE_LIST {
            return Err(invalid(format!(
                "{name} must have at most {MAX_HANDSHAKE_LIST} entries"
            )));
        }
    }
    for (name, list) in [
        ("capabilities.transports", &caps.transports),
        ("capabilities.encodings", &caps.encodings),
        ("features", &req.features),
    ] {
        if list.iter().any(|s| s.len() > MAX_HANDSHAKE_NAME_BYTES) {
            return Err(invalid(format!(
                "each entry of {name} must be at most {MAX_HANDSHAKE_NAME_BYTES} bytes"
            )));
        }
    }
    if let Some(info) = &req.device_info {
        let depth = 1 + info.values().map(value_depth).max().unwrap_or(0);
        if depth > MAX_DEVICE_INFO_DEPTH {
            return Err(invalid(format!(
                "deviceInfo must nest at most {MAX_DEVICE_INFO_DEPTH} deep"
            )));
        }
        let max = config.max_device_info_bytes;
        let mut counter = Counter(0);
        // Writing to a counter cannot fail other than by a serializer bug; count it as too big.
        let size = serde_json::to_writer(&mut counter, info).map_or(usize::MAX, |()| counter.0);
        if size > max {
            return Err(payload_too_large(format!(
                "deviceInfo must be at most {max} bytes of JSON (got {size})"
            )));
        }
    }
    Ok(())
}

/// Nesting depth of a JSON value: scalars 0, `[]`/`{}` 1, `[[]]` 2.
fn value_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// An `io::Write` that only counts bytes.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_info_depth_counts_the_object() {
        let v: Value = serde_json::json!({"a": {"b": {"c": {}}}});
        assert_eq!(value_depth(&v), 4);
    }
}
