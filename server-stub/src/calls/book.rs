//! The calls the server knows: ringing and accepted, bounded, indexed by session. Pure state
//! (time comes in as `now`), held inside the registry so that routing a signaling frame can
//! ask [`CallBook::connects`] under the same lock.
//!
//! A call is `Ringing { until }` (rung on some sessions of the callee's identity) until one of
//! them accepts (`Accepted { callee }`), declines, the caller cancels, or `until` passes; an
//! accepted call lasts until a party ends it or its session goes away. Bounds:
//! [`MAX_CALLS_PER_SESSION`] calls involve one session (as caller, rung session or callee),
//! [`MAX_RINGING_CALLS`] ring at once.

use p3_lanes::core::auth::Identity;
use p3_lanes::core::call::{EndReason, MAX_CALLS_PER_SESSION, MAX_RINGING_CALLS};
use p3_lanes::core::error::WireError;
use p3_lanes::core::frame::SessionId;
use std::collections::HashMap;
use std::time::Instant;

/// Where a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallState {
    /// Rung, unanswered; expires at `until`.
    Ringing { until: Instant },
    /// Accepted by this session of the callee.
    Accepted { callee: SessionId },
}

/// One call.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// The calling session.
    pub(crate) caller: SessionId,
    /// The caller's verified identity.
    pub(crate) from: Identity,
    /// The callee's sessions it was rung on (still ringing, or when accepted: all of them).
    pub(crate) rung: Vec<SessionId>,
    pub(crate) state: CallState,
}

/// Who to tell what after a change: `(session, call id, reason)` for `call-ended`.
pub(crate) type Ended = Vec<(SessionId, String, EndReason)>;

/// Answer of [`CallBook::answer`].
#[derive(Debug)]
pub(crate) struct Answered {
    /// The calling session.
    pub(crate) caller: SessionId,
    /// The caller's identity.
    pub(crate) from: Identity,
    /// The other sessions it rang on (they get `call-ended answered-elsewhere`).
    pub(crate) others: Vec<SessionId>,
}

/// Every call, indexed by id and by the sessions it involves.
#[derive(Debug, Default)]
pub(crate) struct CallBook {
    calls: HashMap<String, Call>,
    /// Session → ids of the calls it is caller, rung session or callee of (≤
    /// [`MAX_CALLS_PER_SESSION`] each).
    by_session: HashMap<SessionId, Vec<String>>,
    ringing: usize,
}

impl CallBook {
    /// How many calls involve `sid`.
    pub(crate) fn involving(&self, sid: SessionId) -> usize {
        self.by_session.get(&sid).map_or(0, Vec::len)
    }

    /// Whether `sid` may take part in one more call.
    pub(crate) fn has_room(&self, sid: SessionId) -> bool {
        self.involving(sid) < MAX_CALLS_PER_SESSION
    }

    /// Records call `id` from `caller` rung on `rung` until `until`.
    ///
    /// Errors: `too_many_requests` when the caller is in [`MAX_CALLS_PER_SESSION`] calls or
    /// [`MAX_RINGING_CALLS`] ring already.
    pub(crate) fn ring(
        &mut self,
        id: String,
        caller: SessionId,
        from: Identity,
        rung: Vec<SessionId>,
        until: Instant,
    ) -> Result<(), WireError> {
        if !self.has_room(caller) {
            return Err(crate::limits::bounds::too_many(format!(
                "this session is in its maximum of {MAX_CALLS_PER_SESSION} calls; end one first"
            )));
        }
        if self.ringing >= MAX_RINGING_CALLS {
            return Err(crate::limits::bounds::too_many(
                "the server has its maximum of ringing calls; retry later",
            ));
        }
        for &s in std::iter::once(&caller).chain(&rung) {
            self.by_session.entry(s).or_default().push(id.clone());
        }
        self.calls.insert(
            id,
            Call {
                caller,
                from,
                rung,
                state: CallState::Ringing { until },
            },
        );
        self.ringing += 1;
        Ok(())
    }

    /// Session `by` answers ringing call `id` at `now` (accept or decline). `None` unless the
    /// call rings on `by` and has not expired.
    pub(crate) fn answer(
        &mut self,
        id: &str,
        by: SessionId,
        accept: bool,
        now: Instant,
    ) -> Option<Answered> {
        let call = self.calls.get(id)?;
        let CallState::Ringing { until } = call.state else {
            return None;
        };
        if now >= until || !call.rung.contains(&by) {
            return None;
        }
        let answered = Answered {
            caller: call.caller,
            from: call.from.clone(),
            others: call.rung.iter().copied().filter(|&s| s != by).collect(),
        };
        if accept {
            // Only the two parties stay indexed: the other ringing sessions are free again.
            for &s in &answered.others {
                self.unindex(s, id);
            }
            if let Some(c) = self.calls.get_mut(id) {
                c.state = CallState::Accepted { callee: by };
                self.ringing -= 1;
            }
        } else {
            self.remove(id);
        }
        Some(answered)
    }

    /// Session `by` ends call `id`: the caller cancels a ringing call or either party hangs
    /// up an accepted one. Returns who to tell (`hangup`); `None` if `by` may not end it.
    pub(crate) fn end(&mut self, id: &str, by: SessionId) -> Option<Ended> {
        let call = self.calls.get(id)?;
        let tell: Vec<SessionId> = match call.state {
            CallState::Ringing { .. } if by == call.caller => call.rung.clone(),
            CallState::Accepted { callee } if by == call.caller => vec![callee],
            CallState::Accepted { callee } if by == callee => vec![call.caller],
            _ => return None,
        };
        self.remove(id);
        Some(
            tell.into_iter()
                .map(|s| (s, id.to_owned(), EndReason::Hangup))
                .collect(),
        )
    }

