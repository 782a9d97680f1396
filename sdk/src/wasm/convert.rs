//! Conversions between JavaScript values and the core's types.
//!
//! - App values cross as a value tape ([`crate::core::tape`], PROTOCOL.md §8.1): a small JS
//!   walker/reader shipped in the package (`sdk/js/tape.js`) and three bulk copies (node
//!   words, float64s, one UTF-8 text) instead of one JS⇄wasm call per key and value.
//! - App values going out ([`write_tape`], [`value_from_js`]): strict. JSON-compatible means:
//!   `null`, booleans, finite numbers, strings, arrays and objects (own enumerable string keys;
//!   an object with a `toJSON` method, e.g. a `Date`, is converted through it as
//!   `JSON.stringify` does). `undefined` becomes `null` at the top level and in arrays and is
//!   omitted from objects (JSON's rule). Anything else throws `bad_payload` naming the path of
//!   the offending part: functions, symbols, `BigInt`, `NaN` and ±`Infinity` (which
//!   `JSON.stringify` would silently change), `Map`, `Set`, `ArrayBuffer` and typed arrays,
//!   and nesting deeper than [`crate::core::codec::MAX_DEPTH`] (which also catches cycles).
//!   Numbers that are integers up to 2^53 in magnitude are integers, others floats.
//! - App values coming in ([`read_tape`], [`value_to_js`]): plain objects (never `Map`),
//!   `__proto__` as an own key, integers beyond 2^53 rounded to the nearest double: exactly
//!   what `JSON.parse` gives.
//! - Envelopes (messages, events, the handshake response): `serde_wasm_bindgen` with
//!   [`Serializer::json_compatible`] (maps as plain objects, `None` as `null`).
//! - Lane and session id arguments: [`lane_from_js`], [`session_id_from_js`].

use crate::core::dictionary::Dictionary;
use crate::core::error::ErrorCode;
use crate::core::frame::SessionId;
use crate::core::lane::Lane;
use crate::core::tape::{self, Tape, TapeRef};
use crate::wasm::error;
use serde::Serialize;
use serde_json::Value;
use serde_wasm_bindgen::Serializer;
use std::cell::{Cell, RefCell};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsValue;

#[wasm_bindgen(module = "/js/tape.js")]
extern "C" {
    #[wasm_bindgen(js_name = tapeSetMemory)]
    fn tape_set_memory(memory: &JsValue);
    #[wasm_bindgen(js_name = tapeTables)]
    fn tape_tables(tokens: &js_sys::Array) -> JsValue;
    #[wasm_bindgen(js_name = readTape)]
    #[allow(clippy::too_many_arguments)]
    fn js_read_tape(
        ops_ptr: u32,
        ops_len: u32,
        nums_ptr: u32,
        nums_len: u32,
        text_ptr: u32,
        text_len: u32,
        tables: &JsValue,
    ) -> JsValue;
    #[wasm_bindgen(js_name = writeTape)]
    fn js_write_tape(value: &JsValue, tables: &JsValue) -> Option<String>;
    #[wasm_bindgen(js_name = tapeOps)]
    fn js_tape_ops() -> Vec<u32>;
    #[wasm_bindgen(js_name = tapeNums)]
    fn js_tape_nums() -> Vec<f64>;
    #[wasm_bindgen(js_name = tapeText)]
    fn js_tape_text() -> String;
}

thread_local! {
    static MEMORY_SET: Cell<bool> = const { Cell::new(false) };
    static SCRATCH: RefCell<Tape> = RefCell::new(Tape::default());
}

/// The JS lookup tables of `dict` (tokens by index, index by token) for [`write_tape`] and
/// [`read_tape`], or `null` without a dictionary. Build once per dictionary.
pub(crate) fn tables(dict: Option<&Dictionary>) -> JsValue {
    match dict {
        None => JsValue::NULL,
        Some(d) => {
            let tokens: js_sys::Array = d.tokens().iter().map(|t| JsValue::from_str(t)).collect();
            tape_tables(&tokens)
        }
    }
}

/// An app value as JS: reads `tape` (whose tokens index the dictionary of `tables`).
pub(crate) fn read_tape(tape: &Tape, tables: &JsValue) -> JsValue {
    if !MEMORY_SET.with(Cell::get) {
        tape_set_memory(&wasm_bindgen::memory());
        MEMORY_SET.with(|m| m.set(true));
    }
    // Pointers into wasm memory are u32 on wasm32; nothing allocates until JS has read them.
    js_read_tape(
        tape.ops.as_ptr() as usize as u32,
        tape.ops.len() as u32,
        tape.nums.as_ptr() as usize as u32,
        tape.nums.len() as u32,
        tape.text.as_ptr() as usize as u32,
        tape.text.len() as u32,
        tables,
    )
}

