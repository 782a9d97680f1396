//! PWA cache protection on the server (seed 000 "PWA Cache Protection"):
//!
//! | route | does |
//! | --- | --- |
//! | `GET /`, `GET /index.html` | the static dir's `index.html` with `<meta name="app-version" content>` set to the current app version, `Cache-Control: no-cache` |
//! | `POST /api/admin/version` `{"version"}` | changes the app version at runtime and pushes Control `version` to every open socket; loopback only |
//!
//! Serving the version inside the page is what makes the check honest: a page a service
//! worker serves from its cache keeps the version it was built with, while `GET /api/version`
//! always answers the server's current one.
//!
//! The admin endpoint answers only requests that come from a loopback address, carry no proxy
//! headers (`Forwarded`, `X-Forwarded-For`: a reverse proxy on the same machine would make
//! every request look local) and, when a browser sends an `Origin`, come from this server's
//! own origin (so a web page open in a developer's browser cannot change it). Otherwise
//! `403 forbidden`. It also needs the admin token, `Authorization: Bearer <--admin-token>`
//! (`P3_ADMIN_TOKEN`; generated and printed at start-up when unset): otherwise `401
//! unauthorized` ([`admin_allowed`]).

use crate::error::{ApiJson, AppError};
use crate::state::AppState;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::ExtensionRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use p3_lanes::core::error::ErrorCode;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

/// Longest app version accepted by `POST /api/admin/version`, bytes.
pub const MAX_VERSION_BYTES: usize = 128;

/// `GET /` and `GET /index.html`: the app shell with the current version in its `<meta>`.
///
/// Errors: 404 when the static dir has no `index.html`.
pub async fn index(State(state): State<Arc<AppState>>) -> Response {
    let path = state.config().static_dir.join("index.html");
    let html = match tokio::fs::read_to_string(&path).await {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "no index.html");
            return (StatusCode::NOT_FOUND, "not found").into_response();
        }
    };
    let version = state.app_version();
    let body = inject_app_version(&html, &version).into_owned();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `<meta name="app-version" content="...">` in `html` with its content set to `version`
/// (HTML-escaped); `html` unchanged when it has no such tag (the app did not opt in).
pub fn inject_app_version<'a>(html: &'a str, version: &str) -> Cow<'a, str> {
    let mut from = 0;
    while let Some(start) = html[from..].find("<meta").map(|i| i + from) {
        let Some(end) = html[start..].find('>').map(|i| i + start) else {
            break;
        };
        let tag = &html[start..end];
        from = end;
        if !(tag.contains("name=\"app-version\"") || tag.contains("name='app-version'")) {
            continue;
        }
        let Some(attr) = tag.find("content=") else {
            break;
        };
        let value_start = start + attr + "content=".len();
        let quote = html[value_start..].chars().next();
        let (Some(q @ ('"' | '\'')), true) = (quote, value_start < end) else {
            break;
        };
        let Some(value_end) = html[value_start + 1..end]
            .find(q)
            .map(|i| i + value_start + 1)
        else {
            break;
        };
        let mut out = String::with_capacity(html.len() + version.len());
        out.push_str(&html[..value_start + 1]);
        out.push_str(&escape_attr(version));
        out.push_str(&html[value_end..]);
        return Cow::Owned(out);
    }
    Cow::Borrowed(html)
}

fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Body of `POST /api/admin/version`.
#[derive(Debug, Deserialize)]
pub struct SetVersion {
    /// The new app version: 1..=128 bytes, no control characters.
    pub version: String,
}

/// Answer of `POST /api/admin/version`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionChanged {
    /// The app version now served in pages.
    pub version: String,
    /// What `GET /api/version` and the Control push now say (differs with `--reported-version`).
    pub reported_version: String,
    /// Sockets the `version` push was queued on.
    pub notified: usize,
}

