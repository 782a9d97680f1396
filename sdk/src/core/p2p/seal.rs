//! AES-256-GCM sealing of music control between peers under per-sealer subkeys (seed 004
//! "Security": `signature` for tamper detection; issue #5; issue 12 "Rooms, keys, control";
//! PROTOCOL.md §13.4).
//!
//! The room key is handed out by the server to the room's members and replaced (new key id)
//! whenever a member leaves (server-stub `room_key`). Nobody seals under the room key itself:
//! each **sealer instance** (one per room key, member id and page load) draws a fresh 128-bit
//! salt from the CSPRNG and derives its own AES-256-GCM subkey
//!
//! ```text
//! subkey = HKDF-SHA256(salt = salt, IKM = room key,
//!                      info = "p3-seal-v2 subkey" ‖ key id u32 BE
//!                             ‖ u32 BE len(room) ‖ room ‖ u32 BE len(sender) ‖ sender, L = 32)
//! nonce  = 0x00000000 ‖ counter u64 BE          (counter = 1, 2, 3, … per sealer instance)
//! ```
//!
//! so a nonce can never repeat under one AES key: two devices, tabs or reloads of one member
//! pick different salts (collision chance about n²/2¹²⁹ for n sealers) and so different
//! subkeys, and one instance never repeats its counter (it is never persisted or restarted;
//! at `u64::MAX` the sealer refuses with [`SealError::Exhausted`]). Salts and keys come from
//! the driver as bytes (the browser's `crypto.getRandomValues`): this core has no random
//! source and is tested deterministically.
//!
//! # Envelope (version 2), bytes
//! ```text
//! +---------+-------------+-------------+--------------+------------------------------+
//! | 0x02    | key id u32  | salt 16 B   | counter u64  | ciphertext ‖ tag (16 B)      |
//! | 1 B     | big-endian  |             | big-endian   | len(plaintext) + 16          |
//! +---------+-------------+-------------+--------------+------------------------------+
//! ```
//! Header 29 bytes, overhead 45 bytes. The associated data (authenticated, not sent) is
//! `"p3-seal-v2" ‖ u32 BE len(room) ‖ room ‖ u32 BE len(sender) ‖ sender ‖ header (29 B)`.
//! `sender` is the member id the transport names (the relay's or the DataChannel's `from`,
//! which the server admitted), never a field of the message: a frame sealed by one member in
//! another's name, sealed for another room, or with any header bit changed fails to open.
//!
//! # Replay ([`ReplayWindow`])
//! Each `(sender, salt)` stream is accepted once per counter within a sliding window of 64
//! counters. A sender keeps at most [`MAX_STREAMS_PER_SENDER`] live streams; the salts of
//! older ones are remembered ([`MAX_RETIRED_PER_SENDER`]) and refused as `Replay`.
//!
//! # Errors ([`SealError`])
//! `Malformed` (too short), `UnsupportedVersion`, `ForeignKey` (key id not ours: another room
//! or a key this member never held), `ExpiredKey` (the previous key after its grace, see
//! [`crate::core::p2p::peer_sync::PeerSealer`]), `Tampered` (authentication failed: any
//! changed bit, wrong room or sender, or a wrong key under our key id), `Replay`, `Exhausted`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use std::collections::{BTreeMap, VecDeque};

/// Envelope version byte.
pub const SEAL_VERSION: u8 = 2;
/// Sealer-instance salt bytes (128 bits from the CSPRNG).
pub const SALT_LEN: usize = 16;
/// Header bytes before the ciphertext (version, key id, salt, counter).
pub const HEADER_LEN: usize = 1 + 4 + SALT_LEN + 8;
/// GCM tag bytes.
pub const TAG_LEN: usize = 16;
/// Live `(sender, salt)` streams a [`ReplayWindow`] keeps per sender (a reload or a second tab
/// of one member is a new stream).
pub const MAX_STREAMS_PER_SENDER: usize = 4;
/// Salts of evicted streams a [`ReplayWindow`] remembers per sender, to refuse their replays.
pub const MAX_RETIRED_PER_SENDER: usize = 64;
/// Senders a [`ReplayWindow`] tracks at most (the oldest is forgotten beyond; a room holds
/// far fewer members).
pub const MAX_SENDERS: usize = 1024;

