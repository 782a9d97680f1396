//! `ConnectOptions` (the second argument of `P3Client.connect`) → the handshake request and
//! the core's [`ClientConfig`]. Defaults: a random `clientId`, all 8 lanes,
//! `['msgpack', 'json']`, `deviceInfo: {platform: 'web'}`, reconnect on, the server's
//! heartbeat timings, the lane multiplexer offered (`mux: false` keeps v1 framing,
//! PROTOCOL.md §11), transport `'auto'` (WebSocket, or SSE where `WebSocket` is undefined;
//! SSE sessions never use the multiplexer).

use crate::core::call::AcceptCallsFrom;
use crate::core::client::ClientConfig;
use crate::core::error::ErrorCode;
use crate::core::frame::SessionId;
use crate::core::handshake::{Capabilities, HandshakeRequest, FEATURE_MUX, FEATURE_PRESENCE};
use crate::core::lane::Lane;
use crate::core::sse::TRANSPORT_SSE;
use crate::wasm::auth::AuthSource;
use crate::wasm::{convert, error, global};
use serde::Deserialize;
use serde_json::{Map, Value};
use wasm_bindgen::JsValue;

/// The JS options object; every field optional. Unknown fields are ignored.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectOptions {
    client_id: Option<String>,
    wallet: Option<String>,
    /// Lane ids or names, kept as JS values and parsed by [`convert::lane_from_js`].
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    lanes: JsValue,
    encodings: Option<Vec<String>>,
    device_info: Option<Map<String, Value>>,
    reconnect: Option<bool>,
    heartbeat_interval_ms: Option<f64>,
    heartbeat_timeout_ms: Option<f64>,
    /// Offer the lane multiplexer (PROTOCOL.md §11). Default: true; `false` keeps v1 framing
    /// (§5) for servers or apps that need it.
    mux: Option<bool>,
    /// Ask for room presence (PROTOCOL.md §6.2, feature `presence`). Default: false.
    presence: Option<bool>,
    /// Multiplexer: the socket `bufferedAmount` up to which it writes, bytes.
    transport_high_water_bytes: Option<f64>,
    /// Largest message sent or accepted (frame header included), bytes. Default 1 MiB, the
    /// server's default `--max-frame-bytes`.
    max_message_bytes: Option<f64>,
    /// `'websocket'`, `'sse'` (lanes over `EventSource`, sends by `fetch`, PROTOCOL.md §14) or
    /// `'auto'` (default: WebSocket when `globalThis.WebSocket` exists, else SSE).
    transport: Option<String>,
    /// Proof of an identity sent in the handshake (issue 12): `{siwe: {message, signature}}`,
    /// `{token}`, `{device}`, or a function returning one, called for every handshake
    /// (PROTOCOL.md §3.1; [`AuthSource`]). Kept as a JS value: a function does not deserialize.
    #[serde(default, with = "serde_wasm_bindgen::preserve")]
    auth: JsValue,
    /// Without `auth`: sign every handshake with this browser profile's device key
    /// (PROTOCOL.md §13.15, [`crate::wasm::device_key`]). Default true; `false`: no identity.
    device_key: Option<bool>,
    /// Who may ring this identity (PROTOCOL.md §13.16): `'anyone'`, `'nobody'` (default) or a
    /// list of addresses / token `sub`s.
    accept_calls_from: Option<AcceptCallsFrom>,
}

/// `P3Client.siweMessage` options (TS `SiweMessageOptions`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SiweOptions {
    pub(crate) address: String,
    pub(crate) chain_id: u64,
    pub(crate) statement: Option<String>,
    pub(crate) domain: Option<String>,
    pub(crate) uri: Option<String>,
    pub(crate) expires_in_ms: Option<u64>,
}

/// Reads `SiweMessageOptions`.
///
/// The address is put in EIP-55 form (any case accepted).
///
/// Errors: `invalid_argument` for a missing `address`/`chainId`, an address that is not
/// `0x` + 40 hex digits, or a statement with a line break.
pub(crate) fn siwe_options(options: &JsValue) -> Result<SiweOptions, JsValue> {
    let mut o: SiweOptions = serde_wasm_bindgen::from_value(options.clone())
        .map_err(|e| error::invalid_argument(&format!("invalid siweMessage options: {e}")))?;
    // Wallets often return lowercase addresses; the message needs the EIP-55 form.
    o.address = crate::core::auth::eip55(&o.address)
        .ok_or_else(|| error::invalid_argument("address must be 0x + 40 hex digits"))?;
    if o.statement.as_deref().is_some_and(|s| s.contains('\n')) {
        return Err(error::invalid_argument("statement must be one line"));
    }
    Ok(o)
}

