//! AES-256-GCM sealing of music-control messages between peers (seed 004 "Security":
//! `signature` for tamper detection; issue #5). The room key is handed out by the server to
//! authenticated room members; nonces and keys come from the driver as bytes (the browser's
//! `crypto.getRandomValues`), so this core has no random source.
//!
//! # Envelope (version 1), bytes
//! ```text
//! +---------+-------------+-------------+------------------------------+
//! | 0x01    | key id u32  | nonce 12 B  | ciphertext ‖ tag (16 B)      |
//! | 1 B     | big-endian  |             | len(plaintext) + 16          |
//! +---------+-------------+-------------+------------------------------+
//! ```
//! Overhead: 33 bytes. The associated data (authenticated, not sent) is
//! `"p3-seal-v1" ‖ u16 BE len(room) ‖ room ‖ u16 BE len(sender) ‖ sender ‖ version ‖ key id`,
//! so a message sealed for another room or sender, or with its header changed, fails to open.
//!
//! # Nonces and replay
//! The driver builds nonces as 4 random bytes (per key and sender session) followed by a
//! big-endian u64 counter; never reuse a nonce under one key. [`ReplayWindow`] accepts each
//! `(sender, counter)` once within a sliding window of 64 counters.
//!
//! # Errors ([`SealError`])
//! `Malformed` (too short), `UnsupportedVersion`, `ForeignKey` (key id not ours: another
//! room or an older key), `Tampered` (authentication failed: any changed bit, wrong room or
//! sender, or a wrong key under our key id), `Replay`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::collections::BTreeMap;

/// Envelope version byte.
pub const SEAL_VERSION: u8 = 1;
/// Header bytes before the ciphertext (version, key id, nonce).
pub const HEADER_LEN: usize = 1 + 4 + 12;
/// GCM tag bytes.
pub const TAG_LEN: usize = 16;

/// A room key: 32 bytes and the id the server gave it.
#[derive(Clone)]
pub struct RoomKey {
    /// Key id (rotates with the room key).
    pub id: u32,
    key: [u8; 32],
}

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl RoomKey {
    /// A key from its id and 32 bytes.
    pub fn new(id: u32, key: [u8; 32]) -> Self {
        RoomKey { id, key }
    }

    /// The key of a Control `room-key {room, keyId, key}` message (PROTOCOL.md §13.4): `key`
    /// is exactly 32 bytes in base64url without padding (43 characters).
    ///
    /// Errors: [`BadRoomKey`] if `key` is not base64url or not 32 bytes.
    pub fn from_base64url(id: u32, key: &str) -> Result<Self, BadRoomKey> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key)
            .map_err(|_| BadRoomKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| BadRoomKey)?;
        Ok(RoomKey { id, key })
    }

    /// The key bytes in base64url without padding, as `room-key` carries them.
    pub fn to_base64url(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.key)
    }
}

/// A `room-key` message whose `key` is not 32 bytes of base64url (without padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("room key must be 32 bytes in base64url without padding")]
pub struct BadRoomKey;

/// Why an envelope did not open. Everything but `Replay` is bad or foreign bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Shorter than header + tag.
    #[error("sealed message malformed")]
    Malformed,
    /// A version byte this build does not know.
    #[error("unsupported seal version {0}")]
    UnsupportedVersion(u8),
    /// Sealed under another key id.
    #[error("sealed under foreign key id {0}")]
    ForeignKey(u32),
    /// Authentication failed: the bytes, room or sender were changed, or the key is wrong.
    #[error("sealed message tampered or not for this room and sender")]
    Tampered,
    /// A `(sender, counter)` already seen or older than the window.
    #[error("replayed sealed message")]
    Replay,
}

fn aad(room: &str, sender: &str, key_id: u32) -> Vec<u8> {
    let mut a = Vec::with_capacity(10 + 4 + room.len() + sender.len() + 5);
    a.extend_from_slice(b"p3-seal-v1");
    for part in [room, sender] {
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        a.extend_from_slice(&len.to_be_bytes());
        a.extend_from_slice(part.as_bytes());
    }
    a.push(SEAL_VERSION);
    a.extend_from_slice(&key_id.to_be_bytes());
    a
}