/// A room key: 32 bytes and the id the server gave it.
#[derive(Clone)]
pub struct RoomKey {
    /// Key id (a new one with every rotation).
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

    /// Whether both keys have the same id and bytes.
    pub fn same_as(&self, other: &RoomKey) -> bool {
        self.id == other.id && self.key == other.key
    }
}

/// A `room-key` message whose `key` is not 32 bytes of base64url (without padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("room key must be 32 bytes in base64url without padding")]
pub struct BadRoomKey;

/// Why an envelope did not open (or could not be sealed). Everything but `Replay`,
/// `ExpiredKey` and `Exhausted` is bad or foreign bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Shorter than header + tag.
    #[error("sealed message malformed")]
    Malformed,
    /// A version byte this build does not know.
    #[error("unsupported seal version {0}")]
    UnsupportedVersion(u8),
    /// Sealed under a key id this member does not hold.
    #[error("sealed under foreign key id {0}")]
    ForeignKey(u32),
    /// Sealed under the previous room key after its grace period, or by a member that left.
    #[error("sealed under retired key id {0}")]
    ExpiredKey(u32),
    /// Authentication failed: the bytes, room or sender were changed, or the key is wrong.
    #[error("sealed message tampered or not for this room and sender")]
    Tampered,
    /// A `(sender, salt, counter)` already seen, older than the window, or from a retired
    /// stream.
    #[error("replayed sealed message")]
    Replay,
    /// This sealer instance used its last counter; make a new one (fresh salt).
    #[error("sealer counter exhausted")]
    Exhausted,
}

/// The clear header of an envelope (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Room key id.
    pub key_id: u32,
    /// The sealer instance's salt.
    pub salt: [u8; SALT_LEN],
    /// The sealer instance's counter (≥ 1).
    pub counter: u64,
}

impl Header {
    /// Reads the header of `envelope` without opening it.
    ///
    /// Errors: `Malformed` (shorter than header + tag), `UnsupportedVersion`.
    pub fn parse(envelope: &[u8]) -> Result<Header, SealError> {
        if envelope.len() < HEADER_LEN + TAG_LEN {
            return Err(SealError::Malformed);
        }
        if envelope[0] != SEAL_VERSION {
            return Err(SealError::UnsupportedVersion(envelope[0]));
        }
        let key_id = u32::from_be_bytes(envelope[1..5].try_into().expect("4 bytes"));
        let salt: [u8; SALT_LEN] = envelope[5..5 + SALT_LEN].try_into().expect("16 bytes");
        let counter = u64::from_be_bytes(envelope[5 + SALT_LEN..HEADER_LEN].try_into().expect("8"));
        Ok(Header {
            key_id,
            salt,
            counter,
        })
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0] = SEAL_VERSION;
        h[1..5].copy_from_slice(&self.key_id.to_be_bytes());
        h[5..5 + SALT_LEN].copy_from_slice(&self.salt);
        h[5 + SALT_LEN..].copy_from_slice(&self.counter.to_be_bytes());
        h
    }

    fn nonce(self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        n
    }
}

fn push_part(out: &mut Vec<u8>, part: &str) {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part.as_bytes());
}

/// The subkey of sealer instance `salt` of `sender` in `room` under `key` (module docs).
fn subkey(key: &RoomKey, room: &str, sender: &str, salt: &[u8; SALT_LEN]) -> Aes256Gcm {
    let mut info = Vec::with_capacity(17 + 4 + 8 + room.len() + sender.len());
    info.extend_from_slice(b"p3-seal-v2 subkey");
    info.extend_from_slice(&key.id.to_be_bytes());
    push_part(&mut info, room);
    push_part(&mut info, sender);
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), &key.key)
        .expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Aes256Gcm::new(&okm.into())
}

