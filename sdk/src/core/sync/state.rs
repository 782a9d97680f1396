//! The shared playback state of a music room, the seed 004 messages that carry it, and the
//! authority that orders changes to it (issue #4 "Protocol"; seed 004 §2.1 "Message Format",
//! §3.2 `sync-state`, "Challenge 3: Split Brain").
//!
//! # Shared state, not only commands
//! [`RoomState`] is `(trackId, track, isPlaying, position at a reference time on the shared
//! clock, playbackRate, controllerId, epoch, sequence)`. It *takes effect* at its reference
//! time `referenceTime` (server ms), which for a change is the change's `applyAt`: every device
//! switches at the same instant of the shared clock, and any device can compute where playback
//! is at any instant with [`RoomState::position_at`] (the seed's `calculateSyncPosition`, built
//! on the shared clock instead of two unsynchronized `Date.now()`s).
//!
//! # Messages (Sync lane, any encoding; JSON shape shown)
//! - `music-control` (seed 004 §2.1) from the controller, resolved and stamped by the
//!   authority: `{type, action, data {position, trackId, track, timestamp, from, controllerId,
//!   to}, sequence, epoch, applyAt, signature}`. `action` is `play | pause | seek |
//!   change-track` (seed) or `handover` (ours, with `data.to`). `epoch`, `applyAt` and `to` are
//!   ours; `signature` is kept for issue #5's tamper detection.
//! - `sync-state` (seed 004 §3.2) `{type, data: RoomState}`: the state after every change and
//!   for every joiner.
//!
//! # Ordering
//! Every change carries `(epoch, sequence)`. `epoch` counts controller changes (handover,
//! controller left, issue #5's elections); `sequence` counts the controller's changes within its
//! epoch, starting at 1. A receiver applies a change or state only if its `(epoch, sequence)`
//! is greater (lexicographically) than the last one it applied: duplicates and out-of-order
//! deliveries are ignored, and a controller from a superseded epoch cannot change anything.
//!
//! [`RoomAuthority`] is the sans-IO authority: server-stub runs one per music room; in issue #5
//! the elected peer runs the same code.
//!
//! # Numbers a client sends (issue 11)
//! Every epoch, sequence and `localSeq` a client sends is at most [`MAX_SAFE_INTEGER`]
//! (2^53 − 1, the largest integer a JavaScript number holds exactly), and an epoch a device
//! reports may be at most [`MAX_EPOCH_JUMP`] above the room's ([`check_epoch_jump`]);
//! otherwise the message is refused with [`SyncError::OutOfRange`] (`out_of_range`) before it
//! changes anything. Every increment is checked: a room's epoch never wraps and never goes
//! backwards.

use crate::core::error::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// `type` of a controller's change (seed 004 §2.1).
pub const MUSIC_CONTROL_TYPE: &str = "music-control";
/// `type` of a full state message (seed 004 §3.2).
pub const SYNC_STATE_TYPE: &str = "sync-state";

/// Largest epoch, sequence or `localSeq` accepted from a client: 2^53 − 1, JavaScript's
/// `Number.MAX_SAFE_INTEGER` (a larger number does not survive a JS client). Larger ones are
/// [`SyncError::OutOfRange`]. A room's own epoch stays at or below it too.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// How far above the room's epoch a device may report an epoch (`music-changes` `epoch`, a
/// change's epoch; PROTOCOL.md §13.9): 1,000,000. Epochs grow by one per handover, departure of
/// the controller or election, so a real device is never that far ahead; a report further
/// ahead is [`SyncError::OutOfRange`]. A fresh room's reseed (§13.14) is not bounded by it, only
/// by [`MAX_SAFE_INTEGER`]. With it, the room's epoch needs at least 9 × 10^9 pushes to reach
/// [`MAX_SAFE_INTEGER`].
pub const MAX_EPOCH_JUMP: u64 = 1_000_000;

/// Checks a client-supplied number against [`MAX_SAFE_INTEGER`]; `what` names it in the error.
///
/// Errors: [`SyncError::OutOfRange`].
pub fn check_safe(what: &'static str, got: u64) -> Result<u64, SyncError> {
    if got > MAX_SAFE_INTEGER {
        return Err(SyncError::OutOfRange {
            what,
            got,
            max: MAX_SAFE_INTEGER,
        });
    }
    Ok(got)
}

/// Checks an epoch `seen` that a device reports to a room at epoch `room`: the room will move
/// to `seen + 1`, which must stay at or below [`MAX_SAFE_INTEGER`], and `seen` must be at most
/// [`MAX_EPOCH_JUMP`] above `room`.
///
/// Errors: [`SyncError::OutOfRange`] (its `max` is the largest acceptable epoch).
pub fn check_epoch_jump(seen: u64, room: u64) -> Result<(), SyncError> {
    let max = room
        .saturating_add(MAX_EPOCH_JUMP)
        .min(MAX_SAFE_INTEGER - 1);
    if seen > max {
        return Err(SyncError::OutOfRange {
            what: "epoch",
            got: seen,
            max,
        });
    }
    Ok(())
}

/// The epoch after `epoch` (a handover, the controller leaving, a raise).
///
/// Errors: [`SyncError::OutOfRange`] at [`MAX_SAFE_INTEGER`].
fn next_epoch(epoch: u64) -> Result<u64, SyncError> {
    epoch
        .checked_add(1)
        .filter(|e| *e <= MAX_SAFE_INTEGER)
        .ok_or(SyncError::OutOfRange {
            what: "epoch",
            got: epoch,
            max: MAX_SAFE_INTEGER - 1,
        })
}

/// Times in ms on the wire (PROTOCOL.md §12.2): a whole number of ms is written as a JSON
/// integer (`1735689600031`, not `1735689600031.0`), anything else as a float. Reading accepts
/// both.
mod whole_ms {
    use super::MAX_SAFE_INTEGER;
    use serde::Serializer;

    /// Writes `ms` as an integer when it is whole and within ±[`MAX_SAFE_INTEGER`].
    pub(super) fn serialize<S: Serializer>(ms: &f64, s: S) -> Result<S::Ok, S::Error> {
        if ms.fract() == 0.0 && ms.abs() <= MAX_SAFE_INTEGER as f64 {
            // Exact: a whole f64 within 2^53 is an i64 without rounding.
            s.serialize_i64(*ms as i64)
        } else {
            s.serialize_f64(*ms)
        }
    }

    /// [`serialize`] for an optional time (callers skip `None`).
    pub(super) fn option<S: Serializer>(ms: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => serialize(ms, s),
            None => s.serialize_none(),
        }
    }
}

/// Why a change was refused. The code each maps to is [`SyncError::code`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The sender is not the room's current controller (`not_controller`).
    #[error("{from} is not the controller (controller: {})", .controller.as_deref().unwrap_or("none"))]
    NotController {
        /// Who sent the change.
        from: String,
        /// The current controller, if any.
        controller: Option<String>,
    },
    /// The change names an epoch ahead of the room's: the sender's view of who controls the
    /// room differs from the authority's (`epoch_mismatch`). It should resync from `sync-state`.
    #[error("change names epoch {got}, the room is at epoch {current}")]
    EpochMismatch {
        /// The change's epoch.
        got: u64,
        /// The room's epoch.
        current: u64,
    },
    /// A well-formed message whose fields do not make a valid change, e.g. `seek` without a
    /// position or an unknown action (`invalid_argument`).
    #[error("invalid change: {0}")]
    InvalidArgument(String),
    /// A value that is not a sync message of the expected shape (`bad_payload`).
    #[error("not a sync message: {0}")]
    BadMessage(String),
    /// A number out of range (`out_of_range`): above [`MAX_SAFE_INTEGER`], an epoch more than
    /// [`MAX_EPOCH_JUMP`] above the room's, or a counter that would pass
    /// [`MAX_SAFE_INTEGER`].
    #[error("{what} {got} is out of range (at most {max})")]
    OutOfRange {
        /// Which number (`epoch`, `sequence`, `localSeq`, ...).
        what: &'static str,
        /// The number given (or the counter that cannot grow).
        got: u64,
        /// The largest acceptable value.
        max: u64,
    },
}

