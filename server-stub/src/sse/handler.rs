//! The SSE HTTP handlers (see [`super`]): stream cursors over the session's [`super::hub::SseHub`], `POST`
//! to a lane, and the admin close.

use super::hub::Item;
use crate::auth::{unauthorized, Authorized};
use crate::error::{AppError, SessionPath};
use crate::limits::bounds::PeerIp;
use crate::music;
use crate::pwa::admin_allowed;
use crate::registry::encoded::Variant;
use crate::registry::outbound::mono_ms;
use crate::registry::session::PostOutcome;
use crate::registry::HTTP_SENDER;
use crate::signal_route;
use crate::state::{AppState, RelayNote};
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::rejection::{BytesRejection, ExtensionRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Version};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use p3_lanes::core::control::{validate_room_name, Control};
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::{FrameHeader, SessionId};
use p3_lanes::core::handshake::TICKET_QUERY;
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::payload;
use p3_lanes::core::sse::post::{
    fingerprint, parse_seq, SeqCheck, HEADER_SEQ, HEADER_SEQ_EXPECTED,
};
use p3_lanes::core::sse::{
    encoding_of_content_type, lane_event_name, parse_lane_list, SseDiscontinuity, SseMessage,
    EVENT_DISCONTINUITY, REASON_UNKNOWN_EVENT_ID,
};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most events taken from the history per registry lock.
const BATCH: usize = 64;

/// The seed's SSE response headers on top of axum's `Content-Type: text/event-stream`.
/// `Connection: keep-alive` only on HTTP/1.x: HTTP/2 forbids connection-specific headers
/// (RFC 9113 §8.2.2).
fn sse_headers(resp: &mut Response, version: Version) {
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if version <= Version::HTTP_11 {
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
}

/// The cursor of an open stream.
struct Cursor {
    state: Arc<AppState>,
    sid: SessionId,
    lanes: Vec<Lane>,
    after: u64,
    reported: [u64; 8],
    generation: u64,
    wake: watch::Receiver<u64>,
    pending: VecDeque<Event>,
    /// `--sse-max-age-s` after the stream opened: it ends then (the client resumes with
    /// `Last-Event-ID`), so no stream keeps its session alive forever.
    ends_at: tokio::time::Instant,
    _guard: StreamGuard,
}

/// Counts an open stream in its hub and for its client address; its drop touches the session
/// (the TTL restarts).
struct StreamGuard {
    state: Arc<AppState>,
    sid: SessionId,
    ip: Option<std::net::IpAddr>,
    /// When the connection last polled the stream (ms of `mono_ms`).
    polled: Arc<AtomicU64>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state
            .registry()
            .sse_stream_closed(self.sid, self.ip, &self.polled, Instant::now());
    }
}

fn to_event(item: Item) -> Event {
    match item {
        Item::Message { lane, id, data } => Event::default()
            .event(lane_event_name(lane))
            .id(id.to_string())
            .data(&*data),
        Item::Discontinuity(d) => Event::default()
            .event(EVENT_DISCONTINUITY)
            .data(serde_json::to_string(&d).unwrap_or_default()),
    }
}

async fn next_event(mut c: Cursor) -> Option<(Result<Event, Infallible>, Cursor)> {
    loop {
        if tokio::time::Instant::now() >= c.ends_at {
            return None;
        }
        if let Some(ev) = c.pending.pop_front() {
            return Some((Ok(ev), c));
        }
        c.wake.borrow_and_update();
        let items = {
            let mut reg = c.state.registry();
            let hub = reg.sse_hub(c.sid, Instant::now())?;
            if hub.generation() != c.generation {
                return None;
            }
            hub.poll(&c.lanes, c.after, &mut c.reported, BATCH)
        };
        if !items.is_empty() {
            for item in items {
                if let Item::Message { id, .. } = &item {
                    c.after = *id;
                }
                c.pending.push_back(to_event(item));
            }
            continue;
        }
        let state = c.state.clone();
        tokio::select! {
            changed = c.wake.changed() => if changed.is_err() { return None },
            () = state.shutdown_started() => return None,
            () = tokio::time::sleep_until(c.ends_at) => return None,
        }
    }
}

