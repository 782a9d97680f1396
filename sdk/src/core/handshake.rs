//! Handshake v2 (seed 000, "Session Handshake" / "Handshake Response"): the request and
//! response bodies of `POST /api/protocol/v2/session/handshake`, and the negotiation rule the
//! server applies (PROTOCOL.md, "Negotiation").

use crate::core::auth::{HandshakeAuth, Identity};
use crate::core::dictionary::DictionaryWire;
use crate::core::error::{ErrorCode, WireError};
use crate::core::frame::SessionId;
use crate::core::lane::{Encoding, Lane};
use crate::core::sse::{is_sse_transport, TRANSPORT_HTTP1, TRANSPORT_SSE};
use serde::{Deserialize, Serialize};

/// Protocol version this crate speaks (`protocol.version`).
pub const PROTOCOL_VERSION: &str = "2.0.0";
/// Default session TTL, s (seed 000 `ttlSeconds`).
pub const DEFAULT_TTL_SECONDS: u64 = 3600;
/// Longest accepted `clientId`, bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;

/// Request body (seed 000): `{clientId, wallet, capabilities, deviceInfo}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandshakeRequest {
    /// The device's stable id, 1..=128 bytes.
    pub client_id: String,
    /// Wallet address (seed: `"0x..."`); informational in server-stub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<String>,
    /// What the client can do.
    pub capabilities: Capabilities,
    /// Free-form device description (`platform`, `version`, ...), echoed in session status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// Optional protocol features the client asks for (ours, not the seed's), e.g.
    /// [`FEATURE_MUX`]; the server grants those it supports in `protocol.features`. Unknown
    /// names are ignored; absent means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Ours (issue 12): proof of an identity, SIWE or an app JWT
    /// ([`crate::core::auth::HandshakeAuth`]). Absent: the session has no verified identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HandshakeAuth>,
    /// Ours (issue 12 "Calls addressed to an identity"): who may ring this session's verified
    /// identity ([`crate::core::call::AcceptCallsFrom`]: `"anyone"`, `"nobody"` or a list of
    /// identities). Absent: `"nobody"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_calls_from: Option<crate::core::call::AcceptCallsFrom>,
}

/// `capabilities` (seed 000): transports, encodings and lane ids the client offers, in the
/// client's order of preference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// e.g. `["websocket"]`. Unknown names are ignored.
    pub transports: Vec<String>,
    /// e.g. `["msgpack", "json"]`. Unknown names are ignored.
    pub encodings: Vec<String>,
    /// Lane ids, each in 1..=8; must include 1 (Control).
    pub lanes: Vec<u8>,
}

/// One granted lane in the response (seed 000 `lanes[]`), with its registry entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneGrant {
    /// Lane id, 1..=8.
    pub id: u8,
    /// Seed name, e.g. `"Control"`.
    pub name: String,
    /// Negotiated payload encoding.
    pub encoding: Encoding,
    /// SSE stream URL of this lane (seed 000), relative to the server origin.
    pub url: String,
    /// Registry priority (higher first).
    pub priority: u8,
    /// Registry queue depth, messages.
    pub queue_depth: u16,
    /// Registry reliability.
    pub reliable: bool,
}

/// `protocol` in the response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolInfo {
    /// `"2.0.0"`.
    pub version: String,
    /// Feature names, e.g. `["msgpack", "dictionary", "priority", "rooms", "heartbeat"]`.
    pub features: Vec<String>,
}

/// Heartbeat contract (seed 001), an addition to the seed's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatInfo {
    /// Ping every this many ms (seed default 30000).
    pub interval_ms: u64,
    /// The server drops a connection silent this long, ms (seed default 60000).
    pub timeout_ms: u64,
}