fn aad(room: &str, sender: &str, header: &[u8; HEADER_LEN]) -> Vec<u8> {
    let mut a = Vec::with_capacity(10 + 8 + room.len() + sender.len() + HEADER_LEN);
    a.extend_from_slice(b"p3-seal-v2");
    push_part(&mut a, room);
    push_part(&mut a, sender);
    a.extend_from_slice(header);
    a
}

/// One sealer instance: member `sender` of `room` under one room key, with its salt and
/// counter (module docs). Make a new one (fresh salt) for a new key, a new member id and on
/// every page load; never persist or copy one.
pub struct Sealer {
    cipher: Aes256Gcm,
    key_id: u32,
    salt: [u8; SALT_LEN],
    counter: u64,
    room: String,
    sender: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .field("counter", &self.counter)
            .field("room", &self.room)
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer for `sender` in `room` under `key`; `salt` are 16 bytes from the CSPRNG,
    /// fresh for this instance.
    pub fn new(
        key: &RoomKey,
        room: impl Into<String>,
        sender: impl Into<String>,
        salt: [u8; SALT_LEN],
    ) -> Sealer {
        let (room, sender) = (room.into(), sender.into());
        Sealer {
            cipher: subkey(key, &room, &sender, &salt),
            key_id: key.id,
            salt,
            counter: 0,
            room,
            sender,
        }
    }

    /// The room key id this instance seals under.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The member id this instance seals as.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// Seals `plaintext` with the next counter; returns the envelope (module docs).
    ///
    /// Errors: [`SealError::Exhausted`] after `u64::MAX - 1` seals.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let counter = self
            .counter
            .checked_add(1)
            .filter(|c| *c < u64::MAX)
            .ok_or(SealError::Exhausted)?;
        self.counter = counter;
        let header = Header {
            key_id: self.key_id,
            salt: self.salt,
            counter,
        };
        let head = header.to_bytes();
        let aad = aad(&self.room, &self.sender, &head);
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&header.nonce()),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer does not fail");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&ct);
        Ok(out)
    }
}

/// Opens an envelope from `sender` (the member id the transport names) in `room` under `key`.
/// Returns its header (for [`ReplayWindow::check`]) and the plaintext.
///
/// Errors: `Malformed`, `UnsupportedVersion`, `ForeignKey` (another key id), `Tampered`.
pub fn open(
    key: &RoomKey,
    room: &str,
    sender: &str,
    envelope: &[u8],
) -> Result<(Header, Vec<u8>), SealError> {
    let header = Header::parse(envelope)?;
    if header.key_id != key.id {
        return Err(SealError::ForeignKey(header.key_id));
    }
    let cipher = subkey(key, room, sender, &header.salt);
    let head: [u8; HEADER_LEN] = envelope[..HEADER_LEN].try_into().expect("header length");
    let aad = aad(room, sender, &head);
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&header.nonce()),
            Payload {
                msg: &envelope[HEADER_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Tampered)?;
    Ok((header, plain))
}

/// One sender's streams: live windows by salt (oldest first) and retired salts.
#[derive(Debug, Default)]
struct SenderStreams {
    /// `(salt, highest counter, bitmap of the 64 counters up to it)`.
    live: VecDeque<([u8; SALT_LEN], u64, u64)>,
    retired: VecDeque<[u8; SALT_LEN]>,
}

/// Accepts each `(sender, salt, counter)` once within a sliding window of 64 counters per
/// stream (module docs). Check only after [`open`] succeeded, with the header it returned.
/// One window per room key.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    senders: BTreeMap<String, SenderStreams>,
    /// Sender names in first-seen order, to forget the oldest beyond [`MAX_SENDERS`].
    order: VecDeque<String>,
}

impl ReplayWindow {
    /// An empty window.
    pub fn new() -> Self {
        ReplayWindow::default()
    }

