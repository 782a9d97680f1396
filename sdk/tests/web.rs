//! Browser tests of the JavaScript API (`P3Client`) against a real server-stub, whose base URL
//! is read at compile time from `P3_SERVER_URL` (gloo-net's habit):
//!
//! ```sh
//! target/release/server-stub --port 0   # prints "listening on http://127.0.0.1:PORT"
//! P3_SERVER_URL=http://127.0.0.1:PORT wasm-pack test --headless --chrome \
//!     --chromedriver /usr/bin/chromedriver sdk
//! ```
//!
//! Every test goes through the exported API exactly as JavaScript sees it: the
//! `#[wasm_bindgen]` methods, JS values in and out, errors read through their `code` property.
#![cfg(all(target_arch = "wasm32", feature = "lanes"))]

use js_sys::{Function, Object, Promise, Reflect};
use p3_lanes::wasm::P3Client;
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
const DELIVERY_TIMEOUT_MS: f64 = 5_000.0;

// ---- helpers ----

/// A JSON value as the plain JS object an app would pass.
fn js(v: &Value) -> JsValue {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .unwrap()
}

/// A JS value read back as JSON (fails the test for anything JSON cannot hold).
fn json_of(v: &JsValue) -> Value {
    serde_wasm_bindgen::from_value(v.clone()).unwrap()
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).unwrap()
}

/// The `code` of a thrown/rejected value, after checking it is a real `Error`.
fn code_of(err: &JsValue) -> String {
    assert!(
        err.is_instance_of::<js_sys::Error>(),
        "not an Error: {err:?}"
    );
    get(err, "code")
        .as_string()
        .unwrap_or_else(|| panic!("error without a string code: {err:?}"))
}

async fn connect(options: Value) -> Result<P3Client, JsValue> {
    P3Client::connect(SERVER.to_owned(), js(&options)).await
}

async fn connect_ok(options: Value) -> P3Client {
    match connect(options.clone()).await {
        Ok(c) => c,
        Err(e) => panic!("connect({options}) failed: {e:?}"),
    }
}

/// A fresh room name, so that concurrent or repeated runs never share a room.
fn unique_room(prefix: &str) -> String {
    format!("{prefix}-{}", (js_sys::Math::random() * 1e12) as u64)
}

async fn sleep(ms: u32) {
    let promise = Promise::new(&mut |resolve, _| {
        let set_timeout: Function = get(&js_sys::global(), "setTimeout").unchecked_into();
        set_timeout
            .call2(&JsValue::UNDEFINED, &resolve, &JsValue::from(ms))
            .unwrap();
    });
    JsFuture::from(promise).await.unwrap();
}

/// Polls `check` until it holds; fails the test after `timeout_ms`.
async fn wait_for(what: &str, timeout_ms: f64, check: impl Fn() -> bool) {
    let deadline = js_sys::Date::now() + timeout_ms;
    while !check() {
        assert!(
            js_sys::Date::now() < deadline,
            "timed out after {timeout_ms} ms waiting for {what}"
        );
        sleep(20).await;
    }
}

/// Everything a callback received, in order.
#[derive(Clone, Default)]
struct Recorder(Rc<RefCell<Vec<JsValue>>>);

impl Recorder {
    /// A JS function that records its first argument.
    fn callback(&self) -> JsValue {
        let log = self.0.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |v| log.borrow_mut().push(v)).into_js_value()
    }

    fn len(&self) -> usize {
        self.0.borrow().len()
    }

    fn all(&self) -> Vec<JsValue> {
        self.0.borrow().clone()
    }
}

/// Records every message `client` receives on `lane`.
fn record_lane(client: &P3Client, lane: JsValue) -> Recorder {
    let r = Recorder::default();
    client.on_message(lane, r.callback()).unwrap();
    r
}

/// Records every `P3Event` of `client`.
fn record_events(client: &P3Client) -> Recorder {
    let r = Recorder::default();
    client.on_event(r.callback()).unwrap();
    r
}

async fn join(client: &P3Client, room: &str) -> Value {
    match JsFuture::from(client.join_room(JsValue::from_str(room))).await {
        Ok(v) => json_of(&v),
        Err(e) => panic!("joinRoom({room}) failed: {e:?}"),
    }
}

