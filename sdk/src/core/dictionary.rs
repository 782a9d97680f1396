//! The token dictionary negotiated in handshake v2 (seed 000, "Handshake Response",
//! `dictionary {version, tokens, indexMap}`).
//!
//! Index `i` (1-based, as in the seed's `indexMap: {"msg": 1, ...}`) names `tokens[i - 1]`.
//! Index 0 is never used. Version `0` means "no dictionary" on the wire.
//!
//! Versions are append-only: version `n + 1` lists version `n`'s tokens first, in the same
//! order, so a side holding version `n + 1` decodes frames of version `n` (PROTOCOL.md §8).
//! From version 2 on, listed string *values* are written as indices too
//! ([`Dictionary::indexes_values`], the MessagePack ext of [`crate::core::codec`]).
//! From version 3 on, the dictionary also lists **shapes**: ordered key lists of the protocol's
//! common objects, which the codec writes as one MessagePack ext holding only the values
//! ([`Dictionary::shape_of`], PROTOCOL.md §8.2).

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The tokens of dictionary version 1: map keys that the seeds' messages use (handshake, lane
/// events, signaling, music-control, call quality). Order is part of the wire format: never
/// reorder, only append in a new version. The first 127 indices encode in one byte.
const V1_TOKENS: &[&str] = &[
    "msg",
    "ts",
    "from",
    "to",
    "type",
    "data",
    "id",
    "content",
    "timestamp",
    "sequence",
    "action",
    "position",
    "trackId",
    "track",
    "controllerId",
    "signature",
    "roomId",
    "room",
    "sessionId",
    "clientId",
    "wallet",
    "lane",
    "seq",
    "serverTime",
    "clientTime",
    "error",
    "code",
    "encrypted",
    "status",
    "lastSeen",
    "conversationId",
    "isTyping",
    "epoch",
    "isPlaying",
    "playbackRate",
    "rtt",
    "jitter",
    "packetLoss",
    "bitrate",
    "codec",
    "iceState",
    "sdp",
    "candidate",
    "sdpMid",
    "sdpMLineIndex",
    "payload",
    "version",
    "name",
    "title",
    "artist",
    "album",
    "duration",
    "url",
    "members",
    "value",
    "text",
    "count",
    "size",
    "offset",
    "kind",
    "state",
    "reason",
    "address",
    "event",
    "metrics",
    "latency",
    "quality",
    "heartbeatIntervalMs",
    "capabilities",
    "deviceInfo",
    "platform",
    "mimeType",
    "checksum",
];

/// Tokens version 2 appends to [`V1_TOKENS`]: the keys of our own protocol messages (handshake,
/// lane grants, Control) that v1 missed, and the string *values* the seeds' and our messages
/// repeat: lane, encoding, transport and feature names, Control and app message types,
/// music actions, presence states, ICE states, platforms. Append-only, like v1.
const V2_TOKENS: &[&str] = &[
    // Keys (handshake, lane grants, Control).
    "transport",
    "transports",
    "lanes",
    "encoding",
    "encodings",
    "dictionary",
    "tokens",
    "indexMap",
    "ttlSeconds",
    "protocol",
    "features",
    "websocketUrl",
    "heartbeat",
    "intervalMs",
    "timeoutMs",
    "priority",
    "queueDepth",
    "reliable",
    "appVersion",
    "heartbeatTimeoutMs",
    "rttMs",
    "peers",
    "volume",
    "message",
    // Lane names (PROTOCOL.md §4).
    "Control",
    "Messaging",
    "Voice",
    "Video",
    "Data",
    "Telemetry",
    "Sync",
    "Relay",
    // Encodings, transports, features.
    "msgpack",
    "json",
    "protobuf",
    "websocket",
    "http1",
    "http3",
    "sse",
    "webrtc",
    "rooms",
    "resume",
    "mux",
    // Control message types (`version` and `error` are v1 tokens).
    "join",
    "leave",
    "ping",
    "pong",
    "welcome",
    "joined",
    "left",
    "peer-joined",
    "peer-left",
    // App message types of the seeds.
    "music-control",
    "sync-state",
    "message:send",
    "message:receive",
    "presence:update",
    "typing:indicator",
    "stats",
    "offer",
    "answer",
    "ice",
    "ice-candidate",
    "webrtc-offer",
    "webrtc-answer",
    "webrtc-ice",
    "webrtc-signal",
    // Music actions.
    "play",
    "pause",
    "seek",
    "skip",
    "next",
    "previous",
    "stop",
    // Presence states.
    "online",
    "offline",
    "away",
    "busy",
    // ICE connection states.
    "new",
    "checking",
    "connected",
    "completed",
    "failed",
    "disconnected",
    "closed",
    // Platforms.
    "web",
    "ios",
    "android",
];

