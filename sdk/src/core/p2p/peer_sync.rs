//! Music control between peers when the server is gone (seed 004 "Tier 2: WebRTC mesh",
//! "Security" `signature`; issue #5; PROTOCOL.md §13.11): the messages a music room's
//! controller and followers exchange over the DataChannel mesh, sealed under the room key
//! ([`crate::core::p2p::seal`]), and the rule a follower applies before taking a change.
//!
//! # Wire (Sync lane of the mesh, JSON)
//! `{"type": "sealed-sync", "box": "<base64url envelope>"}`: the envelope of
//! [`crate::core::p2p::seal`] (AAD binds room and sender, so a message replayed from another
//! room or re-sent as another member fails with `Tampered`). Inside, UTF-8 JSON of
//! [`PeerSync`]:
//! - `{"type": "change", "control": MusicControl, "state": RoomState}`: the controller applied
//!   `control` (stamped `(epoch, sequence)`, `applyAt` on the shared clock) and `state` is the
//!   room state it produced;
//! - `{"type": "claim", "claim": {epoch, controller}, "state": RoomState | null}`: the sender's
//!   adopted claim (after an election, and to every peer whose link comes up), with the
//!   newest state it holds.
//!
//! # Acceptance ([`check_change`])
//! A change is taken only from the adopted claim's controller in the claim's epoch; a change
//! from an epoch below the claim's is [`PeerSyncError::StaleEpoch`] (`epoch_mismatch`), from
//! another member in the current epoch [`PeerSyncError::NotController`] (`not_controller`).
//! A change from a higher epoch means a claim not heard yet: the caller adopts
//! `(epoch, sender)` as a claim ([`crate::core::p2p::election::Election::handle_claim`]) first.
//! Duplicates are dropped by the follower's `(epoch, sequence)` order (§12).
//!
//! # Drive contract
//! The driver owns a [`PeerSealer`] per room once the room key arrives, gives it a fresh
//! 16-byte sealer salt (from `crypto.getRandomValues`; no CSPRNG, no sealer:
//! `crypto_unavailable`) with every key, hands it every later `room-key` and `peer-left`,
//! and calls [`PeerSealer::seal`] / [`PeerSealer::open`] with its monotonic `now` in ms; no
//! IO. Rotation and grace: [`PeerSealer`].

use super::election::Claim;
use super::seal::{self, ReplayWindow, RoomKey, SealError, Sealer, SALT_LEN};
use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::sync::state::{MusicControl, RoomState};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::VecDeque;

/// `type` of the outer message on the mesh's Sync lane.
pub const SEALED_SYNC_TYPE: &str = "sealed-sync";

/// A music message between peers (module docs). JSON tagged by `type`, camelCase.
// Built, sealed and dropped at once: boxing `Change` would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum PeerSync {
    /// The controller applied `control`; `state` is the result.
    Change {
        /// The resolved change (`applyAt` set).
        control: MusicControl,
        /// The room state it produced.
        state: RoomState,
    },
    /// The sender's adopted claim and newest state.
    Claim {
        /// `{epoch, controller}`.
        claim: Claim,
        /// The newest room state the sender holds.
        state: Option<RoomState>,
    },
}

/// Why a peer's music message was not taken. `code()` gives the JS error code.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerSyncError {
    /// Not a `sealed-sync` message, bad base64, or bad JSON inside (`bad_payload`).
    #[error("bad peer music message: {0}")]
    Malformed(String),
    /// The envelope did not open (`forbidden`): tampered, foreign key, replay.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// No room key yet: nothing can be sealed or opened (`closed`).
    #[error("no room key from the server yet")]
    NoKey,
    /// A change from an epoch below the adopted claim's (`epoch_mismatch`).
    #[error("change from stale epoch {got}, the room is in epoch {current}")]
    StaleEpoch {
        /// The change's epoch.
        got: u64,
        /// The adopted claim's epoch.
        current: u64,
    },
    /// A change in the current epoch from someone other than its controller
    /// (`not_controller`).
    #[error("{from} is not the controller of epoch {epoch} ({controller} is)")]
    NotController {
        /// The sender.
        from: String,
        /// The epoch.
        epoch: u64,
        /// The claim's controller.
        controller: String,
    },
}

