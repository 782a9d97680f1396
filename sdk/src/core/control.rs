//! Control messages: the session's protocol, carried in Control frames (kind 0x02, lane 1),
//! encoded like any payload of the Control lane. JSON shape `{"type": "<kebab-case>", ...}`
//! with camelCase fields (seed 001 heartbeat `{type: 'ping'}` / `{type: 'pong', serverTime}`).

use crate::core::error::ErrorCode;
use crate::core::frame::SessionId;
use serde::{Deserialize, Serialize};

/// Longest room name accepted, in bytes.
pub const MAX_ROOM_NAME_BYTES: usize = 128;

/// A room member's presence in a [`Control::Presence`] (seed 001 `presence:update`'s
/// `status`; PROTOCOL.md §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PresenceStatus {
    /// A member of the room.
    Online,
    /// No longer a member: it left, or its session ended.
    Offline,
    /// A status a newer server sends that this version does not know (kept, not refused).
    #[serde(other)]
    Unknown,
}

impl PresenceStatus {
    /// The wire name: `online`, `offline`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceStatus::Online => "online",
            PresenceStatus::Offline => "offline",
            PresenceStatus::Unknown => "unknown",
        }
    }
}

/// One Control message. Client → server: `join`, `leave`, `ping`. Server → client: the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
#[non_exhaustive]
pub enum Control {
    /// Join `room` (leaving the current one, if any). Answered by `joined`.
    Join {
        /// Room name, 1..=128 bytes.
        room: String,
    },
    /// Leave `room`. Answered by `left`.
    Leave {
        /// Room name.
        room: String,
    },
    /// Heartbeat and clock probe (seed 001): `clientTime` is the client's monotonic clock in
    /// ms, echoed back in `pong`.
    Ping {
        /// Client clock, ms.
        client_time: f64,
        /// The client's smoothed RTT to the server, ms, if it measures one (music rooms: the
        /// server schedules changes far enough ahead for its slowest member,
        /// [`crate::core::sync::state::RoomAuthority::update_member_rtt`]). Absent: no report.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtt_ms: Option<f64>,
    },
    /// Heartbeat answer with the server's wall clock (ms since the Unix epoch).
    Pong {
        /// The `clientTime` of the ping answered, ms.
        client_time: f64,
        /// Server wall clock, ms since the Unix epoch.
        server_time: u64,
    },
    /// First message on every WebSocket: who you are and the heartbeat contract.
    Welcome {
        /// This connection's session.
        session_id: SessionId,
        /// Server wall clock, ms since the Unix epoch.
        server_time: u64,
        /// How often the client should ping, ms.
        heartbeat_interval_ms: u64,
        /// Silence after which the server drops the connection, ms.
        heartbeat_timeout_ms: u64,
        /// The app version the server answers on `GET /api/version` (PWA cache protection);
        /// absent from servers that do not say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app_version: Option<String>,
    },
    /// The server's app version changed while this socket was open (a deploy): pages should
    /// check whether they are stale (PWA cache protection, seed 000).
    Version {
        /// The new version, as `GET /api/version` now answers.
        version: String,
    },
    /// The session is now in `room`; `members` are all sessions in it, including this one.
    Joined {
        /// Room name.
        room: String,
        /// Member session ids.
        members: Vec<SessionId>,
    },
    /// The session left `room`.
    Left {
        /// Room name.
        room: String,
    },
    /// Another session joined this session's room.
    PeerJoined {
        /// Room name.
        room: String,
        /// The session that joined.
        session_id: SessionId,
    },
    /// Another session left this session's room (or its connection was lost).
    PeerLeft {
        /// Room name.
        room: String,
        /// The session that left.
        session_id: SessionId,
    },
    /// The room's key for sealing music control between peers (PROTOCOL.md §13.4; issue #5
    /// "Security"), sent to a session right after `joined` (and again on every join). The
    /// server generates it from the OS CSPRNG on a room's first join and keeps it while the
    /// room lives (never rotated while it lives; forgotten a session TTL after the room
    /// empties). Open with [`crate::core::p2p::seal::RoomKey::from_base64url`].
    RoomKey {
        /// Room name (also part of the seal's associated data).
        room: String,
        /// Key id (u32), the envelope's key id.
        key_id: u32,
        /// The 32 key bytes, base64url without padding (43 characters).
        key: String,
    },
    /// A member's presence in this session's room (seed 001 `presence:update {status,
    /// lastSeen}`; PROTOCOL.md §6.2), only to sessions granted the `presence` feature
    /// ([`crate::core::handshake::FEATURE_PRESENCE`]): after `joined` and `room-key`, one per
    /// member (the joiner included) `online`; then one `online` per member that joins and one
    /// `offline` per member that leaves.
    Presence {
        /// Room name.
        room: String,
        /// The member.
        session_id: SessionId,
        /// `online` (a member) or `offline` (it left).
        status: PresenceStatus,
        /// When it joined the room, server wall clock, ms since the Unix epoch.
        since: u64,
        /// When the server last heard from it (a frame, a `POST`, a stream opened or closed;
        /// for `offline`: when it left), server wall clock, ms since the Unix epoch.
        last_seen: u64,
    },
    /// Something the peer sent was refused; `lane`/`seq` name the frame when there is one.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable description.
        error: String,
        /// Lane of the refused frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lane: Option<u8>,
        /// Sequence number of the refused frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// With `rate_limited`: how long to wait before the refused frame's lane can take a
        /// message again, ms (issue 11, PROTOCOL.md §15). Absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

impl Control {
    /// Every `type` this version knows, in kebab-case as on the wire.
    pub const TYPES: &'static [&'static str] = &[
        "join",
        "leave",
        "ping",
        "pong",
        "welcome",
        "version",
        "joined",
        "left",
        "peer-joined",
        "peer-left",
        "room-key",
        "presence",
        "error",
    ];
}

