//! The IndexedDB side of the offline change queue (PROTOCOL.md §13.3 "Browser storage"):
//! opening the database, reading one record, and read-modify-write of one record in a single
//! `readwrite` transaction that is reported done only once the transaction has completed.
//!
//! Callbacks, not Promises, run inside the transaction: the `get` request's `success`
//! handler computes the new value and issues the `put` synchronously, so the transaction can
//! never auto-commit between the read and the write, whatever the microtask scheduling.

use crate::core::error::ErrorCode;
use crate::wasm::runtime::Resolver;
use crate::wasm::{error, global};
use js_sys::{Object, Promise, Reflect};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{IdbDatabase, IdbObjectStore, IdbRequest, IdbTransaction, IdbVersionChangeEvent};

/// The database every queue of the origin lives in.
pub(crate) const DB_NAME: &str = "p3-lanes-offline";
/// Its schema version: 1 = one object store, [`STORE`].
pub(crate) const DB_VERSION: u32 = 1;
/// The object store: out-of-line keys `[room, origin]`, one record per queue.
pub(crate) const STORE: &str = "queues";

#[wasm_bindgen]
extern "C" {
    /// `IDBDatabase` with the options form of `transaction`, which web-sys only has behind
    /// `web_sys_unstable_apis`.
    #[wasm_bindgen(js_name = IDBDatabase)]
    type DatabaseWithOptions;

    /// `db.transaction(store, mode, {durability})`. Browsers without `durability` ignore it.
    #[wasm_bindgen(catch, method, js_name = transaction)]
    fn transaction(
        this: &DatabaseWithOptions,
        store: &str,
        mode: &str,
        options: &Object,
    ) -> Result<IdbTransaction, JsValue>;
}

/// What an [`update`] step does with the record it read.
pub(crate) enum Write {
    /// `put` this value under the key.
    Put(JsValue),
    /// Delete the record.
    Delete,
    /// Leave it as it is.
    Keep,
}

/// Maps a thrown or reported storage failure (a `DOMException`, usually) to a coded error:
/// `QuotaExceededError` → `quota_exceeded`, anything else → `storage_unavailable`.
pub(crate) fn storage_error(e: &JsValue, doing: &str) -> JsValue {
    let get = |k: &str| {
        Reflect::get(e, &JsValue::from_str(k))
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default()
    };
    let (name, message) = (get("name"), get("message"));
    let what = if name.is_empty() && message.is_empty() {
        error::describe(e)
    } else {
        format!("{name}: {message}")
    };
    let code = if name == "QuotaExceededError" {
        ErrorCode::QuotaExceeded
    } else {
        ErrorCode::StorageUnavailable
    };
    error::coded(code, &format!("IndexedDB failed while {doing}: {what}"))
}

/// A pending Promise and its resolve and reject functions ([`Resolver`]).
fn deferred() -> (Promise, js_sys::Function, js_sys::Function) {
    let (promise, resolver) = Resolver::new();
    let (resolve, reject) = resolver.into_functions();
    (promise, resolve, reject)
}

/// Waits for a request's `success` (its `result`) or `error` (its `error`).
async fn request(req: &IdbRequest) -> Result<JsValue, JsValue> {
    let (promise, resolve, reject) = deferred();
    let r = req.clone();
    let on_success = Closure::<dyn FnMut()>::new(move || {
        let _ = resolve.call1(&JsValue::NULL, &r.result().unwrap_or(JsValue::UNDEFINED));
    });
    let r = req.clone();
    let on_error = Closure::<dyn FnMut()>::new(move || {
        let e = r
            .error()
            .ok()
            .flatten()
            .map_or(JsValue::UNDEFINED, JsValue::from);
        let _ = reject.call1(&JsValue::NULL, &e);
    });
    req.set_onsuccess(Some(on_success.as_ref().unchecked_ref()));
    req.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    let out = JsFuture::from(promise).await;
    req.set_onsuccess(None);
    req.set_onerror(None);
    out
}

/// An open connection and the `versionchange` handler that closes it (so that a newer SDK's
/// schema upgrade in another tab is never blocked by this one).
pub(crate) struct Db {
    pub(crate) db: IdbDatabase,
    _on_version_change: Closure<dyn FnMut()>,
}

impl Drop for Db {
    fn drop(&mut self) {
        self.db.set_onversionchange(None);
        self.db.close();
    }
}

/// Opens (creating or upgrading to [`DB_VERSION`]) the database on `globalThis.indexedDB`.
///
/// Errors: `storage_unavailable` (no IndexedDB, open refused, database of a newer schema),
/// `storage_corrupt` (the database exists without the [`STORE`] store).
pub(crate) async fn open() -> Result<Db, JsValue> {
    let factory = global::indexed_db()?;
    let req = factory
        .open_with_u32(DB_NAME, DB_VERSION)
        .map_err(|e| storage_error(&e, "opening the database"))?;
    let r = req.clone();
    let on_upgrade = Closure::<dyn FnMut(IdbVersionChangeEvent)>::new(move |_| {
        // Version 0 → 1 creates the store; later versions would migrate here.
        if let Ok(db) = r.result().map(JsCast::unchecked_into::<IdbDatabase>) {
            if !db.object_store_names().contains(STORE) {
                let _ = db.create_object_store(STORE);
            }
        }
    });
    req.set_onupgradeneeded(Some(on_upgrade.as_ref().unchecked_ref()));
    let result = request(&req).await;
    req.set_onupgradeneeded(None);
    let db: IdbDatabase = result
        .map_err(|e| storage_error(&e, "opening the database"))?
        .unchecked_into();
    let closing = db.clone();
    let on_version_change = Closure::<dyn FnMut()>::new(move || closing.close());
    db.set_onversionchange(Some(on_version_change.as_ref().unchecked_ref()));
    let db = Db {
        db,
        _on_version_change: on_version_change,
    };
    if !db.db.object_store_names().contains(STORE) {
        return Err(error::coded(
            ErrorCode::StorageCorrupt,
            &format!("IndexedDB database {DB_NAME:?} has no object store {STORE:?}"),
        ));
    }
    Ok(db)
}