impl PeerSyncError {
    /// The error code reported to JavaScript.
    pub fn code(&self) -> ErrorCode {
        match self {
            PeerSyncError::Malformed(_) => ErrorCode::BadPayload,
            PeerSyncError::Seal(_) => ErrorCode::Forbidden,
            PeerSyncError::NoKey => ErrorCode::Closed,
            PeerSyncError::StaleEpoch { .. } => ErrorCode::EpochMismatch,
            PeerSyncError::NotController { .. } => ErrorCode::NotController,
        }
    }
}

/// Whether a `change` from `from` may be applied under the adopted `claim` (module docs).
/// `Ok(true)`: the change is from a newer epoch; adopt `Claim::new(change.epoch, from)` first.
pub fn check_change(
    claim: &Claim,
    from: &str,
    change: &MusicControl,
) -> Result<bool, PeerSyncError> {
    if change.epoch < claim.epoch {
        return Err(PeerSyncError::StaleEpoch {
            got: change.epoch,
            current: claim.epoch,
        });
    }
    if change.epoch > claim.epoch {
        return Ok(true);
    }
    if from != claim.controller {
        return Err(PeerSyncError::NotController {
            from: from.to_owned(),
            epoch: change.epoch,
            controller: claim.controller.clone(),
        });
    }
    Ok(false)
}

/// How long a receiver keeps opening frames sealed under the previous room key after a new
/// one arrived, ms (PROTOCOL.md §13.4): frames in flight while the server hands out the new
/// key, and peers whose `room-key` is a moment late. Longer would let a member that left keep
/// talking under a key it holds; shorter would drop control exactly when members change.
pub const KEY_GRACE_MS: u64 = 10_000;

/// Member ids that left (`peer-left`) remembered at most by a [`PeerSealer`].
pub const MAX_LEFT: usize = 256;

/// The previous room key while its grace lasts.
#[derive(Debug)]
struct Previous {
    key: RoomKey,
    replay: ReplayWindow,
    /// Until when (driver ms) frames under it open.
    until_ms: u64,
}

/// Seals and opens [`PeerSync`] messages of one room for one member (module docs), across
/// room-key rotations.
///
/// Drive contract: [`PeerSealer::new`] when the first `room-key` arrives,
/// [`PeerSealer::handle_room_key`] on every later one and whenever this member's id changes,
/// [`PeerSealer::handle_peer_left`] on every `peer-left` of the room; every input takes `now`
/// (driver ms, monotonic) and salts are 16 fresh CSPRNG bytes each. After a new key this
/// member seals under it at once; frames under the previous key open for [`KEY_GRACE_MS`]
/// more, and never from a member that left.
#[derive(Debug)]
pub struct PeerSealer {
    key: RoomKey,
    sealer: Sealer,
    room: String,
    replay: ReplayWindow,
    previous: Option<Previous>,
    /// Members that left, oldest first (their frames under the previous key are refused).
    left: VecDeque<String>,
}

impl PeerSealer {
    /// A sealer for member `me` of `room` under `key`; `salt` are 16 fresh CSPRNG bytes.
    pub fn new(
        key: RoomKey,
        room: impl Into<String>,
        me: impl Into<String>,
        salt: [u8; SALT_LEN],
    ) -> Self {
        let room = room.into();
        PeerSealer {
            sealer: Sealer::new(&key, room.clone(), me, salt),
            key,
            room,
            replay: ReplayWindow::new(),
            previous: None,
            left: VecDeque::new(),
        }
    }

    /// The id of the key this member seals under.
    pub fn key_id(&self) -> u32 {
        self.key.id
    }

    /// The member id this member seals as.
    pub fn me(&self) -> &str {
        self.sealer.sender()
    }