/// The tape of a JS value, walked strictly (see the module docs); listed strings become token
/// nodes of the dictionary of `tables`.
///
/// Errors: `bad_payload`, with the path of the first part that is not JSON-compatible.
pub(crate) fn write_tape(v: &JsValue, tables: &JsValue) -> Result<Tape, JsValue> {
    if let Some(what) = js_write_tape(v, tables) {
        return Err(error::coded(ErrorCode::BadPayload, &what));
    }
    Ok(Tape {
        ops: js_tape_ops(),
        nums: js_tape_nums(),
        text: js_tape_text(),
    })
}

/// A borrowed view of `tape`.
pub(crate) fn tape_ref(tape: &Tape) -> TapeRef<'_> {
    TapeRef {
        ops: &tape.ops,
        nums: &tape.nums,
        text: &tape.text,
    }
}

/// The error for a tape the JS half wrote wrong (a bug of ours, never the app's value).
pub(crate) fn tape_bug(e: &tape::TapeError) -> JsValue {
    error::coded(ErrorCode::Internal, &format!("value tape: {e}"))
}

/// Serializes an envelope with [`Serializer::json_compatible`].
pub(crate) fn to_js<T: Serialize + ?Sized>(v: &T) -> JsValue {
    // Envelopes are our own structs of strings, small integers and options: they always
    // serialize. Falling back to `null` keeps a bug here from taking the driver down.
    v.serialize(&Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

/// An app value as JS (see the module docs).
pub(crate) fn value_to_js(v: &Value) -> JsValue {
    match v {
        Value::Null => JsValue::NULL,
        Value::Bool(b) => JsValue::from_bool(*b),
        Value::String(s) => JsValue::from_str(s),
        Value::Number(n) => JsValue::from_f64(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(_) | Value::Object(_) => SCRATCH.with(|t| {
            let mut t = t.borrow_mut();
            match tape::value_to_tape(v, &mut t) {
                Ok(()) => read_tape(&t, &JsValue::NULL),
                // Only a string or container of 2^28 or more elements, beyond any frame.
                Err(_) => JsValue::NULL,
            }
        }),
    }
}

/// A JS value as a JSON value, strictly (see the module docs).
///
/// Errors: `bad_payload`, with the path of the first part that is not JSON-compatible.
pub(crate) fn value_from_js(v: &JsValue) -> Result<Value, JsValue> {
    let t = write_tape(v, &JsValue::NULL)?;
    tape::tape_to_value(tape_ref(&t), None).map_err(|e| tape_bug(&e))
}

/// A lane argument: an id `1..=8` or a name (case-insensitive, e.g. `'Messaging'`, `'sync'`).
///
/// Errors: `unknown_lane` for another number or name; `invalid_argument` for another type.
pub(crate) fn lane_from_js(v: &JsValue) -> Result<Lane, JsValue> {
    if let Some(n) = v.as_f64() {
        let lane = (n.fract() == 0.0 && (1.0..=8.0).contains(&n))
            .then(|| Lane::from_id(n as u8))
            .flatten();
        return lane.ok_or_else(|| {
            error::coded(
                ErrorCode::UnknownLane,
                &format!("lane {n} is not a lane id (1..=8)"),
            )
        });
    }
    if let Some(s) = v.as_string() {
        return Lane::from_name(s.trim()).ok_or_else(|| {
            error::coded(ErrorCode::UnknownLane, &format!("{s:?} is not a lane name"))
        });
    }
    Err(error::invalid_argument(
        "a lane is an id 1..=8 or a lane name such as 'Messaging'",
    ))
}

/// An optional session id argument: `undefined`/`null` → `None`, else a UUID string.
///
/// Errors: `invalid_argument`.
pub(crate) fn session_id_from_js(v: &JsValue) -> Result<Option<SessionId>, JsValue> {
    if v.is_undefined() || v.is_null() {
        return Ok(None);
    }
    let Some(s) = v.as_string() else {
        return Err(error::invalid_argument("`to` must be a session id string"));
    };
    s.parse()
        .map(Some)
        .map_err(|e: crate::core::frame::FrameError| error::invalid_argument(&e.to_string()))
}
