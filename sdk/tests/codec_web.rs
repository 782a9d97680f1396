//! Browser tests of the exported `DictionaryCodec` (PROTOCOL.md §8, §8.1): values cross as a
//! value tape written and read by the package's JS snippet, so these run in real Chromium
//! through the `#[wasm_bindgen]` API, with JS values built by JS itself (NaN, BigInt, cycles,
//! `__proto__` keys, lone surrogates cannot come from serde).
#![cfg(all(target_arch = "wasm32", feature = "lanes"))]

use js_sys::{Function, Reflect, Uint8Array};
use p3_lanes::wasm::DictionaryCodec;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

/// The value of the JS expression `src`.
fn js(src: &str) -> JsValue {
    Function::new_no_args(&format!("return ({src});"))
        .call0(&JsValue::NULL)
        .unwrap()
}

/// `JSON.stringify(v)`, for comparing plain values.
fn text(v: &JsValue) -> String {
    js_sys::JSON::stringify(v).unwrap().into()
}

fn round_trip(codec: &DictionaryCodec, v: &JsValue) -> JsValue {
    let bytes = codec.encode(v.clone()).unwrap();
    codec.decode(&bytes).unwrap()
}

/// `(code, message)` of a thrown error, after checking it is a real `Error`.
fn error_of(err: JsValue) -> (String, String) {
    assert!(
        err.is_instance_of::<js_sys::Error>(),
        "not an Error: {err:?}"
    );
    let code = Reflect::get(&err, &"code".into()).unwrap().as_string();
    let message = err.unchecked_into::<js_sys::Error>().message().into();
    (code.unwrap_or_default(), message)
}

#[wasm_bindgen_test]
fn values_round_trip_exactly_as_json_would() {
    for codec in [
        DictionaryCodec::v2(),
        DictionaryCodec::v1(),
        DictionaryCodec::new(JsValue::NULL).unwrap(),
    ] {
        for src in [
            r#"{"type": "music-control", "action": "seek", "data": {"position": 45.2, "trackId": "abc123", "timestamp": 1735689600123, "controllerId": "user-17"}, "sequence": 156}"#,
            r#"[null, true, false, 0, -1, 268435455, 268435456, 9007199254740993, -9007199254740993, 1.5, -0.25, 1e300, 5e-324, "", "Control", "é😀\u2028 ✓"]"#,
            r#"{"a": {"b": {"c": [[], {}, [{}]]}}, "Messaging": "x", "json": "msgpack", "long": "y".repeat(100000)}"#,
            r#""music-control""#,
            "12",
            "null",
        ] {
            let v = js(src);
            assert_eq!(text(&round_trip(&codec, &v)), text(&v), "{src}");
        }
    }
}

