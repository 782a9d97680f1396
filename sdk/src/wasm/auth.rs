//! Where each handshake's `auth` comes from (issue 12; PROTOCOL.md §3.1, §13.15).
//!
//! `ConnectOptions.auth` is either a proof (`{siwe}`, `{token}`, `{device}`), sent as is on
//! every handshake, or a function `() => AuthOptions | Promise<AuthOptions>` called before
//! *every* handshake (the first, and each re-handshake after the session was lost to a server
//! restart or its TTL). A SIWE signature is single-use (its nonce is consumed), so only the
//! function form lets a SIWE session come back on its own: it fetches a fresh nonce
//! (`P3Client.siweMessage`) and signs again. Without `auth` the SDK signs each handshake with
//! its device key ([`crate::wasm::device_key`]) unless `deviceKey: false`.

use crate::core::auth::HandshakeAuth;
use crate::core::error::ErrorCode;
use crate::wasm::{device_key, error};
use js_sys::{Function, Promise};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The source of the handshake's `auth`, resolved per handshake by [`AuthSource::resolve`].
#[derive(Clone)]
pub(crate) enum AuthSource {
    /// No identity.
    None,
    /// A proof given once (`ConnectOptions.auth` an object): the same bytes every handshake.
    /// A SIWE proof verifies only once, so a re-handshake with it is refused for good.
    Static(HandshakeAuth),
    /// The SDK's device key, signing a fresh server nonce every handshake.
    Device,
    /// The app's function, called for every handshake.
    Callback(Function),
}

impl AuthSource {
    /// Reads `ConnectOptions.auth` (kept as a JS value) and `deviceKey` (default true).
    ///
    /// Errors: `invalid_argument` when `auth` is neither a function nor an `AuthOptions`.
    pub(crate) fn from_options(auth: &JsValue, device_key: bool) -> Result<AuthSource, JsValue> {
        if auth.is_undefined() || auth.is_null() {
            return Ok(if device_key {
                AuthSource::Device
            } else {
                AuthSource::None
            });
        }
        if let Some(f) = auth.dyn_ref::<Function>() {
            return Ok(AuthSource::Callback(f.clone()));
        }
        parse_auth(auth).map(AuthSource::Static)
    }

    /// Whether a refused handshake with this source can never succeed by trying again (the
    /// same static proof would be sent).
    pub(crate) fn is_static(&self) -> bool {
        matches!(self, AuthSource::Static(_))
    }

    /// The `auth` for the next handshake to `base`.
    ///
    /// - `Device`: `Ok(None)` where the runtime has no device key (insecure context) or the
    ///   nonce could not be fetched (logged; see [`device_key::device_auth`]);
    /// - `Callback`: the function's (awaited) result. Errors: what the function threw or its
    ///   promise rejected with, unchanged when it is an `Error` with a string `code`, else an
    ///   `auth_invalid` error naming it; `invalid_argument` when the result is not an
    ///   `AuthOptions`.
    pub(crate) async fn resolve(&self, base: &str) -> Result<Option<HandshakeAuth>, JsValue> {
        match self {
            AuthSource::None => Ok(None),
            AuthSource::Static(a) => Ok(Some(a.clone())),
            AuthSource::Device => Ok(device_key::device_auth(base).await),
            AuthSource::Callback(f) => {
                let value = match f.call0(&JsValue::UNDEFINED) {
                    Ok(v) => JsFuture::from(Promise::resolve(&v)).await,
                    Err(thrown) => Err(thrown),
                }
                .map_err(|thrown| app_error(&thrown))?;
                parse_auth(&value).map(Some)
            }
        }
    }
}

/// An `AuthOptions` object → [`HandshakeAuth`]. Errors: `invalid_argument`.
fn parse_auth(value: &JsValue) -> Result<HandshakeAuth, JsValue> {
    serde_wasm_bindgen::from_value(value.clone()).map_err(|e| {
        error::invalid_argument(&format!(
            "`auth` must be {{siwe: {{message, signature}}}}, {{token}}, {{device}} or a \
             function returning one: {e}"
        ))
    })
}

/// What the app's `auth` function threw: kept when it already carries a `code`, else an
/// `auth_invalid` error with its description.
fn app_error(thrown: &JsValue) -> JsValue {
    let coded = js_sys::Reflect::get(thrown, &"code".into())
        .ok()
        .is_some_and(|c| c.is_string());
    if thrown.is_instance_of::<js_sys::Error>() && coded {
        return thrown.clone();
    }
    error::coded(
        ErrorCode::AuthInvalid,
        &format!("the `auth` function failed: {}", error::describe(thrown)),
    )
}
