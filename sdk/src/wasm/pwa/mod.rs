//! PWA cache protection for JavaScript (seed 000 "PWA Cache Protection"): `checkVersion()` and
//! the `CacheGuard` class behind it. The rules live in the sans-IO core,
//! [`crate::core::pwa`]; this module drives them with `fetch`, Cache Storage, service-worker
//! registrations, a `BroadcastChannel` and timers, in a window or a (module) service worker.
//!
//! One check ([`run`]):
//! 1. page version: the `currentVersion` option, else `<meta name="app-version">`;
//! 2. server version: `GET versionUrl?_p3v=<nonce>` with `cache: 'no-store'` (skipped when
//!    `navigator.onLine` is false);
//! 3. [`decide`] with the stored [`PurgeRecord`] and `performance.timeOrigin`;
//! 4. on `Purge`: claim on the channel; the elected leader re-decides with the fresh record,
//!    runs the app's `beforePurge` hook (which may postpone), stores the record, unregisters
//!    the owned registrations, deletes the owned caches, marks the record finished, broadcasts
//!    `purged` and reloads. Followers (and tabs that find the purge already done) run their
//!    hook, then reload. `StaleAfterPurge` rejects with `stale_after_purge` and emits the
//!    `stale-after-purge` event; it never reloads.
//!
//! The guard listens on its channel (and, in windows, for `visibilitychange` → visible) until
//! `stop()`: while it runs, its handlers keep it alive even if the JS object is dropped.
//! It runs on the shared runtime ([`crate::wasm::runtime`]): its timer, callback registry and
//! task spawner.

mod host;
mod options;
mod types;

use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::pwa::{
    decide, CheckInput, CoordOutput, Coordinator, Decision, PurgeRecord, ServerVersion, TabMessage,
};
use crate::wasm::global::{self, Global};
use crate::wasm::runtime::{self, Callbacks, Timer};
use crate::wasm::{convert, error};
use host::{Fetched, RecordStore, Scope};
use js_sys::{Function, Promise, Reflect};
use options::GuardOptions;
use serde::Serialize;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{BroadcastChannel, MessageEvent};

/// Watches the app's version and purges stale caches safely (see the module docs). Create it
/// with `new CacheGuard(options)`; `checkVersion(options)` uses one per global scope.
#[wasm_bindgen]
pub struct CacheGuard {
    inner: Handle,
}

#[wasm_bindgen]
impl CacheGuard {
    /// Starts a guard: it joins the tabs' channel (named `storageKey`) and, in a window with
    /// `recheckOnVisible` (default true), re-checks whenever the page becomes visible. It does
    /// not check until `check()` is called.
    ///
    /// Throws `invalid_argument` for bad options, `internal` outside a browser-like scope.
    ///
    /// `new CacheGuard(baseUrl, options?)` checks the server at `baseUrl` (as
    /// `P3Client.connect`: its `{baseUrl}/api/version`), for an app served from another
    /// origin; `new CacheGuard(options?)` asks the page's own origin (or `versionUrl`).
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(
            js_name = baseUrlOrOptions,
            unchecked_optional_param_type = "string | CacheGuardOptions"
        )]
        first: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "CacheGuardOptions")] options: JsValue,
    ) -> Result<CacheGuard, JsValue> {
        let opts = options::parse_args(&first, &options)?;
        Ok(CacheGuard {
            inner: start(opts)?,
        })
    }

    /// Runs one version check (a check already running is shared). Resolves with a
    /// `VersionCheckResult`: `up-to-date`, `skipped` (no page version, offline, version
    /// endpoint unreachable), `postponed` (the `beforePurge` hook said not now) or `reloading`
    /// (the page is about to reload; in a service worker: the pages were told to).
    ///
    /// Rejects with `stale_after_purge` when the page is still stale although it was loaded
    /// after the allowed purge for the server's version (also emitted as the
    /// `stale-after-purge` event), `closed` if the guard is stopped meanwhile, `internal` if
    /// the purge could not be recorded (then nothing is purged or reloaded).
    #[wasm_bindgen(unchecked_return_type = "Promise<VersionCheckResult>")]
    pub fn check(&self) -> Promise {
        check(&self.inner)
    }

    /// Calls `callback(event)` for every `CacheGuardEvent`. Returns a function that
    /// unsubscribes.
    ///
    /// Throws `invalid_argument` if `callback` is not a function.
    #[wasm_bindgen(js_name = onEvent, unchecked_return_type = "() => void")]
    pub fn on_event(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: CacheGuardEvent) => void")]
        callback: JsValue,
    ) -> Result<JsValue, JsValue> {
        let f = callback
            .dyn_into::<Function>()
            .map_err(|_| error::invalid_argument("callback must be a function"))?;
        Ok(subscribe(&self.inner, f))
    }

    /// This context's id in the tabs' election (service workers sort first, so they lead).
    #[wasm_bindgen(getter, js_name = tabId)]
    pub fn tab_id(&self) -> String {
        self.inner.borrow().coord.tab().to_owned()
    }

    /// Stops listening (channel, visibility, timers); a running check rejects with `closed`.
    /// Idempotent.
    pub fn stop(&self) {
        stop(&self.inner);
    }
}

