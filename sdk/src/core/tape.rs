//! The value tape: a flat form of a JSON-compatible value that crosses the JS⇄wasm boundary
//! in three bulk copies (words, floats, one UTF-8 text) instead of one call per key and value.
//! PROTOCOL.md §8.1. Sans-IO: the wasm binding (`wasm::codec`, `wasm::convert`) and its small
//! JS reader/writer (`sdk/js/tape.js`) sit on either side.
//!
//! A tape is a pre-order walk of the value. Each node is one `u32` word `x << 4 | tag`
//! (`x < 2^28`):
//!
//! | tag | node | `x` | also uses |
//! | --- | --- | --- | --- |
//! | 0 | `null` | 0 | |
//! | 1 | `false` | 0 | |
//! | 2 | `true` | 0 | |
//! | 3 | integer | the value, `0..2^28` | |
//! | 4 | number | 0 | the next `f64` of `nums` |
//! | 5 | string | its length in UTF-16 code units | the next `x` units of `text` |
//! | 6 | dictionary token | its 1-based index | |
//! | 7 | array | element count, then the elements | |
//! | 8 | map | entry count, then key (tag 5 or 6) and value per entry | |
//!
//! Lengths are UTF-16 code units because that is what JS strings count, so the JS side
//! slices one decoded string without scanning it; `text` is valid UTF-8 (a JS lone
//! surrogate arrives as U+FFFD, one unit, as `TextEncoder` writes it).
//!
//! [`encode_tape`] writes dictionary MessagePack from a tape (exactly the bytes
//! [`crate::core::codec::encode_msgpack`] writes for the same value); [`decode_to_tape`]
//! reads dictionary MessagePack into a tape with every check of
//! [`crate::core::codec::decode_msgpack`]; [`tape_to_value`] and [`value_to_tape`] convert
//! to and from [`serde_json::Value`] for the JSON lanes and the client's payload path.

use crate::core::codec::{
    shape_error, wrap_shape, write_float, write_listed_string, write_string, CodecError, Ext,
    KeyRef, Reader, MAX_DEPTH,
};
use crate::core::dictionary::{Dictionary, MAX_SHAPE_KEYS};
use foldhash::fast::RandomState;
use rmp::Marker;
use serde_json::{Map, Number, Value};
use std::collections::HashSet;

/// Tag of a `null` node.
pub const NULL: u32 = 0;
/// Tag of `false`.
pub const FALSE: u32 = 1;
/// Tag of `true`.
pub const TRUE: u32 = 2;
/// Tag of an integer `0..2^28` held in the word.
pub const UINT: u32 = 3;
/// Tag of a number held in `nums`.
pub const NUM: u32 = 4;
/// Tag of a string held in `text`.
pub const STR: u32 = 5;
/// Tag of a dictionary token.
pub const TOKEN: u32 = 6;
/// Tag of an array.
pub const ARRAY: u32 = 7;
/// Tag of a map.
pub const MAP: u32 = 8;
/// Largest `x` a word holds, exclusive.
pub const X_LIMIT: u64 = 1 << 28;

/// Largest integer an f64 holds exactly (2^53 - 1).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// An owned tape (see the module docs).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tape {
    /// Node words.
    pub ops: Vec<u32>,
    /// Numbers of `NUM` nodes, in order.
    pub nums: Vec<f64>,
    /// Texts of `STR` nodes, concatenated in order.
    pub text: String,
}

impl Tape {
    /// Empties the tape, keeping its allocations.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.nums.clear();
        self.text.clear();
    }

    fn op(&mut self, tag: u32, x: usize) -> Result<(), CodecError> {
        if x as u64 >= X_LIMIT {
            return Err(CodecError::TooLarge);
        }
        self.ops.push((x as u32) << 4 | tag);
        Ok(())
    }

    fn str(&mut self, s: &str) -> Result<(), CodecError> {
        self.op(STR, utf16_len(s))?;
        self.text.push_str(s);
        Ok(())
    }

    fn number(&mut self, n: f64) {
        // -0 stays a number (JS tells it from 0).
        if n.is_sign_positive() && n < X_LIMIT as f64 && n.fract() == 0.0 {
            self.ops.push((n as u32) << 4 | UINT);
        } else {
            self.ops.push(NUM);
            self.nums.push(n);
        }
    }
}

