//! Learned shapes (PROTOCOL.md §8.3, issue 15): object layouts each sending side defines at
//! run time on one reliable, ordered lane, so a layout the dictionary does not list costs its
//! key bytes once and none afterwards.
//!
//! Sans-IO state machines, one pair per lane, direction and hop (client → server and
//! server → client are separate; a relay decodes and re-encodes):
//! - [`ShapeSender`] encodes values as dictionary MessagePack (§8, [`super::encode_msgpack`]),
//!   writing each map whose layout it learned as a **definition** ext
//!   ([`LEARNED_DEFINE_EXT`]: slot, keys, values) the first time and as a **reference** ext
//!   (type [`LEARNED_REF_EXT`]` + slot`: the values only) afterwards.
//! - [`ShapeReceiver`] decodes them with every check of [`super::decode_msgpack`] and the
//!   same [`DecodeBudget`]. A reference to a slot it holds no definition for is
//!   [`CodecError::ShapeUnknown`] (code `shape_unknown`), never a value with other keys.
//!
//! Drive contract:
//! 1. Encode every payload of the lane with [`ShapeSender::encode`] and send the bytes in
//!    encode order; decode every payload the lane delivers with [`ShapeReceiver::decode`], in
//!    delivery order. A payload encoded but never handed to the lane (dropped before sending)
//!    MUST be followed by [`ShapeSender::resync`].
//! 2. On the lane's new epoch or session on the sending side (the sender restarted, or its
//!    history was lost) call [`ShapeSender::reset`]; on any discontinuity the receiving side
//!    sees (PROTOCOL.md §11.6, §14.3) or a new session, [`ShapeReceiver::reset`].
//! 3. When the peer reports `shape_unknown` for this lane, call [`ShapeSender::resync`]: every
//!    layout is defined again on its next use, in the same slot.
//!
//! Why no wrong value is possible: a slot is written once per sender generation (between
//! resets): when all slots are taken, new layouts stay plain maps (refusal, not LRU), so a
//! slot number never names two layouts on one lane until both sides reset. A receiver that
//! missed a definition has the slot empty, and one that reset has all slots empty.

use super::{
    map_shape, wrap_shape, write_float, write_string, CodecError, DecodeBudget, Left, Reader,
    VEC_WRITE,
};
use crate::core::dictionary::Dictionary;
use foldhash::fast::FixedState;
use serde_json::{Map, Value};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

/// MessagePack ext type of a learned shape **definition**: data `slot`, `n`, `n` keys (each a
/// MessagePack str or a dictionary index, as map keys are), then the `n` values.
pub const LEARNED_DEFINE_EXT: i8 = 0x60;

/// MessagePack ext type of a **reference** to learned slot 0; slot `s` is type `0x68 + s`
/// (`0x68..=0x7f`), and its data is the slot's `n` values in the defined key order.
pub const LEARNED_REF_EXT: i8 = 0x68;

/// Most learned shapes per lane and direction (slots `0..24`, ext types `0x68..=0x7f`).
pub const MAX_LEARNED_SHAPES: usize = 24;

/// Most keys of one learned shape.
pub const MAX_LEARNED_KEYS: usize = 16;

/// Longest key of a learned shape, in UTF-8 bytes.
pub const MAX_LEARNED_KEY_BYTES: usize = 64;

/// Most key bytes (UTF-8, summed over all keys of all slots) one side's table holds.
pub const MAX_LEARNED_TABLE_BYTES: usize = 4096;

/// What a [`ShapeSender`] may learn: at most the wire maxima above, which every
/// [`ShapeReceiver`] accepts. Lower values only make the sender learn less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LearnedLimits {
    /// Slots (≤ [`MAX_LEARNED_SHAPES`]).
    pub max_shapes: usize,
    /// Keys per shape (≤ [`MAX_LEARNED_KEYS`]).
    pub max_keys: usize,
    /// UTF-8 bytes per key (≤ [`MAX_LEARNED_KEY_BYTES`]).
    pub max_key_bytes: usize,
    /// Key bytes of all slots (≤ [`MAX_LEARNED_TABLE_BYTES`]).
    pub max_table_bytes: usize,
}

impl LearnedLimits {
    /// The wire maxima.
    pub const DEFAULT: LearnedLimits = LearnedLimits {
        max_shapes: MAX_LEARNED_SHAPES,
        max_keys: MAX_LEARNED_KEYS,
        max_key_bytes: MAX_LEARNED_KEY_BYTES,
        max_table_bytes: MAX_LEARNED_TABLE_BYTES,
    };

