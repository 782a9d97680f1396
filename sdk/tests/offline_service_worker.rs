//! The persisted offline change queue (`OfflineChangeQueue`, PROTOCOL.md §13.3) inside a
//! service worker, where there is no `window`: IndexedDB is found on `globalThis`, records
//! are numbered and survive reopening, as in a page (`offline_web.rs`).
#![cfg(all(target_arch = "wasm32", feature = "music"))]

use js_sys::Reflect;
use p3_lanes::wasm::OfflineChangeQueue;
use serde::Serialize;
use serde_json::{json, Value};
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_service_worker);

fn js(v: &Value) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap()
}

fn json_of(v: &JsValue) -> Value {
    serde_wasm_bindgen::from_value(v.clone()).unwrap()
}

#[wasm_bindgen_test]
async fn records_and_reopens_in_a_service_worker() {
    let scope = js_sys::global();
    assert!(
        Reflect::get(&scope, &"window".into())
            .unwrap()
            .is_undefined(),
        "this test must run outside a window"
    );
    let room = format!("sw-{}", js_sys::Math::random().to_bits());
    let open = || async {
        let q = JsFuture::from(OfflineChangeQueue::open(room.as_str().into(), "sw".into()))
            .await
            .unwrap();
        OfflineChangeQueue::try_from_js_value(q).unwrap()
    };
    let q = open().await;
    for i in 1..=2 {
        let c =
            JsFuture::from(q.record(js(&json!({"i": i})), 7.into(), JsValue::from_f64(i as f64)))
                .await
                .unwrap();
        assert_eq!(json_of(&c)["localSeq"], i);
    }
    q.close();
    let again = open().await;
    let state = json_of(&JsFuture::from(again.snapshot()).await.unwrap());
    assert_eq!(state["nextSeq"], 3);
    assert_eq!(state["pending"][1]["op"], json!({"i": 2}));
}