/// The JSON of the single message in `r` whose `value.id` is `id`, checking its envelope.
fn only_message(r: &Recorder, id: &str) -> Value {
    let matching: Vec<Value> = r
        .all()
        .iter()
        .map(json_of)
        .filter(|m| m["value"]["id"] == id)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected exactly one message {id}, got {matching:?}"
    );
    matching.into_iter().next().unwrap()
}

fn send(client: &P3Client, lane: JsValue, value: &Value) -> Result<(), JsValue> {
    client.send(lane, js(value), JsValue::UNDEFINED)
}

// ---- tests ----

#[wasm_bindgen_test]
async fn two_clients_join_a_room_and_exchange_nested_values_on_messaging_and_sync() {
    let a = connect_ok(json!({"clientId": "web-test-a", "lanes": [1, 2, 7]})).await;
    let b =
        connect_ok(json!({"clientId": "web-test-b", "lanes": ["Control", "messaging", 7]})).await;
    assert_eq!(a.state(), "open");
    assert_ne!(a.session_id(), b.session_id());
    assert_eq!(json_of(&a.handshake())["sessionId"], a.session_id());

    let room = unique_room("web-two");
    let a_events = record_events(&a);
    let a_joined = join(&a, &room).await;
    assert_eq!(a_joined, json!({"room": room, "members": [a.session_id()]}));
    assert_eq!(a.room().as_string().as_deref(), Some(room.as_str()));
    let b_joined = join(&b, &room).await;
    let members = b_joined["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{b_joined}");
    assert!(members.contains(&json!(a.session_id())) && members.contains(&json!(b.session_id())));
    wait_for("A to hear that B joined", DELIVERY_TIMEOUT_MS, || {
        a_events
            .all()
            .iter()
            .map(json_of)
            .any(|e| e == json!({"type": "peer-joined", "room": room, "sessionId": b.session_id()}))
    })
    .await;
    // Every join is followed by the room's key (PROTOCOL.md §13.4), as a `room-key` event.
    wait_for("A to get the room key", DELIVERY_TIMEOUT_MS, || {
        a_events.all().iter().map(json_of).any(|e| {
            e["type"] == "room-key"
                && e["room"] == json!(room)
                && e["keyId"].is_u64()
                && e["key"].as_str().is_some_and(|k| k.len() == 43)
        })
    })
    .await;

    let b_messaging = record_lane(&b, JsValue::from(2));
    let b_sync = record_lane(&b, JsValue::from_str("Sync"));
    let chat = json!({"id": "chat-1", "text": "héllo ✓", "tags": ["a", "b"], "meta": {"n": -3, "x": 1.5, "ok": true, "none": null}});
    let sync = json!({"id": "sync-1", "state": {"track": {"title": "Song", "positionMs": 61250}, "playing": true, "rate": 1.25, "queue": [{"n": 1}, {"n": 2}]}});
    send(&a, JsValue::from_str("Messaging"), &chat).unwrap();
    send(&a, JsValue::from(7), &sync).unwrap();
    wait_for("B to receive both messages", DELIVERY_TIMEOUT_MS, || {
        b_messaging.len() >= 1 && b_sync.len() >= 1
    })
    .await;

    let m = only_message(&b_messaging, "chat-1");
    assert_eq!(m["lane"], 2);
    assert_eq!(m["from"], a.session_id());
    assert_eq!(m["value"], chat);
    let s = only_message(&b_sync, "sync-1");
    assert_eq!(s["lane"], 7);
    assert_eq!(s["from"], a.session_id());
    assert_eq!(s["value"], sync);
    // Values are plain objects, as JSON.parse would give, not Maps.
    let value = get(&b_sync.all()[0], "value");
    assert_eq!(
        Object::get_prototype_of(&value),
        Object::get_prototype_of(&Object::new())
    );
    assert!(get(&b_sync.all()[0], "seq").as_f64().is_some());

    // Directed message back to A only.
    let a_messaging = record_lane(&a, JsValue::from(2));
    let reply = json!({"id": "reply-1", "to": "a"});
    b.send(
        JsValue::from(2),
        js(&reply),
        JsValue::from_str(&a.session_id()),
    )
    .unwrap();
    wait_for("A to receive B's reply", DELIVERY_TIMEOUT_MS, || {
        a_messaging.len() >= 1
    })
    .await;
    let r = only_message(&a_messaging, "reply-1");
    assert_eq!(r["from"], b.session_id());
    assert_eq!(r["value"], reply);

    a.close();
    b.close();
    assert_eq!(a.state(), "closed");
}

