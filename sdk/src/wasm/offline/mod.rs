//! Tier 3 offline mode for JavaScript (seed 004 Tier 3 "Offline", issue #5): the device's
//! [`OfflineQueue`] persisted in IndexedDB, so that changes made with no server and no peers
//! survive a page reload and a browser restart and are replayed on reconnect.
//!
//! `OfflineChangeQueue.open(room, origin)` opens the record of one (room, device origin);
//! every mutation (`record`, `acknowledge`, `carry`) runs the core's rule on the record it
//! reads and writes the result back in **one** `readwrite` transaction, and resolves only
//! once that transaction has completed with `durability: 'strict'`: when `record` resolves
//! the change is on disk, and a reload right after it loses nothing.
//!
//! # Tabs and workers
//! Nothing is cached between calls: each call reads the record afresh. IndexedDB runs
//! `readwrite` transactions whose scopes overlap one after the other (in creation order),
//! across all tabs and workers of the origin, so two tabs recording for the same origin id
//! get distinct, consecutive `localSeq`s without a Web Lock. IndexedDB is looked up on
//! `globalThis`, so the class works in windows, dedicated workers and (module) service
//! workers alike.
//!
//! # Storage layout (PROTOCOL.md §13.3 "Browser storage")
//! Database [`store::DB_NAME`] version [`store::DB_VERSION`], object store [`store::STORE`],
//! key `[room, origin]`, value `{format: 1, room, origin, queue: {origin, nextSeq, pending,
//! carried}}` (`queue` is [`OfflineQueue::to_json`] as an object). A record that does not
//! have this shape fails with `storage_corrupt` and is left as it is; the app may delete it
//! with `OfflineChangeQueue.remove(room, origin)`.

mod store;
#[cfg(test)]
mod tests;
mod types;

use crate::core::error::ErrorCode;
use crate::core::p2p::changes::{Change, OfflineQueue, VersionVector};
use crate::wasm::{convert, error};
use js_sys::{Array, Object, Promise, Reflect};
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;
use store::{Db, Write};
use wasm_bindgen::prelude::*;

/// Format of the stored record's value (see the module docs).
const FORMAT: u32 = 1;

/// Largest integer a JS number holds exactly (2^53 - 1).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// A device's offline change queue for one room, persisted in IndexedDB (seed 004 Tier 3;
/// PROTOCOL.md §13.3). Open it with `OfflineChangeQueue.open(room, origin)`.
#[wasm_bindgen]
pub struct OfflineChangeQueue {
    inner: Rc<Inner>,
}

struct Inner {
    room: String,
    origin: String,
    db: RefCell<Option<Rc<Db>>>,
}

#[wasm_bindgen]
impl OfflineChangeQueue {
    /// Opens the queue of device `origin` in `room`, creating (and persisting) an empty one
    /// (`nextSeq` 1) if there is none. Both are non-empty strings; `origin` is the stable
    /// device id changes are identified by (`(origin, localSeq)`).
    ///
    /// Rejects with `invalid_argument` (empty or non-string `room`/`origin`),
    /// `storage_unavailable` (no IndexedDB here, or it fails), `quota_exceeded`,
    /// `storage_corrupt` (the stored record is not a queue of this origin; it is left as is).
    #[wasm_bindgen(unchecked_return_type = "Promise<OfflineChangeQueue>")]
    pub fn open(
        #[wasm_bindgen(unchecked_param_type = "string")] room: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] origin: JsValue,
    ) -> Promise {
        let (room, origin) = match (name(&room, "room"), name(&origin, "origin")) {
            (Ok(r), Ok(o)) => (r, o),
            (Err(e), _) | (_, Err(e)) => return Promise::reject(&e),
        };
        wasm_bindgen_futures::future_to_promise(async move {
            let db = Rc::new(store::open().await?);
            let (r, o) = (room.clone(), origin.clone());
            store::update(&db.db, &key(&room, &origin), move |current| {
                if current.is_undefined() {
                    let fresh = OfflineQueue::new(o.clone());
                    Ok((Write::Put(encode(&r, &fresh, &JsValue::UNDEFINED)), ()))
                } else {
                    decode(&r, &o, &current).map(|_| (Write::Keep, ()))
                }
            })
            .await?;
            let queue = OfflineChangeQueue {
                inner: Rc::new(Inner {
                    room,
                    origin,
                    db: RefCell::new(Some(db)),
                }),
            };
            Ok(queue.into())
        })
    }