/// `POST /api/admin/version`: sets the app version and pushes it to every open socket.
///
/// Errors: 403 `forbidden`, 401 `unauthorized` (see the module docs), 400 `invalid_argument` for a bad version,
/// 400/415 `bad_request` for a bad body.
pub async fn set_version(
    State(state): State<Arc<AppState>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SetVersion>,
) -> Result<Json<VersionChanged>, AppError> {
    let peer = peer.ok().map(|ConnectInfo(addr)| addr);
    admin_allowed(&state, peer, &headers)?;
    let v = body.version.trim();
    if v.is_empty() || v.len() > MAX_VERSION_BYTES || v.chars().any(char::is_control) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            format!("version must be 1..={MAX_VERSION_BYTES} bytes without control characters"),
        ));
    }
    let notified = state.set_app_version(v.to_owned());
    tracing::info!(version = v, notified, "app version changed");
    Ok(Json(VersionChanged {
        version: state.app_version(),
        reported_version: state.reported_version(),
        notified,
    }))
}

/// Whether an admin request may proceed: from where it comes ([`admin_origin_allowed`]: else
/// 403 `forbidden`), then the admin token (`Authorization: Bearer <--admin-token>`, compared
/// in constant time: else 401 `unauthorized`). The loopback rule alone is not enough: a page
/// that rebinds its DNS name to 127.0.0.1 makes the developer's browser a loopback client
/// with a matching `Origin` and `Host`; it cannot know the token.
///
/// Errors: 403 `forbidden`, 401 `unauthorized`.
pub fn admin_allowed(
    state: &AppState,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), AppError> {
    if let Err(why) = admin_origin_allowed(peer, headers) {
        tracing::warn!(?peer, why, "admin request refused");
        return Err(AppError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            why,
        ));
    }
    if !state.admin_token().verify(headers) {
        tracing::warn!(?peer, "admin request refused: no or wrong admin token");
        return Err(crate::auth::unauthorized());
    }
    Ok(())
}

/// Whether an admin request comes from where admin requests may: `Err` says why not.
pub fn admin_origin_allowed(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<(), &'static str> {
    match peer {
        Some(addr) if addr.ip().is_loopback() => {}
        Some(_) => return Err("admin endpoints answer loopback clients only"),
        None => return Err("cannot tell where the request comes from"),
    }
    if headers.contains_key(header::FORWARDED) || headers.contains_key("x-forwarded-for") {
        return Err("admin endpoints do not answer proxied requests");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        if host.is_none() || origin_host != host {
            return Err("admin endpoints do not answer cross-origin browser requests");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn injects_the_version_into_the_meta_tag_only() {
        let html = "<head><meta charset=\"utf-8\">\n<meta name=\"app-version\" content=\"dev\">\n<meta name=\"x\" content=\"y\"></head>";
        assert_eq!(
            inject_app_version(html, "2.0.0"),
            "<head><meta charset=\"utf-8\">\n<meta name=\"app-version\" content=\"2.0.0\">\n<meta name=\"x\" content=\"y\"></head>"
        );
        assert_eq!(
            inject_app_version("<meta content='a' name='app-version'>", "b\"<x>&"),
            "<meta content='b&quot;&lt;x&gt;&amp;' name='app-version'>"
        );
        let plain = "<head><meta charset=\"utf-8\"></head>";
        assert!(matches!(inject_app_version(plain, "1"), Cow::Borrowed(_)));
        assert!(matches!(
            inject_app_version("<meta name=\"app-version\" content=\"x", "1"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn admin_requests_only_from_loopback_same_origin_unproxied() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let local6: SocketAddr = "[::1]:5000".parse().unwrap();
        let remote: SocketAddr = "192.168.1.20:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(admin_origin_allowed(Some(local), &h).is_ok());
        assert!(admin_origin_allowed(Some(local6), &h).is_ok());
        assert!(admin_origin_allowed(Some(remote), &h).is_err());
        assert!(admin_origin_allowed(None, &h).is_err());
        let mut same = h.clone();
        same.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(admin_origin_allowed(Some(local), &same).is_ok());
        let mut cross = h.clone();
        cross.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(admin_origin_allowed(Some(local), &cross).is_err());
        let mut proxied = h.clone();
        proxied.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert!(admin_origin_allowed(Some(local), &proxied).is_err());
    }
}
