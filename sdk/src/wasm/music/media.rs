//! The media side of a music room: an `HTMLMediaElement` (`<audio>`, `<video>`) or an app's
//! own player behind the `MediaPlayer` callbacks. [`Media::exec`] maps one
//! [`MediaCommand`] of the follower onto it and [`Media::sample`] reads it into a
//! [`MediaSample`].
//!
//! | command | `HTMLMediaElement` | `MediaPlayer` |
//! | --- | --- | --- |
//! | `Load` | `src = url`, `preload = 'auto'`, `preservesPitch = true` | `load(trackId, track)` |
//! | `Play` | `play()` (its Promise) | `play()` (may return a Promise) |
//! | `Pause` | `pause()` | `pause()` |
//! | `Seek` | `currentTime = s` | `seek(s)` |
//! | `SetRate` | `playbackRate = r` (pitch kept) | `setRate(r)` |
//!
//! A sample reads `currentTime`, `paused`, `seeking`, `playbackRate` and `readyState >=
//! HAVE_FUTURE_DATA` (or the player's `sample()`), stamped with the caller's local time.

use crate::core::sync::follower::{MediaCommand, MediaSample};
use crate::wasm::error;
use js_sys::{Function, Object, Promise, Reflect};
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::HtmlMediaElement;

#[wasm_bindgen(module = "/js/media_edge.js")]
extern "C" {
    #[wasm_bindgen(js_name = readEdge)]
    fn read_edge_js(el: &HtmlMediaElement, max_ms: f64) -> Promise;
}

/// An edge reading of `currentTime` (`js/media_edge.js`; PROTOCOL.md §12.5.2): reads it once
/// per task for at most `max_ms` until it changes. Resolves to `(position s, local ms of the
/// change, span ms)`, or `None` when it did not change (paused, seeking, stalled).
pub(crate) async fn read_edge(el: &HtmlMediaElement, max_ms: f64) -> Option<(f64, f64, f64)> {
    let v = JsFuture::from(read_edge_js(el, max_ms)).await.ok()?;
    let num = |k: &str| {
        Reflect::get(&v, &k.into())
            .ok()
            .and_then(|x| x.as_f64())
            .filter(|x| x.is_finite())
    };
    Some((num("position")?, num("atMs")?, num("spanMs")?))
}

/// `HTMLMediaElement.HAVE_FUTURE_DATA`.
const HAVE_FUTURE_DATA: u16 = 3;

/// Methods a `MediaPlayer` object must have.
const PLAYER_METHODS: [&str; 6] = ["load", "play", "pause", "seek", "setRate", "sample"];

/// What the follower drives.
#[derive(Clone)]
pub(crate) enum Media {
    /// An `<audio>` or `<video>` element.
    Element(HtmlMediaElement),
    /// An app's player (`MediaPlayer`).
    Player(Object),
}

impl Media {
    /// The `media` option: an `HTMLMediaElement`, or an object with the `MediaPlayer` methods.
    ///
    /// Errors: `invalid_argument`.
    pub(crate) fn from_js(v: &JsValue) -> Result<Media, JsValue> {
        if let Some(el) = v.dyn_ref::<HtmlMediaElement>() {
            let _ = Reflect::set(el, &"preservesPitch".into(), &JsValue::TRUE);
            el.set_preload("auto");
            return Ok(Media::Element(el.clone()));
        }
        if v.is_object() {
            let missing: Vec<&str> = PLAYER_METHODS
                .iter()
                .copied()
                .filter(|m| !method(v, m).is_some_and(|f| f.is_function()))
                .collect();
            if missing.is_empty() {
                return Ok(Media::Player(v.clone().unchecked_into()));
            }
            return Err(error::invalid_argument(&format!(
                "`media` is neither an HTMLMediaElement nor a MediaPlayer: missing {}",
                missing.join(", ")
            )));
        }
        Err(error::invalid_argument(
            "`media` must be an HTMLMediaElement (<audio>, <video>) or a MediaPlayer object",
        ))
    }

    /// The element, if it is one (for its events).
    pub(crate) fn element(&self) -> Option<&HtmlMediaElement> {
        match self {
            Media::Element(el) => Some(el),
            Media::Player(_) => None,
        }
    }