    /// Deletes the stored queue of `origin` in `room` (e.g. after `storage_corrupt`, or when
    /// the device leaves the room for good). Resolves with whether there was one. A queue
    /// still open on it then fails its calls with `storage_corrupt` (record missing) instead
    /// of renumbering from 1; open it again to start afresh.
    ///
    /// Rejects with `invalid_argument`, `storage_unavailable`.
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn remove(
        #[wasm_bindgen(unchecked_param_type = "string")] room: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string")] origin: JsValue,
    ) -> Promise {
        let (room, origin) = match (name(&room, "room"), name(&origin, "origin")) {
            (Ok(r), Ok(o)) => (r, o),
            (Err(e), _) | (_, Err(e)) => return Promise::reject(&e),
        };
        wasm_bindgen_futures::future_to_promise(async move {
            let db = store::open().await?;
            let existed = store::update(&db.db, &key(&room, &origin), |current| {
                let existed = !current.is_undefined();
                Ok((Write::Delete, existed))
            })
            .await?;
            Ok(JsValue::from_bool(existed))
        })
    }

    /// The room this queue belongs to.
    #[wasm_bindgen(getter)]
    pub fn room(&self) -> String {
        self.inner.room.clone()
    }

    /// The device origin whose changes this queue numbers.
    #[wasm_bindgen(getter)]
    pub fn origin(&self) -> String {
        self.inner.origin.clone()
    }

    /// Records a local change: `op` (any JSON-compatible value, normally a `music-control`),
    /// made in controller `epoch` (a non-negative integer) at `timestamp` (shared clock, ms
    /// since the Unix epoch). Resolves with the change, `(origin, localSeq)` allocated from
    /// the stored `nextSeq`, once it is durably stored.
    ///
    /// Rejects with `bad_payload` (`op` is not JSON-compatible), `invalid_argument`,
    /// `closed`, `quota_exceeded` (nothing stored), `storage_unavailable`, `storage_corrupt`.
    #[wasm_bindgen(unchecked_return_type = "Promise<OfflineChange>")]
    pub fn record(
        &self,
        #[wasm_bindgen(unchecked_param_type = "unknown")] op: JsValue,
        #[wasm_bindgen(unchecked_param_type = "number")] epoch: JsValue,
        #[wasm_bindgen(unchecked_param_type = "number")] timestamp: JsValue,
    ) -> Promise {
        let args = convert::value_from_js(&op).and_then(|op| {
            let epoch = integer(&epoch, "epoch")?;
            let timestamp = timestamp
                .as_f64()
                .filter(|t| t.is_finite())
                .ok_or_else(|| error::invalid_argument("timestamp must be a finite number (ms)"))?;
            Ok((op, epoch, timestamp))
        });
        let (op, epoch, timestamp) = match args {
            Ok(a) => a,
            Err(e) => return Promise::reject(&e),
        };
        self.mutate(move |q| {
            let change = q.record(op, epoch, timestamp);
            Ok(change_to_js(&change))
        })
    }

