//! The server tier's music-room authority as one sans-IO machine (issue #4, issue 13 "Deliver
//! 1"; seed 004 "Tier 1", "Challenge 3: Split Brain": the server is the authority while it is
//! reachable; PROTOCOL.md §12.2, §12.3, §13.9, §13.14, §13.15).
//!
//! [`Authority`] is one room: its [`RoomAuthority`] (state, controller, epochs and sequences,
//! handover, the DJ identity) and its [`ChangeLog`] of changes pushed back after the server was
//! away. It takes a member's music message, a join or a leave, and returns an [`Output`]: the
//! [`Delivery`]s to send (to one member or to the whole room, in order), the sender's refusal
//! as a typed [`AuthorityError`], and the DJ record to persist if it changed ([`DjWrite`]).
//!
//! # Drive contract
//! - Time comes in as an argument: `now_ms`, whole ms on the shared clock (server wall clock,
//!   ms since the Unix epoch), always the first argument. The machine reads no clock.
//! - [`parse`] a Sync-lane payload first: it needs no room, so a driver runs it before taking
//!   any lock; it refuses what no room would accept (bad shapes, a client's `sync-state`, a
//!   seed that is not playable, an `origin` bound to someone else).
//! - Then, holding the room (one lock per room, PROTOCOL.md §15.4), call one of
//!   [`Authority::handle`], [`Authority::join`], [`Authority::leave`] with the room's members
//!   *after* the event, and route the returned deliveries before the next input: every member
//!   sees the room's messages in the order the authority decided. [`To::Room`] means the
//!   members passed with that input, in their order.
//! - Write [`Output::dj`] to the state file when present (PROTOCOL.md §13.15).
//!
//! The machine does no I/O, no locking and no logging; the server (`server-stub::music`) keeps
//! the map of rooms, the locks, the state file and the sockets.
//!
//! # Numbers on the wire (PROTOCOL.md §12.2)
//! Epochs, sequences and every time (`referenceTime`, `applyAt`, `data.timestamp`) are JSON
//! integers: the machine works in whole ms (`now_ms` is whole, the lead is rounded up, a
//! sender's `data.timestamp` and a seed's `referenceTime` are rounded to the nearest ms), and
//! [`crate::core::sync::state`] writes whole-ms times as integers. `position` and
//! `playbackRate` are numbers that may carry a fraction and are written as floats (`1.0`).

use crate::core::error::ErrorCode;
use crate::core::frame::SessionId;
use crate::core::p2p::changes::{
    apply_push, ChangeLimits, ChangeLog, ChangesAck, ChangesError, ChangesPush,
    MUSIC_CHANGES_ACK_TYPE, MUSIC_CHANGES_TYPE,
};
use crate::core::sync::state::{
    AuthorityConfig, AuthorityRecord, Decision, MusicControl, RoomAuthority, RoomState, SyncError,
    SyncMessage, MUSIC_CONTROL_TYPE, SYNC_STATE_TYPE,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A room member: its session id and verified identity key (`"<kind>:<id>"`,
/// [`crate::core::auth::Identity::key`]), if it has one.
pub type Member = (SessionId, Option<String>);

/// The identity key kinds an `origin` can be bound to (PROTOCOL.md §13.15).
const BOUND_ORIGIN_KINDS: [&str; 4] = ["siwe:", "token:", "device:", "session:"];

/// Whether a Sync-lane payload is for the room's authority (`music-control`, `sync-state` or
/// `music-changes`) rather than for relaying.
pub fn is_music_message(value: &Value) -> bool {
    matches!(
        value.get("type").and_then(Value::as_str),
        Some(MUSIC_CONTROL_TYPE | SYNC_STATE_TYPE | MUSIC_CHANGES_TYPE)
    )
}

/// The identity key an `origin` of `sid` must be bound to: its verified identity's key, else
/// `session:<sid>` (PROTOCOL.md §13.15).
pub fn sender_key(sid: SessionId, identity: Option<&str>) -> String {
    identity.map_or_else(|| format!("session:{sid}"), str::to_owned)
}

/// Whether `origin` is in the bound namespace (`<kind>:…`) but not `key`'s: `key` itself or
/// `key/<anything>`. Unbound origins (no such prefix) are nobody's.
fn foreign_origin(origin: &str, key: &str) -> bool {
    let bound = BOUND_ORIGIN_KINDS.iter().any(|k| origin.starts_with(k));
    let owned = origin == key
        || origin
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('/'));
    bound && !owned
}

/// Why a member's music message was refused. The sender alone gets a Control `error` with
/// [`AuthorityError::code`], lane 7 and the frame's seq (PROTOCOL.md §12.2).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The room's rules refused a `music-control` (`not_controller`, `epoch_mismatch`,
    /// `invalid_argument`, `bad_payload`, `out_of_range`; [`SyncError::code`]).
    #[error("{0}")]
    Sync(#[from] SyncError),
    /// A `music-changes` push refused whole (`limit_exceeded`, `out_of_range`,
    /// `invalid_argument`; [`ChangesError::code`]).
    #[error("{0}")]
    Changes(#[from] ChangesError),
    /// A change names an epoch before the room's: the sender missed a handover
    /// (`epoch_mismatch`).
    #[error("change names epoch {got}, the room is at epoch {current}")]
    StaleEpoch {
        /// The change's epoch.
        got: u64,
        /// The room's epoch.
        current: u64,
    },
    /// A `music-changes` push naming an `origin` bound to another identity or session
    /// (`forbidden`, PROTOCOL.md §13.15).
    #[error("origin {origin:?} is not this session's ({key})")]
    ForeignOrigin {
        /// The origin named.
        origin: String,
        /// The sender's own key.
        key: String,
    },
    /// A client's `sync-state`: only the authority states the room (`invalid_argument`).
    #[error("sync-state is sent by the room's authority only; send music-control")]
    ClientState,
    /// A `music-changes` value that is not a push (`bad_payload`).
    #[error("not a music-changes push: {0}")]
    BadPush(String),
}

impl AuthorityError {
    /// The machine-readable code of the Control `error`.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthorityError::Sync(e) => e.code(),
            AuthorityError::Changes(e) => e.code(),
            AuthorityError::StaleEpoch { .. } => ErrorCode::EpochMismatch,
            AuthorityError::ForeignOrigin { .. } => ErrorCode::Forbidden,
            AuthorityError::ClientState => ErrorCode::InvalidArgument,
            AuthorityError::BadPush(_) => ErrorCode::BadPayload,
        }
    }

    /// The Control `error`'s text: the message, with a hint to resync when the sender's view
    /// of the controller is out of date.
    pub fn wire_text(&self) -> String {
        match self {
            AuthorityError::Sync(
                SyncError::NotController { .. } | SyncError::EpochMismatch { .. },
            )
            | AuthorityError::StaleEpoch { .. } => {
                format!("{self}; resync from the room's sync-state")
            }
            _ => self.to_string(),
        }
    }
}