impl SyncError {
    /// The machine-readable code (Control `error.code`, the JS error's `.code`).
    pub fn code(&self) -> ErrorCode {
        match self {
            SyncError::NotController { .. } => ErrorCode::NotController,
            SyncError::EpochMismatch { .. } => ErrorCode::EpochMismatch,
            SyncError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            SyncError::BadMessage(_) => ErrorCode::BadPayload,
            SyncError::OutOfRange { .. } => ErrorCode::OutOfRange,
        }
    }
}

/// `action` of a `music-control` message. Serialized as its kebab-case name; unknown names are
/// kept as [`MusicAction::Other`] (and refused by [`RoomState::apply`]), not a decode error.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum MusicAction {
    /// Start (or keep) playing, from `data.position` if given (s).
    Play,
    /// Pause at the room's position at `applyAt`.
    Pause,
    /// Jump to `data.position` (s), keeping play/pause.
    Seek,
    /// Switch to `data.trackId` (with `data.track`), from `data.position` or 0, keeping
    /// play/pause.
    ChangeTrack,
    /// Hand the controller role to `data.to` (ours). With no controller, anyone may claim the
    /// role by handing it to themselves.
    Handover,
    /// A name this version does not know.
    Other(String),
}

impl MusicAction {
    /// The wire name, e.g. `"change-track"`.
    pub fn as_str(&self) -> &str {
        match self {
            MusicAction::Play => "play",
            MusicAction::Pause => "pause",
            MusicAction::Seek => "seek",
            MusicAction::ChangeTrack => "change-track",
            MusicAction::Handover => "handover",
            MusicAction::Other(s) => s,
        }
    }
}

impl From<String> for MusicAction {
    fn from(s: String) -> Self {
        match s.as_str() {
            "play" => MusicAction::Play,
            "pause" => MusicAction::Pause,
            "seek" => MusicAction::Seek,
            "change-track" => MusicAction::ChangeTrack,
            "handover" => MusicAction::Handover,
            _ => MusicAction::Other(s),
        }
    }
}

impl From<MusicAction> for String {
    fn from(a: MusicAction) -> String {
        a.as_str().to_owned()
    }
}

impl fmt::Display for MusicAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `data` of a `music-control` message (seed 004 §2.1, plus `to`). Every field is optional on
/// the wire; which ones an action needs is on [`MusicAction`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MusicControlData {
    /// Track position, s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<f64>,
    /// Track identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<String>,
    /// Full track data for sync (seed: `track: {...}`), e.g. `{id, title, url, duration}`
    /// (`duration` in s, if present, bounds [`RoomState::position_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Value>,
    /// The sender's wall clock when it sent the change (seed: `Date.now()`), ms since the Unix
    /// epoch, a JSON integer (PROTOCOL.md §12.2). Informational: ordering uses `(epoch,
    /// sequence)`, timing uses `applyAt`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_ms::option"
    )]
    pub timestamp: Option<f64>,
    /// Sender id. The authority overwrites it with the transport's authenticated identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The controller (DJ) the sender believes in; the authority sets the actual one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_id: Option<String>,
    /// Set by the authority: the identity holding the DJ role ([`RoomState::controller_identity`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_identity: Option<String>,
    /// `handover` target (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// A `music-control` message (seed 004 §2.1) without its `type` tag (see [`SyncMessage`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MusicControl {
    /// What to do.
    pub action: MusicAction,
    /// Its arguments.
    #[serde(default)]
    pub data: MusicControlData,
    /// The controller's change counter within `epoch`, from 1 (seed: "message ordering").
    pub sequence: u64,
    /// Controller epoch the change was made in (ours).
    #[serde(default)]
    pub epoch: u64,
    /// When the change takes effect, server ms since the Unix epoch; set by the authority.
    /// Written as a JSON integer when whole (the server's always are; PROTOCOL.md §12.2).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "whole_ms::option"
    )]
    pub apply_at: Option<f64>,
    /// Seed's tamper-detection field; issue #5 fills and checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl MusicControl {
    /// A change `action` with `data`, stamped `(epoch, sequence)`.
    pub fn new(action: MusicAction, data: MusicControlData, epoch: u64, sequence: u64) -> Self {
        MusicControl {
            action,
            data,
            sequence,
            epoch,
            apply_at: None,
            signature: None,
        }
    }
}

/// A message of a music room on the Sync lane, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SyncMessage {
    /// `{type: "music-control", action, data, sequence, epoch, applyAt}`.
    MusicControl(MusicControl),
    /// `{type: "sync-state", data: RoomState}`.
    SyncState {
        /// The room's state.
        data: RoomState,
    },
}

impl SyncMessage {
    /// The JSON value (camelCase fields) to send on the Sync lane.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("sync messages are plain JSON")
    }

    /// Reads a received value. Errors: [`SyncError::BadMessage`] (`bad_payload`) for another
    /// `type` or a wrong shape.
    pub fn from_value(value: Value) -> Result<SyncMessage, SyncError> {
        serde_json::from_value(value).map_err(|e| SyncError::BadMessage(e.to_string()))
    }
}

/// The shared playback state of a room (module docs). Positions in s, times in server ms
/// (shared clock, ms since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomState {
    /// Current track, if any.
    pub track_id: Option<String>,
    /// Full track data (seed: `track: {...}`), e.g. `{id, title, url, duration}`.
    #[serde(default)]
    pub track: Option<Value>,
    /// Playing (true) or paused.
    pub is_playing: bool,
    /// Track position at `ref_server_ms`, s.
    #[serde(rename = "position")]
    pub position_s: f64,
    /// The reference time: when this state takes effect and `position_s` holds, server ms.
    /// Written as a JSON integer when whole (the server's always are; PROTOCOL.md §12.2).
    #[serde(rename = "referenceTime", serialize_with = "whole_ms::serialize")]
    pub ref_server_ms: f64,
    /// Playback rate (1 = normal speed), a number that may carry a fraction, written as a
    /// float (`1.0`; PROTOCOL.md §12.2).
    pub playback_rate: f64,
    /// The controller (DJ), if any: the session (member) id of its current session.
    pub controller_id: Option<String>,
    /// The identity the DJ role belongs to (`"<kind>:<id>"`, [`crate::core::auth::Identity::key`];
    /// PROTOCOL.md §13.15), if it belongs to a verified identity. It can be set while
    /// `controller_id` is null: the DJ's identity is away but within the grace, and gets the
    /// role back when one of its sessions joins. Absent on the wire when null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_identity: Option<String>,
    /// Controller epoch of the last change.
    pub epoch: u64,
    /// Sequence of the last change within `epoch` (0: none yet).
    pub sequence: u64,
}

impl RoomState {
    /// An empty room at server time `now_ms`: no track, paused at 0, rate 1, no controller,
    /// version (0, 0).
    pub fn new(now_ms: f64) -> RoomState {
        RoomState {
            track_id: None,
            track: None,
            is_playing: false,
            position_s: 0.0,
            ref_server_ms: now_ms,
            playback_rate: 1.0,
            controller_id: None,
            controller_identity: None,
            epoch: 0,
            sequence: 0,
        }
    }

    /// Whether this state can seed a fresh room (PROTOCOL.md §13.14): position and reference
    /// time finite, position at or above 0, rate a positive finite number, epoch below and
    /// sequence at most [`MAX_SAFE_INTEGER`].
    ///
    /// Errors: [`SyncError::InvalidArgument`] naming the fields otherwise;
    /// [`SyncError::OutOfRange`] for the epoch or sequence.
    pub fn check_seed(&self) -> Result<(), SyncError> {
        if self.epoch >= MAX_SAFE_INTEGER {
            return Err(SyncError::OutOfRange {
                what: "seed epoch",
                got: self.epoch,
                max: MAX_SAFE_INTEGER - 1,
            });
        }
        check_safe("seed sequence", self.sequence)?;
        let valid = self.position_s.is_finite()
            && self.position_s >= 0.0
            && self.ref_server_ms.is_finite()
            && self.playback_rate.is_finite()
            && self.playback_rate > 0.0;
        if valid {
            return Ok(());
        }
        Err(SyncError::InvalidArgument(format!(
            "seed: position {}, referenceTime {}, playbackRate {}",
            self.position_s, self.ref_server_ms, self.playback_rate
        )))
    }