    /// These limits, each cut to its wire maximum.
    fn clamped(self) -> LearnedLimits {
        LearnedLimits {
            max_shapes: self.max_shapes.min(MAX_LEARNED_SHAPES),
            max_keys: self.max_keys.min(MAX_LEARNED_KEYS),
            max_key_bytes: self.max_key_bytes.min(MAX_LEARNED_KEY_BYTES),
            max_table_bytes: self.max_table_bytes.min(MAX_LEARNED_TABLE_BYTES),
        }
    }
}

impl Default for LearnedLimits {
    fn default() -> Self {
        LearnedLimits::DEFAULT
    }
}

/// One slot of a sender.
#[derive(Clone, Debug)]
struct SentShape {
    hash: u64,
    keys: Box<[Box<str>]>,
    /// Whether the definition went out since the last reset or resync.
    announced: bool,
}

/// The sending half of learned shapes on one lane (see the module docs for the drive
/// contract). Holds at most [`LearnedLimits`] worth of layouts.
#[derive(Clone, Debug, Default)]
pub struct ShapeSender {
    limits: LearnedLimits,
    slots: Vec<SentShape>,
    table_bytes: usize,
}

impl ShapeSender {
    /// A sender learning up to the wire maxima.
    pub fn new() -> ShapeSender {
        ShapeSender::with_limits(LearnedLimits::DEFAULT)
    }

    /// A sender learning up to `limits` (each cut to its wire maximum).
    pub fn with_limits(limits: LearnedLimits) -> ShapeSender {
        ShapeSender {
            limits: limits.clamped(),
            slots: Vec::new(),
            table_bytes: 0,
        }
    }

    /// Encodes `value` as dictionary MessagePack with learned shapes (PROTOCOL.md §8.3);
    /// listed shapes of `dict` take precedence. Infallible for any [`Value`].
    pub fn encode(&mut self, value: &Value, dict: Option<&Dictionary>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out, value, dict);
        out
    }

    /// Appends the encoding of `value` to `out` (see [`ShapeSender::encode`]).
    pub fn encode_into(&mut self, out: &mut Vec<u8>, value: &Value, dict: Option<&Dictionary>) {
        self.write(out, value, dict);
    }

    /// The peer reported `shape_unknown` (or a payload was encoded and never sent): every
    /// learned layout is defined again on its next use, in the same slot.
    pub fn resync(&mut self) {
        for s in &mut self.slots {
            s.announced = false;
        }
    }

    /// A new epoch or session of the lane: forgets every layout (slots are numbered from 0
    /// again). The receiving side MUST reset at the same point of the stream.
    pub fn reset(&mut self) {
        self.slots.clear();
        self.table_bytes = 0;
    }

    /// Learned layouts (≤ `max_shapes`).
    pub fn learned(&self) -> usize {
        self.slots.len()
    }

    /// Key bytes held (≤ `max_table_bytes`).
    pub fn table_bytes(&self) -> usize {
        self.table_bytes
    }

    fn write(&mut self, out: &mut Vec<u8>, value: &Value, dict: Option<&Dictionary>) {
        use rmp::encode as e;
        match value {
            Value::Array(items) => {
                e::write_array_len(out, items.len() as u32).expect(VEC_WRITE);
                for item in items {
                    self.write(out, item, dict);
                }
            }
            Value::Object(map) => {
                if let Some(s) = dict.and_then(|d| map_shape(d, map)) {
                    let start = out.len();
                    for v in map.values() {
                        self.write(out, v, dict);
                    }
                    wrap_shape(out, start, s);
                    return;
                }
                if let Some((slot, define)) = self.learn(map, dict) {
                    let start = out.len();
                    if define {
                        // Both fit a byte: slot < 24, n ≤ 16.
                        out.extend_from_slice(&[slot, map.len() as u8]);
                        for k in map.keys() {
                            write_key(out, k, dict);
                        }
                    }
                    for v in map.values() {
                        self.write(out, v, dict);
                    }
                    let ty = if define {
                        LEARNED_DEFINE_EXT as u8
                    } else {
                        LEARNED_REF_EXT as u8 + slot
                    };
                    wrap_shape(out, start, ty);
                    return;
                }
                e::write_map_len(out, map.len() as u32).expect(VEC_WRITE);
                for (k, v) in map {
                    write_key(out, k, dict);
                    self.write(out, v, dict);
                }
            }
            Value::String(s) => write_string(out, s, dict),
            Value::Null => e::write_nil(out).expect(VEC_WRITE),
            Value::Bool(b) => e::write_bool(out, *b).expect(VEC_WRITE),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    e::write_uint(out, u).expect(VEC_WRITE);
                } else if let Some(i) = n.as_i64() {
                    e::write_sint(out, i).expect(VEC_WRITE);
                } else {
                    write_float(out, n.as_f64().unwrap_or(0.0));
                }
            }
        }
    }

    /// The slot for `map`'s layout and whether to define it now, or `None` to write a map:
    /// the layout is out of bounds, a reference would not be shorter than the map's keys, or
    /// the table is full (refusal: a slot is never reused before a reset).
    fn learn(&mut self, map: &Map<String, Value>, dict: Option<&Dictionary>) -> Option<(u8, bool)> {
        let n = map.len();
        if n == 0 || n > self.limits.max_keys {
            return None;
        }
        // A map costs its header and keys; a reference at most 3 header bytes (ext 8).
        let mut key_bytes = 0;
        let mut map_cost = 1;
        for k in map.keys() {
            if k.len() > self.limits.max_key_bytes {
                return None;
            }
            key_bytes += k.len();
            map_cost += key_cost(k, dict);
        }
        if map_cost <= 3 {
            return None;
        }
        let mut h = FixedState::default().build_hasher();
        for k in map.keys() {
            k.hash(&mut h);
        }
        let hash = h.finish();
        if let Some(slot) = self
            .slots
            .iter()
            .position(|s| s.hash == hash && s.keys.iter().map(|k| &**k).eq(map.keys()))
        {
            let s = &mut self.slots[slot];
            let define = !s.announced;
            s.announced = true;
            return Some((slot as u8, define));
        }
        if self.slots.len() >= self.limits.max_shapes
            || self.table_bytes + key_bytes > self.limits.max_table_bytes
        {
            return None;
        }
        self.slots.push(SentShape {
            hash,
            keys: map.keys().map(|k| k.as_str().into()).collect(),
            announced: true,
        });
        self.table_bytes += key_bytes;
        Some(((self.slots.len() - 1) as u8, true))
    }
}