/// Reads `options` (`undefined`/`null`: all defaults). The request's `auth` is left empty:
/// the returned [`AuthSource`] fills it in before every handshake.
///
/// Errors: `invalid_argument` for a field of the wrong type or value (`auth` neither an
/// `AuthOptions` nor a function); `unknown_lane` for a
/// lane that is neither an id 1..=8 nor a lane name; `connect_failed` when the runtime has no
/// `WebSocket` (or, for SSE, no `EventSource`).
pub(crate) fn parse(
    options: &JsValue,
) -> Result<(HandshakeRequest, ClientConfig, AuthSource), JsValue> {
    let o: ConnectOptions = if options.is_undefined() || options.is_null() {
        ConnectOptions::default()
    } else {
        serde_wasm_bindgen::from_value(options.clone())
            .map_err(|e| error::invalid_argument(&format!("invalid connect options: {e}")))?
    };
    let lanes = lanes(&o.lanes)?;
    let auth = AuthSource::from_options(&o.auth, o.device_key.unwrap_or(true))?;
    let sse = match o.transport.as_deref() {
        None | Some("auto") => !global::has("WebSocket") && global::has("EventSource"),
        Some("websocket") => false,
        Some("sse") => true,
        Some(other) => {
            return Err(error::invalid_argument(&format!(
                "`transport` must be 'websocket', 'sse' or 'auto', got {other:?}"
            )))
        }
    };
    // Refuse before the handshake (which would leave a session behind) when this runtime
    // cannot open the chosen transport, e.g. Node.js 20 (no `WebSocket`, no `EventSource`).
    let (needed, hint) = if sse {
        ("EventSource", "")
    } else {
        (
            "WebSocket",
            " (Node.js before 22: install the `ws` package, which the SDK's Node.js entry \
             then uses)",
        )
    };
    if !global::has(needed) {
        return Err(error::coded(
            ErrorCode::ConnectFailed,
            &format!(
                "globalThis.{needed} is not available in this JavaScript environment; \
                 the SDK needs a browser, a worker, or a runtime that provides it{hint}"
            ),
        ));
    }
    let client_id = match o.client_id {
        Some(id) => id,
        None => format!("web-{}", SessionId::from_random_bytes(random_bytes()?)),
    };
    let device_info = o.device_info.unwrap_or_else(|| {
        let mut m = Map::new();
        m.insert("platform".into(), Value::from("web"));
        m
    });
    let request = HandshakeRequest {
        client_id,
        wallet: o.wallet,
        capabilities: Capabilities {
            transports: vec![if sse { TRANSPORT_SSE } else { "websocket" }.into()],
            encodings: o
                .encodings
                .unwrap_or_else(|| vec!["msgpack".into(), "json".into()]),
            lanes,
        },
        device_info: Some(device_info),
        // The multiplexer is offered unless the app opts out; a server without it simply
        // does not grant the flag and the session speaks v1 (§3 negotiation). SSE resumes
        // with event ids instead (PROTOCOL.md §14.3).
        features: [
            (o.mux.unwrap_or(true) && !sse, FEATURE_MUX),
            (o.presence.unwrap_or(false), FEATURE_PRESENCE),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| f.to_owned())
        .collect(),
        auth: None,
        accept_calls_from: o.accept_calls_from,
    };
    let config = ClientConfig {
        heartbeat_interval_ms: millis("heartbeatIntervalMs", o.heartbeat_interval_ms)?,
        heartbeat_timeout_ms: millis("heartbeatTimeoutMs", o.heartbeat_timeout_ms)?,
        reconnect: o.reconnect.unwrap_or(true),
        seed: global::random_u64()?,
        transport_high_water_bytes: match o.transport_high_water_bytes {
            None => ClientConfig::default().transport_high_water_bytes,
            Some(b) if b.is_finite() && b >= 0.0 => Some(b as usize),
            Some(_) => {
                return Err(error::invalid_argument(
                    "transportHighWaterBytes must be a number ≥ 0",
                ))
            }
        },
        max_frame_bytes: match o.max_message_bytes {
            None => ClientConfig::default().max_frame_bytes,
            Some(b) if b.is_finite() && b >= 1024.0 => b as usize,
            Some(_) => {
                return Err(error::invalid_argument(
                    "maxMessageBytes must be a number ≥ 1024",
                ))
            }
        },
        ..ClientConfig::default()
    };
    Ok((request, config, auth))
}

/// The offered lane ids; `undefined`/`null`: all 8.
fn lanes(v: &JsValue) -> Result<Vec<u8>, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(Lane::ALL.iter().map(|l| l.id()).collect());
    }
    if !js_sys::Array::is_array(v) {
        return Err(error::invalid_argument(
            "`lanes` must be an array of lane ids or names",
        ));
    }
    let arr: &js_sys::Array = wasm_bindgen::JsCast::unchecked_ref(v);
    arr.iter()
        .map(|l| convert::lane_from_js(&l).map(Lane::id))
        .collect()
}

/// A positive finite duration in ms, if given.
fn millis(name: &str, v: Option<f64>) -> Result<Option<u64>, JsValue> {
    match v {
        None => Ok(None),
        Some(ms) if ms.is_finite() && ms > 0.0 => Ok(Some(ms.round() as u64)),
        Some(ms) => Err(error::invalid_argument(&format!(
            "`{name}` must be a positive number of ms, got {ms}"
        ))),
    }
}

fn random_bytes() -> Result<[u8; 16], JsValue> {
    let mut out = [0; 16];
    global::random_bytes(&mut out)?;
    Ok(out)
}
