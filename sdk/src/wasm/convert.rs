//! Conversions between JavaScript values and the core's types.
//!
//! - App values going out ([`value_from_js`]): a strict walk of the JS value into a
//!   [`serde_json::Value`]. JSON-compatible means: `null`, booleans, finite numbers, strings,
//!   arrays and objects (own enumerable string keys; an object with a `toJSON` method, e.g. a
//!   `Date`, is converted through it as `JSON.stringify` does). `undefined` becomes `null`
//!   at the top level and in arrays and is omitted from objects (JSON's rule). Anything else
//!   throws `bad_payload` naming the path of the offending part: functions, symbols,
//!   `BigInt`, `NaN` and ±`Infinity` (which `JSON.stringify` would silently change), `Map`,
//!   `Set`, `ArrayBuffer` and typed arrays, and nesting deeper than
//!   [`crate::core::codec::MAX_DEPTH`] (which also catches cycles).
//!   `serde_wasm_bindgen::from_value` is not used here because it accepts `BigInt` and turns
//!   `NaN` into `null` silently.
//! - App values coming in ([`value_to_js`]): `JSON.parse` of the value's JSON text, so the
//!   result is exactly what JSON gives: plain objects (never `Map`), `__proto__` as an own
//!   key, and integers beyond 2^53 rounded to the nearest double instead of an error.
//! - Envelopes (messages, events, the handshake response): `serde_wasm_bindgen` with
//!   [`Serializer::json_compatible`] (maps as plain objects, `None` as `null`).
//! - Lane and session id arguments: [`lane_from_js`], [`session_id_from_js`].

use crate::core::codec::MAX_DEPTH;
use crate::core::error::ErrorCode;
use crate::core::frame::SessionId;
use crate::core::lane::Lane;
use crate::wasm::error;
use js_sys::{Array, Object, Reflect};
use serde::Serialize;
use serde_json::{Map, Number, Value};
use serde_wasm_bindgen::Serializer;
use wasm_bindgen::{JsCast, JsValue};

/// Largest integer a JS number holds exactly (2^53 - 1).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Serializes an envelope with [`Serializer::json_compatible`].
pub(crate) fn to_js<T: Serialize + ?Sized>(v: &T) -> JsValue {
    // Envelopes are our own structs of strings, small integers and options: they always
    // serialize. Falling back to `null` keeps a bug here from taking the driver down.
    v.serialize(&Serializer::json_compatible())
        .unwrap_or(JsValue::NULL)
}

/// An app value as JS: `JSON.parse` of its JSON text (see the module docs).
pub(crate) fn value_to_js(v: &Value) -> JsValue {
    match v {
        Value::Null => JsValue::NULL,
        Value::Bool(b) => JsValue::from_bool(*b),
        Value::String(s) => JsValue::from_str(s),
        Value::Number(n) => JsValue::from_f64(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(_) | Value::Object(_) => {
            let text = serde_json::to_string(v).unwrap_or_else(|_| "null".into());
            js_sys::JSON::parse(&text).unwrap_or(JsValue::NULL)
        }
    }
}

/// A JS value as a JSON value, strictly (see the module docs).
///
/// Errors: `bad_payload`, with the path of the first part that is not JSON-compatible.
pub(crate) fn value_from_js(v: &JsValue) -> Result<Value, JsValue> {
    let mut path = String::from("value");
    walk(v, 0, &mut path).map(|o| o.unwrap_or(Value::Null))
}

/// `Ok(None)`: `undefined` (omitted from objects, `null` elsewhere).
fn walk(v: &JsValue, depth: usize, path: &mut String) -> Result<Option<Value>, JsValue> {
    if v.is_undefined() {
        return Ok(None);
    }
    if v.is_null() {
        return Ok(Some(Value::Null));
    }
    if let Some(b) = v.as_bool() {
        return Ok(Some(Value::Bool(b)));
    }
    if let Some(n) = v.as_f64() {
        return number(n)
            .map(Some)
            .ok_or_else(|| bad(path, &format!("is {n}, which JSON cannot represent")));
    }
    if let Some(s) = v.as_string() {
        return Ok(Some(Value::String(s)));
    }
    if v.is_bigint() {
        return Err(bad(path, "is a BigInt; convert it to a number or a string"));
    }
    if v.is_function() {
        return Err(bad(path, "is a function"));
    }
    if v.is_symbol() {
        return Err(bad(path, "is a symbol"));
    }
    if depth >= MAX_DEPTH {
        return Err(bad(
            path,
            &format!("is nested deeper than {MAX_DEPTH} levels (is the value cyclic?)"),
        ));
    }
    if Array::is_array(v) {
        let arr: &Array = v.unchecked_ref();
        let mut out = Vec::with_capacity(arr.length() as usize);
        for i in 0..arr.length() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            out.push(walk(&arr.get(i), depth + 1, path)?.unwrap_or(Value::Null));
            path.truncate(len);
        }
        return Ok(Some(Value::Array(out)));
    }
    let Some(obj) = v.dyn_ref::<Object>() else {
        return Err(bad(path, "is not JSON-compatible"));
    };
    let to_json = Reflect::get(obj, &JsValue::from_str("toJSON")).unwrap_or(JsValue::UNDEFINED);
    if let Some(f) = to_json.dyn_ref::<js_sys::Function>() {
        let converted = f
            .call0(obj)
            .map_err(|e| bad(path, &format!("toJSON() threw: {}", error::describe(&e))))?;
        return walk(&converted, depth + 1, path);
    }
    if obj.is_instance_of::<js_sys::Map>() || obj.is_instance_of::<js_sys::Set>() {
        return Err(bad(path, "is a Map or Set; use a plain object or an array"));
    }
    if obj.is_instance_of::<js_sys::ArrayBuffer>() || js_sys::ArrayBuffer::is_view(obj) {
        return Err(bad(
            path,
            "is binary data; send an array of numbers or a base64 string",
        ));
    }
    let keys = Object::keys(obj);
    let mut out = Map::new();
    for key in keys.iter() {
        let Some(k) = key.as_string() else { continue };
        let item = Reflect::get(obj, &key).map_err(|e| {
            bad(
                path,
                &format!("reading .{k} threw: {}", error::describe(&e)),
            )
        })?;
        let len = path.len();
        path.push('.');
        path.push_str(&k);
        if let Some(val) = walk(&item, depth + 1, path)? {
            out.insert(k, val);
        }
        path.truncate(len);
    }
    Ok(Some(Value::Object(out)))
}

/// A finite JS number as a JSON number: an integer when it is one exactly, else a float.
fn number(n: f64) -> Option<Value> {
    if !n.is_finite() {
        return None;
    }
    if n.fract() == 0.0 && n.abs() <= MAX_SAFE_INTEGER {
        return Some(Value::Number(Number::from(n as i64)));
    }
    Number::from_f64(n).map(Value::Number)
}

fn bad(path: &str, what: &str) -> JsValue {
    error::coded(ErrorCode::BadPayload, &format!("{path} {what}"))
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
