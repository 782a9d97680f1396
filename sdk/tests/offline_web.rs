//! Browser tests of Tier 3's persisted offline change queue (`OfflineChangeQueue`, issue #5,
//! PROTOCOL.md §13.3) on the real IndexedDB of headless Chromium: seqs survive reopening,
//! acknowledge / carry / unacknowledged follow the core's rules on the stored record,
//! concurrent records never share a `localSeq`, bad arguments and corrupt records are coded
//! errors, and a corrupt record is left untouched. Reload and browser-restart survival, and
//! two tabs, run end to end in `tests/offline-queue-reload.spec.mjs`.
#![cfg(all(target_arch = "wasm32", feature = "music"))]

use js_sys::{Array, Function, Promise, Reflect};
use p3_lanes::wasm::OfflineChangeQueue;
use serde::Serialize;
use serde_json::{json, Value};
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

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

/// A room name no other test (or earlier run in the same profile) uses.
fn fresh_room(what: &str) -> String {
    format!("{what}-{}", js_sys::Math::random().to_bits())
}

async fn ok(p: Promise) -> JsValue {
    JsFuture::from(p).await.unwrap()
}

async fn err_code(p: Promise) -> String {
    let e = JsFuture::from(p).await.expect_err("expected a rejection");
    code_of(&e)
}

async fn open(room: &str, origin: &str) -> OfflineChangeQueue {
    let q = ok(OfflineChangeQueue::open(room.into(), origin.into())).await;
    OfflineChangeQueue::try_from_js_value(q).unwrap()
}

async fn record(q: &OfflineChangeQueue, op: Value, epoch: u64, t: f64) -> Value {
    json_of(
        &ok(q.record(
            js(&op),
            JsValue::from_f64(epoch as f64),
            JsValue::from_f64(t),
        ))
        .await,
    )
}

/// Runs a JS body `(room, origin, value) => Promise` against the queue store directly.
async fn raw(body: &str, room: &str, origin: &str, value: &JsValue) -> JsValue {
    let f = Function::new_with_args(
        "room, origin, value",
        &format!(
            "return new Promise((resolve, reject) => {{
               const open = indexedDB.open('p3-lanes-offline', 1);
               open.onerror = () => reject(open.error);
               open.onsuccess = () => {{
                 const db = open.result;
                 const tx = db.transaction('queues', 'readwrite');
                 const store = tx.objectStore('queues');
                 let out;
                 {body}
                 tx.oncomplete = () => {{ db.close(); resolve(out); }};
                 tx.onabort = () => {{ db.close(); reject(tx.error); }};
               }};
             }});"
        ),
    );
    let p: Promise = f
        .call3(&JsValue::NULL, &room.into(), &origin.into(), value)
        .unwrap()
        .unchecked_into();
    ok(p).await
}

#[wasm_bindgen_test]
async fn records_survive_reopening_with_their_seqs() {
    let room = fresh_room("reopen");
    let q = open(&room, "dev-a").await;
    assert_eq!(q.room(), room);
    assert_eq!(q.origin(), "dev-a");
    assert_eq!(
        json_of(&ok(q.snapshot()).await),
        json!({"origin": "dev-a", "nextSeq": 1, "pending": [], "carried": []})
    );
    let c1 = record(&q, json!({"action": "play"}), 3, 1000.0).await;
    assert_eq!(
        c1,
        json!({"origin": "dev-a", "localSeq": 1, "epoch": 3, "timestamp": 1000, "op": {"action": "play"}})
    );
    let c2 = record(
        &q,
        json!({"action": "seek", "data": {"position": 12.5}}),
        3,
        1500.5,
    )
    .await;
    assert_eq!(c2["localSeq"], 2);
    q.close();
    q.close();
    assert_eq!(err_code(q.snapshot()).await, "closed");
    assert_eq!(
        err_code(q.record(js(&json!(1)), 1.into(), 1.into())).await,
        "closed"
    );

    let again = open(&room, "dev-a").await;
    let state = json_of(&ok(again.snapshot()).await);
    assert_eq!(state["nextSeq"], 3);
    assert_eq!(state["pending"], json!([c1, c2]));
    assert_eq!(record(&again, json!({}), 4, 2000.0).await["localSeq"], 3);
    // Another origin in the same room, and the same origin in another room, are separate.
    let other = open(&room, "dev-b").await;
    assert_eq!(record(&other, json!({}), 4, 2000.0).await["localSeq"], 1);
    let elsewhere = open(&fresh_room("elsewhere"), "dev-a").await;
    assert_eq!(
        record(&elsewhere, json!({}), 4, 2000.0).await["localSeq"],
        1
    );
}

#[wasm_bindgen_test]
async fn acknowledge_carry_and_unacknowledged_follow_the_core() {
    let room = fresh_room("ack");
    let q = open(&room, "a").await;
    for i in 1..=3 {
        record(&q, json!({"i": i}), 1, i as f64).await;
    }
    assert_eq!(ok(q.acknowledge(js(&json!({"a": 2, "z": 9})))).await, 2);
    let left = json_of(&ok(q.unacknowledged(JsValue::UNDEFINED)).await);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["localSeq"], 3);

    // Carried: another origin's change (kept) and an own one already held (skipped).
    let foreign = json!({"origin": "b", "localSeq": 1, "epoch": 1, "timestamp": 5, "op": {"x": 1}});
    let added = ok(q.carry(js(&json!([foreign, left[0]])))).await;
    assert_eq!(added, 1);
    let state = json_of(&ok(q.snapshot()).await);
    assert_eq!(state["carried"], json!([foreign]));
    let uncovered = json_of(&ok(q.unacknowledged(js(&json!({"a": 3})))).await);
    assert_eq!(uncovered, json!([foreign]));

    assert_eq!(ok(q.acknowledge(js(&json!({"a": 3, "b": 1})))).await, 2);
    let state = json_of(&ok(q.snapshot()).await);
    assert_eq!(
        state,
        json!({"origin": "a", "nextSeq": 4, "pending": [], "carried": []})
    );
    // An emptied queue goes on numbering where it was.
    assert_eq!(record(&q, json!(null), 2, 9.0).await["localSeq"], 4);
}