/// `Last-Event-ID` (header, else the `lastEventId` query); `None` without one.
///
/// Errors: 400 `bad_request` for a value that is not a decimal event id.
fn last_event_id(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Option<u64>, AppError> {
    let text = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| AppError::bad_request("Last-Event-ID is not text"))?
                .to_owned(),
        ),
        None => query.get("lastEventId").cloned(),
    };
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => t.parse().map(Some).map_err(|_| {
            AppError::bad_request(format!(
                "Last-Event-ID {t:?} is not an event id of this server"
            ))
        }),
    }
}

fn query_map(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, AppError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| AppError::bad_request(e.body_text()))
}

/// Opens a stream of `lanes` (`None`: every granted lane) for `sid`, from a client at `ip`.
fn open(
    state: Arc<AppState>,
    ip: Option<std::net::IpAddr>,
    sid: SessionId,
    lanes: Option<Vec<Lane>>,
    after: Option<u64>,
    version: Version,
) -> Result<Response, AppError> {
    let config = state.config();
    let (retry, keepalive) = (
        Duration::from_millis(config.sse_retry_ms),
        Duration::from_millis(config.sse_keepalive_ms),
    );
    let mut reg = state.registry();
    let now = Instant::now();
    let granted: Vec<Lane> = reg
        .lanes_of(sid, now)
        .ok_or(AppError::session_not_found(sid))?
        .into_iter()
        .map(|l| l.0)
        .collect();
    let lanes = match lanes {
        None => granted,
        Some(lanes) => {
            if lanes.is_empty() {
                return Err(AppError::bad_request("`lanes` names no lane"));
            }
            if let Some(l) = lanes.iter().find(|l| !granted.contains(l)) {
                return Err(WireError::new(
                    ErrorCode::LaneNotNegotiated,
                    format!("lane {} was not negotiated by this session", l.id()),
                )
                .into());
            }
            lanes
        }
    };
    let welcome = reg.welcome(sid);
    let (hub, polled) = reg
        .sse_stream_open(sid, ip, now)?
        .ok_or(AppError::session_not_found(sid))?;
    let guard = StreamGuard {
        state: state.clone(),
        sid,
        ip,
        polled: polled.clone(),
    };
    let mut pending = VecDeque::new();
    let mut first = Event::default().retry(retry);
    if lanes.contains(&Lane::Control) {
        let msg = SseMessage {
            lane: Lane::Control.id(),
            seq: 0,
            from: None,
            payload: serde_json::to_value(&welcome).unwrap_or_default(),
        };
        first = first
            .event(lane_event_name(Lane::Control))
            .data(serde_json::to_string(&msg).unwrap_or_default());
    }
    pending.push_back(first);
    let mut after = after.unwrap_or(0);
    if after > hub.last_id() {
        // Not an id of this session: say so per lane and continue with new events only.
        for &lane in &lanes {
            pending.push_back(to_event(Item::Discontinuity(SseDiscontinuity {
                lane: lane.id(),
                last_event_id: after,
                seq: hub.next_seq(lane),
                reason: REASON_UNKNOWN_EVENT_ID.into(),
            })));
        }
        after = hub.last_id();
    }
    let cursor = Cursor {
        state: state.clone(),
        sid,
        lanes,
        after,
        reported: [0; 8],
        generation: hub.generation(),
        wake: hub.subscribe(),
        pending,
        ends_at: tokio::time::Instant::now() + Duration::from_secs(config.sse_max_age_s),
        _guard: guard,
    };
    drop(reg);
    tracing::info!(session = %sid, lanes = ?cursor.lanes, after, "SSE stream open");
    let stream = stall_checked(
        Box::pin(futures::stream::unfold(cursor, next_event)),
        polled,
        config
            .sse_keepalive_ms
            .saturating_add(config.sse_write_timeout_ms),
    );
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response();
    sse_headers(&mut resp, version);
    Ok(resp)
}

/// `inner`, recording every poll in `polled`; a poll coming more than `stall_ms` after the
/// previous one ends the stream: the connection was stalled on a client that stopped reading
/// (`--sse-write-timeout-ms`; an idle stream is polled at least every `--sse-keepalive-ms` for
/// its keep-alive comment). Until that poll, [`crate::sse::hub::SseHub::read_within`] already
/// stops counting it as activity, so the session can expire.
fn stall_checked<S>(
    mut inner: S,
    polled: Arc<AtomicU64>,
    stall_ms: u64,
) -> impl futures::Stream<Item = S::Item>
where
    S: futures::Stream + Unpin,
{
    futures::stream::poll_fn(move |cx| {
        let now = mono_ms();
        let before = polled.swap(now, Ordering::Relaxed);
        if now.saturating_sub(before) > stall_ms {
            return std::task::Poll::Ready(None);
        }
        futures::StreamExt::poll_next_unpin(&mut inner, cx)
    })
}