/// Seals `plaintext` from `sender` in `room` under `key` with `nonce` (never reuse a nonce
/// under one key). Returns the envelope (see the module doc).
pub fn seal(key: &RoomKey, nonce: [u8; 12], room: &str, sender: &str, plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new(&key.key.into());
    let aad = aad(room, sender, key.id);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer does not fail");
    let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&key.id.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// The nonce of an envelope, without opening it (for [`ReplayWindow`]).
pub fn envelope_nonce(envelope: &[u8]) -> Result<[u8; 12], SealError> {
    if envelope.len() < HEADER_LEN + TAG_LEN {
        return Err(SealError::Malformed);
    }
    let mut n = [0u8; 12];
    n.copy_from_slice(&envelope[5..HEADER_LEN]);
    Ok(n)
}

/// Opens an envelope claimed to come from `sender` in `room`.
pub fn open(
    key: &RoomKey,
    room: &str,
    sender: &str,
    envelope: &[u8],
) -> Result<Vec<u8>, SealError> {
    let nonce = envelope_nonce(envelope)?;
    if envelope[0] != SEAL_VERSION {
        return Err(SealError::UnsupportedVersion(envelope[0]));
    }
    let key_id = u32::from_be_bytes(envelope[1..5].try_into().expect("4 bytes"));
    if key_id != key.id {
        return Err(SealError::ForeignKey(key_id));
    }
    let cipher = Aes256Gcm::new(&key.key.into());
    let aad = aad(room, sender, key_id);
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &envelope[HEADER_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Tampered)
}

/// Accepts each `(sender, counter)` once within a sliding window of 64 counters per sender
/// (the counter is the nonce's last 8 bytes, big-endian). Check only after [`open`] succeeded.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    senders: BTreeMap<String, (u64, u64)>,
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        ReplayWindow::default()
    }

    /// Records `nonce` from `sender`; `Err(Replay)` if seen or too old.
    pub fn check(&mut self, sender: &str, nonce: &[u8; 12]) -> Result<(), SealError> {
        let counter = u64::from_be_bytes(nonce[4..].try_into().expect("8 bytes"));
        let Some((highest, bits)) = self.senders.get_mut(sender) else {
            self.senders.insert(sender.to_owned(), (counter, 1));
            return Ok(());
        };
        if counter > *highest {
            let shift = counter - *highest;
            *bits = if shift >= 64 { 0 } else { *bits << shift };
            *bits |= 1;
            *highest = counter;
            return Ok(());
        }
        let back = *highest - counter;
        if back >= 64 || *bits & (1 << back) != 0 {
            return Err(SealError::Replay);
        }
        *bits |= 1 << back;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(counter: u64) -> [u8; 12] {
        let mut n = [7u8; 12];
        n[4..].copy_from_slice(&counter.to_be_bytes());
        n
    }

    #[test]
    fn round_trip_and_layout() {
        let key = RoomKey::new(9, [1; 32]);
        let msg = br#"{"type":"music-control","action":"play"}"#;
        let env = seal(&key, nonce(1), "room", "dev-a", msg);
        assert_eq!(env.len(), msg.len() + HEADER_LEN + TAG_LEN);
        assert_eq!(env[0], 1);
        assert_eq!(&env[1..5], &9u32.to_be_bytes());
        assert_eq!(open(&key, "room", "dev-a", &env).unwrap(), msg);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let key = RoomKey::new(1, [2; 32]);
        let env = seal(&key, nonce(5), "r", "s", b"pause");
        for i in 0..env.len() * 8 {
            let mut bad = env.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let err = open(&key, "r", "s", &bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    SealError::Tampered
                        | SealError::ForeignKey(_)
                        | SealError::UnsupportedVersion(_)
                ),
                "bit {i}: {err:?}"
            );
        }
    }

    #[test]
    fn foreign_key_room_sender_and_malformed() {
        let key = RoomKey::new(1, [2; 32]);
        let env = seal(&key, nonce(1), "r", "s", b"seek");
        assert_eq!(
            open(&RoomKey::new(2, [2; 32]), "r", "s", &env),
            Err(SealError::ForeignKey(1))
        );
        assert_eq!(
            open(&RoomKey::new(1, [3; 32]), "r", "s", &env),
            Err(SealError::Tampered)
        );
        assert_eq!(open(&key, "other", "s", &env), Err(SealError::Tampered));
        assert_eq!(open(&key, "r", "mallory", &env), Err(SealError::Tampered));
        assert_eq!(open(&key, "r", "s", &env[..20]), Err(SealError::Malformed));
        let mut v2 = env.clone();
        v2[0] = 2;
        assert_eq!(
            open(&key, "r", "s", &v2),
            Err(SealError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn base64url_keys() {
        let k = RoomKey::new(9, [0xfb; 32]);
        let text = k.to_base64url();
        assert_eq!(text.len(), 43);
        assert!(!text.contains(['+', '/', '=']), "{text}");
        let back = RoomKey::from_base64url(9, &text).unwrap();
        assert_eq!(back.key, k.key);
        assert!(matches!(
            RoomKey::from_base64url(9, "AAAA"),
            Err(BadRoomKey)
        ));
        assert!(RoomKey::from_base64url(9, &format!("{text}=")).is_err());
        assert!(RoomKey::from_base64url(9, "not base64!").is_err());
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::new();
        assert!(w.check("a", &nonce(10)).is_ok());
        assert_eq!(w.check("a", &nonce(10)), Err(SealError::Replay));
        assert!(w.check("b", &nonce(10)).is_ok());
        assert!(w.check("a", &nonce(8)).is_ok());
        assert_eq!(w.check("a", &nonce(8)), Err(SealError::Replay));
        assert!(w.check("a", &nonce(100)).is_ok());
        assert_eq!(w.check("a", &nonce(20)), Err(SealError::Replay));
        assert!(w.check("a", &nonce(99)).is_ok());
    }
}
