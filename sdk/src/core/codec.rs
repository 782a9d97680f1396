//! The dictionary codec: MessagePack whose map keys are written as indices into the dictionary
//! negotiated in handshake v2 (seed 000, "Handshake Response" `dictionary`), plus plain JSON.
//!
//! Rules (PROTOCOL.md, "Dictionary codec"):
//! - Values are JSON-compatible ([`serde_json::Value`]): null, bool, integers (i64/u64),
//!   finite f64, UTF-8 strings, arrays, string-keyed maps. Key order is preserved.
//! - With a dictionary, every map key listed in it is written as its 1-based index (a
//!   MessagePack positive integer: one byte up to 127); other keys stay strings. JSON keys are
//!   always strings, so an integer key on the wire can only mean a dictionary index.
//! - With a dictionary of version 2 or later ([`Dictionary::indexes_values`]), every string
//!   *value* listed in it is written as the MessagePack ext [`DICT_STRING_EXT`] holding its
//!   index (fixext 1: `d4 64 ii` for indices up to 255, fixext 2: `d5 64 hh ll` up to 65535),
//!   when that is shorter than the string itself (strings of 3 bytes and more).
//! - With a dictionary that lists shapes (version 3 on, [`Dictionary::shape_of`]), a map whose
//!   keys are exactly a listed shape's keys, in the listed order, is written as the MessagePack
//!   ext whose *type* is the shape number and whose data is the values in order (PROTOCOL.md
//!   §8.2); any other map (other order, a missing or an extra key) stays a map.
//! - Floats that a 32-bit float holds exactly (e.g. `42.5`) are written as float 32 (5 bytes
//!   instead of 9); decoding widens them back to the same f64.
//! - Without a dictionary the output is plain MessagePack any stock library decodes.
//! - The decoder rejects truncated input, trailing bytes, nesting deeper than [`MAX_DEPTH`],
//!   more than [`MAX_NODES`] values (the [`DecodeBudget`], issue 11: decoded size stays
//!   proportional to the input and bounded per frame), duplicate keys, non-finite floats and the MessagePack types JSON cannot hold (bin, ext
//!   other than [`DICT_STRING_EXT`]), with a typed [`CodecError`]; it never panics and never
//!   returns a wrong value.
//!
//! The MessagePack layer is `rmp` (markers and primitive writers).

use crate::core::dictionary::{Dictionary, MAX_SHAPE_KEYS};
use rmp::Marker;

pub mod learned;
use serde_json::{Map, Number, Value};

/// Deepest array/map nesting the decoder accepts (bounds stack use on hostile input).
pub const MAX_DEPTH: usize = 128;

/// Most values (nodes: scalars, strings, arrays and maps, map keys not counted) one payload
/// may decode into, MessagePack or JSON (issue 11). An empty array is one byte of MessagePack
/// but about 80 bytes decoded, so 1 MiB of `0x90` would decode into ~80 MB; with this budget a
/// frame decodes into at most ~5 MB of values plus its own strings. A string, however long
/// (e.g. a 1 MiB chunk of a transfer), is one value.
pub const MAX_NODES: usize = 65_536;

/// How much one payload may decode into: values ([`MAX_NODES`]), nesting ([`MAX_DEPTH`]) and
/// elements of one array or map (by default only bounded by the values).
/// [`DecodeBudget::DEFAULT`] is what [`decode_msgpack`], [`decode_json`] and
/// [`crate::core::payload::decode`] use; a server may pass its own to the `_with` variants.
///
/// Every bound is checked as early as the encoding allows: a MessagePack array or map that
/// declares more elements than the values left or than `max_len` is refused at its header,
/// before any element is decoded; JSON, which declares no lengths, is refused at the first
/// element over a bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeBudget {
    /// Most values the payload may hold (the top-level value counts; map keys do not).
    pub max_nodes: usize,
    /// Deepest nesting: the top-level value is at depth 0, its elements at 1, and so on.
    pub max_depth: usize,
    /// Most elements (array items, map entries) of any one array or map.
    pub max_len: usize,
}

impl DecodeBudget {
    /// [`MAX_NODES`] values, [`MAX_DEPTH`] levels, containers bounded by the values only.
    pub const DEFAULT: DecodeBudget = DecodeBudget {
        max_nodes: MAX_NODES,
        max_depth: MAX_DEPTH,
        max_len: MAX_NODES,
    };
}

impl Default for DecodeBudget {
    fn default() -> Self {
        DecodeBudget::DEFAULT
    }
}

/// What is left of a [`DecodeBudget`] while decoding.
pub(crate) struct Left {
    nodes: usize,
    max_depth: usize,
    max_len: usize,
}

impl Left {
    fn new(budget: DecodeBudget) -> Left {
        Left {
            nodes: budget.max_nodes,
            max_depth: budget.max_depth,
            max_len: budget.max_len,
        }
    }

    /// Takes one value at `depth`.
    fn take(&mut self, depth: usize) -> Result<(), CodecError> {
        if depth > self.max_depth {
            return Err(CodecError::TooDeep);
        }
        self.nodes = self.nodes.checked_sub(1).ok_or(CodecError::TooComplex)?;
        Ok(())
    }
}

/// MessagePack ext type of a dictionary string value: its data is the token's 1-based index,
/// big-endian, in 1 byte (fixext 1) or 2 bytes (fixext 2). PROTOCOL.md §8.
pub const DICT_STRING_EXT: i8 = 0x64;

