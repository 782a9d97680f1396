//! The one helper that turns a failure into what JavaScript sees: a real `Error` (so stacks
//! and `instanceof Error` work) named `P3Error`, with a string `code` property taken from
//! [`ErrorCode`] (matrix-sdk-crypto-wasm habit), so apps can `switch (err.code)`.

use crate::core::client::ClientError;
use crate::core::error::ErrorCode;
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};

/// `isP3Error(value)`: true when `value` is an error of this SDK (or of another copy of it,
/// e.g. another entry point's): an `Error` named `P3Error` with a string `code`. In
/// TypeScript it narrows `unknown` (a `catch` variable) to `P3Error`, so `err.code` is an
/// `ErrorCode`.
#[wasm_bindgen(js_name = isP3Error, unchecked_return_type = "value is P3Error")]
pub fn is_p3_error(#[wasm_bindgen(unchecked_param_type = "unknown")] value: &JsValue) -> bool {
    value
        .dyn_ref::<js_sys::Error>()
        .is_some_and(|e| e.name() == "P3Error")
        && code_of(value).is_some()
}

/// A JS `Error` named `P3Error` with `.code = code` and `.message = message`.
///
/// `code` is a string rather than an [`ErrorCode`] so that codes from a newer server pass
/// through unchanged.
pub(crate) fn js_error(code: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    err.set_name("P3Error");
    // Setting a property on a fresh Error object cannot fail.
    let _ = js_sys::Reflect::set(&err, &JsValue::from_str("code"), &JsValue::from_str(code));
    err.into()
}

/// [`js_error`] for one of our own codes.
pub(crate) fn coded(code: ErrorCode, message: &str) -> JsValue {
    js_error(code.as_str(), message)
}

/// The JS error for a refusal of the core [`crate::core::client::Client`].
pub(crate) fn client_error(e: &ClientError) -> JsValue {
    coded(e.code(), &e.to_string())
}

/// A JS `Error` with `code` `invalid_argument`.
pub(crate) fn invalid_argument(message: &str) -> JsValue {
    coded(ErrorCode::InvalidArgument, message)
}

/// The string `code` of a thrown JS value, if it has one.
pub(crate) fn code_of(thrown: &JsValue) -> Option<String> {
    js_sys::Reflect::get(thrown, &"code".into())
        .ok()
        .and_then(|c| c.as_string())
}

/// A short description of a thrown JS value (an `Error`'s message, or its string form), for
/// error messages and the console.
pub(crate) fn describe(thrown: &JsValue) -> String {
    if let Some(e) = thrown.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    thrown.as_string().unwrap_or_else(|| format!("{thrown:?}"))
}
