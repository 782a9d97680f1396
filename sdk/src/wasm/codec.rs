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
//! Conversions: values cross the JS⇄wasm boundary as a value tape ([`crate::core::tape`],
//! PROTOCOL.md §8.1): `encode` walks the value in JS (strictly: `NaN`, `BigInt`, functions
//! and the like are refused with the offending path, see [`super::convert`]) into node words,
//! float64s and one text, copied into wasm in bulk, where the dictionary MessagePack is
//! written; `decode` checks and reads the MessagePack in wasm into a tape in wasm memory that
//! a small JS reader turns into objects, with dictionary strings taken from a JS copy of the
//! tokens (no text decoding for them). Measured in the Node benchmark on the seed corpus
//! (one run, Node 20, process CPU time on a loaded 2-core machine): round trip 0.37 of
//! `@msgpack/msgpack`'s time (0.34-0.59 over four runs), 1.4 of JSON's best run; bytes 0.30 of
//! JSON and 0.69 of msgpackr with warm records (0.94 without the handshake response, whose
//! dictionary tokens we write as indices).
//! Earlier designs, same benchmark: a strict walk with one wasm-bindgen call per key and value
//! plus `JSON.parse` of JSON text written in wasm: 3.6x slower than `@msgpack/msgpack`;
//! `JSON.stringify` text into wasm: 1.5x faster than that walk but silently turning `NaN` into
//! `null`.

use crate::core::dictionary::{Dictionary, DictionaryWire};
use crate::core::error::ErrorCode;
use crate::core::tape::{decode_to_tape, encode_tape, Tape};
use crate::wasm::convert::{read_tape, tables, tape_bug, tape_ref, write_tape};
use crate::wasm::error::{coded, invalid_argument};
use std::cell::RefCell;
use wasm_bindgen::prelude::*;

/// The dictionary MessagePack codec with one dictionary (or none) in force.
#[wasm_bindgen]
pub struct DictionaryCodec {
    dict: Option<Dictionary>,
    /// JS lookup tables of `dict` (`null` without one), built once.
    tables: JsValue,
    /// Decoding scratch, reused across calls.
    tape: RefCell<Tape>,
}

impl DictionaryCodec {
    fn with(dict: Option<Dictionary>) -> DictionaryCodec {
        DictionaryCodec {
            tables: tables(dict.as_ref()),
            dict,
            tape: RefCell::new(Tape::default()),
        }
    }
}

#[wasm_bindgen]
impl DictionaryCodec {
    /// A codec with `dictionary` (the handshake response's `{version, tokens, indexMap, shapes?}`) in
    /// force, or none when `dictionary` is `null` (plain MessagePack any library decodes).
    ///
    /// Errors: `invalid_argument` when `dictionary` is not a valid dictionary.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "HandshakeResponse['dictionary'] | null")]
        dictionary: JsValue,
    ) -> Result<DictionaryCodec, JsValue> {
        if dictionary.is_null() {
            return Ok(DictionaryCodec::with(None));
        }
        let wire: DictionaryWire = serde_wasm_bindgen::from_value(dictionary)
            .map_err(|e| invalid_argument(&format!("dictionary: {e}")))?;
        let dict = Dictionary::from_wire(&wire)
            .map_err(|e| invalid_argument(&format!("dictionary: {e}")))?;
        Ok(DictionaryCodec::with(Some(dict)))
    }

    /// A codec with the built-in dictionary v1 (keys only; what server-stub negotiated
    /// before v2).
    pub fn v1() -> DictionaryCodec {
        DictionaryCodec::with(Some(Dictionary::v1()))
    }

    /// A codec with the built-in dictionary v2 (keys and listed string values as indices).
    pub fn v2() -> DictionaryCodec {
        DictionaryCodec::with(Some(Dictionary::v2()))
    }

    /// A codec with the built-in dictionary v3 (v2 plus listed shapes, PROTOCOL.md §8.2; what
    /// server-stub negotiates).
    pub fn v3() -> DictionaryCodec {
        DictionaryCodec::with(Some(Dictionary::v3()))
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
        let t = write_tape(&value, &self.tables)?;
        encode_tape(tape_ref(&t), self.dict.as_ref()).map_err(|e| tape_bug(&e))
    }

    /// Decodes one MessagePack value (resolving dictionary indices) into plain JS values.
    ///
    /// Errors: `bad_payload` for bytes that are not one valid payload.
    #[wasm_bindgen(unchecked_return_type = "unknown")]
    pub fn decode(&self, bytes: &[u8]) -> Result<JsValue, JsValue> {
        let mut t = self.tape.borrow_mut();
        decode_to_tape(bytes, self.dict.as_ref(), &mut t)
            .map_err(|e| coded(ErrorCode::BadPayload, &e.to_string()))?;
        Ok(read_tape(&t, &self.tables))
    }
}
