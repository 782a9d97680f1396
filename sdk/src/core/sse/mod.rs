//! SSE lanes (seed 001 "Server-Sent Events (SSE)", seed 000 lane `url`s; issue 3, PROTOCOL.md
//! §14): the shared rules and shapes of receiving lanes over `text/event-stream` and sending
//! with `POST`, sans-IO. server-stub builds its URLs and event bodies from here; the SDK turns
//! events into §5 frames (so they reach the application exactly like WebSocket frames) and
//! frames into `POST`s.
//!
//! - **Transport** [`TRANSPORT_SSE`] (`"sse"`): lanes are received as SSE events, messages are
//!   sent with `POST` ([`lane_post_path`]). Every lane of an `sse` session is granted `json`
//!   (the event stream is text), see [`crate::core::handshake::negotiate`].
//! - **Streams**: one per lane ([`lane_stream_path`]) or one multiplexed stream for several
//!   lanes ([`stream_path`]); the handshake picks with [`lane_urls`]: an `sse` session with
//!   [`MULTIPLEX_MIN_LANES`] lanes or more gets the multiplexed stream as every lane's `url`
//!   (browsers allow about 6 HTTP/1.1 connections per origin).
//! - **Events**: `event: lane-<id>` ([`lane_event_name`]) with `id: <n>` (per session,
//!   increasing, shared by all lanes) and `data:` a [`SseMessage`]; `event: discontinuity`
//!   ([`EVENT_DISCONTINUITY`]) with data [`SseDiscontinuity`] when the server's bounded
//!   history no longer holds what a resuming stream missed.
//! - **Exactly-once `POST`s** ([`post`], PROTOCOL.md §14.6): the `P3-Seq` header numbers
//!   messages per (session, lane); the server's [`post::PostLedger`] answers a retried number
//!   without delivering again; the client's [`post::PostQueue`] sends in order and retries
//!   unknown outcomes with the same number, with bounded backoff.

use crate::core::error::ErrorCode;
use crate::core::frame::{FrameError, FrameHeader, FrameKind, SessionId};
use crate::core::lane::{Encoding, Lane};
use crate::core::mux::{Discontinuity, DiscontinuityReason};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod post;

/// Transport name of SSE lanes in `capabilities.transports` and the response's `transport`.
pub const TRANSPORT_SSE: &str = "sse";

/// Seed 000's name for the HTTP/1.1 transport (`transports: ["http1", "http3"]`): the same
/// SSE lanes and `POST`s as [`TRANSPORT_SSE`], granted under the name the client offered,
/// with the seed's one stream per lane as each lane's `url` (PROTOCOL.md §3 "Negotiation").
pub const TRANSPORT_HTTP1: &str = "http1";

/// Whether `transport` (a granted name) carries lanes as Server-Sent Events plus `POST`:
/// [`TRANSPORT_SSE`] or [`TRANSPORT_HTTP1`].
pub fn is_sse_transport(transport: &str) -> bool {
    transport == TRANSPORT_SSE || transport == TRANSPORT_HTTP1
}

/// An `sse` session receiving this many lanes or more gets one multiplexed stream for all of
/// them (every lane's `url` is the same [`stream_path`]); below it, one stream per lane. Since
/// Control (lane 1) is always granted, any `sse` session with a data lane is multiplexed.
pub const MULTIPLEX_MIN_LANES: usize = 2;

/// SSE event name of a discontinuity report.
pub const EVENT_DISCONTINUITY: &str = "discontinuity";

/// The `reason` of a [`SseDiscontinuity`] whose events the bounded history forgot.
pub const REASON_HISTORY_LOST: &str = "history-lost";
/// The `reason` of a [`SseDiscontinuity`] whose `Last-Event-ID` was never sent on this
/// session (e.g. it comes from another session): delivery continues with new events only.
pub const REASON_UNKNOWN_EVENT_ID: &str = "unknown-event-id";

/// Prefix of the API paths of a session.
fn session_prefix(sid: SessionId) -> String {
    format!("/api/protocol/v2/session/{sid}")
}

/// `GET` path of one lane's stream (the seed's per-lane SSE URL).
pub fn lane_stream_path(sid: SessionId, lane: Lane) -> String {
    format!("{}/lane/{}/stream", session_prefix(sid), lane.id())
}