    /// Drops the changes (own and carried) that version vector `vv` (`{origin: highest
    /// applied localSeq}`, from the authority) covers. Resolves with how many were dropped,
    /// once stored.
    ///
    /// Rejects with `invalid_argument` (not an object of non-negative integers), `closed`,
    /// `storage_unavailable`, `storage_corrupt`, `quota_exceeded`.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn acknowledge(
        &self,
        #[wasm_bindgen(unchecked_param_type = "VersionVector")] vv: JsValue,
    ) -> Promise {
        let vv = match version_vector(&vv) {
            Ok(v) => v,
            Err(e) => return Promise::reject(&e),
        };
        self.mutate(move |q| {
            let before = q.pending().len() + q.carried().len();
            q.acknowledge(&vv);
            let dropped = before - q.pending().len() - q.carried().len();
            Ok(JsValue::from_f64(dropped as f64))
        })
    }

    /// Keeps `changes` (applied by a replaced authority, unknown to the new one: the core's
    /// `ChangeLog::adopt` result) until an authority covers them; own ones go back to
    /// `pending`, ids already held are skipped. Resolves with how many were added, once stored.
    ///
    /// Rejects with `invalid_argument` (not an array of `OfflineChange`), `closed`,
    /// `storage_unavailable`, `storage_corrupt`, `quota_exceeded`.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn carry(
        &self,
        #[wasm_bindgen(unchecked_param_type = "OfflineChange[]")] changes: JsValue,
    ) -> Promise {
        let changes: Vec<Change> = match convert::value_from_js(&changes)
            .and_then(|v| serde_json::from_value(v).map_err(|e| bad_arg("changes", &e)))
        {
            Ok(c) => c,
            Err(e) => return Promise::reject(&e),
        };
        self.mutate(move |q| {
            let before = q.pending().len() + q.carried().len();
            q.carry(changes);
            let added = q.pending().len() + q.carried().len() - before;
            Ok(JsValue::from_f64(added as f64))
        })
    }

    /// The stored changes (own, then carried) that `vv` does not cover (all of them without
    /// `vv`): what to re-submit to that authority on reconnect. Reads the stored record, so
    /// it sees other tabs' changes.
    ///
    /// Rejects with `invalid_argument`, `closed`, `storage_unavailable`, `storage_corrupt`.
    #[wasm_bindgen(unchecked_return_type = "Promise<OfflineChange[]>")]
    pub fn unacknowledged(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "VersionVector")] vv: JsValue,
    ) -> Promise {
        let vv = if vv.is_undefined() || vv.is_null() {
            Ok(VersionVector::new())
        } else {
            version_vector(&vv)
        };
        let vv = match vv {
            Ok(v) => v,
            Err(e) => return Promise::reject(&e),
        };
        self.read(move |q, _| {
            let out: Array = q.unacknowledged(&vv).iter().map(change_to_js).collect();
            out.into()
        })
    }

    /// The stored queue as persisted: `{origin, nextSeq, pending, carried}`, plus `roomState`
    /// when a music room stored the state its offline changes produced (PROTOCOL.md §13.12).
    ///
    /// Rejects with `closed`, `storage_unavailable`, `storage_corrupt`.
    #[wasm_bindgen(unchecked_return_type = "Promise<OfflineQueueState>")]
    pub fn snapshot(&self) -> Promise {
        self.read(|q, record| {
            let out = queue_to_js(&q);
            let state = room_state_of(record);
            if !state.is_undefined() {
                let _ = Reflect::set(&out, &"roomState".into(), &state);
            }
            out
        })
    }

    /// Closes the database connection; later calls reject with `closed`. Calls already
    /// running finish. Idempotent.
    pub fn close(&self) {
        self.inner.db.borrow_mut().take();
    }
}

impl OfflineChangeQueue {
    fn db(&self) -> Result<Rc<Db>, JsValue> {
        self.inner
            .db
            .borrow()
            .clone()
            .ok_or_else(|| error::coded(ErrorCode::Closed, "the offline change queue is closed"))
    }

    /// Read-modify-write of the stored queue (see [`store::update`]).
    fn mutate(
        &self,
        f: impl FnOnce(&mut OfflineQueue) -> Result<JsValue, JsValue> + 'static,
    ) -> Promise {
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => return Promise::reject(&e),
        };
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let (room, origin) = (inner.room.clone(), inner.origin.clone());
            store::update(&db.db, &key(&room, &origin), move |current| {
                let mut q = decode_present(&room, &origin, &current)?;
                let out = f(&mut q)?;
                Ok((Write::Put(encode(&room, &q, &room_state_of(&current))), out))
            })
            .await
        })
    }

    /// Reads the stored queue and maps it (with the raw stored record, for its `roomState`).
    fn read(&self, f: impl FnOnce(OfflineQueue, &JsValue) -> JsValue + 'static) -> Promise {
        let db = match self.db() {
            Ok(db) => db,
            Err(e) => return Promise::reject(&e),
        };
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let current = store::get(&db.db, &key(&inner.room, &inner.origin)).await?;
            let q = decode_present(&inner.room, &inner.origin, &current)?;
            Ok(f(q, &current))
        })
    }
}

/// The record key `[room, origin]`.
fn key(room: &str, origin: &str) -> JsValue {
    Array::of2(&room.into(), &origin.into()).into()
}

/// The stored value: `{format, room, origin, queue, roomState?}` (`roomState`: what a music
/// room last played locally, see [`RoomQueue`]; kept as it is by every other mutation).
fn encode(room: &str, q: &OfflineQueue, room_state: &JsValue) -> JsValue {
    let o = Object::new();
    let set = |k: &str, v: &JsValue| {
        let _ = Reflect::set(&o, &k.into(), v);
    };
    set("format", &JsValue::from_f64(f64::from(FORMAT)));
    set("room", &room.into());
    set("origin", &q.origin().into());
    set("queue", &queue_to_js(q));
    if !room_state.is_undefined() && !room_state.is_null() {
        set("roomState", room_state);
    }
    o.into()
}