/// Bytes `k` takes as a map key: its dictionary index, else a MessagePack str.
fn key_cost(k: &str, dict: Option<&Dictionary>) -> usize {
    match dict.and_then(|d| d.index_of(k)) {
        Some(i) if i < 128 => 1,
        Some(i) if i < 256 => 2,
        Some(_) => 3,
        None => {
            k.len()
                + match k.len() {
                    0..=31 => 1,
                    32..=255 => 2,
                    _ => 3,
                }
        }
    }
}

/// Writes map key `k`: its dictionary index when listed, else a MessagePack str.
fn write_key(out: &mut Vec<u8>, k: &str, dict: Option<&Dictionary>) {
    match dict.and_then(|d| d.index_of(k)) {
        Some(i) => {
            rmp::encode::write_uint(out, u64::from(i)).expect(VEC_WRITE);
        }
        None => rmp::encode::write_str(out, k).expect(VEC_WRITE),
    }
}

/// The receiving half of learned shapes on one lane (see the module docs for the drive
/// contract). Holds at most [`MAX_LEARNED_SHAPES`] slots and [`MAX_LEARNED_TABLE_BYTES`] of
/// keys, whatever the peer sends.
#[derive(Clone, Debug, Default)]
pub struct ShapeReceiver {
    slots: Vec<Option<Arc<[Box<str>]>>>,
    table_bytes: usize,
}

impl ShapeReceiver {
    /// A receiver holding no definition.
    pub fn new() -> ShapeReceiver {
        ShapeReceiver::default()
    }

    /// Decodes one payload written by a [`ShapeSender`] (or any dictionary MessagePack),
    /// within [`DecodeBudget::DEFAULT`], learning the definitions it carries.
    ///
    /// Errors: [`CodecError::ShapeUnknown`] for a reference to a slot not defined here (the
    /// sender should [`ShapeSender::resync`]); [`CodecError::BadDefinition`]; every error of
    /// [`super::decode_msgpack`]. Never panics, never returns a value with other keys.
    pub fn decode(&mut self, bytes: &[u8], dict: Option<&Dictionary>) -> Result<Value, CodecError> {
        self.decode_with(bytes, dict, DecodeBudget::DEFAULT)
    }

