//! SSE lanes (seed 001 "Server-Sent Events (SSE)", seed 000 lane `url`s; issue 3; PROTOCOL.md
//! §14): a session's lanes as `text/event-stream`, and `POST` to send on a lane.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /api/protocol/v2/session/{sid}/lane/{id}/stream` | one lane's events |
//! | `GET /api/protocol/v2/session/{sid}/stream?lanes=1,2,5` | several lanes on one stream (default: every granted lane) |
//! | `POST /api/protocol/v2/session/{sid}/lane/{id}[?to=<sid>]` | sends one message, 202 (body `application/json` or `application/msgpack`; at most once per `P3-Seq`, §14.6) |
//! | `POST /api/admin/sse/close[?session=<sid>]` | ends SSE streams (clients resume with `Last-Event-ID`); loopback only |
//!
//! Per session an [`SseHub`] keeps a bounded history per lane of what the session received
//! (the same messages its WebSocket gets: relays, server data, Control messages), each with an
//! event id that increases across the session's lanes. Streams read that history from their
//! cursor (`Last-Event-ID`, header or `lastEventId` query) and wait on the hub's `watch` for
//! more, so a stream that reconnects loses nothing the history still holds, and gets an
//! explicit `discontinuity` event for each lane whose history forgot part of what it missed.
//! An `sse` session has a hub from its handshake; any other session gets one when it first
//! opens a stream. While a stream is open the session does not expire; a session with a hub
//! keeps its room while its streams reconnect (until its TTL ends).
//!
//! Each stream starts with `retry: <--sse-retry-ms>` and, when it carries lane 1, a per-stream
//! Control `welcome` (no event id, not in the history). Keep-alive comments follow silence of
//! `--sse-keepalive-ms`. Streams end when the session is deleted or expires, when the server
//! shuts down, or on `POST /api/admin/sse/close`.

use crate::error::{AppError, SessionPath};
use crate::music;
use crate::pwa::admin_allowed;
use crate::signal_route;
use crate::state::{AppState, Variant, HTTP_SENDER};
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
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::payload;
use p3_lanes::core::sse::post::{
    fingerprint, parse_seq, SeqCheck, HEADER_SEQ, HEADER_SEQ_EXPECTED,
};
use p3_lanes::core::sse::{
    encoding_of_content_type, lane_event_name, parse_lane_list, SseDiscontinuity, SseMessage,
    EVENT_DISCONTINUITY, REASON_HISTORY_LOST, REASON_UNKNOWN_EVENT_ID,
};
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Most events taken from the history per registry lock.
const BATCH: usize = 64;

/// One retained message of a lane.
#[derive(Debug)]
struct Record {
    id: u64,
    seq: u64,
    /// The [`SseMessage`] JSON.
    data: Arc<str>,
}

/// The bounded history of one lane.
#[derive(Debug, Default)]
struct LaneHistory {
    events: VecDeque<Record>,
    bytes: usize,
    /// Id of the newest forgotten event (0: none).
    forgotten_through: u64,
    /// Next per-lane seq, from 1.
    next_seq: u64,
}

/// What a stream reads next (see [`SseHub::poll`]).
#[derive(Debug)]
pub(crate) enum Item {
    /// A retained message.
    Message { lane: Lane, id: u64, data: Arc<str> },
    /// The lane forgot messages after the stream's cursor.
    Discontinuity(SseDiscontinuity),
}

/// Per-session SSE state: the bounded per-lane history and the streams' wake-up.
#[derive(Debug)]
pub(crate) struct SseHub {
    /// The last event id assigned (ids start at 1 and increase across lanes).
    last_id: u64,
    lanes: [LaneHistory; 8],
    /// Carries `last_id`; streams wait on it. Dropped with the session, which ends them.
    wake: watch::Sender<u64>,
    /// Open streams (the session does not expire while any is open).
    pub(crate) streams: usize,
    /// Bumped by [`SseHub::close_streams`]: streams opened before end.
    generation: u64,
    limit_events: usize,
    limit_bytes: usize,
}

