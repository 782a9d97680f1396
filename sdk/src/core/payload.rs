//! Payloads of frames: a [`serde_json::Value`] encoded with a lane's negotiated [`Encoding`]
//! and, for msgpack, the session's [`Dictionary`]. Joins [`crate::core::frame`] and
//! [`crate::core::codec`]; the only place that checks a frame's dictionary version.

use crate::core::codec::{self, CodecError, DecodeBudget};
use crate::core::control::Control;
use crate::core::dictionary::Dictionary;
use crate::core::error::ErrorCode;
use crate::core::frame::FrameHeader;
use crate::core::lane::Encoding;
use serde_json::Value;

/// Why a frame's payload could not be turned into a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The frame names a dictionary version this side does not have; decoding it would give
    /// wrong keys, so it is refused.
    #[error("frame uses dictionary v{got}, this side has {have}")]
    UnknownDictionary {
        /// Version named by the frame.
        got: u32,
        /// What this side has (`"v1"` or `"none"`).
        have: String,
    },
    /// The encoding is not implemented (protobuf).
    #[error("encoding {0} is not supported")]
    UnsupportedEncoding(&'static str),
    /// The bytes do not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A Control payload of unknown type or shape.
    #[error("bad control message: {0}")]
    BadControl(String),
}

impl PayloadError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            PayloadError::UnknownDictionary { .. } => ErrorCode::UnknownDictionary,
            PayloadError::Codec(CodecError::TooComplex | CodecError::TooDeep) => {
                ErrorCode::PayloadTooComplex
            }
            PayloadError::Codec(CodecError::ShapeUnknown(_)) => ErrorCode::ShapeUnknown,
            PayloadError::UnsupportedEncoding(_) | PayloadError::Codec(_) => ErrorCode::BadPayload,
            PayloadError::BadControl(_) => ErrorCode::BadControl,
        }
    }
}

/// Encodes `value` for a lane negotiated with `encoding`; returns the bytes and the dictionary
/// version to put in the frame header (0 when no dictionary is used).
///
/// Errors: [`PayloadError::UnsupportedEncoding`] for protobuf.
pub fn encode(
    value: &Value,
    encoding: Encoding,
    dict: Option<&Dictionary>,
) -> Result<(Vec<u8>, u32), PayloadError> {
    match encoding {
        Encoding::Msgpack => Ok((
            codec::encode_msgpack(value, dict),
            dict.map_or(0, Dictionary::version),
        )),
        Encoding::Json => Ok((codec::encode_json(value), 0)),
        Encoding::Protobuf => Err(PayloadError::UnsupportedEncoding("protobuf")),
    }
}

/// Decodes the payload of a frame with header `h`, given the dictionary this side has.
///
/// Errors: [`PayloadError`]; a frame whose `dict_version` is neither 0 nor at most `dict`'s
/// version (a newer dictionary than this side has) fails with
/// [`PayloadError::UnknownDictionary`]; a payload over [`DecodeBudget::DEFAULT`]
/// ([`codec::MAX_NODES`] values, [`codec::MAX_DEPTH`] levels) with
/// [`CodecError::TooComplex`] or [`CodecError::TooDeep`] (code `payload_too_complex`).
pub fn decode(
    h: &FrameHeader,
    payload: &[u8],
    dict: Option<&Dictionary>,
) -> Result<Value, PayloadError> {
    decode_with(h, payload, dict, DecodeBudget::DEFAULT)
}

/// [`decode`] within `budget` (a server's configured decode budget).
///
/// Errors: as [`decode`].
pub fn decode_with(
    h: &FrameHeader,
    payload: &[u8],
    dict: Option<&Dictionary>,
    budget: DecodeBudget,
) -> Result<Value, PayloadError> {
    match h.encoding {
        Encoding::Msgpack => {
            let used = match (h.dict_version, dict) {
                (0, _) => None,
                // Dictionaries are append-only: a newer one reads older versions' frames.
                (v, Some(d)) if d.reads(v) => Some(d),
                (v, _) => {
                    return Err(PayloadError::UnknownDictionary {
                        got: v,
                        have: dict.map_or("none".into(), |d| format!("v{}", d.version())),
                    })
                }
            };
            Ok(codec::decode_msgpack_with(payload, used, budget)?)
        }
        Encoding::Json => Ok(codec::decode_json_with(payload, budget)?),
        Encoding::Protobuf => Err(PayloadError::UnsupportedEncoding("protobuf")),
    }
}

/// Builds a complete Control frame for `msg`.
pub fn control_frame(
    msg: &Control,
    encoding: Encoding,
    dict: Option<&Dictionary>,
    seq: u64,
) -> Vec<u8> {
    let value = serde_json::to_value(msg).expect("Control serializes to JSON");
    // Control frames use msgpack or json; anything else falls back to msgpack.
    let encoding = if encoding == Encoding::Json {
        Encoding::Json
    } else {
        Encoding::Msgpack
    };
    let (bytes, dict_version) = encode(&value, encoding, dict).expect("msgpack/json encode");
    FrameHeader::control(encoding, seq, dict_version).encode(&bytes)
}