    /// [`ShapeReceiver::decode`] within `budget`.
    ///
    /// Errors: as [`ShapeReceiver::decode`].
    pub fn decode_with(
        &mut self,
        bytes: &[u8],
        dict: Option<&Dictionary>,
        budget: DecodeBudget,
    ) -> Result<Value, CodecError> {
        let mut r = Reader::new(bytes);
        let v = r.value(self, dict, 0, &mut Left::new(budget))?;
        match r.remaining() {
            0 => Ok(v),
            n => Err(CodecError::TrailingBytes(n)),
        }
    }

    /// A discontinuity, new epoch or new session of the lane: forgets every definition.
    pub fn reset(&mut self) {
        self.slots.clear();
        self.table_bytes = 0;
    }

    /// Slots holding a definition (≤ [`MAX_LEARNED_SHAPES`]).
    pub fn defined(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Key bytes held (≤ [`MAX_LEARNED_TABLE_BYTES`]).
    pub fn table_bytes(&self) -> usize {
        self.table_bytes
    }

    /// Reads a definition's data: slot, keys (checked and stored), then the values.
    fn definition(
        &mut self,
        data: &mut Reader<'_>,
        dict: Option<&Dictionary>,
        depth: usize,
        left: &mut Left,
    ) -> Result<Value, CodecError> {
        let bad = CodecError::BadDefinition;
        let slot = data.u8().map_err(|_| bad("no slot"))?;
        if usize::from(slot) >= MAX_LEARNED_SHAPES {
            return Err(bad("slot out of range"));
        }
        let n = usize::from(data.u8().map_err(|_| bad("no key count"))?);
        if !(1..=MAX_LEARNED_KEYS).contains(&n) {
            return Err(bad("key count out of range"));
        }
        let mut keys: Vec<Box<str>> = Vec::with_capacity(n);
        let mut bytes = 0;
        for _ in 0..n {
            let k = data.key(dict).map_err(|e| match e {
                CodecError::Truncated => bad("truncated keys"),
                e => e,
            })?;
            if k.len() > MAX_LEARNED_KEY_BYTES {
                return Err(bad("key too long"));
            }
            if keys.iter().any(|have| **have == *k) {
                return Err(CodecError::DuplicateKey(k));
            }
            bytes += k.len();
            keys.push(k.into_boxed_str());
        }
        let i = usize::from(slot);
        if self.slots.len() <= i {
            self.slots.resize(i + 1, None);
        }
        let keys: Arc<[Box<str>]> = keys.into();
        match &self.slots[i] {
            // A resync: the same layout again.
            Some(have) if *have == keys => {}
            Some(_) => {
                // Another layout in a written slot: the sender reset and this side did not.
                // Every other slot is stale too; forgetting them turns what would be wrong
                // keys into `shape_unknown`.
                self.reset();
                self.slots.resize(i + 1, None);
                self.store(i, keys.clone(), bytes)?;
            }
            None => self.store(i, keys.clone(), bytes)?,
        }
        self.values(
            Reader::new(&data.buf[data.pos..]),
            &keys,
            LEARNED_DEFINE_EXT as u8,
            dict,
            depth,
            left,
        )
    }

    fn store(&mut self, i: usize, keys: Arc<[Box<str>]>, bytes: usize) -> Result<(), CodecError> {
        if self.table_bytes + bytes > MAX_LEARNED_TABLE_BYTES {
            return Err(CodecError::BadDefinition("over the table's key bytes"));
        }
        self.table_bytes += bytes;
        self.slots[i] = Some(keys);
        Ok(())
    }

    /// Reads exactly `keys.len()` values from `data` (ext type `ty`) into a map.
    fn values(
        &mut self,
        mut data: Reader<'_>,
        keys: &[Box<str>],
        ty: u8,
        dict: Option<&Dictionary>,
        depth: usize,
        left: &mut Left,
    ) -> Result<Value, CodecError> {
        let mut map = Map::new();
        for k in keys {
            let v = data
                .value(self, dict, depth + 1, left)
                .map_err(|e| super::shape_error(e, ty))?;
            map.insert(k.to_string(), v);
        }
        if data.remaining() != 0 {
            return Err(CodecError::BadShape(ty));
        }
        Ok(Value::Object(map))
    }
}

/// Learned-shape ext types: a definition ([`LEARNED_DEFINE_EXT`]) or a reference to a slot
/// (`LEARNED_REF_EXT + slot`); an empty slot is [`CodecError::ShapeUnknown`].
impl super::ExtDecoder for ShapeReceiver {
    fn claims(&self, ty: u8) -> bool {
        ty == LEARNED_DEFINE_EXT as u8
            || ty
                .checked_sub(LEARNED_REF_EXT as u8)
                .is_some_and(|s| usize::from(s) < MAX_LEARNED_SHAPES)
    }

