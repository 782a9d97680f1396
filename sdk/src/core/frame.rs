//! The binary frame that carries one lane message over a WebSocket (or, later, a WebRTC
//! DataChannel). One transport message is exactly one frame.
//!
//! Layout (PROTOCOL.md, "Frames"; all multi-byte integers are unsigned LEB128 varints):
//!
//! ```text
//! offset  size      field
//! 0       1         kind          0x01 Data (app message), 0x02 Control (protocol message)
//! 1       1         lane          1..=8; Control frames always use lane 1, and
//!                                 only they (a Data frame on lane 1 is refused)
//! 2       1         flags         bits 0-1 encoding (0 msgpack, 1 json, 2 protobuf,
//!                                 3 reserved), bit 2 `to` present,
//!                                 bit 3 `from` present, bits 4-7 reserved (must be 0)
//! 3       varint    seq           per-lane, per-direction sequence number (u64)
//! ..      varint    dict          dictionary version (u32, 0 = none; always 0 with json)
//! ..      16        to            target session id (UUID bytes), if flag bit 2
//! ..      16        from          sender session id (UUID bytes), if flag bit 3
//! ..      rest      payload       one value in the frame's encoding
//! ```

use crate::core::error::ErrorCode;
use crate::core::lane::{Encoding, Lane};
use crate::core::varint::{self, VarintError};
use std::fmt;
use std::str::FromStr;

/// Largest frame (header + payload) either side accepts by default: 1 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// An application message on a lane; relayed by the server.
    Data = 0x01,
    /// A protocol message ([`crate::core::control::Control`]) between client and server.
    Control = 0x02,
}

/// A session id: a UUID, 16 bytes on the wire, hyphenated lowercase text in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// A random (version 4) session id from 16 random bytes supplied by the caller.
    pub fn from_random_bytes(bytes: [u8; 16]) -> SessionId {
        SessionId(*uuid::Builder::from_random_bytes(bytes).as_uuid().as_bytes())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl FromStr for SessionId {
    type Err = FrameError;
    fn from_str(s: &str) -> Result<SessionId, FrameError> {
        uuid::Uuid::try_parse(s)
            .map(|u| SessionId(*u.as_bytes()))
            .map_err(|_| FrameError::BadSessionId(s.chars().take(64).collect()))
    }
}

impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SessionId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything in a frame but the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Data or Control.
    pub kind: FrameKind,
    /// The lane; [`Lane::Control`] for Control frames.
    pub lane: Lane,
    /// Payload encoding. The frame layer carries any [`Encoding`]; the payload codec
    /// ([`crate::core::payload`]) supports msgpack and json only.
    pub encoding: Encoding,
    /// Per-lane, per-direction sequence number.
    pub seq: u64,
    /// Dictionary version the payload's keys index into; 0 = none.
    pub dict_version: u32,
    /// Target session (client → server: route to this session only, not the room).
    pub to: Option<SessionId>,
    /// Sender session (server → client: who sent this relayed message).
    pub from: Option<SessionId>,
}

/// Why bytes are not a frame (bad bytes from the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Fewer bytes than the header needs.
    #[error("frame truncated")]
    Truncated,
    /// First byte is not a known kind.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// Lane byte outside `1..=8`.
    #[error("unknown lane id {0}")]
    UnknownLane(u8),
    /// Reserved flag bits set, or an unknown encoding code.
    #[error("invalid frame flags 0b{0:08b}")]
    BadFlags(u8),
    /// A varint longer than its type allows.
    #[error("varint overflows")]
    VarintOverflow,
    /// A Control frame on a lane other than 1.
    #[error("control frame on lane {0}, must be lane 1")]
    ControlOffLane(u8),
    /// A Data frame on lane 1, which carries Control frames only (PROTOCOL.md §5), so that a
    /// receiver dispatching on the lane never takes a peer's message for the server's.
    #[error("data frame on lane 1; lane 1 carries control frames only")]
    DataOnControlLane,
    /// A JSON frame naming a dictionary.
    #[error("json frame names dictionary version {0}; json frames must use 0")]
    DictionaryWithJson(u32),
    /// The frame is larger than the receiver accepts.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Frame size in bytes.
        size: usize,
        /// The receiver's limit in bytes.
        limit: usize,
    },
    /// Text that is not a UUID where a session id was expected.
    #[error("{0:?} is not a session id (UUID)")]
    BadSessionId(String),
}