    /// Executes `cmd`. `url` is the resolved source for `Load`. Returns the Promise of a
    /// `play()`, whose rejection tells whether the browser refused it. Errors: what the
    /// player threw.
    pub(crate) fn exec(&self, cmd: &MediaCommand, url: &str) -> Result<Option<Promise>, JsValue> {
        match (self, cmd) {
            (Media::Element(el), MediaCommand::Load { .. }) => {
                el.set_src(url);
                el.set_preload("auto");
                let _ = Reflect::set(el, &"preservesPitch".into(), &JsValue::TRUE);
            }
            (Media::Element(el), MediaCommand::Play) => return el.play().map(Some),
            (Media::Element(el), MediaCommand::Pause) => el.pause()?,
            (Media::Element(el), MediaCommand::Seek { to_s }) => el.set_current_time(*to_s),
            (Media::Element(el), MediaCommand::SetRate { rate }) => el.set_playback_rate(*rate),
            (Media::Player(p), MediaCommand::Load { track_id, track }) => {
                let track = track
                    .as_ref()
                    .map_or(JsValue::NULL, crate::wasm::convert::value_to_js);
                call(p, "load", &[JsValue::from_str(track_id), track])?;
            }
            (Media::Player(p), MediaCommand::Play) => {
                let r = call(p, "play", &[])?;
                return Ok(r.dyn_into::<Promise>().ok());
            }
            (Media::Player(p), MediaCommand::Pause) => {
                call(p, "pause", &[])?;
            }
            (Media::Player(p), MediaCommand::Seek { to_s }) => {
                call(p, "seek", &[JsValue::from_f64(*to_s)])?;
            }
            (Media::Player(p), MediaCommand::SetRate { rate }) => {
                call(p, "setRate", &[JsValue::from_f64(*rate)])?;
            }
        }
        Ok(None)
    }

    /// Reads the media now; `local_ms` is the reading's local time. A player whose `sample()`
    /// throws or answers nonsense reads as not ready (the follower waits).
    pub(crate) fn sample(&self, local_ms: f64) -> MediaSample {
        match self {
            Media::Element(el) => MediaSample {
                local_ms,
                position_s: el.current_time(),
                paused: el.paused(),
                seeking: el.seeking(),
                playback_rate: el.playback_rate(),
                ready: el.ready_state() >= HAVE_FUTURE_DATA,
                edge: None,
            },
            Media::Player(p) => {
                let s = call(p, "sample", &[]).unwrap_or(JsValue::UNDEFINED);
                let num = |k: &str| {
                    Reflect::get(&s, &k.into())
                        .ok()
                        .and_then(|v| v.as_f64())
                        .filter(|x| x.is_finite())
                };
                let flag = |k: &str| Reflect::get(&s, &k.into()).ok().and_then(|v| v.as_bool());
                let position = num("position");
                MediaSample {
                    local_ms,
                    position_s: position.unwrap_or(0.0),
                    paused: flag("paused").unwrap_or(true),
                    seeking: flag("seeking").unwrap_or(false),
                    playback_rate: num("rate").unwrap_or(1.0),
                    ready: position.is_some() && flag("ready").unwrap_or(false),
                    edge: None,
                }
            }
        }
    }
}

/// Whether a rejection of `play()` is the autoplay policy (`NotAllowedError`) rather than an
/// interruption (`AbortError`: a pause or a new source came first) or a media error.
pub(crate) fn is_autoplay_refusal(err: &JsValue) -> bool {
    Reflect::get(err, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .is_some_and(|n| n == "NotAllowedError")
}

/// Whether a rejection of `play()` only means it was interrupted.
pub(crate) fn is_interruption(err: &JsValue) -> bool {
    Reflect::get(err, &"name".into())
        .ok()
        .and_then(|n| n.as_string())
        .is_some_and(|n| n == "AbortError")
}

/// The default source of a track: its `url` if it has one, else `/media/<trackId>`; a path
/// starting with `/` is taken relative to the server's base URL (as `GET /api/media` gives
/// them).
pub(crate) fn default_track_url(base: &str, track_id: &str, track: Option<&Value>) -> String {
    let url = track
        .and_then(|t| t.get("url"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("/media/{}", js_sys::encode_uri_component(track_id)));
    if url.starts_with('/') && !url.starts_with("//") {
        format!("{base}{url}")
    } else {
        url
    }
}

fn method(obj: &JsValue, name: &str) -> Option<JsValue> {
    Reflect::get(obj, &JsValue::from_str(name)).ok()
}

fn call(obj: &Object, name: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let f: Function = method(obj, name)
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| error::invalid_argument(&format!("MediaPlayer.{name} is not a function")))?;
    match args {
        [] => f.call0(obj),
        [a] => f.call1(obj, a),
        [a, b] => f.call2(obj, a, b),
        _ => f.apply(obj, &args.iter().collect()),
    }
}