    /// A `room-key` (or a new member id `me`) arrived at `now`. The same key and id: nothing
    /// changes (a repeated `joined` repeats the key; the counter goes on), returns `false`.
    /// A new member id under the same key: a new sealer instance with `salt`. A new key: this
    /// member seals under it from now on (fresh `salt`), and the current key becomes the
    /// previous one for [`KEY_GRACE_MS`]. Returns `true` when something changed.
    pub fn handle_room_key(
        &mut self,
        key: RoomKey,
        me: &str,
        salt: [u8; SALT_LEN],
        now: Millis,
    ) -> bool {
        if key.same_as(&self.key) {
            if me == self.sealer.sender() {
                return false;
            }
            self.sealer = Sealer::new(&key, self.room.clone(), me, salt);
            return true;
        }
        self.sealer = Sealer::new(&key, self.room.clone(), me, salt);
        let old = std::mem::replace(&mut self.key, key);
        let replay = std::mem::take(&mut self.replay);
        self.previous = Some(Previous {
            key: old,
            replay,
            until_ms: now.as_u64().saturating_add(KEY_GRACE_MS),
        });
        true
    }

    /// `who` left the room: frames from it under the previous key no longer open (it may
    /// still hold that key; it never gets the next one).
    pub fn handle_peer_left(&mut self, who: &str) {
        if self.left.iter().any(|l| l == who) {
            return;
        }
        if self.left.len() >= MAX_LEFT {
            self.left.pop_front();
        }
        self.left.push_back(who.to_owned());
    }

    /// `msg` as the outer Sync-lane value `{type: "sealed-sync", box}`.
    ///
    /// Errors: [`SealError::Exhausted`] (never in practice: 2⁶⁴ − 2 seals per instance).
    pub fn seal(&mut self, msg: &PeerSync) -> Result<Value, PeerSyncError> {
        let plain = serde_json::to_vec(msg).expect("peer sync messages are plain JSON");
        let env = self.sealer.seal(&plain)?;
        Ok(json!({
            "type": SEALED_SYNC_TYPE,
            "box": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(env),
        }))
    }

    /// Whether `value` is a `sealed-sync` message (else it is for someone else).
    pub fn is_sealed(value: &Value) -> bool {
        value.get("type").and_then(Value::as_str) == Some(SEALED_SYNC_TYPE)
    }