/// The `roomState` of a stored value (`undefined` if none).
fn room_state_of(v: &JsValue) -> JsValue {
    if v.is_object() {
        Reflect::get(v, &"roomState".into()).unwrap_or(JsValue::UNDEFINED)
    } else {
        JsValue::UNDEFINED
    }
}

/// [`decode`], with a missing record (deleted by `remove` while open) reported as corrupt.
fn decode_present(room: &str, origin: &str, v: &JsValue) -> Result<OfflineQueue, JsValue> {
    if v.is_undefined() {
        return Err(corrupt(room, origin, "the record is missing (removed?)"));
    }
    decode(room, origin, v)
}

/// Checks and parses a stored value. Errors: `storage_corrupt`, saying what is wrong.
fn decode(room: &str, origin: &str, v: &JsValue) -> Result<OfflineQueue, JsValue> {
    let field = |k: &str| Reflect::get(v, &k.into()).unwrap_or(JsValue::UNDEFINED);
    if !v.is_object() {
        return Err(corrupt(room, origin, "the value is not an object"));
    }
    let format = field("format").as_f64();
    if format != Some(f64::from(FORMAT)) {
        return Err(corrupt(
            room,
            origin,
            &format!("unknown format {format:?} (this SDK reads format {FORMAT})"),
        ));
    }
    if field("room").as_string().as_deref() != Some(room)
        || field("origin").as_string().as_deref() != Some(origin)
    {
        return Err(corrupt(room, origin, "room or origin differ from the key"));
    }
    let text = js_sys::JSON::stringify(&field("queue"))
        .ok()
        .and_then(|s| s.as_string())
        .ok_or_else(|| corrupt(room, origin, "queue is not JSON"))?;
    let q = OfflineQueue::from_json(&text)
        .map_err(|e| corrupt(room, origin, &format!("queue: {e}")))?;
    let own_ok = q
        .pending()
        .iter()
        .all(|c| c.origin == origin && c.local_seq >= 1 && c.local_seq < q.next_seq());
    if q.origin() != origin || q.next_seq() < 1 || !own_ok {
        return Err(corrupt(
            room,
            origin,
            "queue breaks its invariants (origin, nextSeq above every pending localSeq)",
        ));
    }
    Ok(q)
}

fn corrupt(room: &str, origin: &str, what: &str) -> JsValue {
    error::coded(
        ErrorCode::StorageCorrupt,
        &format!(
            "stored offline queue of {origin:?} in room {room:?} ({}/{}) is corrupt: {what}; \
             it was left as it is (OfflineChangeQueue.remove deletes it)",
            store::DB_NAME,
            store::STORE
        ),
    )
}

fn queue_to_js(q: &OfflineQueue) -> JsValue {
    js_sys::JSON::parse(&q.to_json()).unwrap_or(JsValue::NULL)
}

fn change_to_js(c: &Change) -> JsValue {
    serde_json::to_value(c).map_or(JsValue::NULL, |v| convert::value_to_js(&v))
}

/// A non-empty string argument.
fn name(v: &JsValue, what: &str) -> Result<String, JsValue> {
    v.as_string()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| error::invalid_argument(&format!("{what} must be a non-empty string")))
}

/// A non-negative safe integer argument.
fn integer(v: &JsValue, what: &str) -> Result<u64, JsValue> {
    v.as_f64()
        .filter(|n| n.fract() == 0.0 && (0.0..=MAX_SAFE_INTEGER).contains(n))
        .map(|n| n as u64)
        .ok_or_else(|| error::invalid_argument(&format!("{what} must be a non-negative integer")))
}

/// A version vector argument: an object of non-negative integers.
fn version_vector(v: &JsValue) -> Result<VersionVector, JsValue> {
    let value = convert::value_from_js(v).map_err(|_| bad_vv())?;
    let Value::Object(map) = value else {
        return Err(bad_vv());
    };
    map.into_iter()
        .map(|(k, n)| n.as_u64().map(|n| (k, n)).ok_or_else(bad_vv))
        .collect()
}