/// Why a payload could not be decoded (bad bytes from the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input ended inside a value.
    #[error("payload truncated")]
    Truncated,
    /// Bytes remain after the one top-level value.
    #[error("{0} trailing bytes after the payload value")]
    TrailingBytes(usize),
    /// A MessagePack marker JSON cannot represent (bin, ext other than a dictionary string,
    /// or the reserved 0xc1).
    #[error("unsupported MessagePack type (marker 0x{0:02x}); values must be JSON-compatible")]
    UnsupportedType(u8),

    /// A map key that is neither a string nor (with a dictionary) a valid index.
    #[error("map key is not a string")]
    NonStringKey,
    /// An integer map key with no dictionary in force.
    #[error("map key {0} is a dictionary index but the frame names no dictionary")]
    IndexWithoutDictionary(u64),
    /// An integer map key past the end of the dictionary.
    #[error("dictionary index {index} is out of range (dictionary v{version} has {len} tokens)")]
    IndexOutOfRange {
        /// The index read.
        index: u64,
        /// The dictionary version in force.
        version: u32,
        /// Its number of tokens.
        len: usize,
    },
    /// The same key twice in one map.
    #[error("duplicate map key {0:?}")]
    DuplicateKey(String),
    /// NaN or ±infinity (JSON has no such numbers).
    #[error("non-finite float")]
    NonFiniteFloat,
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// Nesting deeper than the [`DecodeBudget`] allows ([`MAX_DEPTH`] by default); wire code
    /// `payload_too_complex`.
    #[error("payload nests too deep")]
    TooDeep,
    /// More values than the [`DecodeBudget`] allows ([`MAX_NODES`] by default), or an array or
    /// map of more elements than its `max_len`; wire code `payload_too_complex`.
    #[error("payload holds too many values")]
    TooComplex,
    /// A string or container of 2^28 or more elements (more than a tape word holds,
    /// [`crate::core::tape`]).
    #[error("string or container too large")]
    TooLarge,
    /// A shape ext (PROTOCOL.md §8.2) whose data does not hold exactly the shape's values.
    #[error("shape ext type {0}: data does not hold exactly the shape's values")]
    BadShape(u8),
    /// A reference to a learned shape (PROTOCOL.md §8.3) whose definition this side does not
    /// hold: it missed the definition, or reset since. Never decoded with other keys; wire
    /// code `shape_unknown` (the sender answers with a resync:
    /// [`learned::ShapeSender::resync`]).
    #[error("learned shape slot {0} is not defined here (missed definition or reset)")]
    ShapeUnknown(u8),
    /// A learned shape definition (PROTOCOL.md §8.3) that breaks a rule: slot or key count out
    /// of range, a key too long or twice, or over the table's key bytes.
    #[error("bad learned shape definition: {0}")]
    BadDefinition(&'static str),
    /// JSON payload that does not parse.
    #[error("invalid JSON payload: {0}")]
    Json(String),
}

/// Encodes `value` as MessagePack, writing listed map keys as indices of `dict` (if any).
///
/// Output: one MessagePack value, no framing. Infallible for any [`Value`].
pub fn encode_msgpack(value: &Value, dict: Option<&Dictionary>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_value(&mut out, value, dict);
    out
}

/// Appends the encoding of `value` to `out` (see [`encode_msgpack`]).
pub fn encode_msgpack_into(out: &mut Vec<u8>, value: &Value, dict: Option<&Dictionary>) {
    write_value(out, value, dict);
}

/// Decodes one MessagePack value produced by [`encode_msgpack`] (or any JSON-compatible
/// MessagePack), resolving integer map keys through `dict`.
///
/// Errors: [`CodecError`] (over [`DecodeBudget::DEFAULT`]: [`CodecError::TooComplex`],
/// [`CodecError::TooDeep`]); never panics on any input.
pub fn decode_msgpack(bytes: &[u8], dict: Option<&Dictionary>) -> Result<Value, CodecError> {
    decode_msgpack_with(bytes, dict, DecodeBudget::DEFAULT)
}

/// [`decode_msgpack`] within `budget`.
///
/// Errors: as [`decode_msgpack`].
pub fn decode_msgpack_with(
    bytes: &[u8],
    dict: Option<&Dictionary>,
    budget: DecodeBudget,
) -> Result<Value, CodecError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let v = r.value(&mut NoExt, dict, 0, &mut Left::new(budget))?;
    match bytes.len() - r.pos {
        0 => Ok(v),
        n => Err(CodecError::TrailingBytes(n)),
    }
}

/// Encodes `value` as compact JSON text.
pub fn encode_json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serializing a serde_json::Value cannot fail")
}

/// Decodes JSON text (one value, whitespace allowed around it).
///
/// Errors: [`CodecError::Json`] with serde_json's message; over [`DecodeBudget::DEFAULT`]:
/// [`CodecError::TooComplex`], [`CodecError::TooDeep`].
pub fn decode_json(bytes: &[u8]) -> Result<Value, CodecError> {
    decode_json_with(bytes, DecodeBudget::DEFAULT)
}

/// [`decode_json`] within `budget`. Same values as `serde_json::from_slice` (a repeated key:
/// the last wins), counted while they are built, so an over-budget payload stops early.
///
/// Errors: as [`decode_json`].
pub fn decode_json_with(bytes: &[u8], budget: DecodeBudget) -> Result<Value, CodecError> {
    use serde::de::DeserializeSeed;
    let state = json::State {
        left: std::cell::RefCell::new(Left::new(budget)),
        over: std::cell::Cell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = json::Budgeted {
        state: &state,
        depth: 0,
    };
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    result.map_err(|e| match state.over.take() {
        Some(over) => over,
        // serde_json's own recursion limit (128) may trip before ours.
        None if e.to_string().starts_with("recursion limit exceeded") => CodecError::TooDeep,
        None => CodecError::Json(e.to_string()),
    })
}

/// The budgeted JSON value builder of [`decode_json_with`].
mod json {
    use super::{CodecError, Left};
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};
    use std::cell::{Cell, RefCell};
    use std::fmt;

    pub(super) struct State {
        pub(super) left: RefCell<Left>,
        /// Why decoding stopped, when the budget did it.
        pub(super) over: Cell<Option<CodecError>>,
    }

    impl State {
        /// One more element of an array or map that has `had` already: refused past the
        /// budget's `max_len`.
        fn element<E: de::Error>(&self, had: usize) -> Result<(), E> {
            if had < self.left.borrow().max_len {
                return Ok(());
            }
            let e = CodecError::TooComplex;
            let msg = e.to_string();
            self.over.set(Some(e));
            Err(de::Error::custom(msg))
        }
    }

    /// Builds one value at `depth`, taking it from the budget first.
    #[derive(Clone, Copy)]
    pub(super) struct Budgeted<'s> {
        pub(super) state: &'s State,
        pub(super) depth: usize,
    }

    impl<'de> DeserializeSeed<'de> for Budgeted<'_> {
        type Value = Value;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            if let Err(e) = self.state.left.borrow_mut().take(self.depth) {
                let msg = e.to_string();
                self.state.over.set(Some(e));
                return Err(de::Error::custom(msg));
            }
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Budgeted<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
            Ok(Value::Bool(b))
        }

        fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
            Ok(Value::Number(i.into()))
        }

        fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
            Ok(Value::Number(u.into()))
        }

        fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
            Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E>(self, s: &str) -> Result<Value, E> {
            Ok(Value::String(s.to_owned()))
        }

        fn visit_string<E>(self, s: String) -> Result<Value, E> {
            Ok(Value::String(s))
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let child = Budgeted {
                depth: self.depth + 1,
                ..self
            };
            let mut items = Vec::new();
            while let Some(v) = seq.next_element_seed(child)? {
                self.state.element(items.len())?;
                items.push(v);
            }
            Ok(Value::Array(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
            let child = Budgeted {
                depth: self.depth + 1,
                ..self
            };
            let mut map = Map::new();
            let mut entries = 0;
            while let Some(k) = access.next_key::<String>()? {
                self.state.element(entries)?;
                entries += 1;
                let v = access.next_value_seed(child)?;
                map.insert(k, v);
            }
            Ok(Value::Object(map))
        }
    }
}