/// The shapes of dictionary version 3: ordered key lists of the seeds' and the protocol's common
/// objects (app messages and their `data`, handshake parts). Shape `s` (0-based) is written as
/// MessagePack ext type `s`. Append-only like the tokens; every key must be a listed token.
const V3_SHAPES: &[&[&str]] = &[
    // music-control (seed 004 §2.1, PROTOCOL.md §12.2) and its data / track.
    &["type", "action", "data", "sequence", "signature"],
    &["type", "action", "data", "sequence", "epoch", "signature"],
    &["type", "action", "data", "sequence", "epoch"],
    &[
        "position",
        "trackId",
        "track",
        "timestamp",
        "from",
        "controllerId",
    ],
    &["id", "title", "artist", "duration", "url"],
    // Messaging and presence (seed 000 app messages).
    &["from", "content", "timestamp", "encrypted"],
    &["from", "isTyping", "conversationId"],
    // Control ping/pong (clock sync).
    &["type", "clientTime", "serverTime"],
    // Call quality (seed 004 StatsData).
    &[
        "rtt",
        "jitter",
        "packetLoss",
        "bitrate",
        "codec",
        "iceState",
        "timestamp",
    ],
    // Signaling: offer / answer / ICE and their data.
    &["type", "roomId", "data"],
    &["type", "from", "to", "data"],
    &["candidate", "sdpMid", "sdpMLineIndex"],
    // Handshake (seed 000) request, capabilities, lane grants, protocol.
    &["clientId", "wallet", "capabilities", "deviceInfo"],
    &["transports", "encodings", "lanes"],
    &["id", "name", "encoding", "url"],
    &[
        "sessionId",
        "transport",
        "lanes",
        "dictionary",
        "serverTime",
        "ttlSeconds",
        "protocol",
    ],
];

/// Most shapes a dictionary may list (ext types `0..MAX_SHAPES` name them; 0x64 is the
/// dictionary string).
pub const MAX_SHAPES: usize = 96;

/// Most keys one shape may have.
pub const MAX_SHAPE_KEYS: usize = 16;

/// A negotiated dictionary: version, tokens and the reverse index.
#[derive(Clone, Debug)]
pub struct Dictionary {
    version: u32,
    tokens: Vec<String>,
    /// Token → index. A fixed-seed fast hash is fine: the table never changes after the
    /// handshake, so untrusted lookups cannot degrade it.
    index: HashMap<String, u32, FixedState>,
    /// Byte length of the longest token (longer strings skip the lookup).
    longest: usize,
    /// Shapes: ordered key indices; shape `s` is ext type `s`.
    shapes: Vec<Box<[u32]>>,
    /// Key index list → shape number.
    shape_index: HashMap<Box<[u32]>, u8, FixedState>,
}

impl PartialEq for Dictionary {
    fn eq(&self, other: &Dictionary) -> bool {
        self.version == other.version && self.tokens == other.tokens && self.shapes == other.shapes
    }
}

impl Eq for Dictionary {}