/// Why a tape could not be read (a bug of the JS writer, never the app's value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TapeError {
    /// Words, numbers or text ended early, or are left over.
    #[error("tape is truncated or has {0} trailing words")]
    Length(usize),
    /// A word with an unknown tag, or a map key that is not a string or token.
    #[error("tape word 0x{0:08x} is not valid here")]
    BadWord(u32),
    /// A token index the dictionary does not have (or no dictionary).
    #[error("tape names dictionary token {0}, which is not listed")]
    BadToken(u32),
    /// A number that is NaN or infinite.
    #[error("tape holds a non-finite number")]
    NonFinite,
    /// A string length that splits a character or runs past the text.
    #[error("tape string lengths do not match its text")]
    BadText,
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("tape nests deeper than {MAX_DEPTH}")]
    TooDeep,
}

/// A borrowed tape, as it arrives from JS.
#[derive(Debug, Clone, Copy)]
pub struct TapeRef<'a> {
    /// Node words.
    pub ops: &'a [u32],
    /// Numbers of `NUM` nodes.
    pub nums: &'a [f64],
    /// Texts of `STR` nodes, concatenated.
    pub text: &'a str,
}

/// A cursor over a [`TapeRef`].
struct TapeReader<'a> {
    tape: TapeRef<'a>,
    op: usize,
    num: usize,
    text: usize,
    ascii: bool,
}

/// One node as read from the tape.
enum Node<'a> {
    Null,
    Bool(bool),
    Int(u64),
    Num(f64),
    Str(&'a str),
    Token(u32),
    Array(usize),
    Map(usize),
}

impl<'a> TapeReader<'a> {
    fn new(tape: TapeRef<'a>) -> TapeReader<'a> {
        TapeReader {
            tape,
            op: 0,
            num: 0,
            text: 0,
            ascii: tape.text.is_ascii(),
        }
    }

    fn node(&mut self) -> Result<Node<'a>, TapeError> {
        let w = *self.tape.ops.get(self.op).ok_or(TapeError::Length(0))?;
        self.op += 1;
        let x = w >> 4;
        Ok(match w & 0xf {
            NULL => Node::Null,
            FALSE => Node::Bool(false),
            TRUE => Node::Bool(true),
            UINT => Node::Int(u64::from(x)),
            NUM => {
                let n = *self.tape.nums.get(self.num).ok_or(TapeError::Length(0))?;
                self.num += 1;
                if !n.is_finite() {
                    return Err(TapeError::NonFinite);
                }
                Node::Num(n)
            }
            STR => Node::Str(self.str(x as usize)?),
            TOKEN => Node::Token(x),
            ARRAY => Node::Array(x as usize),
            MAP => Node::Map(x as usize),
            _ => return Err(TapeError::BadWord(w)),
        })
    }

    /// The next string of `units` UTF-16 code units.
    fn str(&mut self, units: usize) -> Result<&'a str, TapeError> {
        let rest = self.tape.text.get(self.text..).ok_or(TapeError::BadText)?;
        let bytes = if self.ascii {
            units
        } else {
            let mut left = units;
            let mut end = 0;
            for c in rest.chars() {
                if left == 0 {
                    break;
                }
                left = left.checked_sub(c.len_utf16()).ok_or(TapeError::BadText)?;
                end += c.len_utf8();
            }
            if left != 0 {
                return Err(TapeError::BadText);
            }
            end
        };
        let s = rest.get(..bytes).ok_or(TapeError::BadText)?;
        self.text += bytes;
        Ok(s)
    }

    fn finish(&self) -> Result<(), TapeError> {
        let left = (self.tape.ops.len() - self.op)
            + (self.tape.nums.len() - self.num)
            + (self.tape.text.len() - self.text);
        match left {
            0 => Ok(()),
            n => Err(TapeError::Length(n)),
        }
    }
}