#[wasm_bindgen_test]
async fn refused_handshakes_reject_with_the_server_code() {
    let cases = [
        (json!({"lanes": [2]}), "control_lane_required"),
        (json!({"encodings": ["protobuf"]}), "no_common_encoding"),
        (json!({"clientId": ""}), "invalid_argument"),
    ];
    for (options, expected) in cases {
        let err = connect(options.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("connect({options}) should fail"));
        assert_eq!(code_of(&err), expected, "connect({options}): {err:?}");
    }
    // Refused by the SDK before any request.
    let err = connect(json!({"lanes": [1, "Bogus"]}))
        .await
        .err()
        .expect("unknown lane name");
    assert_eq!(code_of(&err), "unknown_lane");
    // Nobody listens on port 9 (discard).
    let err = P3Client::connect("http://127.0.0.1:9".into(), JsValue::UNDEFINED)
        .await
        .err()
        .expect("unreachable server");
    assert_eq!(code_of(&err), "connect_failed");
}

#[wasm_bindgen_test]
async fn the_multiplexer_is_the_default_and_mux_false_keeps_v1_framing() {
    let has_mux = |c: &P3Client| {
        json_of(&c.handshake())["protocol"]["features"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("mux")))
    };
    let default = connect_ok(json!({"lanes": [1, 2]})).await;
    assert!(has_mux(&default), "offered and granted by default");
    let v1 = connect_ok(json!({"lanes": [1, 2], "mux": false})).await;
    assert!(!has_mux(&v1), "`mux: false` keeps v1 framing");

    // `maxMessageBytes` bounds what the app may send, with and without the multiplexer.
    for mux in [true, false] {
        let c = connect_ok(json!({"lanes": [1, 2], "mux": mux, "maxMessageBytes": 4096})).await;
        let fits = json!({"text": "x".repeat(1000)});
        let over = json!({"text": "x".repeat(8000)});
        assert!(send(&c, JsValue::from(2), &fits).is_ok());
        let err = send(&c, JsValue::from(2), &over).expect_err("over maxMessageBytes");
        assert_eq!(code_of(&err), "frame_too_large", "mux {mux}");
        c.close();
    }
    for bad in [json!(10), json!(-1), json!("big")] {
        let err = connect(json!({"maxMessageBytes": bad}))
            .await
            .err()
            .unwrap_or_else(|| panic!("maxMessageBytes {bad} should be refused"));
        assert_eq!(code_of(&err), "invalid_argument", "maxMessageBytes {bad}");
    }
    default.close();
    v1.close();
}