impl SseHub {
    /// A hub keeping at most `limit_events` messages and `limit_bytes` bytes of data per lane.
    pub(crate) fn new(limit_events: usize, limit_bytes: usize) -> SseHub {
        SseHub {
            last_id: 0,
            lanes: Default::default(),
            wake: watch::channel(0).0,
            streams: 0,
            generation: 0,
            limit_events: limit_events.max(1),
            limit_bytes,
        }
    }

    /// Records a message on `lane` whose payload is `payload_json` (JSON text), from `from`
    /// (`None`: a server message), and wakes the streams. Forgets the lane's oldest messages
    /// beyond the limits (the newest is always kept).
    pub(crate) fn push_json(&mut self, lane: Lane, from: Option<SessionId>, payload_json: &str) {
        let h = &mut self.lanes[lane as usize - 1];
        h.next_seq = h.next_seq.max(1);
        let seq = h.next_seq;
        h.next_seq += 1;
        let from = from
            .map(|f| format!(",\"from\":\"{f}\""))
            .unwrap_or_default();
        let data: Arc<str> = format!(
            "{{\"lane\":{},\"seq\":{seq}{from},\"payload\":{payload_json}}}",
            lane.id()
        )
        .into();
        self.last_id += 1;
        h.bytes += data.len();
        h.events.push_back(Record {
            id: self.last_id,
            seq,
            data,
        });
        while h.events.len() > 1
            && (h.events.len() > self.limit_events || h.bytes > self.limit_bytes)
        {
            if let Some(old) = h.events.pop_front() {
                h.bytes -= old.data.len();
                h.forgotten_through = old.id;
            }
        }
        self.wake.send_replace(self.last_id);
    }

    /// [`SseHub::push_json`] of a JSON value.
    pub(crate) fn push_value(&mut self, lane: Lane, from: Option<SessionId>, value: &Value) {
        let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        self.push_json(lane, from, &text);
    }

    /// Ends every open stream (they reconnect and resume with `Last-Event-ID`).
    pub(crate) fn close_streams(&mut self) -> usize {
        self.generation += 1;
        self.wake.send_replace(self.last_id);
        self.streams
    }

    /// Up to `max` items for a stream of `lanes` whose cursor is `after`: first a
    /// discontinuity for each lane that forgot messages after the cursor (once per loss:
    /// `reported` keeps, per lane, the forgotten id last reported), then the retained messages
    /// after the cursor, in id order.
    fn poll(&self, lanes: &[Lane], after: u64, reported: &mut [u64; 8], max: usize) -> Vec<Item> {
        let mut out = Vec::new();
        for &lane in lanes {
            let h = &self.lanes[lane as usize - 1];
            let i = lane as usize - 1;
            if h.forgotten_through > after && h.forgotten_through > reported[i] {
                reported[i] = h.forgotten_through;
                out.push(Item::Discontinuity(SseDiscontinuity {
                    lane: lane.id(),
                    last_event_id: after,
                    seq: h.events.front().map_or(h.next_seq.max(1), |r| r.seq),
                    reason: REASON_HISTORY_LOST.into(),
                }));
            }
        }
        let mut msgs: Vec<(u64, Lane, &Arc<str>)> = Vec::new();
        for &lane in lanes {
            let h = &self.lanes[lane as usize - 1];
            let start = h.events.partition_point(|r| r.id <= after);
            msgs.extend(
                h.events
                    .range(start..)
                    .take(max)
                    .map(|r| (r.id, lane, &r.data)),
            );
        }
        msgs.sort_unstable_by_key(|m| m.0);
        msgs.truncate(max);
        out.extend(msgs.into_iter().map(|(id, lane, data)| Item::Message {
            lane,
            id,
            data: data.clone(),
        }));
        out
    }
}

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
    _guard: StreamGuard,
}