fn token(dict: Option<&Dictionary>, index: u32) -> Result<&str, TapeError> {
    dict.and_then(|d| d.token(u64::from(index)))
        .ok_or(TapeError::BadToken(index))
}

/// Writes the dictionary MessagePack of the value on `tape` (the bytes
/// [`crate::core::codec::encode_msgpack`] writes for it; integral numbers up to 2^53 in
/// magnitude are integers, as the JS walk decides).
///
/// Errors: [`TapeError`] for a malformed tape.
pub fn encode_tape(tape: TapeRef<'_>, dict: Option<&Dictionary>) -> Result<Vec<u8>, TapeError> {
    let mut out = Vec::with_capacity(tape.ops.len() * 2 + tape.text.len() + 16);
    let mut r = TapeReader::new(tape);
    write_node(&mut r, &mut out, dict, 0)?;
    r.finish()?;
    Ok(out)
}

const VEC_WRITE: &str = "writing to a Vec<u8> cannot fail";

fn write_node(
    r: &mut TapeReader<'_>,
    out: &mut Vec<u8>,
    dict: Option<&Dictionary>,
    depth: usize,
) -> Result<(), TapeError> {
    use rmp::encode as e;
    if depth > MAX_DEPTH {
        return Err(TapeError::TooDeep);
    }
    match r.node()? {
        Node::Null => out.push(0xc0),
        Node::Bool(b) => out.push(if b { 0xc3 } else { 0xc2 }),
        Node::Int(u) => {
            e::write_uint(out, u).expect(VEC_WRITE);
        }
        Node::Num(n) => write_number(out, n),
        Node::Str(s) => write_string(out, s, dict),
        Node::Token(i) => {
            let t = token(dict, i)?;
            let indexed = dict.is_some_and(Dictionary::indexes_values);
            write_listed_string(out, t, indexed.then_some(i));
        }
        Node::Array(n) => {
            e::write_array_len(out, n as u32).expect(VEC_WRITE);
            for _ in 0..n {
                write_node(r, out, dict, depth + 1)?;
            }
        }
        Node::Map(n) => {
            let start = out.len();
            e::write_map_len(out, n as u32).expect(VEC_WRITE);
            // With shapes (PROTOCOL.md §8.2), remember each key's index and where its value
            // went; if the keys are a listed shape, keep only the values, wrapped in its ext.
            let mut listed =
                (1..=MAX_SHAPE_KEYS).contains(&n) && dict.is_some_and(|d| !d.shapes().is_empty());
            let mut keys = [0u32; MAX_SHAPE_KEYS];
            let mut spans = [(0usize, 0usize); MAX_SHAPE_KEYS];
            for j in 0..n {
                let index = match r.node()? {
                    Node::Str(k) => match dict.and_then(|d| d.index_of(k)) {
                        Some(i) => {
                            e::write_uint(out, u64::from(i)).expect(VEC_WRITE);
                            Some(i)
                        }
                        None => {
                            e::write_str(out, k).expect(VEC_WRITE);
                            None
                        }
                    },
                    Node::Token(i) => {
                        token(dict, i)?;
                        e::write_uint(out, u64::from(i)).expect(VEC_WRITE);
                        Some(i)
                    }
                    _ => return Err(TapeError::BadWord(r.tape.ops[r.op - 1])),
                };
                let from = out.len();
                write_node(r, out, dict, depth + 1)?;
                if listed {
                    match index {
                        Some(i) => {
                            keys[j] = i;
                            spans[j] = (from, out.len());
                        }
                        None => listed = false,
                    }
                }
            }
            if let Some(s) = dict.filter(|_| listed).and_then(|d| d.shape_of(&keys[..n])) {
                let mut to = start;
                for &(a, b) in &spans[..n] {
                    out.copy_within(a..b, to);
                    to += b - a;
                }
                out.truncate(to);
                wrap_shape(out, start, s);
            }
        }
    }
    Ok(())
}

