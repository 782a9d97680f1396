//! The SDK's device key (issue 12; PROTOCOL.md §13.15): in open rooms, unless the app gives
//! `auth` or `deviceKey: false`, every handshake (the first and each re-handshake after a
//! session expired or the server restarted) carries `auth.device`, a fresh signature over a
//! server nonce by this browser profile's ECDSA P-256 key. The key is made and kept by
//! `js/device_key.js` (WebCrypto, non-extractable, IndexedDB); the text signed is the core's
//! [`device_auth_message`](crate::core::auth::device_auth_message).

use crate::core::auth::{DeviceAuth, HandshakeAuth, DEVICE_AUTH_PREFIX};
use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/js/device_key.js")]
extern "C" {
    #[wasm_bindgen(js_name = deviceKeyAuth)]
    fn device_key_auth_js(nonce_url: &str, prefix: &str) -> Promise;
}

/// `auth.device` signed over a nonce from `base`'s nonce route, or `None` (logged) where the
/// runtime has no WebCrypto or IndexedDB (an insecure context) or the nonce request fails:
/// the session then has no identity and the DJ role is bound to the session, as before.
pub(crate) async fn device_auth(base: &str) -> Option<HandshakeAuth> {
    let url = format!("{base}/api/protocol/v2/auth/nonce");
    let result = JsFuture::from(device_key_auth_js(&url, DEVICE_AUTH_PREFIX)).await;
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            web_sys::console::warn_2(
                &JsValue::from_str("p3-lanes: no device key, connecting without identity:"),
                &e,
            );
            return None;
        }
    };
    serde_wasm_bindgen::from_value::<DeviceAuth>(value)
        .ok()
        .map(HandshakeAuth::Device)
}
