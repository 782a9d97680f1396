//! HTTP and URL helpers of the driver: the handshake POST (seed 000 "Session Handshake") via
//! the global scope's `fetch`, the ticket POST that precedes every WebSocket or SSE stream
//! after the first (PROTOCOL.md "Security: session credentials"), and the WebSocket URL of a
//! session.
//!
//! Errors are already JS errors with a `code` (see [`crate::wasm::error`]):
//! - the server's own code for a 4xx/5xx with a `{error, code}` JSON body
//!   (e.g. `no_common_encoding`, `control_lane_required`);
//! - `connect_failed` when the server cannot be reached or answers without such a body;
//! - `bad_request` when a 2xx body is not a valid handshake response (the code the core uses
//!   for an unusable handshake, [`crate::core::client::ClientError::BadHandshake`]).
//!
//! A `429` (`rate_limited`, `too_many_requests`) also reports its `retryAfterMs` (or
//! `Retry-After`), for `connect`'s retries and the client's re-handshake backoff.

use crate::core::auth::NonceResponse;
use crate::core::error::ErrorCode;
use crate::core::frame::SessionId;
use crate::core::handshake::{
    ticket_path, HandshakeRequest, HandshakeResponse, Secret, TicketResponse,
};
use crate::wasm::{error, global};
use serde::Deserialize;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Path of the handshake endpoint, appended to the base URL.
pub(crate) const HANDSHAKE_PATH: &str = "/api/protocol/v2/session/handshake";

/// Checks and normalizes a server base URL: `http://` or `https://`, no trailing `/`.
///
/// Errors: `invalid_argument` for any other scheme.
pub(crate) fn normalize_base(url: &str) -> Result<String, JsValue> {
    let url = url.trim().trim_end_matches('/');
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() => Ok(url.to_owned()),
        _ => Err(error::invalid_argument(&format!(
            "server URL must start with http:// or https://, got {url:?}"
        ))),
    }
}

/// `{base}{path}` with the scheme switched to `ws://` (from `http://`) or `wss://` (from
/// `https://`). `base` comes from [`normalize_base`].
pub(crate) fn websocket_url(base: &str, path: &str) -> String {
    let (scheme, rest) = match base.get(..8) {
        Some(p) if p.eq_ignore_ascii_case("https://") => ("wss://", &base[8..]),
        _ => ("ws://", base.get(7..).unwrap_or_default()),
    };
    let sep = if path.starts_with('/') || path.is_empty() {
        ""
    } else {
        "/"
    };
    format!("{scheme}{rest}{sep}{path}")
}

/// The JSON error body of a refused request: `{error, code}` (and `retryAfterMs` on a `429`,
/// issue 11). `code` stays a string so that codes this SDK does not know pass through.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error: String,
    code: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    /// `auth_invalid`: why (issue 12).
    #[serde(default)]
    reason: Option<String>,
}

/// A failed handshake: the JS error to throw, and what `connect` needs to decide on a retry
/// ([`crate::core::handshake::connect_retry_delay`]).
pub(crate) struct HandshakeFailure {
    /// The `P3Error` (see the module docs).
    pub(crate) error: JsValue,
    /// HTTP status; 0 when no answer came.
    pub(crate) status: u16,
    /// `429`: the body's `retryAfterMs`, else `Retry-After` (seconds) × 1000.
    pub(crate) retry_after_ms: Option<u64>,
}

impl HandshakeFailure {
    fn new(error: JsValue) -> HandshakeFailure {
        HandshakeFailure {
            error,
            status: 0,
            retry_after_ms: None,
        }
    }
}

