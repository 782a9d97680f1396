//! `MusicRoomOptions` (the second argument of `P3Client.musicRoom`): the media to drive, how
//! to find a track's source, and whether a refused autoplay resumes on the next user gesture.

use crate::wasm::error;
use crate::wasm::music::media::Media;
use js_sys::{Function, Reflect};
use wasm_bindgen::{JsCast, JsValue};

/// The parsed options.
pub(crate) struct RoomOptions {
    /// `media` (required).
    pub(crate) media: Media,
    /// `trackUrl(trackId, track) => string`, if given.
    pub(crate) track_url: Option<Function>,
    /// `resumeOnGesture` (default true): after a refused `play()`, the next pointer or key
    /// press anywhere on the page starts playback.
    pub(crate) resume_on_gesture: bool,
    /// `peerToPeer` (default off): `true` or `PeerMeshOptions` keeps a DataChannel mesh so
    /// the room plays on in sync without the server (Tier 2); the mesh's options.
    pub(crate) peer_to_peer: Option<JsValue>,
    /// `deviceId` (with `peerToPeer`): the stable origin of this device's offline changes
    /// (PROTOCOL.md §13.12); default one kept in `localStorage`.
    pub(crate) device_id: Option<String>,
}

/// Reads `options`.
///
/// Errors: `invalid_argument` when `media` is missing or is neither an `HTMLMediaElement` nor
/// a `MediaPlayer`, or another field has the wrong type.
pub(crate) fn parse(options: &JsValue) -> Result<RoomOptions, JsValue> {
    if !options.is_object() {
        return Err(error::invalid_argument(
            "musicRoom options must be an object with at least `media`",
        ));
    }
    let get = |k: &str| {
        Reflect::get(options, &JsValue::from_str(k))
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_null())
    };
    let media =
        get("media").ok_or_else(|| error::invalid_argument("musicRoom options need `media`"))?;
    let media = Media::from_js(&media)?;
    let track_url = match get("trackUrl") {
        None => None,
        Some(f) => Some(
            f.dyn_into::<Function>()
                .map_err(|_| error::invalid_argument("`trackUrl` must be a function"))?,
        ),
    };
    let resume_on_gesture = match get("resumeOnGesture") {
        None => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| error::invalid_argument("`resumeOnGesture` must be a boolean"))?,
    };
    let peer_to_peer = match get("peerToPeer") {
        None => None,
        Some(v) if v.as_bool() == Some(false) => None,
        Some(v) if v.as_bool() == Some(true) => Some(JsValue::UNDEFINED),
        Some(v) if v.is_object() => Some(v),
        Some(_) => {
            return Err(error::invalid_argument(
                "`peerToPeer` must be a boolean or PeerMeshOptions",
            ))
        }
    };
    let device_id = match get("deviceId") {
        None => None,
        Some(v) => Some(
            v.as_string()
                .filter(|id| !id.is_empty())
                .ok_or_else(|| error::invalid_argument("`deviceId` must be a non-empty string"))?,
        ),
    };
    Ok(RoomOptions {
        media,
        track_url,
        resume_on_gesture,
        peer_to_peer,
        device_id,
    })
}
