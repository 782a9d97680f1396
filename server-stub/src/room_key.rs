//! Room keys for sealing music control between peers (issue #5 "Security"; issue 12 "Rooms,
//! keys, control"; seed 004 "Security": `signature` for tamper detection; PROTOCOL.md §13.4).
//!
//! Every session that joins a room gets, right after `joined`, the Control message
//! `room-key {room, keyId, key}`: 32 bytes from the OS CSPRNG (base64url without padding) and
//! a random u32 key id (never the id the room had just before). Peers seal with it
//! ([`p3_lanes::core::p2p::seal`]) so a message from outside the room, or changed on the way,
//! is rejected.
//!
//! **Rotation: whenever a member leaves or is removed.** Whatever takes a session out of its
//! room (`leave`, a `join` of another room, `DELETE` of the session, its expiry, a v1 socket
//! closing) makes a new key with a new key id for that room and sends it, after `peer-left`,
//! to the members still in it; the one that left is already out of the member list and never
//! receives it, so it cannot open control sealed after it left. A room that empties forgets
//! its key: the next joiner gets a new one. Peers keep opening frames under the previous key
//! for a short grace ([`p3_lanes::core::p2p::peer_sync::KEY_GRACE_MS`]), so frames in flight
//! during a rotation still open. A server restart also means new keys.
//!
//! One entry per room; the work of a rotation is one 36-byte CSPRNG read and one Control
//! message per remaining member (bounded by `--max-room-members`), done under the registry
//! lock like the `peer-left` it follows.

use p3_lanes::core::control::Control;
use p3_lanes::core::p2p::seal::RoomKey;
use std::collections::HashMap;

/// The current key of every room with members, by room name. Lives in the registry, under
/// its lock.
#[derive(Debug, Default)]
pub(crate) struct RoomKeys {
    keys: HashMap<String, RoomKey>,
}

impl RoomKeys {
    /// No keys yet.
    pub(crate) fn new() -> RoomKeys {
        RoomKeys::default()
    }

    /// Someone joined `room`: the `room-key` message to send them (the room's current key,
    /// created now if it has none). `None` only if the OS random generator fails (logged).
    pub(crate) fn join(&mut self, room: &str) -> Option<Control> {
        let key = match self.keys.get(room) {
            Some(k) => k,
            None => {
                let key = new_key(None)?;
                self.keys.entry(room.to_owned()).or_insert(key)
            }
        };
        Some(room_key_msg(room, key))
    }

    /// A member left `room` and `remaining` members are still in it. With members left: a
    /// new key (new key id) for the room, and the `room-key` message to send to exactly
    /// them. Without: the room's key is forgotten (the next joiner gets a new one), `None`.
    ///
    /// If the OS random generator fails (logged), the room's key is forgotten all the same,
    /// so the leaver's key is never handed out again: the remaining members get a new key on
    /// their next join.
    pub(crate) fn rotate(&mut self, room: &str, remaining: usize) -> Option<Control> {
        let old = self.keys.remove(room);
        if remaining == 0 {
            return None;
        }
        let key = new_key(old.map(|k| k.id))?;
        let msg = room_key_msg(room, &key);
        self.keys.insert(room.to_owned(), key);
        Some(msg)
    }

    /// How many rooms have a key.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

fn room_key_msg(room: &str, key: &RoomKey) -> Control {
    Control::RoomKey {
        room: room.to_owned(),
        key_id: key.id,
        key: key.to_base64url(),
    }
}

/// 32 key bytes and a 4-byte id from the OS CSPRNG; the id differs from `not_id` (the key
/// being replaced), so peers always tell the new key from the old one.
fn new_key(not_id: Option<u32>) -> Option<RoomKey> {
    loop {
        let mut bytes = [0u8; 36];
        if let Err(e) = getrandom::fill(&mut bytes) {
            tracing::error!(error = %e, "no randomness for a room key; room-key not sent");
            return None;
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[..32]);
        let id = u32::from_be_bytes([bytes[32], bytes[33], bytes[34], bytes[35]]);
        if Some(id) != not_id {
            return Some(RoomKey::new(id, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id_and_key(msg: &Control) -> (u32, String) {
        let Control::RoomKey { key_id, key, .. } = msg else {
            panic!("not room-key: {msg:?}");
        };
        (*key_id, key.clone())
    }

    #[test]
    fn one_key_per_room_until_a_member_leaves() {
        let mut keys = RoomKeys::new();
        let a1 = keys.join("a").unwrap();
        let a2 = keys.join("a").unwrap();
        let b = keys.join("b").unwrap();
        assert_eq!(a1, a2, "same key for every member");
        assert_ne!(
            id_and_key(&a1).1,
            id_and_key(&b).1,
            "rooms get different keys"
        );
        let (id, key) = id_and_key(&a1);
        assert!(RoomKey::from_base64url(id, &key).is_ok());

        let rotated = keys.rotate("a", 1).expect("members remain: a new key");
        let (id2, key2) = id_and_key(&rotated);
        assert_ne!(id2, id, "new key id");
        assert_ne!(key2, key, "new key");
        assert_eq!(keys.join("a").unwrap(), rotated, "joiners get the new key");
        assert_eq!(keys.join("b").unwrap(), b, "other rooms keep theirs");

        assert_eq!(keys.rotate("a", 0), None, "an emptied room forgets its key");
        assert_eq!(keys.len(), 1);
        let fresh = keys.join("a").unwrap();
        assert_ne!(
            id_and_key(&fresh).1,
            key2,
            "and the next joiner gets a new one"
        );
    }
}