/// Largest number of tokens a dictionary may have (keeps decoders' lookups bounded).
pub const MAX_TOKENS: usize = 65_535;

/// Why a dictionary could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DictionaryError {
    /// Version 0 is reserved for "no dictionary"; versions are decimal `u32` strings.
    #[error("dictionary version {0:?} is not a decimal number in 1..=4294967295")]
    BadVersion(String),
    /// A token appears twice.
    #[error("dictionary token {0:?} appears twice")]
    DuplicateToken(String),
    /// More than [`MAX_TOKENS`] tokens.
    #[error("dictionary has {0} tokens, more than {MAX_TOKENS}")]
    TooManyTokens(usize),
    /// `indexMap` disagrees with `tokens`.
    #[error("dictionary indexMap entry {0:?} does not match its position in tokens")]
    IndexMismatch(String),
    /// Shape number `0` is empty, longer than [`MAX_SHAPE_KEYS`], names an index that is not a
    /// token, repeats a key, or repeats an earlier shape; or there are more than
    /// [`MAX_SHAPES`] shapes.
    #[error("dictionary shape {0} is invalid")]
    BadShape(usize),
}

impl Dictionary {
    /// Builds dictionary `version` (≥ 1) from tokens in index order (index 1 first).
    ///
    /// Errors: [`DictionaryError`] for version 0, duplicates or too many tokens.
    pub fn new(version: u32, tokens: Vec<String>) -> Result<Dictionary, DictionaryError> {
        if version == 0 {
            return Err(DictionaryError::BadVersion("0".into()));
        }
        if tokens.len() > MAX_TOKENS {
            return Err(DictionaryError::TooManyTokens(tokens.len()));
        }
        let mut index = HashMap::with_capacity_and_hasher(tokens.len(), FixedState::default());
        for (i, t) in tokens.iter().enumerate() {
            if index.insert(t.clone(), i as u32 + 1).is_some() {
                return Err(DictionaryError::DuplicateToken(t.clone()));
            }
        }
        Ok(Dictionary {
            version,
            longest: tokens.iter().map(String::len).max().unwrap_or(0),
            tokens,
            index,
            shapes: Vec::new(),
            shape_index: HashMap::default(),
        })
    }

    /// This dictionary with `shapes` (ordered lists of 1-based key indices; shape `s` is
    /// written as ext type `s`).
    ///
    /// Errors: [`DictionaryError::BadShape`] (see its docs).
    pub fn with_shapes(mut self, shapes: Vec<Vec<u32>>) -> Result<Dictionary, DictionaryError> {
        if shapes.len() > MAX_SHAPES {
            return Err(DictionaryError::BadShape(MAX_SHAPES));
        }
        let mut index = HashMap::with_capacity_and_hasher(shapes.len(), FixedState::default());
        for (s, keys) in shapes.iter().enumerate() {
            let valid = (1..=MAX_SHAPE_KEYS).contains(&keys.len())
                && keys.iter().all(|&k| self.token(u64::from(k)).is_some())
                && keys.iter().enumerate().all(|(i, k)| !keys[..i].contains(k));
            let keys: Box<[u32]> = keys.clone().into_boxed_slice();
            if !valid || index.insert(keys, s as u8).is_some() {
                return Err(DictionaryError::BadShape(s));
            }
        }
        self.shapes = shapes.into_iter().map(Vec::into_boxed_slice).collect();
        self.shape_index = index;
        Ok(self)
    }

    /// The built-in dictionary version 1 (keys only; what server-stub negotiated before v2).
    pub fn v1() -> Dictionary {
        Dictionary::new(1, V1_TOKENS.iter().map(|s| s.to_string()).collect())
            .expect("built-in dictionary is valid")
    }

    /// The built-in dictionary version 2: v1's tokens, then [`V2_TOKENS`]'s keys and values.
    pub fn v2() -> Dictionary {
        let tokens = V1_TOKENS.iter().chain(V2_TOKENS).map(|s| s.to_string());
        Dictionary::new(2, tokens.collect()).expect("built-in dictionary is valid")
    }