    /// Ends call `id` if it still rings and `until` has passed at `now`: the caller and every
    /// rung session are told (`expired`).
    pub(crate) fn expire(&mut self, id: &str, now: Instant) -> Ended {
        let Some(call) = self.calls.get(id) else {
            return Vec::new();
        };
        match call.state {
            CallState::Ringing { until } if now >= until => {}
            _ => return Vec::new(),
        }
        let tell: Vec<SessionId> = std::iter::once(call.caller)
            .chain(call.rung.iter().copied())
            .collect();
        self.remove(id);
        tell.into_iter()
            .map(|s| (s, id.to_owned(), EndReason::Expired))
            .collect()
    }

    /// Whether `a` and `b` are the two parties of an accepted call (so they may signal to
    /// each other without sharing a room).
    pub(crate) fn connects(&self, a: SessionId, b: SessionId) -> bool {
        self.by_session.get(&a).is_some_and(|ids| {
            ids.iter().any(|id| {
                self.calls.get(id).is_some_and(|c| match c.state {
                    CallState::Accepted { callee } => {
                        (c.caller == a && callee == b) || (c.caller == b && callee == a)
                    }
                    CallState::Ringing { .. } => false,
                })
            })
        })
    }

    /// Session `sid` went away: its calls end (`gone`) for the other party, and a call rung
    /// on it alone among the callee's sessions ends for the caller.
    pub(crate) fn session_gone(&mut self, sid: SessionId) -> Ended {
        let Some(ids) = self.by_session.remove(&sid) else {
            return Vec::new();
        };
        let mut ended = Vec::new();
        for id in ids {
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            let tell = match call.state {
                CallState::Accepted { callee } if call.caller == sid => vec![callee],
                CallState::Ringing { .. } if call.caller == sid => call.rung.clone(),
                CallState::Accepted { callee } if callee == sid => vec![call.caller],
                CallState::Accepted { .. } => continue,
                CallState::Ringing { .. } => {
                    call.rung.retain(|&s| s != sid);
                    if !call.rung.is_empty() {
                        continue;
                    }
                    vec![call.caller]
                }
            };
            self.remove(&id);
            ended.extend(
                tell.into_iter()
                    .filter(|&s| s != sid)
                    .map(|s| (s, id.clone(), EndReason::Gone)),
            );
        }
        ended
    }

    fn remove(&mut self, id: &str) {
        let Some(call) = self.calls.remove(id) else {
            return;
        };
        if matches!(call.state, CallState::Ringing { .. }) {
            self.ringing -= 1;
        }
        for s in std::iter::once(call.caller).chain(call.rung) {
            self.unindex(s, id);
        }
    }

    fn unindex(&mut self, sid: SessionId, id: &str) {
        if let Some(ids) = self.by_session.get_mut(&sid) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_session.remove(&sid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p3_lanes::core::auth::IdentityKind;
    use std::time::Duration;

    fn sid(n: u8) -> SessionId {
        SessionId::from_random_bytes([n; 16])
    }

    fn who() -> Identity {
        Identity {
            kind: IdentityKind::Token,
            id: "alice".into(),
        }
    }

    #[test]
    fn accepted_calls_connect_their_two_parties_only_and_free_the_other_sessions() {
        let now = Instant::now();
        let mut book = CallBook::default();
        let until = now + Duration::from_secs(30);
        book.ring("c".into(), sid(1), who(), vec![sid(2), sid(3)], until)
            .unwrap();
        assert!(!book.connects(sid(1), sid(2)), "ringing is not connected");
        assert!(
            book.answer("c", sid(9), true, now).is_none(),
            "not rung on 9"
        );
        let a = book.answer("c", sid(2), true, now).unwrap();
        assert_eq!(a.others, vec![sid(3)]);
        assert!(book.connects(sid(1), sid(2)) && book.connects(sid(2), sid(1)));
        assert!(!book.connects(sid(1), sid(3)) && !book.connects(sid(3), sid(2)));
        assert_eq!(book.involving(sid(3)), 0);
        assert!(
            book.answer("c", sid(2), true, now).is_none(),
            "answered once"
        );
        assert!(book.end("c", sid(3)).is_none(), "not a party");
        book.ring("d".into(), sid(4), who(), vec![sid(5)], until)
            .unwrap();
        assert!(book.answer("d", sid(5), false, now).is_some());
        assert_eq!(book.ringing, 0, "declined");
        assert_eq!(book.end("c", sid(2)).unwrap()[0].0, sid(1));
        assert!(!book.connects(sid(1), sid(2)));
        assert_eq!((book.involving(sid(1)), book.ringing), (0, 0));
    }

    #[test]
    fn ringing_expires_and_is_bounded_per_session() {
        let now = Instant::now();
        let mut book = CallBook::default();
        for i in 0..MAX_CALLS_PER_SESSION {
            book.ring(format!("c{i}"), sid(1), who(), vec![sid(2)], now)
                .unwrap();
        }
        assert!(book
            .ring("x".into(), sid(1), who(), vec![sid(2)], now)
            .is_err());
        assert!(book.answer("c0", sid(2), true, now).is_none(), "expired");
        let ended = book.expire("c0", now);
        assert_eq!(ended.len(), 2);
        assert!(ended.iter().all(|e| e.2 == EndReason::Expired));
        assert_eq!(book.involving(sid(1)), MAX_CALLS_PER_SESSION - 1);
        let gone = book.session_gone(sid(2));
        assert_eq!(
            gone.len(),
            MAX_CALLS_PER_SESSION - 1,
            "caller told each time"
        );
        assert_eq!((book.involving(sid(1)), book.ringing), (0, 0));
    }
}