thread_local! {
    /// The guard `checkVersion` uses in this global scope.
    static DEFAULT_GUARD: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// Checks the app's version once and keeps this scope's guard listening (see `CacheGuard`):
/// the first call starts it, later calls replace its options. Resolves and rejects like
/// `CacheGuard.check()`.
///
/// `checkVersion(baseUrl, options?)` asks the server at `baseUrl` (as `P3Client.connect`:
/// `{baseUrl}/api/version`; for an app served from another origin than its server);
/// `checkVersion(options?)` asks the page's own origin (or `versionUrl`).
///
/// In a window the page version is `<meta name="app-version">`; in a service worker pass
/// `currentVersion`. Rejects with `invalid_argument` for bad options or a `baseUrl` that is
/// not `http(s)://`.
#[wasm_bindgen(js_name = checkVersion, unchecked_return_type = "Promise<VersionCheckResult>")]
pub fn check_version(
    #[wasm_bindgen(
        js_name = baseUrlOrOptions,
        unchecked_optional_param_type = "string | CacheGuardOptions"
    )]
    first: JsValue,
    #[wasm_bindgen(unchecked_optional_param_type = "CacheGuardOptions")] options: JsValue,
) -> Promise {
    let opts = match options::parse_args(&first, &options) {
        Ok(o) => o,
        Err(e) => return Promise::reject(&e),
    };
    let existing = DEFAULT_GUARD.with(|g| g.borrow().clone());
    let h = match existing {
        Some(h) if !h.borrow().stopped => {
            replace_options(&h, opts);
            h
        }
        _ => match start(opts) {
            Ok(h) => {
                DEFAULT_GUARD.with(|g| *g.borrow_mut() = Some(h.clone()));
                h
            }
            Err(e) => return Promise::reject(&e),
        },
    };
    check(&h)
}

type Handle = Rc<RefCell<Inner>>;

/// What a waiting check learns from the election.
enum Outcome {
    /// This context leads the purge for the target.
    Lead(String),
    /// Another context purged for the target: reload when safe.
    Reload(String),
    /// Decide again.
    Recheck,
    /// The guard was stopped.
    Stopped,
}

/// A check waiting for the election: resolving `resolve` wakes it, `outcome` says why.
struct Waiter {
    resolve: Function,
    outcome: Option<Outcome>,
}

struct Inner {
    opts: GuardOptions,
    scope: Scope,
    coord: Coordinator,
    global: Global,
    store: RecordStore,
    channel: Option<BroadcastChannel>,
    on_channel: Option<Closure<dyn FnMut(MessageEvent)>>,
    on_visible: Option<Closure<dyn FnMut()>>,
    /// The one timer, armed for the coordinator's next deadline.
    timer: Timer,
    listeners: Callbacks<()>,
    /// The check running now, shared by callers.
    running: Option<Promise>,
    waiter: Option<Waiter>,
    /// News arrived while the running check was not waiting: it decides once more.
    dirty: bool,
    stopped: bool,
}