    /// `(epoch, sequence)`, ordered lexicographically.
    pub fn version(&self) -> (u64, u64) {
        (self.epoch, self.sequence)
    }

    /// The track's duration in s, when `track.duration` is a positive number.
    pub fn duration_s(&self) -> Option<f64> {
        self.track
            .as_ref()
            .and_then(|t| t.get("duration"))
            .and_then(Value::as_f64)
            .filter(|d| d.is_finite() && *d > 0.0)
    }

    /// Track position (s) at shared-clock time `server_ms`, for `server_ms` at or after the
    /// reference time: `position + (server_ms − referenceTime) / 1000 × playbackRate` while
    /// playing, `position` while paused; never below 0 or past the track's duration.
    pub fn position_at(&self, server_ms: f64) -> f64 {
        let mut p = self.position_s;
        if self.is_playing {
            p += (server_ms - self.ref_server_ms) / 1000.0 * self.playback_rate;
        }
        let p = p.max(0.0);
        self.duration_s().map_or(p, |d| p.min(d))
    }

    /// The state after `change` takes effect at `apply_at_ms` (server ms), stamped with the
    /// change's `(epoch, sequence)`. A pure transition: it checks the arguments, not who sent
    /// the change (that is [`RoomAuthority::handle_control`]).
    ///
    /// Errors: [`SyncError::InvalidArgument`] for a missing or negative/non-finite position
    /// (`seek`), a missing `trackId` (`change-track`), a missing `to` (`handover`) or an unknown
    /// action.
    pub fn apply(&self, change: &MusicControl, apply_at_ms: f64) -> Result<RoomState, SyncError> {
        let d = &change.data;
        if let Some(p) = d.position {
            if !p.is_finite() || p < 0.0 {
                return Err(SyncError::InvalidArgument(format!("position {p}")));
            }
        }
        let mut next = self.clone();
        next.position_s = self.position_at(apply_at_ms);
        next.ref_server_ms = apply_at_ms;
        next.epoch = change.epoch;
        next.sequence = change.sequence;
        match &change.action {
            MusicAction::Play => {
                next.is_playing = true;
                if let Some(p) = d.position {
                    next.position_s = p;
                }
            }
            MusicAction::Pause => next.is_playing = false,
            MusicAction::Seek => {
                next.position_s = d
                    .position
                    .ok_or_else(|| SyncError::InvalidArgument("seek needs data.position".into()))?;
            }
            MusicAction::ChangeTrack => {
                let id = d.track_id.clone().ok_or_else(|| {
                    SyncError::InvalidArgument("change-track needs data.trackId".into())
                })?;
                next.track_id = Some(id);
                next.track = d.track.clone();
                next.position_s = d.position.unwrap_or(0.0);
            }
            MusicAction::Handover => {
                // Playback is untouched: keep the reference time of the state in force.
                next.position_s = self.position_s;
                next.ref_server_ms = self.ref_server_ms;
                next.controller_id =
                    Some(d.to.clone().ok_or_else(|| {
                        SyncError::InvalidArgument("handover needs data.to".into())
                    })?);
            }
            MusicAction::Other(a) => {
                return Err(SyncError::InvalidArgument(format!("unknown action {a:?}")))
            }
        }
        Ok(next)
    }
}

/// The controller side's stamping of changes: remembers the last `(epoch, sequence)` it used so
/// that two changes sent before the first comes back still get increasing sequences.
#[derive(Clone, Debug, Default)]
pub struct ControlStamper {
    last: (u64, u64),
}

impl ControlStamper {
    /// A stamper that has sent nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// A change `action` with `data`, stamped with `state`'s epoch and the next sequence.
    pub fn stamp(
        &mut self,
        state: &RoomState,
        action: MusicAction,
        data: MusicControlData,
    ) -> MusicControl {
        // Saturating: the numbers come from the server; at the cap the authority refuses the
        // change (`out_of_range`) instead of this side wrapping or panicking.
        let seq = if self.last.0 == state.epoch {
            self.last.1.max(state.sequence).saturating_add(1)
        } else {
            state.sequence.saturating_add(1)
        };
        self.last = (state.epoch, seq);
        MusicControl::new(action, data, state.epoch, seq)
    }
}

/// Default [`AuthorityConfig::dj_grace_ms`]: 30 s, longer than the SDK's reconnect backoff
/// and a server restart, short enough that a vanished DJ does not hold a party hostage.
pub const DEFAULT_DJ_GRACE_MS: f64 = 30_000.0;

/// Who the DJ role belongs to across sessions (PROTOCOL.md §13.15): a verified identity key,
/// and since when none of its sessions has been in the room (server ms), if so.
#[derive(Clone, Debug, PartialEq)]
struct DjBinding {
    identity: String,
    absent_since_ms: Option<f64>,
}

/// Tuning of [`RoomAuthority`]'s lead time, ms.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthorityConfig {
    /// Smallest lead between receiving a change and its `applyAt`, ms.
    pub min_lead_ms: f64,
    /// Largest lead, ms: a member slower than this applies changes late (and catches up).
    pub max_lead_ms: f64,
    /// Added to the slowest member's one-way estimate: covers the media element's start
    /// latency (the follower starts early by that much) and processing, ms.
    pub lead_margin_ms: f64,
    /// RTT assumed for a member that has not reported one, ms.
    pub unknown_rtt_ms: f64,
    /// How long the DJ role stays with an identity none of whose sessions is in the room,
    /// unless it left explicitly, ms (PROTOCOL.md §13.15; server `--dj-grace-s`).
    pub dj_grace_ms: f64,
}

impl Default for AuthorityConfig {
    fn default() -> Self {
        AuthorityConfig {
            min_lead_ms: 50.0,
            max_lead_ms: 500.0,
            lead_margin_ms: 80.0,
            unknown_rtt_ms: 200.0,
            dj_grace_ms: DEFAULT_DJ_GRACE_MS,
        }
    }
}

/// RTT estimate of one member (RFC 6298 smoothing), ms.
#[derive(Clone, Copy, Debug, PartialEq)]
struct MemberRtt {
    srtt: f64,
    rttvar: f64,
}

/// What [`RoomAuthority::handle_control`] decided about an acceptable change.
// `Applied` is the common case and is moved straight to the broadcaster: boxing it would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The change was applied: broadcast `state` (as `sync-state`) and, for apps that show
    /// actions, `control` (resolved: `data.position`, `data.trackId`, `data.from`,
    /// `data.controllerId` and `applyAt` filled in) to every member.
    Applied {
        /// The change as resolved by the authority.
        control: MusicControl,
        /// The room state it produced (takes effect at `control.apply_at`).
        state: RoomState,
    },
    /// A duplicate or out-of-order change (its `(epoch, sequence)` is not newer): nothing to
    /// do.
    Ignored,
}

/// The authority for one music room (module docs). Sans-IO: the caller passes the
/// authenticated sender, the message and the shared clock's `now` (server ms), and broadcasts
/// what comes back.
///
/// # Drive contract
/// - [`RoomAuthority::join`] / [`RoomAuthority::leave`] on membership changes; send the
///   returned `sync-state` to the joiner, and broadcast what `leave` returns.
/// - [`RoomAuthority::update_member_rtt`] with each RTT measured for a member (from its clock
///   probes or WebSocket pings).
/// - [`RoomAuthority::handle_control`] for each `music-control`; broadcast
///   [`Decision::Applied`], answer errors to the sender with their [`SyncError::code`].
#[derive(Clone, Debug)]
pub struct RoomAuthority {
    config: AuthorityConfig,
    state: RoomState,
    members: BTreeMap<String, Option<MemberRtt>>,
    /// Verified identity key of each member that has one.
    identities: BTreeMap<String, String>,
    /// The identity holding the DJ role, if a verified one does.
    dj: Option<DjBinding>,
    /// A playback change (not a handover) or a reseed was applied: the room is live and
    /// [`RoomAuthority::reseed`] refuses (PROTOCOL.md §13.14).
    live: bool,
}

