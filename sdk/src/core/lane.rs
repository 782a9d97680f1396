//! The lane registry: the 8 lanes of P3 Protocol and their delivery characteristics.
//!
//! Source: seed 000, "8-Lane Protocol" (`ALL_LANE_IDS`, `LANE_NAMES`, `LaneRegistry`). Lanes 1–3
//! carry the seed's values; lanes 4–8 are our documented choices (PROTOCOL.md, "Lane registry").

use serde::{Deserialize, Serialize};
use std::fmt;

/// One of the 8 lanes, identified on the wire by its id `1..=8` (seed 000 `ALL_LANE_IDS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
#[repr(u8)]
pub enum Lane {
    /// 1 — session management, heartbeats, room membership.
    Control = 1,
    /// 2 — chat, notifications, WebRTC signaling (seed 000 "Nexus as P2P signaling").
    Messaging = 2,
    /// 3 — audio streams (unreliable).
    Voice = 3,
    /// 4 — video streams (unreliable).
    Video = 4,
    /// 5 — file transfers, bulk data.
    Data = 5,
    /// 6 — metrics, diagnostics (unreliable).
    Telemetry = 6,
    /// 7 — state synchronization (music sync).
    Sync = 7,
    /// 8 — fallback, overflow.
    Relay = 8,
}

impl Lane {
    /// All lanes in id order.
    pub const ALL: [Lane; 8] = [
        Lane::Control,
        Lane::Messaging,
        Lane::Voice,
        Lane::Video,
        Lane::Data,
        Lane::Telemetry,
        Lane::Sync,
        Lane::Relay,
    ];

    /// The wire id, `1..=8`.
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The lane for a wire id; `None` outside `1..=8`.
    pub fn from_id(id: u8) -> Option<Lane> {
        Lane::ALL.get((id as usize).wrapping_sub(1)).copied()
    }

    /// The seed's name (`LANE_NAMES`), e.g. `"Messaging"`.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Control => "Control",
            Lane::Messaging => "Messaging",
            Lane::Voice => "Voice",
            Lane::Video => "Video",
            Lane::Data => "Data",
            Lane::Telemetry => "Telemetry",
            Lane::Sync => "Sync",
            Lane::Relay => "Relay",
        }
    }

    /// The lane for a name, case-insensitive (`"sync"` → [`Lane::Sync`]).
    pub fn from_name(name: &str) -> Option<Lane> {
        Lane::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }

    /// This lane's registry entry.
    pub fn spec(self) -> &'static LaneSpec {
        &LANE_REGISTRY[self as usize - 1]
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.id())
    }
}

impl From<Lane> for u8 {
    fn from(l: Lane) -> u8 {
        l.id()
    }
}

impl TryFrom<u8> for Lane {
    type Error = String;
    fn try_from(id: u8) -> Result<Lane, String> {
        Lane::from_id(id).ok_or_else(|| format!("lane id {id} is not in 1..=8"))
    }
}

/// A payload encoding a lane can be negotiated with (seed 000 `capabilities.encodings`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// MessagePack with dictionary-indexed map keys (see [`crate::core::codec`]).
    Msgpack,
    /// UTF-8 JSON text.
    Json,
    /// Protocol Buffers: listed by the seed for the Voice lane; this implementation has no
    /// schema for it, so the server never grants it (negotiation falls back, PROTOCOL.md).
    Protobuf,
}

impl Encoding {
    /// The wire name, e.g. `"msgpack"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Msgpack => "msgpack",
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
        }
    }

    /// Parses a wire name; unknown names give `None` (they are ignored in negotiation).
    pub fn parse(s: &str) -> Option<Encoding> {
        match s {
            "msgpack" => Some(Encoding::Msgpack),
            "json" => Some(Encoding::Json),
            "protobuf" => Some(Encoding::Protobuf),
            _ => None,
        }
    }
}

/// A lane's delivery characteristics (seed 000 `interface LaneSpec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneSpec {
    /// The lane this entry describes.
    pub lane: Lane,
    /// Preferred payload encoding.
    pub default_encoding: Encoding,
    /// Scheduling priority; higher is more important.
    pub priority: u8,
    /// Maximum messages queued per direction before backpressure (reliable) or dropping the
    /// oldest (unreliable).
    pub queue_depth: u16,
    /// `true`: guaranteed, ordered delivery; `false`: latest-wins, may drop.
    pub reliable: bool,
}

/// The registry of all 8 lanes, indexed by `id - 1`.
///
/// Lanes 1–3 are the seed's values. Lanes 4–8 are ours: Video is unreliable with a short queue
/// (a stale frame is worthless); Data is reliable and lowest priority but deep (bulk transfer);
/// Telemetry is unreliable; Sync is reliable and sits between Messaging and Voice (playback
/// state must not wait behind media or bulk data); Relay is reliable, deep and lowest.
#[rustfmt::skip]
pub const LANE_REGISTRY: [LaneSpec; 8] = [
    LaneSpec { lane: Lane::Control, default_encoding: Encoding::Msgpack, priority: 100, queue_depth: 100, reliable: true },
    LaneSpec { lane: Lane::Messaging, default_encoding: Encoding::Msgpack, priority: 90, queue_depth: 500, reliable: true },
    LaneSpec { lane: Lane::Voice, default_encoding: Encoding::Protobuf, priority: 80, queue_depth: 50, reliable: false },
    LaneSpec { lane: Lane::Video, default_encoding: Encoding::Msgpack, priority: 70, queue_depth: 30, reliable: false },
    LaneSpec { lane: Lane::Data, default_encoding: Encoding::Msgpack, priority: 20, queue_depth: 1000, reliable: true },
    LaneSpec { lane: Lane::Telemetry, default_encoding: Encoding::Msgpack, priority: 30, queue_depth: 200, reliable: false },
    LaneSpec { lane: Lane::Sync, default_encoding: Encoding::Msgpack, priority: 85, queue_depth: 200, reliable: true },
    LaneSpec { lane: Lane::Relay, default_encoding: Encoding::Msgpack, priority: 10, queue_depth: 500, reliable: true },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_indexed_by_id() {
        for (i, spec) in LANE_REGISTRY.iter().enumerate() {
            assert_eq!(spec.lane.id() as usize, i + 1);
            assert_eq!(Lane::from_id(spec.lane.id()), Some(spec.lane));
        }
        assert_eq!(Lane::from_id(0), None);
        assert_eq!(Lane::from_id(9), None);
    }

    #[test]
    fn seed_values_for_first_three_lanes() {
        let c = Lane::Control.spec();
        assert_eq!((c.priority, c.queue_depth, c.reliable), (100, 100, true));
        let m = Lane::Messaging.spec();
        assert_eq!((m.priority, m.queue_depth, m.reliable), (90, 500, true));
        let v = Lane::Voice.spec();
        assert_eq!((v.priority, v.queue_depth, v.reliable), (80, 50, false));
        assert_eq!(v.default_encoding, Encoding::Protobuf);
    }

    #[test]
    fn names_round_trip() {
        for l in Lane::ALL {
            assert_eq!(Lane::from_name(l.name()), Some(l));
            assert_eq!(Lane::from_name(&l.name().to_lowercase()), Some(l));
        }
        assert_eq!(Lane::from_name("Bogus"), None);
    }
}