/// `POST` path that sends one message on `lane` (fire-and-forget, 202); `?to=<sid>` addresses
/// one session instead of the room.
pub fn lane_post_path(sid: SessionId, lane: Lane) -> String {
    format!("{}/lane/{}", session_prefix(sid), lane.id())
}

/// `GET` path of the multiplexed stream carrying `lanes` (`?lanes=1,2,5`, ascending).
pub fn stream_path(sid: SessionId, lanes: &[Lane]) -> String {
    let mut ids: Vec<u8> = lanes.iter().map(|l| l.id()).collect();
    ids.sort_unstable();
    ids.dedup();
    let list: Vec<String> = ids.iter().map(u8::to_string).collect();
    format!("{}/stream?lanes={}", session_prefix(sid), list.join(","))
}

/// The `url` of each granted lane, in `lanes` order: the multiplexed [`stream_path`] for an
/// `sse` session with at least [`MULTIPLEX_MIN_LANES`] lanes, else each lane's own
/// [`lane_stream_path`] (WebSocket sessions may open those streams too).
pub fn lane_urls(sid: SessionId, transport: &str, lanes: &[Lane]) -> Vec<String> {
    if transport == TRANSPORT_SSE && lanes.len() >= MULTIPLEX_MIN_LANES {
        let url = stream_path(sid, lanes);
        return lanes.iter().map(|_| url.clone()).collect();
    }
    lanes.iter().map(|&l| lane_stream_path(sid, l)).collect()
}

/// Event name of messages on `lane`: `"lane-<id>"`.
pub fn lane_event_name(lane: Lane) -> String {
    format!("lane-{}", lane.id())
}

/// The lane of an event name made by [`lane_event_name`].
pub fn parse_lane_event_name(name: &str) -> Option<Lane> {
    Lane::from_id(name.strip_prefix("lane-")?.parse().ok()?)
}

/// Parses the `lanes` query of [`stream_path`] (`"1,2,5"`).
///
/// Errors: `unknown_lane` for an id outside 1..=8, `bad_request` for anything else.
pub fn parse_lane_list(text: &str) -> Result<Vec<Lane>, (ErrorCode, String)> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id: u8 = part
            .parse()
            .map_err(|_| (ErrorCode::BadRequest, format!("{part:?} is not a lane id")))?;
        let lane = Lane::from_id(id).ok_or_else(|| {
            (
                ErrorCode::UnknownLane,
                format!("lane id {id} is not in 1..=8"),
            )
        })?;
        if !out.contains(&lane) {
            out.push(lane);
        }
    }
    out.sort();
    Ok(out)
}

/// The `data` of a `lane-<id>` event: one message received by the session, as its WebSocket
/// would get it. `{"lane": 2, "seq": 7, "from": "<sid>", "payload": <JSON value>}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SseMessage {
    /// Lane id, 1..=8.
    pub lane: u8,
    /// The receiver's per-lane sequence number (from 1; 0 for the per-stream `welcome`).
    pub seq: u64,
    /// The sending session of a relayed message; absent for server messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<SessionId>,
    /// The message (on lane 1: a Control message `{type, ...}`).
    pub payload: Value,
}

/// The `data` of a `discontinuity` event: the stream resumed after `lastEventId`, but the
/// server's bounded history of `lane` no longer holds everything after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SseDiscontinuity {
    /// Lane id, 1..=8.
    pub lane: u8,
    /// The `Last-Event-ID` the stream resumed from (0: none).
    pub last_event_id: u64,
    /// Per-lane `seq` delivery continues from (the oldest retained message, or the next one).
    pub seq: u64,
    /// [`REASON_HISTORY_LOST`] or [`REASON_UNKNOWN_EVENT_ID`].
    pub reason: String,
}

/// The `Content-Type` of a `POST` body in `encoding` (`application/json`,
/// `application/msgpack`); `None` for protobuf.
pub fn content_type(encoding: Encoding) -> Option<&'static str> {
    match encoding {
        Encoding::Json => Some("application/json"),
        Encoding::Msgpack => Some("application/msgpack"),
        Encoding::Protobuf => None,
    }
}

/// The encoding of a `POST` body from its `Content-Type` (parameters ignored):
/// `application/json` → json; `application/msgpack`, `application/x-msgpack`,
/// `application/vnd.msgpack` → msgpack (plain, or with dictionary keys).
pub fn encoding_of_content_type(value: &str) -> Option<Encoding> {
    let mime = value.split(';').next()?.trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Some(Encoding::Json),
        "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
            Some(Encoding::Msgpack)
        }
        _ => None,
    }
}

