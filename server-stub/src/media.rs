//! The media folder music rooms play from: `GET /api/media` lists the audio files of
//! `--media-dir` (served at `/media/`): `{"tracks": [{id, title, url, type, bytes,
//! duration?}]}`, sorted by id; `duration` (s) is known for PCM WAV files (read from the
//! header), absent otherwise.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

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
    }
}
