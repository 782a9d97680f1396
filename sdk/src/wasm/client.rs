//! `P3Client`, the JavaScript face of one session: a newtype around the driver's shared
//! state ([`driver::Handle`]), which runs the core [`crate::core::client::Client`]. Every
//! method only converts arguments, calls the core, and lets the driver pump; no protocol
//! logic lives here.
//!
//! Every error thrown or rejected is a JS `Error` with a string `code` (see
//! [`crate::wasm::error`]).

use crate::core::client::{Client, ClientError};
use crate::core::drive::Millis;
use crate::wasm::auth::AuthSource;
use crate::wasm::driver::{self, Handle, Topic};
use crate::wasm::global::Global;
use crate::wasm::{convert, error, http, options};
use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// `scheme://host[:port]` of a normalized base URL (its path prefix dropped).
fn origin_of(base: &str) -> String {
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let host = rest.split('/').next().unwrap_or_default();
    format!("{scheme}://{host}")
}

/// A connection to a P3 server: one session, 8 lanes multiplexed over one WebSocket, with
/// heartbeats and automatic reconnection. Create it with `P3Client.connect`.
///
/// The connection stays up until `close()` is called (or reconnection is off and the socket
/// drops), even if the `P3Client` object itself is dropped.
#[wasm_bindgen]
pub struct P3Client {
    inner: Handle,
}

impl P3Client {
    /// The driver's shared state (for rooms attached later, `MusicRoom.attach`).
    pub(crate) fn handle(&self) -> &Handle {
        &self.inner
    }
}

#[wasm_bindgen]
impl P3Client {
    /// Performs the handshake (`POST {baseUrl}/api/protocol/v2/session/handshake`), opens the
    /// session's WebSocket and resolves once it is open.
    ///
    /// `baseUrl`: `http://` or `https://` origin of the server (optionally with a path
    /// prefix); the socket uses `ws://`/`wss://` accordingly. `options`: see
    /// `ConnectOptions`; all fields optional.
    ///
    /// Rejects with `code`:
    /// - the server's code when it refuses the handshake (4xx `{error, code}`), e.g.
    ///   `no_common_encoding`, `control_lane_required`, `unknown_lane`, `invalid_argument`,
    ///   `payload_too_large`; after a `429` (`rate_limited`, `too_many_requests`) the
    ///   handshake is tried again after its `Retry-After`, 3 attempts in all and waits of at
    ///   most 10 s, then rejected with that code;
    /// - `connect_failed` when the server is unreachable or the first socket fails, and before
    ///   any request when the runtime has no `WebSocket` (nor, for SSE, `EventSource`);
    /// - `invalid_argument` / `unknown_lane` for bad options, before any request is made;
    /// - `auth_invalid` (with `reason`) when the identity proof does not verify; when `auth`
    ///   is a function, what it threw or rejected with (kept if it has a `code`, else as
    ///   `auth_invalid`), or `invalid_argument` when it returned no `AuthOptions`.
    #[wasm_bindgen]
    pub async fn connect(
        #[wasm_bindgen(js_name = baseUrl)] base_url: String,
        #[wasm_bindgen(unchecked_optional_param_type = "ConnectOptions")] options: JsValue,
    ) -> Result<P3Client, JsValue> {
        let base = http::normalize_base(&base_url)?;
        let (mut request, config, mut auth) = options::parse(&options)?;
        request.auth = auth.resolve(&base).await?;
        if request.auth.is_none() {
            // No device key here (insecure context): no identity, and no point asking again.
            auth = AuthSource::None;
        }
        let global = Global::get()?;
        let response = handshake_retrying(&base, &request).await?;
        let client = Client::new(config, &response, Millis::from_u64(global.now_ms()))
            .map_err(|e| error::client_error(&e))?;
        let (inner, opened) = driver::start(client, global, base, request, auth, &response);
        #[cfg(feature = "music")]
        crate::wasm::calls::listen(&inner);
        JsFuture::from(opened).await?;
        Ok(P3Client { inner })
    }