impl FrameError {
    /// The wire code for this error: `frame_too_large` for [`FrameError::TooLarge`],
    /// `bad_frame` for everything else.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            _ => ErrorCode::BadFrame,
        }
    }
}

const FLAG_TO: u8 = 0b0100;
const FLAG_FROM: u8 = 0b1000;
const ENCODING_MASK: u8 = 0b0011;

impl FrameHeader {
    /// A Data frame header with no routing.
    pub fn data(lane: Lane, encoding: Encoding, seq: u64, dict_version: u32) -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Data,
            lane,
            encoding,
            seq,
            dict_version,
            to: None,
            from: None,
        }
    }

    /// A Control frame header (lane 1).
    pub fn control(encoding: Encoding, seq: u64, dict_version: u32) -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Control,
            ..FrameHeader::data(Lane::Control, encoding, seq, dict_version)
        }
    }

    /// Writes the header then `payload` into a new buffer.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + payload.len() + 32);
        self.encode_into(&mut out);
        out.extend_from_slice(payload);
        out
    }

    /// Appends the header (without payload) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let enc = match self.encoding {
            Encoding::Msgpack => 0,
            Encoding::Json => 1,
            Encoding::Protobuf => 2,
        };
        let mut flags = enc;
        if self.to.is_some() {
            flags |= FLAG_TO;
        }
        if self.from.is_some() {
            flags |= FLAG_FROM;
        }
        out.push(self.kind as u8);
        out.push(self.lane.id());
        out.push(flags);
        put_varint(out, self.seq);
        put_varint(out, u64::from(self.dict_version));
        if let Some(to) = self.to {
            out.extend_from_slice(&to.0);
        }
        if let Some(from) = self.from {
            out.extend_from_slice(&from.0);
        }
    }

    /// Parses a frame into its header and payload slice.
    ///
    /// Errors: [`FrameError`] for anything malformed; never panics.
    pub fn decode(bytes: &[u8]) -> Result<(FrameHeader, &[u8]), FrameError> {
        let [kind, lane, flags, rest @ ..] = bytes else {
            return Err(FrameError::Truncated);
        };
        let kind = match *kind {
            0x01 => FrameKind::Data,
            0x02 => FrameKind::Control,
            k => return Err(FrameError::UnknownKind(k)),
        };
        let lane_id = *lane;
        let lane = Lane::from_id(lane_id).ok_or(FrameError::UnknownLane(lane_id))?;
        if kind == FrameKind::Control && lane != Lane::Control {
            return Err(FrameError::ControlOffLane(lane_id));
        }
        if kind == FrameKind::Data && lane == Lane::Control {
            return Err(FrameError::DataOnControlLane);
        }
        if flags & !(ENCODING_MASK | FLAG_TO | FLAG_FROM) != 0 {
            return Err(FrameError::BadFlags(*flags));
        }
        let encoding = match flags & ENCODING_MASK {
            0 => Encoding::Msgpack,
            1 => Encoding::Json,
            2 => Encoding::Protobuf,
            _ => return Err(FrameError::BadFlags(*flags)),
        };
        let mut rest = rest;
        let seq = get_varint(&mut rest)?;
        let dict_version =
            u32::try_from(get_varint(&mut rest)?).map_err(|_| FrameError::VarintOverflow)?;
        if encoding == Encoding::Json && dict_version != 0 {
            return Err(FrameError::DictionaryWithJson(dict_version));
        }
        let mut id = |present: bool| -> Result<Option<SessionId>, FrameError> {
            if !present {
                return Ok(None);
            }
            let (head, tail) = rest
                .split_first_chunk::<16>()
                .ok_or(FrameError::Truncated)?;
            rest = tail;
            Ok(Some(SessionId(*head)))
        };
        let to = id(flags & FLAG_TO != 0)?;
        let from = id(flags & FLAG_FROM != 0)?;
        Ok((
            FrameHeader {
                kind,
                lane,
                encoding,
                seq,
                dict_version,
                to,
                from,
            },
            rest,
        ))
    }
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    varint::put(out, v);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, FrameError> {
    varint::get(buf).map_err(|e| match e {
        VarintError::Truncated => FrameError::Truncated,
        VarintError::Overflow => FrameError::VarintOverflow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u8) -> SessionId {
        SessionId::from_random_bytes([n; 16])
    }

    #[test]
    fn header_round_trip() {
        let mut h = FrameHeader::data(Lane::Sync, Encoding::Msgpack, 300, 1);
        h.to = Some(sid(1));
        h.from = Some(sid(2));
        let bytes = h.encode(b"\xc0");
        assert_eq!(&bytes[..3], &[0x01, 7, 0b1100]);
        let (back, payload) = FrameHeader::decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(payload, b"\xc0");
        let c = FrameHeader::control(Encoding::Json, u64::MAX, 0);
        assert_eq!(FrameHeader::decode(&c.encode(b"{}")).unwrap().0, c);
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        assert_eq!(FrameHeader::decode(&[1, 2]), Err(FrameError::Truncated));
        assert_eq!(
            FrameHeader::decode(&[9, 1, 0, 0, 0]),
            Err(FrameError::UnknownKind(9))
        );
        assert_eq!(
            FrameHeader::decode(&[1, 9, 0, 0, 0]),
            Err(FrameError::UnknownLane(9))
        );
        assert_eq!(
            FrameHeader::decode(&[2, 2, 0, 0, 0]),
            Err(FrameError::ControlOffLane(2))
        );
        // Lane 1 is the Control frames' own: a Data frame there is refused (§5).
        assert_eq!(
            FrameHeader::decode(&[1, 1, 0, 1, 0]),
            Err(FrameError::DataOnControlLane)
        );
        assert_eq!(FrameError::DataOnControlLane.code(), ErrorCode::BadFrame);
        assert_eq!(
            FrameHeader::decode(&[1, 2, 0x10, 0, 0]),
            Err(FrameError::BadFlags(0x10))
        );
        assert_eq!(
            FrameHeader::decode(&[1, 2, 0x03, 0, 0]),
            Err(FrameError::BadFlags(0x03))
        );
        assert_eq!(
            FrameHeader::decode(&[1, 2, 1, 0, 1]),
            Err(FrameError::DictionaryWithJson(1))
        );
        assert_eq!(
            FrameHeader::decode(&[1, 2, 4, 0, 0, 1, 2]),
            Err(FrameError::Truncated)
        );
        let overflow = [
            1, 2, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ];
        assert_eq!(
            FrameHeader::decode(&overflow),
            Err(FrameError::VarintOverflow)
        );
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            FrameError::TooLarge { size: 2, limit: 1 }.code(),
            ErrorCode::FrameTooLarge
        );
        assert_eq!(FrameError::UnknownLane(9).code(), ErrorCode::BadFrame);
    }

    #[test]
    fn session_id_text_round_trip() {
        let s = sid(7);
        let text = s.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.parse::<SessionId>().unwrap(), s);
        assert!(matches!(
            "nope".parse::<SessionId>(),
            Err(FrameError::BadSessionId(_))
        ));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = FrameHeader::decode(&bytes);
        }

        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut s = out.as_slice();
            prop_assert_eq!(get_varint(&mut s).unwrap(), v);
            prop_assert!(s.is_empty());
        }
    }
}