/// Response body (seed 000) plus `websocketUrl` and `heartbeat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandshakeResponse {
    /// New session id (UUID).
    pub session_id: SessionId,
    /// Chosen transport, e.g. `"websocket"`.
    pub transport: String,
    /// Granted lanes, ascending id.
    pub lanes: Vec<LaneGrant>,
    /// The negotiated dictionary.
    pub dictionary: DictionaryWire,
    /// Server wall clock at handshake, ms since the Unix epoch.
    pub server_time: u64,
    /// Session lifetime after its last activity, s.
    pub ttl_seconds: u64,
    /// Protocol version and features.
    pub protocol: ProtocolInfo,
    /// Path of the session's WebSocket, relative to the server origin.
    pub websocket_url: String,
    /// Heartbeat contract.
    pub heartbeat: HeartbeatInfo,
    /// Ours: the `signature` that authenticates this session on the seed 001 signaling
    /// server (`GET /api/signaling`, `auth {address: sessionId, signature}`; PROTOCOL.md
    /// §13.7). A secret of this session: not shown to other members. Absent from servers
    /// without that endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signaling_token: Option<String>,
    /// Ours (issue 12): the session's secret, 32 bytes from the server's CSPRNG, base64url
    /// without padding (43 characters). Every session-scoped HTTP request carries it as
    /// `Authorization: Bearer <sessionToken>`; WebSocket and SSE streams carry a ticket
    /// minted with it instead ([`TICKET_PATH_SUFFIX`]). Never shown to other members; the
    /// session id alone grants nothing (PROTOCOL.md "Security: session credentials").
    /// Absent from servers that do not check credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
    /// Ours (issue 12): a first single-use ticket for the session's first WebSocket or SSE
    /// stream (`?ticket=`), valid [`TICKET_TTL_MS`], so the first connect needs no extra
    /// round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Secret>,
    /// Ours (issue 11): the per-session quotas the server enforces, so that the client can
    /// pace its sends and never be refused. Absent: the server advertises none (the client
    /// then paces only after a `rate_limited` refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Ours (issue 12): the identity the server verified from the request's `auth`. Absent
    /// when the request had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Ours: with transport `sse`, the reconnect delay its streams advertise (`retry:`, ms,
    /// `--sse-retry-ms`). The client closes a stream that ended (its `EventSource` would retry
    /// with a spent single-use ticket) and opens the next one after this delay
    /// (PROTOCOL.md §14.1). Absent: [`DEFAULT_SSE_RETRY_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_retry_ms: Option<u64>,
}

/// The SSE reconnect delay a client waits when the handshake has no `sseRetryMs`, ms (the
/// server's default `retry:`; PROTOCOL.md §14.1).
pub const DEFAULT_SSE_RETRY_MS: u64 = 1_000;

/// A credential on the wire (a session token or a ticket): a string whose `Debug` output is
/// `Secret(<redacted>)`, so it never reaches a log through `{:?}`. Serialized as the bare
/// string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret text, to put on the wire (never into a log).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A ticket lives this long after it is minted, ms (PROTOCOL.md §2.1).
pub const TICKET_TTL_MS: u64 = 30_000;
/// Tickets outstanding per session; minting one more forgets the oldest.
pub const MAX_TICKETS: usize = 8;
/// The ticket route of a session: `POST /api/protocol/v2/session/{sid}` + this.
pub const TICKET_PATH_SUFFIX: &str = "/ticket";
/// Query parameter carrying a ticket on WebSocket and SSE stream URLs.
pub const TICKET_QUERY: &str = "ticket";

/// `POST /api/protocol/v2/session/{sid}/ticket` with `Authorization: Bearer <sessionToken>`:
/// the answer, `{"ticket": "<base64url>", "expiresInMs": 30000}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketResponse {
    /// Single-use ticket for one WebSocket or SSE stream of this session.
    pub ticket: Secret,
    /// It expires this long after the answer, ms.
    pub expires_in_ms: u64,
}

/// Path of session `sid`'s ticket route, relative to the server origin.
pub fn ticket_path(sid: SessionId) -> String {
    format!("/api/protocol/v2/session/{sid}{TICKET_PATH_SUFFIX}")
}

/// `path` (a WebSocket or SSE stream path, maybe with a query) with `?ticket=<ticket>` (or
/// `&ticket=`) appended. Tickets are base64url, so they need no escaping.
pub fn with_ticket(path: &str, ticket: &Secret) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{TICKET_QUERY}={}", ticket.expose())
}

/// `limits` in the handshake response (issue 11, PROTOCOL.md §15): what the server enforces
/// per session. Every field is optional; an absent one means no limit is advertised.
///
/// ```json
/// "limits": {"rates": {"control": {"perSecond": 50, "burst": 200},
///                      "sync": {"perSecond": 100, "burst": 400},
///                      "bulk": {"perSecond": 5000, "burst": 10000}}}
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Message rates per lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rates: Option<LaneRates>,
}

/// Per-session message quotas (GCRA, `--rate-control`, `--rate-sync`, `--rate-bulk`). Each
/// lane has its own budget: `control` for lane 1, `sync` for lane 7, and `bulk` for **each**
/// other lane (Messaging, Voice, Video, Data, Telemetry and Relay each get one `bulk` quota).
/// A message is one Control message or one Data frame (§5), or one multiplexer message
/// (§11, counted once whatever its number of chunks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneRates {
    /// Control (lane 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<Rate>,
    /// Sync (lane 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<Rate>,
    /// Each other lane, separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk: Option<Rate>,
}

