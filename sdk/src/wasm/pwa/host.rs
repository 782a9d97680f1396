//! The browser I/O of the cache guard, in whatever global scope it runs: a window, a service
//! worker or another worker. Everything is looked up on `globalThis` (never
//! `web_sys::window()`), and the parts a scope lacks are skipped: no `document` in workers
//! (so no `<meta>` and no visibility), `self.registration` instead of
//! `navigator.serviceWorker` in a service worker, no `location.reload()` outside windows.
//!
//! What a purge touches: the service-worker registrations and Cache Storage caches that
//! [`Ownership`] says the app owns. Never IndexedDB, `localStorage` (apart from the guard's
//! own key where Cache Storage is missing) or cookies.

use crate::core::pwa::{Ownership, PurgeRecord};
use crate::wasm::{convert, error, global};
use js_sys::{Array, Object, Promise, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Path (on the page's origin) under which the record is stored in the record cache.
const RECORD_PATH: &str = "/__p3-lanes/pwa-guard-record";

/// The kind of global scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A document: `<meta>`, visibility and `location.reload()` exist.
    Window,
    /// A service worker: `self.registration` and `clients` exist.
    ServiceWorker,
    /// Any other worker.
    Worker,
}

impl Scope {
    /// The current global scope's kind.
    pub(crate) fn current() -> Scope {
        let g = js_sys::global();
        if get(&g, "document").is_some() {
            Scope::Window
        } else if get(&g, "registration").is_some() && get(&g, "clients").is_some() {
            Scope::ServiceWorker
        } else {
            Scope::Worker
        }
    }

    /// Prefix of this scope's tab ids: the election picks the smallest id, and a service
    /// worker, which has no UI state to lose and outlives page reloads, should lead.
    pub(crate) fn tab_prefix(self) -> &'static str {
        match self {
            Scope::ServiceWorker => "0-sw-",
            Scope::Window => "1-tab-",
            Scope::Worker => "2-worker-",
        }
    }
}

/// `globalThis[name]`, or `None` when it is `undefined` or `null` (or throws).
pub(crate) fn get(obj: &JsValue, name: &str) -> Option<JsValue> {
    Reflect::get(obj, &JsValue::from_str(name))
        .ok()
        .filter(|v| !v.is_undefined() && !v.is_null())
}

fn global_member(name: &str) -> Option<JsValue> {
    get(&js_sys::global(), name)
}

/// `location.href` of the global scope (windows and workers have one).
pub(crate) fn location_href() -> Option<String> {
    global_member("location").and_then(|l| get(&l, "href")?.as_string())
}

/// The window's document, if this scope has one.
pub(crate) fn document() -> Option<web_sys::Document> {
    global_member("document").map(JsCast::unchecked_into)
}

/// `<meta name="app-version" content="...">` of the document, if any.
pub(crate) fn meta_version() -> Option<String> {
    let doc = document()?;
    let meta = doc
        .query_selector("meta[name=\"app-version\"]")
        .ok()
        .flatten()?;
    meta.get_attribute("content")
}

/// Whether the document is visible.
pub(crate) fn is_visible() -> bool {
    document().is_some_and(|d| d.visibility_state() == web_sys::VisibilityState::Visible)
}

/// When this page or worker was loaded: `performance.timeOrigin`, ms since the Unix epoch.
pub(crate) fn loaded_at_ms() -> u64 {
    global_member("performance")
        .and_then(|p| get(&p, "timeOrigin")?.as_f64())
        .unwrap_or(0.0)
        .max(0.0) as u64
}

/// The wall clock, ms since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    js_sys::Date::now().max(0.0) as u64
}

/// `navigator.onLine === false`.
pub(crate) fn is_offline() -> bool {
    global_member("navigator")
        .and_then(|n| get(&n, "onLine"))
        .and_then(|v| v.as_bool())
        == Some(false)
}

/// What `GET versionUrl` gave.
pub(crate) enum Fetched {
    /// `{"version": "<this>"}`.
    Version(String),
    /// Anything else; the reason is logged.
    Unreachable,
}

/// Fetches `url` (absolute) with a cache-busting query parameter and `cache: 'no-store'`, so
/// neither the HTTP cache nor a cache-first service worker can answer with a stale version.
pub(crate) async fn fetch_version(url: &str) -> Fetched {
    match try_fetch_version(url).await {
        Ok(v) => Fetched::Version(v),
        Err(e) => {
            web_sys::console::warn_2(
                &JsValue::from_str(&format!("p3-lanes: version check: cannot read {url}:")),
                &e,
            );
            Fetched::Unreachable
        }
    }
}