    /// Records `header` from `sender`; `Err(Replay)` if seen, too old, or from a retired
    /// stream.
    pub fn check(&mut self, sender: &str, header: &Header) -> Result<(), SealError> {
        if !self.senders.contains_key(sender) {
            if self.order.len() >= MAX_SENDERS {
                if let Some(old) = self.order.pop_front() {
                    self.senders.remove(&old);
                }
            }
            self.order.push_back(sender.to_owned());
            self.senders
                .insert(sender.to_owned(), SenderStreams::default());
        }
        let s = self.senders.get_mut(sender).expect("inserted above");
        let counter = header.counter;
        let Some(pos) = s.live.iter().position(|(salt, ..)| *salt == header.salt) else {
            if s.retired.contains(&header.salt) {
                return Err(SealError::Replay);
            }
            if s.live.len() >= MAX_STREAMS_PER_SENDER {
                if let Some((salt, ..)) = s.live.pop_front() {
                    if s.retired.len() >= MAX_RETIRED_PER_SENDER {
                        s.retired.pop_front();
                    }
                    s.retired.push_back(salt);
                }
            }
            s.live.push_back((header.salt, counter, 1));
            return Ok(());
        };
        let (_, highest, bits) = &mut s.live[pos];
        if counter > *highest {
            let shift = counter - *highest;
            *bits = if shift >= 64 { 0 } else { *bits << shift };
            *bits |= 1;
            *highest = counter;
        } else {
            let back = *highest - counter;
            if back >= 64 || *bits & (1 << back) != 0 {
                return Err(SealError::Replay);
            }
            *bits |= 1 << back;
        }
        // The most recently used stream goes last (evicted last).
        let entry = s.live.remove(pos).expect("position found above");
        s.live.push_back(entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = br#"{"type":"music-control","action":"play"}"#;

    #[test]
    fn round_trip_and_layout() {
        let key = RoomKey::new(9, [1; 32]);
        let mut s = Sealer::new(&key, "room", "dev-a", [5; 16]);
        let env = s.seal(MSG).unwrap();
        assert_eq!(env.len(), MSG.len() + HEADER_LEN + TAG_LEN);
        assert_eq!(HEADER_LEN, 29);
        assert_eq!(env[0], 2, "version");
        assert_eq!(&env[1..5], &9u32.to_be_bytes(), "key id");
        assert_eq!(&env[5..21], &[5; 16], "salt");
        assert_eq!(&env[21..29], &1u64.to_be_bytes(), "counter starts at 1");
        let (h, plain) = open(&key, "room", "dev-a", &env).unwrap();
        assert_eq!(plain, MSG);
        assert_eq!(
            h,
            Header {
                key_id: 9,
                salt: [5; 16],
                counter: 1
            }
        );
        let env2 = s.seal(MSG).unwrap();
        assert_eq!(&env2[21..29], &2u64.to_be_bytes());
        assert_eq!(open(&key, "room", "dev-a", &env2).unwrap().1, MSG);
    }

    /// A fixed vector, computed with an independent implementation (Python `cryptography`:
    /// `HKDF(SHA256, 32, salt, info)` then `AESGCM(subkey).encrypt(nonce, b"x", aad)` with the
    /// inputs of the module docs): the layout and the derivation are the wire format, so a
    /// change to either (HKDF inputs, AAD, nonce) breaks this test, not only interop.
    #[test]
    fn known_answer() {
        let key = RoomKey::new(0x0102_0304, [0x42; 32]);
        let mut s = Sealer::new(&key, "r", "s", [0x17; 16]);
        let env = s.seal(b"x").unwrap();
        let hex: String = env.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "02",                               // version
                "01020304",                         // key id
                "17171717171717171717171717171717", // salt
                "0000000000000001",                 // counter
                "f8",                               // ciphertext of "x"
                "e1db39e36e90155c2df0790306305003", // tag
            )
        );
        // Same inputs, same bytes (deterministic core); a different salt, different bytes.
        let mut again = Sealer::new(&key, "r", "s", [0x17; 16]);
        assert_eq!(again.seal(b"x").unwrap(), env);
        let mut other = Sealer::new(&key, "r", "s", [0x18; 16]);
        assert_ne!(other.seal(b"x").unwrap()[HEADER_LEN..], env[HEADER_LEN..]);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let key = RoomKey::new(1, [2; 32]);
        let env = Sealer::new(&key, "r", "s", [3; 16]).seal(b"pause").unwrap();
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
        let env = Sealer::new(&key, "r", "s", [4; 16]).seal(b"seek").unwrap();
        assert_eq!(
            open(&RoomKey::new(2, [2; 32]), "r", "s", &env),
            Err(SealError::ForeignKey(1))
        );
        assert_eq!(
            open(&RoomKey::new(1, [3; 32]), "r", "s", &env),
            Err(SealError::Tampered)
        );
        assert_eq!(open(&key, "other", "s", &env), Err(SealError::Tampered));
        assert_eq!(open(&key, "r", "s", &env[..40]), Err(SealError::Malformed));
        let mut v1 = env.clone();
        v1[0] = 1;
        assert_eq!(
            open(&key, "r", "s", &v1),
            Err(SealError::UnsupportedVersion(1))
        );
    }