/// Parses the `{sid}` and `{id}` path parameters.
fn sid_and_lane(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(SessionId, Lane), AppError> {
    let Path((sid, lane)) = path?;
    let sid = sid
        .parse::<SessionId>()
        .map_err(|e| AppError::bad_request(e.to_string()))?;
    let id: u8 = lane
        .parse()
        .map_err(|_| AppError::bad_request(format!("{lane:?} is not a lane id")))?;
    let lane = Lane::from_id(id).ok_or_else(|| {
        AppError::from(WireError::new(
            ErrorCode::UnknownLane,
            format!("lane id {id} is not in 1..=8"),
        ))
    })?;
    Ok((sid, lane))
}

/// Uses the stream's `?ticket=` ([`crate::auth`]): a browser `EventSource` cannot send an
/// `Authorization` header.
///
/// Errors: 401 `unauthorized` for a missing, unknown, used or expired ticket and for an
/// unknown session, all alike.
async fn redeem(
    state: &AppState,
    sid: SessionId,
    query: &HashMap<String, String>,
) -> Result<(), AppError> {
    let ticket = query.get(TICKET_QUERY).ok_or_else(unauthorized)?;
    if state.redeem(sid, ticket).await {
        // In a cluster this node holds the session from now on (taken over if need be).
        state.cluster_claim(sid).await;
        Ok(())
    } else {
        Err(unauthorized())
    }
}

/// `GET /api/protocol/v2/session/{sid}/lane/{id}/stream?ticket=<ticket>`: the lane's
/// `text/event-stream`.
///
/// Errors: 401 `unauthorized` (see [`redeem`]); 404 `session_not_found` (expired after the
/// ticket was checked); 400 `lane_not_negotiated`, `unknown_lane`, `bad_request` (malformed id
/// or `Last-Event-ID`).
pub async fn lane_stream(
    State(state): State<Arc<AppState>>,
    PeerIp(ip): PeerIp,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    version: Version,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (sid, lane) = sid_and_lane(path)?;
    let query = query_map(query)?;
    redeem(&state, sid, &query).await?;
    let after = last_event_id(&headers, &query)?;
    open(state, ip, sid, Some(vec![lane]), after, version)
}

/// `GET /api/protocol/v2/session/{sid}/stream?ticket=<ticket>&lanes=1,2,5`: one stream for several lanes
/// (default: every granted lane), events tagged `lane-<id>`.
///
/// Errors: as [`lane_stream`].
pub async fn stream(
    State(state): State<Arc<AppState>>,
    PeerIp(ip): PeerIp,
    SessionPath(sid): SessionPath,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    version: Version,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let query = query_map(query)?;
    redeem(&state, sid, &query).await?;
    let after = last_event_id(&headers, &query)?;
    let lanes = match query.get("lanes") {
        None => None,
        Some(text) => Some(
            parse_lane_list(text)
                .map_err(|(code, why)| AppError::from(WireError::new(code, why)))?,
        ),
    };
    open(state, ip, sid, lanes, after, version)
}

/// Why a message was not (fully) delivered.
enum Failed {
    Error(AppError),
    /// The receivers whose queue was full.
    Backpressure(Vec<SessionId>),
}

impl From<AppError> for Failed {
    fn from(e: AppError) -> Failed {
        Failed::Error(e)
    }
}

impl From<WireError> for Failed {
    fn from(e: WireError) -> Failed {
        Failed::Error(e.into())
    }
}

/// The 503 `backpressure` error naming `refused`.
fn backpressure_error(refused: &[SessionId]) -> AppError {
    let ids: Vec<String> = refused.iter().map(ToString::to_string).collect();
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Backpressure,
        format!(
            "outbound queue full for {} receiver(s) ({}); message not delivered to them, retry later",
            ids.len(),
            ids.join(", ")
        ),
    )
}