fn start(opts: GuardOptions) -> Result<Handle, JsValue> {
    let global = Global::get()?;
    let scope = Scope::current();
    let tab = format!("{}{:016x}", scope.tab_prefix(), global::random_u64()?);
    let coord = Coordinator::new(tab, &opts.config);
    let store = RecordStore::new(&opts.storage_key);
    let h = Rc::new(RefCell::new(Inner {
        opts,
        scope,
        coord,
        global,
        store,
        channel: None,
        on_channel: None,
        on_visible: None,
        timer: Timer::default(),
        listeners: Callbacks::default(),
        running: None,
        waiter: None,
        dirty: false,
        stopped: false,
    }));
    open_channel(&h);
    set_visibility_listener(&h);
    Ok(h)
}

fn replace_options(h: &Handle, opts: GuardOptions) {
    let key_changed = h.borrow().opts.storage_key != opts.storage_key;
    {
        let mut inner = h.borrow_mut();
        if key_changed {
            inner.store = RecordStore::new(&opts.storage_key);
        }
        inner.opts = opts;
    }
    if key_changed {
        open_channel(h);
    }
    set_visibility_listener(h);
}

/// Joins the BroadcastChannel named `storageKey` (where `BroadcastChannel` exists).
fn open_channel(h: &Handle) {
    close_channel(h);
    let name = h.borrow().opts.storage_key.clone();
    let Ok(channel) = BroadcastChannel::new(&name) else {
        return;
    };
    let on_message = {
        let h = h.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(msg) = tab_message(&ev.data()) else {
                return;
            };
            {
                let mut inner = h.borrow_mut();
                let now = inner.global.now_ms();
                inner.coord.handle_message(msg, Millis::from_u64(now));
            }
            pump(&h);
        })
    };
    channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    let mut inner = h.borrow_mut();
    inner.channel = Some(channel);
    inner.on_channel = Some(on_message);
}

/// A [`TabMessage`] from the channel's `{type, target, tab}`, read field by field (the derived
/// serde decoder of the tagged enum is the largest function of the PWA build); `None` for any
/// other value, which the channel ignores.
fn tab_message(data: &JsValue) -> Option<TabMessage> {
    if !data.is_object() {
        return None;
    }
    let field = |name: &str| {
        Reflect::get(data, &JsValue::from_str(name))
            .ok()?
            .as_string()
    };
    TabMessage::from_parts(&field("type")?, field("target")?, field("tab")?)
}

fn close_channel(h: &Handle) {
    let mut inner = h.borrow_mut();
    if let Some(c) = inner.channel.take() {
        c.set_onmessage(None);
        c.close();
    }
    inner.on_channel = None;
}

/// Adds or removes the `visibilitychange` listener to match `recheckOnVisible`.
fn set_visibility_listener(h: &Handle) {
    let Some(doc) = host::document() else { return };
    let want = h.borrow().opts.recheck_on_visible;
    let mut inner = h.borrow_mut();
    match (&inner.on_visible, want) {
        (Some(cb), false) => {
            let _ = doc.remove_event_listener_with_callback(
                "visibilitychange",
                cb.as_ref().unchecked_ref(),
            );
            inner.on_visible = None;
        }
        (None, true) => {
            let weak = Rc::downgrade(h);
            let cb = Closure::<dyn FnMut()>::new(move || {
                if let Some(h) = weak.upgrade() {
                    if host::is_visible() {
                        spawn_check(&h);
                    }
                }
            });
            let _ = doc
                .add_event_listener_with_callback("visibilitychange", cb.as_ref().unchecked_ref());
            inner.on_visible = Some(cb);
        }
        _ => {}
    }
}

fn stop(h: &Handle) {
    if h.borrow().stopped {
        return;
    }
    h.borrow_mut().stopped = true;
    close_channel(h);
    if let Some(doc) = host::document() {
        if let Some(cb) = h.borrow_mut().on_visible.take() {
            let _ = doc.remove_event_listener_with_callback(
                "visibilitychange",
                cb.as_ref().unchecked_ref(),
            );
        }
    }
    let mut inner = h.borrow_mut();
    inner.coord.cancel();
    let Inner { timer, global, .. } = &mut *inner;
    timer.cancel(global);
    timer.release();
    wake(&mut inner, Outcome::Stopped);
}

