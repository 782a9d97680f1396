//! Music rooms, server tier (issue #4; seed 004 "Tier 1", "Challenge 3: Split Brain": the server
//! is the authority while it is reachable), and the media folder they play from.
//!
//! # Music rooms
//! A music room is a lane room in which someone sent a `music-control` message on the Sync
//! lane. From then on the server runs one [`RoomAuthority`] (the sans-IO authority of
//! [`p3_lanes::core::sync::state`]) for the room:
//! - a Sync-lane Data frame without `to` whose payload is `{type: "music-control", ...}` is
//!   **not relayed**: it goes to the authority, with the sender's session id as `from`.
//!   Applied, the room gets (server-originated Sync-lane Data frames, no `from`) first the new
//!   `sync-state`, then the resolved `music-control` (`applyAt`, `data.position`,
//!   `data.from`, ...), every member including the sender. Refused, the sender alone gets a
//!   Control `error` with the authority's code (`not_controller`, `epoch_mismatch`,
//!   `invalid_argument`, `bad_payload`), lane 7 and the frame's seq. A change from an epoch
//!   before the room's is refused with `epoch_mismatch` too (the sender missed a handover); a
//!   duplicate (same epoch, sequence not newer) is ignored silently.
//! - `{type: "music-changes", epoch?, changes}`: changes made while the server was away,
//!   reconciled into the room (module `music_changes`, PROTOCOL.md §13.9).
//! - `{type: "sync-state"}` from a client is refused (`invalid_argument`): only the authority
//!   states the room.
//! - Every joiner gets the room's `sync-state` at once (after `joined`), if it was granted the
//!   Sync lane. When the controller leaves (or its socket drops), the role is free (epoch + 1)
//!   and the room gets the new `sync-state`.
//! - `ping {rttMs}` reports feed the authority's lead time ([`RoomAuthority::lead_ms`]).
//! - A room's authority outlives its last member by the session TTL, so a lone DJ whose socket
//!   drops finds the room as it left it (without the controller role); then it is forgotten.
//! - The same `sync-state` is queued like a Control message: when a member's outbound queue is
//!   full its socket is closed with 1013 (it reconnects and gets a fresh snapshot) rather than
//!   silently missing a state.
//!
//! Other Sync-lane messages (and anything with `to`) are relayed as before.
//!
//! # Media folder
//! `GET /api/media` lists the audio files of `--media-dir` (served at `/media/`):
//! `{"tracks": [{id, title, url, type, bytes, duration?}]}`, sorted by id; `duration` (s) is
//! known for PCM WAV files (read from the header), absent otherwise.

use crate::state::{AppState, Registry};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use p3_lanes::core::control::Control;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use p3_lanes::core::p2p::changes::{ChangeLog, MUSIC_CHANGES_TYPE};
use p3_lanes::core::sync::state::{
    AuthorityConfig, Decision, RoomAuthority, SyncError, SyncMessage, MUSIC_CONTROL_TYPE,
    SYNC_STATE_TYPE,
};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The shared clock of music rooms: the server's wall clock, ms since the Unix epoch, with
/// sub-ms precision (clients learn it from `pong.serverTime`, the same clock floored).
pub fn shared_clock_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Whether a Sync-lane payload is for the room's authority (`music-control`, `sync-state` or
/// `music-changes`) rather than for relaying.
pub(crate) fn is_music_message(value: &Value) -> bool {
    matches!(
        value.get("type").and_then(Value::as_str),
        Some(MUSIC_CONTROL_TYPE | SYNC_STATE_TYPE | MUSIC_CHANGES_TYPE)
    )
}

/// One room's authority, its log of changes pushed back after the server was away
/// ([`crate::music_changes`]) and, once its last member left, since when it has been empty.
#[derive(Debug)]
struct MusicRoom {
    authority: RoomAuthority,
    changes: ChangeLog,
    emptied_at: Option<Instant>,
}

/// The authorities of every music room, by room name. Lives in the registry, under its lock.
#[derive(Debug)]
pub(crate) struct MusicRooms {
    config: AuthorityConfig,
    rooms: HashMap<String, MusicRoom>,
    /// How long an empty room's state is kept.
    keep_empty: Duration,
}

impl MusicRooms {
    /// No music rooms yet; empty rooms are forgotten after `keep_empty`.
    pub(crate) fn new(keep_empty: Duration) -> MusicRooms {
        MusicRooms {
            config: AuthorityConfig::default(),
            rooms: HashMap::new(),
            keep_empty,
        }
    }

    /// `sid` joined `room`: the `sync-state` to send it, if the room is a music room.
    pub(crate) fn join(&mut self, room: &str, sid: SessionId) -> Option<Value> {
        let r = self.rooms.get_mut(room)?;
        r.emptied_at = None;
        Some(r.authority.join(&sid.to_string()).to_value())
    }