/// A JS number as MessagePack: an integer when it is one exactly (|n| ≤ 2^53 - 1), else a
/// float (32-bit when exact).
fn write_number(out: &mut Vec<u8>, n: f64) {
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        if n >= 0.0 {
            rmp::encode::write_uint(out, n as u64).expect(VEC_WRITE);
        } else {
            rmp::encode::write_sint(out, n as i64).expect(VEC_WRITE);
        }
    } else {
        write_float(out, n);
    }
}

/// The value on `tape` as a [`Value`] (numbers as [`write_number`] decides; tokens resolved).
///
/// Errors: [`TapeError`] for a malformed tape.
pub fn tape_to_value(tape: TapeRef<'_>, dict: Option<&Dictionary>) -> Result<Value, TapeError> {
    let mut r = TapeReader::new(tape);
    let v = to_value(&mut r, dict, 0)?;
    r.finish()?;
    Ok(v)
}

fn to_value(
    r: &mut TapeReader<'_>,
    dict: Option<&Dictionary>,
    depth: usize,
) -> Result<Value, TapeError> {
    if depth > MAX_DEPTH {
        return Err(TapeError::TooDeep);
    }
    Ok(match r.node()? {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(u) => Value::Number(u.into()),
        Node::Num(n) => {
            if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
                Value::Number((n as i64).into())
            } else {
                Value::Number(Number::from_f64(n).ok_or(TapeError::NonFinite)?)
            }
        }
        Node::Str(s) => Value::String(s.to_owned()),
        Node::Token(i) => Value::String(token(dict, i)?.to_owned()),
        Node::Array(n) => {
            let mut items = Vec::with_capacity(n.min(r.tape.ops.len()));
            for _ in 0..n {
                items.push(to_value(r, dict, depth + 1)?);
            }
            Value::Array(items)
        }
        Node::Map(n) => {
            let mut map = Map::new();
            for _ in 0..n {
                let k = match r.node()? {
                    Node::Str(k) => k.to_owned(),
                    Node::Token(i) => token(dict, i)?.to_owned(),
                    _ => return Err(TapeError::BadWord(r.tape.ops[r.op - 1])),
                };
                // A JS object cannot hold a key twice; later wins, as in JS.
                let v = to_value(r, dict, depth + 1)?;
                map.insert(k, v);
            }
            Value::Object(map)
        }
    })
}

/// Writes `value` onto `tape` (cleared first), strings as text (the JS reader needs no
/// dictionary for it). Integers beyond 2^53 become the nearest f64, as `JSON.parse` gives.
///
/// Errors: [`CodecError::TooLarge`] for a string or container of 2^28 or more units.
pub fn value_to_tape(value: &Value, tape: &mut Tape) -> Result<(), CodecError> {
    tape.clear();
    push_value(value, tape)
}