impl RoomAuthority {
    /// An empty room at server time `now_ms`.
    pub fn new(config: AuthorityConfig, now_ms: f64) -> RoomAuthority {
        RoomAuthority {
            config,
            state: RoomState::new(now_ms),
            members: BTreeMap::new(),
            identities: BTreeMap::new(),
            dj: None,
            live: false,
        }
    }

    /// The current state (possibly taking effect in the future, at its reference time).
    pub fn state(&self) -> &RoomState {
        &self.state
    }

    /// The `sync-state` message every joiner gets at once.
    pub fn snapshot(&self) -> SyncMessage {
        SyncMessage::SyncState {
            data: self.state.clone(),
        }
    }

    /// Member ids, sorted.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// `member` joined; returns the snapshot to send it.
    pub fn join(&mut self, member: &str) -> SyncMessage {
        self.members.entry(member.to_owned()).or_insert(None);
        self.snapshot()
    }

    /// `member` left. If it was the controller, the room has none (epoch + 1) and the new
    /// state is returned for broadcast; anyone may then claim the role (`handover` to self).
    /// At epoch [`MAX_SAFE_INTEGER`] (never reached in practice, see [`MAX_EPOCH_JUMP`]) the
    /// epoch stays and the sequence moves on instead, so the state is still newer.
    pub fn leave(&mut self, member: &str) -> Option<RoomState> {
        self.leave_at(member, true, self.state.ref_server_ms)
    }

    /// `member` joined with the verified identity key `identity` (`None`: unverified). Returns the snapshot for the joiner and, if the DJ role came back
    /// to its identity (PROTOCOL.md §13.15: the room's DJ identity, no controller in the room),
    /// the new state for every member (epoch + 1, sequence 0, `controllerId` the joiner).
    pub fn join_as(
        &mut self,
        member: &str,
        identity: Option<&str>,
    ) -> (SyncMessage, Option<RoomState>) {
        self.members.entry(member.to_owned()).or_insert(None);
        if let Some(id) = identity {
            self.identities.insert(member.to_owned(), id.to_owned());
        }
        let owner = self
            .dj
            .as_ref()
            .is_some_and(|d| Some(d.identity.as_str()) == identity);
        let vacant = self
            .state
            .controller_id
            .as_deref()
            .map_or(true, |c| !self.members.contains_key(c));
        let restored = (owner && vacant).then(|| self.install(member)).flatten();
        (self.snapshot(), restored)
    }

    /// Makes `member` the controller without a claim (its identity holds the role): epoch + 1,
    /// sequence 0. `None` at the epoch limit (the role stays vacant).
    fn install(&mut self, member: &str) -> Option<RoomState> {
        let epoch = next_epoch(self.state.epoch).ok()?;
        self.state.controller_id = Some(member.to_owned());
        self.state.epoch = epoch;
        self.state.sequence = 0;
        if let Some(d) = self.dj.as_mut() {
            d.absent_since_ms = None;
        }
        self.state.controller_identity = self.dj.as_ref().map(|d| d.identity.clone());
        Some(self.state.clone())
    }

    /// `member` left at server time `now_ms`; `explicit`: it said so (a `leave`, a `join` of
    /// another room, its session deleted) rather than vanished (socket or session expired,
    /// server gone). If it was the controller the role goes to another member session of the
    /// same identity, else the room has none (epoch + 1); the role stays with a verified
    /// identity that vanished for [`AuthorityConfig::dj_grace_ms`] and is released at once
    /// by an explicit leave or an unverified controller. Returns the new state to broadcast.
    pub fn leave_at(&mut self, member: &str, explicit: bool, now_ms: f64) -> Option<RoomState> {
        self.members.remove(member);
        let identity = self.identities.remove(member);
        if self.state.controller_id.as_deref() != Some(member) {
            return None;
        }
        let sibling = identity.as_ref().and_then(|id| {
            self.identities
                .iter()
                .find(|(m, i)| *i == id && self.members.contains_key(*m))
                .map(|(m, _)| m.clone())
        });
        if let Some(next) = sibling {
            if let Some(state) = self.install(&next) {
                return Some(state);
            }
        }
        self.state.controller_id = None;
        match (identity, explicit) {
            (Some(_), false) => {
                if let Some(d) = self.dj.as_mut() {
                    d.absent_since_ms = Some(now_ms);
                }
            }
            _ => self.dj = None,
        }
        self.state.controller_identity = self.dj.as_ref().map(|d| d.identity.clone());
        match next_epoch(self.state.epoch) {
            Ok(e) => {
                self.state.epoch = e;
                self.state.sequence = 0;
            }
            Err(_) => self.state.sequence = self.state.sequence.saturating_add(1),
        }
        Some(self.state.clone())
    }

    /// The identity key holding the DJ role, if a verified identity does (also while it is
    /// away within the grace).
    pub fn dj_identity(&self) -> Option<&str> {
        self.dj.as_ref().map(|d| d.identity.as_str())
    }

    /// After a server restart: the DJ role of this room belonged to `identity` at `epoch` (the
    /// state file, PROTOCOL.md §13.15). The room's epoch becomes at least `epoch` (never
    /// backwards) and the identity holds the role, away since `now_ms`: its first session
    /// to join is the controller; others' claims are refused for the grace.
    pub fn restore_dj(&mut self, identity: &str, epoch: u64, now_ms: f64) {
        self.state.epoch = self.state.epoch.max(epoch.min(MAX_SAFE_INTEGER - 1));
        self.dj = Some(DjBinding {
            identity: identity.to_owned(),
            absent_since_ms: Some(now_ms),
        });
        self.state.controller_identity = Some(identity.to_owned());
    }

    /// Whether the DJ binding stops a claim by `from` at `now_ms`: another identity holds it
    /// and is present or away for less than the grace. A binding past its grace is dropped.
    fn claim_blocked(&mut self, from: &str, now_ms: f64) -> Option<String> {
        let d = self.dj.as_ref()?;
        if self.identities.get(from) == Some(&d.identity) {
            return None;
        }
        let held = d
            .absent_since_ms
            .map_or(true, |t| now_ms - t < self.config.dj_grace_ms);
        if held {
            return Some(d.identity.clone());
        }
        self.dj = None;
        self.state.controller_identity = None;
        None
    }

    /// One RTT measurement of `member`, ms (non-finite or negative values are ignored).
    pub fn update_member_rtt(&mut self, member: &str, rtt_ms: f64) {
        if !rtt_ms.is_finite() || rtt_ms < 0.0 {
            return;
        }
        let slot = self.members.entry(member.to_owned()).or_insert(None);
        *slot = Some(match *slot {
            None => MemberRtt {
                srtt: rtt_ms,
                rttvar: rtt_ms / 2.0,
            },
            Some(m) => MemberRtt {
                srtt: 0.875 * m.srtt + 0.125 * rtt_ms,
                rttvar: 0.75 * m.rttvar + 0.25 * (m.srtt - rtt_ms).abs(),
            },
        });
    }

    /// When a change received at `now_ms` takes effect: `now_ms` + [`Self::lead_ms`], not
    /// before the current state's reference time. With a whole-ms clock (the server's) it is
    /// rounded up to a whole ms, so that it goes on the wire as an integer (PROTOCOL.md §12.2).
    fn apply_at(&self, now_ms: f64) -> f64 {
        let at = now_ms + self.lead_ms();
        let at = if now_ms.fract() == 0.0 { at.ceil() } else { at };
        at.max(self.state.ref_server_ms)
    }

    /// The lead between a change's arrival and its `applyAt`, ms:
    /// `max over members (srtt/2 + 2 × rttvar) + margin`, within `min_lead..=max_lead`. The
    /// slowest member's one-way delay with its jitter, plus room for the media element to
    /// start.
    pub fn lead_ms(&self) -> f64 {
        let unknown = self.config.unknown_rtt_ms;
        let slowest = self
            .members
            .values()
            .map(|m| m.map_or(unknown / 2.0, |m| m.srtt / 2.0 + 2.0 * m.rttvar))
            .fold(0.0, f64::max);
        (slowest + self.config.lead_margin_ms)
            .clamp(self.config.min_lead_ms, self.config.max_lead_ms)
    }

