//! The DJ state file (issue 12 "the role survives a server restart"; PROTOCOL.md §13.15):
//! each music room's controller identity and epoch, so that after a crash (even `SIGKILL`)
//! and restart the identity's first session to rejoin is the DJ again without claiming, and
//! the room's epoch never goes backwards.
//!
//! File: `<--state-dir>/music-dj.json`, `{"version": 1, "rooms": {"<room>": {"identity":
//! "<kind>:<id>", "epoch": <u64>, "updatedMs": <ms since the epoch>}}}`. Written whole on
//! every change of a room's DJ identity or epoch (handovers, claims, rejoins: not per
//! playback change) to `music-dj.json.tmp`, flushed (`fsync`) and renamed over the old file,
//! so a crash leaves either the old or the new file, never half of one. At most
//! [`MAX_ROOMS`] rooms (the least recently updated go first) of at most 300 bytes of name
//! and identity each: the file stays under [`MAX_FILE_BYTES`]. A file that is missing,
//! larger than that, or unreadable starts the server with no DJs (logged at `warn`), never
//! fails it. Without `--state-dir` nothing is written and nothing survives a restart.
//!
//! Only verified identities are stored (an unverified session's id means nothing after a
//! restart). Writes run under the store's own lock, after the room's (lock order: room,
//! then store).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Most rooms the file keeps.
pub const MAX_ROOMS: usize = 1024;
/// Largest file read at start-up, bytes (1 MiB; [`MAX_ROOMS`] entries need about 400 KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The file's name inside the state directory.
pub const FILE_NAME: &str = "music-dj.json";
/// Longest room name or identity key stored, bytes (longer ones are not persisted).
const MAX_FIELD_BYTES: usize = 300;

/// One room's DJ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DjEntry {
    /// The identity key holding the role, `"<kind>:<id>"`.
    pub identity: String,
    /// The room's epoch when last written.
    pub epoch: u64,
    /// When it was written, ms since the Unix epoch (eviction order).
    pub updated_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FileBody {
    version: u32,
    rooms: BTreeMap<String, DjEntry>,
}

/// The rooms' DJs, mirrored to the state file when a directory is configured.
#[derive(Debug, Default)]
pub struct DjStore {
    path: Option<PathBuf>,
    rooms: Mutex<BTreeMap<String, DjEntry>>,
}

impl DjStore {
    /// A store writing to `<dir>/music-dj.json` (created if missing), loaded from it; `None`:
    /// memory only.
    pub fn open(dir: Option<&Path>) -> DjStore {
        let Some(dir) = dir else {
            return DjStore::default();
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create --state-dir; DJs will not survive a restart");
        }
        let path = dir.join(FILE_NAME);
        let rooms = load(&path).unwrap_or_else(|why| {
            tracing::warn!(path = %path.display(), %why, "DJ state file not loaded; starting with no DJs");
            BTreeMap::new()
        });
        tracing::info!(path = %path.display(), rooms = rooms.len(), "DJ state loaded");
        DjStore {
            path: Some(path),
            rooms: Mutex::new(rooms),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DjEntry>> {
        crate::lock::lock_or_abort(&self.rooms, "DJ store")
    }

    /// Room `room`'s stored DJ, if any.
    pub fn get(&self, room: &str) -> Option<DjEntry> {
        self.map().get(room).cloned()
    }

    /// Records room `room`'s DJ (`None`: it has none) and rewrites the file if that changed.
    pub fn set(&self, room: &str, dj: Option<(&str, u64)>, now_ms: u64) {
        let mut map = self.map();
        let changed = match dj {
            Some((identity, epoch)) => {
                if room.len() > MAX_FIELD_BYTES || identity.len() > MAX_FIELD_BYTES {
                    return;
                }
                let same = map
                    .get(room)
                    .is_some_and(|e| e.identity == identity && e.epoch == epoch);
                if !same {
                    map.insert(
                        room.to_owned(),
                        DjEntry {
                            identity: identity.to_owned(),
                            epoch,
                            updated_ms: now_ms,
                        },
                    );
                    while map.len() > MAX_ROOMS {
                        let oldest = map
                            .iter()
                            .min_by_key(|(_, e)| e.updated_ms)
                            .map(|(k, _)| k.clone());
                        if let Some(k) = oldest {
                            map.remove(&k);
                        }
                    }
                }
                !same
            }
            None => map.remove(room).is_some(),
        };
        if let (true, Some(path)) = (changed, &self.path) {
            if let Err(e) = write_atomic(path, &map) {
                tracing::warn!(path = %path.display(), error = %e, "DJ state file not written");
            }
        }
    }
}

fn load(path: &Path) -> Result<BTreeMap<String, DjEntry>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.to_string()),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("{} bytes, above {MAX_FILE_BYTES}", meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let body: FileBody = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if body.version != 1 {
        return Err(format!("unknown version {}", body.version));
    }
    let mut rooms = body.rooms;
    while rooms.len() > MAX_ROOMS {
        let oldest = rooms
            .iter()
            .min_by_key(|(_, e)| e.updated_ms)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            rooms.remove(&k);
        }
    }
    Ok(rooms)
}

/// Writes `rooms` to `path` through `path.tmp`, fsync and rename.
fn write_atomic(path: &Path, rooms: &BTreeMap<String, DjEntry>) -> std::io::Result<()> {
    let body = FileBody {
        version: 1,
        rooms: rooms.clone(),
    };
    let bytes = serde_json::to_vec(&body).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reopen_bounded_and_atomic() {
        let dir = std::env::temp_dir().join(format!("p3-dj-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = DjStore::open(Some(&dir));
        s.set("r1", Some(("device:A", 3)), 1);
        s.set("r2", Some(("siwe:0xB", 9)), 2);
        s.set("r2", None, 3);
        let again = DjStore::open(Some(&dir));
        assert_eq!(
            again.get("r1").map(|e| (e.identity, e.epoch)),
            Some(("device:A".into(), 3))
        );
        assert_eq!(again.get("r2"), None);
        assert!(!dir.join("music-dj.json.tmp").exists());
        for i in 0..(MAX_ROOMS + 5) {
            again.set(&format!("room{i}"), Some(("device:A", 1)), 10 + i as u64);
        }
        assert_eq!(again.map().len(), MAX_ROOMS);
        assert!(again.get("r1").is_none(), "the oldest went first");
        std::fs::write(dir.join(FILE_NAME), b"{not json").unwrap();
        assert_eq!(
            DjStore::open(Some(&dir)).map().len(),
            0,
            "garbage starts empty"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