fn bad_vv() -> JsValue {
    error::invalid_argument(
        "a version vector is an object {origin: highest applied localSeq (non-negative integer)}",
    )
}

fn bad_arg(what: &str, e: &serde_json::Error) -> JsValue {
    error::invalid_argument(&format!(
        "{what} must be an array of {{origin, localSeq, epoch, timestamp, op}}: {e}"
    ))
}

/// The offline queue of one (room, device origin) for Rust callers: the music room's Tier 3
/// ([`crate::wasm::music`], PROTOCOL.md §13.12). Same record, rules and durability as
/// [`OfflineChangeQueue`] (an app may open both on the same record), plus the room state the
/// device last played locally (`roomState`), written in the same transaction as the change
/// that produced it, so a reload restores both together.
pub(crate) struct RoomQueue {
    room: String,
    origin: String,
    db: Rc<Db>,
}

/// What [`RoomQueue::open`] found stored.
pub(crate) struct Restored {
    /// Changes not acknowledged yet (own, then carried).
    pub(crate) pending: Vec<Change>,
    /// The stored `roomState`, if any (JSON of a `MusicRoomState`).
    pub(crate) room_state: Option<Value>,
}

impl RoomQueue {
    /// Opens (creating if needed) the record of `origin` in `room`. Errors as
    /// `OfflineChangeQueue.open`.
    pub(crate) async fn open(room: &str, origin: &str) -> Result<(RoomQueue, Restored), JsValue> {
        let db = Rc::new(store::open().await?);
        let (r, o) = (room.to_owned(), origin.to_owned());
        let restored = store::update(&db.db, &key(room, origin), move |current| {
            if current.is_undefined() {
                let fresh = OfflineQueue::new(o.clone());
                let put = Write::Put(encode(&r, &fresh, &JsValue::UNDEFINED));
                Ok((
                    put,
                    Restored {
                        pending: Vec::new(),
                        room_state: None,
                    },
                ))
            } else {
                let q = decode(&r, &o, &current)?;
                let state = room_state_of(&current);
                let room_state = if state.is_undefined() || state.is_null() {
                    None
                } else {
                    convert::value_from_js(&state).ok()
                };
                let pending = q.unacknowledged(&VersionVector::new());
                Ok((
                    Write::Keep,
                    Restored {
                        pending,
                        room_state,
                    },
                ))
            }
        })
        .await?;
        Ok((
            RoomQueue {
                room: room.to_owned(),
                origin: origin.to_owned(),
                db,
            },
            restored,
        ))
    }

    /// Records `op` (epoch, shared-clock timestamp ms) and stores `room_state` with it, in one
    /// durable transaction. Resolves with the change and how many are pending now.
    pub(crate) async fn record(
        &self,
        op: Value,
        epoch: u64,
        timestamp: f64,
        room_state: &Value,
    ) -> Result<(Change, usize), JsValue> {
        let (room, origin) = (self.room.clone(), self.origin.clone());
        let state = convert::value_to_js(room_state);
        store::update(&self.db.db, &key(&room, &origin), move |current| {
            let mut q = decode_present(&room, &origin, &current)?;
            let change = q.record(op, epoch, timestamp);
            let pending = q.pending().len() + q.carried().len();
            Ok((Write::Put(encode(&room, &q, &state)), (change, pending)))
        })
        .await
    }

    /// Drops what `vv` covers; resolves with how many changes remain. Once none remain the
    /// stored `roomState` is dropped too (the server's state is the room's again).
    pub(crate) async fn acknowledge(&self, vv: VersionVector) -> Result<usize, JsValue> {
        let (room, origin) = (self.room.clone(), self.origin.clone());
        store::update(&self.db.db, &key(&room, &origin), move |current| {
            let mut q = decode_present(&room, &origin, &current)?;
            q.acknowledge(&vv);
            let left = q.pending().len() + q.carried().len();
            let state = if left == 0 {
                JsValue::UNDEFINED
            } else {
                room_state_of(&current)
            };
            Ok((Write::Put(encode(&room, &q, &state)), left))
        })
        .await
    }

    /// Every stored change not acknowledged yet (own, then carried), read afresh.
    pub(crate) async fn unacknowledged(&self) -> Result<Vec<Change>, JsValue> {
        let current = store::get(&self.db.db, &key(&self.room, &self.origin)).await?;
        let q = decode_present(&self.room, &self.origin, &current)?;
        Ok(q.unacknowledged(&VersionVector::new()))
    }
}