fn subscribe(h: &Handle, f: Function) -> JsValue {
    runtime::subscribe(h, |i| &mut i.listeners, (), f)
}

/// Drains the coordinator: broadcasts, election outcomes, the timer.
fn pump(h: &Handle) {
    let mut spawn = false;
    {
        let mut inner = h.borrow_mut();
        loop {
            let now = Millis::from_u64(inner.global.now_ms());
            match inner.coord.poll_output(now) {
                CoordOutput::Broadcast(msg) => {
                    if let Some(c) = &inner.channel {
                        let _ = c.post_message(&convert::to_js(&msg));
                    }
                }
                CoordOutput::Lead { target } => {
                    if inner.waiter.is_some() {
                        wake(&mut inner, Outcome::Lead(target));
                    } else {
                        // Nobody waits to purge (cannot happen while a check drives the
                        // claim): let the others take over.
                        let now = inner.global.now_ms();
                        inner.coord.release(Millis::from_u64(now));
                    }
                }
                CoordOutput::Reload { target } => {
                    if inner.waiter.is_some() {
                        wake(&mut inner, Outcome::Reload(target));
                    } else {
                        spawn = true;
                    }
                }
                CoordOutput::Recheck => {
                    if inner.waiter.is_some() {
                        wake(&mut inner, Outcome::Recheck);
                    } else if inner.running.is_some() {
                        inner.dirty = true;
                    } else {
                        spawn = true;
                    }
                }
                CoordOutput::Timeout(at) => {
                    arm_timer(&mut inner, h, at);
                    break;
                }
            }
        }
    }
    if spawn {
        spawn_check(h);
    }
}

/// Hands `outcome` to the waiting check. The first outcome wins until the check has read it:
/// a `Lead` overwritten by a later `Recheck` would leave this context leading a purge that
/// nobody performs.
fn wake(inner: &mut Inner, outcome: Outcome) {
    if let Some(w) = inner.waiter.as_mut() {
        if w.outcome.is_none() {
            w.outcome = Some(outcome);
            let _ = w.resolve.call0(&JsValue::UNDEFINED);
        }
    }
}

fn arm_timer(inner: &mut Inner, h: &Handle, at: Millis) {
    let Inner {
        timer,
        global,
        stopped,
        ..
    } = inner;
    if *stopped {
        timer.cancel(global);
        return;
    }
    let h = h.clone();
    timer.arm_at(global, at, move || {
        Box::new(move || {
            {
                let mut inner = h.borrow_mut();
                inner.timer.fired();
                let now = inner.global.now_ms();
                inner.coord.handle_timeout(Millis::from_u64(now));
            }
            pump(&h);
        })
    });
}

/// Waits until the election has something for the running check.
async fn wait(h: &Handle) -> Outcome {
    let promise = {
        let mut inner = h.borrow_mut();
        if inner.stopped {
            return Outcome::Stopped;
        }
        let mut slot = None;
        let promise = Promise::new(&mut |resolve, _| slot = Some(resolve));
        inner.waiter = slot.map(|resolve| Waiter {
            resolve,
            outcome: None,
        });
        promise
    };
    pump(h);
    let _ = JsFuture::from(promise).await;
    let mut inner = h.borrow_mut();
    inner
        .waiter
        .take()
        .and_then(|w| w.outcome)
        .unwrap_or(Outcome::Recheck)
}

/// The shared Promise of the running check, or a new check.
fn check(h: &Handle) -> Promise {
    if h.borrow().stopped {
        return Promise::reject(&error::coded(
            ErrorCode::Closed,
            "this CacheGuard was stopped",
        ));
    }
    if let Some(p) = h.borrow().running.clone() {
        return p;
    }
    let promise = wasm_bindgen_futures::future_to_promise(run(h.clone()));
    h.borrow_mut().running = Some(promise.clone());
    promise
}