const VEC_WRITE: &str = "writing to a Vec<u8> cannot fail";

fn write_value(out: &mut Vec<u8>, value: &Value, dict: Option<&Dictionary>) {
    use rmp::encode as e;
    match value {
        Value::Null => e::write_nil(out).expect(VEC_WRITE),
        Value::Bool(b) => e::write_bool(out, *b).expect(VEC_WRITE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                e::write_uint(out, u).expect(VEC_WRITE);
            } else if let Some(i) = n.as_i64() {
                e::write_sint(out, i).expect(VEC_WRITE);
            } else {
                // serde_json numbers are u64, i64 or finite f64.
                write_float(out, n.as_f64().unwrap_or(0.0));
            }
        }
        Value::String(s) => write_string(out, s, dict),
        Value::Array(items) => {
            e::write_array_len(out, items.len() as u32).expect(VEC_WRITE);
            for item in items {
                write_value(out, item, dict);
            }
        }
        Value::Object(map) => {
            if let Some(s) = dict.and_then(|d| map_shape(d, map)) {
                let start = out.len();
                for v in map.values() {
                    write_value(out, v, dict);
                }
                wrap_shape(out, start, s);
                return;
            }
            e::write_map_len(out, map.len() as u32).expect(VEC_WRITE);
            for (k, v) in map {
                match dict.and_then(|d| d.index_of(k)) {
                    Some(i) => {
                        e::write_uint(out, u64::from(i)).expect(VEC_WRITE);
                    }
                    None => e::write_str(out, k).expect(VEC_WRITE),
                }
                write_value(out, v, dict);
            }
        }
    }
}

/// The shape whose keys are exactly `map`'s keys in order, if `d` lists one.
fn map_shape(d: &Dictionary, map: &Map<String, Value>) -> Option<u8> {
    if d.shapes().is_empty() || map.is_empty() || map.len() > MAX_SHAPE_KEYS {
        return None;
    }
    let mut keys = [0u32; MAX_SHAPE_KEYS];
    for (slot, k) in keys.iter_mut().zip(map.keys()) {
        *slot = d.index_of(k)?;
    }
    d.shape_of(&keys[..map.len()])
}

/// Turns the values written at `out[start..]` into shape `s`'s ext: inserts the ext header
/// (type `s`; fixext 1/2/4/8/16 when the data is that long, else ext 8/16/32) before them.
pub(crate) fn wrap_shape(out: &mut Vec<u8>, start: usize, s: u8) {
    let len = out.len() - start;
    let mut h = [0u8; 6];
    let n = match len {
        1 | 2 | 4 | 8 | 16 => {
            h[0] = match len {
                1 => 0xd4,
                2 => 0xd5,
                4 => 0xd6,
                8 => 0xd7,
                _ => 0xd8,
            };
            h[1] = s;
            2
        }
        0..=0xff => {
            h[..3].copy_from_slice(&[0xc7, len as u8, s]);
            3
        }
        0x100..=0xffff => {
            h[0] = 0xc8;
            h[1..3].copy_from_slice(&(len as u16).to_be_bytes());
            h[3] = s;
            4
        }
        _ => {
            // Payloads are bounded far below 4 GiB (PROTOCOL.md §11.3).
            h[0] = 0xc9;
            h[1..5].copy_from_slice(&(len as u32).to_be_bytes());
            h[5] = s;
            6
        }
    };
    out.splice(start..start, h[..n].iter().copied());
}

/// Writes `f` as float 32 when that holds it exactly, else float 64.
pub(crate) fn write_float(out: &mut Vec<u8>, f: f64) {
    let narrow = f as f32;
    if f64::from(narrow) == f {
        out.push(0xca);
        out.extend_from_slice(&narrow.to_be_bytes());
    } else {
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    }
}

/// Writes a string value: a [`DICT_STRING_EXT`] index when the dictionary indexes values,
/// lists `s`, and the index is shorter than the string; else a MessagePack str.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &str, dict: Option<&Dictionary>) {
    // A str of 2 bytes or fewer (fixstr) is never longer than a 3-byte fixext 1.
    let index = match dict {
        Some(d) if s.len() > 2 && d.indexes_values() => d.index_of(s),
        _ => None,
    };
    write_listed_string(out, s, index);
}

/// Writes string value `s`, whose dictionary index is `index` if it is listed and values are
/// indexed: as a [`DICT_STRING_EXT`] when that is shorter, else as a MessagePack str.
pub(crate) fn write_listed_string(out: &mut Vec<u8>, s: &str, index: Option<u32>) {
    if let Some(i) = index.filter(|_| s.len() > 2) {
        if let Ok(i) = u8::try_from(i) {
            out.extend_from_slice(&[0xd4, DICT_STRING_EXT as u8, i]);
            return;
        }
        if s.len() > 3 {
            if let Ok(i) = u16::try_from(i) {
                let [hi, lo] = i.to_be_bytes();
                out.extend_from_slice(&[0xd5, DICT_STRING_EXT as u8, hi, lo]);
                return;
            }
        }
    }
    rmp::encode::write_str(out, s).expect(VEC_WRITE);
}

/// The token at `index` of `dict`, or the typed error for a missing dictionary or index.
fn token(dict: Option<&Dictionary>, index: u64) -> Result<&str, CodecError> {
    let d = dict.ok_or(CodecError::IndexWithoutDictionary(index))?;
    d.token(index).ok_or(CodecError::IndexOutOfRange {
        index,
        version: d.version(),
        len: d.tokens().len(),
    })
}