fn push_value(value: &Value, tape: &mut Tape) -> Result<(), CodecError> {
    match value {
        Value::Null => tape.ops.push(NULL),
        Value::Bool(b) => tape.ops.push(if *b { TRUE } else { FALSE }),
        Value::Number(n) => tape.number(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => tape.str(s)?,
        Value::Array(items) => {
            tape.op(ARRAY, items.len())?;
            for item in items {
                push_value(item, tape)?;
            }
        }
        Value::Object(map) => {
            tape.op(MAP, map.len())?;
            for (k, v) in map {
                tape.str(k)?;
                push_value(v, tape)?;
            }
        }
    }
    Ok(())
}

/// Reads one dictionary MessagePack value into `tape` (cleared first), with every check of
/// [`crate::core::codec::decode_msgpack`]. Dictionary strings (keys and values) become
/// token nodes, which the JS reader resolves from its copy of the tokens.
///
/// Errors: [`CodecError`]; never panics on any input.
pub fn decode_to_tape(
    bytes: &[u8],
    dict: Option<&Dictionary>,
    tape: &mut Tape,
) -> Result<(), CodecError> {
    tape.clear();
    let mut r = Reader::new(bytes);
    let mut seen = Vec::new();
    read_node(&mut r, dict, tape, 0, &mut seen)?;
    match r.remaining() {
        0 => Ok(()),
        n => Err(CodecError::TrailingBytes(n)),
    }
}

fn read_node<'a>(
    r: &mut Reader<'a>,
    dict: Option<&'a Dictionary>,
    tape: &mut Tape,
    depth: usize,
    seen: &mut Vec<&'a str>,
) -> Result<(), CodecError> {
    if depth > MAX_DEPTH {
        return Err(CodecError::TooDeep);
    }
    let byte = r.u8()?;
    let marker = Marker::from_u8(byte);
    if let Some(i) = r.int(marker)? {
        match i {
            Ok(u) if u < X_LIMIT => tape.ops.push((u as u32) << 4 | UINT),
            Ok(u) => tape.number(u as f64),
            Err(n) => tape.number(n as f64),
        }
        return Ok(());
    }
    match marker {
        Marker::Null => tape.ops.push(NULL),
        Marker::True => tape.ops.push(TRUE),
        Marker::False => tape.ops.push(FALSE),
        Marker::F32 => tape.number(finite(f64::from(f32::from_be_bytes(r.be()?)))?),
        Marker::F64 => tape.number(finite(f64::from_be_bytes(r.be()?))?),
        Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32 => {
            let s = r.str(marker)?;
            tape.str(s)?;
        }
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16
        | Marker::Ext8
        | Marker::Ext16
        | Marker::Ext32 => match r.ext(marker, byte, dict)? {
            Ext::Token(index) => tape.op(TOKEN, index as usize)?,
            Ext::Shape(s, keys, mut data) => {
                // A shape is a map with its listed keys (distinct by construction).
                tape.op(MAP, keys.len())?;
                for &k in keys {
                    tape.op(TOKEN, k as usize)?;
                    read_node(&mut data, dict, tape, depth + 1, seen)
                        .map_err(|e| shape_error(e, s))?;
                }
                if data.remaining() != 0 {
                    return Err(CodecError::BadShape(s));
                }
            }
        },
        Marker::FixArray(_) | Marker::Array16 | Marker::Array32 => {
            let n = r.len(marker)?;
            tape.op(ARRAY, n)?;
            for _ in 0..n {
                read_node(r, dict, tape, depth + 1, seen)?;
            }
        }
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
            let n = r.len(marker)?;
            tape.op(MAP, n)?;
            // Keys of this map live in `seen[base..]` while its entries are read; nested maps
            // push theirs above and truncate back.
            let base = seen.len();
            let mut set: Option<HashSet<&'a str, RandomState>> = None;
            for _ in 0..n {
                let key = match r.key_ref(dict)? {
                    KeyRef::Str(k) => {
                        tape.str(k)?;
                        k
                    }
                    KeyRef::Index(i, k) => {
                        tape.op(TOKEN, i as usize)?;
                        k
                    }
                };
                let dup = match &mut set {
                    Some(set) => !set.insert(key),
                    None if seen.len() - base >= 16 => {
                        let mut s: HashSet<&'a str, RandomState> =
                            seen[base..].iter().copied().collect();
                        let dup = !s.insert(key);
                        set = Some(s);
                        dup
                    }
                    None => seen[base..].contains(&key),
                };
                if dup {
                    return Err(CodecError::DuplicateKey(key.to_owned()));
                }
                if set.is_none() {
                    seen.push(key);
                }
                read_node(r, dict, tape, depth + 1, seen)?;
            }
            seen.truncate(base);
        }
        _ => return Err(CodecError::UnsupportedType(byte)),
    }
    Ok(())
}

