//! Room keys for sealing music control between peers (issue #5 "Security"; seed 004
//! "Security": `signature` for tamper detection; PROTOCOL.md §13.4).
//!
//! Every session that joins a room gets, right after `joined`, the Control message
//! `room-key {room, keyId, key}`: 32 bytes from the OS CSPRNG (base64url without padding) and
//! a random u32 key id, both generated on the room's first join. Peers seal with it
//! ([`p3_lanes::core::p2p::seal`]) so a message from outside the room, or changed on the way,
//! is rejected.
//!
//! **Rotation (decision): never while the room lives.** Room membership is open (any session
//! may join any room by name), so rotating when a member leaves would not keep the leaver out,
//! and would make peers that are between two keys reject each other exactly when the mesh is
//! needed (the server going away). A room's key is kept for a session TTL after the room
//! empties (a device whose socket blipped gets the same key back, as a music room keeps its
//! state, [`crate::music`]); after that the next join creates a new key with a new random id.
//! A server restart also means new keys: peers then see `ForeignKey` for the old id.

use p3_lanes::core::control::Control;
use p3_lanes::core::p2p::seal::RoomKey;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One room's key and, once the room emptied, since when.
#[derive(Debug)]
struct Entry {
    key: RoomKey,
    emptied_at: Option<Instant>,
}

/// The keys of every room, by room name. Lives in the registry, under its lock.
#[derive(Debug)]
pub(crate) struct RoomKeys {
    keys: HashMap<String, Entry>,
    /// How long an empty room's key is kept.
    keep_empty: Duration,
}

impl RoomKeys {
    /// No keys yet; keys of empty rooms are forgotten after `keep_empty`.
    pub(crate) fn new(keep_empty: Duration) -> RoomKeys {
        RoomKeys {
            keys: HashMap::new(),
            keep_empty,
        }
    }

    /// Someone joined `room`: the `room-key` message to send them (the room's key, created
    /// now if it has none). `None` only if the OS random generator fails (logged).
    pub(crate) fn join(&mut self, room: &str) -> Option<Control> {
        let entry = match self.keys.get_mut(room) {
            Some(e) => e,
            None => {
                let key = new_key()?;
                self.keys.entry(room.to_owned()).or_insert(Entry {
                    key,
                    emptied_at: None,
                })
            }
        };
        entry.emptied_at = None;
        Some(Control::RoomKey {
            room: room.to_owned(),
            key_id: entry.key.id,
            key: entry.key.to_base64url(),
        })
    }

    /// `room` has no member left: its key is kept for `keep_empty`.
    pub(crate) fn emptied(&mut self, room: &str) {
        if let Some(e) = self.keys.get_mut(room) {
            e.emptied_at = Some(Instant::now());
        }
    }

    /// Forgets keys of rooms empty for longer than `keep_empty`; returns how many.
    pub(crate) fn sweep(&mut self, now: Instant) -> usize {
        let keep = self.keep_empty;
        let before = self.keys.len();
        self.keys.retain(|_, e| {
            e.emptied_at
                .map_or(true, |t| now.saturating_duration_since(t) < keep)
        });
        before - self.keys.len()
    }
}

/// 32 key bytes and a 4-byte id from the OS CSPRNG.
fn new_key() -> Option<RoomKey> {
    let mut bytes = [0u8; 36];
    if let Err(e) = getrandom::fill(&mut bytes) {
        tracing::error!(error = %e, "no randomness for a room key; room-key not sent");
        return None;
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[..32]);
    let id = u32::from_be_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]);
    Some(RoomKey::new(id, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_per_room_kept_while_it_lives() {
        let mut keys = RoomKeys::new(Duration::from_secs(60));
        let a1 = keys.join("a").unwrap();
        let a2 = keys.join("a").unwrap();
        let b = keys.join("b").unwrap();
        assert_eq!(a1, a2, "same key for every member");
        let (Control::RoomKey { key: ka, .. }, Control::RoomKey { key: kb, .. }) = (&a1, &b) else {
            panic!("not room-key: {a1:?} {b:?}");
        };
        assert_ne!(ka, kb, "rooms get different keys");
        let Control::RoomKey { key_id, key, .. } = &a1 else {
            unreachable!()
        };
        assert!(RoomKey::from_base64url(*key_id, key).is_ok());
        keys.emptied("a");
        assert_eq!(keys.sweep(Instant::now()), 0, "kept for keep_empty");
        assert_eq!(
            keys.join("a").unwrap(),
            a1,
            "rejoining an emptied room keeps the key"
        );
        keys.emptied("a");
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(keys.sweep(later), 1);
        assert_ne!(
            keys.join("a").unwrap(),
            a1,
            "a forgotten room gets a new key"
        );
    }
}
