//! The one runtime every feature's driver runs on (client, SSE, peer mesh, calls, PWA, offline,
//! music rooms): the timer armed for a core machine's next deadline, the registry of app
//! callbacks, the queue that dispatches events with no borrow held, and the one task spawner.
//!
//! Each driver keeps its state in an `Rc<RefCell<_>>` and follows the same loop: feed an input
//! to the core, drain its outputs (I/O at once, events into a [`Queue`]), arm the [`Timer`]
//! for the deadline the core returned, then [`dispatch`] the queued events to the
//! [`Callbacks`] with the borrow released, so a callback may call back into the driver.
//!
//! One-shot delays go through [`after`] and [`sleep`].
//!
//! [`spawn`] is the only caller of `wasm_bindgen_futures::spawn_local` (handshakes, ticket
//! mints, `fetch`es, WebRTC negotiation steps): a task runs on the browser's microtask queue
//! and re-enters its driver through a cloned handle.

use crate::core::drive::Millis;
use crate::wasm::global::Global;
use js_sys::Function;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::{Rc, Weak};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsValue;

/// Runs `task` to completion on the browser's event loop (`spawn_local`).
pub(crate) fn spawn(task: impl Future<Output = ()> + 'static) {
    wasm_bindgen_futures::spawn_local(task);
}

/// Calls `callback` once after `delay_ms` ms: a one-shot `setTimeout` nobody cancels (a retry
/// delay, a request timeout, a paced send). Returns the timer id. Errors: the global scope has
/// no `setTimeout`.
pub(crate) fn after(callback: &JsValue, delay_ms: u64) -> Result<JsValue, JsValue> {
    crate::wasm::global::set_timeout_once(callback, delay_ms)
}