fn finite(f: f64) -> Result<f64, CodecError> {
    if f.is_finite() {
        Ok(f)
    } else {
        Err(CodecError::NonFiniteFloat)
    }
}

/// Length of `s` in UTF-16 code units.
pub fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().map(char::len_utf16).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::codec::encode_msgpack;
    use serde_json::json;

    fn as_ref(t: &Tape) -> TapeRef<'_> {
        TapeRef {
            ops: &t.ops,
            nums: &t.nums,
            text: &t.text,
        }
    }

    #[test]
    fn words_match_the_table() {
        let mut t = Tape::default();
        value_to_tape(&json!({"a": [null, true, 7, -1.5, "é😀"]}), &mut t).unwrap();
        assert_eq!(
            t.ops,
            vec![
                1 << 4 | MAP,
                1 << 4 | STR,
                5 << 4 | ARRAY,
                NULL,
                TRUE,
                7 << 4 | UINT,
                NUM,
                3 << 4 | STR
            ]
        );
        assert_eq!(t.nums, vec![-1.5]);
        assert_eq!(t.text, "aé😀");
        assert_eq!(
            tape_to_value(as_ref(&t), None).unwrap(),
            json!({"a": [null, true, 7, -1.5, "é😀"]})
        );
    }

    #[test]
    fn decode_resolves_tokens_and_checks_like_decode_msgpack() {
        let d = Dictionary::v2();
        let v = json!({"type": "music-control", "data": {"x": "ünï", "position": 45.2}});
        let mut t = Tape::default();
        decode_to_tape(&encode_msgpack(&v, Some(&d)), Some(&d), &mut t).unwrap();
        let ty = d.index_of("type").unwrap();
        assert_eq!(t.ops[1], ty << 4 | TOKEN);
        assert_eq!(tape_to_value(as_ref(&t), Some(&d)).unwrap(), v);
        assert_eq!(
            encode_tape(as_ref(&t), Some(&d)).unwrap(),
            encode_msgpack(&v, Some(&d))
        );
        // Duplicate keys, also one as an index and one as a string, and past the small-map scan.
        let dup = [0x82, 0x01, 0xc0, 0xa3, b'm', b's', b'g', 0xc0];
        assert_eq!(
            decode_to_tape(&dup, Some(&d), &mut t),
            Err(CodecError::DuplicateKey("msg".into()))
        );
        let mut big = serde_json::Map::new();
        for i in 0..40 {
            big.insert(format!("k{i}"), json!(i));
        }
        let mut bytes = encode_msgpack(&Value::Object(big), None);
        bytes.extend_from_slice(&[0xa3, b'k', b'3', b'9', 0xc0]);
        bytes[1..3].copy_from_slice(&41u16.to_be_bytes());
        assert_eq!(
            decode_to_tape(&bytes, None, &mut t),
            Err(CodecError::DuplicateKey("k39".into()))
        );
        assert_eq!(
            decode_to_tape(&[0xc0, 0xc0], None, &mut t),
            Err(CodecError::TrailingBytes(1))
        );
        assert_eq!(
            decode_to_tape(&[0xd4, 0x64, 200], Some(&d), &mut t),
            Err(CodecError::IndexOutOfRange {
                index: 200,
                version: 2,
                len: d.tokens().len()
            })
        );
    }

    #[test]
    fn malformed_tapes_are_typed_errors() {
        let t = |ops: &'static [u32], nums: &'static [f64], text: &'static str| TapeRef {
            ops,
            nums,
            text,
        };
        assert_eq!(
            encode_tape(t(&[], &[], ""), None),
            Err(TapeError::Length(0))
        );
        assert_eq!(
            encode_tape(t(&[NULL, NULL], &[], ""), None),
            Err(TapeError::Length(1))
        );
        assert_eq!(
            encode_tape(t(&[9], &[], ""), None),
            Err(TapeError::BadWord(9))
        );
        assert_eq!(
            encode_tape(t(&[NUM], &[f64::NAN], ""), None),
            Err(TapeError::NonFinite)
        );
        assert_eq!(
            encode_tape(t(&[2 << 4 | STR], &[], "a"), None),
            Err(TapeError::BadText)
        );
        assert_eq!(
            encode_tape(t(&[1 << 4 | STR], &[], "é"), None).unwrap(),
            vec![0xa2, 0xc3, 0xa9]
        );
        assert_eq!(
            encode_tape(t(&[1 << 4 | STR], &[], "😀"), None),
            Err(TapeError::BadText)
        );
        assert_eq!(
            encode_tape(t(&[5 << 4 | TOKEN], &[], ""), None),
            Err(TapeError::BadToken(5))
        );
        assert_eq!(
            encode_tape(t(&[1 << 4 | MAP, NULL, NULL], &[], ""), None),
            Err(TapeError::BadWord(NULL))
        );
        let deep: &'static [u32] =
            Box::leak(vec![1 << 4 | ARRAY; MAX_DEPTH + 2].into_boxed_slice());
        assert_eq!(encode_tape(t(deep, &[], ""), None), Err(TapeError::TooDeep));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use crate::core::codec::{decode_msgpack, encode_msgpack};
    use proptest::prelude::*;

    /// `v` as JS sees it: every number an f64, integral ones up to 2^53 as integers (-0 as
    /// 0, as `JSON.stringify` writes it).
    fn js(v: &Value) -> Value {
        match v {
            Value::Number(n) => {
                let f = n.as_f64().unwrap();
                if f.fract() == 0.0 && f.abs() <= MAX_SAFE_INTEGER {
                    Value::Number((f as i64).into())
                } else {
                    Value::Number(Number::from_f64(f).unwrap())
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(js).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), js(v))).collect()),
            v => v.clone(),
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let tokens: Vec<String> = Dictionary::v2().tokens().to_vec();
        let key = prop_oneof![proptest::sample::select(tokens.clone()), ".{0,12}"];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(|n| Value::Number(n.into())),
            (0u64..1 << 29).prop_map(|n| Value::Number(n.into())),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(Value::Number),
            ".{0,20}".prop_map(Value::String),
            proptest::sample::select(tokens).prop_map(Value::String),
        ];
        leaf.prop_recursive(5, 128, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner.clone()), 0..20)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                crate::core::codec::proptests::shaped(inner),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn tape_paths_agree_with_the_value_codec(v in json_value()) {
            let d = Dictionary::v3();
            let expect = js(&v);
            let mut t = Tape::default();
            // Value → tape → Value, and → MessagePack (what the JS writer's tape gives).
            value_to_tape(&v, &mut t).unwrap();
            let r = TapeRef { ops: &t.ops, nums: &t.nums, text: &t.text };
            prop_assert_eq!(&tape_to_value(r, Some(&d)).unwrap(), &expect);
            let bytes = encode_tape(r, Some(&d)).unwrap();
            prop_assert_eq!(&bytes, &encode_msgpack(&expect, Some(&d)));
            prop_assert_eq!(&decode_msgpack(&bytes, Some(&d)).unwrap(), &expect);
            // MessagePack → tape (the JS reader's input) → Value.
            let mut back = Tape::default();
            decode_to_tape(&encode_msgpack(&v, Some(&d)), Some(&d), &mut back).unwrap();
            let r = TapeRef { ops: &back.ops, nums: &back.nums, text: &back.text };
            let got = tape_to_value(r, Some(&d)).unwrap();
            prop_assert_eq!(&got, &expect);
            prop_assert_eq!(format!("{got}"), format!("{expect}"), "key order kept");
        }

        #[test]
        fn decode_to_tape_never_panics_and_agrees(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let d = Dictionary::v3();
            let mut t = Tape::default();
            let tape = decode_to_tape(&bytes, Some(&d), &mut t);
            let value = decode_msgpack(&bytes, Some(&d));
            prop_assert_eq!(tape.is_ok(), value.is_ok());
        }
    }
}