    /// Builds a Sign-In with Ethereum message (EIP-4361) for `options.address` to sign:
    /// fetches a single-use nonce (`GET {baseUrl}/api/protocol/v2/auth/nonce`), then fills
    /// in `domain` (default: the host of `baseUrl`), `uri` (default: its origin + `/`),
    /// `chainId`, the statement, `Issued At` (now) and, with `expiresInMs`, the
    /// `Expiration Time`. Sign the result with any wallet (`personal_sign`, e.g.
    /// `window.ethereum.request({method: 'personal_sign', params: [message, address]})` or
    /// viem's `signMessage`) and pass both as `connect`'s `auth: {siwe: {message, signature}}`
    /// within the nonce's TTL (5 min by default).
    ///
    /// Rejects with `invalid_argument` for a bad option, `connect_failed` when the server is
    /// unreachable, or the server's code (e.g. `rate_limited`).
    #[wasm_bindgen(js_name = siweMessage, unchecked_return_type = "Promise<string>")]
    pub async fn siwe_message(
        #[wasm_bindgen(js_name = baseUrl)] base_url: String,
        #[wasm_bindgen(unchecked_param_type = "SiweMessageOptions")] options: JsValue,
    ) -> Result<JsValue, JsValue> {
        let base = http::normalize_base(&base_url)?;
        let o = options::siwe_options(&options)?;
        let origin = origin_of(&base);
        let host = origin
            .split_once("://")
            .map_or(origin.as_str(), |(_, h)| h)
            .to_owned();
        let nonce = http::fetch_nonce(&base).await?.nonce;
        let now = js_sys::Date::now() as u64;
        let fields = crate::core::auth::SiweFields {
            domain: o.domain.unwrap_or(host),
            address: o.address,
            statement: o.statement,
            uri: o.uri.unwrap_or_else(|| format!("{origin}/")),
            chain_id: o.chain_id,
            nonce,
            issued_at: crate::core::auth::rfc3339_ms(now),
            expiration_time: o
                .expires_in_ms
                .map(|ms| crate::core::auth::rfc3339_ms(now.saturating_add(ms))),
            ..Default::default()
        };
        Ok(JsValue::from_str(&crate::core::auth::siwe_message(&fields)))
    }

    /// This client's session id (a UUID); changes (with a `session-changed` event) when the
    /// client had to re-handshake after its session expired or the server restarted.
    #[wasm_bindgen(getter, js_name = sessionId)]
    pub fn session_id(&self) -> String {
        self.inner.borrow().client().session_id().to_string()
    }

    /// `'connecting' | 'open' | 'reconnecting' | 'closed'`.
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionState")]
    pub fn state(&self) -> String {
        self.inner.borrow().client().state().as_str().to_owned()
    }

    /// The latest handshake response (`HandshakeResponse`): granted lanes with their
    /// encodings, the dictionary, `ttlSeconds`, `protocol`, `heartbeat` timings.
    #[wasm_bindgen(getter, unchecked_return_type = "HandshakeResponse")]
    pub fn handshake(&self) -> JsValue {
        self.inner.borrow().handshake()
    }

    /// The room this client is in or joining, or `null`.
    #[wasm_bindgen(getter, unchecked_return_type = "string | null")]
    pub fn room(&self) -> JsValue {
        self.inner
            .borrow()
            .client()
            .room()
            .map_or(JsValue::NULL, JsValue::from_str)
    }