/// A check nobody awaits (visibility, news from another tab): its outcome reaches the app
/// through events only.
fn spawn_check(h: &Handle) {
    if h.borrow().stopped {
        return;
    }
    let p = check(h);
    runtime::spawn(async move {
        let _ = JsFuture::from(p).await;
    });
}

/// `VersionCheckResult`.
#[derive(Serialize)]
#[serde(
    tag = "status",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
enum CheckResult<'a> {
    UpToDate {
        version: &'a str,
        after_purge: bool,
    },
    Skipped {
        reason: &'a str,
        page_version: Option<&'a str>,
    },
    Postponed {
        page_version: &'a str,
        server_version: &'a str,
    },
    Reloading {
        page_version: &'a str,
        server_version: &'a str,
        purged: bool,
    },
}

/// `CacheGuardEvent` (the ones carrying an `error` or a `result` get it set afterwards).
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
enum GuardEvent<'a> {
    Checked,
    Purging {
        page_version: &'a str,
        server_version: &'a str,
        attempt: u32,
    },
    Purged {
        server_version: &'a str,
        caches: &'a [String],
        registrations: &'a [String],
    },
    Postponed {
        page_version: &'a str,
        server_version: &'a str,
    },
    Reloading {
        page_version: &'a str,
        server_version: &'a str,
        purged: bool,
    },
    StaleAfterPurge {
        page_version: &'a str,
        server_version: &'a str,
        attempts: u32,
    },
    Error,
}

/// Calls every listener (options' `onEvent` first) with `event`; no borrow is held.
fn emit(h: &Handle, event: &GuardEvent<'_>, extra: Option<(&str, &JsValue)>) {
    let js = convert::to_js(event);
    if let Some((k, v)) = extra {
        let _ = Reflect::set(&js, &JsValue::from_str(k), v);
    }
    let listeners: Vec<Function> = {
        let inner = h.borrow();
        inner
            .opts
            .on_event
            .iter()
            .cloned()
            .chain(inner.listeners.of(()).into_iter().map(|l| l.1))
            .collect()
    };
    for f in listeners {
        if let Err(e) = f.call1(&JsValue::UNDEFINED, &js) {
            web_sys::console::error_2(
                &JsValue::from_str("p3-lanes: a CacheGuard listener threw:"),
                &e,
            );
        }
    }
}

/// One step of a check that may have to start over.
enum Step {
    Done(JsValue),
    Again,
}

async fn run(h: Handle) -> Result<JsValue, JsValue> {
    let r = run_checks(&h).await;
    h.borrow_mut().running = None;
    match &r {
        Ok(result) => emit(&h, &GuardEvent::Checked, Some(("result", result))),
        Err(e) => {
            let code = Reflect::get(e, &JsValue::from_str("code"))
                .ok()
                .and_then(|c| c.as_string());
            // stale_after_purge has its own event; `closed` is the app's own doing.
            if !matches!(code.as_deref(), Some("stale_after_purge" | "closed")) {
                emit(&h, &GuardEvent::Error, Some(("error", e)));
            }
        }
    }
    r
}