    /// A member holding the room key seals a frame in another member's name; the transport
    /// names the real sender (`mallory`), so it does not open — nor as the claimed `alice`
    /// delivered by mallory's link, since receivers use the link's `from`.
    #[test]
    fn wrong_sender_fails() {
        let key = RoomKey::new(1, [2; 32]);
        let forged = Sealer::new(&key, "r", "alice", [6; 16])
            .seal(b"play")
            .unwrap();
        assert_eq!(
            open(&key, "r", "mallory", &forged),
            Err(SealError::Tampered)
        );
        let own = Sealer::new(&key, "r", "mallory", [6; 16])
            .seal(b"play")
            .unwrap();
        assert_eq!(open(&key, "r", "alice", &own), Err(SealError::Tampered));
        assert!(open(&key, "r", "mallory", &own).is_ok());
    }

    /// Two sealer instances of one member under one key with different salts never produce
    /// the same (AES key, nonce) pair even with equal counters: their ciphertexts of the same
    /// plaintext differ and each opens only with its own header.
    #[test]
    fn same_member_two_instances_do_not_share_a_keystream() {
        let key = RoomKey::new(1, [2; 32]);
        let a = Sealer::new(&key, "r", "s", [1; 16]).seal(&[0; 32]).unwrap();
        let b = Sealer::new(&key, "r", "s", [2; 16]).seal(&[0; 32]).unwrap();
        assert_eq!(a[21..29], b[21..29], "same counter");
        let ct = HEADER_LEN..HEADER_LEN + 32;
        assert_ne!(a[ct.clone()], b[ct], "different keystream");
        // Swapping the salt between them breaks authentication.
        let mut mixed = a.clone();
        mixed[5..21].copy_from_slice(&b[5..21]);
        assert_eq!(open(&key, "r", "s", &mixed), Err(SealError::Tampered));
    }

    #[test]
    fn exhausted_counter_refuses() {
        let key = RoomKey::new(1, [2; 32]);
        let mut s = Sealer::new(&key, "r", "s", [1; 16]);
        s.counter = u64::MAX - 2;
        assert!(s.seal(b"a").is_ok());
        assert_eq!(s.seal(b"b"), Err(SealError::Exhausted));
        assert_eq!(s.seal(b"c"), Err(SealError::Exhausted));
    }

    #[test]
    fn base64url_keys() {
        let k = RoomKey::new(9, [0xfb; 32]);
        let text = k.to_base64url();
        assert_eq!(text.len(), 43);
        assert!(!text.contains(['+', '/', '=']), "{text}");
        let back = RoomKey::from_base64url(9, &text).unwrap();
        assert!(back.same_as(&k));
        assert!(matches!(
            RoomKey::from_base64url(9, "AAAA"),
            Err(BadRoomKey)
        ));
        assert!(RoomKey::from_base64url(9, &format!("{text}=")).is_err());
        assert!(RoomKey::from_base64url(9, "not base64!").is_err());
    }