impl LaneRates {
    /// The quota of `lane`.
    pub fn for_lane(&self, lane: Lane) -> Option<Rate> {
        match lane {
            Lane::Control => self.control,
            Lane::Sync => self.sync,
            _ => self.bulk,
        }
    }
}

/// One GCRA quota: `burst` messages at once, then `perSecond` messages per second
/// (`--rate-control "50/s,burst=200"` is `{perSecond: 50, burst: 200}`; `"30/min"` is
/// `{perSecond: 0.5, burst: 30}`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    /// Sustained rate, messages per second (> 0; may be fractional).
    pub per_second: f64,
    /// Burst size, messages (≥ 1).
    pub burst: u32,
}

/// The outcome of negotiation, before the server fills in ids, URLs and times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Chosen transport name.
    pub transport: &'static str,
    /// Granted lanes with their encodings, ascending id.
    pub lanes: Vec<(Lane, Encoding)>,
}

/// What a server supports, in its order of preference.
#[derive(Clone, Debug)]
pub struct ServerCapabilities {
    /// Transport names, preferred first.
    pub transports: Vec<&'static str>,
    /// Encodings, preferred first.
    pub encodings: Vec<Encoding>,
}

impl Default for ServerCapabilities {
    fn default() -> Self {
        ServerCapabilities {
            transports: vec!["websocket", TRANSPORT_SSE, TRANSPORT_HTTP1],
            encodings: vec![Encoding::Msgpack, Encoding::Json],
        }
    }
}

/// Intersects the client's offer with the server's capabilities (PROTOCOL.md "Negotiation"):
/// - transport: the server's most preferred one the client offers;
/// - lanes: exactly the offered ids (deduplicated, sorted); any id outside 1..=8 is an error,
///   and lane 1 must be offered;
/// - encoding per lane: the lane's `defaultEncoding` when both sides have it, else the
///   client's most preferred encoding the server has; with transport `sse` (an event stream
///   is text) every lane gets `json`, which the client must then offer.
///
/// Never grants a lane or encoding the client did not offer. Errors are 400-class
/// [`WireError`]s with codes `invalid_argument`, `unknown_lane`, `control_lane_required`,
/// `no_common_transport`, `no_common_encoding`.
pub fn negotiate(
    req: &HandshakeRequest,
    server: &ServerCapabilities,
) -> Result<Negotiated, WireError> {
    if req.client_id.is_empty() || req.client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("clientId must be 1..={MAX_CLIENT_ID_BYTES} bytes"),
        ));
    }
    let caps = &req.capabilities;
    let transport = server
        .transports
        .iter()
        .find(|t| caps.transports.iter().any(|c| c == *t))
        .ok_or_else(|| {
            WireError::new(
                ErrorCode::NoCommonTransport,
                format!(
                    "no common transport: client offers {:?}, server supports {:?}",
                    caps.transports, server.transports
                ),
            )
        })?;
    let common: Vec<Encoding> = caps
        .encodings
        .iter()
        .filter_map(|e| Encoding::parse(e))
        .filter(|e| server.encodings.contains(e))
        .collect();
    let sse = is_sse_transport(transport);
    if sse && !common.contains(&Encoding::Json) {
        return Err(WireError::new(
            ErrorCode::NoCommonEncoding,
            format!("transport {transport} carries json: offer \"json\" in capabilities.encodings"),
        ));
    }
    let Some(&fallback) = common.first() else {
        return Err(WireError::new(
            ErrorCode::NoCommonEncoding,
            format!(
                "no common encoding: client offers {:?}, server supports msgpack, json",
                caps.encodings
            ),
        ));
    };
    let mut lanes = Vec::with_capacity(caps.lanes.len());
    for &id in &caps.lanes {
        let lane = Lane::from_id(id).ok_or_else(|| {
            WireError::new(
                ErrorCode::UnknownLane,
                format!("lane id {id} is not in 1..=8"),
            )
        })?;
        lanes.push(lane);
    }
    lanes.sort();
    lanes.dedup();
    if lanes.first() != Some(&Lane::Control) {
        return Err(WireError::new(
            ErrorCode::ControlLaneRequired,
            "capabilities.lanes must include 1 (Control): it carries joins and heartbeats",
        ));
    }
    let lanes = lanes
        .into_iter()
        .map(|lane| {
            let preferred = lane.spec().default_encoding;
            let enc = if sse {
                Encoding::Json
            } else if common.contains(&preferred) {
                preferred
            } else {
                fallback
            };
            (lane, enc)
        })
        .collect();
    Ok(Negotiated { transport, lanes })
}