fn store_of(tx: &IdbTransaction) -> Result<IdbObjectStore, JsValue> {
    tx.object_store(STORE)
        .map_err(|e| storage_error(&e, "opening the object store"))
}

/// Reads the record under `key` (`undefined` if absent) in a `readonly` transaction.
///
/// Errors: `storage_unavailable`.
pub(crate) async fn get(db: &IdbDatabase, key: &JsValue) -> Result<JsValue, JsValue> {
    let tx = db
        .transaction_with_str(STORE)
        .map_err(|e| storage_error(&e, "starting a read"))?;
    let req = store_of(&tx)?
        .get(key)
        .map_err(|e| storage_error(&e, "reading"))?;
    request(&req)
        .await
        .map_err(|e| storage_error(&e, "reading"))
}

/// Reads the record under `key` (`undefined` if absent), hands it to `step`, applies the
/// [`Write`] it returns, all in one `readwrite` transaction with `durability: 'strict'`, and
/// resolves with `step`'s result once the transaction has **completed** (the write is on
/// disk). `readwrite` transactions on the same store run one at a time across every tab and
/// worker of the origin, so two callers never read the same state and both write.
///
/// Errors: `step`'s error (the transaction is aborted, nothing is written);
/// `quota_exceeded`; `storage_unavailable`.
pub(crate) async fn update<R: 'static>(
    db: &IdbDatabase,
    key: &JsValue,
    step: impl FnOnce(JsValue) -> Result<(Write, R), JsValue> + 'static,
) -> Result<R, JsValue> {
    let options = Object::new();
    let _ = Reflect::set(&options, &"durability".into(), &"strict".into());
    let tx = db
        .unchecked_ref::<DatabaseWithOptions>()
        .transaction(STORE, "readwrite", &options)
        .map_err(|e| storage_error(&e, "starting a write"))?;
    let store = store_of(&tx)?;
    let req = store.get(key).map_err(|e| storage_error(&e, "reading"))?;

    let outcome: Rc<RefCell<Option<Result<R, JsValue>>>> = Rc::new(RefCell::new(None));
    let mut step = Some(step);
    let (out, r, t, k) = (outcome.clone(), req.clone(), tx.clone(), key.clone());
    let on_read = Closure::<dyn FnMut()>::new(move || {
        let Some(step) = step.take() else { return };
        let current = r.result().unwrap_or(JsValue::UNDEFINED);
        let result = step(current).and_then(|(write, value)| {
            match write {
                Write::Put(v) => store.put_with_key(&v, &k).map(drop),
                Write::Delete => store.delete(&k).map(drop),
                Write::Keep => Ok(()),
            }
            .map_err(|e| storage_error(&e, "writing"))?;
            Ok(value)
        });
        if result.is_err() {
            let _ = t.abort();
        }
        *out.borrow_mut() = Some(result);
    });
    req.set_onsuccess(Some(on_read.as_ref().unchecked_ref()));

    let (done, resolve, reject) = deferred();
    let t = tx.clone();
    let on_abort = Closure::<dyn FnMut()>::new(move || {
        let e = t.error().map_or(JsValue::UNDEFINED, JsValue::from);
        let _ = reject.call1(&JsValue::NULL, &e);
    });
    tx.set_oncomplete(Some(&resolve));
    tx.set_onabort(Some(on_abort.as_ref().unchecked_ref()));
    let finished = JsFuture::from(done).await;
    tx.set_oncomplete(None);
    tx.set_onabort(None);
    req.set_onsuccess(None);

    let outcome = outcome.borrow_mut().take();
    match (finished, outcome) {
        (Ok(_), Some(result)) => result,
        // Our own refusal (e.g. a corrupt record) aborted the transaction.
        (Err(_), Some(Err(own))) => Err(own),
        (Err(e), _) => Err(storage_error(&e, "committing")),
        (Ok(_), None) => Err(error::coded(
            ErrorCode::StorageUnavailable,
            "IndexedDB completed the transaction without delivering the read",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn code(e: &JsValue) -> String {
        Reflect::get(e, &"code".into())
            .unwrap()
            .as_string()
            .unwrap()
    }

    #[test]
    fn quota_errors_are_quota_exceeded_and_others_unavailable() {
        let quota =
            web_sys::DomException::new_with_message_and_name("full", "QuotaExceededError").unwrap();
        let e = storage_error(&quota, "writing");
        assert_eq!(code(&e), "quota_exceeded");
        let unknown =
            web_sys::DomException::new_with_message_and_name("disk", "UnknownError").unwrap();
        let e = storage_error(&unknown, "writing");
        assert_eq!(code(&e), "storage_unavailable");
        let message = String::from(e.unchecked_into::<js_sys::Error>().message());
        assert!(message.contains("UnknownError: disk"), "{message}");
    }
}