/// Counts an open stream in its hub; its drop touches the session (the TTL restarts).
struct StreamGuard {
    state: Arc<AppState>,
    sid: SessionId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state
            .registry()
            .sse_stream_closed(self.sid, Instant::now());
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
        if let Some(ev) = c.pending.pop_front() {
            return Some((Ok(ev), c));
        }
        c.wake.borrow_and_update();
        let items = {
            let mut reg = c.state.registry();
            let hub = reg.sse_hub(c.sid, Instant::now())?;
            if hub.generation != c.generation {
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

/// Opens a stream of `lanes` (`None`: every granted lane) for `sid`.
fn open(
    state: Arc<AppState>,
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
    let hub = reg
        .sse_hub_or_create(sid, now)
        .ok_or(AppError::session_not_found(sid))?;
    hub.streams += 1;
    let guard = StreamGuard {
        state: state.clone(),
        sid,
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
    if after > hub.last_id {
        // Not an id of this session: say so per lane and continue with new events only.
        for &lane in &lanes {
            let h = &hub.lanes[lane as usize - 1];
            pending.push_back(to_event(Item::Discontinuity(SseDiscontinuity {
                lane: lane.id(),
                last_event_id: after,
                seq: h.next_seq.max(1),
                reason: REASON_UNKNOWN_EVENT_ID.into(),
            })));
        }
        after = hub.last_id;
    }
    let cursor = Cursor {
        state: state.clone(),
        sid,
        lanes,
        after,
        reported: [0; 8],
        generation: hub.generation,
        wake: hub.wake.subscribe(),
        pending,
        _guard: guard,
    };
    drop(reg);
    tracing::info!(session = %sid, lanes = ?cursor.lanes, after, "SSE stream open");
    let stream = futures::stream::unfold(cursor, next_event);
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response();
    sse_headers(&mut resp, version);
    Ok(resp)
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

/// `GET /api/protocol/v2/session/{sid}/lane/{id}/stream`: the lane's `text/event-stream`.
///
/// Errors: 404 `session_not_found`; 400 `lane_not_negotiated`, `unknown_lane`, `bad_request`
/// (malformed id or `Last-Event-ID`).
pub async fn lane_stream(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    version: Version,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (sid, lane) = sid_and_lane(path)?;
    let after = last_event_id(&headers, &query_map(query)?)?;
    open(state, sid, Some(vec![lane]), after, version)
}

/// `GET /api/protocol/v2/session/{sid}/stream?lanes=1,2,5`: one stream for several lanes
/// (default: every granted lane), events tagged `lane-<id>`.
///
/// Errors: as [`lane_stream`].
pub async fn stream(
    State(state): State<Arc<AppState>>,
    SessionPath(sid): SessionPath,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    version: Version,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let query = query_map(query)?;
    let after = last_event_id(&headers, &query)?;
    let lanes = match query.get("lanes") {
        None => None,
        Some(text) => Some(
            parse_lane_list(text)
                .map_err(|(code, why)| AppError::from(WireError::new(code, why)))?,
        ),
    };
    open(state, sid, lanes, after, version)
}

/// What the session's ledger remembers of a numbered `POST` (PROTOCOL.md §14.6), to answer a
/// retry of it without delivering again.
#[derive(Debug, Clone)]
pub(crate) enum PostOutcome {
    /// 202: delivered.
    Accepted,
    /// Refused with this error (a retry gets the same answer).
    Refused(AppError),
    /// 503 `backpressure`: these receivers did not get it; a retry delivers to them only.
    Backpressure(Vec<SessionId>),
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
/// Errors (JSON `{error, code}`): 404 `session_not_found`; 400 `lane_not_negotiated`,
/// `unknown_lane`, `bad_payload`, `unknown_dictionary`, `bad_control`, `invalid_argument`,
/// `not_in_room`, `unknown_target`, `bad_request` (also a malformed `P3-Seq`); 409 `seq_gap`
/// (with `P3-Seq-Expected`), `seq_in_progress`; 422 `seq_reused`; 413 `frame_too_large`; 415
/// `bad_request` (other content types); 503 `backpressure` (with `Retry-After: 1`) when a
/// receiver's queue is full: the message reached the others, not the sessions named in the
/// error.
pub async fn post(
    State(state): State<Arc<AppState>>,
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
            reg.join(sid, room);
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
        } => reg.answer_ping(sid, HTTP_SENDER, client_time, rtt_ms),
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

/// Relays a posted Data message like `ws::relay` relays a frame, with errors as the answer.
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
    let value = payload::decode(h, body, Some(state.dict()))
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
        state.registry().music_message(sid, HTTP_SENDER, 0, value);
        return Ok(());
    }
    let mut targets = targets?;
    if let Some(only) = only {
        targets.retain(|t| only.contains(&t.id()));
    }
    if targets.is_empty() {
        return Ok(());
    }
    let mut variants = vec![Variant {
        encoding: h.encoding,
        bytes: Cow::Borrowed(body),
        dict_version: h.dict_version,
    }];
    for t in &targets {
        if variants.iter().any(|v| v.encoding == t.encoding) {
            continue;
        }
        if let Ok((bytes, dict_version)) = payload::encode(&value, t.encoding, Some(state.dict())) {
            variants.push(Variant {
                encoding: t.encoding,
                bytes: Cow::Owned(bytes),
                dict_version,
            });
        }
    }
    // A retry goes to the sockets that refused it only: their SSE history already has it.
    let refused = state
        .registry()
        .deliver_with(sid, h.lane, &targets, &variants, only.is_none());
    if refused.is_empty() {
        return Ok(());
    }
    Err(Failed::Backpressure(refused))
}

/// `POST /api/admin/sse/close` answer.
#[derive(Debug, Serialize)]
pub struct StreamsClosed {
    /// Streams asked to end.
    pub closed: usize,
}

/// `POST /api/admin/sse/close[?session=<sid>]`: ends the SSE streams of one session or of
/// all; EventSource clients reconnect after the `retry` delay and resume with
/// `Last-Event-ID`. Loopback only (same rules as `POST /api/admin/version`).
///
/// Errors: 403 `forbidden`; 400 `bad_request` for a malformed session id.
pub async fn admin_close(
    State(state): State<Arc<AppState>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<StreamsClosed>, AppError> {
    let peer = peer.ok().map(|ConnectInfo(addr)| addr);
    admin_allowed(peer, &headers)
        .map_err(|why| AppError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, why))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Message { id, .. } => Some(*id),
                Item::Discontinuity(_) => None,
            })
            .collect()
    }

    #[test]
    fn history_is_bounded_and_reports_what_it_forgot_once() {
        let mut hub = SseHub::new(3, usize::MAX);
        for i in 0..5 {
            hub.push_value(Lane::Messaging, None, &Value::from(i));
        }
        hub.push_value(Lane::Data, None, &Value::from(9));
        let mut reported = [0; 8];
        let items = hub.poll(&[Lane::Messaging, Lane::Data], 1, &mut reported, 64);
        match &items[0] {
            Item::Discontinuity(d) => {
                assert_eq!((d.lane, d.last_event_id, d.seq), (2, 1, 3));
                assert_eq!(d.reason, REASON_HISTORY_LOST);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ids(&items), vec![3, 4, 5, 6]);
        // Polling again from the same cursor does not repeat the report.
        let again = hub.poll(&[Lane::Messaging], 1, &mut reported, 64);
        assert_eq!(ids(&again), vec![3, 4, 5]);
        assert_eq!(again.len(), 3);
        // A cursor within the history gets no report.
        let mut fresh = [0; 8];
        let tail = hub.poll(&[Lane::Messaging], 4, &mut fresh, 64);
        assert_eq!(ids(&tail), vec![5]);
        assert_eq!(tail.len(), 1);
    }

    #[test]
    fn byte_budget_keeps_the_newest() {
        let mut hub = SseHub::new(100, 10);
        hub.push_json(Lane::Data, None, "\"a long payload\"");
        hub.push_json(Lane::Data, None, "\"another long one\"");
        assert_eq!(hub.lanes[4].events.len(), 1);
        assert_eq!(hub.lanes[4].forgotten_through, 1);
    }

    #[test]
    fn message_data_is_the_sse_message_shape() {
        let mut hub = SseHub::new(10, usize::MAX);
        let from = SessionId::from_random_bytes([1; 16]);
        hub.push_json(Lane::Messaging, Some(from), r#"{"text":"hi"}"#);
        let items = hub.poll(&[Lane::Messaging], 0, &mut [0; 8], 64);
        let Item::Message { data, .. } = &items[0] else {
            panic!()
        };
        let msg = p3_lanes::core::sse::parse_message(data).unwrap();
        assert_eq!((msg.lane, msg.seq, msg.from), (2, 1, Some(from)));
        assert_eq!(msg.payload, serde_json::json!({"text": "hi"}));
    }
}