async fn run_checks(h: &Handle) -> Result<JsValue, JsValue> {
    loop {
        h.borrow_mut().dirty = false;
        let (page, decision) = decide_now(h).await;
        let outcome = match decision {
            Decision::Skip(reason) => {
                if h.borrow().dirty {
                    continue;
                }
                return Ok(convert::to_js(&CheckResult::Skipped {
                    reason: reason.as_str(),
                    page_version: page.as_deref(),
                }));
            }
            Decision::UpToDate {
                version,
                after_purge,
            } => {
                if h.borrow().dirty {
                    continue;
                }
                return Ok(convert::to_js(&CheckResult::UpToDate {
                    version: &version,
                    after_purge,
                }));
            }
            Decision::StaleAfterPurge {
                page,
                target,
                attempts,
            } => {
                let e = error::coded(
                    ErrorCode::StaleAfterPurge,
                    &format!(
                        "this page runs version \"{page}\" but the server says \"{target}\", and \
                         the caches were already purged and the page reloaded for it \
                         ({attempts} attempt(s)); not reloading again"
                    ),
                );
                for (k, v) in [
                    ("pageVersion", JsValue::from_str(&page)),
                    ("serverVersion", JsValue::from_str(&target)),
                    ("attempts", JsValue::from(attempts)),
                ] {
                    let _ = Reflect::set(&e, &JsValue::from_str(k), &v);
                }
                let ev = GuardEvent::StaleAfterPurge {
                    page_version: &page,
                    server_version: &target,
                    attempts,
                };
                emit(h, &ev, Some(("error", &e)));
                return Err(e);
            }
            Decision::Reload { target } => Outcome::Reload(target),
            Decision::AwaitPurge { target } => {
                {
                    let mut inner = h.borrow_mut();
                    let now = inner.global.now_ms();
                    inner.coord.follow(&target, Millis::from_u64(now));
                }
                wait(h).await
            }
            Decision::Purge { target, .. } => {
                {
                    let mut inner = h.borrow_mut();
                    let now = inner.global.now_ms();
                    inner.coord.claim(&target, Millis::from_u64(now));
                }
                wait(h).await
            }
        };
        let page = page.unwrap_or_default();
        let step = match outcome {
            Outcome::Lead(target) => lead(h, &page, &target).await?,
            Outcome::Reload(target) => reload_when_safe(h, &page, &target).await?,
            Outcome::Recheck => Step::Again,
            Outcome::Stopped => {
                return Err(error::coded(
                    ErrorCode::Closed,
                    "the CacheGuard was stopped during the check",
                ))
            }
        };
        match step {
            Step::Done(v) => return Ok(v),
            Step::Again => continue,
        }
    }
}

/// Gathers the inputs and decides. Returns the page version too.
async fn decide_now(h: &Handle) -> (Option<String>, Decision) {
    let (page, url, config, store) = {
        let inner = h.borrow();
        let page = inner
            .opts
            .current_version
            .clone()
            .or_else(host::meta_version);
        let url = inner.opts.version_url.clone();
        (page, url, inner.opts.config.clone(), inner.store.clone())
    };
    // Without a page version there is nothing to compare: do not even ask the server.
    let fetched = match &page {
        Some(_) if !host::is_offline() => Some(host::fetch_version(&url).await),
        _ => None,
    };
    let server = match &fetched {
        Some(Fetched::Version(v)) => ServerVersion::Known(v),
        Some(Fetched::Unreachable) => ServerVersion::Unreachable,
        None => ServerVersion::Offline,
    };
    let record = store.read().await;
    let d = decide(
        &CheckInput {
            page_version: page.as_deref(),
            server_version: server,
            record: record.as_ref(),
            loaded_at: host::loaded_at_ms(),
            now: host::wall_ms(),
        },
        &config,
    );
    (page, d)
}

/// The app's answer to `beforePurge`.
enum HookAnswer {
    Proceed,
    Postpone,
    Delay(u64),
}

async fn ask_hook(h: &Handle, page: &str, target: &str, role: &str) -> HookAnswer {
    let Some(hook) = h.borrow().opts.before_purge.clone() else {
        return HookAnswer::Proceed;
    };
    let info = host::object();
    for (k, v) in [
        ("pageVersion", page),
        ("serverVersion", target),
        ("role", role),
    ] {
        let _ = Reflect::set(&info, &JsValue::from_str(k), &JsValue::from_str(v));
    }
    let answer = match hook.call1(&JsValue::UNDEFINED, &info) {
        Ok(v) => JsFuture::from(Promise::resolve(&v)).await,
        Err(e) => Err(e),
    };
    match answer {
        Ok(v) if v.as_bool() == Some(false) => HookAnswer::Postpone,
        Ok(v) => match v.as_f64() {
            Some(ms) if ms.is_finite() && ms >= 1.0 => HookAnswer::Delay(ms.round() as u64),
            _ => HookAnswer::Proceed,
        },
        Err(e) => {
            // Never reload over unsaved state because the hook failed.
            web_sys::console::warn_2(
                &JsValue::from_str("p3-lanes: beforePurge threw; postponing the purge:"),
                &e,
            );
            HookAnswer::Postpone
        }
    }
}