/// Why an SSE event cannot become a frame (bad data from the server).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// `data` is not the JSON shape of [`SseMessage`] / [`SseDiscontinuity`].
    #[error("bad SSE event data: {0}")]
    BadData(String),
    /// The lane id is outside 1..=8.
    #[error("unknown lane id {0}")]
    UnknownLane(u8),
}

impl SseError {
    /// `bad_frame` or `unknown_lane`.
    pub fn code(&self) -> ErrorCode {
        match self {
            SseError::BadData(_) => ErrorCode::BadFrame,
            SseError::UnknownLane(_) => ErrorCode::UnknownLane,
        }
    }
}

/// Parses the `data` of a `lane-<id>` event.
pub fn parse_message(data: &str) -> Result<SseMessage, SseError> {
    let m: SseMessage = serde_json::from_str(data).map_err(|e| SseError::BadData(e.to_string()))?;
    Lane::from_id(m.lane).ok_or(SseError::UnknownLane(m.lane))?;
    Ok(m)
}

/// Parses the `data` of a `discontinuity` event.
pub fn parse_discontinuity(data: &str) -> Result<SseDiscontinuity, SseError> {
    let d: SseDiscontinuity =
        serde_json::from_str(data).map_err(|e| SseError::BadData(e.to_string()))?;
    Lane::from_id(d.lane).ok_or(SseError::UnknownLane(d.lane))?;
    Ok(d)
}

/// The §5 frame a WebSocket would have carried for `msg`: a json Control frame on lane 1, a
/// json Data frame (with `from`) on the others. Feed it to
/// [`crate::core::client::Client::handle_frame`].
///
/// Errors: [`SseError::UnknownLane`].
pub fn message_frame(msg: &SseMessage) -> Result<Vec<u8>, SseError> {
    let lane = Lane::from_id(msg.lane).ok_or(SseError::UnknownLane(msg.lane))?;
    let payload = serde_json::to_vec(&msg.payload).map_err(|e| SseError::BadData(e.to_string()))?;
    let mut h = if lane == Lane::Control {
        FrameHeader::control(Encoding::Json, msg.seq, 0)
    } else {
        FrameHeader::data(lane, Encoding::Json, msg.seq, 0)
    };
    h.from = msg.from;
    Ok(h.encode(&payload))
}

/// One message to `POST`, made from a §5 frame the client core transmitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsePost {
    /// The lane (path of [`lane_post_path`]).
    pub lane: Lane,
    /// `?to=` (send to this session only).
    pub to: Option<SessionId>,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body: the frame's payload as is.
    pub body: Vec<u8>,
}

impl SsePost {
    /// The request path and query, relative to the server origin.
    pub fn path(&self, sid: SessionId) -> String {
        match self.to {
            Some(to) => format!("{}?to={to}", lane_post_path(sid, self.lane)),
            None => lane_post_path(sid, self.lane),
        }
    }
}

/// Turns a §5 frame into the `POST` that sends it. Control frames go to lane 1.
///
/// Errors: any [`FrameError`] of the header; [`FrameError::BadFlags`] for a protobuf payload.
pub fn post_from_frame(frame: &[u8]) -> Result<SsePost, FrameError> {
    let (h, body) = FrameHeader::decode(frame)?;
    let content_type = content_type(h.encoding).ok_or(FrameError::BadFlags(frame[2]))?;
    let lane = match h.kind {
        FrameKind::Control => Lane::Control,
        FrameKind::Data => h.lane,
    };
    Ok(SsePost {
        lane,
        to: h.to,
        content_type,
        body: body.to_vec(),
    })
}

/// What [`SseReceiver::handle_event`] makes of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseInput {
    /// A §5 frame for [`crate::core::client::Client::handle_frame`].
    Frame(Vec<u8>),
    /// A lane skipped messages (report it as
    /// [`crate::core::client::Event::Discontinuity`]).
    Discontinuity(Discontinuity),
}

/// The client's receiving side of SSE lanes, sans-IO: turns events into frames and
/// discontinuities, and keeps delivery exactly once per session (a message whose per-lane
/// `seq` was already delivered is dropped, whatever the stream resumed from).
///
/// Drive: [`SseReceiver::handle_event`] for every event (name, data) of the stream;
/// [`SseReceiver::session_changed`] when the client had to handshake a new session (the old
/// session's history is gone).
#[derive(Clone, Debug, Default)]
pub struct SseReceiver {
    /// Per lane (index `id - 1`): the last `seq` delivered.
    delivered: [u64; 8],
}

