//! Binding pieces of `PeerMesh` that need JS values but no RTCPeerConnection: the
//! `getStats()` report walk, option parsing, the signal filter.

use super::driver::{is_signal, Options};
use super::rtc::selected_pair;
use js_sys::{Map, Object, Reflect};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

fn obj(fields: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in fields {
        Reflect::set(&o, &JsValue::from_str(k), v).unwrap();
    }
    o.into()
}

fn code(e: &JsValue) -> String {
    Reflect::get(e, &"code".into())
        .unwrap()
        .as_string()
        .unwrap()
}

#[wasm_bindgen_test]
fn stats_report_selected_pair() {
    // An RTCStatsReport is a maplike of id -> stats: a Map has the same iteration.
    let report = Map::new();
    let pair = |id: &str, rtt: f64, nominated: bool, state: &str| {
        obj(&[
            ("id", id.into()),
            ("type", "candidate-pair".into()),
            ("currentRoundTripTime", rtt.into()),
            ("nominated", nominated.into()),
            ("state", state.into()),
        ])
    };
    report.set(&"CP1".into(), &pair("CP1", 0.5, false, "failed"));
    report.set(&"CP2".into(), &pair("CP2", 0.012, true, "succeeded"));
    report.set(&"CP3".into(), &pair("CP3", 0.2, true, "succeeded"));
    // No transport entry: the first nominated succeeded pair.
    let p = selected_pair(&report).unwrap();
    assert_eq!(Reflect::get(&p, &"id".into()).unwrap(), "CP2");
    // The transport's selected pair wins.
    report.set(
        &"T1".into(),
        &obj(&[
            ("type", "transport".into()),
            ("selectedCandidatePairId", "CP3".into()),
        ]),
    );
    let p = selected_pair(&report).unwrap();
    assert_eq!(Reflect::get(&p, &"id".into()).unwrap(), "CP3");
    assert!(selected_pair(&Map::new()).is_none());
    assert!(selected_pair(&JsValue::NULL).is_none());
}

#[wasm_bindgen_test]
fn options_are_checked() {
    let o = Options::parse(&JsValue::UNDEFINED).unwrap();
    assert_eq!(o.stats_interval_ms, 1000);
    assert!(o.rtc_configuration.is_none() && o.controller.is_none());
    let o = Options::parse(&obj(&[
        (
            "rtcConfiguration",
            obj(&[("iceServers", js_sys::Array::new().into())]),
        ),
        ("statsIntervalMs", 0.into()),
        ("controller", "abc".into()),
    ]))
    .unwrap();
    assert_eq!(o.stats_interval_ms, 0);
    assert_eq!(o.controller.as_deref(), Some("abc"));
    assert!(o.rtc_configuration.is_some());
    for bad in [
        obj(&[("statsIntervalMs", (-1).into())]),
        obj(&[("statsIntervalMs", f64::NAN.into())]),
        obj(&[("rtcConfiguration", "stun:x".into())]),
        obj(&[("controller", 5.into())]),
        JsValue::from_str("options"),
    ] {
        let e = Options::parse(&bad).err().expect("refused");
        assert_eq!(code(&e), "invalid_argument");
    }
}

#[wasm_bindgen_test]
fn only_signal_shapes_are_signals() {
    let v = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert!(is_signal(&v(
        r#"{"type":"offer","from":"a","to":"b","sdp":"x"}"#
    )));
    assert!(is_signal(&v(r#"{"type":"end","from":"a","to":"b"}"#)));
    assert!(!is_signal(&v(r#"{"type":"chat","from":"a","to":"b"}"#)));
    assert!(!is_signal(&v(r#"{"type":"ice","candidate":"c"}"#)));
    assert!(!is_signal(&v(r#"["offer"]"#)));
}