#[wasm_bindgen_test]
async fn concurrent_records_get_distinct_consecutive_seqs() {
    let room = fresh_room("concurrent");
    // Two connections to the same record, as two tabs have.
    let (q1, q2) = (open(&room, "dev").await, open(&room, "dev").await);
    let promises = Array::new();
    for i in 0..15 {
        let q = if i % 2 == 0 { &q1 } else { &q2 };
        promises.push(&q.record(js(&json!({"i": i})), 1.into(), JsValue::from_f64(i as f64)));
    }
    let all = json_of(&ok(Promise::all(&promises)).await);
    let mut seqs: Vec<u64> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["localSeq"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    let state = json_of(&ok(q1.snapshot()).await);
    assert_eq!(state["nextSeq"], 16);
    assert_eq!(state["pending"].as_array().unwrap().len(), 15);
}

#[wasm_bindgen_test]
async fn bad_arguments_are_coded_errors() {
    for (room, origin) in [("", "a"), ("r", ""), ("r", "5")] {
        let origin_js = if origin == "5" {
            JsValue::from_f64(5.0)
        } else {
            origin.into()
        };
        assert_eq!(
            err_code(OfflineChangeQueue::open(room.into(), origin_js)).await,
            "invalid_argument",
            "{room:?} {origin:?}"
        );
    }
    let q = open(&fresh_room("bad"), "a").await;
    let f = Function::new_no_args("");
    assert_eq!(
        err_code(q.record(f.into(), 1.into(), 1.into())).await,
        "bad_payload"
    );
    for (epoch, t) in [
        (-1.0, 1.0),
        (1.5, 1.0),
        (f64::NAN, 1.0),
        (1.0, f64::INFINITY),
    ] {
        assert_eq!(
            err_code(q.record(
                js(&json!({})),
                JsValue::from_f64(epoch),
                JsValue::from_f64(t)
            ))
            .await,
            "invalid_argument",
            "{epoch} {t}"
        );
    }
    for vv in [json!({"a": -1}), json!({"a": 1.5}), json!("a"), json!([1])] {
        assert_eq!(
            err_code(q.acknowledge(js(&vv))).await,
            "invalid_argument",
            "{vv}"
        );
    }
    for changes in [
        json!([{}]),
        json!({"origin": "a"}),
        json!([{"origin": "a", "localSeq": -1, "epoch": 1, "timestamp": 1, "op": 1}]),
    ] {
        assert_eq!(
            err_code(q.carry(js(&changes))).await,
            "invalid_argument",
            "{changes}"
        );
    }
    // Nothing was recorded by the refused calls.
    assert_eq!(json_of(&ok(q.snapshot()).await)["nextSeq"], 1);
}

#[wasm_bindgen_test]
async fn a_corrupt_record_is_reported_and_left_untouched() {
    let room = fresh_room("corrupt");
    // Create the database (and the store) through the SDK first.
    open(&fresh_room("setup"), "x").await.close();
    let bad_values = [
        json!("not an object"),
        json!({"format": 2, "room": room, "origin": "a", "queue": {}}),
        json!({"format": 1, "room": room, "origin": "a", "queue": {"nope": 1}}),
        json!({"format": 1, "room": room, "origin": "b", "queue": {"origin": "b", "nextSeq": 1, "pending": []}}),
        json!({"format": 1, "room": room, "origin": "a", "queue": {"origin": "a", "nextSeq": 1, "pending": [
            {"origin": "a", "localSeq": 1, "epoch": 1, "timestamp": 1, "op": 1}
        ]}}),
    ];
    for bad in bad_values {
        let value = js(&bad);
        raw("store.put(value, [room, origin]);", &room, "a", &value).await;
        let e = JsFuture::from(OfflineChangeQueue::open(room.as_str().into(), "a".into()))
            .await
            .expect_err("a corrupt record must not open");
        assert_eq!(code_of(&e), "storage_corrupt", "{bad}");
        let message = js_sys::Error::from(e).message();
        assert!(String::from(message).contains("left as it is"), "{bad}");
        let stored = raw(
            "const g = store.get([room, origin]); g.onsuccess = () => { out = g.result; };",
            &room,
            "a",
            &JsValue::UNDEFINED,
        )
        .await;
        assert_eq!(json_of(&stored), bad, "the record is not replaced");
    }
    // The app's explicit decision: remove it, then start afresh.
    assert_eq!(
        ok(OfflineChangeQueue::remove(room.as_str().into(), "a".into())).await,
        true
    );
    assert_eq!(
        ok(OfflineChangeQueue::remove(room.as_str().into(), "a".into())).await,
        false
    );
    let q = open(&room, "a").await;
    assert_eq!(record(&q, json!({}), 1, 1.0).await["localSeq"], 1);
    // Removed under an open queue: its calls report the missing record, never renumber.
    assert_eq!(
        ok(OfflineChangeQueue::remove(room.as_str().into(), "a".into())).await,
        true
    );
    assert_eq!(
        err_code(q.record(js(&json!({})), 1.into(), 1.into())).await,
        "storage_corrupt"
    );
}