impl SseReceiver {
    /// A receiver that has delivered nothing.
    pub fn new() -> SseReceiver {
        SseReceiver::default()
    }

    /// One event: `lane-<id>` → a frame (or `None` for a duplicate), `discontinuity` → a
    /// [`Discontinuity`] (`history-lost`, epochs 0), any other name → `None`.
    ///
    /// Errors: [`SseError`] for data of the wrong shape.
    pub fn handle_event(&mut self, name: &str, data: &str) -> Result<Option<SseInput>, SseError> {
        if name == EVENT_DISCONTINUITY {
            let d = parse_discontinuity(data)?;
            let lane = Lane::from_id(d.lane).ok_or(SseError::UnknownLane(d.lane))?;
            let last = &mut self.delivered[lane as usize - 1];
            let expected_seq = *last + 1;
            *last = (*last).max(d.seq.saturating_sub(1));
            return Ok(Some(SseInput::Discontinuity(Discontinuity {
                lane,
                expected_epoch: 0,
                expected_seq,
                epoch: 0,
                seq: d.seq,
                reason: DiscontinuityReason::HistoryLost,
            })));
        }
        if parse_lane_event_name(name).is_none() {
            return Ok(None);
        }
        let msg = parse_message(data)?;
        let last = &mut self.delivered[usize::from(msg.lane) - 1];
        // seq 0 is the per-stream `welcome`, outside the numbering.
        if msg.seq != 0 {
            if msg.seq <= *last {
                return Ok(None);
            }
            *last = msg.seq;
        }
        message_frame(&msg).map(|f| Some(SseInput::Frame(f)))
    }