/// An ext as read by [`Reader::ext`].
pub(crate) enum Ext<'a, 'd> {
    /// A dictionary string: its checked index.
    Token(u32),
    /// Shape number, its keys (1-based indices) and a reader over its data (the values).
    Shape(u8, &'d [u32], Reader<'a>),
}

/// An error inside shape `s`'s data: running out of data is a malformed shape.
pub(crate) fn shape_error(e: CodecError, s: u8) -> CodecError {
    match e {
        CodecError::Truncated => CodecError::BadShape(s),
        e => e,
    }
}

/// A map key as read: a string of the input, or a dictionary index and its token.
pub(crate) enum KeyRef<'a> {
    /// A string key.
    Str(&'a str),
    /// A dictionary index and the token it names.
    Index(u32, &'a str),
}

/// MessagePack ext types decoded by a layer above the plain codec ([`learned`] shapes, §8.3):
/// [`Reader::value`] hands it the data of every ext type it [claims](ExtDecoder::claims), and
/// reads the rest (dictionary strings, listed shapes) itself.
pub(crate) trait ExtDecoder: Sized {
    /// Whether ext type `ty` is this decoder's.
    fn claims(&self, ty: u8) -> bool;

    /// The value of a claimed ext of type `ty` whose data is `data`, at nesting `depth`, within
    /// `left` (nested values go through [`Reader::value`] with `self`).
    ///
    /// Errors: any [`CodecError`]; never a value with other keys than the sender's.
    fn decode(
        &mut self,
        ty: u8,
        data: Reader<'_>,
        dict: Option<&Dictionary>,
        depth: usize,
        left: &mut Left,
    ) -> Result<Value, CodecError>;
}

/// The plain codec: claims no ext type.
pub(crate) struct NoExt;

impl ExtDecoder for NoExt {
    fn claims(&self, _: u8) -> bool {
        false
    }

    fn decode(
        &mut self,
        ty: u8,
        _: Reader<'_>,
        _: Option<&Dictionary>,
        _: usize,
        _: &mut Left,
    ) -> Result<Value, CodecError> {
        Err(CodecError::UnsupportedType(ty))
    }
}

/// A cursor over MessagePack input (shared with [`crate::core::tape`]).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(CodecError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn be<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn len(&mut self, marker: Marker) -> Result<usize, CodecError> {
        Ok(match marker {
            Marker::FixStr(n) | Marker::FixArray(n) | Marker::FixMap(n) => n as usize,
            Marker::Str8 => self.u8()? as usize,
            Marker::Str16 | Marker::Array16 | Marker::Map16 => {
                u16::from_be_bytes(self.be()?) as usize
            }
            Marker::Str32 | Marker::Array32 | Marker::Map32 => {
                u32::from_be_bytes(self.be()?) as usize
            }
            _ => unreachable!("len() is only called with str/array/map markers"),
        })
    }

    pub(crate) fn str(&mut self, marker: Marker) -> Result<&'a str, CodecError> {
        let n = self.len(marker)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| CodecError::InvalidUtf8)
    }

    /// Reads an integer marker's value: `Ok(Some(Ok(u)))` unsigned, `Ok(Some(Err(i)))` negative.
    pub(crate) fn int(&mut self, marker: Marker) -> Result<Option<Result<u64, i64>>, CodecError> {
        let signed = |i: i64| if i >= 0 { Ok(i as u64) } else { Err(i) };
        Ok(Some(match marker {
            Marker::FixPos(n) => Ok(u64::from(n)),
            Marker::FixNeg(n) => Err(i64::from(n)),
            Marker::U8 => Ok(u64::from(self.u8()?)),
            Marker::U16 => Ok(u64::from(u16::from_be_bytes(self.be()?))),
            Marker::U32 => Ok(u64::from(u32::from_be_bytes(self.be()?))),
            Marker::U64 => Ok(u64::from_be_bytes(self.be()?)),
            Marker::I8 => signed(i64::from(i8::from_be_bytes(self.be()?))),
            Marker::I16 => signed(i64::from(i16::from_be_bytes(self.be()?))),
            Marker::I32 => signed(i64::from(i32::from_be_bytes(self.be()?))),
            Marker::I64 => signed(i64::from_be_bytes(self.be()?)),
            _ => return Ok(None),
        }))
    }

    /// One value; an ext type that `ext` claims is read by it, the rest by [`Reader::ext`].
    pub(crate) fn value<X: ExtDecoder>(
        &mut self,
        ext: &mut X,
        dict: Option<&Dictionary>,
        depth: usize,
        left: &mut Left,
    ) -> Result<Value, CodecError> {
        left.take(depth)?;
        let byte = self.u8()?;
        let marker = Marker::from_u8(byte);
        if let Some(i) = self.int(marker)? {
            return Ok(match i {
                Ok(u) => Value::Number(u.into()),
                Err(n) => Value::Number(n.into()),
            });
        }
        Ok(match marker {
            Marker::Null => Value::Null,
            Marker::True => Value::Bool(true),
            Marker::False => Value::Bool(false),
            Marker::F32 => float(f64::from(f32::from_be_bytes(self.be()?)))?,
            Marker::F64 => float(f64::from_be_bytes(self.be()?))?,
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                Value::String(self.str(marker)?.to_owned())
            }
            Marker::FixExt1
            | Marker::FixExt2
            | Marker::FixExt4
            | Marker::FixExt8
            | Marker::FixExt16
            | Marker::Ext8
            | Marker::Ext16
            | Marker::Ext32 => {
                let at = self.pos;
                let len = self.ext_len(marker)?;
                let ty = self.u8()?;
                if ext.claims(ty) {
                    let data = Reader::new(self.take(len)?);
                    return ext.decode(ty, data, dict, depth, left);
                }
                self.pos = at;
                match self.ext(marker, byte, dict)? {
                    Ext::Token(i) => Value::String(token(dict, u64::from(i))?.to_owned()),
                    Ext::Shape(s, keys, mut data) => {
                        let mut map = Map::new();
                        for &k in keys {
                            let v = data
                                .value(ext, dict, depth + 1, left)
                                .map_err(|e| shape_error(e, s))?;
                            map.insert(token(dict, u64::from(k))?.to_owned(), v);
                        }
                        if data.remaining() != 0 {
                            return Err(CodecError::BadShape(s));
                        }
                        Value::Object(map)
                    }
                }
            }
            Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
                let n = self.len(marker)?;
                self.declared(n, left)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(ext, dict, depth + 1, left)?);
                }
                Value::Array(items)
            }
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
                let n = self.len(marker)?;
                self.declared(n, left)?;
                let mut map = Map::new();
                for _ in 0..n {
                    let key = self.key(dict)?;
                    let v = self.value(ext, dict, depth + 1, left)?;
                    if map.contains_key(&key) {
                        return Err(CodecError::DuplicateKey(key));
                    }
                    map.insert(key, v);
                }
                Value::Object(map)
            }
            _ => return Err(CodecError::UnsupportedType(byte)),
        })
    }

    /// Checks an array's or map's declared element count `n` before any element is decoded:
    /// every element takes at least one byte and one value of the budget, so a count above
    /// the bytes left is [`CodecError::Truncated`] and one above the values left (or the
    /// budget's `max_len`) is [`CodecError::TooComplex`] at once (issue 11: a 14,000-change push or 1 MiB of empty
    /// arrays is refused at its header, not after decoding a budget's worth of values). After
    /// it, `n` is safe to allocate for.
    fn declared(&self, n: usize, left: &Left) -> Result<(), CodecError> {
        if n > self.remaining() {
            return Err(CodecError::Truncated);
        }
        if n > left.nodes || n > left.max_len {
            return Err(CodecError::TooComplex);
        }
        Ok(())
    }

    /// The data length of an ext `marker` (read after the marker byte, before the type byte).
    fn ext_len(&mut self, marker: Marker) -> Result<usize, CodecError> {
        Ok(match marker {
            Marker::FixExt1 => 1,
            Marker::FixExt2 => 2,
            Marker::FixExt4 => 4,
            Marker::FixExt8 => 8,
            Marker::FixExt16 => 16,
            Marker::Ext8 => usize::from(self.u8()?),
            Marker::Ext16 => usize::from(u16::from_be_bytes(self.be()?)),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    /// Reads an ext (`marker` is one of the ext markers, `byte` its byte): a dictionary string
    /// (its index, checked against `dict`) or a shape (its number, keys and data).
    ///
    /// Errors: [`CodecError::UnsupportedType`] for any other ext type or a dictionary string
    /// that is not fixext 1/2; [`CodecError::Truncated`], index errors.
    pub(crate) fn ext<'d>(
        &mut self,
        marker: Marker,
        byte: u8,
        dict: Option<&'d Dictionary>,
    ) -> Result<Ext<'a, 'd>, CodecError> {
        let len = self.ext_len(marker)?;
        let ty = self.u8()?;
        if ty as i8 == DICT_STRING_EXT && matches!(marker, Marker::FixExt1 | Marker::FixExt2) {
            let index = match marker {
                Marker::FixExt1 => u32::from(self.u8()?),
                _ => u32::from(u16::from_be_bytes(self.be()?)),
            };
            token(dict, u64::from(index))?;
            return Ok(Ext::Token(index));
        }
        match dict.and_then(|d| d.shape(ty)) {
            Some(keys) => Ok(Ext::Shape(ty, keys, Reader::new(self.take(len)?))),
            None => Err(CodecError::UnsupportedType(byte)),
        }
    }

    /// A map key, borrowed (see [`KeyRef`]).
    pub(crate) fn key_ref<'d>(
        &mut self,
        dict: Option<&'d Dictionary>,
    ) -> Result<KeyRef<'d>, CodecError>
    where
        'a: 'd,
    {
        let marker = Marker::from_u8(self.u8()?);
        match marker {
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                Ok(KeyRef::Str(self.str(marker)?))
            }
            _ => match self.int(marker)? {
                Some(Ok(index)) => {
                    let t = token(dict, index)?;
                    // `token` found it, so the index fits the dictionary's u32 range.
                    Ok(KeyRef::Index(index as u32, t))
                }
                _ => Err(CodecError::NonStringKey),
            },
        }
    }

    fn key(&mut self, dict: Option<&Dictionary>) -> Result<String, CodecError> {
        let marker = Marker::from_u8(self.u8()?);
        match marker {
            Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
                Ok(self.str(marker)?.to_owned())
            }
            _ => match self.int(marker)? {
                Some(Ok(index)) => token(dict, index).map(str::to_owned),
                _ => Err(CodecError::NonStringKey),
            },
        }
    }
}

