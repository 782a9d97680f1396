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
//!
//! **Several nodes (`--redis-url`, PROTOCOL.md §17 "Room keys"): one key per room for the
//! whole cluster.** The key lives in the room's meta hash in Redis (`k` = `"<keyId>:<key>"`,
//! `kn` = the number of the room stream entry that set it) and only the room's [`PUBLISH`]
//! script changes it, atomically with membership: the first `joined` of a room with no key
//! stores the joining node's candidate (two nodes racing: the script runs one at a time, the
//! second finds the first's key), a `left` that leaves members rotates to the leaving node's
//! candidate and writes it in the `left` entry, a `left` that empties the room forgets it.
//! Nodes never make a room's key themselves then: a joiner gets the key the script answered,
//! and every node hands a rotation to its members when it reads the `left` entry (its own
//! too), in stream order. A key is kept only if it is newer (its entry's epoch and number,
//! [`Stamp`]) than the one held, so a late answer never brings back an older key. Candidates
//! are made by the publisher, outside every lock ([`candidates`]).
//!
//! [`PUBLISH`]: crate::cluster::PUBLISH

use p3_lanes::core::control::Control;
use p3_lanes::core::p2p::seal::RoomKey;
use std::collections::HashMap;

/// Where in a room's stream a shared key was set: the stream's epoch and the entry's number
/// (cluster only). Of two keys of a room, the one with the later stamp is current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The room stream's epoch (hex).
    pub(crate) epoch: String,
    /// The number of the entry that set the key.
    pub(crate) n: u64,
}

/// The current key of every room with members, by room name. Lives in the registry, under
/// its lock.
#[derive(Debug, Default)]
pub(crate) struct RoomKeys {
    keys: HashMap<String, (RoomKey, Option<Stamp>)>,
    /// Cluster: keys come from Redis ([`RoomKeys::adopt`]), never made here.
    shared: bool,
}

impl RoomKeys {
    /// No keys yet; `shared` with `--redis-url` (module docs).
    pub(crate) fn new(shared: bool) -> RoomKeys {
        RoomKeys {
            keys: HashMap::new(),
            shared,
        }
    }

    /// Someone joined `room`: the `room-key` message to send them (the room's current key,
    /// created now if it has none). `None` if the OS random generator fails (logged), or,
    /// shared, if the cluster gave this room no key.
    pub(crate) fn join(&mut self, room: &str) -> Option<Control> {
        let key = match self.keys.get(room) {
            Some((k, _)) => k,
            None if self.shared => return None,
            None => {
                let key = new_key(None)?;
                &self.keys.entry(room.to_owned()).or_insert((key, None)).0
            }
        };
        Some(room_key_msg(room, key))
    }

    /// A key of `room` from the cluster (`"<keyId>:<key>"`, set at `stamp`): kept if the room
    /// has none here or an older one, and then its `room-key` message is returned (to send to
    /// the room's members here). `None`: older or the same, or malformed (logged).
    pub(crate) fn adopt(&mut self, room: &str, stamp: Stamp, encoded: &str) -> Option<Control> {
        if let Some((_, Some(held))) = self.keys.get(room) {
            if held.epoch == stamp.epoch && held.n >= stamp.n {
                return None;
            }
        }
        let Some(key) = decode(encoded) else {
            tracing::warn!(room, "malformed room key in the cluster's store ignored");
            return None;
        };
        let msg = room_key_msg(room, &key);
        self.keys.insert(room.to_owned(), (key, Some(stamp)));
        Some(msg)
    }

    /// Forgets `room`'s key (its last member here is gone).
    pub(crate) fn forget(&mut self, room: &str) {
        self.keys.remove(room);
    }

    /// A member left `room` and `remaining` members are still in it. With members left: a
    /// new key (new key id) for the room, and the `room-key` message to send to exactly
    /// them. Without: the room's key is forgotten (the next joiner gets a new one), `None`.
    ///
    /// If the OS random generator fails (logged), the room's key is forgotten all the same,
    /// so the leaver's key is never handed out again: the remaining members get a new key on
    /// their next join.
    ///
    /// Shared: no key is made here (the cluster rotates it and every node hands the new one
    /// to its members, module docs); the room's key is only forgotten when no member is left
    /// here. Always `None`.
    pub(crate) fn rotate(&mut self, room: &str, remaining: usize) -> Option<Control> {
        if self.shared {
            if remaining == 0 {
                self.keys.remove(room);
            }
            return None;
        }
        let old = self.keys.remove(room);
        if remaining == 0 {
            return None;
        }
        let key = new_key(old.map(|(k, _)| k.id))?;
        let msg = room_key_msg(room, &key);
        self.keys.insert(room.to_owned(), (key, None));
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

/// Two candidate keys for the cluster's store (`"<keyId>:<key>"`, different key ids), so the
/// script can always pick one whose id differs from the key it replaces; `None` if the OS
/// random generator fails (logged). Made by the publisher, outside every lock.
pub(crate) fn candidates() -> Option<(String, String)> {
    let first = new_key(None)?;
    let second = new_key(Some(first.id))?;
    Some((encode(&first), encode(&second)))
}

fn encode(key: &RoomKey) -> String {
    format!("{}:{}", key.id, key.to_base64url())
}

fn decode(encoded: &str) -> Option<RoomKey> {
    let (id, key) = encoded.split_once(':')?;
    RoomKey::from_base64url(id.parse().ok()?, key).ok()
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
        let mut keys = RoomKeys::new(false);
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

    /// Shared keys: none made here, a newer stamp replaces, an older or equal one does not,
    /// a new epoch does; a rotation only forgets when the room empties here.
    #[test]
    fn shared_keys_come_from_the_cluster_newest_first() {
        let mut keys = RoomKeys::new(true);
        assert_eq!(keys.join("a"), None, "no key made locally");
        let (k1, k2) = candidates().unwrap();
        assert_ne!(k1.split(':').next(), k2.split(':').next(), "different ids");
        let at = |epoch: &str, n| Stamp {
            epoch: epoch.into(),
            n,
        };
        let m1 = keys.adopt("a", at("e1", 5), &k1).expect("first key kept");
        assert_eq!(keys.join("a"), Some(m1.clone()));
        assert_eq!(keys.adopt("a", at("e1", 5), &k1), None, "same key again");
        assert_eq!(keys.adopt("a", at("e1", 3), &k2), None, "older key");
        assert_eq!(keys.join("a"), Some(m1));
        let m2 = keys.adopt("a", at("e1", 9), &k2).expect("newer key");
        assert_eq!(id_and_key(&m2).0.to_string(), k2.split(':').next().unwrap());
        assert_eq!(keys.rotate("a", 1), None, "the cluster rotates");
        assert_eq!(keys.join("a"), Some(m2));
        assert!(keys.adopt("a", at("e2", 1), &k1).is_some(), "a new epoch");
        assert_eq!(keys.adopt("a", at("e2", 2), "7:short"), None, "malformed");
        keys.rotate("a", 0);
        assert_eq!(keys.len(), 0);
    }
}
