//! A room's membership messages (`peer-joined`, `peer-left`, the rotated `room-key`) pushed to
//! its members **after** the registry lock is released (issue 11 "No global stall", PROTOCOL.md
//! §15.4), in the order the registry made the changes.
//!
//! Telling N members of a join costs N pushes into N session transports (a lock, a multiplexer
//! send and a task wake-up each). Under the server-wide registry lock that made every request
//! of every room wait O(N) per join (the `abuse.room-stuffing` bench). Instead, under the lock
//! the registry only records a [`Fanout`] (the message and its receivers' transports) in the
//! room's [`RoomOutbox`], O(1) per receiver (an `Arc` clone), and the registry guard pushes it
//! once the lock is released ([`RoomOutbox::drain`]).
//!
//! Order: fan-outs enter a room's queue under the registry lock, so in registry order, and
//! leave it in that order, taken and pushed by one thread at a time per room (the room's
//! turn). So each member hears a room's joins, leaves and key rotations in the order they
//! happened. And when a registry guard is dropped, every fan-out it queued has been pushed
//! (by this thread, or by the one that had the turn before it): a joiner's next frame, handled
//! after its join, cannot reach a member before that member's `peer-joined`. Rooms are
//! independent: each has its own queue and turn, and only threads telling the same room wait
//! for each other.
//!
//! Locks: the queue's lock is a leaf (held for a push or a pop); the turn is taken with no
//! registry lock held and, while held, only session transports are locked (room turn → session
//! transport). SSE histories are still written under the registry lock (they live in it), at
//! the moment of the change.

use super::outbound::{self, ControlFrames, SharedTransport};
use p3_lanes::core::control::Control;
use p3_lanes::core::dictionary::Dictionary;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Encoding;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One receiver of a fan-out: a session with a socket or a multiplexer when it was recorded.
#[derive(Debug)]
pub(crate) struct Recipient {
    pub(crate) sid: SessionId,
    pub(crate) transport: SharedTransport,
    /// Its Control lane encoding.
    pub(crate) encoding: Encoding,
}

/// One Control message for some members of a room.
#[derive(Debug)]
pub(crate) struct Fanout {
    pub(crate) msg: Control,
    pub(crate) to: Vec<Recipient>,
}

impl Fanout {
    /// Frames the message once per encoding and pushes it to each receiver. Like any Control
    /// message it is never dropped silently: a full queue closes that socket with 1013
    /// ([`outbound::Transport::send_or_close`]).
    fn deliver(&self, dict: &Dictionary) {
        let mut frames = ControlFrames::default();
        for r in &self.to {
            if let Some(out) = frames.outgoing(&self.msg, r.encoding, dict) {
                outbound::lock(&r.transport).send_or_close(r.sid, &out);
            }
        }
    }
}

/// A room's fan-outs waiting to be pushed, and the turn of the one thread pushing them.
#[derive(Debug, Default)]
pub(crate) struct RoomOutbox {
    queue: Mutex<VecDeque<Fanout>>,
    turn: Mutex<()>,
}

/// Locks `m`; a panic while it was held leaves nothing half-updated here (a queue push or pop
/// is whole, the turn guards no data), so the lock is reused.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RoomOutbox {
    /// Queues `f` (called under the registry lock: fan-outs queue in registry order).
    pub(crate) fn push(&self, f: Fanout) {
        relock(&self.queue).push_back(f);
    }

    /// Fan-outs queued and not yet taken by a drainer.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        relock(&self.queue).len()
    }

    /// Pushes every queued fan-out, in order, taking the room's turn (waiting for the thread
    /// that has it): on return, every fan-out queued before the call has been pushed. Call with
    /// no registry lock held.
    pub(crate) fn drain(&self, dict: &Dictionary) {
        let _turn = relock(&self.turn);
        loop {
            let next = relock(&self.queue).pop_front();
            let Some(f) = next else { return };
            f.deliver(dict);
        }
    }
}