    /// `sid` left `room` (now with `remaining` members): the `sync-state` to broadcast if it
    /// was the controller.
    pub(crate) fn leave(&mut self, room: &str, sid: SessionId, remaining: usize) -> Option<Value> {
        let r = self.rooms.get_mut(room)?;
        if remaining == 0 {
            r.emptied_at = Some(Instant::now());
        }
        let state = r.authority.leave(&sid.to_string())?;
        Some(SyncMessage::SyncState { data: state }.to_value())
    }

    /// One RTT report of `sid`, a member of `room`, ms.
    pub(crate) fn rtt(&mut self, room: &str, sid: SessionId, rtt_ms: f64) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.authority.update_member_rtt(&sid.to_string(), rtt_ms);
        }
    }

    /// Forgets rooms empty for longer than `keep_empty`; returns how many.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        let keep = self.keep_empty;
        let before = self.rooms.len();
        self.rooms.retain(|_, r| {
            r.emptied_at
                .map_or(true, |t| now.saturating_duration_since(t) < keep)
        });
        before - self.rooms.len()
    }

    /// The authority of `room`, created (with `members`) if the room is not a music room yet.
    fn authority(&mut self, room: &str, members: &[SessionId]) -> &mut RoomAuthority {
        let config = &self.config;
        &mut self
            .rooms
            .entry(room.to_owned())
            .or_insert_with(|| {
                let mut authority = RoomAuthority::new(config.clone(), shared_clock_ms());
                for m in members {
                    authority.join(&m.to_string());
                }
                MusicRoom {
                    authority,
                    changes: ChangeLog::compacted(0),
                    emptied_at: None,
                }
            })
            .authority
    }

    /// The authority and change log of `room`, created (with `members`) if it is not a music
    /// room yet.
    pub(crate) fn authority_and_log(
        &mut self,
        room: &str,
        members: &[SessionId],
    ) -> (&mut RoomAuthority, &mut ChangeLog) {
        self.authority(room, members);
        let r = self
            .rooms
            .get_mut(room)
            .expect("authority() created the room");
        (&mut r.authority, &mut r.changes)
    }
}

impl Registry {
    /// A `music-control` (or a client's `sync-state`) from `sid`'s socket `conn_id`, Sync-lane
    /// frame `seq`; see the module docs. The lane grant was checked by the caller.
    pub(crate) fn music_message(&mut self, sid: SessionId, conn_id: u64, seq: u64, value: Value) {
        let lane = Some(Lane::Sync.id());
        let refuse = |reg: &mut Registry, code: ErrorCode, why: String| {
            reg.reply(
                sid,
                conn_id,
                &Control::Error {
                    code,
                    error: why,
                    lane,
                    seq: Some(seq),
                },
            );
        };
        let Some(room) = self.room_of(sid) else {
            return refuse(
                self,
                ErrorCode::NotInRoom,
                "join a music room before sending music-control".into(),
            );
        };
        if value.get("type").and_then(Value::as_str) == Some(MUSIC_CHANGES_TYPE) {
            return self.music_changes(sid, conn_id, seq, &room, value);
        }
        if value.get("type").and_then(Value::as_str) == Some(SYNC_STATE_TYPE) {
            return refuse(
                self,
                ErrorCode::InvalidArgument,
                "sync-state is sent by the room's authority only; send music-control".into(),
            );
        }
        let change = match SyncMessage::from_value(value) {
            Ok(SyncMessage::MusicControl(c)) => c,
            Ok(_) => {
                return refuse(
                    self,
                    ErrorCode::InvalidArgument,
                    "only music-control is accepted".into(),
                )
            }
            Err(e) => return refuse(self, e.code(), e.to_string()),
        };
        let members = self.room_members(&room);
        let authority = self.music.authority(&room, &members);
        let decision = authority.handle_control(&sid.to_string(), &change, shared_clock_ms());
        let room_epoch = authority.state().epoch;
        match decision {
            Ok(Decision::Applied { control, state }) => {
                tracing::debug!(room, session = %sid, action = %control.action, epoch = state.epoch,
                    sequence = state.sequence, apply_at = control.apply_at, "music change applied");
                let state = SyncMessage::SyncState { data: state }.to_value();
                let control = SyncMessage::MusicControl(control).to_value();
                for m in &members {
                    self.send_server_data(*m, Lane::Sync, &state);
                    self.send_server_data(*m, Lane::Sync, &control);
                }
            }
            Ok(Decision::Ignored) if change.epoch < room_epoch => refuse(
                self,
                ErrorCode::EpochMismatch,
                format!(
                    "change names epoch {}, the room is at epoch {room_epoch}; resync from the room's sync-state",
                    change.epoch
                ),
            ),
            Ok(Decision::Ignored) => {
                tracing::debug!(room, session = %sid, epoch = change.epoch, sequence = change.sequence,
                    "duplicate music change ignored");
            }
            Err(e) => {
                let code = e.code();
                let why = match &e {
                    SyncError::NotController { .. } | SyncError::EpochMismatch { .. } => {
                        format!("{e}; resync from the room's sync-state")
                    }
                    _ => e.to_string(),
                };
                refuse(self, code, why);
            }
        }
    }