/// Checks a room name: 1..=[`MAX_ROOM_NAME_BYTES`] bytes, no control characters.
pub fn validate_room_name(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > MAX_ROOM_NAME_BYTES {
        return Err(format!(
            "room name must be 1..={MAX_ROOM_NAME_BYTES} bytes, got {}",
            room.len()
        ));
    }
    if room.chars().any(char::is_control) {
        return Err("room name must not contain control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_shapes() {
        let pong = Control::Pong {
            client_time: 1.5,
            server_time: 1735689600000,
        };
        assert_eq!(
            serde_json::to_value(&pong).unwrap(),
            json!({"type": "pong", "clientTime": 1.5, "serverTime": 1735689600000u64})
        );
        let e: Control = serde_json::from_value(
            json!({"type": "error", "code": "backpressure", "error": "full", "lane": 2}),
        )
        .unwrap();
        assert!(matches!(
            e,
            Control::Error {
                code: ErrorCode::Backpressure,
                lane: Some(2),
                ..
            }
        ));
        // `retryAfterMs` (rate_limited, issue 11) only when set, camelCase on the wire.
        let limited = json!({"type": "error", "code": "rate_limited", "error": "slow down",
                             "lane": 5, "seq": 9, "retryAfterMs": 20});
        let e: Control = serde_json::from_value(limited.clone()).unwrap();
        assert!(matches!(
            e,
            Control::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(20),
                ..
            }
        ));
        assert_eq!(serde_json::to_value(&e).unwrap(), limited);
        assert!(serde_json::from_value::<Control>(json!({"type": "nope"})).is_err());
        // `rttMs` is optional in `ping`, both ways.
        let ping: Control =
            serde_json::from_value(json!({"type": "ping", "clientTime": 3.5})).unwrap();
        assert_eq!(
            ping,
            Control::Ping {
                client_time: 3.5,
                rtt_ms: None
            }
        );
        assert_eq!(
            serde_json::to_value(Control::Ping {
                client_time: 3.5,
                rtt_ms: Some(61.25)
            })
            .unwrap(),
            json!({"type": "ping", "clientTime": 3.5, "rttMs": 61.25})
        );
        assert_eq!(
            serde_json::to_value(Control::Version {
                version: "2.1.0".into()
            })
            .unwrap(),
            json!({"type": "version", "version": "2.1.0"})
        );
        // `appVersion` is optional in `welcome`, both ways.
        let w: Control = serde_json::from_value(json!({"type": "welcome",
            "sessionId": "00000000-0000-4000-8000-000000000000", "serverTime": 1,
            "heartbeatIntervalMs": 2, "heartbeatTimeoutMs": 3}))
        .unwrap();
        assert!(matches!(
            w,
            Control::Welcome {
                app_version: None,
                ..
            }
        ));
        let text = serde_json::to_string(&w).unwrap();
        assert!(!text.contains("appVersion"), "{text}");
        assert_eq!(
            serde_json::to_value(Control::RoomKey {
                room: "r".into(),
                key_id: 3,
                key: "AAAA".into()
            })
            .unwrap(),
            json!({"type": "room-key", "room": "r", "keyId": 3, "key": "AAAA"})
        );
    }

    #[test]
    fn types_lists_every_variant() {
        let samples = [
            Control::Join { room: "r".into() },
            Control::Leave { room: "r".into() },
            Control::Ping {
                client_time: 0.0,
                rtt_ms: None,
            },
            Control::Pong {
                client_time: 0.0,
                server_time: 0,
            },
            Control::Version {
                version: "1".into(),
            },
            Control::Joined {
                room: "r".into(),
                members: vec![],
            },
            Control::Left { room: "r".into() },
            Control::RoomKey {
                room: "r".into(),
                key_id: 7,
                key: "k".into(),
            },
            Control::Presence {
                room: "r".into(),
                session_id: SessionId::from_random_bytes([1; 16]),
                status: PresenceStatus::Online,
                since: 1,
                last_seen: 2,
            },
            Control::Error {
                code: ErrorCode::Internal,
                error: String::new(),
                lane: None,
                seq: None,
                retry_after_ms: None,
            },
            Control::Error {
                code: ErrorCode::RateLimited,
                error: "slow down".into(),
                lane: Some(5),
                seq: Some(9),
                retry_after_ms: Some(20),
            },
        ];
        for c in samples {
            let v = serde_json::to_value(&c).unwrap();
            assert!(Control::TYPES.contains(&v["type"].as_str().unwrap()), "{v}");
        }
        let n = Control::TYPES.len();
        assert_eq!(n, 13, "update TYPES when adding a Control variant");
    }

    #[test]
    fn presence_shape() {
        let sid = "00000000-0000-4000-8000-000000000001";
        let v = json!({"type": "presence", "room": "r", "sessionId": sid,
                       "status": "offline", "since": 1000, "lastSeen": 2500});
        let c: Control = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(
            c,
            Control::Presence {
                room: "r".into(),
                session_id: sid.parse().unwrap(),
                status: PresenceStatus::Offline,
                since: 1000,
                last_seen: 2500,
            }
        );
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
        // A status this version does not know is kept, not refused.
        let later = json!({"type": "presence", "room": "r", "sessionId": sid,
                           "status": "away", "since": 1, "lastSeen": 2});
        assert!(matches!(
            serde_json::from_value::<Control>(later).unwrap(),
            Control::Presence {
                status: PresenceStatus::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn room_names() {
        assert!(validate_room_name("room-a").is_ok());
        assert!(validate_room_name("").is_err());
        assert!(validate_room_name(&"x".repeat(129)).is_err());
        assert!(validate_room_name("a\nb").is_err());
    }
}