/// Decodes the payload of a Control frame.
pub fn decode_control(
    h: &FrameHeader,
    payload: &[u8],
    dict: Option<&Dictionary>,
) -> Result<Control, PayloadError> {
    let v = decode(h, payload, dict)?;
    serde_json::from_value(v).map_err(|e| PayloadError::BadControl(e.to_string()))
}

/// Like [`decode_control`], but a well-formed message whose `type` this version does not know
/// is `Ok(None)`: a newer server may add message types, and an older client must ignore them
/// rather than report an error. Clients use this; the server stays strict.
pub fn decode_control_lenient(
    h: &FrameHeader,
    payload: &[u8],
    dict: Option<&Dictionary>,
) -> Result<Option<Control>, PayloadError> {
    let v = decode(h, payload, dict)?;
    if v.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !Control::TYPES.contains(&t))
    {
        return Ok(None);
    }
    serde_json::from_value(v)
        .map(Some)
        .map_err(|e| PayloadError::BadControl(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::lane::Lane;
    use serde_json::json;

    #[test]
    fn unknown_dictionary_version_is_refused() {
        let (d1, d2) = (Dictionary::v1(), Dictionary::v2());
        let (bytes, v) = encode(&json!({"msg": "pong"}), Encoding::Msgpack, Some(&d2)).unwrap();
        let h = FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 1, v);
        assert_eq!(v, 2);
        assert_eq!(
            decode(&h, &bytes, Some(&d2)).unwrap(),
            json!({"msg": "pong"})
        );
        assert!(matches!(
            decode(&h, &bytes, Some(&d1)),
            Err(PayloadError::UnknownDictionary { got: 2, .. })
        ));
        assert!(matches!(
            decode(&h, &bytes, None),
            Err(PayloadError::UnknownDictionary { .. })
        ));
    }

    #[test]
    fn newer_dictionary_reads_older_frames() {
        let (d1, d2) = (Dictionary::v1(), Dictionary::v2());
        let value = json!({"type": "pong", "trackId": "abc"});
        let (bytes, v) = encode(&value, Encoding::Msgpack, Some(&d1)).unwrap();
        let h = FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 1, v);
        assert_eq!(decode(&h, &bytes, Some(&d2)).unwrap(), value);
    }

    #[test]
    fn lenient_control_ignores_unknown_types_only() {
        let d = Dictionary::v1();
        let frame = |v: Value| {
            let (bytes, dv) = encode(&v, Encoding::Msgpack, Some(&d)).unwrap();
            (FrameHeader::control(Encoding::Msgpack, 1, dv), bytes)
        };
        let (h, p) = frame(json!({"type": "from-the-future", "x": 1}));
        assert_eq!(decode_control_lenient(&h, &p, Some(&d)), Ok(None));
        assert!(decode_control(&h, &p, Some(&d)).is_err());
        let (h, p) = frame(json!({"type": "joined", "room": 5}));
        assert!(matches!(
            decode_control_lenient(&h, &p, Some(&d)),
            Err(PayloadError::BadControl(_))
        ));
        let (h, p) = frame(json!({"no-type": true}));
        assert!(decode_control_lenient(&h, &p, Some(&d)).is_err());
    }

    #[test]
    fn over_budget_payloads_are_payload_too_complex() {
        let mut bomb = vec![0xdd];
        bomb.extend_from_slice(&(1u32 << 20).to_be_bytes());
        bomb.resize(bomb.len() + (1 << 20), 0x90);
        let h = FrameHeader::data(Lane::Messaging, Encoding::Msgpack, 1, 0);
        let e = decode(&h, &bomb, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PayloadTooComplex);
        let h = FrameHeader::data(Lane::Messaging, Encoding::Json, 1, 0);
        let deep = "[".repeat(200) + &"]".repeat(200);
        let e = decode(&h, deep.as_bytes(), None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PayloadTooComplex);
        let small = DecodeBudget {
            max_nodes: 2,
            ..DecodeBudget::DEFAULT
        };
        let e = decode_with(&h, b"[1,2]", None, small).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PayloadTooComplex);
        assert_eq!(decode(&h, b"[1,2]", None).unwrap(), json!([1, 2]));
        // Other bad bytes stay bad_payload.
        let e = decode(&h, b"[1,", None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadPayload);
    }

    #[test]
    fn control_round_trip_both_encodings() {
        let d = Dictionary::v1();
        let msg = Control::Join { room: "r".into() };
        for enc in [Encoding::Msgpack, Encoding::Json] {
            let f = control_frame(&msg, enc, Some(&d), 3);
            let (h, p) = FrameHeader::decode(&f).unwrap();
            assert_eq!(decode_control(&h, p, Some(&d)).unwrap(), msg);
        }
    }
}