    /// Opens a `sealed-sync` value that the transport says came from member `from`, at
    /// `now`. Errors: [`PeerSyncError::Malformed`], [`PeerSyncError::Seal`] (tampered,
    /// foreign key, the previous key after its grace or from a member that left, replay).
    pub fn open(
        &mut self,
        from: &str,
        value: &Value,
        now: Millis,
    ) -> Result<PeerSync, PeerSyncError> {
        let b = value
            .get("box")
            .and_then(Value::as_str)
            .filter(|_| Self::is_sealed(value))
            .ok_or_else(|| PeerSyncError::Malformed("not a sealed-sync message".into()))?;
        let env = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b)
            .map_err(|e| PeerSyncError::Malformed(e.to_string()))?;
        let header = seal::Header::parse(&env)?;
        let (key, replay) = if header.key_id == self.key.id {
            (&self.key, &mut self.replay)
        } else {
            match self.previous.as_mut() {
                Some(p) if p.key.id == header.key_id => {
                    if now.as_u64() >= p.until_ms || self.left.iter().any(|l| l == from) {
                        return Err(SealError::ExpiredKey(header.key_id).into());
                    }
                    (&p.key, &mut p.replay)
                }
                _ => return Err(SealError::ForeignKey(header.key_id).into()),
            }
        };
        let (header, plain) = seal::open(key, &self.room, from, &env)?;
        replay.check(from, &header)?;
        if self
            .previous
            .as_ref()
            .is_some_and(|p| now.as_u64() >= p.until_ms)
        {
            self.previous = None;
        }
        serde_json::from_slice(&plain).map_err(|e| PeerSyncError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sync::state::{MusicAction, MusicControlData};

    fn key() -> RoomKey {
        RoomKey::new(7, [9; 32])
    }

    fn change(epoch: u64, seq: u64) -> PeerSync {
        let state = RoomState::new(1000.0);
        let control =
            MusicControl::new(MusicAction::Pause, MusicControlData::default(), epoch, seq);
        let state = state.apply(&control, 1200.0).unwrap();
        PeerSync::Change { control, state }
    }

    #[test]
    fn seal_round_trip_and_replay() {
        let mut a = PeerSealer::new(key(), "r", "a", [1; 16]);
        let mut b = PeerSealer::new(key(), "r", "b", [5; 16]);
        let msg = change(1, 1);
        let v = a.seal(&msg).unwrap();
        assert!(PeerSealer::is_sealed(&v));
        assert_eq!(b.open("a", &v, Millis::from_u64(0)).unwrap(), msg);
        assert_eq!(
            b.open("a", &v, Millis::from_u64(0)),
            Err(PeerSyncError::Seal(SealError::Replay))
        );
    }

    #[test]
    fn tampered_foreign_or_wrong_sender_is_rejected() {
        let mut a = PeerSealer::new(key(), "r", "a", [1; 16]);
        let mut b = PeerSealer::new(key(), "r", "b", [2; 16]);
        let v = a.seal(&change(1, 1)).unwrap();
        // Delivered by another member's link (the transport's `from` is not `a`).
        let e = b.open("c", &v, Millis::from_u64(0)).unwrap_err();
        assert_eq!(e, PeerSyncError::Seal(SealError::Tampered));
        assert_eq!(e.code(), ErrorCode::Forbidden);
        // One bit flipped.
        let mut s = v["box"].as_str().unwrap().to_owned();
        let last = s.pop().unwrap();
        s.push(if last == 'A' { 'B' } else { 'A' });
        let bad = json!({"type": SEALED_SYNC_TYPE, "box": s});
        assert!(matches!(
            b.open("a", &bad, Millis::from_u64(0)),
            Err(PeerSyncError::Seal(_))
        ));
        // Another room's key.
        let mut other = PeerSealer::new(RoomKey::new(8, [9; 32]), "r", "a", [3; 16]);
        assert_eq!(
            b.open(
                "a",
                &other.seal(&change(1, 1)).unwrap(),
                Millis::from_u64(0)
            ),
            Err(PeerSyncError::Seal(SealError::ForeignKey(8)))
        );
        // Not sealed at all.
        let e = b
            .open("a", &json!({"type": "sync-state"}), Millis::from_u64(0))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadPayload);
    }

    /// A member holding the room key seals a change in the DJ's name and sends it over its
    /// own link: receivers name the link's member, so it does not open.
    #[test]
    fn frame_sealed_in_another_members_name_fails() {
        let mut mallory = PeerSealer::new(key(), "r", "dj", [4; 16]);
        let mut b = PeerSealer::new(key(), "r", "b", [2; 16]);
        let forged = mallory.seal(&change(1, 1)).unwrap();
        assert_eq!(
            b.open("mallory", &forged, Millis::from_u64(0)),
            Err(PeerSyncError::Seal(SealError::Tampered))
        );
    }

    fn key2() -> RoomKey {
        RoomKey::new(8, [10; 32])
    }