fn release(h: &Handle) {
    {
        let mut inner = h.borrow_mut();
        let now = inner.global.now_ms();
        inner.coord.release(Millis::from_u64(now));
    }
    pump(h);
}

/// This context leads: re-decide with the fresh record, ask the hook, record, purge, tell the
/// others, reload.
async fn lead(h: &Handle, page: &str, target: &str) -> Result<Step, JsValue> {
    let (_, fresh) = decide_now(h).await;
    let attempt = match fresh {
        Decision::Purge {
            target: ref t,
            attempt,
        } if t == target => attempt,
        // Another context purged meanwhile, or the server moved on: start over.
        _ => {
            release(h);
            return Ok(Step::Again);
        }
    };
    match ask_hook(h, page, target, "leader").await {
        HookAnswer::Proceed => {}
        HookAnswer::Postpone => {
            release(h);
            return Ok(Step::Done(postponed(h, page, target)));
        }
        HookAnswer::Delay(ms) => {
            release(h);
            let _ = runtime::sleep(ms).await;
            return Ok(Step::Again);
        }
    }
    let record = PurgeRecord::started(target, attempt, host::wall_ms());
    let store = h.borrow().store.clone();
    if let Err(e) = store.write(&record).await {
        release(h);
        let msg = format!(
            "cannot store the purge record ({}); not purging, to rule out a reload loop",
            error::describe(&e)
        );
        return Err(error::coded(ErrorCode::Internal, &msg));
    }
    emit(
        h,
        &GuardEvent::Purging {
            page_version: page,
            server_version: target,
            attempt,
        },
        None,
    );
    let (ownership, scope) = {
        let inner = h.borrow();
        (inner.opts.config.ownership.clone(), inner.scope)
    };
    let report = host::purge(&ownership, scope).await;
    if let Err(e) = store.write(&record.finished(host::wall_ms())).await {
        // The record stays "running": reloaded pages wait for the purge timeout, then report
        // stale_after_purge if still stale. Slower, never a loop.
        web_sys::console::warn_2(
            &JsValue::from_str("p3-lanes: cannot mark the purge finished:"),
            &e,
        );
    }
    {
        let mut inner = h.borrow_mut();
        let now = inner.global.now_ms();
        inner.coord.purge_finished(Millis::from_u64(now));
    }
    pump(h);
    emit(
        h,
        &GuardEvent::Purged {
            server_version: target,
            caches: &report.caches,
            registrations: &report.registrations,
        },
        None,
    );
    finish_reload(h, page, target, true).await
}

/// Another context purged: ask the hook, then reload.
async fn reload_when_safe(h: &Handle, page: &str, target: &str) -> Result<Step, JsValue> {
    match ask_hook(h, page, target, "follower").await {
        HookAnswer::Proceed => finish_reload(h, page, target, false).await,
        HookAnswer::Postpone => Ok(Step::Done(postponed(h, page, target))),
        HookAnswer::Delay(ms) => {
            let _ = runtime::sleep(ms).await;
            Ok(Step::Again)
        }
    }
}

fn postponed(h: &Handle, page: &str, target: &str) -> JsValue {
    emit(
        h,
        &GuardEvent::Postponed {
            page_version: page,
            server_version: target,
        },
        None,
    );
    convert::to_js(&CheckResult::Postponed {
        page_version: page,
        server_version: target,
    })
}

/// Reloads the page (window), or asks the pages to (service worker: they follow the
/// `purged` broadcast; with `navigateClients`, they are navigated too).
async fn finish_reload(
    h: &Handle,
    page: &str,
    target: &str,
    purged: bool,
) -> Result<Step, JsValue> {
    emit(
        h,
        &GuardEvent::Reloading {
            page_version: page,
            server_version: target,
            purged,
        },
        None,
    );
    let (scope, navigate) = {
        let inner = h.borrow();
        (inner.scope, inner.opts.navigate_clients)
    };
    match scope {
        Scope::Window => host::reload_page()?,
        Scope::ServiceWorker if navigate => {
            host::navigate_clients().await;
        }
        _ => {}
    }
    Ok(Step::Done(convert::to_js(&CheckResult::Reloading {
        page_version: page,
        server_version: target,
        purged,
    })))
}
