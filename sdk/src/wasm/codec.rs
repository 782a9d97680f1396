//! `DictionaryCodec`: the dictionary MessagePack codec ([`crate::core::codec`], PROTOCOL.md
//! "Dictionary codec") exported on its own, for apps that frame payloads themselves and for
//! the Node.js codec benchmark (`scripts/bench-codec-node.mjs`).
//!
//! ```js
//! import { initSync, DictionaryCodec } from './pkg/p3_lanes.js';
//! initSync({ module: fs.readFileSync('pkg/p3_lanes_bg.wasm') });
//! const codec = DictionaryCodec.v2();           // or `new DictionaryCodec(handshake.dictionary)`
//! const bytes = codec.encode({ type: 'pong', serverTime: 1735689600000 });
//! codec.decode(bytes);                          // → { type: 'pong', serverTime: 1735689600000 }
//! ```
//!
//! Conversions: values go in through the same strict walk the client uses for app payloads
//! ([`super::convert`]: rejects `NaN`, `BigInt`, functions, with the offending path), and come
//! out as `JSON.parse` of JSON text written in wasm, so one string crosses the boundary instead
//! of one call per key and value. Measured in the Node benchmark on the seed corpus (round trip,
//! same run): decoding through `serde_wasm_bindgen` instead was 1.2x slower; encoding through
//! `JSON.stringify` + serde_json was 1.5x faster than the strict walk, but would silently turn
//! `NaN` into `null`, so the walk stays. Both paths are still about 3.7x slower than
//! `@msgpack/msgpack` in pure JS: the cost is the JS⇄wasm conversions, not the codec.

use crate::core::codec::{decode_msgpack, encode_msgpack};
use crate::core::dictionary::{Dictionary, DictionaryWire};
use crate::core::error::ErrorCode;
use crate::wasm::convert::{value_from_js, value_to_js};
use crate::wasm::error::{coded, invalid_argument};
use wasm_bindgen::prelude::*;

/// The dictionary MessagePack codec with one dictionary (or none) in force.
#[wasm_bindgen]
pub struct DictionaryCodec {
    dict: Option<Dictionary>,
}

#[wasm_bindgen]
impl DictionaryCodec {
    /// A codec with `dictionary` (the handshake response's `{version, tokens, indexMap}`) in
    /// force, or none when `dictionary` is `null` (plain MessagePack any library decodes).
    ///
    /// Errors: `invalid_argument` when `dictionary` is not a valid dictionary.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "HandshakeResponse['dictionary'] | null")]
        dictionary: JsValue,
    ) -> Result<DictionaryCodec, JsValue> {
        if dictionary.is_null() {
            return Ok(DictionaryCodec { dict: None });
        }
        let wire: DictionaryWire = serde_wasm_bindgen::from_value(dictionary)
            .map_err(|e| invalid_argument(&format!("dictionary: {e}")))?;
        let dict = Dictionary::from_wire(&wire)
            .map_err(|e| invalid_argument(&format!("dictionary: {e}")))?;
        Ok(DictionaryCodec { dict: Some(dict) })
    }

    /// A codec with the built-in dictionary v1 (keys only; what server-stub negotiated
    /// before v2).
    pub fn v1() -> DictionaryCodec {
        DictionaryCodec {
            dict: Some(Dictionary::v1()),
        }
    }

    /// A codec with the built-in dictionary v2 (keys and listed string values as indices;
    /// what server-stub negotiates).
    pub fn v2() -> DictionaryCodec {
        DictionaryCodec {
            dict: Some(Dictionary::v2()),
        }
    }

    /// The dictionary version in force, or `undefined` for plain MessagePack.
    #[wasm_bindgen(getter, js_name = dictionaryVersion)]
    pub fn dictionary_version(&self) -> Option<u32> {
        self.dict.as_ref().map(Dictionary::version)
    }

    /// Encodes a JSON-compatible value as one MessagePack value (listed keys as indices).
    ///
    /// Errors: `bad_payload` naming the path of a part JSON cannot represent.
    pub fn encode(
        &self,
        #[wasm_bindgen(unchecked_param_type = "unknown")] value: JsValue,
    ) -> Result<Vec<u8>, JsValue> {
        let v = value_from_js(&value)?;
        Ok(encode_msgpack(&v, self.dict.as_ref()))
    }

    /// Decodes one MessagePack value (resolving dictionary indices) into plain JS values.
    ///
    /// Errors: `bad_payload` for bytes that are not one valid payload.
    #[wasm_bindgen(unchecked_return_type = "unknown")]
    pub fn decode(&self, bytes: &[u8]) -> Result<JsValue, JsValue> {
        let v = decode_msgpack(bytes, self.dict.as_ref())
            .map_err(|e| coded(ErrorCode::BadPayload, &e.to_string()))?;
        Ok(value_to_js(&v))
    }
}