    /// After a rotation: the sender seals under the new key at once; the previous key opens
    /// in-flight frames for the grace only, and never from a member that left; a member
    /// without the new key opens nothing sealed under it.
    #[test]
    fn rotation_grace_and_leavers() {
        let mut a = PeerSealer::new(key(), "r", "a", [1; 16]);
        let mut b = PeerSealer::new(key(), "r", "b", [2; 16]);
        let mut gone = PeerSealer::new(key(), "r", "gone", [3; 16]);
        // In flight under the old key while the new one is handed out.
        let old_a = a.seal(&change(1, 1)).unwrap();
        let old_a2 = a.seal(&change(1, 2)).unwrap();
        let old_gone = gone.seal(&change(1, 3)).unwrap();
        b.handle_peer_left("gone");
        assert!(b.handle_room_key(key2(), "b", [12; 16], Millis::from_u64(1_000)));
        assert!(a.handle_room_key(key2(), "a", [11; 16], Millis::from_u64(1_100)));
        assert!(
            !a.handle_room_key(key2(), "a", [13; 16], Millis::from_u64(1_200)),
            "repeat: no change"
        );
        assert_eq!(a.key_id(), 8);
        // Within the grace: the old key still opens a's frame, never the leaver's.
        assert!(b
            .open("a", &old_a, Millis::from_u64(1_000 + KEY_GRACE_MS - 1))
            .is_ok());
        assert_eq!(
            b.open("gone", &old_gone, Millis::from_u64(1_001)),
            Err(PeerSyncError::Seal(SealError::ExpiredKey(7)))
        );
        // After the grace the previous key is refused.
        assert_eq!(
            b.open("a", &old_a2, Millis::from_u64(1_000 + KEY_GRACE_MS)),
            Err(PeerSyncError::Seal(SealError::ExpiredKey(7)))
        );
        // New frames are under the new key: b opens them, the leaver cannot.
        let new_a = a.seal(&change(1, 4)).unwrap();
        let env = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(new_a["box"].as_str().unwrap())
            .unwrap();
        assert_eq!(seal::Header::parse(&env).unwrap().key_id, 8);
        assert!(b.open("a", &new_a, Millis::from_u64(20_000)).is_ok());
        assert_eq!(
            gone.open("a", &new_a, Millis::from_u64(20_000)),
            Err(PeerSyncError::Seal(SealError::ForeignKey(8)))
        );
        // A later rotation forgets the key before the previous one entirely.
        b.handle_room_key(
            RoomKey::new(9, [11; 32]),
            "b",
            [14; 16],
            Millis::from_u64(30_000),
        );
        let mut late = PeerSealer::new(key(), "r", "a", [15; 16]);
        assert_eq!(
            b.open(
                "a",
                &late.seal(&change(1, 5)).unwrap(),
                Millis::from_u64(30_001)
            ),
            Err(PeerSyncError::Seal(SealError::ForeignKey(7)))
        );
    }

    /// A new member id under the same key (the server restarted under this member) gets a new
    /// sealer instance: peers open its frames under the new name only.
    #[test]
    fn new_member_id_new_instance() {
        let mut a = PeerSealer::new(key(), "r", "a", [1; 16]);
        let mut b = PeerSealer::new(key(), "r", "b", [2; 16]);
        assert!(a.handle_room_key(key(), "a2", [3; 16], Millis::from_u64(0)));
        assert_eq!(a.me(), "a2");
        let v = a.seal(&change(1, 1)).unwrap();
        assert!(b.open("a2", &v, Millis::from_u64(0)).is_ok());
        assert!(b.open("a", &v, Millis::from_u64(0)).is_err());
    }

    #[test]
    fn acceptance_rule() {
        let claim = Claim::new(3, "a");
        let c = |epoch| MusicControl::new(MusicAction::Play, MusicControlData::default(), epoch, 1);
        assert_eq!(check_change(&claim, "a", &c(3)), Ok(false));
        assert_eq!(check_change(&claim, "b", &c(4)), Ok(true));
        let stale = check_change(&claim, "a", &c(2)).unwrap_err();
        assert_eq!(stale.code(), ErrorCode::EpochMismatch);
        let usurper = check_change(&claim, "b", &c(3)).unwrap_err();
        assert_eq!(usurper.code(), ErrorCode::NotController);
    }

    #[test]
    fn claim_round_trips_as_json() {
        let m = PeerSync::Claim {
            claim: Claim::new(2, "b"),
            state: None,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "claim");
        assert_eq!(serde_json::from_value::<PeerSync>(v).unwrap(), m);
    }
}