    /// The built-in dictionary version 3: v2's tokens, plus the shapes of [`V3_SHAPES`].
    pub fn v3() -> Dictionary {
        let tokens = V1_TOKENS.iter().chain(V2_TOKENS).map(|s| s.to_string());
        let d = Dictionary::new(3, tokens.collect()).expect("built-in dictionary is valid");
        let shapes = V3_SHAPES
            .iter()
            .map(|keys| {
                keys.iter()
                    .map(|k| d.index_of(k).expect("shape keys are tokens"))
                    .collect()
            })
            .collect();
        d.with_shapes(shapes).expect("built-in dictionary is valid")
    }

    /// The built-in dictionary server-stub negotiates today ([`Dictionary::v3`]).
    pub fn current() -> Dictionary {
        Dictionary::v3()
    }

    /// The shapes, in order (shape `s` is ext type `s`), as 1-based key indices.
    pub fn shapes(&self) -> &[Box<[u32]>] {
        &self.shapes
    }

    /// The shape whose keys are exactly `keys` (1-based indices, in this order), if listed.
    pub fn shape_of(&self, keys: &[u32]) -> Option<u8> {
        if self.shapes.is_empty() {
            return None;
        }
        self.shape_index.get(keys).copied()
    }

    /// The keys of shape `s`, if listed.
    pub fn shape(&self, s: u8) -> Option<&[u32]> {
        self.shapes.get(usize::from(s)).map(|k| &k[..])
    }

    /// Whether listed string values are written as indices (version 2 and later); version 1
    /// indexes map keys only.
    pub fn indexes_values(&self) -> bool {
        self.version >= 2
    }

    /// Whether a frame naming dictionary `version` decodes with this dictionary: `0` (none),
    /// this version, or an older one (versions are append-only, see the module docs).
    pub fn reads(&self, version: u32) -> bool {
        version <= self.version
    }

    /// The version number (≥ 1).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Tokens in index order (`tokens()[i - 1]` has index `i`).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The 1-based index of `token`, if listed.
    pub fn index_of(&self, token: &str) -> Option<u32> {
        if token.len() > self.longest {
            return None;
        }
        self.index.get(token).copied()
    }

    /// The token at 1-based `index`, if any.
    pub fn token(&self, index: u64) -> Option<&str> {
        let i = usize::try_from(index).ok()?.checked_sub(1)?;
        self.tokens.get(i).map(String::as_str)
    }

    /// The handshake's JSON shape of this dictionary.
    pub fn to_wire(&self) -> DictionaryWire {
        DictionaryWire {
            version: self.version.to_string(),
            tokens: self.tokens.clone(),
            index_map: self
                .tokens
                .iter()
                .map(|t| (t.clone(), self.index[t]))
                .collect(),
            shapes: self.shapes.iter().map(|k| k.to_vec()).collect(),
        }
    }

    /// Builds a dictionary from its handshake JSON shape, checking `indexMap` against `tokens`.
    pub fn from_wire(w: &DictionaryWire) -> Result<Dictionary, DictionaryError> {
        let version: u32 = w
            .version
            .parse()
            .map_err(|_| DictionaryError::BadVersion(w.version.clone()))?;
        let dict = Dictionary::new(version, w.tokens.clone())?.with_shapes(w.shapes.clone())?;
        for (k, v) in &w.index_map {
            if dict.index_of(k) != Some(*v) {
                return Err(DictionaryError::IndexMismatch(k.clone()));
            }
        }
        Ok(dict)
    }
}