/// The JSON error answer; `Retry-After: 1` on `backpressure`.
fn error_response(e: AppError) -> Response {
    let backpressure = e.body().code == ErrorCode::Backpressure;
    let mut r = e.into_response();
    if backpressure {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn failed_response(f: Failed) -> Response {
    match f {
        Failed::Error(e) => error_response(e),
        Failed::Backpressure(ids) => error_response(backpressure_error(&ids)),
    }
}

/// `POST /api/protocol/v2/session/{sid}/lane/{id}[?to=<sid>]`: sends one message on the lane,
/// routed like a WebSocket frame (§5 "Routing": the room, or `to`; WebRTC signaling and music
/// messages as on a WebSocket). The body is the payload,
/// `application/json` or `application/msgpack` (plain or with dictionary keys). On lane 1 it
/// is a Control message: `join`, `leave` or `ping` (answers arrive on the session's stream).
/// Answers 202 with no body once the message is handed to every receiver.
///
/// With a `P3-Seq: <n>` header (PROTOCOL.md §14.6) the message is delivered at most once per
/// (session, lane, n): a retry of the last number gets the first request's answer without a
/// second delivery (after a `backpressure`, it delivers to the receivers still missing), a
/// number below it answers 202 and delivers nothing.
///
/// Requires `Authorization: Bearer <sessionToken>` ([`crate::auth`]), checked before anything
/// else (a stranger cannot spend the session's lane budget or `P3-Seq` numbers).
///
/// A `to` must name a member of the sender's own room (`forbidden` otherwise).
///
/// Errors (JSON `{error, code}`): 401 `unauthorized` (no, wrong or another session's token;
/// unknown session); 403 `forbidden` (`to` outside the sender's room); 404 `session_not_found`; 400 `lane_not_negotiated`,
/// `unknown_lane`, `bad_payload`, `unknown_dictionary`, `bad_control`, `invalid_argument`,
/// `not_in_room`, `unknown_target`, `bad_request` (also a malformed `P3-Seq`); 409 `seq_gap`
/// (with `P3-Seq-Expected`), `seq_in_progress`; 422 `seq_reused`; 413 `frame_too_large`; 415
/// `bad_request` (other content types); 503 `backpressure` (with `Retry-After: 1`) when a
/// receiver's queue is full: the message reached the others, not the sessions named in the
/// error.
pub async fn post(
    State(state): State<Arc<AppState>>,
    _authorized: Authorized,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (sid, lane, query) =
        match sid_and_lane(path).and_then(|(s, l)| Ok((s, l, query_map(query)?))) {
            Ok(t) => t,
            Err(e) => return error_response(e),
        };
    // [rate-limits hook] the session's budget for this lane; before the P3-Seq ledger, so a
    // refusal (429) is never recorded as the answer to that seq.
    if let Err(refusal) = state.limits().check_lane(sid, lane) {
        return refusal.into_response();
    }
    if let Ok(b) = &body {
        state.pulse().metrics().received(lane, b.len());
    }
    let seq = match headers.get(HEADER_SEQ).map(|v| parse_seq(v.as_bytes())) {
        None => {
            return match post_message(&state, sid, lane, &query, &headers, body, None) {
                Ok(()) => StatusCode::ACCEPTED.into_response(),
                Err(f) => failed_response(f),
            }
        }
        Some(Err(e)) => return error_response(AppError::bad_request(e.to_string())),
        Some(Ok(seq)) => seq,
    };
    let fp = fingerprint(
        lane,
        query.get("to").map(String::as_str),
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        body.as_deref().unwrap_or_default(),
    );
    let check = state
        .registry()
        .post_check(sid, lane, seq, fp, Instant::now());
    let only = match check {
        None => return error_response(AppError::session_not_found(sid)),
        Some(SeqCheck::Fresh) => None,
        Some(SeqCheck::Repeat(PostOutcome::Backpressure(pending))) => Some(pending),
        Some(SeqCheck::Repeat(done)) => {
            state.registry().post_finish(sid, lane, seq, done.clone());
            tracing::debug!(session = %sid, lane = lane.id(), seq, "repeated POST answered from the ledger");
            return match done {
                PostOutcome::Refused(e) => error_response(e),
                _ => StatusCode::ACCEPTED.into_response(),
            };
        }
        Some(SeqCheck::Stale) => return StatusCode::ACCEPTED.into_response(),
        Some(SeqCheck::InProgress) => {
            return error_response(AppError::new(
                StatusCode::CONFLICT,
                ErrorCode::SeqInProgress,
                format!(
                    "P3-Seq {seq} on lane {} is still being processed; retry later",
                    lane.id()
                ),
            ))
        }
        Some(SeqCheck::Reused) => {
            return error_response(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::SeqReused,
                format!(
                    "P3-Seq {seq} on lane {} was used for another message",
                    lane.id()
                ),
            ))
        }
        Some(SeqCheck::Gap { expected }) => {
            let mut r = error_response(AppError::new(
                StatusCode::CONFLICT,
                ErrorCode::SeqGap,
                format!(
                    "P3-Seq {seq} on lane {}: expected {expected} (a message in between never arrived)",
                    lane.id()
                ),
            ));
            r.headers_mut()
                .insert(HEADER_SEQ_EXPECTED, HeaderValue::from(expected));
            return r;
        }
    };
    let result = post_message(&state, sid, lane, &query, &headers, body, only.as_deref());
    let (outcome, response) = match result {
        Ok(()) => (PostOutcome::Accepted, StatusCode::ACCEPTED.into_response()),
        Err(Failed::Backpressure(ids)) => (
            PostOutcome::Backpressure(ids.clone()),
            error_response(backpressure_error(&ids)),
        ),
        Err(Failed::Error(e)) => (PostOutcome::Refused(e.clone()), error_response(e)),
    };
    state.registry().post_finish(sid, lane, seq, outcome);
    response
}

/// Validates and delivers one posted message; `only`: deliver to these receivers only (the
/// retry of a `backpressure`).
fn post_message(
    state: &AppState,
    sid: SessionId,
    lane: Lane,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    only: Option<&[SessionId]>,
) -> Result<(), Failed> {
    let to = match query.get("to") {
        None => None,
        Some(t) => Some(
            t.parse::<SessionId>()
                .map_err(|e| AppError::bad_request(e.to_string()))?,
        ),
    };
    let now = Instant::now();
    let granted = state
        .registry()
        .lanes_of(sid, now)
        .ok_or(AppError::session_not_found(sid))?;
    if !granted.iter().any(|l| l.0 == lane) {
        return Err(WireError::new(
            ErrorCode::LaneNotNegotiated,
            format!("lane {} was not negotiated by this session", lane.id()),
        )
        .into());
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = encoding_of_content_type(ct).ok_or_else(|| {
        AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            format!("Content-Type {ct:?}: send application/json or application/msgpack"),
        )
    })?;
    let body = body.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::FrameTooLarge
        } else {
            ErrorCode::BadRequest
        };
        AppError::new(e.status(), code, e.body_text())
    })?;
    let max = state.config().max_frame_bytes;
    if body.len() > max {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::FrameTooLarge,
            format!(
                "message of {} bytes exceeds the limit of {max} bytes",
                body.len()
            ),
        )
        .into());
    }
    let dict_version = match encoding {
        Encoding::Msgpack => state.dict().version(),
        _ => 0,
    };
    if lane == Lane::Control {
        Ok(post_control(state, sid, encoding, dict_version, &body)?)
    } else {
        let mut h = FrameHeader::data(lane, encoding, 0, dict_version);
        h.to = to;
        post_data(state, sid, &h, &body, only)
    }
}