async fn try_fetch_version(url: &str) -> Result<String, JsValue> {
    let u = web_sys::Url::new(url)?;
    let nonce = format!("{:x}{:x}", wall_ms(), global::random_u64()? & 0xffff_ffff);
    u.search_params().set("_p3v", &nonce);
    let headers = web_sys::Headers::new()?;
    headers.set("Accept", "application/json")?;
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_cache(web_sys::RequestCache::NoStore);
    init.set_headers(&headers);
    let promise: Promise = global::fetch(&JsValue::from_str(&u.href()), &init)?.unchecked_into();
    let response: web_sys::Response = JsFuture::from(promise).await?.dyn_into()?;
    if !response.ok() {
        return Err(JsValue::from_str(&format!("HTTP {}", response.status())));
    }
    let body = JsFuture::from(response.json()?).await?;
    get(&body, "version")
        .and_then(|v| v.as_string())
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| JsValue::from_str("the answer has no \"version\" string"))
}

/// Where the [`PurgeRecord`] lives: a cache of the guard's own in Cache Storage (shared by
/// the origin's tabs and its service worker, and kept by the purge), else `localStorage`.
/// With neither, writing fails, and the guard then refuses to purge: a reload it could not
/// remember could loop.
#[derive(Clone)]
pub(crate) struct RecordStore {
    key: String,
}

impl RecordStore {
    /// The store for `key` (the cache name and `localStorage` key).
    pub(crate) fn new(key: &str) -> RecordStore {
        RecordStore {
            key: key.to_owned(),
        }
    }

    fn caches() -> Option<web_sys::CacheStorage> {
        global_member("caches").map(JsCast::unchecked_into)
    }

    fn local_storage() -> Option<web_sys::Storage> {
        // Reading `localStorage` throws where storage is disabled: `None` then.
        global_member("localStorage").map(JsCast::unchecked_into)
    }

    fn record_url() -> Option<String> {
        let base = location_href()?;
        web_sys::Url::new_with_base(RECORD_PATH, &base)
            .ok()
            .map(|u| u.href())
    }

    /// The stored record, if any (unreadable or corrupt: `None`).
    pub(crate) async fn read(&self) -> Option<PurgeRecord> {
        let text = match (Self::caches(), Self::record_url()) {
            (Some(caches), Some(url)) => read_cache(&caches, &self.key, &url).await,
            _ => Self::local_storage()?.get_item(&self.key).ok().flatten(),
        };
        record_from_json(&text?)
    }

    /// Stores `record`.
    ///
    /// Errors: whatever the storage threw (quota, storage disabled), or `internal` when this
    /// scope has no persistent storage at all.
    pub(crate) async fn write(&self, record: &PurgeRecord) -> Result<(), JsValue> {
        let json = record_to_json(record)?;
        if let (Some(caches), Some(url)) = (Self::caches(), Self::record_url()) {
            let cache: web_sys::Cache = JsFuture::from(caches.open(&self.key))
                .await?
                .unchecked_into();
            let headers = web_sys::Headers::new()?;
            headers.set("Content-Type", "application/json")?;
            let init = web_sys::ResponseInit::new();
            init.set_headers(&headers);
            let resp = web_sys::Response::new_with_opt_str_and_init(Some(&json), &init)?;
            JsFuture::from(cache.put_with_str(&url, &resp)).await?;
            return Ok(());
        }
        match Self::local_storage() {
            Some(s) => s.set_item(&self.key, &json),
            None => Err(error::coded(
                crate::core::error::ErrorCode::Internal,
                "neither Cache Storage nor localStorage is available",
            )),
        }
    }
}

/// The record from its stored JSON (the shape of [`PurgeRecord::to_json`]), parsed by the
/// browser's `JSON` and read field by field (no JSON parser or serde deserializer in the PWA
/// entry: issue 15's size budget); `None` when corrupt, as [`PurgeRecord::from_json`].
fn record_from_json(text: &str) -> Option<PurgeRecord> {
    let value = js_sys::JSON::parse(text).ok()?;
    let int = |name: &str, max: f64| {
        get(&value, name)?
            .as_f64()
            .filter(|n| n.fract() == 0.0 && (0.0..=max).contains(n))
    };
    let finished_at = match get(&value, "finishedAt") {
        None => None,
        Some(_) => Some(int("finishedAt", MAX_SAFE_INTEGER)? as u64),
    };
    Some(PurgeRecord {
        target: get(&value, "target")?.as_string()?,
        attempts: int("attempts", f64::from(u32::MAX))? as u32,
        started_at: int("startedAt", MAX_SAFE_INTEGER)? as u64,
        finished_at,
    })
}

/// 2^53 - 1: the largest integer a JS number holds exactly.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// The record's stored JSON (the shape of [`PurgeRecord::to_json`]), written by the browser's
/// `JSON`.
fn record_to_json(record: &PurgeRecord) -> Result<String, JsValue> {
    Ok(String::from(js_sys::JSON::stringify(&convert::to_js(
        record,
    ))?))
}