fn float(f: f64) -> Result<Value, CodecError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or(CodecError::NonFiniteFloat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn music_control() -> Value {
        json!({
            "type": "music-control",
            "action": "seek",
            "data": {"position": 45.2, "trackId": "abc123", "timestamp": 1735689600000u64,
                     "from": "user-1", "controllerId": "user-1", "unlisted": [1, -2, null, true]},
            "sequence": 156
        })
    }

    #[test]
    fn round_trip_with_and_without_dictionary() {
        let d = Dictionary::v1();
        let v = music_control();
        for dict in [None, Some(&d)] {
            let bytes = encode_msgpack(&v, dict);
            assert_eq!(decode_msgpack(&bytes, dict).unwrap(), v);
        }
        assert!(encode_msgpack(&v, Some(&d)).len() < encode_msgpack(&v, None).len());
    }

    #[test]
    fn listed_keys_are_one_byte_indices() {
        let d = Dictionary::v1();
        let bytes = encode_msgpack(&json!({"msg": 1}), Some(&d));
        assert_eq!(bytes, vec![0x81, 0x01, 0x01]);
    }

    #[test]
    fn listed_values_are_ext_indices_from_v2() {
        let (d1, d2) = (Dictionary::v1(), Dictionary::v2());
        let i = d2.index_of("music-control").unwrap() as u8;
        let ty = d2.index_of("type").unwrap() as u8;
        let v = json!({"type": "music-control"});
        assert_eq!(
            encode_msgpack(&v, Some(&d2)),
            vec![0x81, ty, 0xd4, DICT_STRING_EXT as u8, i]
        );
        assert_eq!(
            decode_msgpack(&encode_msgpack(&v, Some(&d2)), Some(&d2)).unwrap(),
            v
        );
        // v1 indexes keys only; short strings ("ts", 3 bytes as fixstr) stay strings.
        assert_eq!(encode_msgpack(&v, Some(&d1))[2], 0xad);
        assert_eq!(
            encode_msgpack(&json!("ts"), Some(&d2)),
            vec![0xa2, b't', b's']
        );
        // A value index needs the dictionary, in range; other ext types stay unsupported.
        let bytes = encode_msgpack(&json!("music-control"), Some(&d2));
        assert_eq!(
            decode_msgpack(&bytes, None),
            Err(CodecError::IndexWithoutDictionary(u64::from(i)))
        );
        assert!(matches!(
            decode_msgpack(&bytes, Some(&d1)),
            Err(CodecError::IndexOutOfRange { .. })
        ));
        assert_eq!(
            decode_msgpack(&[0xd4, 0x01, 0x01], Some(&d2)),
            Err(CodecError::UnsupportedType(0xd4))
        );
        assert_eq!(
            decode_msgpack(&[0xd5, DICT_STRING_EXT as u8, 0x00, 0x01], Some(&d2)).unwrap(),
            json!("msg")
        );
        // Keys are never ext.
        assert_eq!(
            decode_msgpack(&[0x81, 0xd4, DICT_STRING_EXT as u8, 1, 0xc0], Some(&d2)),
            Err(CodecError::NonStringKey)
        );
    }

    #[test]
    fn floats_narrow_to_f32_only_when_exact() {
        assert_eq!(
            encode_msgpack(&json!(42.5), None),
            vec![0xca, 0x42, 0x2a, 0, 0]
        );
        assert_eq!(encode_msgpack(&json!(45.2), None)[0], 0xcb);
        for f in [
            42.5,
            45.2,
            -0.0,
            1e-40,
            f64::MAX,
            f64::from(f32::MAX),
            123456.5,
        ] {
            let v = json!(f);
            assert_eq!(decode_msgpack(&encode_msgpack(&v, None), None).unwrap(), v);
        }
    }

    #[test]
    fn no_dictionary_is_plain_msgpack() {
        // rmp-serde (a stock MessagePack library) reads our dictionary-less output.
        let v = music_control();
        let bytes = encode_msgpack(&v, None);
        let back: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn index_keys_need_the_dictionary() {
        let d = Dictionary::v1();
        let bytes = encode_msgpack(&json!({"msg": 1}), Some(&d));
        assert_eq!(
            decode_msgpack(&bytes, None),
            Err(CodecError::IndexWithoutDictionary(1))
        );
        let small = Dictionary::new(2, vec!["x".into()]).unwrap();
        let bytes = encode_msgpack(&json!({"trackId": 1}), Some(&d));
        assert!(matches!(
            decode_msgpack(&bytes, Some(&small)),
            Err(CodecError::IndexOutOfRange { .. })
        ));
    }

    #[test]
    fn hostile_inputs_are_typed_errors() {
        assert_eq!(decode_msgpack(&[], None), Err(CodecError::Truncated));
        assert_eq!(
            decode_msgpack(&[0xc0, 0xc0], None),
            Err(CodecError::TrailingBytes(1))
        );
        assert_eq!(
            decode_msgpack(&[0xc4, 0x00], None),
            Err(CodecError::UnsupportedType(0xc4))
        );
        assert_eq!(
            decode_msgpack(&[0xc1], None),
            Err(CodecError::UnsupportedType(0xc1))
        );
        // array32 claiming 4 billion elements with no bytes behind it.
        assert_eq!(
            decode_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff], None),
            Err(CodecError::Truncated)
        );
        let deep = vec![0x91u8; MAX_DEPTH + 2];
        assert_eq!(decode_msgpack(&deep, None), Err(CodecError::TooDeep));
        assert_eq!(
            decode_msgpack(&[0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02], None),
            Err(CodecError::DuplicateKey("a".into()))
        );
        let nan = [0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0];
        assert_eq!(decode_msgpack(&nan, None), Err(CodecError::NonFiniteFloat));
        assert_eq!(
            decode_msgpack(&[0x81, 0xc3, 0xc0], None),
            Err(CodecError::NonStringKey)
        );
        assert_eq!(
            decode_msgpack(&[0xa1, 0xff], None),
            Err(CodecError::InvalidUtf8)
        );
    }

    /// An array32 of `n` copies of `item`.
    fn msgpack_array(n: usize, item: &[u8]) -> Vec<u8> {
        let mut out = vec![0xdd];
        out.extend_from_slice(&(n as u32).to_be_bytes());
        for _ in 0..n {
            out.extend_from_slice(item);
        }
        out
    }

    #[test]
    fn empty_array_bomb_is_too_complex() {
        // 1 MiB of empty arrays (issue 11: ~80 MB decoded without a budget).
        let bomb = msgpack_array(1 << 20, &[0x90]);
        assert_eq!(decode_msgpack(&bomb, None), Err(CodecError::TooComplex));
        // The budget counts the top-level value: MAX_NODES values fit, one more does not.
        let fits = msgpack_array(MAX_NODES - 1, &[0xc0]);
        assert_eq!(
            decode_msgpack(&fits, None)
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            MAX_NODES - 1
        );
        let over = msgpack_array(MAX_NODES, &[0xc0]);
        assert_eq!(decode_msgpack(&over, None), Err(CodecError::TooComplex));
        // Maps: keys are free, values count.
        let map: Map<String, Value> = (0..MAX_NODES)
            .map(|i| (format!("k{i}"), Value::Null))
            .collect();
        let bytes = encode_msgpack(&Value::Object(map), None);
        assert_eq!(decode_msgpack(&bytes, None), Err(CodecError::TooComplex));
        // A custom budget.
        let small = DecodeBudget {
            max_nodes: 3,
            max_depth: 1,
            ..DecodeBudget::DEFAULT
        };
        assert!(decode_msgpack_with(&[0x92, 0x90, 0x90], None, small).is_ok());
        assert_eq!(
            decode_msgpack_with(&[0x93, 0x90, 0x90, 0x90], None, small),
            Err(CodecError::TooComplex)
        );
        assert_eq!(
            decode_msgpack_with(&[0x91, 0x91, 0x90], None, small),
            Err(CodecError::TooDeep)
        );
    }

    /// issue 11: an array or map whose declared length is over the values left or the
    /// budget's `max_len` is refused at its header (JSON: at the first element over it).
    #[test]
    fn declared_lengths_are_checked_at_the_header() {
        let small = DecodeBudget {
            max_len: 2,
            ..DecodeBudget::DEFAULT
        };
        assert!(decode_msgpack_with(&[0x92, 0x90, 0x90], None, small).is_ok());
        // Three elements declared: refused although their bytes are missing.
        assert_eq!(
            decode_msgpack_with(&[0x93, 0x90, 0x90, 0x90], None, small),
            Err(CodecError::TooComplex)
        );
        assert_eq!(
            decode_msgpack_with(
                &[0x91, 0x83, 0x01, 0xc0, 0x02, 0xc0, 0x03, 0xc0],
                None,
                small
            ),
            Err(CodecError::TooComplex)
        );
        assert_eq!(decode_json_with(b"[1,2]", small).unwrap(), json!([1, 2]));
        assert_eq!(
            decode_json_with(b"[1,2,3]", small),
            Err(CodecError::TooComplex)
        );
        assert_eq!(
            decode_json_with(br#"{"a":1,"b":2,"c":3}"#, small),
            Err(CodecError::TooComplex)
        );
        // Declared past the bytes left: truncated, whatever the budget.
        let mut header = vec![0xdc];
        header.extend_from_slice(&1000u16.to_be_bytes());
        assert_eq!(decode_msgpack(&header, None), Err(CodecError::Truncated));
        // 14,000 elements declared with the bytes there: refused before decoding one.
        let long = msgpack_array(14_000, &[0xc0]);
        let sync = DecodeBudget {
            max_len: 2048,
            ..DecodeBudget::DEFAULT
        };
        assert_eq!(
            decode_msgpack_with(&long, None, sync),
            Err(CodecError::TooComplex)
        );
    }

    #[test]
    fn a_long_string_is_one_value() {
        // A 4 MiB transfer goes as 1 MiB chunks: each one string value.
        let chunk = "x".repeat(1 << 20);
        let v = json!({"chunk": chunk, "index": 3});
        assert_eq!(decode_msgpack(&encode_msgpack(&v, None), None).unwrap(), v);
        assert_eq!(decode_json(&encode_json(&v)).unwrap(), v);
    }

    #[test]
    fn json_bombs_are_too_complex_or_too_deep() {
        let list = |n: usize, item: &str| {
            let mut s = String::from("[");
            s.push_str(&vec![item; n].join(","));
            s.push(']');
            s
        };
        let bomb = list(300_000, "[]");
        assert_eq!(decode_json(bomb.as_bytes()), Err(CodecError::TooComplex));
        assert_eq!(
            decode_json(list(MAX_NODES - 1, "{}").as_bytes())
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            MAX_NODES - 1
        );
        assert_eq!(
            decode_json(list(MAX_NODES, "0").as_bytes()),
            Err(CodecError::TooComplex)
        );
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert_eq!(decode_json(deep.as_bytes()), Err(CodecError::TooDeep));
        let small = DecodeBudget {
            max_nodes: 10,
            max_depth: 2,
            ..DecodeBudget::DEFAULT
        };
        assert_eq!(
            decode_json_with(b"[[[1]]]", small),
            Err(CodecError::TooDeep)
        );
        assert_eq!(decode_json_with(b"[[1]]", small).unwrap(), json!([[1]]));
        // Same values as serde_json: repeated keys (last wins), numbers, trailing bytes.
        for text in [
            r#"{"a":1,"a":[2.5,-3,18446744073709551615,null,true,"s"]}"#,
            "{} x",
            "[1,]",
        ] {
            let ours = decode_json(text.as_bytes());
            let theirs = serde_json::from_str::<Value>(text);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(CodecError::Json(_)), Err(_)) => {}
                (a, b) => panic!("{text}: {a:?} vs {b:?}"),
            }
        }
    }

    #[test]
    fn json_round_trip() {
        let v = music_control();
        assert_eq!(decode_json(&encode_json(&v)).unwrap(), v);
        assert!(matches!(decode_json(b"{"), Err(CodecError::Json(_))));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A dictionary of 300 tokens (indices past 255 take the fixext 2 form).
    #[test]
    fn listed_shapes_are_ext_type_then_values_in_order() {
        let d3 = Dictionary::v3();
        let pong = json!({"type": "pong", "clientTime": 123456.5, "serverTime": 1735689600000u64});
        let bytes = encode_msgpack(&pong, Some(&d3));
        let pong_index = d3.index_of("pong").unwrap() as u8;
        // ext 8, 17 data bytes, type 7 (the 8th shape): "pong" as a dictionary string, f32, u64.
        let mut expect = vec![0xc7, 17, 7, 0xd4, 0x64, pong_index, 0xca];
        expect.extend_from_slice(&123456.5f32.to_be_bytes());
        expect.push(0xcf);
        expect.extend_from_slice(&1735689600000u64.to_be_bytes());
        assert_eq!(bytes, expect);
        let back = decode_msgpack(&bytes, Some(&d3)).unwrap();
        assert_eq!(back, pong);
        let keys: Vec<&String> = back.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["type", "clientTime", "serverTime"],
            "listed key order"
        );
        // Data of exactly 1, 2, 4, 8 or 16 bytes is a fixext.
        let small = json!({"from": 1, "isTyping": true, "conversationId": 200});
        assert_eq!(encode_msgpack(&small, Some(&d3))[..2], [0xd6, 6]);
        assert_eq!(
            decode_msgpack(&encode_msgpack(&small, Some(&d3)), Some(&d3)).unwrap(),
            small
        );
        // v2 writes no shapes; other order, a missing or an extra key stay maps.
        assert_eq!(encode_msgpack(&pong, Some(&Dictionary::v2()))[0], 0x83);
        for other in [
            json!({"clientTime": 1, "type": "pong", "serverTime": 2}),
            json!({"type": "pong", "clientTime": 1}),
            json!({"type": "pong", "clientTime": 1, "serverTime": 2, "extra": 3}),
            json!({"type": "pong", "clientTime": 1, "serverTime": 2, "rtt": 3}),
        ] {
            let bytes = encode_msgpack(&other, Some(&d3));
            assert_eq!(bytes[0] & 0xf0, 0x80, "{other} stays a map");
            let back = decode_msgpack(&bytes, Some(&d3)).unwrap();
            assert_eq!(back, other);
            assert!(back
                .as_object()
                .unwrap()
                .keys()
                .eq(other.as_object().unwrap().keys()));
        }
        // Nested shapes (music-control, its data, the track) each shrink.
        let mc = json!({"type": "music-control", "action": "seek", "data": {"position": 45.2,
            "trackId": "abc123", "track": {"id": "abc123", "title": "T", "artist": "A",
            "duration": 215.4, "url": "/m.ogg"}, "timestamp": 1u64, "from": "u", "controllerId": "u"},
            "sequence": 156, "signature": "9f86"});
        let (b2, b3) = (
            encode_msgpack(&mc, Some(&Dictionary::v2())),
            encode_msgpack(&mc, Some(&d3)),
        );
        assert_eq!(b3[..3], [0xc7, b3.len() as u8 - 3, 0]);
        assert_eq!(b2.len() - b3.len(), (1 + 5 - 3) + (1 + 6 - 3) + (1 + 5 - 3));
        assert_eq!(decode_msgpack(&b3, Some(&d3)).unwrap(), mc);
    }

    #[test]
    fn malformed_shapes_are_typed_errors() {
        let d3 = Dictionary::v3();
        // Shape 7 has 3 keys: data with 2 values, with 4 values, a truncated value.
        for (bytes, err) in [
            (&[0xd5, 7, 1, 2][..], CodecError::BadShape(7)),
            (&[0xd6, 7, 1, 2, 3, 4], CodecError::BadShape(7)),
            (&[0xc7, 3, 7, 1, 2, 0xcd], CodecError::BadShape(7)),
            (&[0xc7, 4, 7, 1, 2, 3], CodecError::Truncated),
            // Shape 8 holding shape 7 that lacks a value.
            (
                &[0xc7, 10, 8, 1, 2, 3, 4, 5, 6, 0xd5, 7, 1, 2][..],
                CodecError::BadShape(7),
            ),
            // Unknown shape, ext types JSON cannot hold, the string ext at another size.
            (&[0xd4, 95, 1], CodecError::UnsupportedType(0xd4)),
            (&[0xd4, 0xff, 1], CodecError::UnsupportedType(0xd4)),
            (&[0xd6, 0x64, 0, 0, 0, 1], CodecError::UnsupportedType(0xd6)),
        ] {
            assert_eq!(decode_msgpack(bytes, Some(&d3)), Err(err), "{bytes:02x?}");
        }
        // Shapes need a dictionary that lists them.
        let ok = [0xd6, 7, 1, 2, 3, 0xc0];
        assert!(decode_msgpack(&ok[..5], Some(&d3)).is_err());
        assert_eq!(
            decode_msgpack(&ok, Some(&Dictionary::v2())),
            Err(CodecError::UnsupportedType(0xd6))
        );
        assert_eq!(
            decode_msgpack(&ok, None),
            Err(CodecError::UnsupportedType(0xd6))
        );
        // Values inside a shape obey every rule (here a duplicate key in a nested map).
        let bad = [0xd6, 7, 1, 2, 0x82, 0xa1, b'a'];
        assert!(decode_msgpack(&bad, Some(&d3)).is_err());
    }

    fn big_dictionary() -> Dictionary {
        let mut tokens = Dictionary::v2().tokens().to_vec();
        let extra = (0..300 - tokens.len()).map(|i| format!("token-{i}"));
        tokens.extend(extra);
        Dictionary::new(9, tokens).unwrap()
    }

    /// Any JSON-compatible value, with keys and string values drawn partly from the
    /// dictionaries, and floats partly exact in f32.
    fn json_value() -> impl Strategy<Value = Value> {
        let dict_keys: Vec<String> = big_dictionary().tokens().to_vec();
        let key = prop_oneof![proptest::sample::select(dict_keys.clone()), ".{0,12}"];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(|n| Value::Number(n.into())),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(Value::Number),
            any::<f32>()
                .prop_filter_map("finite", |f| Number::from_f64(f64::from(f)))
                .prop_map(Value::Number),
            ".{0,40}".prop_map(Value::String),
            proptest::sample::select(dict_keys).prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 256, 10, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner.clone()), 0..10)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                shaped(inner),
            ]
        })
    }

    /// Maps built on dictionary v3's shapes: exact, reordered, missing a key, with an extra key.
    pub(crate) fn shaped(inner: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
        let d = Dictionary::v3();
        let shapes: Vec<Vec<String>> = d
            .shapes()
            .iter()
            .map(|keys| {
                keys.iter()
                    .map(|&k| d.token(u64::from(k)).unwrap().to_owned())
                    .collect()
            })
            .collect();
        (
            proptest::sample::select(shapes),
            prop::collection::vec(inner, 17),
            0u8..6,
        )
            .prop_map(|(keys, values, mode)| {
                let mut kv: Vec<(String, Value)> = keys.into_iter().zip(values).collect();
                match mode {
                    3 => {
                        let last = kv.len() - 1;
                        kv.swap(0, last);
                    }
                    4 => drop(kv.pop()),
                    5 => kv.push(("extra".into(), Value::Null)),
                    _ => {}
                }
                Value::Object(kv.into_iter().collect())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn msgpack_round_trip_is_exact(v in json_value()) {
            let (d1, d2, big) = (Dictionary::v1(), Dictionary::v2(), big_dictionary());
            let d3 = Dictionary::v3();
            for d in [&d1, &d2, &d3, &big] {
                let back = decode_msgpack(&encode_msgpack(&v, Some(d)), Some(d)).unwrap();
                prop_assert_eq!(&back, &v);
                prop_assert_eq!(format!("{back}"), format!("{v}"), "key order kept");
            }
            // A v2 payload reads the same with v3.
            prop_assert_eq!(&decode_msgpack(&encode_msgpack(&v, Some(&d2)), Some(&d3)).unwrap(), &v);
            // Append-only: a v1 payload reads the same with v2.
            prop_assert_eq!(&decode_msgpack(&encode_msgpack(&v, Some(&d1)), Some(&d2)).unwrap(), &v);
            // Value indices only ever make the payload shorter.
            prop_assert!(encode_msgpack(&v, Some(&d2)).len() <= encode_msgpack(&v, Some(&d1)).len());
            prop_assert_eq!(&decode_msgpack(&encode_msgpack(&v, None), None).unwrap(), &v);
            prop_assert_eq!(&decode_json(&encode_json(&v)).unwrap(), &v);
        }

        #[test]
        fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let d = Dictionary::v2();
            let _ = decode_msgpack(&bytes, Some(&d));
            let _ = decode_msgpack(&bytes, Some(&Dictionary::v3()));
            let _ = decode_msgpack(&bytes, None);
            let _ = decode_json(&bytes);
        }
    }
}
