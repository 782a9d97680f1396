//! A session as kept in Redis (`p3:session:{sid}` field `rec`): everything another node needs
//! to serve it, secrets included (the token; tickets are kept apart, one key each). Its
//! socket, multiplexer state and SSE history are not in it: they belong to the node that
//! holds the session and are made anew on another (PROTOCOL.md §17).

use p3_lanes::core::auth::Identity;
use p3_lanes::core::call::AcceptCallsFrom;
use p3_lanes::core::lane::{Encoding, Lane};
use serde::{Deserialize, Serialize};

/// A session's record (JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionRecord {
    /// The session token, wire form (base64url).
    pub(crate) token: String,
    pub(crate) client_id: String,
    pub(crate) wallet: Option<String>,
    pub(crate) device_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// `websocket`, `sse` or `http1`.
    pub(crate) transport: String,
    pub(crate) lanes: Vec<(Lane, Encoding)>,
    /// Handshake time, ms since the Unix epoch.
    pub(crate) created_at_ms: u64,
    /// Whether the multiplexer was granted.
    pub(crate) mux: bool,
    pub(crate) identity: Option<Identity>,
    /// App JWT: the rooms its `rooms` claim admits.
    pub(crate) identity_rooms: Option<Vec<String>>,
    /// When the identity stops counting as verified, ms since the epoch.
    pub(crate) identity_expires_at_ms: Option<u64>,
    pub(crate) accept_calls_from: AcceptCallsFrom,
    /// Whether it asked for presence messages (feature `presence`, PROTOCOL.md §6.2).
    #[serde(default)]
    pub(crate) presence: bool,
}

/// The transport names a session can have, as `&'static str` (an unknown one: `websocket`).
pub(crate) fn transport_name(s: &str) -> &'static str {
    match s {
        "sse" => "sse",
        "http1" => "http1",
        _ => "websocket",
    }
}