#[wasm_bindgen_test]
async fn send_refusals_throw_coded_errors() {
    let c = connect_ok(json!({"lanes": [1, 2]})).await;
    let granted: Vec<u64> = json_of(&c.handshake())["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(granted, vec![1, 2]);
    let value = js(&json!({"text": "x"}));
    let attempt = |lane: JsValue, value: &JsValue, to: JsValue| {
        c.send(lane, value.clone(), to).err().map(|e| code_of(&e))
    };

    assert_eq!(
        attempt(JsValue::from(3), &value, JsValue::UNDEFINED).as_deref(),
        Some("lane_not_negotiated")
    );
    assert_eq!(
        attempt(JsValue::from_str("Voice"), &value, JsValue::UNDEFINED).as_deref(),
        Some("lane_not_negotiated")
    );
    assert_eq!(
        attempt(JsValue::from(9), &value, JsValue::UNDEFINED).as_deref(),
        Some("unknown_lane")
    );
    assert_eq!(
        attempt(JsValue::from_str("nope"), &value, JsValue::UNDEFINED).as_deref(),
        Some("unknown_lane")
    );
    assert_eq!(
        attempt(JsValue::TRUE, &value, JsValue::UNDEFINED).as_deref(),
        Some("invalid_argument")
    );
    assert_eq!(
        attempt(JsValue::from(2), &value, JsValue::from_str("not-a-uuid")).as_deref(),
        Some("invalid_argument")
    );

    // Values JSON cannot carry faithfully.
    let nan = js_sys::Function::new_no_args("return { a: [1, NaN] }")
        .call0(&JsValue::NULL)
        .unwrap();
    let func = js_sys::Function::new_no_args("return { f() {} }")
        .call0(&JsValue::NULL)
        .unwrap();
    let big = js_sys::Function::new_no_args("return { n: 10n }")
        .call0(&JsValue::NULL)
        .unwrap();
    let cyclic = js_sys::Function::new_no_args("const o = {}; o.self = o; return o")
        .call0(&JsValue::NULL)
        .unwrap();
    for bad in [nan, func, big, cyclic] {
        assert_eq!(
            attempt(JsValue::from(2), &bad, JsValue::UNDEFINED).as_deref(),
            Some("bad_payload"),
            "{bad:?}"
        );
    }
    // Nothing refused above was sent; a valid send still works.
    assert_eq!(attempt(JsValue::from(2), &value, JsValue::UNDEFINED), None);

    // Join refusals reject, they do not throw.
    let err = JsFuture::from(c.join_room(JsValue::from_str("")))
        .await
        .expect_err("empty room name");
    assert_eq!(code_of(&err), "invalid_argument");

    c.close();
    assert_eq!(c.state(), "closed");
    assert_eq!(
        attempt(JsValue::from(2), &value, JsValue::UNDEFINED).as_deref(),
        Some("closed")
    );
    let err = JsFuture::from(c.join_room(JsValue::from_str("late")))
        .await
        .expect_err("closed");
    assert_eq!(code_of(&err), "closed");
}

#[wasm_bindgen_test]
async fn json_only_client_talks_to_msgpack_client_and_callbacks_may_reenter() {
    let j =
        connect_ok(json!({"clientId": "web-test-json", "encodings": ["json"], "lanes": [1, 2, 7]}))
            .await;
    let m = connect_ok(json!({"clientId": "web-test-msgpack", "lanes": [1, 2, 7]})).await;
    let encodings = |c: &P3Client| -> Vec<Value> {
        json_of(&c.handshake())["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["encoding"].clone())
            .collect()
    };
    assert_eq!(encodings(&j), vec![json!("json"); 3]);
    assert_eq!(encodings(&m), vec![json!("msgpack"); 3]);

    let room = unique_room("web-codec");
    join(&j, &room).await;
    join(&m, &room).await;

    // The msgpack client echoes every Sync message from inside its callback: a re-entrant
    // call into the client while the driver is dispatching.
    let m = Rc::new(m);
    let m_sync = Recorder::default();
    let echo = {
        let log = m_sync.0.clone();
        let client = m.clone();
        Closure::<dyn FnMut(JsValue)>::new(move |msg: JsValue| {
            log.borrow_mut().push(msg.clone());
            let mut echoed = json_of(&get(&msg, "value"));
            echoed["id"] = json!(format!("echo-{}", echoed["id"].as_str().unwrap()));
            send(&client, JsValue::from(7), &echoed).unwrap();
        })
        .into_js_value()
    };
    m.on_message(JsValue::from(7), echo).unwrap();

    let j_messaging = record_lane(&j, JsValue::from(2));
    let j_sync = record_lane(&j, JsValue::from(7));
    let m_messaging = record_lane(&m, JsValue::from(2));

    // Keys in the dictionary ("msg", "ts", ...) and outside it, unicode, nesting.
    let from_json = json!({"id": "j-1", "msg": "from json", "ts": 1_735_689_600_000u64, "nested": {"deep": {"list": [1, -2, 3.5, "x", null]}}});
    let from_msgpack = json!({"id": "m-1", "msg": "from msgpack ✓", "data": {"bytes": [0, 127, 255], "flag": false}});
    let sync = json!({"id": "s-1", "state": {"positionMs": 1000, "playing": true}});
    send(&j, JsValue::from(2), &from_json).unwrap();
    send(&m, JsValue::from(2), &from_msgpack).unwrap();
    send(&j, JsValue::from(7), &sync).unwrap();
    wait_for("both directions and the echo", DELIVERY_TIMEOUT_MS, || {
        m_messaging.len() >= 1 && j_messaging.len() >= 1 && j_sync.len() >= 1
    })
    .await;

    let got = only_message(&m_messaging, "j-1");
    assert_eq!(
        (got["from"].clone(), got["value"].clone()),
        (json!(j.session_id()), from_json)
    );
    let got = only_message(&j_messaging, "m-1");
    assert_eq!(
        (got["from"].clone(), got["value"].clone()),
        (json!(m.session_id()), from_msgpack)
    );
    assert_eq!(m_sync.len(), 1);
    let echo = only_message(&j_sync, "echo-s-1");
    let mut expected = sync.clone();
    expected["id"] = json!("echo-s-1");
    assert_eq!(
        (echo["from"].clone(), echo["value"].clone()),
        (json!(m.session_id()), expected)
    );

    j.close();
    m.close();
}

#[wasm_bindgen_test]
async fn sse_transport_talks_to_a_websocket_client_and_reports_post_refusals() {
    let err = connect(json!({"transport": "carrier-pigeon"}))
        .await
        .err()
        .expect("unknown transport");
    assert_eq!(code_of(&err), "invalid_argument");

    let room = unique_room("sse");
    let a = connect_ok(json!({"lanes": [1, 2, 5], "transport": "sse"})).await;
    let hs = json_of(&a.handshake());
    assert_eq!(hs["transport"], "sse");
    assert!(hs["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|l| l["encoding"] == "json"));
    let b = connect_ok(json!({"lanes": [1, 2, 5]})).await;
    let (a_msgs, b_msgs) = (
        record_lane(&a, JsValue::from(2)),
        record_lane(&b, JsValue::from(2)),
    );
    let a_events = record_events(&a);
    join(&a, &room).await;
    join(&b, &room).await;

    send(
        &a,
        JsValue::from_str("Messaging"),
        &json!({"id": "from-sse", "deep": {"list": [1, 2.5, null]}}),
    )
    .unwrap();
    wait_for("B gets A's message", DELIVERY_TIMEOUT_MS, || {
        b_msgs.len() > 0
    })
    .await;
    let m = only_message(&b_msgs, "from-sse");
    assert_eq!(m["from"], json!(a.session_id()));
    assert_eq!(m["value"]["deep"], json!({"list": [1, 2.5, null]}));

    send(
        &b,
        JsValue::from(2),
        &json!({"id": "from-ws", "text": "hé"}),
    )
    .unwrap();
    wait_for("A gets B's message", DELIVERY_TIMEOUT_MS, || {
        a_msgs.len() > 0
    })
    .await;
    let m = only_message(&a_msgs, "from-ws");
    assert_eq!(m["from"], json!(b.session_id()));
    assert_eq!(m["lane"], 2);
    assert!(m["seq"].as_u64().is_some_and(|s| s >= 1), "{m}");

    // A POST the server refuses becomes an `error` event with its code and lane: a `to`
    // that names no member of the sender's room is `forbidden` (PROTOCOL.md §2.1).
    let nobody = "00000000-0000-4000-8000-000000000000";
    a.send(
        JsValue::from(5),
        js(&json!({"x": 1})),
        JsValue::from_str(nobody),
    )
    .unwrap();
    let refused = || {
        a_events
            .all()
            .iter()
            .map(json_of)
            .find(|e| e["type"] == "error")
    };
    wait_for("the refusal", DELIVERY_TIMEOUT_MS, || refused().is_some()).await;
    let e = refused().unwrap();
    assert_eq!(
        (e["code"].clone(), e["lane"].clone()),
        (json!("forbidden"), json!(5)),
        "{e}"
    );
    a.close();
    b.close();
}
