//! The JS shapes of what the driver hands to the application (TypeScript: `P3Message`,
//! `P3Event`, `JoinResult` in [`crate::wasm::types`]). Built with `serde_wasm_bindgen`'s
//! JSON-compatible serializer; app values are attached by [`convert::value_to_js`].

use crate::core::client::{Event, Inbound};
use crate::core::frame::SessionId;
use crate::core::mux::DiscontinuityReason;
use crate::wasm::convert;
use serde::Serialize;
use wasm_bindgen::JsValue;

/// `P3Event`: `{type: 'peer-joined' | ..., ...}` with camelCase fields.
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
enum JsEvent<'a> {
    PeerJoined {
        room: &'a str,
        session_id: &'a SessionId,
    },
    PeerLeft {
        room: &'a str,
        session_id: &'a SessionId,
    },
    Presence {
        room: &'a str,
        session_id: &'a SessionId,
        status: &'static str,
        since: u64,
        last_seen: u64,
    },
    Pong {
        rtt_ms: f64,
        client_time: f64,
        server_time: u64,
    },
    Error {
        code: &'static str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        lane: Option<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dropped: Option<bool>,
    },
    SessionChanged {
        old: &'a SessionId,
        new: &'a SessionId,
    },
    RoomJoined {
        room: &'a str,
        members: &'a [SessionId],
    },
    RoomLeft {
        room: &'a str,
    },
    Version {
        version: &'a str,
    },
    RoomKey {
        room: &'a str,
        key_id: u32,
        key: &'a str,
    },
    Discontinuity {
        lane: u8,
        expected_epoch: u32,
        expected_seq: u64,
        epoch: u32,
        seq: u64,
        reason: &'static str,
    },
    Drain {
        lane: u8,
    },
    Dropped {
        lane: u8,
        count: u64,
    },
}

/// The `P3Event` object for a core event, or `None` for events that are not `P3Event`s
/// (state changes and messages have their own callbacks).
pub(crate) fn event_to_js(ev: &Event) -> Option<JsValue> {
    let js = match ev {
        Event::PeerJoined { room, session_id } => JsEvent::PeerJoined { room, session_id },
        Event::PeerLeft { room, session_id } => JsEvent::PeerLeft { room, session_id },
        Event::Presence {
            room,
            session_id,
            status,
            since_ms,
            last_seen_ms,
        } => JsEvent::Presence {
            room,
            session_id,
            status: status.as_str(),
            since: *since_ms,
            last_seen: *last_seen_ms,
        },
        Event::Pong {
            rtt_ms,
            client_time,
            server_time,
        } => JsEvent::Pong {
            rtt_ms: *rtt_ms,
            client_time: *client_time,
            server_time: *server_time,
        },
        Event::Error {
            code,
            message,
            lane,
            seq,
            retry_after_ms,
            dropped,
        } => JsEvent::Error {
            code: code.as_str(),
            message,
            lane: lane.map(|l| l.id()),
            seq: *seq,
            retry_after_ms: *retry_after_ms,
            dropped: *dropped,
        },
        Event::SessionChanged { old, new } => JsEvent::SessionChanged { old, new },
        Event::RoomJoined { room, members } => JsEvent::RoomJoined { room, members },
        Event::RoomLeft { room } => JsEvent::RoomLeft { room },
        Event::Version { version } => JsEvent::Version { version },
        Event::RoomKey { room, key_id, key } => JsEvent::RoomKey {
            room,
            key_id: *key_id,
            key,
        },
        Event::Discontinuity(d) => JsEvent::Discontinuity {
            lane: d.lane.id(),
            expected_epoch: d.expected_epoch,
            expected_seq: d.expected_seq,
            epoch: d.epoch,
            seq: d.seq,
            reason: match d.reason {
                DiscontinuityReason::HistoryLost => "history-lost",
                DiscontinuityReason::PeerRestarted => "peer-restarted",
                DiscontinuityReason::JoinedMidStream => "joined-mid-stream",
            },
        },
        Event::Drain { lane } => JsEvent::Drain { lane: lane.id() },
        Event::Dropped { lane, count } => JsEvent::Dropped {
            lane: lane.id(),
            count: *count,
        },
        _ => return None,
    };
    Some(convert::to_js(&js))
}

/// `P3Message` without its value.
#[derive(Serialize)]
struct Envelope<'a> {
    lane: u8,
    from: Option<&'a SessionId>,
    seq: u64,
}

/// The `P3Message` object: `{lane, from, seq, value}`.
pub(crate) fn message_to_js(m: &Inbound) -> JsValue {
    let obj = convert::to_js(&Envelope {
        lane: m.lane.id(),
        from: m.from.as_ref(),
        seq: m.seq,
    });
    let _ = js_sys::Reflect::set(
        &obj,
        &JsValue::from_str("value"),
        &convert::value_to_js(&m.value),
    );
    obj
}

/// `JoinResult`: `{room, members}`.
#[derive(Serialize)]
pub(crate) struct JoinResult<'a> {
    /// Room name.
    pub(crate) room: &'a str,
    /// Member session ids, this client's included.
    pub(crate) members: &'a [SessionId],
}