/// POSTs `req` to `{base}/api/protocol/v2/session/handshake` and parses the answer.
///
/// Errors: see the module docs.
pub(crate) async fn handshake(
    base: &str,
    req: &HandshakeRequest,
) -> Result<HandshakeResponse, HandshakeFailure> {
    let url = format!("{base}{HANDSHAKE_PATH}");
    let body = serde_json::to_string(req)
        .map_err(|e| HandshakeFailure::new(error::invalid_argument(&e.to_string())))?;
    let (status, retry_after_s, text) = post_json(&url, &body).await.map_err(|thrown| {
        HandshakeFailure::new(error::coded(
            ErrorCode::ConnectFailed,
            &format!("could not reach {url}: {}", error::describe(&thrown)),
        ))
    })?;
    if (200..300).contains(&status) {
        return serde_json::from_str(&text).map_err(|e| {
            HandshakeFailure::new(error::coded(
                ErrorCode::BadRequest,
                &format!("handshake response from {url} is invalid: {e}"),
            ))
        });
    }
    let header_ms = retry_after_s.map(|s| s.saturating_mul(1000));
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => Err(HandshakeFailure {
            error: {
                let e = error::js_error(&b.code, &b.error);
                if let Some(reason) = &b.reason {
                    // Setting a property on a fresh Error object cannot fail.
                    let _ = js_sys::Reflect::set(
                        &e,
                        &JsValue::from_str("reason"),
                        &JsValue::from_str(reason),
                    );
                }
                e
            },
            status,
            retry_after_ms: b.retry_after_ms.or(header_ms),
        }),
        Err(_) => Err(HandshakeFailure {
            error: error::coded(
                ErrorCode::ConnectFailed,
                &format!("handshake refused by {url}: HTTP {status}"),
            ),
            status,
            retry_after_ms: header_ms,
        }),
    }
}

/// Why no ticket was minted ([`mint_ticket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MintFailed {
    /// 401 `unauthorized`: the server does not accept this session's token any more (it
    /// forgot the session: restart, expiry, deletion). The client needs a new session.
    Unauthorized,
    /// No answer, or another refusal: try again later.
    Failed,
}

/// `POST {base}/api/protocol/v2/session/{sid}/ticket` with `Authorization: Bearer <token>`:
/// a fresh single-use ticket for the next WebSocket or SSE stream of the session (PROTOCOL.md
/// "Security: session credentials"). Errors: [`MintFailed`].
pub(crate) async fn mint_ticket(
    base: &str,
    sid: SessionId,
    token: &Secret,
) -> Result<Secret, MintFailed> {
    let url = format!("{base}{}", ticket_path(sid));
    let answer = async {
        let headers = web_sys::Headers::new()?;
        headers.set("Authorization", &bearer(token))?;
        let init = web_sys::RequestInit::new();
        init.set_method("POST");
        init.set_headers(&headers);
        init.set_mode(web_sys::RequestMode::Cors);
        init.set_cache(web_sys::RequestCache::NoStore);
        let promise: js_sys::Promise =
            global::fetch(&JsValue::from_str(&url), &init)?.unchecked_into();
        let response: web_sys::Response = JsFuture::from(promise).await?.dyn_into()?;
        let text = JsFuture::from(response.text()?)
            .await?
            .as_string()
            .unwrap_or_default();
        Ok::<_, JsValue>((response.status(), text))
    };
    match answer.await {
        Ok((200, text)) => serde_json::from_str::<TicketResponse>(&text)
            .map(|t| t.ticket)
            .map_err(|_| MintFailed::Failed),
        Ok((401, _)) => Err(MintFailed::Unauthorized),
        _ => Err(MintFailed::Failed),
    }
}

/// The `Authorization` header value of a session-scoped request: `Bearer <token>`.
pub(crate) fn bearer(token: &Secret) -> String {
    format!("Bearer {}", token.expose())
}

/// Path of the SIWE nonce endpoint, appended to the base URL.
pub(crate) const NONCE_PATH: &str = "/api/protocol/v2/auth/nonce";