    /// Calls `callback(state, reason)` on every connection state change; `reason` (a
    /// human-readable string, or `null`) says why for drops and closes. Returns a function
    /// that unsubscribes.
    ///
    /// Throws `invalid_argument` if `callback` is not a function.
    #[wasm_bindgen(js_name = onStateChange, unchecked_return_type = "() => void")]
    pub fn on_state_change(
        &self,
        #[wasm_bindgen(
            unchecked_param_type = "(state: ConnectionState, reason: string | null) => void"
        )]
        callback: JsValue,
    ) -> Result<JsValue, JsValue> {
        Ok(driver::subscribe(
            &self.inner,
            Topic::State,
            function(callback)?,
        ))
    }

    /// Calls `callback(message)` for every message received on `lane` (an id 1..=8 or a lane
    /// name). `message` is a `P3Message`: `{lane, from, seq, value}`. Returns a function that
    /// unsubscribes.
    ///
    /// Throws `unknown_lane` for a lane that does not exist, `lane_not_negotiated` for a lane
    /// this client did not negotiate (no message could ever arrive on it: add it to
    /// `ConnectOptions.lanes`), `invalid_argument` if `callback` is not a function.
    #[wasm_bindgen(js_name = onMessage, unchecked_return_type = "() => void")]
    pub fn on_message(
        &self,
        #[wasm_bindgen(unchecked_param_type = "LaneId")] lane: JsValue,
        #[wasm_bindgen(unchecked_param_type = "(message: P3Message) => void")] callback: JsValue,
    ) -> Result<JsValue, JsValue> {
        let lane = convert::lane_from_js(&lane)?;
        if !self.inner.borrow().client().has_lane(lane) {
            return Err(error::client_error(&ClientError::LaneNotNegotiated(lane)));
        }
        Ok(driver::subscribe(
            &self.inner,
            Topic::Message(lane),
            function(callback)?,
        ))
    }

    /// Calls `callback(event)` for every `P3Event`: room membership (`room-joined`,
    /// `room-left`, `peer-joined`, `peer-left`), heartbeat answers (`pong`, with `rttMs`),
    /// `session-changed`, and `error` (a frame the server refused or this client could not
    /// decode; `rate_limited` ones carry `retryAfterMs` and `dropped`). Returns a function
    /// that unsubscribes.
    ///
    /// Throws `invalid_argument` if `callback` is not a function.
    #[wasm_bindgen(js_name = onEvent, unchecked_return_type = "() => void")]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: P3Event) => void")] callback: JsValue,
    ) -> Result<JsValue, JsValue> {
        Ok(driver::subscribe(
            &self.inner,
            Topic::Event,
            function(callback)?,
        ))
    }

    /// Joins `room` (1..=128 bytes, no control characters), leaving any other; the client
    /// rejoins it by itself after reconnecting. Resolves with `JoinResult` (`{room,
    /// members}`, members being session ids, this one included) when the server confirms.
    ///
    /// Rejects with `invalid_argument` for a bad name, `closed` if the client is or becomes
    /// closed first, or the server's code when it refuses the join (`room_full`,
    /// `too_many_requests`, ...; an `error` event with that code comes first, and the client
    /// does not rejoin that room).
    #[wasm_bindgen(js_name = joinRoom, unchecked_return_type = "Promise<JoinResult>")]
    pub fn join_room(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] room: JsValue,
    ) -> Promise {
        match room.as_string() {
            Some(room) => driver::join_room(&self.inner, &room),
            None => Promise::reject(&error::invalid_argument("room must be a string")),
        }
    }

    /// Leaves the current room, if any (confirmed by a `room-left` event).
    #[wasm_bindgen(js_name = leaveRoom)]
    pub fn leave_room(&self) {
        driver::with_client(&self.inner, |c| c.leave_room());
    }

    /// Sends `value` on `lane` (an id 1..=8 or a lane name, case-insensitive) to everyone
    /// else in the room, or only to session `to`. `value` must be JSON-compatible. While
    /// reconnecting, messages are queued per lane (up to the lane's queue depth). A lane the
    /// server limits (handshake `limits`) is paced below its quota: messages beyond the burst
    /// wait in the lane's queue and leave at the quota's rate (PROTOCOL.md §15).
    ///
    /// Throws (synchronously) with `code`: `lane_not_negotiated`, `unknown_lane`,
    /// `frame_too_large` (over 1 MiB encoded), `backpressure` (a reliable lane's queue is
    /// full while reconnecting or paced; a `drain` event follows), `closed`, `bad_payload` (a value that is not
    /// JSON-compatible: function, symbol, BigInt, NaN, ±Infinity, Map, Set, binary, cycles),
    /// `invalid_argument` (`to` is not a session id).
    pub fn send(
        &self,
        #[wasm_bindgen(unchecked_param_type = "LaneId")] lane: JsValue,
        #[wasm_bindgen(unchecked_param_type = "unknown")] value: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "string | null")] to: JsValue,
    ) -> Result<(), JsValue> {
        let lane = convert::lane_from_js(&lane)?;
        let to = convert::session_id_from_js(&to)?;
        let value = convert::value_from_js(&value)?;
        driver::with_client(&self.inner, |c| c.send(lane, value, to))
            .map_err(|e| error::client_error(&e))
    }

    /// Closes for good: the socket is closed (code 1000), queued messages are dropped,
    /// pending `joinRoom` promises reject with `closed`, and the state becomes `'closed'`.
    /// Idempotent.
    pub fn close(&self) {
        driver::with_client(&self.inner, |c| c.close());
    }
}

/// The handshake, tried again after a `429` as
/// [`crate::core::handshake::connect_retry_delay`] says. Errors: the last attempt's.
async fn handshake_retrying(
    base: &str,
    request: &crate::core::handshake::HandshakeRequest,
) -> Result<crate::core::handshake::HandshakeResponse, JsValue> {
    let mut attempt = 1;
    loop {
        match http::handshake(base, request).await {
            Ok(r) => return Ok(r),
            Err(f) => {
                let Some(wait) = crate::core::handshake::connect_retry_delay(
                    f.status,
                    f.retry_after_ms,
                    attempt,
                ) else {
                    return Err(f.error);
                };
                crate::wasm::runtime::sleep(wait).await?;
                attempt += 1;
            }
        }
    }
}

/// A JS callback argument. Errors: `invalid_argument`.
fn function(v: JsValue) -> Result<Function, JsValue> {
    v.dyn_into::<Function>()
        .map_err(|_| error::invalid_argument("callback must be a function"))
}