/// Resolves after `ms` ms ([`after`]). Errors: the global scope has no `setTimeout`.
pub(crate) async fn sleep(ms: u64) -> Result<(), JsValue> {
    let mut err = None;
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Err(e) = after(&resolve, ms) {
            err = Some(e);
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map(|_| ())
}

/// `resolve`/`reject` of a pending Promise (the one deferred of every driver).
pub(crate) struct Resolver {
    resolve: Function,
    reject: Function,
}

impl Resolver {
    /// A Promise and its resolver.
    pub(crate) fn new() -> (js_sys::Promise, Resolver) {
        let mut slot = None;
        let promise =
            js_sys::Promise::new(&mut |resolve, reject| slot = Some(Resolver { resolve, reject }));
        let resolver = slot.expect("the Promise executor runs synchronously");
        (promise, resolver)
    }

    /// Resolves the Promise with `value`.
    pub(crate) fn resolve(&self, value: &JsValue) {
        let _ = self.resolve.call1(&JsValue::UNDEFINED, value);
    }

    /// Rejects the Promise with `err`.
    pub(crate) fn reject(&self, err: &JsValue) {
        let _ = self.reject.call1(&JsValue::UNDEFINED, err);
    }

    /// The `resolve` and `reject` functions themselves (to hand to a JS API as handlers).
    pub(crate) fn into_functions(self) -> (Function, Function) {
        (self.resolve, self.reject)
    }
}

/// The one `setTimeout` armed for a machine's earliest deadline (core ms, the driver's
/// `performance.now()` clock).
#[derive(Default)]
pub(crate) struct Timer {
    /// Created on first use and kept for every later arming; [`Timer::release`] drops it
    /// (it may hold a strong handle on the driver).
    callback: Option<Closure<dyn FnMut()>>,
    /// Id of the armed `setTimeout`.
    id: Option<JsValue>,
    /// Deadline it is armed for, ms.
    deadline: Option<u64>,
}

impl Timer {
    /// Arms the timer for a core machine's `deadline` ([`Millis::NEVER`]: disarms it), rounded
    /// up to whole ms so that it never fires before the deadline, replacing an earlier arming
    /// unless it is for the same deadline. `on_fire` is called once, on the first arming, to
    /// make the callback; the callback must call [`Timer::fired`] before it feeds the core.
    pub(crate) fn arm_at(
        &mut self,
        global: &Global,
        deadline: Millis,
        on_fire: impl FnOnce() -> Box<dyn FnMut()>,
    ) {
        let deadline = deadline.deadline().map(|t| t.get().max(0.0).ceil() as u64);
        if self.deadline == deadline && (deadline.is_none() || self.id.is_some()) {
            return;
        }
        self.cancel(global);
        self.deadline = deadline;
        let Some(at) = deadline else { return };
        let delay = at.saturating_sub(global.now_ms());
        let callback = self
            .callback
            .get_or_insert_with(|| Closure::wrap(on_fire()));
        self.id = Some(global.set_timeout(callback.as_ref(), delay));
    }

    /// The armed timeout fired: nothing is armed any more.
    pub(crate) fn fired(&mut self) {
        self.id = None;
        self.deadline = None;
    }

    /// Clears the armed timeout, if any.
    pub(crate) fn cancel(&mut self, global: &Global) {
        if let Some(id) = self.id.take() {
            global.clear_timeout(&id);
        }
        self.deadline = None;
    }

    /// Drops the callback (and the handle it holds); the next arming makes a new one.
    pub(crate) fn release(&mut self) {
        self.callback = None;
    }
}

/// App callbacks registered under a topic (e.g. `onMessage(lane)`, `onEvent`), in
/// registration order; ids are unique per registry, also for Rust-side listeners that take one
/// with [`Callbacks::next_id`].
pub(crate) struct Callbacks<T> {
    next_id: u32,
    entries: Vec<(u32, T, Function)>,
}

impl<T> Default for Callbacks<T> {
    fn default() -> Self {
        Callbacks {
            next_id: 0,
            entries: Vec::new(),
        }
    }
}

impl<T: Copy + PartialEq> Callbacks<T> {
    /// A fresh id.
    pub(crate) fn next_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Registers `f` under `topic`; returns its id.
    pub(crate) fn add(&mut self, topic: T, f: Function) -> u32 {
        let id = self.next_id();
        self.entries.push((id, topic, f));
        id
    }

    /// Unregisters callback `id` (no-op if it is gone).
    pub(crate) fn remove(&mut self, id: u32) {
        self.entries.retain(|e| e.0 != id);
    }

    /// The callbacks registered under `topic`, with their ids.
    pub(crate) fn of(&self, topic: T) -> Vec<(u32, Function)> {
        self.entries
            .iter()
            .filter(|e| e.1 == topic)
            .map(|e| (e.0, e.2.clone()))
            .collect()
    }

    /// Whether callback `id` is still registered.
    pub(crate) fn contains(&self, id: u32) -> bool {
        self.entries.iter().any(|e| e.0 == id)
    }

    /// Unregisters every callback (and drops what they hold); ids stay unique.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Registers `f` under `topic` in the registry `registry(state)` of the driver `h`; returns
/// the JS unsubscribe function (idempotent; holds only a `Weak`).
pub(crate) fn subscribe<S: 'static, T: Copy + PartialEq + 'static>(
    h: &Rc<RefCell<S>>,
    registry: fn(&mut S) -> &mut Callbacks<T>,
    topic: T,
    f: Function,
) -> JsValue {
    let id = registry(&mut h.borrow_mut()).add(topic, f);
    let weak: Weak<RefCell<S>> = Rc::downgrade(h);
    Closure::<dyn FnMut()>::new(move || {
        if let Some(h) = weak.upgrade() {
            registry(&mut h.borrow_mut()).remove(id);
        }
    })
    .into_js_value()
}

/// Calls each of `callbacks` that `registered` still says is registered (an earlier one may
/// have unsubscribed it) with `args`; one that throws is reported on the console and does not
/// stop the others. Call with no borrow of the driver held.
pub(crate) fn call_each(
    callbacks: &[(u32, Function)],
    registered: impl Fn(u32) -> bool,
    args: &[JsValue],
) {
    for (id, f) in callbacks {
        if !registered(*id) {
            continue;
        }
        let result = match args {
            [a] => f.call1(&JsValue::UNDEFINED, a),
            [a, b] => f.call2(&JsValue::UNDEFINED, a, b),
            _ => f.call0(&JsValue::UNDEFINED),
        };
        if let Err(e) = result {
            web_sys::console::error_2(&JsValue::from_str("p3-lanes: a callback threw:"), &e);
        }
    }
}

/// Events drained from a core, waiting to be dispatched in order.
pub(crate) struct Queue<E> {
    events: VecDeque<E>,
    /// A [`dispatch`] further up the stack is running.
    dispatching: bool,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            events: VecDeque::new(),
            dispatching: false,
        }
    }
}

impl<E> Queue<E> {
    /// Queues `ev` after those already queued.
    pub(crate) fn push(&mut self, ev: E) {
        self.events.push_back(ev);
    }

    /// Whether a [`dispatch`] of this queue is running further up the stack (a driver's
    /// clean-up after its last event belongs to the outermost one).
    pub(crate) fn dispatching(&self) -> bool {
        self.dispatching
    }
}

impl<E> Extend<E> for Queue<E> {
    fn extend<I: IntoIterator<Item = E>>(&mut self, iter: I) {
        self.events.extend(iter);
    }
}

/// Dispatches the events queued in `queue(state)` of driver `h`, in order, each by `each`
/// with no borrow held; events queued meanwhile are dispatched too. A nested call (from a
/// callback) returns at once: the outermost one dispatches, so order is kept.
pub(crate) fn dispatch<S, E>(
    h: &Rc<RefCell<S>>,
    queue: fn(&mut S) -> &mut Queue<E>,
    mut each: impl FnMut(E),
) {
    {
        let mut s = h.borrow_mut();
        let q = queue(&mut s);
        if q.dispatching {
            return;
        }
        q.dispatching = true;
    }
    loop {
        let next = queue(&mut h.borrow_mut()).events.pop_front();
        let Some(ev) = next else { break };
        each(ev);
    }
    queue(&mut h.borrow_mut()).dispatching = false;
}