    /// A `music-control` from the authenticated member `from`, received at server time
    /// `now_ms`.
    ///
    /// Applies it if `from` is the controller and its `(epoch, sequence)` is newer than the
    /// room's, or if it is a `handover` while the room has no controller (a claim: the role
    /// goes to `from`, whatever `to` says, and the version is not checked); schedules it
    /// at `applyAt = max(now + lead, reference time of the state in force)`, so changes apply in
    /// order. Handovers take effect at once (epoch + 1, sequence 0).
    ///
    /// Errors: [`SyncError::OutOfRange`] for an epoch or sequence above [`MAX_SAFE_INTEGER`]
    /// (or a handover at that epoch), [`SyncError::NotController`] (also for a handover by a
    /// non-controller, or a claim while someone holds the role), [`SyncError::EpochMismatch`]
    /// for an epoch ahead of the room's, [`SyncError::InvalidArgument`] (see
    /// [`RoomState::apply`]; also a handover to a non-member).
    pub fn handle_control(
        &mut self,
        from: &str,
        change: &MusicControl,
        now_ms: f64,
    ) -> Result<Decision, SyncError> {
        check_safe("epoch", change.epoch)?;
        check_safe("sequence", change.sequence)?;
        let controller = self.state.controller_id.clone();
        let is_claim = controller.is_none() && change.action == MusicAction::Handover;
        if !is_claim && controller.as_deref() != Some(from) {
            return Err(SyncError::NotController {
                from: from.to_owned(),
                controller,
            });
        }
        if is_claim {
            if let Some(holder) = self.claim_blocked(from, now_ms) {
                return Err(SyncError::NotController {
                    from: from.to_owned(),
                    controller: Some(format!("identity {holder}")),
                });
            }
        }
        if !is_claim {
            if change.epoch > self.state.epoch {
                return Err(SyncError::EpochMismatch {
                    got: change.epoch,
                    current: self.state.epoch,
                });
            }
            if (change.epoch, change.sequence) <= self.state.version() {
                return Ok(Decision::Ignored);
            }
        }
        let mut resolved = change.clone();
        resolved.data.from = Some(from.to_owned());
        if change.action == MusicAction::Handover {
            let to =
                if is_claim {
                    from.to_owned()
                } else {
                    change.data.to.clone().ok_or_else(|| {
                        SyncError::InvalidArgument("handover needs data.to".into())
                    })?
                };
            if !self.members.contains_key(&to) {
                return Err(SyncError::InvalidArgument(format!(
                    "handover to {to}, who is not in the room"
                )));
            }
            resolved.data.to = Some(to.clone());
            resolved.epoch = self.state.epoch;
            let epoch = next_epoch(self.state.epoch)?;
            let mut next = self.state.apply(&resolved, now_ms)?;
            next.epoch = epoch;
            next.sequence = 0;
            resolved.epoch = next.epoch;
            resolved.sequence = 0;
            resolved.apply_at = Some(now_ms);
            // The role now belongs to the new controller's identity (none if unverified).
            self.dj = self.identities.get(&to).map(|id| DjBinding {
                identity: id.clone(),
                absent_since_ms: None,
            });
            next.controller_identity = self.dj.as_ref().map(|d| d.identity.clone());
            resolved.data.controller_id = next.controller_id.clone();
            resolved.data.controller_identity = next.controller_identity.clone();
            self.state = next.clone();
            return Ok(Decision::Applied {
                control: resolved,
                state: next,
            });
        }
        let apply_at = self.apply_at(now_ms);
        let next = self.state.apply(change, apply_at)?;
        resolved.apply_at = Some(apply_at);
        resolved.data.position = Some(next.position_s);
        resolved.data.track_id = next.track_id.clone();
        resolved.data.controller_id = next.controller_id.clone();
        resolved.data.controller_identity = next.controller_identity.clone();
        if change.action == MusicAction::ChangeTrack {
            resolved.data.track = next.track.clone();
        }
        self.state = next.clone();
        self.live = true;
        Ok(Decision::Applied {
            control: resolved,
            state: next,
        })
    }
}

impl RoomAuthority {
    /// Server-wins reconciliation (PROTOCOL.md §13.9): applies `op`, a change `origin` made
    /// while the server was away and that the room's change log accepted, whoever controls
    /// the room now. It is stamped with the room's epoch and the next sequence and scheduled
    /// like any change (`applyAt = max(now + lead, reference time in force)`); `data.from` is
    /// `origin`. A `handover` is [`Decision::Ignored`]: the server decides the controller.
    ///
    /// Errors: [`SyncError::InvalidArgument`] as [`RoomState::apply`];
    /// [`SyncError::OutOfRange`] when the room's sequence is at [`MAX_SAFE_INTEGER`].
    pub fn apply_offline(
        &mut self,
        origin: &str,
        op: &MusicControl,
        now_ms: f64,
    ) -> Result<Decision, SyncError> {
        if op.action == MusicAction::Handover {
            return Ok(Decision::Ignored);
        }
        let mut resolved = op.clone();
        resolved.epoch = self.state.epoch;
        resolved.sequence = self
            .state
            .sequence
            .checked_add(1)
            .filter(|s| *s <= MAX_SAFE_INTEGER)
            .ok_or(SyncError::OutOfRange {
                what: "sequence",
                got: self.state.sequence,
                max: MAX_SAFE_INTEGER - 1,
            })?;
        let apply_at = self.apply_at(now_ms);
        let next = self.state.apply(&resolved, apply_at)?;
        resolved.apply_at = Some(apply_at);
        resolved.data.from = Some(origin.to_owned());
        resolved.data.position = Some(next.position_s);
        resolved.data.track_id = next.track_id.clone();
        resolved.data.controller_id = next.controller_id.clone();
        resolved.data.controller_identity = next.controller_identity.clone();
        if op.action == MusicAction::ChangeTrack {
            resolved.data.track = next.track.clone();
        }
        self.state = next.clone();
        self.live = true;
        Ok(Decision::Applied {
            control: resolved,
            state: next,
        })
    }

    /// Moves the room's epoch above `seen`, an epoch a device reports (PROTOCOL.md §13.2:
    /// "the server moves its epoch above any epoch it is told about"), so the server's claim
    /// wins over every serverless one: epoch `seen + 1`, sequence 0, controller kept. Returns
    /// the new state to broadcast, or `Ok(None)` if the room's epoch was already above.
    ///
    /// Errors: [`SyncError::OutOfRange`] if `seen` is more than [`MAX_EPOCH_JUMP`] above the
    /// room's epoch or `seen + 1` above [`MAX_SAFE_INTEGER`] ([`check_epoch_jump`]); the room
    /// is unchanged.
    pub fn raise_epoch_above(&mut self, seen: u64) -> Result<Option<RoomState>, SyncError> {
        if seen < self.state.epoch {
            return Ok(None);
        }
        check_epoch_jump(seen, self.state.epoch)?;
        self.state.epoch = next_epoch(seen)?;
        self.state.sequence = 0;
        Ok(Some(self.state.clone()))
    }

    /// Whether the room is fresh: no playback change and no reseed applied since it was
    /// created (handovers do not count). A restarted server's rooms are fresh.
    pub fn is_fresh(&self) -> bool {
        !self.live
    }

    /// Re-seeds a fresh room with `seed`, the state a member followed before the server
    /// restarted (PROTOCOL.md §13.14). The room takes the seed's track, play/pause, position,
    /// reference time (shared-clock ms, which survives a restart) and rate; it keeps its own
    /// controller (session ids of the old server mean nothing here); its epoch becomes
    /// `max(room epoch, seed epoch) + 1`, sequence 0, so every device's follower takes it.
    /// Returns the new state to broadcast, or `Ok(None)` if the room is live (server wins:
    /// a live room's state is never overwritten).
    ///
    /// Errors: [`SyncError::InvalidArgument`] for a seed that is not a playable state
    /// (position or reference time not finite, position below 0, rate not a positive finite
    /// number); [`SyncError::OutOfRange`] for a seed epoch of [`MAX_SAFE_INTEGER`] or more or
    /// a sequence above it ([`RoomState::check_seed`]). A fresh room is not bound by
    /// [`MAX_EPOCH_JUMP`] (a restarted server starts at epoch 0).
    pub fn reseed(&mut self, seed: &RoomState) -> Result<Option<RoomState>, SyncError> {
        seed.check_seed()?;
        if self.live {
            return Ok(None);
        }
        let epoch = next_epoch(self.state.epoch.max(seed.epoch))?;
        self.state = RoomState {
            controller_id: self.state.controller_id.clone(),
            controller_identity: self.state.controller_identity.clone(),
            epoch,
            sequence: 0,
            ..seed.clone()
        };
        self.live = true;
        Ok(Some(self.state.clone()))
    }