#[wasm_bindgen_test]
fn json_rules_for_odd_values() {
    let codec = DictionaryCodec::v2();
    // undefined: omitted from objects, null in arrays and at the top; Date through toJSON.
    let v = js(r#"{"a": undefined, "b": [undefined, 1], "when": new Date(0)}"#);
    assert_eq!(
        text(&round_trip(&codec, &v)),
        r#"{"b":[null,1],"when":"1970-01-01T00:00:00.000Z"}"#
    );
    assert!(round_trip(&codec, &JsValue::UNDEFINED).is_null());
    // `__proto__` comes back as an own key, never as the prototype (JSON.parse's rule).
    let back = round_trip(
        &codec,
        &js(r#"JSON.parse('{"__proto__": {"polluted": 1}, "x": 2}')"#),
    );
    assert_eq!(text(&back), r#"{"__proto__":{"polluted":1},"x":2}"#);
    assert!(Reflect::get(&back, &"polluted".into())
        .unwrap()
        .is_undefined());
    // A lone surrogate cannot be UTF-8: it becomes U+FFFD, as TextEncoder writes it.
    let back = round_trip(&codec, &js(r#"["a\ud800b", {"k\udc00": 1}]"#));
    assert_eq!(text(&back), text(&js(r#"["a\ufffdb", {"k\ufffd": 1}]"#)));
}

#[wasm_bindgen_test]
fn listed_keys_and_values_are_indices() {
    let codec = DictionaryCodec::v2();
    assert_eq!(codec.dictionary_version(), Some(2));
    // map(1), key index, fixext 1 (d4 64 i): 5 bytes for {"type": "music-control"}.
    let bytes = codec.encode(js(r#"{"type": "music-control"}"#)).unwrap();
    assert_eq!(bytes.len(), 5);
    assert_eq!(&bytes[2..4], &[0xd4, 0x64]);
    // v1 indexes keys only.
    let v1 = DictionaryCodec::v1()
        .encode(js(r#"{"type": "music-control"}"#))
        .unwrap();
    assert_eq!(v1.len(), 2 + 1 + "music-control".len());
    // Exact f32 floats take 5 bytes.
    assert_eq!(
        codec.encode(js("42.5")).unwrap(),
        vec![0xca, 0x42, 0x2a, 0, 0]
    );
}

#[wasm_bindgen_test]
fn listed_shapes_cross_the_boundary_in_key_order() {
    let codec = DictionaryCodec::v3();
    assert_eq!(codec.dictionary_version(), Some(3));
    let pong = r#"{"type": "pong", "clientTime": 123456.5, "serverTime": 1735689600000}"#;
    let bytes = codec.encode(js(pong)).unwrap();
    // ext 8, 17 data bytes, shape 7: the values only (PROTOCOL.md §8.2).
    assert_eq!(&bytes[..3], &[0xc7, 17, 7]);
    assert_eq!(bytes.len(), 20);
    let back = round_trip(&codec, &js(pong));
    assert_eq!(
        text(&back),
        r#"{"type":"pong","clientTime":123456.5,"serverTime":1735689600000}"#
    );
    // Nested shapes, and maps that are not exactly a shape (order, extra key) stay maps.
    for src in [
        r#"{"type": "ice", "roomId": "r", "data": {"candidate": "c", "sdpMid": "0", "sdpMLineIndex": 0}}"#,
        r#"{"serverTime": 1, "type": "pong", "clientTime": 2}"#,
        r#"{"type": "pong", "clientTime": 2, "serverTime": 1, "extra": 3}"#,
    ] {
        let back = round_trip(&codec, &js(&format!("({src})")));
        assert_eq!(text(&back), text(&js(&format!("({src})"))), "{src}");
    }
    assert_eq!(
        codec
            .encode(js(r#"{"serverTime": 1, "type": "pong", "clientTime": 2}"#))
            .unwrap()[0],
        0x83
    );
    // A malformed shape is a typed error.
    let (code, _) = error_of(codec.decode(&[0xd5, 7, 1, 2]).unwrap_err());
    assert_eq!(code, "bad_payload");
}

#[wasm_bindgen_test]
fn values_json_cannot_hold_are_refused_with_their_path() {
    let codec = DictionaryCodec::v2();
    for (src, path) in [
        (r#"{"a": [1, NaN]}"#, "value.a[1] is NaN"),
        (r#"{"big": 1n}"#, "value.big is a BigInt"),
        (r#"[{"f": () => 1}]"#, "value[0].f is a function"),
        (r#"{"m": new Map()}"#, "value.m is a Map or Set"),
        (r#"{"b": new Uint8Array(2)}"#, "value.b is binary data"),
        (r#"{"s": Symbol("x")}"#, "value.s is a symbol"),
        (r#"Infinity"#, "value is Infinity"),
        (
            r#"(() => { const o = {}; o.self = o; return o; })()"#,
            "deeper than 128",
        ),
        (
            r#"{"d": {toJSON() { throw new Error("nope"); }}}"#,
            "value.d toJSON() threw: nope",
        ),
    ] {
        let (code, message) = error_of(codec.encode(js(src)).unwrap_err());
        assert_eq!(code, "bad_payload", "{src}");
        assert!(message.contains(path), "{src}: {message}");
    }
    // The codec is still usable after a refusal.
    assert_eq!(text(&round_trip(&codec, &js("[1]"))), "[1]");
}

#[wasm_bindgen_test]
fn bad_bytes_are_bad_payload() {
    let codec = DictionaryCodec::v2();
    for bytes in [
        &[0xc1][..],
        &[0xc0, 0xc0],
        &[0xd4, 0x01, 0x01],
        &[0xd4, 0x64, 0xff],
        &[0x82, 0x01, 0xc0, 0x01, 0xc0],
        &[0xa2, 0xff, 0xfe],
        &[],
    ] {
        let (code, _) = error_of(codec.decode(bytes).unwrap_err());
        assert_eq!(code, "bad_payload", "{bytes:?}");
    }
    // Output is a fresh Uint8Array each time.
    let a: JsValue = Uint8Array::from(&codec.encode(js("[1, 2]")).unwrap()[..]).into();
    assert!(a.is_instance_of::<Uint8Array>());
}

#[wasm_bindgen_test]
fn app_code_inside_a_walk_may_encode_too() {
    // A getter that encodes with another codec while this one walks its object.
    let inner: JsValue = DictionaryCodec::v2().into();
    let make = Function::new_with_args(
        "c",
        r#"return {
            "type": "pong",
            get nested() { return c.encode({"type": "ping", "list": ["Control", 1.5, "x"]}).length; },
            get refused() { try { c.encode({"bad": NaN}); } catch (e) { return e.code; } },
            "after": ["Messaging", 2.5, "tail"]
        };"#,
    );
    let value = make.call1(&JsValue::NULL, &inner).unwrap();
    let codec = DictionaryCodec::v2();
    let nested = codec
        .encode(js(r#"{"type": "ping", "list": ["Control", 1.5, "x"]}"#))
        .unwrap()
        .len();
    let back = round_trip(&codec, &value);
    assert_eq!(
        text(&back),
        format!(
            r#"{{"type":"pong","nested":{nested},"refused":"bad_payload","after":["Messaging",2.5,"tail"]}}"#
        )
    );
}
