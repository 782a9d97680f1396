//! WebRTC signaling over the Messaging lane (seed 000 "Nexus as P2P signaling"; issue #5;
//! PROTOCOL.md §13.5): a Messaging-lane Data frame whose payload is a signaling message
//! ([`SignalMessage`]: `{type: offer|answer|ice|end, from, to, ...}`) is routed to the one
//! session it names, never to the whole room.
//!
//! Rules, checked in this order (a refusal is a Control `error` to the sender with lane 2 and
//! the frame's seq; nothing is relayed):
//! - the sender must be in a room: `not_in_room` (unless the target is the other party of an
//!   accepted call, [`crate::calls`]);
//! - the target is the payload's `to` and/or the frame's `to`; none: `invalid_argument`; both
//!   but different: `invalid_argument`; not a session id: `unknown_target`;
//! - `from` must be absent or the sender's own session id (a session cannot speak for
//!   another): `forbidden`; the relayed payload always carries `from` = the sender and `to`;
//! - the payload must have the core's shape (e.g. `sdp` for an offer): `bad_payload`;
//! - the target must be a member of the **same room** (`forbidden` otherwise, whether it
//!   names a session elsewhere or none, issue 12), connected (or detached multiplexed) and
//!   granted the Messaging lane: `unknown_target`, `lane_not_negotiated`; the other party of
//!   an accepted call counts as such a member whatever the rooms (PROTOCOL.md §13.16);
//! - a full receiver queue: `backpressure`, as for any relay.
//!
//! Several nodes (`--redis-url`, PROTOCOL.md §17): a target that is a member of the sender's
//! room held by another node passes the room check (the node's view of the room's remote
//! members, [`crate::registry`]); the checked message (`from` and `to` set) is written to the
//! room's stream like any relay `to` one member, and the target's node delivers it. A target
//! there that has not negotiated the Messaging lane drops it (no refusal can reach the sender
//! from there). Like every relay of a room member, it is written to the stream also when the
//! target is held here (a target moving to another node right now still gets it); the
//! publisher's queue full: `backpressure`.

use crate::registry::error_msg;
use crate::state::{AppState, RelayNote};
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::{FrameHeader, SessionId};
use p3_lanes::core::lane::Lane;
use p3_lanes::core::p2p::signal::SignalMessage;
use serde_json::Value;
use std::time::Instant;

/// The signaling `type`s (PROTOCOL.md §13.5).
pub(crate) const SIGNAL_TYPES: [&str; 4] = ["offer", "answer", "ice", "end"];

/// Whether a Messaging-lane payload is a signaling message (an object whose `type` is one of
/// [`SIGNAL_TYPES`]).
pub(crate) fn is_signal(value: &Value) -> bool {
    value
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| SIGNAL_TYPES.contains(&t))
}

/// Routes signaling message `value` (Messaging-lane frame `h`) from `sid`'s socket `conn_id`
/// (see the module docs). The sender's lane grant was checked by the caller.
pub(crate) fn relay_signal(
    state: &AppState,
    sid: SessionId,
    conn_id: u64,
    h: &FrameHeader,
    mut value: Value,
) {
    let (lane, seq) = (Some(h.lane.id()), Some(h.seq));
    let refuse = |e: WireError| {
        tracing::debug!(session = %sid, code = %e.code, error = %e.error, "signaling message refused");
        state
            .registry()
            .reply(sid, conn_id, &error_msg(e.code, e.error, lane, seq));
    };
    let target = match checked_target(sid, h, &mut value) {
        Ok(t) => t,
        Err(e) => return refuse(e),
    };
    if let Err(e) = serde_json::from_value::<SignalMessage>(value.clone()) {
        return refuse(WireError::new(
            ErrorCode::BadPayload,
            format!("not a signaling message: {e}"),
        ));
    }
    let reg = state.registry();
    // The two parties of an accepted call (PROTOCOL.md §13.16) signal to each other whether
    // or not they share a room; anyone else only within its room, on this node or another.
    let refusal = if reg.call_connects(sid, target) {
        None
    } else {
        match reg.room_of(sid) {
            None => Some(WireError::new(
                ErrorCode::NotInRoom,
                "join a room before signaling; the target must be in it",
            )),
            Some(room)
                if reg.room_of(target).as_deref() != Some(room.as_str())
                    && !reg.is_remote_member(&room, target) =>
            {
                Some(WireError::new(
                    ErrorCode::Forbidden,
                    format!("session {target} is not in your room"),
                ))
            }
            Some(_) => None,
        }
    };
    drop(reg);
    if let Some(e) = refusal {
        return refuse(e);
    }
    let mut routed_h = h.clone();
    routed_h.to = Some(target);
    let routed = state
        .registry()
        .route(sid, conn_id, &routed_h, Instant::now());
    let targets = match routed {
        Err(None) => return,
        Err(Some(e)) | Ok(Err(e)) => return refuse(e),
        Ok(Ok(t)) => t,
    };
    // Other nodes: the target may be held by one of them (then `targets` is empty here).
    let Ok(key) = state.cluster_relay(sid, Lane::Messaging, Some(target), &value) else {
        return refuse(WireError::new(
            ErrorCode::Backpressure,
            "the cluster's outbound queue is full; signaling message not delivered, retry later",
        ));
    };
    // The payload changed (`from`, `to`): encoded afresh for each receiver encoding.
    let relayed = state.deliver_relay(
        sid,
        Lane::Messaging,
        &targets,
        &value,
        None,
        RelayNote { history: true, key },
    );
    if !relayed.refused.is_empty() {
        refuse(WireError::new(
            ErrorCode::Backpressure,
            format!(
                "outbound queue full for {target}; signaling message not delivered, retry later"
            ),
        ));
    }
    if let Some(size) = relayed.too_large {
        refuse(WireError::new(
            ErrorCode::FrameTooLarge,
            format!("signaling message would be a {size}-byte frame, over the limit"),
        ));
    }
}

