//! The messages of the seed 001 signaling server (seed 001 "Signaling Server", "Heartbeat
//! Monitoring"), served by server-stub at `GET /api/signaling` (PROTOCOL.md §13.7): one
//! WebSocket of JSON text messages, rooms, relay of offer / answer / ice / end, heartbeats.
//! The lane protocol carries the same signaling on the Messaging lane ([`super::signal`]);
//! this endpoint is for apps that want the seed's standalone server.
//!
//! Client → server: [`SignalingRequest`], the seed's `{type, roomId?, address?, signature?,
//! data?}` plus our `to`. Server → client: [`SignalingEvent`], tagged by `type` in snake_case
//! as the seed's `auth_ok`.
//!
//! Authentication (decision): the seed verifies a wallet signature; here `address` is the P3
//! session id and `signature` is the session's `signalingToken` from its handshake response
//! (an HMAC the server computed over the session id): the session id is shown to room members,
//! the token only to the session, so a member cannot authenticate as another.

use crate::core::error::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `type` of a client message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestType {
    /// `{address: sessionId, signature: signalingToken}` → `auth_ok`.
    Auth,
    /// `{roomId}` → `joined`; the other members get `peer_joined`.
    Join,
    /// SDP offer for `to` (or `data.to`).
    Offer,
    /// SDP answer.
    Answer,
    /// ICE candidate.
    Ice,
    /// Hang up.
    End,
    /// → `heartbeat_ack`.
    Heartbeat,
    /// The seed's heartbeat code: → `pong`.
    Ping,
}

/// One client message (seed 001 `SignalingMessage` plus `to`). Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalingRequest {
    /// What it is.
    #[serde(rename = "type")]
    pub kind: RequestType,
    /// `join`: the room, 1..=128 bytes, no control characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// `auth`: the session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `auth`: the session's `signalingToken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// offer / answer / ice / end: the payload relayed as is (SDP, candidate, ...); a string
    /// `data.to` names the target when `to` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// offer / answer / ice / end: the target session id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// A relayed offer / answer / ice / end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relayed {
    /// The room both are in.
    pub room_id: String,
    /// The sender's session id (set by the server).
    pub from: String,
    /// The receiver's session id.
    pub to: String,
    /// The sender's `data`, as sent (null if it sent none).
    #[serde(default)]
    pub data: Value,
}

/// One server message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum SignalingEvent {
    /// Authenticated as `sessionId`.
    AuthOk {
        /// The session.
        session_id: String,
    },
    /// Joined `roomId`; `peers` are the other members' session ids, in join order.
    Joined {
        /// Room.
        room_id: String,
        /// The other members.
        peers: Vec<String>,
    },
    /// `from` joined the room.
    PeerJoined {
        /// Room.
        room_id: String,
        /// The new member.
        from: String,
    },
    /// `from` left: `reason` is `left` (joined another room), `closed` (socket closed),
    /// `heartbeat-timeout` (silent for the heartbeat timeout) or `replaced` (its session
    /// authenticated on another socket).
    PeerLeft {
        /// Room.
        room_id: String,
        /// The member that left.
        from: String,
        /// Why.
        reason: String,
    },
    /// A relayed SDP offer.
    Offer(Relayed),
    /// A relayed SDP answer.
    Answer(Relayed),
    /// A relayed ICE candidate.
    Ice(Relayed),
    /// A relayed hang-up.
    End(Relayed),
    /// Answer to `heartbeat`: the server's wall clock, ms since the Unix epoch.
    HeartbeatAck {
        /// ms since the Unix epoch.
        server_time: u64,
    },
    /// Answer to `ping` (the seed's heartbeat code).
    Pong {
        /// ms since the Unix epoch.
        server_time: u64,
    },
    /// A refused message; the socket stays open.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Description.
        error: String,
        /// The `type` of the refused message, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<RequestType>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_shapes() {
        let r: SignalingRequest = serde_json::from_value(
            json!({"type": "auth", "address": "s", "signature": "t", "extra": 1}),
        )
        .unwrap();
        assert_eq!(r.kind, RequestType::Auth);
        assert!(serde_json::from_value::<SignalingRequest>(json!({"type": "nope"})).is_err());
        assert_eq!(
            serde_json::to_value(SignalingEvent::AuthOk {
                session_id: "s".into()
            })
            .unwrap(),
            json!({"type": "auth_ok", "sessionId": "s"})
        );
        assert_eq!(
            serde_json::to_value(SignalingEvent::Ice(Relayed {
                room_id: "r".into(),
                from: "a".into(),
                to: "b".into(),
                data: json!({"candidate": "c"})
            }))
            .unwrap(),
            json!({"type": "ice", "roomId": "r", "from": "a", "to": "b", "data": {"candidate": "c"}})
        );
        assert_eq!(
            serde_json::to_value(SignalingEvent::PeerLeft {
                room_id: "r".into(),
                from: "a".into(),
                reason: "heartbeat-timeout".into()
            })
            .unwrap()["type"],
            "peer_left"
        );
        let e = SignalingEvent::Error {
            code: ErrorCode::Unauthorized,
            error: "x".into(),
            request: Some(RequestType::Join),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"type": "error", "code": "unauthorized", "error": "x", "request": "join"})
        );
        assert_eq!(serde_json::from_value::<SignalingEvent>(v).unwrap(), e);
    }
}