/// `GET {base}/api/protocol/v2/auth/nonce`: a fresh single-use SIWE nonce.
///
/// Errors: `connect_failed` when the server is unreachable or answers without a nonce; the
/// server's code for a JSON refusal (e.g. `rate_limited`).
pub(crate) async fn fetch_nonce(base: &str) -> Result<NonceResponse, JsValue> {
    let url = format!("{base}{NONCE_PATH}");
    let failed = |why: String| error::coded(ErrorCode::ConnectFailed, &why);
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_mode(web_sys::RequestMode::Cors);
    init.set_cache(web_sys::RequestCache::NoStore);
    let promise: js_sys::Promise = global::fetch(&JsValue::from_str(&url), &init)?.unchecked_into();
    let response: web_sys::Response = JsFuture::from(promise)
        .await
        .map_err(|e| failed(format!("could not reach {url}: {}", error::describe(&e))))?
        .dyn_into()?;
    let text = JsFuture::from(response.text()?)
        .await?
        .as_string()
        .unwrap_or_default();
    if response.ok() {
        return serde_json::from_str(&text)
            .map_err(|e| failed(format!("nonce response from {url} is invalid: {e}")));
    }
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => error::js_error(&b.code, &b.error),
        Err(_) => failed(format!("{url} answered HTTP {}", response.status())),
    })
}

/// POSTs JSON `body` to `{base}{path}` with `extra` headers; the body text of a 2xx answer.
///
/// Errors: the server's `{error, code}` as a `P3Error` (codes this SDK does not know pass
/// through); `connect_failed` when the server cannot be reached or answers without a JSON
/// error body.
pub(crate) async fn post_api(
    base: &str,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Result<String, JsValue> {
    let url = format!("{base}{path}");
    let (status, _, text) = post_json_with(&url, body, extra).await.map_err(|thrown| {
        error::coded(
            ErrorCode::ConnectFailed,
            &format!("could not reach {url}: {}", error::describe(&thrown)),
        )
    })?;
    if (200..300).contains(&status) {
        return Ok(text);
    }
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => error::js_error(&b.code, &b.error),
        Err(_) => error::coded(
            ErrorCode::ConnectFailed,
            &format!("{url} answered HTTP {status}"),
        ),
    })
}

/// `fetch(url, {method: 'POST', body, headers: {'Content-Type': 'application/json'}})`;
/// returns the status, the `Retry-After` header in seconds (when an integer) and the body
/// text. Errors: whatever `fetch` or reading the body threw.
async fn post_json(url: &str, body: &str) -> Result<(u16, Option<u64>, String), JsValue> {
    post_json_with(url, body, &[]).await
}

/// [`post_json`] with `extra` headers (name, value).
async fn post_json_with(
    url: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Result<(u16, Option<u64>, String), JsValue> {
    let headers = web_sys::Headers::new()?;
    headers.set("Content-Type", "application/json")?;
    for (name, value) in extra {
        headers.set(name, value)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    init.set_headers(&headers);
    init.set_mode(web_sys::RequestMode::Cors);
    init.set_cache(web_sys::RequestCache::NoStore);
    let promise: js_sys::Promise = global::fetch(&JsValue::from_str(url), &init)?.unchecked_into();
    let response: web_sys::Response = JsFuture::from(promise).await?.dyn_into()?;
    let retry_after_s = response
        .headers()
        .get("Retry-After")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    let text = JsFuture::from(response.text()?)
        .await?
        .as_string()
        .unwrap_or_default();
    Ok((response.status(), retry_after_s, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test]
    fn websocket_urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:8080", "/api/x/ws"),
            "ws://127.0.0.1:8080/api/x/ws"
        );
        assert_eq!(
            websocket_url("HTTPS://example.org/p3", "/ws"),
            "wss://example.org/p3/ws"
        );
        assert_eq!(websocket_url("http://h", "ws"), "ws://h/ws");
    }

    #[wasm_bindgen_test]
    fn base_urls() {
        assert_eq!(normalize_base(" http://h:1/ ").unwrap(), "http://h:1");
        assert_eq!(normalize_base("HTTPS://h").unwrap(), "HTTPS://h");
        for bad in ["ftp://h", "h:80", "http://", "ws://h"] {
            assert!(normalize_base(bad).is_err(), "{bad}");
        }
    }
}