    fn decode(
        &mut self,
        ty: u8,
        mut data: Reader<'_>,
        dict: Option<&Dictionary>,
        depth: usize,
        left: &mut Left,
    ) -> Result<Value, CodecError> {
        if ty == LEARNED_DEFINE_EXT as u8 {
            return self.definition(&mut data, dict, depth, left);
        }
        let slot = ty - LEARNED_REF_EXT as u8;
        let keys = self
            .slots
            .get(usize::from(slot))
            .and_then(Option::clone)
            .ok_or(CodecError::ShapeUnknown(slot))?;
        self.values(data, &keys, ty, dict, depth, left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::codec::{decode_msgpack, encode_msgpack};
    use serde_json::json;

    fn chat(text: &str) -> Value {
        json!({"topic": "chat", "author": "ada", "body": text, "sentAt": 1735689600123u64})
    }

    /// The first use is a definition (slot, key count, keys, values); the next a reference
    /// (type 0x68 + slot, values only): no key bytes.
    #[test]
    fn definition_then_reference_byte_layout() {
        let d = Dictionary::v3();
        let (mut tx, mut rx) = (ShapeSender::new(), ShapeReceiver::new());
        let first = tx.encode(&chat("hi"), Some(&d));
        let second = tx.encode(&chat("yo"), Some(&d));
        // Values: "chat" fixstr (5), "ada" (4), "hi"/"yo" (3), u64 (9) = 21 bytes.
        let values_len = 21;
        assert_eq!(second[..3], [0xc7, values_len, 0x68]);
        assert_eq!(second.len(), 3 + usize::from(values_len));
        assert_eq!(first[2], LEARNED_DEFINE_EXT as u8);
        assert_eq!(first[3..5], [0, 4], "slot 0, 4 keys");
        assert_eq!(first[5..11], [0xa5, b't', b'o', b'p', b'i', b'c']);
        assert_eq!(
            first.len(),
            second.len() + 2 + (6 + 7 + 5 + 7),
            "slot, n, keys"
        );
        assert_eq!(rx.decode(&first, Some(&d)).unwrap(), chat("hi"));
        assert_eq!(rx.decode(&second, Some(&d)).unwrap(), chat("yo"));
        // Plain dictionary MessagePack pays the keys every time.
        let plain = encode_msgpack(&chat("yo"), Some(&d));
        assert_eq!(plain.len() - second.len(), 1 + 6 + 7 + 5 + 7 - 3);
        // A stock (learning-less) decoder refuses the exts rather than guessing.
        assert_eq!(
            decode_msgpack(&second, Some(&d)),
            Err(CodecError::UnsupportedType(0xc7))
        );
        // Listed shapes win over learning; maps whose keys cost ≤ 3 bytes stay maps.
        let pong = json!({"type": "pong", "clientTime": 1, "serverTime": 2});
        assert_eq!(tx.encode(&pong, Some(&d)), encode_msgpack(&pong, Some(&d)));
        let small = json!({"a": 1});
        assert_eq!(tx.encode(&small, None), encode_msgpack(&small, None));
        assert_eq!(tx.learned(), 1);
    }

    /// The example of PROTOCOL.md §8.3.
    #[test]
    fn protocol_example_bytes() {
        let v = json!({"topic": "chat", "author": "ada"});
        let mut tx = ShapeSender::new();
        let mut def = vec![0xc7, 0x18, 0x60, 0, 2, 0xa5];
        def.extend_from_slice(b"topic");
        def.push(0xa6);
        def.extend_from_slice(b"author");
        def.push(0xa4);
        def.extend_from_slice(b"chat");
        def.push(0xa3);
        def.extend_from_slice(b"ada");
        assert_eq!(tx.encode(&v, Some(&Dictionary::v3())), def);
        let reference = tx.encode(&v, Some(&Dictionary::v3()));
        assert_eq!(reference[..3], [0xc7, 0x09, 0x68]);
        assert_eq!(reference[3..], def[def.len() - 9..]);
    }

    #[test]
    fn a_reference_without_its_definition_is_shape_unknown() {
        let (mut tx, mut rx) = (ShapeSender::new(), ShapeReceiver::new());
        let first = tx.encode(&chat("1"), None);
        let second = tx.encode(&chat("2"), None);
        assert_eq!(rx.decode(&second, None), Err(CodecError::ShapeUnknown(0)));
        assert_eq!(rx.decode(&first, None).unwrap(), chat("1"));
        assert_eq!(rx.decode(&second, None).unwrap(), chat("2"));
        // The receiver resets (new session): references fail until the sender resyncs.
        rx.reset();
        let third = tx.encode(&chat("3"), None);
        assert_eq!(rx.decode(&third, None), Err(CodecError::ShapeUnknown(0)));
        tx.resync();
        let fourth = tx.encode(&chat("4"), None);
        assert_eq!(fourth[2], LEARNED_DEFINE_EXT as u8);
        assert_eq!(rx.decode(&fourth, None).unwrap(), chat("4"));
        // The wire code.
        use crate::core::payload::PayloadError;
        assert_eq!(
            PayloadError::Codec(CodecError::ShapeUnknown(0)).code(),
            crate::core::error::ErrorCode::ShapeUnknown
        );
    }

    /// A definition of another layout in a written slot means the sender reset and this side
    /// did not: every other slot is forgotten, so its stale keys are never used.
    #[test]
    fn a_conflicting_definition_forgets_the_other_slots() {
        let (mut tx, mut rx) = (ShapeSender::new(), ShapeReceiver::new());
        let other = json!({"level": 3, "message": "x", "origin": "y"});
        for v in [chat("a"), other.clone()] {
            rx.decode(&tx.encode(&v, None), None).unwrap();
        }
        assert_eq!(rx.defined(), 2);
        // The sender resets; the receiver misses it.
        tx.reset();
        let redefined = tx.encode(&other, None); // slot 0 now: `other`
        let chat_again = tx.encode(&chat("b"), None); // slot 1 now: chat, defined...
        let chat_ref = tx.encode(&chat("c"), None); // ...then referenced
        assert_eq!(rx.decode(&redefined, None).unwrap(), other);
        assert_eq!(rx.defined(), 1, "slot 1 (old `other`) forgotten");
        // Had slot 1 kept `other`'s keys, this would decode chat's values under them.
        drop(chat_again);
        assert_eq!(rx.decode(&chat_ref, None), Err(CodecError::ShapeUnknown(1)));
    }

    #[test]
    fn the_sender_refuses_past_its_limits() {
        let limits = LearnedLimits {
            max_shapes: 2,
            max_keys: 3,
            max_key_bytes: 8,
            max_table_bytes: 40,
        };
        let mut tx = ShapeSender::with_limits(limits);
        let mut rx = ShapeReceiver::new();
        let layouts = [
            json!({"alpha": 1, "beta": 2}),
            json!({"gamma": 1, "delta": 2}),
            json!({"epsilon": 1, "zeta": 2}), // third layout: refused (2 slots)
            json!({"a1": 1, "a2": 2, "a3": 3, "a4": 4}), // 4 keys > 3
            json!({"a-very-long-key": 1}),    // key > 8 bytes
        ];
        for _ in 0..2 {
            for v in &layouts {
                let bytes = tx.encode(v, None);
                assert_eq!(rx.decode(&bytes, None).unwrap(), *v);
            }
        }
        assert_eq!(tx.learned(), 2);
        assert_eq!(rx.defined(), 2);
        assert_eq!(
            tx.encode(&layouts[2], None),
            encode_msgpack(&layouts[2], None),
            "refused layouts stay maps"
        );
        let mut tx = ShapeSender::with_limits(LearnedLimits {
            max_table_bytes: 10,
            ..limits
        });
        tx.encode(&layouts[0], None);
        tx.encode(&layouts[1], None);
        assert_eq!(tx.learned(), 1, "9 + 10 key bytes > 10");
    }

    #[test]
    fn malformed_definitions_are_typed_errors() {
        let mut rx = ShapeReceiver::new();
        let def = |data: &[u8]| {
            let mut b = vec![0xc7, data.len() as u8, 0x60];
            b.extend_from_slice(data);
            b
        };
        let long_key = {
            let mut d = vec![0, 1, 0xd9, 65];
            d.extend_from_slice(&[b'k'; 65]);
            d.push(0xc0);
            d
        };
        for (bytes, err) in [
            (def(&[24, 1, 0xa1, b'a', 0xc0]), "slot out of range"),
            (def(&[0, 0]), "key count out of range"),
            (def(&[0, 17]), "key count out of range"),
            (def(&[0, 2, 0xa1, b'a']), "truncated keys"),
            (def(&long_key), "key too long"),
            (def(&[0]), "no key count"),
            (def(&[]), "no slot"),
        ] {
            assert_eq!(
                rx.decode(&bytes, None),
                Err(CodecError::BadDefinition(err)),
                "{bytes:02x?}"
            );
        }
        // Duplicate keys, too few or too many values, unassigned ext types.
        assert_eq!(
            rx.decode(&def(&[0, 2, 0xa1, b'a', 0xa1, b'a', 1, 2]), None),
            Err(CodecError::DuplicateKey("a".into()))
        );
        assert_eq!(
            rx.decode(&def(&[1, 2, 0xa1, b'a', 0xa1, b'b', 1]), None),
            Err(CodecError::BadShape(0x60))
        );
        // Slot 1 was stored before its values failed: it holds `a`, `b`.
        assert_eq!(
            rx.decode(&[0xd5, 0x69, 1, 2], None).unwrap(),
            serde_json::json!({"a": 1, "b": 2})
        );
        assert_eq!(
            rx.decode(&[0xd6, 0x69, 1, 2, 3, 4], None),
            Err(CodecError::BadShape(0x69)),
            "2 values and 2 bytes more"
        );
        assert_eq!(
            rx.decode(&[0xd4, 0x69, 1], None),
            Err(CodecError::BadShape(0x69))
        );
        for ty in [0x61, 0x65, 0x67] {
            assert_eq!(
                rx.decode(&[0xd4, ty, 1], None),
                Err(CodecError::UnsupportedType(0xd4))
            );
        }
        // Definitions need their keys' dictionary.
        assert!(matches!(
            rx.decode(&def(&[2, 1, 0x05, 0xc0]), None),
            Err(CodecError::IndexWithoutDictionary(5))
        ));
    }

    #[test]
    fn the_receiver_table_is_bounded_whatever_the_peer_sends() {
        let mut rx = ShapeReceiver::new();
        // 24 slots × 16 keys × 64 bytes would be 24 KiB; the table holds at most 4 KiB.
        let mut refused = 0;
        for slot in 0..24u8 {
            let mut data = vec![slot, 16];
            for k in 0..16u8 {
                data.extend_from_slice(&[0xd9, 64]);
                data.extend_from_slice(&[b'a' + k; 63]);
                data.push(slot);
            }
            data.extend_from_slice(&[0xc0; 16]);
            let mut bytes = vec![0xc8];
            bytes.extend_from_slice(&(data.len() as u16).to_be_bytes());
            bytes.push(0x60);
            bytes.extend_from_slice(&data);
            match rx.decode(&bytes, None) {
                Ok(_) => {}
                Err(CodecError::BadDefinition("over the table's key bytes")) => refused += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(rx.table_bytes() <= MAX_LEARNED_TABLE_BYTES);
        }
        assert_eq!(rx.defined(), 4);
        assert_eq!(refused, 20);
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use crate::core::codec::encode_msgpack;
    use proptest::prelude::*;
    use serde_json::Number;

    /// A key: short ASCII, or one of the dictionary's tokens (written as an index).
    fn key() -> impl Strategy<Value = String> {
        let tokens = Dictionary::v3().tokens().to_vec();
        prop_oneof![
            3 => "[a-zA-Z_]{1,12}",
            1 => proptest::sample::select(tokens),
            1 => ".{0,5}",
        ]
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            (0u64..300).prop_map(|n| Value::Number(n.into())),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(Value::Number),
            ".{0,12}".prop_map(Value::String),
            proptest::sample::select(Dictionary::v3().tokens().to_vec()).prop_map(Value::String),
        ]
    }

    /// Messages built on a pool of layouts (so layouts repeat, nested too), mixed with
    /// arbitrary maps and arrays.
    fn messages(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Value>> {
        let layouts =
            prop::collection::vec(prop::collection::vec(key(), 1..18), 1..30).prop_map(|ls| {
                ls.into_iter()
                    .map(|mut keys| {
                        let mut seen = std::collections::HashSet::new();
                        keys.retain(|k| seen.insert(k.clone()));
                        keys
                    })
                    .collect::<Vec<_>>()
            });
        layouts.prop_flat_map(move |pool| {
            let value = leaf().prop_recursive(3, 48, 18, move |inner| {
                let pool = pool.clone();
                prop_oneof![
                    4 => (proptest::sample::select(pool), prop::collection::vec(inner.clone(), 18))
                        .prop_map(|(keys, values)| Value::Object(keys.into_iter().zip(values).collect())),
                    1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    1 => prop::collection::vec((key(), inner), 0..5)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            });
            prop::collection::vec(value, n.clone())
        })
    }

    fn dict(which: u8) -> Option<Dictionary> {
        match which {
            0 => None,
            1 => Some(Dictionary::v2()),
            _ => Some(Dictionary::v3()),
        }
    }

    fn limits() -> impl Strategy<Value = LearnedLimits> {
        (1usize..=24, 1usize..=16, 1usize..=64, 1usize..=4096).prop_map(|(s, k, b, t)| {
            LearnedLimits {
                max_shapes: s,
                max_keys: k,
                max_key_bytes: b,
                max_table_bytes: t,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Exact round trip (values and key order) of any sequence, and never longer than
        /// plain dictionary MessagePack once every layout was used.
        #[test]
        fn sequences_round_trip_exactly(
            msgs in messages(1..40), which in 0u8..3, limits in limits()
        ) {
            let d = dict(which);
            let mut tx = ShapeSender::with_limits(limits);
            let mut rx = ShapeReceiver::new();
            for m in &msgs {
                let bytes = tx.encode(m, d.as_ref());
                let back = rx.decode(&bytes, d.as_ref()).unwrap();
                prop_assert_eq!(&back, m);
                prop_assert_eq!(format!("{back}"), format!("{m}"), "key order kept");
            }
            for m in &msgs {
                let again = tx.encode(m, d.as_ref());
                prop_assert!(again.len() <= encode_msgpack(m, d.as_ref()).len());
                prop_assert_eq!(&rx.decode(&again, d.as_ref()).unwrap(), m);
            }
            prop_assert!(tx.learned() <= limits.max_shapes.min(MAX_LEARNED_SHAPES));
            prop_assert!(tx.table_bytes() <= limits.max_table_bytes);
            prop_assert!(rx.defined() <= tx.learned());
        }

        /// Frames lost between sender and receiver (and resets of both at one point of the
        /// stream): every decode is the exact value or `shape_unknown`, never another value;
        /// after a resync everything decodes again.
        #[test]
        fn lost_frames_give_exact_values_or_shape_unknown(
            msgs in messages(2..60),
            fate in prop::collection::vec(0u8..10, 60),
            which in 0u8..3,
            limits in limits(),
        ) {
            let d = dict(which);
            let mut tx = ShapeSender::with_limits(limits);
            let mut rx = ShapeReceiver::new();
            let half = msgs.len() / 2;
            let mut unknown = 0;
            for (i, m) in msgs.iter().enumerate() {
                if i == half {
                    // The receiver's `shape_unknown` reports reach the sender.
                    tx.resync();
                }
                match fate[i] {
                    // Both sides reset at this point (a new epoch or session).
                    1 => { tx.reset(); rx.reset(); }
                    // The receiver alone resets (the peer restarted, discontinuity).
                    2 if i < half => rx.reset(),
                    _ => {}
                }
                let bytes = tx.encode(m, d.as_ref());
                if fate[i] == 0 && i < half {
                    continue; // lost
                }
                match rx.decode(&bytes, d.as_ref()) {
                    Ok(v) => prop_assert_eq!(&v, m, "message {} decoded to another value", i),
                    Err(CodecError::ShapeUnknown(_)) if i < half => unknown += 1,
                    Err(e) => prop_assert!(false, "message {}: {:?}", i, e),
                }
            }
            prop_assert!(unknown <= half);
        }

        /// Whatever bytes arrive, the receiver never panics and its table stays bounded.
        #[test]
        fn hostile_bytes_keep_the_receiver_bounded(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20),
            prefix in prop::collection::vec(any::<u8>(), 0..3),
        ) {
            let mut rx = ShapeReceiver::new();
            for f in &frames {
                // Half of them start like a definition so the key checks are reached.
                let mut bytes = vec![0xc7, f.len() as u8 + prefix.len() as u8, 0x60];
                bytes.extend_from_slice(&prefix);
                bytes.extend_from_slice(f);
                let _ = rx.decode(&bytes, None);
                let _ = rx.decode(f, Some(&Dictionary::v3()));
                prop_assert!(rx.defined() <= MAX_LEARNED_SHAPES);
                prop_assert!(rx.table_bytes() <= MAX_LEARNED_TABLE_BYTES);
            }
        }
    }
}
