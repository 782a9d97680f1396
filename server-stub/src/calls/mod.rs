//! Calls addressed to an identity (seed 000 "Nexus as P2P signaling"; issue 12 "Calls
//! addressed to an identity"; PROTOCOL.md §13.16): a signed-in session rings a verified
//! identity wherever it is connected, the callee answers, and the two parties then signal a
//! WebRTC connection to each other on the Messaging lane (§13.5) without sharing a room.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /api/nexus/calls/initiate` `{to}` | 200 [`InitiateResponse`]; 401 `unauthorized` / `auth_required`; 400 `invalid_argument`; 404 `callee_unavailable`; 403 `forbidden`; 429 `too_many_requests` / `rate_limited` |
//! | `POST /api/nexus/calls/{callId}/accept` | 200 [`AcceptResponse`]; 401; 404 `call_unknown` |
//! | `POST /api/nexus/calls/{callId}/decline` | 204; 401; 404 `call_unknown` |
//! | `POST /api/nexus/calls/{callId}/end` | 204; 401; 404 `call_unknown` |
//!
//! The acting session is named by the `P3-Session` header and proven by its
//! `Authorization: Bearer <sessionToken>` ([`acting_session`]). Every route
//! passes the per-IP `POST` rate limit (`--rate-ip-post`). A call rings for
//! `--call-ring-timeout-ms` (default 30 s): a timer ends it (`call-ended expired`) if nobody
//! answered. Policy: a session rings only if its handshake's `acceptCallsFrom` admits the
//! caller (default `"nobody"`).

pub(crate) mod book;

use crate::error::{ApiJson, AppError};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use p3_lanes::core::call::{
    AcceptCallsFrom, AcceptResponse, InitiateRequest, InitiateResponse, HEADER_SESSION,
    MAX_CALL_ID_LEN, MAX_TO_LEN,
};
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most entries in a handshake's `acceptCallsFrom` list.
pub const MAX_ACCEPT_LIST: usize = 256;

/// The session a call request acts for: the `P3-Session: <sessionId>` header, proven by
/// `Authorization: Bearer <sessionToken>` of that session ([`crate::auth::bearer`],
/// `Registry::authorize`, constant-time). Either header missing or malformed, an unknown or
/// expired session, or another session's token: the same 401 `unauthorized` as every session
/// route ([`crate::auth::unauthorized`]), so a stranger who knows a member id (it is public)
/// cannot ring, answer or hang up for it.
pub(crate) fn acting_session(state: &AppState, headers: &HeaderMap) -> Result<SessionId, AppError> {
    let sid = headers
        .get(HEADER_SESSION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<SessionId>().ok())
        .ok_or_else(crate::auth::unauthorized)?;
    let token = crate::auth::bearer(headers).ok_or_else(crate::auth::unauthorized)?;
    if state.registry().authorize(sid, token, Instant::now()) {
        Ok(sid)
    } else {
        Err(crate::auth::unauthorized())
    }
}

/// Checks a handshake's `acceptCallsFrom`: at most [`MAX_ACCEPT_LIST`] entries of
/// 1..=[`MAX_TO_LEN`] bytes, else 400 `invalid_argument`.
pub(crate) fn check_policy(policy: &AcceptCallsFrom) -> Result<(), AppError> {
    let AcceptCallsFrom::Only(list) = policy else {
        return Ok(());
    };
    if list.len() > MAX_ACCEPT_LIST || list.iter().any(|t| t.is_empty() || t.len() > MAX_TO_LEN) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidArgument,
            format!(
                "`acceptCallsFrom` lists at most {MAX_ACCEPT_LIST} identities of 1..={MAX_TO_LEN} bytes"
            ),
        ));
    }
    Ok(())
}

/// A fresh call id: 16 bytes of the OS CSPRNG, base64url without padding (22 characters).
fn new_call_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS random number generator is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A `{callId}` path parameter: 1..=[`MAX_CALL_ID_LEN`] bytes, else 404 `call_unknown` is
/// what the registry would answer anyway.
fn call_id(id: &str) -> Result<&str, AppError> {
    if id.is_empty() || id.len() > MAX_CALL_ID_LEN {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::CallUnknown,
            "no such call for this session",
        ));
    }
    Ok(id)
}

/// `POST /api/nexus/calls/initiate` `{to}`: rings identity `to` (an address, EIP-55 or
/// lowercase, or an app-token `sub`) on each of its live sessions that admits the caller.
///
/// Errors: 401 `unauthorized` (no live acting session), 401 `auth_required` (it has no
/// verified identity); 400 `invalid_argument` (`to` empty or over 256 bytes) or `bad_request`
/// (body); 404 `callee_unavailable` (no live, reachable session of `to` with the Messaging
/// lane); 403 `forbidden` (none admits the caller); 429 `too_many_requests` (the caller or
/// every callee session is in 4 calls, or 1024 calls ring server-wide) or `rate_limited`.
pub async fn initiate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<ApiJson<InitiateRequest>, AppError>,
) -> Result<Json<InitiateResponse>, AppError> {
    // The credentials first: a stranger learns nothing from how its body is refused.
    let caller = acting_session(&state, &headers)?;
    let ApiJson(req) = body?;
    let id = new_call_id();
    let answer = state
        .registry()
        .ring(caller, &req.to, id.clone(), Instant::now())?;
    tracing::debug!(session = %caller, "call rings");
    // The ring timeout: a weak handle, so a pending timer never keeps the state alive.
    let weak = Arc::downgrade(&state);
    let after = Duration::from_millis(answer.expires_in_ms);
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if let Some(state) = weak.upgrade() {
            state.registry().expire_call(&id, Instant::now());
        }
    });
    Ok(Json(answer))
}

/// `POST /api/nexus/calls/{callId}/accept` by a session the call rings on: the caller gets
/// `call-accepted`; the answer names the caller's member id (`peer`) to signal to.
///
/// Errors: 401 as [`initiate`]; 404 `call_unknown` (unknown, expired, answered, or not
/// ringing on this session).
pub async fn accept(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<AcceptResponse>, AppError> {
    let by = acting_session(&state, &headers)?;
    let answer = state
        .registry()
        .answer_call(call_id(&id)?, by, true, Instant::now())?;
    answer
        .map(Json)
        .ok_or_else(|| AppError::internal("accepted call without an answer"))
}

/// `POST /api/nexus/calls/{callId}/decline` by a session the call rings on: 204; the caller
/// gets `call-declined`.
///
/// Errors: as [`accept`].
pub async fn decline(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let by = acting_session(&state, &headers)?;
    state
        .registry()
        .answer_call(call_id(&id)?, by, false, Instant::now())?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/nexus/calls/{callId}/end` by the caller (cancels a ringing call) or a party of
/// an accepted call (hangs up): 204; the others get `call-ended hangup`, and the two parties
/// may no longer address each other outside a shared room.
///
/// Errors: as [`accept`].
pub async fn end(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    let by = acting_session(&state, &headers)?;
    state
        .registry()
        .end_call(call_id(&id)?, by, Instant::now())?;
    Ok(StatusCode::NO_CONTENT)
}