fn post_control(
    state: &AppState,
    sid: SessionId,
    encoding: Encoding,
    dict_version: u32,
    body: &[u8],
) -> Result<(), AppError> {
    let h = FrameHeader::control(encoding, 0, dict_version);
    let msg = payload::decode_control(&h, body, Some(state.dict()))
        .map_err(|e| AppError::from(WireError::new(e.code(), e.to_string())))?;
    let mut reg = state.registry();
    if !reg.touch(sid, HTTP_SENDER, Instant::now()) {
        return Err(AppError::session_not_found(sid));
    }
    match msg {
        Control::Join { room } => {
            validate_room_name(&room)
                .map_err(|why| WireError::new(ErrorCode::InvalidArgument, why))?;
            if state.cluster().is_some() {
                // Written to the room's stream first, with the registry lock released; a
                // refusal arrives on the session's Control lane.
                drop(reg);
                state.cluster_join(sid, HTTP_SENDER, room, 0);
                return Ok(());
            }
            reg.join(sid, room)?;
        }
        Control::Leave { room } => {
            if reg.room_of(sid).as_deref() != Some(room.as_str()) {
                return Err(
                    WireError::new(ErrorCode::NotInRoom, format!("not in room {room:?}")).into(),
                );
            }
            reg.leave(sid, room, 0);
        }
        Control::Ping {
            client_time,
            rtt_ms,
        } => state.answer_ping(reg, sid, HTTP_SENDER, client_time, rtt_ms),
        _ => {
            return Err(WireError::new(
                ErrorCode::BadControl,
                "clients send join, leave, ping; other control messages are the server's",
            )
            .into())
        }
    }
    Ok(())
}