/// A member's music message, checked without the room ([`parse`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Inbound {
    /// A `music-control` (its `data.timestamp` rounded to whole ms).
    Control(MusicControl),
    /// A `music-changes` push (its seed playable, its origins the sender's, the seed's
    /// `referenceTime` rounded to whole ms).
    Changes(ChangesPush),
}

/// Reads a Sync-lane payload for which [`is_music_message`] holds, sent by a member whose
/// [`sender_key`] is `key`. Needs no room: run it before taking any lock.
///
/// Errors: [`AuthorityError::BadPush`] (`bad_payload`) for a `music-changes` of the wrong shape;
/// [`AuthorityError::Sync`] for a seed that is not a playable state ([`RoomState::check_seed`])
/// or a `music-control` of the wrong shape (`bad_payload`); [`AuthorityError::ForeignOrigin`]
/// (`forbidden`) for a change whose bound `origin` is not `key`'s; [`AuthorityError::ClientState`]
/// (`invalid_argument`) for a `sync-state`.
pub fn parse(value: Value, key: &str) -> Result<Inbound, AuthorityError> {
    match value.get("type").and_then(Value::as_str) {
        Some(MUSIC_CHANGES_TYPE) => {
            let mut push: ChangesPush = serde_json::from_value(value)
                .map_err(|e| AuthorityError::BadPush(e.to_string()))?;
            if let Some(seed) = push.seed.as_mut() {
                seed.check_seed()?;
                seed.ref_server_ms = seed.ref_server_ms.round();
            }
            if let Some(c) = push.changes.iter().find(|c| foreign_origin(&c.origin, key)) {
                return Err(AuthorityError::ForeignOrigin {
                    origin: c.origin.clone(),
                    key: key.to_owned(),
                });
            }
            Ok(Inbound::Changes(push))
        }
        Some(SYNC_STATE_TYPE) => Err(AuthorityError::ClientState),
        _ => match SyncMessage::from_value(value)? {
            SyncMessage::MusicControl(mut c) => {
                c.data.timestamp = c.data.timestamp.map(f64::round);
                Ok(Inbound::Control(c))
            }
            _ => Err(AuthorityError::ClientState),
        },
    }
}

/// Who gets a [`Delivery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum To {
    /// One member.
    Member(SessionId),
    /// Every member passed with the input, in that order.
    Room,
}

/// A server-originated Sync-lane message (no `from`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// `{type: "sync-state", data: <room state>}`.
    State(RoomState),
    /// The resolved `music-control` (`applyAt`, `data.from`, `data.position`, ...).
    Control(MusicControl),
    /// `{type: "music-changes-ack", versionVector, epoch, applied, skipped, appliedOrder,
    /// seeded}` (PROTOCOL.md §13.9).
    Ack(ChangesAck),
}