/// The feature flag of the lane multiplexer (PROTOCOL.md §11; the browser SDK offers it by
/// default): v2 frames are used on a session's sockets only when the request's `features`
/// lists it and the response's `protocol.features` grants it; otherwise §5 framing.
pub const FEATURE_MUX: &str = "mux";

/// The feature flag of room presence (PROTOCOL.md §6.2): a session whose request lists it,
/// and whose response grants it, gets Control `presence` messages for its room's members.
/// Off unless asked for, so clients that do not know `presence` never see it.
pub const FEATURE_PRESENCE: &str = "presence";

impl HandshakeResponse {
    /// Whether the server granted `feature` in `protocol.features`.
    pub fn grants(&self, feature: &str) -> bool {
        self.protocol.features.iter().any(|f| f == feature)
    }
}

/// Handshake attempts `P3Client.connect` makes in all when the server answers `429`
/// (`rate_limited`, `too_many_requests`) before it rejects with that code.
pub const CONNECT_ATTEMPTS_WHEN_LIMITED: u32 = 3;
/// Longest wait `connect` accepts between two handshake attempts, ms: a longer
/// `Retry-After` rejects at once (the app decides whether to wait that long).
pub const CONNECT_RETRY_MAX_MS: u64 = 10_000;

/// `connect`'s rule after handshake attempt `attempt` (from 1) was answered with HTTP
/// `status` and `retry_after_ms` (the body's `retryAfterMs`, else `Retry-After` × 1000): the
/// wait before the next attempt, ms, or `None` to reject with the server's code. Only a `429`
/// is retried: after `retry_after_ms` (default 1 s, 2 s, ...), at most
/// [`CONNECT_ATTEMPTS_WHEN_LIMITED`] attempts in all and waits up to
/// [`CONNECT_RETRY_MAX_MS`].
pub fn connect_retry_delay(status: u16, retry_after_ms: Option<u64>, attempt: u32) -> Option<u64> {
    if status != 429 || attempt >= CONNECT_ATTEMPTS_WHEN_LIMITED {
        return None;
    }
    let wait = retry_after_ms.unwrap_or(1000u64 << attempt.saturating_sub(1).min(10));
    (wait <= CONNECT_RETRY_MAX_MS).then_some(wait)
}