/// Relays a posted Data message like `ws` relays a frame, with errors as the answer.
fn post_data(
    state: &AppState,
    sid: SessionId,
    h: &FrameHeader,
    body: &[u8],
    only: Option<&[SessionId]>,
) -> Result<(), Failed> {
    let routed = state.registry().route(sid, HTTP_SENDER, h, Instant::now());
    let targets = match routed {
        Err(None) => return Err(AppError::session_not_found(sid).into()),
        Err(Some(e)) => return Err(e.into()),
        Ok(t) => t,
    };
    let value = payload::decode_with(h, body, Some(state.dict()), state.decode_budget(h.lane))
        .map_err(|e| AppError::from(WireError::new(e.code(), e.to_string())))?;
    if h.lane == Lane::Messaging && signal_route::is_signal(&value) {
        // WebRTC signaling goes to the one member it names; refusals arrive on the session's
        // Control lane, as on a WebSocket.
        signal_route::relay_signal(state, sid, HTTP_SENDER, h, value);
        return Ok(());
    }
    if h.lane == Lane::Sync && h.to.is_none() && music::is_music_message(&value) {
        // Refusals from the music authority arrive on the session's Control lane, as on a
        // WebSocket.
        state.music_message(sid, HTTP_SENDER, 0, value);
        return Ok(());
    }
    let mut key = None;
    if targets.is_ok() && only.is_none() {
        match state.cluster_relay(sid, h.lane, h.to, &value) {
            Ok(k) => key = k,
            Err(()) => {
                return Err(AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Backpressure,
                    "the cluster's outbound queue is full; message not delivered to other nodes, retry later",
                )
                .into())
            }
        }
    }
    let mut targets = targets?;
    if let Some(only) = only {
        targets.retain(|t| only.contains(&t.id()));
    }
    let original = Variant {
        encoding: h.encoding,
        bytes: Cow::Borrowed(body),
        dict_version: h.dict_version,
    };
    // A retry goes to the sockets that refused it only: their SSE history already has it.
    let relayed = state.deliver_relay(
        sid,
        h.lane,
        &targets,
        &value,
        Some(original),
        RelayNote {
            history: only.is_none(),
            key,
        },
    );
    if !relayed.refused.is_empty() {
        return Err(Failed::Backpressure(relayed.refused));
    }
    if let Some(size) = relayed.too_large {
        let max = state.config().max_frame_bytes;
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::FrameTooLarge,
            format!("relayed frame would be {size} bytes, over the limit of {max} bytes; not delivered to receivers using another encoding"),
        )
        .into());
    }
    Ok(())
}

/// `POST /api/admin/sse/close` answer.
#[derive(Debug, Serialize)]
pub struct StreamsClosed {
    /// Streams asked to end.
    pub closed: usize,
}

/// `POST /api/admin/sse/close[?session=<sid>]`: ends the SSE streams of one session or of
/// all; EventSource clients reconnect after the `retry` delay and resume with
/// `Last-Event-ID`. Loopback only, with the admin token (same rules as `POST
/// /api/admin/version`).
///
/// Errors: 401 `unauthorized` (no or wrong admin token); 403 `forbidden`; 400 `bad_request`
/// for a malformed session id.
pub async fn admin_close(
    State(state): State<Arc<AppState>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<StreamsClosed>, AppError> {
    let peer = peer.ok().map(|ConnectInfo(addr)| addr);
    admin_allowed(&state, peer, &headers)?;
    let only = match query_map(query)?.get("session") {
        None => None,
        Some(t) => Some(
            t.parse::<SessionId>()
                .map_err(|e| AppError::bad_request(e.to_string()))?,
        ),
    };
    let closed = state.registry().sse_close_streams(only);
    tracing::info!(closed, "SSE streams closed by admin request");
    Ok(Json(StreamsClosed { closed }))
}