impl Message {
    /// The JSON payload (camelCase fields, `type` tag).
    pub fn to_value(&self) -> Value {
        match self {
            Message::State(s) => SyncMessage::SyncState { data: s.clone() }.to_value(),
            Message::Control(c) => SyncMessage::MusicControl(c.clone()).to_value(),
            Message::Ack(a) => {
                let mut v = serde_json::to_value(a).expect("an ack is plain JSON");
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("type".into(), MUSIC_CHANGES_ACK_TYPE.into());
                }
                v
            }
        }
    }
}

/// One message for one member or the room, on the Sync lane.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Who gets it.
    pub to: To,
    /// What.
    pub message: Message,
}

/// A write of the room's DJ record to the state file (PROTOCOL.md §13.15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DjWrite {
    /// The role belongs to `identity`; the room is at `epoch`.
    Set {
        /// The identity key.
        identity: String,
        /// The room's epoch.
        epoch: u64,
    },
    /// No verified identity holds the role.
    Clear,
}

/// What one input produced, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Messages to route, in order.
    pub deliveries: Vec<Delivery>,
    /// The sender's refusal.
    pub refusal: Option<AuthorityError>,
    /// The DJ record to persist, if it changed.
    pub dj: Option<DjWrite>,
}

impl Output {
    fn push(&mut self, to: To, message: Message) {
        self.deliveries.push(Delivery { to, message });
    }
}

/// An [`Authority`]'s durable part ([`Authority::snapshot`], [`Authority::resume`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The room: state, DJ identity.
    pub room: AuthorityRecord,
    /// The change log (version vector and the last entries).
    pub log: ChangeLog,
}

/// One music room's authority (module docs).
#[derive(Debug)]
pub struct Authority {
    room: RoomAuthority,
    log: ChangeLog,
    limits: ChangeLimits,
    /// The DJ record last reported in [`Output::dj`] (or restored).
    persisted: Option<(String, u64)>,
}

impl Authority {
    /// A fresh room at `now_ms` with `members`: epoch 0, sequence 0, no controller, no track
    /// (PROTOCOL.md §12.3). `stored`: its DJ identity and epoch from the state file (a
    /// restart): the room's epoch becomes at least that one and the identity's first session
    /// to join holds the role. `limits` bound `music-changes` pushes.
    pub fn new(
        config: AuthorityConfig,
        limits: ChangeLimits,
        members: &[Member],
        stored: Option<(String, u64)>,
        now_ms: u64,
    ) -> Authority {
        let now = now_ms as f64;
        let mut room = RoomAuthority::new(config, now);
        if let Some((identity, epoch)) = &stored {
            room.restore_dj(identity, *epoch, now);
        }
        for (m, id) in members {
            let _ = room.join_as(&m.to_string(), id.as_deref());
        }
        Authority {
            room,
            log: ChangeLog::compacted(0),
            limits,
            persisted: stored,
        }
    }