    /// `ping {rttMs}` from `sid`: feeds its room's authority, if it is in a music room.
    pub(crate) fn music_rtt(&mut self, sid: SessionId, rtt_ms: f64) {
        if let Some(room) = self.room_of(sid) {
            self.music.rtt(&room, sid, rtt_ms);
        }
    }
}

/// One entry of `GET /api/media`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MediaTrack {
    /// The file name, which is also the `trackId` music rooms use for it.
    pub id: String,
    /// A title made from the file name.
    pub title: String,
    /// Where it is served, e.g. `/media/p3-demo-chords.wav` (percent-encoded).
    pub url: String,
    /// MIME type from the extension.
    #[serde(rename = "type")]
    pub mime: &'static str,
    /// File size, bytes.
    pub bytes: u64,
    /// Duration, s, when known (PCM WAV).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<f64>,
}

/// `GET /api/media` body.
#[derive(Clone, Debug, Serialize)]
pub struct MediaList {
    /// The tracks, sorted by id.
    pub tracks: Vec<MediaTrack>,
}

/// Audio file extensions listed, with their MIME types.
const AUDIO_TYPES: [(&str, &str); 10] = [
    ("wav", "audio/wav"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("aac", "audio/aac"),
    ("flac", "audio/flac"),
    ("webm", "audio/webm"),
    ("weba", "audio/webm"),
];

/// `GET /api/media`: the audio files of `--media-dir` (an empty list if it does not exist).
/// `Cache-Control: no-cache`, so a file dropped into the folder shows up at once.
pub async fn media_list(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let dir = state.config().media_dir.clone();
    let tracks = tokio::task::spawn_blocking(move || list_media(&dir))
        .await
        .unwrap_or_default();
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Json(MediaList { tracks }),
    )
}

/// The audio files directly in `dir`, sorted by name; unreadable entries are skipped.
pub fn list_media(dir: &Path) -> Vec<MediaTrack> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut tracks: Vec<MediaTrack> = entries
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok().filter(|m| m.is_file())?;
            let name = entry.file_name().into_string().ok()?;
            if name.starts_with('.') {
                return None;
            }
            let ext = Path::new(&name).extension()?.to_str()?.to_ascii_lowercase();
            let (_, mime) = AUDIO_TYPES.iter().find(|(e, _)| *e == ext)?;
            let duration = (ext == "wav")
                .then(|| wav_duration_s(&entry.path()))
                .flatten();
            Some(MediaTrack {
                title: title_of(&name),
                url: format!("/media/{}", percent_encode(&name)),
                mime,
                bytes: meta.len(),
                duration,
                id: name,
            })
        })
        .collect();
    tracks.sort_by(|a, b| a.id.cmp(&b.id));
    tracks
}

/// `"p3-demo_chords.wav"` → `"p3 demo chords"`.
fn title_of(name: &str) -> String {
    let stem = Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(name);
    stem.replace(['-', '_'], " ")
}

/// Percent-encodes everything but unreserved URL characters (RFC 3986 §2.3).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Duration of a RIFF/WAVE file from its `fmt ` byte rate and `data` size, s; `None` if the
/// header is not one (only the first 64 KiB are read).
pub fn wav_duration_s(path: &Path) -> Option<f64> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    wav_duration_from_header(&head)
}

fn wav_duration_from_header(b: &[u8]) -> Option<f64> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return None;
    }
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    let mut pos = 12;
    let mut byte_rate = None;
    while pos + 8 <= b.len() {
        let id = &b[pos..pos + 4];
        let size = u32_at(pos + 4)?;
        match id {
            b"fmt " => byte_rate = u32_at(pos + 16).filter(|r| *r > 0),
            b"data" => return Some(f64::from(size) / f64::from(byte_rate?)),
            _ => {}
        }
        // Chunks are padded to an even size.
        pos += 8 + size as usize + (size as usize & 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(seconds: u32, rate: u32) -> Vec<u8> {
        let data = seconds * rate * 2;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + 26 + data).to_le_bytes());
        b.extend_from_slice(b"WAVE");
        // An odd-sized chunk before fmt, to check the padding rule.
        b.extend_from_slice(b"LIST");
        b.extend_from_slice(&17u32.to_le_bytes());
        b.extend_from_slice(&[0; 18]);
        b.extend_from_slice(b"fmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes()); // PCM
        b.extend_from_slice(&1u16.to_le_bytes()); // mono
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data.to_le_bytes());
        b
    }

    #[test]
    fn wav_durations_come_from_the_header() {
        assert_eq!(wav_duration_from_header(&wav(3, 8000)), Some(3.0));
        assert_eq!(wav_duration_from_header(b"RIFF\0\0\0\0WAVEdata"), None);
        assert_eq!(wav_duration_from_header(b"OggS"), None);
    }

    #[test]
    fn names_become_titles_and_urls() {
        assert_eq!(title_of("p3-demo_chords.wav"), "p3 demo chords");
        assert_eq!(percent_encode("my song #1.ogg"), "my%20song%20%231.ogg");
        assert!(is_music_message(
            &serde_json::json!({"type": "music-control"})
        ));
        assert!(!is_music_message(&serde_json::json!({"position": 1})));
    }
}