    fn h(salt: u8, counter: u64) -> Header {
        Header {
            key_id: 1,
            salt: [salt; 16],
            counter,
        }
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::new();
        assert!(w.check("a", &h(1, 10)).is_ok());
        assert_eq!(w.check("a", &h(1, 10)), Err(SealError::Replay));
        assert!(w.check("b", &h(1, 10)).is_ok(), "another sender");
        assert!(w.check("a", &h(2, 10)).is_ok(), "another stream of a");
        assert!(w.check("a", &h(1, 8)).is_ok());
        assert_eq!(w.check("a", &h(1, 8)), Err(SealError::Replay));
        assert!(w.check("a", &h(1, 100)).is_ok());
        assert_eq!(w.check("a", &h(1, 20)), Err(SealError::Replay));
        assert!(w.check("a", &h(1, 99)).is_ok());
    }

    #[test]
    fn replay_of_an_evicted_stream_is_refused() {
        let mut w = ReplayWindow::new();
        assert!(w.check("a", &h(0, 1)).is_ok());
        for salt in 1..=MAX_STREAMS_PER_SENDER as u8 {
            assert!(w.check("a", &h(salt, 1)).is_ok());
        }
        // Stream 0 was evicted: its frames (even unseen counters) are refused.
        assert_eq!(w.check("a", &h(0, 1)), Err(SealError::Replay));
        assert_eq!(w.check("a", &h(0, 2)), Err(SealError::Replay));
        // A recently used stream survives new ones.
        assert!(w.check("a", &h(1, 2)).is_ok());
        assert!(w.check("a", &h(99, 1)).is_ok());
        assert!(w.check("a", &h(1, 3)).is_ok());
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Many sealer instances of ONE member under ONE room key (devices, tabs, reloads),
        /// each with its own salt, sealing interleaved: no two envelopes ever use the same
        /// (subkey, nonce) pair, observed as: equal plaintexts never give equal ciphertext
        /// blocks, and every envelope opens with exactly the header it carries.
        #[test]
        fn nonces_never_repeat_across_sealers(
            salts in proptest::collection::hash_set(any::<[u8; 16]>(), 2..12),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 1..200),
        ) {
            let key = RoomKey::new(7, [3; 32]);
            let mut sealers: Vec<Sealer> =
                salts.iter().map(|s| Sealer::new(&key, "room", "member-1", *s)).collect();
            let mut seen_pairs = HashSet::new();
            let mut seen_streams = HashSet::new();
            for i in order {
                let s = &mut sealers[i.index(salts.len())];
                let env = s.seal(&[0u8; 16]).unwrap();
                let h = Header::parse(&env).unwrap();
                // (salt, counter) identifies (subkey, nonce): it must be unique.
                prop_assert!(seen_pairs.insert((h.salt, h.counter)), "repeated nonce under one subkey");
                // Keystream of a zero plaintext: must be unique too.
                prop_assert!(seen_streams.insert(env[HEADER_LEN..HEADER_LEN + 16].to_vec()));
                let (_, plain) = open(&key, "room", "member-1", &env).unwrap();
                prop_assert_eq!(plain, vec![0u8; 16]);
            }
        }

        /// Any envelope round-trips, and any single changed byte fails to open.
        #[test]
        fn layout_round_trips(
            msg in proptest::collection::vec(any::<u8>(), 0..300),
            salt in any::<[u8; 16]>(),
            key_id in any::<u32>(),
            flip in any::<prop::sample::Index>(),
        ) {
            let key = RoomKey::new(key_id, [9; 32]);
            let env = Sealer::new(&key, "r", "m", salt).seal(&msg).unwrap();
            prop_assert_eq!(env.len(), HEADER_LEN + msg.len() + TAG_LEN);
            let (h, plain) = open(&key, "r", "m", &env).unwrap();
            prop_assert_eq!(&plain, &msg);
            prop_assert_eq!(h, Header { key_id, salt, counter: 1 });
            let mut bad = env.clone();
            bad[flip.index(env.len())] ^= 0x80;
            prop_assert!(open(&key, "r", "m", &bad).is_err());
        }
    }
}