    /// Everything another server needs to take the room over (PROTOCOL.md §17 "Music
    /// rooms"): state, DJ identity, change log. JSON.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            room: self.room.record(),
            log: self.log.clone(),
        }
    }

    /// The room taken over from `snapshot` (the previous authority's last
    /// [`Authority::snapshot`]) by a new authority whose fencing token is `fence`, with
    /// `members`. The room's epoch becomes `max(epoch + 1, fence)`, sequence 0: every state
    /// this authority issues is newer than any the previous one did. Returns the machine and
    /// the state to send the whole room.
    ///
    /// Errors: [`AuthorityError::Sync`] (`out_of_range`) at the epoch limit.
    pub fn resume(
        config: AuthorityConfig,
        limits: ChangeLimits,
        members: &[Member],
        snapshot: Snapshot,
        fence: u64,
    ) -> Result<(Authority, RoomState), AuthorityError> {
        let mut room = RoomAuthority::from_record(config, snapshot.room);
        let mut state = room.fence_epoch(fence)?;
        for (m, id) in members {
            if let (_, Some(s)) = room.join_as(&m.to_string(), id.as_deref()) {
                state = s;
            }
        }
        let persisted = room
            .dj_identity()
            .map(|id| (id.to_owned(), room.state().epoch));
        let mut log = snapshot.log;
        log.begin_epoch(room.state().epoch);
        Ok((
            Authority {
                room,
                log,
                limits,
                persisted,
            },
            state,
        ))
    }

    /// The room's state.
    pub fn state(&self) -> &RoomState {
        self.room.state()
    }

    /// The identity key holding the DJ role, if any.
    pub fn dj_identity(&self) -> Option<&str> {
        self.room.dj_identity()
    }

    /// A checked message ([`parse`]) from `from`, one of `members` (the room's members now),
    /// at `now_ms`.
    ///
    /// A `music-control` applied gives the room the new `sync-state`, then the resolved
    /// `music-control`; a duplicate (the room's epoch, sequence not newer) gives nothing; a
    /// refusal goes in [`Output::refusal`]. A `music-changes` push is reconciled (PROTOCOL.md
    /// §13.9): if the state changed the room gets one `sync-state`, then the sender the ack.
    /// If `from` is the DJ identity's first session back, the room first gets the state that
    /// names it controller.
    pub fn handle(
        &mut self,
        members: &[Member],
        from: SessionId,
        message: Inbound,
        now_ms: u64,
    ) -> Output {
        let mut out = Output::default();
        match message {
            Inbound::Control(change) => self.control(now_ms, members, from, change, &mut out),
            Inbound::Changes(push) => self.changes(now_ms, from, push, &mut out),
        }
        self.persist(&mut out);
        out
    }

    fn control(
        &mut self,
        now_ms: u64,
        members: &[Member],
        from: SessionId,
        change: MusicControl,
        out: &mut Output,
    ) {
        let member = from.to_string();
        let identity = members
            .iter()
            .find(|m| m.0 == from)
            .and_then(|m| m.1.as_deref());
        // The sender's identity is known before its change (a room created by it).
        let (_, restored) = self.room.join_as(&member, identity);
        if let Some(state) = restored {
            out.push(To::Room, Message::State(state));
        }
        match self.room.handle_control(&member, &change, now_ms as f64) {
            Ok(Decision::Applied { control, state }) => {
                out.push(To::Room, Message::State(state));
                out.push(To::Room, Message::Control(control));
            }
            Ok(Decision::Ignored) if change.epoch < self.room.state().epoch => {
                out.refusal = Some(AuthorityError::StaleEpoch {
                    got: change.epoch,
                    current: self.room.state().epoch,
                });
            }
            Ok(Decision::Ignored) => {}
            Err(e) => out.refusal = Some(e.into()),
        }
    }

    fn changes(&mut self, now_ms: u64, from: SessionId, push: ChangesPush, out: &mut Output) {
        match apply_push(
            &mut self.room,
            &mut self.log,
            push,
            now_ms as f64,
            self.limits,
        ) {
            Ok(outcome) => {
                if outcome.changed {
                    out.push(To::Room, Message::State(self.room.state().clone()));
                }
                out.push(To::Member(from), Message::Ack(outcome.ack));
            }
            Err(e) => out.refusal = Some(e.into()),
        }
    }

    /// `sid` joined; `members` are the room's members now (`sid` among them). The joiner gets
    /// the room's `sync-state`; if it is the DJ identity's first session back, the whole room
    /// gets the state that names it controller instead.
    pub fn join(&mut self, members: &[Member], sid: SessionId) -> Output {
        let identity = members
            .iter()
            .find(|m| m.0 == sid)
            .and_then(|m| m.1.as_deref());
        let (_, restored) = self.room.join_as(&sid.to_string(), identity);
        let mut out = Output::default();
        match restored {
            Some(state) => out.push(To::Room, Message::State(state)),
            None => out.push(To::Member(sid), Message::State(self.room.state().clone())),
        }
        self.persist(&mut out);
        out
    }

    /// `sid` left at `now_ms` (`explicit`: it said so, rather than vanished). If it was the
    /// controller the room (the members that remain) gets the new `sync-state` (epoch + 1;
    /// PROTOCOL.md §12.3, §13.15).
    pub fn leave(&mut self, sid: SessionId, explicit: bool, now_ms: u64) -> Output {
        let mut out = Output::default();
        if let Some(state) = self
            .room
            .leave_at(&sid.to_string(), explicit, now_ms as f64)
        {
            out.push(To::Room, Message::State(state));
        }
        self.persist(&mut out);
        out
    }

    /// One RTT report of member `sid` (`ping {rttMs}`), ms; feeds the lead time.
    pub fn rtt(&mut self, sid: SessionId, rtt_ms: f64) {
        self.room.update_member_rtt(&sid.to_string(), rtt_ms);
    }

    /// Sets [`Output::dj`] if the DJ identity or the room's epoch changed since last reported.
    fn persist(&mut self, out: &mut Output) {
        let now = self
            .room
            .dj_identity()
            .map(|id| (id.to_owned(), self.room.state().epoch));
        if now == self.persisted {
            return;
        }
        out.dj = Some(match &now {
            Some((identity, epoch)) => DjWrite::Set {
                identity: identity.clone(),
                epoch: *epoch,
            },
            None => DjWrite::Clear,
        });
        self.persisted = now;
    }
}

#[cfg(test)]
mod tests;