/// The target session of a signaling message, with `from` / `to` of `value` set to the
/// sender and the target (see the module docs for the errors).
fn checked_target(
    sid: SessionId,
    h: &FrameHeader,
    value: &mut Value,
) -> Result<SessionId, WireError> {
    let Some(obj) = value.as_object_mut() else {
        return Err(WireError::new(
            ErrorCode::BadPayload,
            "signaling message must be an object",
        ));
    };
    let payload_to = match obj.get("to") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.parse::<SessionId>().map_err(|_| {
            WireError::new(
                ErrorCode::UnknownTarget,
                format!("`to` {s:?} is not a session id"),
            )
        })?),
        Some(_) => {
            return Err(WireError::new(
                ErrorCode::BadPayload,
                "`to` must be a session id string",
            ))
        }
    };
    let target = match (payload_to, h.to) {
        (None, None) => {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "a signaling message names its target session in `to`",
            ))
        }
        (Some(a), Some(b)) if a != b => {
            return Err(WireError::new(
                ErrorCode::InvalidArgument,
                "the payload's `to` and the frame's `to` differ",
            ))
        }
        (Some(t), _) | (None, Some(t)) => t,
    };
    match obj.get("from") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.parse::<SessionId>().ok() == Some(sid) => {}
        Some(_) => return Err(WireError::new(
            ErrorCode::Forbidden,
            "`from` must be your own session id (or absent): a session cannot signal for another",
        )),
    }
    obj.insert("from".into(), Value::String(sid.to_string()));
    obj.insert("to".into(), Value::String(target.to_string()));
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p3_lanes::core::lane::Encoding;
    use serde_json::json;

    fn sid(n: u8) -> SessionId {
        SessionId::from_random_bytes([n; 16])
    }

    #[test]
    fn from_and_to_are_filled_and_checked() {
        let h = FrameHeader::data(Lane::Messaging, Encoding::Json, 1, 0);
        let (a, b) = (sid(1), sid(2));
        let mut v = json!({"type": "offer", "to": b.to_string(), "sdp": "v=0"});
        assert_eq!(checked_target(a, &h, &mut v), Ok(b));
        assert_eq!(v["from"], json!(a.to_string()));
        let mut spoof =
            json!({"type": "offer", "from": b.to_string(), "to": b.to_string(), "sdp": ""});
        assert_eq!(
            checked_target(a, &h, &mut spoof).unwrap_err().code,
            ErrorCode::Forbidden
        );
        let mut none = json!({"type": "end"});
        assert_eq!(
            checked_target(a, &h, &mut none).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let mut routed = h.clone();
        routed.to = Some(b);
        let mut by_frame = json!({"type": "end", "from": a.to_string()});
        assert_eq!(checked_target(a, &routed, &mut by_frame), Ok(b));
        assert_eq!(by_frame["to"], json!(b.to_string()));
        let mut differ = json!({"type": "end", "to": sid(3).to_string()});
        assert_eq!(
            checked_target(a, &routed, &mut differ).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let mut bad = json!({"type": "end", "to": "nope"});
        assert_eq!(
            checked_target(a, &h, &mut bad).unwrap_err().code,
            ErrorCode::UnknownTarget
        );
        assert!(is_signal(&json!({"type": "ice"})));
        assert!(!is_signal(&json!({"type": "chat"})));
        assert!(!is_signal(&json!("offer")));
    }
}