    /// The durable part of the room (PROTOCOL.md §17 "Music rooms"): what another server
    /// needs to take the room over. Members and their RTTs are not in it (the new server
    /// learns them from its own view of the room).
    pub fn record(&self) -> AuthorityRecord {
        AuthorityRecord {
            state: self.state.clone(),
            dj_identity: self.dj.as_ref().map(|d| d.identity.clone()),
            dj_absent_since_ms: self.dj.as_ref().and_then(|d| d.absent_since_ms),
            live: self.live,
        }
    }

    /// A room taken over from `record` (another server's [`RoomAuthority::record`]), with no
    /// members yet: join them with [`RoomAuthority::join_as`].
    pub fn from_record(config: AuthorityConfig, record: AuthorityRecord) -> RoomAuthority {
        RoomAuthority {
            config,
            state: record.state,
            members: BTreeMap::new(),
            identities: BTreeMap::new(),
            dj: record.dj_identity.map(|identity| DjBinding {
                identity,
                absent_since_ms: record.dj_absent_since_ms,
            }),
            live: record.live,
        }
    }

    /// Moves the room's epoch to at least `floor` and past its own (epoch + 1, sequence 0,
    /// controller kept): a new authority's states are newer than every state the previous
    /// one issued (PROTOCOL.md §17). Returns the new state to broadcast.
    ///
    /// Errors: [`SyncError::OutOfRange`] at [`MAX_SAFE_INTEGER`] (the room is unchanged).
    pub fn fence_epoch(&mut self, floor: u64) -> Result<RoomState, SyncError> {
        let epoch = next_epoch(self.state.epoch)?.max(check_safe("epoch", floor)?);
        self.state.epoch = epoch;
        self.state.sequence = 0;
        Ok(self.state.clone())
    }
}

