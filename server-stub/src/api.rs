//! The HTTP API (seed 000 "Session Handshake", "Session Management", "PWA Cache Protection").
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /api/protocol/v2/session/handshake` | [`HandshakeResponse`] or 400 with the negotiation error |
//! | `GET /api/protocol/v2/session/{sid}` (Bearer) | [`SessionStatus`], 401 `unauthorized`, 400 for a malformed id |
//! | `DELETE /api/protocol/v2/session/{sid}` (Bearer) | 204, or 401 |
//! | `POST /api/protocol/v2/session/{sid}/ticket` (Bearer) | `{"ticket", "expiresInMs"}`, or 401 |
//!
//! "(Bearer)": `Authorization: Bearer <sessionToken>` ([`crate::auth`]); every refusal of it
//! is the same 401 `unauthorized`, for an unknown session as for another session's token.
//! | `GET /api/protocol/v2/protocol/info` | [`ProtocolInfoBody`] |
//! | `GET /api/version` | `{"version": "<app version>"}`, `Cache-Control: no-store` (see [`crate::pwa`]) |

use crate::auth::{unauthorized, Authorized};
use crate::error::AppError;
use crate::limits::bounds::{HandshakeBody, PeerIp};
use crate::now_ms;
use crate::registry::NewSession;
use crate::state::{lane_grants, AppState, SessionStatus};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use p3_lanes::core::dictionary::DictionaryWire;
use p3_lanes::core::handshake::{
    negotiate, HandshakeResponse, HeartbeatInfo, ProtocolInfo, TicketResponse, FEATURES,
    FEATURE_MUX, FEATURE_PRESENCE, PROTOCOL_VERSION,
};
use p3_lanes::core::lane::{Encoding, LANE_REGISTRY};
use p3_lanes::core::sse::is_sse_transport;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// `POST /api/protocol/v2/session/handshake`: negotiates and creates a session.
///
/// With `auth` (PROTOCOL.md §3.1), the identity is verified first ([`crate::auth`]) and the
/// answer names it in `identity`.
///
/// Errors: 401 `auth_invalid` with a `reason` for an `auth` that does not verify (no session
/// is created); 400 with `bad_request` (body is not a handshake request), `invalid_argument`,
/// `unknown_lane`, `control_lane_required`, `no_common_transport`, `no_common_encoding`;
/// 415 `bad_request` without `Content-Type: application/json`; every bound of
/// [`crate::limits::bounds`] (413 `payload_too_large` for a body over `--max-handshake-bytes`
/// or a `deviceInfo` over `--max-device-info-bytes`, 400 `invalid_argument` for a field out of
/// bounds).
pub async fn handshake(
    State(state): State<Arc<AppState>>,
    PeerIp(ip): PeerIp,
    headers: HeaderMap,
    HandshakeBody(req): HandshakeBody,
) -> Result<Json<HandshakeResponse>, AppError> {
    let negotiated = negotiate(&req, state.capabilities())?;
    if let Some(policy) = &req.accept_calls_from {
        crate::calls::check_policy(policy)?;
    }
    // Identity (issue 12): verified before the session exists; a failed `auth` creates none.
    let identity = match &req.auth {
        None => None,
        Some(auth) => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            state.cluster_nonce_adopt(auth).await;
            let verified = state.auth().verify(auth, host, now_ms(), Instant::now())?;
            state.cluster_nonce_used(auth).await?;
            Some(verified)
        }
    };
    let public_identity = identity.as_ref().map(|i| i.identity.clone());
    let lanes = negotiated.lanes.clone();
    // SSE sessions resume with event ids, not the multiplexer (PROTOCOL.md §14).
    let want_mux =
        req.features.iter().any(|f| f == FEATURE_MUX) && !is_sse_transport(negotiated.transport);
    let want_presence = req.features.iter().any(|f| f == FEATURE_PRESENCE);
    let new = NewSession {
        ip,
        client_id: req.client_id,
        wallet: req.wallet,
        device_info: req.device_info,
        transport: negotiated.transport,
        lanes,
        identity,
        accept_calls_from: req.accept_calls_from.unwrap_or_default(),
        presence: want_presence,
    };
    let (sid, mux, credentials) = state.create_session(new, want_mux)?;
    state
        .cluster_session_created(sid, credentials.token.expose(), credentials.ticket.expose())
        .await;
    let config = state.config();
    tracing::info!(session = %sid, lanes = ?negotiated.lanes, identity = ?public_identity, "session created");
    Ok(Json(HandshakeResponse {
        session_id: sid,
        transport: negotiated.transport.to_owned(),
        lanes: lane_grants(sid, negotiated.transport, &negotiated.lanes),
        dictionary: state.dict_wire().clone(),
        server_time: now_ms(),
        ttl_seconds: config.session_ttl_s,
        protocol: {
            let mut p = protocol_info();
            if mux {
                p.features.push(FEATURE_MUX.to_owned());
            }
            if want_presence {
                p.features.push(FEATURE_PRESENCE.to_owned());
            }
            p
        },
        websocket_url: format!("/api/protocol/v2/session/{sid}/ws"),
        heartbeat: HeartbeatInfo {
            interval_ms: config.heartbeat_interval_ms,
            timeout_ms: config.heartbeat_timeout_ms,
        },
        signaling_token: Some({
            state.cluster_signaling_secret().await;
            state.signaling().token(sid, now_ms())
        }),
        session_token: Some(credentials.token),
        ticket: Some(credentials.ticket),
        limits: state.limits().advertised(),
        identity: public_identity,
        sse_retry_ms: is_sse_transport(negotiated.transport).then_some(config.sse_retry_ms),
    }))
}

fn protocol_info() -> ProtocolInfo {
    ProtocolInfo {
        version: PROTOCOL_VERSION.to_owned(),
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
    }
}

/// `GET /api/protocol/v2/session/{sid}` with `Authorization: Bearer <sessionToken>`.
///
/// Errors: 401 `unauthorized` (no, wrong or another session's token; unknown session), 400
/// `bad_request` (malformed id).
pub async fn session_status(
    State(state): State<Arc<AppState>>,
    Authorized(sid): Authorized,
) -> Result<Json<SessionStatus>, AppError> {
    // Expired between the check and now: as unknown.
    state.status(sid).map(Json).ok_or_else(unauthorized)
}

/// `DELETE /api/protocol/v2/session/{sid}` with `Authorization: Bearer <sessionToken>`: 204;
/// the socket closes with 4404.
///
/// Errors: as [`session_status`].
pub async fn delete_session(
    State(state): State<Arc<AppState>>,
    Authorized(sid): Authorized,
) -> Result<StatusCode, AppError> {
    if state.delete_session(sid) {
        if let Some(c) = state.cluster() {
            if let Err(e) = c.delete_session(sid).await {
                tracing::warn!(session = %sid, error = %e, "session not deleted from the cluster");
            }
        }
        tracing::info!(session = %sid, "session deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unauthorized())
    }
}

/// `POST /api/protocol/v2/session/{sid}/ticket` with `Authorization: Bearer <sessionToken>`:
/// a single-use ticket for one WebSocket or SSE stream of the session (`?ticket=`), valid
/// `--ticket-ttl-ms` (30 s); at most 8 outstanding per session (minting a ninth forgets the oldest).
/// Answer: `{"ticket": "<base64url>", "expiresInMs": 30000}`, `Cache-Control: no-store`.
///
/// Errors: as [`session_status`].
pub async fn mint_ticket(
    State(state): State<Arc<AppState>>,
    Authorized(sid): Authorized,
) -> Result<impl IntoResponse, AppError> {
    let ticket = state
        .registry()
        .mint_ticket(sid, std::time::Instant::now())
        .ok_or_else(unauthorized)?;
    state.cluster_ticket_minted(sid, ticket.expose()).await;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(TicketResponse {
            ticket,
            expires_in_ms: state.config().ticket_ttl_ms,
        }),
    ))
}

/// One lane registry entry in [`ProtocolInfoBody`] (seed 000 `LaneRegistry`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneEntry {
    /// Lane id, 1..=8.
    pub id: u8,
    /// Seed name, e.g. `"Messaging"`.
    pub name: &'static str,
    /// Preferred encoding.
    pub default_encoding: Encoding,
    /// Higher is more important.
    pub priority: u8,
    /// Messages queued per direction before backpressure or dropping.
    pub queue_depth: u16,
    /// Guaranteed, ordered delivery.
    pub reliable: bool,
}

/// `GET /api/protocol/v2/protocol/info` body.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolInfoBody {
    /// Protocol version, `"2.0.0"`.
    pub version: &'static str,
    /// Feature names.
    pub features: &'static [&'static str],
    /// Transports this server supports, preferred first.
    pub transports: Vec<&'static str>,
    /// Encodings this server supports, preferred first.
    pub encodings: Vec<Encoding>,
    /// The full lane registry.
    pub lanes: Vec<LaneEntry>,
    /// The dictionary every session gets.
    pub dictionary: DictionaryWire,
}

/// `GET /api/protocol/v2/protocol/info`.
pub async fn protocol_info_handler(State(state): State<Arc<AppState>>) -> Json<ProtocolInfoBody> {
    let caps = state.capabilities();
    Json(ProtocolInfoBody {
        version: PROTOCOL_VERSION,
        features: FEATURES,
        transports: caps.transports.clone(),
        encodings: caps.encodings.clone(),
        lanes: LANE_REGISTRY
            .iter()
            .map(|s| LaneEntry {
                id: s.lane.id(),
                name: s.lane.name(),
                default_encoding: s.default_encoding,
                priority: s.priority,
                queue_depth: s.queue_depth,
                reliable: s.reliable,
            })
            .collect(),
        dictionary: state.dict_wire().clone(),
    })
}

/// `GET /api/version` (seed 000 "PWA Cache Protection"): never cached. The version is
/// `--app-version` (or `--reported-version`), changed at runtime by `POST /api/admin/version`.
pub async fn version(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ "version": state.reported_version() })),
    )
}

/// Any other path under `/api/`: 404 `bad_request`.
pub async fn not_found(uri: Uri) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        p3_lanes::core::error::ErrorCode::BadRequest,
        format!("no API endpoint at {}", uri.path()),
    )
}

/// A known API path with the wrong method: 405 `bad_request`.
pub async fn method_not_allowed() -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        p3_lanes::core::error::ErrorCode::BadRequest,
        "method not allowed on this endpoint",
    )
}
