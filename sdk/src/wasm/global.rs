//! The JavaScript global scope, whichever it is: a window, a dedicated or shared worker, or a
//! service worker. Everything the driver needs from the host (the monotonic clock, timers,
//! `fetch`, the CSPRNG) is looked up on `globalThis` with `Reflect`, never through
//! `web_sys::window()`, which is `None` in workers.

use crate::wasm::error;
use js_sys::{Function, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

/// Handles on the global scope's clock and timer functions, looked up once per client.
pub(crate) struct Global {
    scope: Object,
    performance: web_sys::Performance,
    set_timeout: Function,
    clear_timeout: Function,
}

impl Global {
    /// Looks up `performance`, `setTimeout` and `clearTimeout` on `globalThis`.
    ///
    /// Errors: a JS error with code `internal` if one is missing (not a browser-like host).
    pub(crate) fn get() -> Result<Global, JsValue> {
        let scope = js_sys::global();
        let performance = member(&scope, "performance")?.unchecked_into();
        let set_timeout = function(&scope, "setTimeout")?;
        let clear_timeout = function(&scope, "clearTimeout")?;
        Ok(Global {
            scope,
            performance,
            set_timeout,
            clear_timeout,
        })
    }

    /// The monotonic clock the core runs on: `performance.now()` in whole ms (floored).
    pub(crate) fn now_ms(&self) -> u64 {
        self.performance.now().max(0.0) as u64
    }

    /// `performance.now()` unrounded, ms: the local clock of music sync
    /// ([`crate::core::sync::clock`]), where sub-ms precision matters.
    pub(crate) fn now_precise_ms(&self) -> f64 {
        self.performance.now()
    }

    /// `setTimeout(callback, delay_ms)`; returns the timer id.
    pub(crate) fn set_timeout(&self, callback: &JsValue, delay_ms: u64) -> JsValue {
        self.set_timeout
            .call2(&self.scope, callback, &JsValue::from_f64(delay_ms as f64))
            .unwrap_or(JsValue::UNDEFINED)
    }

    /// `clearTimeout(id)`.
    pub(crate) fn clear_timeout(&self, id: &JsValue) {
        let _ = self.clear_timeout.call1(&self.scope, id);
    }
}

/// `globalThis.fetch`, bound to the global scope when called.
pub(crate) fn fetch(input: &JsValue, init: &JsValue) -> Result<JsValue, JsValue> {
    let scope = js_sys::global();
    function(&scope, "fetch")?.call2(&scope, input, init)
}

/// `globalThis.indexedDB` (windows, workers and service workers alike).
///
/// Errors: a JS error with code `storage_unavailable` if it is missing or reading it throws
/// (opaque origins such as `data:` pages or sandboxed frames, some private modes).
pub(crate) fn indexed_db() -> Result<web_sys::IdbFactory, JsValue> {
    let unavailable = |why: &str| {
        error::coded(
            crate::core::error::ErrorCode::StorageUnavailable,
            &format!("IndexedDB is not available in this context: {why}"),
        )
    };
    match Reflect::get(&js_sys::global(), &JsValue::from_str("indexedDB")) {
        Ok(v) if !v.is_undefined() && !v.is_null() => Ok(v.unchecked_into()),
        Ok(_) => Err(unavailable("globalThis.indexedDB is missing")),
        Err(e) => Err(unavailable(&error::describe(&e))),
    }
}

/// `globalThis.setTimeout(callback, delay_ms)` without a [`Global`] at hand (used through
/// [`crate::wasm::runtime::after`]).
pub(crate) fn set_timeout_once(callback: &JsValue, delay_ms: u64) -> Result<JsValue, JsValue> {
    let scope = js_sys::global();
    function(&scope, "setTimeout")?.call2(&scope, callback, &JsValue::from_f64(delay_ms as f64))
}

/// Whether `globalThis[name]` is defined (e.g. `"WebSocket"`, `"EventSource"`).
pub(crate) fn has(name: &str) -> bool {
    member(&js_sys::global(), name).is_ok()
}

/// Fills `out` from the host's CSPRNG, `globalThis.crypto.getRandomValues` (every browser,
/// worker and Node.js ≥ 19). There is no fallback to `Math.random`, whatever the use.
///
/// Errors: a JS error with code `crypto_unavailable` if `crypto.getRandomValues` is missing or
/// throws (PROTOCOL.md §7, §13.4).
pub(crate) fn random_bytes(out: &mut [u8]) -> Result<(), JsValue> {
    let unavailable = |why: &str| {
        error::coded(
            crate::core::error::ErrorCode::CryptoUnavailable,
            &format!("no cryptographically secure random source: {why}"),
        )
    };
    let crypto = member(&js_sys::global(), "crypto")
        .map_err(|_| unavailable("globalThis.crypto is not available"))?;
    let get: Function = Reflect::get(&crypto, &JsValue::from_str("getRandomValues"))
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| unavailable("crypto.getRandomValues is not a function"))?;
    // getRandomValues takes at most 65 536 bytes per call.
    for chunk in out.chunks_mut(65_536) {
        let len = u32::try_from(chunk.len()).expect("chunks of at most 65 536 bytes");
        let buf = js_sys::Uint8Array::new_with_length(len);
        get.call1(&crypto, &buf)
            .map_err(|_| unavailable("crypto.getRandomValues threw"))?;
        buf.copy_to(chunk);
    }
    Ok(())
}

/// 64 random bits from [`random_bytes`] (seeds, default ids).
///
/// Errors: `crypto_unavailable`, as [`random_bytes`].
pub(crate) fn random_u64() -> Result<u64, JsValue> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn member(scope: &Object, name: &str) -> Result<JsValue, JsValue> {
    match Reflect::get(scope, &JsValue::from_str(name)) {
        Ok(v) if !v.is_undefined() && !v.is_null() => Ok(v),
        _ => Err(error::coded(
            crate::core::error::ErrorCode::Internal,
            &format!("globalThis.{name} is not available in this JavaScript environment"),
        )),
    }
}

fn function(scope: &Object, name: &str) -> Result<Function, JsValue> {
    member(scope, name)?.dyn_into::<Function>().map_err(|_| {
        error::coded(
            crate::core::error::ErrorCode::Internal,
            &format!("globalThis.{name} is not a function"),
        )
    })
}