async fn read_cache(caches: &web_sys::CacheStorage, name: &str, url: &str) -> Option<String> {
    // `caches.match` would create nothing, but searching one named cache is cheaper and
    // cannot pick up another cache's entry for the same URL.
    let has = JsFuture::from(caches.has(name)).await.ok()?.as_bool()?;
    if !has {
        return None;
    }
    let cache: web_sys::Cache = JsFuture::from(caches.open(name))
        .await
        .ok()?
        .unchecked_into();
    let hit = JsFuture::from(cache.match_with_str(url)).await.ok()?;
    let resp: web_sys::Response = hit.dyn_into().ok()?;
    JsFuture::from(resp.text().ok()?).await.ok()?.as_string()
}

/// What a purge removed; failures are logged and do not stop it.
#[derive(Default)]
pub(crate) struct PurgeReport {
    /// Scopes of the registrations unregistered.
    pub(crate) registrations: Vec<String>,
    /// Names of the caches deleted.
    pub(crate) caches: Vec<String>,
}

/// Unregisters the owned service-worker registrations, then deletes the owned caches (in
/// that order, so no worker refills a cache after it is deleted).
pub(crate) async fn purge(ownership: &Ownership, scope: Scope) -> PurgeReport {
    let mut report = PurgeReport::default();
    for reg in registrations(scope).await {
        let s = reg.scope();
        if !ownership.owns_registration(&s) {
            continue;
        }
        match reg.unregister() {
            Ok(p) => match JsFuture::from(p).await {
                Ok(_) => report.registrations.push(s),
                Err(e) => warn(&format!("cannot unregister the service worker of {s}"), &e),
            },
            Err(e) => warn(&format!("cannot unregister the service worker of {s}"), &e),
        }
    }
    if let Some(caches) = RecordStore::caches() {
        let names: Vec<String> = match JsFuture::from(caches.keys()).await {
            Ok(list) => list
                .unchecked_into::<Array>()
                .iter()
                .filter_map(|n| n.as_string())
                .collect(),
            Err(e) => {
                warn("cannot list the caches", &e);
                Vec::new()
            }
        };
        for name in ownership.caches_to_delete(names.iter().map(String::as_str)) {
            match JsFuture::from(caches.delete(name)).await {
                Ok(_) => report.caches.push(name.to_owned()),
                Err(e) => warn(&format!("cannot delete cache \"{name}\""), &e),
            }
        }
    }
    report
}

/// The registrations this scope can see: all of the origin's in a window
/// (`navigator.serviceWorker.getRegistrations()`, absent outside secure contexts), its own in
/// a service worker.
async fn registrations(scope: Scope) -> Vec<web_sys::ServiceWorkerRegistration> {
    let g = js_sys::global();
    if scope == Scope::ServiceWorker {
        return get(&g, "registration")
            .map(|r| vec![r.unchecked_into()])
            .unwrap_or_default();
    }
    let Some(container) = get(&g, "navigator").and_then(|n| get(&n, "serviceWorker")) else {
        return Vec::new();
    };
    let container: web_sys::ServiceWorkerContainer = container.unchecked_into();
    match JsFuture::from(container.get_registrations()).await {
        Ok(list) => list
            .unchecked_into::<Array>()
            .iter()
            .map(JsCast::unchecked_into)
            .collect(),
        Err(e) => {
            warn("cannot list the service-worker registrations", &e);
            Vec::new()
        }
    }
}

/// `location.reload()` in a window.
///
/// Errors: `internal` outside windows or if the call throws.
pub(crate) fn reload_page() -> Result<(), JsValue> {
    let location = global_member("location")
        .ok_or_else(|| error::coded(crate::core::error::ErrorCode::Internal, "no location"))?;
    let reload = get(&location, "reload")
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| {
            error::coded(
                crate::core::error::ErrorCode::Internal,
                "location.reload() is not available in this scope",
            )
        })?;
    reload.call0(&location).map(|_| ())
}

/// In a service worker: navigates every window client to its own URL (a reload that does not
/// ask the page first). Returns how many were asked.
pub(crate) async fn navigate_clients() -> usize {
    let Some(clients) = global_member("clients") else {
        return 0;
    };
    let clients: web_sys::Clients = clients.unchecked_into();
    let opts = web_sys::ClientQueryOptions::new();
    opts.set_include_uncontrolled(true);
    opts.set_type(web_sys::ClientType::Window);
    let list = match JsFuture::from(clients.match_all_with_options(&opts)).await {
        Ok(l) => l.unchecked_into::<Array>(),
        Err(e) => {
            warn("cannot list the window clients", &e);
            return 0;
        }
    };
    let mut n = 0;
    for c in list.iter() {
        let c: web_sys::WindowClient = c.unchecked_into();
        let url = c.url();
        // `navigate` rejects for clients this worker does not control; that is fine.
        if let Ok(p) = c.navigate(&url) {
            if JsFuture::from(p).await.is_ok() {
                n += 1;
            }
        }
    }
    n
}

/// A plain object `{}`.
pub(crate) fn object() -> Object {
    Object::new()
}

fn warn(what: &str, e: &JsValue) {
    web_sys::console::warn_2(&JsValue::from_str(&format!("p3-lanes: {what}:")), e);
}
