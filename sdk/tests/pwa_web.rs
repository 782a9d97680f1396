//! Browser tests of the PWA cache guard's JavaScript API (`checkVersion`, `CacheGuard`)
//! against a real server-stub (`P3_SERVER_URL`, read at compile time; see `web.rs`). They stay
//! on the paths that do not reload the test page: option errors, skips, up-to-date, and a
//! stale page whose `beforePurge` hook postpones. The purge and reload paths run in the
//! end-to-end tests (`tests/pwa-*.spec.mjs`) with a real service worker.
#![cfg(all(target_arch = "wasm32", feature = "pwa"))]

use js_sys::{Object, Promise, Reflect};
use p3_lanes::wasm::{check_version, CacheGuard};
use serde::Serialize;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const SERVER: &str = env!("P3_SERVER_URL");

fn js(v: &Value) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap()
}

fn json_of(v: &JsValue) -> Value {
    serde_wasm_bindgen::from_value(v.clone()).unwrap()
}

fn code_of(err: &JsValue) -> String {
    assert!(
        err.is_instance_of::<js_sys::Error>(),
        "not an Error: {err:?}"
    );
    Reflect::get(err, &JsValue::from_str("code"))
        .unwrap()
        .as_string()
        .unwrap()
}

/// Options as JSON plus JS functions set on top.
fn options(v: Value, functions: &[(&str, &JsValue)]) -> JsValue {
    let o = js(&v);
    for (k, f) in functions {
        Reflect::set(&o, &JsValue::from_str(k), f).unwrap();
    }
    o
}

async fn server_version() -> String {
    let window = web_sys::window().unwrap();
    let resp: web_sys::Response =
        JsFuture::from(window.fetch_with_str(&format!("{SERVER}/api/version")))
            .await
            .unwrap()
            .unchecked_into();
    let body = JsFuture::from(resp.json().unwrap()).await.unwrap();
    json_of(&body)["version"].as_str().unwrap().to_owned()
}

async fn cache_exists(name: &str) -> bool {
    let caches = web_sys::window().unwrap().caches().unwrap();
    JsFuture::from(caches.has(name))
        .await
        .unwrap()
        .as_bool()
        .unwrap()
}

#[wasm_bindgen_test]
fn bad_options_are_invalid_argument() {
    for bad in [
        json!({"maxAttempts": 0}),
        json!({"maxAttempts": 1.5}),
        json!({"cachePrefix": 5}),
        json!({"cachePrefix": ["ok", ""]}),
        json!({"storageKey": ""}),
        json!({"retryAfterMs": -1}),
        json!({"beforePurge": "not a function"}),
        json!({"currentVersion": 7}),
        json!({"maxAttempts": "3"}),
        json!({"recheckOnVisible": "yes"}),
        json!({"versionUrl": ["/v"]}),
    ] {
        let err = CacheGuard::new(js(&bad), JsValue::UNDEFINED)
            .err()
            .unwrap_or_else(|| panic!("{bad} accepted"));
        assert_eq!(code_of(&err), "invalid_argument", "{bad}");
        // The message names the offending field.
        let message: String = Reflect::get(&err, &"message".into())
            .unwrap()
            .as_string()
            .unwrap();
        let field = bad.as_object().unwrap().keys().next().unwrap();
        assert!(message.contains(field.as_str()), "{bad}: {message}");
    }
}

#[wasm_bindgen_test]
async fn without_a_page_version_nothing_is_fetched() {
    // The test page has no <meta name="app-version">.
    let result = JsFuture::from(check_version(
        js(&json!({"storageKey": "p3-test-none"})),
        JsValue::UNDEFINED,
    ))
    .await
    .unwrap();
    assert_eq!(
        json_of(&result),
        json!({"status": "skipped", "reason": "no-page-version", "pageVersion": null})
    );
}

#[wasm_bindgen_test]
async fn an_unreachable_version_endpoint_is_skipped() {
    let guard = CacheGuard::new(
        js(&json!({
            "currentVersion": "1",
            "versionUrl": "http://127.0.0.1:9/api/version",
            "storageKey": "p3-test-unreachable",
        })),
        JsValue::UNDEFINED,
    )
    .unwrap();
    let result = JsFuture::from(guard.check()).await.unwrap();
    assert_eq!(json_of(&result)["reason"], "unreachable");
    guard.stop();
}

#[wasm_bindgen_test]
async fn same_version_is_up_to_date_and_reported_as_an_event() {
    let version = server_version().await;
    let events = Rc::new(RefCell::new(Vec::<Value>::new()));
    let sink = events.clone();
    let on_event = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        sink.borrow_mut().push(json_of(&ev));
    })
    .into_js_value();
    let guard = CacheGuard::new(
        options(
            json!({
                "currentVersion": version,
                "versionUrl": format!("{SERVER}/api/version"),
                "storageKey": "p3-test-same",
            }),
            &[("onEvent", &on_event)],
        ),
        JsValue::UNDEFINED,
    )
    .unwrap();
    assert!(guard.tab_id().starts_with("1-tab-"), "{}", guard.tab_id());
    // Two calls share one check.
    let (a, b) = (guard.check(), guard.check());
    assert!(Object::is(&a, &b));
    let result = JsFuture::from(a).await.unwrap();
    assert_eq!(
        json_of(&result),
        json!({"status": "up-to-date", "version": version, "afterPurge": false})
    );
    assert_eq!(
        *events.borrow(),
        vec![json!({"type": "checked", "result": json_of(&result)})]
    );
    guard.stop();
    let err = JsFuture::from(guard.check()).await.unwrap_err();
    assert_eq!(code_of(&err), "closed");
}

#[wasm_bindgen_test]
async fn a_postponing_hook_stops_the_purge_before_anything_is_touched() {
    let calls = Rc::new(RefCell::new(Vec::<Value>::new()));
    let sink = calls.clone();
    // First answer: wait 50 ms and check again; second: not now.
    let hook = Closure::<dyn FnMut(JsValue) -> JsValue>::new(move |info: JsValue| {
        sink.borrow_mut().push(json_of(&info));
        if sink.borrow().len() == 1 {
            JsValue::from_f64(50.0)
        } else {
            Promise::resolve(&JsValue::FALSE).into()
        }
    })
    .into_js_value();
    let guard = CacheGuard::new(
        options(
            json!({
                "currentVersion": "an-old-build",
                "versionUrl": format!("{SERVER}/api/version"),
                "storageKey": "p3-test-postpone",
                "claimWindowMs": 0,
            }),
            &[("beforePurge", &hook)],
        ),
        JsValue::UNDEFINED,
    )
    .unwrap();
    let version = server_version().await;
    let result = JsFuture::from(guard.check()).await.unwrap();
    assert_eq!(
        json_of(&result),
        json!({"status": "postponed", "pageVersion": "an-old-build", "serverVersion": version})
    );
    let info = json!({"pageVersion": "an-old-build", "serverVersion": version, "role": "leader"});
    assert_eq!(*calls.borrow(), vec![info.clone(), info]);
    // Postponed before the record: nothing was stored, nothing deleted.
    assert!(!cache_exists("p3-test-postpone").await);
    guard.stop();
}