/// `dictionary` in the handshake response (seed 000): `{version, tokens, indexMap}`.
///
/// `version` is a decimal string (the seed writes `"1"`); frames carry it as a number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DictionaryWire {
    /// Decimal version string, e.g. `"1"`.
    pub version: String,
    /// Tokens; `tokens[i]` has index `i + 1`.
    pub tokens: Vec<String>,
    /// Token → 1-based index (redundant with `tokens`; checked on receipt).
    pub index_map: BTreeMap<String, u32>,
    /// Shapes (version 3 on): ordered lists of 1-based key indices; shape `s` is the codec's
    /// ext type `s` (PROTOCOL.md §8.2). Absent before version 3.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shapes: Vec<Vec<u32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_one_based_and_round_trips() {
        let d = Dictionary::v1();
        assert_eq!(d.index_of("msg"), Some(1));
        assert_eq!(d.index_of("ts"), Some(2));
        assert_eq!(d.token(1), Some("msg"));
        assert_eq!(d.token(0), None);
        assert_eq!(d.token(10_000), None);
        let w = d.to_wire();
        assert_eq!(w.version, "1");
        assert_eq!(Dictionary::from_wire(&w).unwrap(), d);
    }

    #[test]
    fn v2_extends_v1() {
        let (d1, d2) = (Dictionary::v1(), Dictionary::v2());
        assert_eq!(&d2.tokens()[..d1.tokens().len()], d1.tokens());
        assert_eq!(d2.version(), 2);
        assert!(d2.indexes_values() && !d1.indexes_values());
        assert!(d2.reads(1) && d2.reads(2) && !d2.reads(3) && !d1.reads(2));
        assert!(d2.tokens().len() <= 255, "v2 indices fit one byte");
        assert_eq!(Dictionary::from_wire(&d2.to_wire()).unwrap(), d2);
    }

    #[test]
    fn v3_extends_v2_with_shapes() {
        let (d2, d3) = (Dictionary::v2(), Dictionary::v3());
        assert_eq!(d3.tokens(), d2.tokens());
        assert!(d2.shapes().is_empty() && !d3.shapes().is_empty());
        assert!(d3.reads(2) && d3.reads(3) && !d2.reads(3));
        let keys: Vec<u32> = ["type", "clientTime", "serverTime"]
            .iter()
            .map(|k| d3.index_of(k).unwrap())
            .collect();
        let s = d3.shape_of(&keys).unwrap();
        assert_eq!(d3.shape(s), Some(&keys[..]));
        assert_eq!(d3.shape_of(&keys[..2]), None, "a prefix is not the shape");
        assert_eq!(Dictionary::from_wire(&d3.to_wire()).unwrap(), d3);
        let json = serde_json::to_value(d2.to_wire()).unwrap();
        assert!(json.get("shapes").is_none(), "v2 wire has no shapes");
    }

    #[test]
    fn rejects_bad_shapes() {
        let d = || Dictionary::v1();
        for bad in [
            vec![vec![]],
            vec![vec![1, 1]],
            vec![vec![0]],
            vec![vec![1, 999]],
        ] {
            assert!(matches!(
                d().with_shapes(bad),
                Err(DictionaryError::BadShape(0))
            ));
        }
        assert!(matches!(
            d().with_shapes(vec![vec![1, 2], vec![1, 2]]),
            Err(DictionaryError::BadShape(1))
        ));
        assert!(d().with_shapes(vec![vec![1]; 97]).is_err());
        assert!(d().with_shapes(vec![(1..=17).collect()]).is_err());
    }

    #[test]
    fn rejects_bad_dictionaries() {
        assert!(matches!(
            Dictionary::new(1, vec!["a".into(), "a".into()]),
            Err(DictionaryError::DuplicateToken(_))
        ));
        assert!(matches!(
            Dictionary::new(0, vec![]),
            Err(DictionaryError::BadVersion(_))
        ));
        let mut w = Dictionary::v1().to_wire();
        w.index_map.insert("msg".into(), 7);
        assert!(matches!(
            Dictionary::from_wire(&w),
            Err(DictionaryError::IndexMismatch(_))
        ));
    }
}