/// The durable part of a [`RoomAuthority`] ([`RoomAuthority::record`]), JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorityRecord {
    /// The room's state (track, position, playing, controller, epoch, sequence).
    pub state: RoomState,
    /// The identity key holding the DJ role, if a verified one does.
    pub dj_identity: Option<String>,
    /// Since when none of the DJ identity's sessions has been in the room, server ms.
    pub dj_absent_since_ms: Option<f64>,
    /// Whether a playback change or a reseed was applied ([`RoomAuthority::is_fresh`]).
    pub live: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: f64 = 1_735_689_600_000.0;

    #[test]
    fn reseed_only_into_a_fresh_room_and_epoch_raised() {
        let mut a = RoomAuthority::new(AuthorityConfig::default(), T0);
        a.join("dj");
        let claim = MusicControl::new(MusicAction::Handover, MusicControlData::default(), 0, 0);
        assert!(matches!(
            a.handle_control("dj", &claim, T0),
            Ok(Decision::Applied { .. })
        ));
        assert!(a.is_fresh(), "a handover does not make the room live");
        let mut seed = RoomState::new(T0 - 5000.0);
        seed.track_id = Some("a".into());
        seed.is_playing = true;
        seed.position_s = 10.0;
        seed.epoch = 7;
        seed.sequence = 3;
        seed.controller_id = Some("old-session".into());
        let mut bad = seed.clone();
        bad.playback_rate = 0.0;
        assert_eq!(
            a.reseed(&bad).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        assert!(a.is_fresh(), "a refused seed changes nothing");
        let s = a.reseed(&seed).unwrap().expect("fresh room takes the seed");
        assert_eq!((s.epoch, s.sequence), (8, 0));
        assert_eq!(s.controller_id.as_deref(), Some("dj"), "controller kept");
        assert_eq!((s.track_id.as_deref(), s.is_playing), (Some("a"), true));
        assert_eq!(
            s.position_at(T0),
            15.0,
            "position continues on the shared clock"
        );
        assert!(!a.is_fresh());
        let mut newer = seed.clone();
        newer.epoch = 99;
        newer.track_id = Some("b".into());
        assert_eq!(
            a.reseed(&newer),
            Ok(None),
            "server wins: a live room is never re-seeded"
        );
        assert_eq!(a.state(), &s);
        let mut b = RoomAuthority::new(AuthorityConfig::default(), T0);
        let seek = MusicControl::new(
            MusicAction::Seek,
            MusicControlData {
                position: Some(1.0),
                ..MusicControlData::default()
            },
            0,
            1,
        );
        assert!(matches!(
            b.apply_offline("d", &seek, T0),
            Ok(Decision::Applied { .. })
        ));
        assert_eq!(
            b.reseed(&seed),
            Ok(None),
            "an offline change makes the room live"
        );
    }

    #[test]
    fn offline_changes_apply_whoever_controls_and_epochs_only_rise() {
        let mut a = room_with_dj();
        let (e, s) = a.state().version();
        let seek = MusicControl::new(
            MusicAction::Seek,
            MusicControlData {
                position: Some(42.0),
                ..Default::default()
            },
            9,
            1,
        );
        let Ok(Decision::Applied { control, state }) = a.apply_offline("phone", &seek, T0) else {
            panic!("applied")
        };
        assert_eq!(
            (state.epoch, state.sequence),
            (e, s + 1),
            "stamped in the room"
        );
        assert_eq!(state.position_s, 42.0);
        assert_eq!(control.data.from.as_deref(), Some("phone"));
        let claim = MusicControl::new(MusicAction::Handover, MusicControlData::default(), 9, 2);
        assert_eq!(a.apply_offline("phone", &claim, T0), Ok(Decision::Ignored));
        assert_eq!(a.state().controller_id.as_deref(), Some("dj"));
        let bad = MusicControl::new(MusicAction::Seek, MusicControlData::default(), 9, 3);
        assert!(a.apply_offline("phone", &bad, T0).is_err());
        assert_eq!(a.raise_epoch_above(7).unwrap().map(|s| s.epoch), Some(8));
        assert_eq!(a.raise_epoch_above(3), Ok(None));
        assert_eq!(a.state().controller_id.as_deref(), Some("dj"));
    }

    fn out_of_range(r: Result<impl fmt::Debug, SyncError>) -> bool {
        matches!(r, Err(SyncError::OutOfRange { .. }))
    }

    #[test]
    fn client_epochs_are_bounded_and_never_wrap() {
        let mut a = room_with_dj();
        let e0 = a.state().epoch;
        // issue 11: u64::MAX used to be accepted, and the next handover wrapped to 0.
        for seen in [u64::MAX, MAX_SAFE_INTEGER, e0 + MAX_EPOCH_JUMP + 1] {
            let r = a.raise_epoch_above(seen);
            assert!(out_of_range(r.clone()), "{seen}: {r:?}");
            assert_eq!(r.unwrap_err().code(), ErrorCode::OutOfRange);
            assert_eq!(a.state().epoch, e0, "a refusal changes nothing");
        }
        let top = e0 + MAX_EPOCH_JUMP;
        assert_eq!(a.raise_epoch_above(top).unwrap().unwrap().epoch, top + 1);
        // Changes with numbers no JS client can send.
        for (epoch, sequence) in [(u64::MAX, 1), (1, u64::MAX), (MAX_SAFE_INTEGER + 1, 0)] {
            let r = a.handle_control("dj", &play(epoch, sequence, None), T0);
            assert!(out_of_range(r), "({epoch}, {sequence})");
        }
        assert_eq!(a.state().epoch, top + 1);
    }

    #[test]
    fn a_fresh_room_reseeds_up_to_the_cap_then_stops_counting() {
        let mut a = RoomAuthority::new(AuthorityConfig::default(), T0);
        a.join("dj");
        let mut seed = RoomState::new(T0);
        seed.epoch = u64::MAX;
        assert!(out_of_range(a.reseed(&seed)));
        seed.epoch = MAX_SAFE_INTEGER;
        assert!(out_of_range(a.reseed(&seed)));
        seed.epoch = 3;
        seed.sequence = u64::MAX;
        assert!(out_of_range(a.reseed(&seed)));
        assert!(a.is_fresh(), "refused seeds leave the room fresh");
        // A fresh room is not bound by MAX_EPOCH_JUMP, only by the cap.
        seed.epoch = MAX_SAFE_INTEGER - 1;
        seed.sequence = 0;
        assert_eq!(a.reseed(&seed).unwrap().unwrap().epoch, MAX_SAFE_INTEGER);
        // At the cap: no raise, no handover, no wrap; the offline sequence is checked too.
        assert!(out_of_range(a.raise_epoch_above(MAX_SAFE_INTEGER)));
        let claim = MusicControl::new(
            MusicAction::Handover,
            MusicControlData {
                to: Some("dj".into()),
                ..MusicControlData::default()
            },
            MAX_SAFE_INTEGER,
            1,
        );
        assert!(out_of_range(a.handle_control("dj", &claim, T0)));
        assert_eq!(a.state().epoch, MAX_SAFE_INTEGER);
        a.state.controller_id = Some("dj".into());
        let freed = a.leave("dj").unwrap();
        assert_eq!((freed.epoch, freed.sequence), (MAX_SAFE_INTEGER, 1));
        a.state.sequence = MAX_SAFE_INTEGER;
        assert!(out_of_range(a.apply_offline(
            "x",
            &play(0, 0, Some(1.0)),
            T0
        )));
        assert_eq!(a.state().sequence, MAX_SAFE_INTEGER);
        // The controller side saturates instead of panicking.
        let c =
            ControlStamper::new().stamp(a.state(), MusicAction::Pause, MusicControlData::default());
        assert_eq!(c.sequence, MAX_SAFE_INTEGER + 1);
        assert!(out_of_range(a.handle_control("dj", &c, T0)));
    }

    fn room_with_dj() -> RoomAuthority {
        let mut a = RoomAuthority::new(AuthorityConfig::default(), T0);
        a.join("dj");
        a.join("alice");
        let claim = MusicControl::new(MusicAction::Handover, MusicControlData::default(), 0, 1);
        assert!(matches!(
            a.handle_control("dj", &claim, T0),
            Ok(Decision::Applied { .. })
        ));
        a
    }

    fn play(epoch: u64, seq: u64, position: Option<f64>) -> MusicControl {
        MusicControl::new(
            MusicAction::Play,
            MusicControlData {
                position,
                ..Default::default()
            },
            epoch,
            seq,
        )
    }

    #[test]
    fn seed_message_round_trips_with_camel_case_fields() {
        let wire = json!({"type": "music-control", "action": "change-track",
            "data": {"position": 45.2, "trackId": "abc123", "track": {"id": "abc123", "duration": 215.4},
                     "timestamp": 1735689600123u64, "from": "user-17", "controllerId": "user-17"},
            "sequence": 156, "signature": "hash"});
        let msg = SyncMessage::from_value(wire.clone()).unwrap();
        let SyncMessage::MusicControl(c) = &msg else {
            panic!("{msg:?}")
        };
        assert_eq!(c.action, MusicAction::ChangeTrack);
        assert_eq!(c.data.track_id.as_deref(), Some("abc123"));
        assert_eq!(c.data.timestamp, Some(1735689600123.0));
        assert_eq!((c.epoch, c.sequence, c.apply_at), (0, 156, None));
        let back = msg.to_value();
        assert_eq!(back["type"], "music-control");
        assert_eq!(back["data"]["controllerId"], "user-17");
        assert_eq!(back["action"], "change-track");
        // Unknown actions are kept, and refused only when applied.
        let odd = SyncMessage::from_value(
            json!({"type": "music-control", "action": "shuffle", "sequence": 1}),
        )
        .unwrap();
        let SyncMessage::MusicControl(odd) = odd else {
            panic!()
        };
        assert_eq!(odd.action, MusicAction::Other("shuffle".into()));
        let err = RoomState::new(T0).apply(&odd, T0).unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        // A foreign type is a bad payload.
        let err = SyncMessage::from_value(json!({"type": "chat"})).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadPayload);
    }

    #[test]
    fn sync_state_wire_shape() {
        let mut s = RoomState::new(T0);
        s.track_id = Some("t1".into());
        s.is_playing = true;
        s.position_s = 12.5;
        let v = SyncMessage::SyncState { data: s.clone() }.to_value();
        assert_eq!(v["type"], "sync-state");
        assert_eq!(v["data"]["position"], 12.5);
        assert_eq!(v["data"]["referenceTime"], T0);
        assert_eq!(v["data"]["isPlaying"], true);
        assert_eq!(v["data"]["playbackRate"], 1.0);
        assert_eq!(
            SyncMessage::from_value(v).unwrap(),
            SyncMessage::SyncState { data: s }
        );
    }

    #[test]
    fn position_at_is_latency_aware_and_bounded() {
        let mut s = RoomState::new(T0);
        s.is_playing = true;
        s.position_s = 10.0;
        s.playback_rate = 1.5;
        assert_eq!(s.position_at(T0 + 2000.0), 13.0);
        s.track = Some(json!({"duration": 12.0}));
        assert_eq!(s.position_at(T0 + 2000.0), 12.0);
        s.is_playing = false;
        assert_eq!(s.position_at(T0 + 2000.0), 10.0);
    }

    #[test]
    fn changes_are_scheduled_after_the_lead_and_resolved() {
        let mut a = room_with_dj();
        a.update_member_rtt("dj", 100.0);
        a.update_member_rtt("alice", 300.0);
        // alice: 150 one-way + 2 × 150 rttvar + 80 margin = 530 → capped at 500.
        assert_eq!(a.lead_ms(), 500.0);
        for _ in 0..50 {
            a.update_member_rtt("alice", 300.0);
        }
        let lead = a.lead_ms();
        assert!((230.0..240.0).contains(&lead), "{lead}");
        let Decision::Applied { control, state } = a
            .handle_control("dj", &play(1, 1, Some(30.0)), T0 + 1000.0)
            .unwrap()
        else {
            panic!()
        };
        // A whole-ms clock (the server's) gives a whole-ms applyAt, rounded up.
        let at = (T0 + 1000.0 + lead).ceil();
        assert_eq!(control.apply_at, Some(at));
        assert_eq!(control.data.from.as_deref(), Some("dj"));
        assert_eq!(control.data.controller_id.as_deref(), Some("dj"));
        assert_eq!(control.data.position, Some(30.0));
        assert!(state.is_playing);
        assert_eq!(state.ref_server_ms, at);
        assert_eq!(state.position_at(at + 1000.0), 31.0);
        // A pause resolves to the room's position at its applyAt.
        let pause = MusicControl::new(MusicAction::Pause, MusicControlData::default(), 1, 2);
        let Decision::Applied { control, state } =
            a.handle_control("dj", &pause, T0 + 3000.0).unwrap()
        else {
            panic!()
        };
        assert!(!state.is_playing);
        assert!((control.data.position.unwrap() - 32.0).abs() < 1e-9);
    }

    #[test]
    fn lead_is_bounded_below() {
        let mut a = RoomAuthority::new(
            AuthorityConfig {
                lead_margin_ms: 0.0,
                ..Default::default()
            },
            T0,
        );
        a.join("x");
        for _ in 0..100 {
            a.update_member_rtt("x", 2.0);
        }
        assert_eq!(a.lead_ms(), 50.0);
    }

    #[test]
    fn stale_and_duplicate_changes_are_ignored() {
        let mut a = room_with_dj();
        assert!(matches!(
            a.handle_control("dj", &play(1, 5, None), T0).unwrap(),
            Decision::Applied { .. }
        ));
        // Duplicate and out-of-order.
        assert_eq!(
            a.handle_control("dj", &play(1, 5, None), T0).unwrap(),
            Decision::Ignored
        );
        assert_eq!(
            a.handle_control("dj", &play(1, 3, None), T0).unwrap(),
            Decision::Ignored
        );
        // Older epoch.
        assert_eq!(
            a.handle_control("dj", &play(0, 9, None), T0).unwrap(),
            Decision::Ignored
        );
        // An epoch from the future is a typed error.
        let err = a.handle_control("dj", &play(7, 1, None), T0).unwrap_err();
        assert_eq!(err.code(), ErrorCode::EpochMismatch);
        assert_eq!(a.state().version(), (1, 5));
    }

    #[test]
    fn non_controller_is_rejected() {
        let mut a = room_with_dj();
        let err = a
            .handle_control("alice", &play(1, 1, None), T0)
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotController);
        assert_eq!(err.code().as_str(), "not_controller");
        // Nor can she take the role while the DJ holds it.
        let grab = MusicControl::new(
            MusicAction::Handover,
            MusicControlData {
                to: Some("alice".into()),
                ..Default::default()
            },
            1,
            1,
        );
        assert_eq!(
            a.handle_control("alice", &grab, T0).unwrap_err().code(),
            ErrorCode::NotController
        );
        assert!(!a.state().is_playing);
    }

    #[test]
    fn handover_moves_the_role_and_bumps_the_epoch() {
        let mut a = room_with_dj();
        a.handle_control("dj", &play(1, 1, Some(5.0)), T0).unwrap();
        let mut stamper = ControlStamper::new();
        let hand = stamper.stamp(
            a.state(),
            MusicAction::Handover,
            MusicControlData {
                to: Some("alice".into()),
                ..Default::default()
            },
        );
        assert_eq!((hand.epoch, hand.sequence), (1, 2));
        let Decision::Applied { control, state } =
            a.handle_control("dj", &hand, T0 + 10.0).unwrap()
        else {
            panic!()
        };
        assert_eq!(state.controller_id.as_deref(), Some("alice"));
        assert_eq!(state.version(), (2, 0));
        assert_eq!((control.epoch, control.sequence), (2, 0));
        // Playback is untouched by the handover.
        assert!(state.is_playing);
        assert_eq!(state.position_s, 5.0);
        // The old DJ is now refused; alice's first change (2, 1) applies.
        assert_eq!(
            a.handle_control("dj", &play(1, 3, None), T0)
                .unwrap_err()
                .code(),
            ErrorCode::NotController
        );
        let seek = stamper.stamp(
            a.state(),
            MusicAction::Seek,
            MusicControlData {
                position: Some(42.0),
                ..Default::default()
            },
        );
        assert_eq!((seek.epoch, seek.sequence), (2, 1));
        assert!(matches!(
            a.handle_control("alice", &seek, T0 + 20.0).unwrap(),
            Decision::Applied { .. }
        ));
        // Handing over to a stranger is refused.
        let bad = MusicControl::new(
            MusicAction::Handover,
            MusicControlData {
                to: Some("mallory".into()),
                ..Default::default()
            },
            2,
            2,
        );
        assert_eq!(
            a.handle_control("alice", &bad, T0).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        // The controller leaving frees the role (epoch + 1); anyone may claim it.
        let freed = a.leave("alice").unwrap();
        assert_eq!(freed.controller_id, None);
        assert_eq!(freed.epoch, 3);
        let claim = MusicControl::new(MusicAction::Handover, MusicControlData::default(), 0, 0);
        let Decision::Applied { state, .. } = a.handle_control("dj", &claim, T0).unwrap() else {
            panic!()
        };
        assert_eq!(state.controller_id.as_deref(), Some("dj"));
        assert_eq!(state.version(), (4, 0));
    }

    #[test]
    fn late_joiner_gets_the_current_position() {
        let mut a = room_with_dj();
        let change = MusicControl::new(
            MusicAction::ChangeTrack,
            MusicControlData {
                track_id: Some("t2".into()),
                track: Some(json!({"id": "t2", "duration": 200.0})),
                ..Default::default()
            },
            1,
            1,
        );
        a.handle_control("dj", &change, T0).unwrap();
        let Decision::Applied { control, .. } = a
            .handle_control("dj", &play(1, 2, Some(20.0)), T0 + 100.0)
            .unwrap()
        else {
            panic!()
        };
        let start = control.apply_at.unwrap();
        let SyncMessage::SyncState { data } = a.join("late") else {
            panic!()
        };
        assert_eq!(data.track_id.as_deref(), Some("t2"));
        assert!(data.is_playing);
        // 61.5 s after the play took effect the joiner computes 81.5 s.
        assert!((data.position_at(start + 61_500.0) - 81.5).abs() < 1e-9);
        // Changes scheduled back to back apply in order, never before the one in force.
        let seek = MusicControl::new(
            MusicAction::Seek,
            MusicControlData {
                position: Some(1.0),
                ..Default::default()
            },
            1,
            3,
        );
        let Decision::Applied { control, .. } = a.handle_control("dj", &seek, T0).unwrap() else {
            panic!()
        };
        assert!(control.apply_at.unwrap() >= start);
    }

    fn claim() -> MusicControl {
        MusicControl::new(MusicAction::Handover, MusicControlData::default(), 0, 1)
    }

    /// A DJ with a verified identity: its next session is DJ again without claiming; another
    /// identity's claim is refused while it is away within the grace, allowed after; an
    /// explicit leave releases the role at once.
    #[test]
    fn the_dj_role_belongs_to_the_identity() {
        let mut a = RoomAuthority::new(AuthorityConfig::default(), T0);
        a.join_as("s1", Some("device:A"));
        a.join_as("s2", Some("device:B"));
        a.handle_control("s1", &claim(), T0).unwrap();
        assert_eq!(a.state().controller_identity.as_deref(), Some("device:A"));
        let e1 = a.state().epoch;
        // s1's socket vanishes: no controller, the role stays with device:A.
        let gone = a.leave_at("s1", false, T0 + 1.0).unwrap();
        assert_eq!(gone.controller_id, None);
        assert_eq!(gone.controller_identity.as_deref(), Some("device:A"));
        let refused = a.handle_control("s2", &claim(), T0 + 2.0).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::NotController);
        // device:A's new session is DJ again, without claiming.
        let (_, back) = a.join_as("s3", Some("device:A"));
        let back = back.expect("the role came back");
        assert_eq!(back.controller_id.as_deref(), Some("s3"));
        assert!(back.epoch > e1);
        // Gone longer than the grace: B's claim is taken.
        a.leave_at("s3", false, T0 + 10.0);
        let late = T0 + 10.0 + DEFAULT_DJ_GRACE_MS;
        a.handle_control("s2", &claim(), late).unwrap();
        assert_eq!(a.state().controller_identity.as_deref(), Some("device:B"));
        // An explicit leave frees the role at once.
        a.join_as("s4", Some("device:C"));
        a.leave_at("s2", true, late + 1.0);
        assert_eq!(a.state().controller_identity, None);
        a.handle_control("s4", &claim(), late + 2.0).unwrap();
    }

    #[test]
    fn a_handover_moves_the_role_and_a_restore_keeps_the_epoch() {
        let mut a = RoomAuthority::new(AuthorityConfig::default(), T0);
        a.join_as("s1", Some("siwe:0xA"));
        a.join_as("s2", Some("token:bob"));
        a.handle_control("s1", &claim(), T0).unwrap();
        let mut h = MusicControl::new(
            MusicAction::Handover,
            MusicControlData {
                to: Some("s2".into()),
                ..Default::default()
            },
            a.state().epoch,
            1,
        );
        h.sequence = 1;
        a.handle_control("s1", &h, T0).unwrap();
        assert_eq!(a.dj_identity(), Some("token:bob"));
        // A restarted server: the role and the epoch come from the state file.
        let mut b = RoomAuthority::new(AuthorityConfig::default(), T0);
        b.restore_dj("token:bob", 7, T0);
        assert_eq!(b.state().epoch, 7);
        b.join_as("n1", Some("siwe:0xA"));
        assert_eq!(
            b.handle_control("n1", &claim(), T0 + 1.0)
                .unwrap_err()
                .code(),
            ErrorCode::NotController
        );
        let (_, back) = b.join_as("n2", Some("token:bob"));
        assert_eq!(back.unwrap().epoch, 8, "never backwards");
        // Two sessions of one identity: the other one inherits at once.
        b.join_as("n3", Some("token:bob"));
        let next = b.leave_at("n2", false, T0 + 2.0).unwrap();
        assert_eq!(next.controller_id.as_deref(), Some("n3"));
    }
}