    /// The client handshook a new session: its numbering starts again. Returns a
    /// `peer-restarted` [`Discontinuity`] for every lane in `reliable` that had delivered
    /// something (as the multiplexer reports a restarted server, PROTOCOL.md §11.6).
    pub fn session_changed(&mut self, reliable: &[Lane]) -> Vec<Discontinuity> {
        let out = reliable
            .iter()
            .filter(|l| self.delivered[**l as usize - 1] > 0)
            .map(|&lane| Discontinuity {
                lane,
                expected_epoch: 0,
                expected_seq: self.delivered[lane as usize - 1] + 1,
                epoch: 0,
                seq: 1,
                reason: DiscontinuityReason::PeerRestarted,
            })
            .collect();
        self.delivered = [0; 8];
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::FrameKind;

    fn sid() -> SessionId {
        SessionId::from_random_bytes([7; 16])
    }

    #[test]
    fn one_lane_gets_its_own_stream_many_share_one() {
        let s = sid();
        let one = lane_urls(s, TRANSPORT_SSE, &[Lane::Control]);
        assert_eq!(
            one,
            vec![format!("/api/protocol/v2/session/{s}/lane/1/stream")]
        );
        let many = lane_urls(
            s,
            TRANSPORT_SSE,
            &[Lane::Control, Lane::Messaging, Lane::Data],
        );
        let url = format!("/api/protocol/v2/session/{s}/stream?lanes=1,2,5");
        assert_eq!(many, vec![url.clone(), url.clone(), url]);
        let ws = lane_urls(s, "websocket", &[Lane::Control, Lane::Messaging]);
        assert!(ws[1].ends_with("/lane/2/stream"), "{ws:?}");
    }

    #[test]
    fn lane_lists_and_event_names_parse() {
        assert_eq!(
            parse_lane_list("5,1, 2,5").unwrap(),
            vec![Lane::Control, Lane::Messaging, Lane::Data]
        );
        assert_eq!(parse_lane_list("9").unwrap_err().0, ErrorCode::UnknownLane);
        assert_eq!(parse_lane_list("x").unwrap_err().0, ErrorCode::BadRequest);
        assert_eq!(parse_lane_event_name("lane-7"), Some(Lane::Sync));
        assert_eq!(
            parse_lane_event_name(&lane_event_name(Lane::Relay)),
            Some(Lane::Relay)
        );
        assert_eq!(parse_lane_event_name("lane-0"), None);
        assert_eq!(parse_lane_event_name("message"), None);
    }

    #[test]
    fn events_become_the_frames_a_websocket_would_carry() {
        let from = sid();
        let data = format!(r#"{{"lane":2,"seq":4,"from":"{from}","payload":{{"text":"hi"}}}}"#);
        let frame = message_frame(&parse_message(&data).unwrap()).unwrap();
        let (h, body) = FrameHeader::decode(&frame).unwrap();
        assert_eq!(
            (h.kind, h.lane, h.seq, h.from),
            (FrameKind::Data, Lane::Messaging, 4, Some(from))
        );
        assert_eq!(h.encoding, Encoding::Json);
        assert_eq!(body, br#"{"text":"hi"}"#);
        let control = r#"{"lane":1,"seq":0,"payload":{"type":"left","room":"r"}}"#;
        let frame = message_frame(&parse_message(control).unwrap()).unwrap();
        assert_eq!(
            FrameHeader::decode(&frame).unwrap().0.kind,
            FrameKind::Control
        );
        assert_eq!(
            parse_message(r#"{"lane":9,"seq":1,"payload":1}"#)
                .unwrap_err()
                .code(),
            ErrorCode::UnknownLane
        );
        assert_eq!(
            parse_message("not json").unwrap_err().code(),
            ErrorCode::BadFrame
        );
    }

    #[test]
    fn frames_become_posts() {
        let (s, to) = (sid(), SessionId::from_random_bytes([9; 16]));
        let mut h = FrameHeader::data(Lane::Data, Encoding::Json, 3, 0);
        h.to = Some(to);
        let post = post_from_frame(&h.encode(b"[1]")).unwrap();
        assert_eq!(post.lane, Lane::Data);
        assert_eq!(post.content_type, "application/json");
        assert_eq!(post.body, b"[1]");
        assert_eq!(
            post.path(s),
            format!("/api/protocol/v2/session/{s}/lane/5?to={to}")
        );
        let c = FrameHeader::control(Encoding::Msgpack, 1, 1).encode(&[0x80]);
        let post = post_from_frame(&c).unwrap();
        assert_eq!(
            (post.lane, post.content_type),
            (Lane::Control, "application/msgpack")
        );
        assert!(post_from_frame(&[0xff]).is_err());
    }

    #[test]
    fn receiver_delivers_once_and_reports_gaps() {
        let mut r = SseReceiver::new();
        let msg = |seq: u64| format!(r#"{{"lane":2,"seq":{seq},"payload":{seq}}}"#);
        let welcome = r#"{"lane":1,"seq":0,"payload":{"type":"left","room":"x"}}"#;
        assert!(matches!(
            r.handle_event("lane-1", welcome),
            Ok(Some(SseInput::Frame(_)))
        ));
        assert!(matches!(
            r.handle_event("lane-1", welcome),
            Ok(Some(SseInput::Frame(_)))
        ));
        assert!(matches!(
            r.handle_event("lane-2", &msg(1)),
            Ok(Some(SseInput::Frame(_)))
        ));
        assert_eq!(r.handle_event("lane-2", &msg(1)), Ok(None), "duplicate");
        let gap = r#"{"lane":2,"lastEventId":4,"seq":5,"reason":"history-lost"}"#;
        match r.handle_event("discontinuity", gap).unwrap() {
            Some(SseInput::Discontinuity(d)) => {
                assert_eq!((d.lane, d.expected_seq, d.seq), (Lane::Messaging, 2, 5));
                assert_eq!(d.reason, DiscontinuityReason::HistoryLost);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            r.handle_event("lane-2", &msg(5)),
            Ok(Some(SseInput::Frame(_)))
        ));
        assert_eq!(r.handle_event("ping", "x"), Ok(None));
        let lost = r.session_changed(&[Lane::Control, Lane::Messaging, Lane::Data]);
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].lane, lost[0].expected_seq), (Lane::Messaging, 6));
        assert_eq!(lost[0].reason, DiscontinuityReason::PeerRestarted);
        assert!(matches!(
            r.handle_event("lane-2", &msg(1)),
            Ok(Some(SseInput::Frame(_)))
        ));
    }

    #[test]
    fn content_types_map_to_encodings() {
        assert_eq!(
            encoding_of_content_type("application/json; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(
            encoding_of_content_type("Application/MsgPack"),
            Some(Encoding::Msgpack)
        );
        assert_eq!(encoding_of_content_type("text/plain"), None);
    }
}