/// Features listed in `protocol.features` by server-stub.
pub const FEATURES: &[&str] = &[
    "msgpack",
    "json",
    "dictionary",
    "priority",
    "rooms",
    "heartbeat",
    "resume",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(transports: &[&str], encodings: &[&str], lanes: &[u8]) -> HandshakeRequest {
        serde_json::from_value(json!({
            "clientId": "device-123", "wallet": "0xabc",
            "capabilities": {"transports": transports, "encodings": encodings, "lanes": lanes},
            "deviceInfo": {"platform": "web", "version": "1.0.0"}
        }))
        .unwrap()
    }

    #[test]
    fn grants_only_what_was_offered() {
        let n = negotiate(
            &req(
                &["http3", "websocket"],
                &["protobuf", "json"],
                &[3, 1, 2, 2],
            ),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(n.transport, "websocket");
        // Voice prefers protobuf which nobody implements; falls back to the client's first common.
        assert_eq!(
            n.lanes,
            vec![
                (Lane::Control, Encoding::Json),
                (Lane::Messaging, Encoding::Json),
                (Lane::Voice, Encoding::Json)
            ]
        );
        let n = negotiate(
            &req(&["websocket"], &["json", "msgpack"], &[1, 7]),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            n.lanes,
            vec![
                (Lane::Control, Encoding::Msgpack),
                (Lane::Sync, Encoding::Msgpack)
            ]
        );
    }

    /// Seed 000's own offer is granted `http1`, the SSE transport under the seed's name.
    #[test]
    fn the_seeds_http1_is_granted_as_sse() {
        let n = negotiate(
            &req(
                &["http1", "http3"],
                &["protobuf", "msgpack", "json"],
                &[1, 2, 3, 4],
            ),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(n.transport, "http1");
        assert!(n.lanes.iter().all(|l| l.1 == Encoding::Json));
        let n = negotiate(
            &req(&["websocket", "http1"], &["json"], &[1]),
            &Default::default(),
        )
        .unwrap();
        assert_eq!(n.transport, "websocket", "the server's preference first");
    }

    #[test]
    fn refuses_with_codes() {
        let s = ServerCapabilities::default();
        let code = |r: HandshakeRequest| negotiate(&r, &s).unwrap_err().code;
        // `http3` is a transport this server declines.
        assert_eq!(
            code(req(&["http3"], &["msgpack", "json"], &[1])),
            ErrorCode::NoCommonTransport
        );
        // `http1` (seed 000) is the SSE transport: it carries json.
        assert_eq!(
            code(req(&["http1", "http3"], &["msgpack"], &[1])),
            ErrorCode::NoCommonEncoding
        );
        assert_eq!(
            code(req(&["websocket"], &["protobuf"], &[1])),
            ErrorCode::NoCommonEncoding
        );
        assert_eq!(
            code(req(&["websocket"], &["msgpack"], &[1, 9])),
            ErrorCode::UnknownLane
        );
        assert_eq!(
            code(req(&["websocket"], &["msgpack"], &[2, 3])),
            ErrorCode::ControlLaneRequired
        );
        assert_eq!(
            code(req(&["websocket"], &["msgpack"], &[])),
            ErrorCode::ControlLaneRequired
        );
        let mut r = req(&["websocket"], &["msgpack"], &[1]);
        r.client_id.clear();
        assert_eq!(code(r), ErrorCode::InvalidArgument);
        assert_eq!(
            code(req(&["sse"], &["msgpack"], &[1])),
            ErrorCode::NoCommonEncoding
        );
    }

    #[test]
    fn connect_retries_only_429_and_within_bounds() {
        assert_eq!(connect_retry_delay(429, Some(1500), 1), Some(1500));
        assert_eq!(connect_retry_delay(429, None, 1), Some(1000));
        assert_eq!(connect_retry_delay(429, None, 2), Some(2000));
        assert_eq!(
            connect_retry_delay(429, Some(10), CONNECT_ATTEMPTS_WHEN_LIMITED),
            None
        );
        assert_eq!(
            connect_retry_delay(429, Some(CONNECT_RETRY_MAX_MS + 1), 1),
            None
        );
        for status in [400, 409, 413, 500, 503] {
            assert_eq!(connect_retry_delay(status, Some(10), 1), None, "{status}");
        }
        assert_eq!(connect_retry_delay(429, None, u32::MAX), None);
    }

    #[test]
    fn limits_wire_shape() {
        let l: Limits = serde_json::from_value(json!({"rates": {
            "control": {"perSecond": 50, "burst": 200},
            "bulk": {"perSecond": 0.5, "burst": 30}}}))
        .unwrap();
        let r = l.rates.unwrap();
        assert_eq!(r.for_lane(Lane::Control).unwrap().burst, 200);
        assert_eq!(r.for_lane(Lane::Sync), None, "absent: not advertised");
        assert_eq!(r.for_lane(Lane::Data).unwrap().per_second, 0.5);
        assert_eq!(r.for_lane(Lane::Relay), r.bulk);
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            json!({"rates": {"control": {"perSecond": 50.0, "burst": 200},
                             "bulk": {"perSecond": 0.5, "burst": 30}}})
        );
        // Servers without limits: no field, and it parses as none.
        let v = json!({"sessionId": "00000000-0000-0000-0000-000000000000",
            "transport": "websocket", "lanes": [], "dictionary": {"version": "1", "tokens": [], "indexMap": {}},
            "serverTime": 0, "ttlSeconds": 1, "protocol": {"version": "2.0.0", "features": []},
            "websocketUrl": "/ws", "heartbeat": {"intervalMs": 1, "timeoutMs": 2}});
        let resp: HandshakeResponse = serde_json::from_value(v).unwrap();
        assert_eq!(resp.limits, None);
    }

    #[test]
    fn sse_lanes_are_json_and_websocket_stays_preferred() {
        let s = ServerCapabilities::default();
        let n = negotiate(&req(&["sse"], &["msgpack", "json"], &[1, 2, 7]), &s).unwrap();
        assert_eq!(n.transport, "sse");
        assert!(
            n.lanes.iter().all(|l| l.1 == Encoding::Json),
            "{:?}",
            n.lanes
        );
        let n = negotiate(&req(&["sse", "websocket"], &["msgpack", "json"], &[1]), &s).unwrap();
        assert_eq!(n.transport, "websocket", "the server's preference wins");
    }
}
