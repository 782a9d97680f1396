//! The registry side of calls addressed to an identity ([`crate::calls`], PROTOCOL.md
//! §13.16): who can be rung (the live sessions of an identity, found through the identity
//! index), the callee's `acceptCallsFrom` policy, and the call messages on the Messaging lane.
//! Call messages are the server's own, small and bounded (a few hundred bytes): they are
//! encoded here, under the lock, like Control messages.

use super::encoded::Encoded;
use super::Registry;
use crate::calls::book::Ended;
use crate::error::AppError;
use axum::http::StatusCode;
use p3_lanes::core::auth::Identity;
use p3_lanes::core::call::{
    can_call, target_key, AcceptResponse, CallMessage, EndReason, InitiateResponse, MAX_TO_LEN,
};
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::lane::Lane;
use std::time::{Duration, Instant};

/// 404 `call_unknown`: the same answer whether the call never existed, is over, or is not
/// this session's to answer or end.
fn call_unknown() -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::CallUnknown,
        "no such call for this session",
    )
}

impl Registry {
    /// The verified identity of live session `sid`, for a call request at `now`.
    ///
    /// Errors: 401 `unauthorized` for an unknown or expired session; 401 `auth_required` for
    /// a session without a SIWE or app-token identity (none, an expired one, or a device key:
    /// [`p3_lanes::core::call::can_call`]).
    pub(crate) fn calling_identity(
        &mut self,
        sid: SessionId,
        now: Instant,
    ) -> Result<Identity, AppError> {
        let s = self.live(sid, now).ok_or_else(crate::auth::unauthorized)?;
        s.touch(now);
        match &s.identity {
            Some(v)
                if can_call(&v.identity)
                    && !matches!(v.expires_at_ms, Some(t) if t <= crate::now_ms()) =>
            {
                Ok(v.identity.clone())
            }
            _ => Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::AuthRequired,
                "calls need a verified identity: sign in (SIWE or an app token; a device key is not one) in the handshake",
            )),
        }
    }

    /// Rings identity `to` for `caller` with call `id` at `now` ([`crate::calls::initiate`]
    /// has the answers): every live session of that identity that is reachable, has the
    /// Messaging lane, admits the caller and is in fewer than the maximum calls gets a `call`
    /// message.
    pub(crate) fn ring(
        &mut self,
        caller: SessionId,
        to: &str,
        id: String,
        now: Instant,
    ) -> Result<InitiateResponse, AppError> {
        let from = self.calling_identity(caller, now)?;
        if to.is_empty() || to.len() > MAX_TO_LEN {
            return Err(AppError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidArgument,
                format!("`to` is an address or a token sub of 1..={MAX_TO_LEN} bytes"),
            ));
        }
        let candidates = self
            .by_identity
            .get(&target_key(to))
            .cloned()
            .unwrap_or_default();
        let mut reachable = Vec::new();
        for sid in candidates {
            if sid == caller {
                continue;
            }
            if let Some(s) = self.live(sid, now) {
                if s.reachable() && s.encoding(Lane::Messaging).is_some() {
                    reachable.push(sid);
                }
            }
        }
        if reachable.is_empty() {
            return Err(AppError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::CalleeUnavailable,
                "no session of that identity can be rung now",
            ));
        }
        let admitting: Vec<SessionId> = reachable
            .into_iter()
            .filter(|sid| {
                self.sessions
                    .get(sid)
                    .is_some_and(|s| s.accept_calls_from.admits(&from))
            })
            .collect();
        if admitting.is_empty() {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "that identity does not accept calls from you",
            ));
        }
        let rung: Vec<SessionId> = admitting
            .into_iter()
            .filter(|&sid| self.calls.has_room(sid))
            .collect();
        if rung.is_empty() {
            return Err(crate::limits::bounds::too_many(
                "that identity is in its maximum of calls; retry later",
            )
            .into());
        }
        let timeout_ms = self.call_ring_timeout_ms;
        let until = now + Duration::from_millis(timeout_ms);
        self.calls
            .ring(id.clone(), caller, from.clone(), rung.clone(), until)?;
        let msg = CallMessage::Call {
            call_id: id.clone(),
            from,
            from_member: caller,
            expires_in_ms: timeout_ms,
        };
        for sid in rung {
            self.send_call(sid, &msg);
        }
        Ok(InitiateResponse {
            call_id: id,
            expires_in_ms: timeout_ms,
        })
    }

    /// Session `by` accepts (`Some` answer) or declines (`None`) ringing call `id` at `now`;
    /// the caller gets `call-accepted` or `call-declined`, the other rung sessions
    /// `call-ended answered-elsewhere`.
    ///
    /// Errors: those of [`Self::calling_identity`]; 404 `call_unknown`.
    pub(crate) fn answer_call(
        &mut self,
        id: &str,
        by: SessionId,
        accept: bool,
        now: Instant,
    ) -> Result<Option<AcceptResponse>, AppError> {
        let callee = self.calling_identity(by, now)?;
        let a = self
            .calls
            .answer(id, by, accept, now)
            .ok_or_else(call_unknown)?;
        for &s in &a.others {
            self.send_call(
                s,
                &CallMessage::CallEnded {
                    call_id: id.to_owned(),
                    reason: EndReason::AnsweredElsewhere,
                },
            );
        }
        if !accept {
            self.send_call(
                a.caller,
                &CallMessage::CallDeclined {
                    call_id: id.to_owned(),
                },
            );
            return Ok(None);
        }
        self.send_call(
            a.caller,
            &CallMessage::CallAccepted {
                call_id: id.to_owned(),
                member: by,
                by: callee,
            },
        );
        Ok(Some(AcceptResponse {
            call_id: id.to_owned(),
            peer: a.caller,
            from: a.from,
        }))
    }

    /// Session `by` ends call `id` (cancels it while it rings, as its caller; hangs up an
    /// accepted one, as a party); the others get `call-ended hangup`.
    ///
    /// Errors: those of [`Self::calling_identity`]; 404 `call_unknown`.
    pub(crate) fn end_call(
        &mut self,
        id: &str,
        by: SessionId,
        now: Instant,
    ) -> Result<(), AppError> {
        self.calling_identity(by, now)?;
        let ended = self.calls.end(id, by).ok_or_else(call_unknown)?;
        self.tell_ended(ended);
        Ok(())
    }

    /// Ends call `id` if it still rings past its timeout at `now` (the timer of
    /// [`crate::calls::initiate`]).
    pub(crate) fn expire_call(&mut self, id: &str, now: Instant) {
        let ended = self.calls.expire(id, now);
        self.tell_ended(ended);
    }

    /// Whether `a` and `b` are the parties of an accepted call: they may address each other
    /// with `to` (signaling on the Messaging lane) without sharing a room.
    pub(crate) fn call_connects(&self, a: SessionId, b: SessionId) -> bool {
        self.calls.connects(a, b)
    }

    /// Session `sid` is being removed: drops it from the identity index and ends its calls.
    pub(super) fn calls_session_gone(&mut self, sid: SessionId, identity: Option<&Identity>) {
        if let Some(key) = identity.and_then(p3_lanes::core::call::identity_key) {
            if let Some(list) = self.by_identity.get_mut(&key) {
                list.retain(|&s| s != sid);
                if list.is_empty() {
                    self.by_identity.remove(&key);
                }
            }
        }
        let ended = self.calls.session_gone(sid);
        self.tell_ended(ended);
    }

    fn tell_ended(&mut self, ended: Ended) {
        for (sid, call_id, reason) in ended {
            self.send_call(sid, &CallMessage::CallEnded { call_id, reason });
        }
    }

    /// Queues call message `msg` for `sid` on the Messaging lane (in its encoding, and its SSE
    /// history); `false` if it is gone or lacks the lane.
    fn send_call(&mut self, sid: SessionId, msg: &CallMessage) -> bool {
        let wanted = self.server_encodings(sid, Lane::Messaging);
        if wanted.is_empty() {
            return false;
        }
        let value = match serde_json::to_value(msg) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "call message not encodable");
                return false;
            }
        };
        let encoded = Encoded::build(&value, None, wanted, &self.dict, None);
        self.send_server(sid, Lane::Messaging, &encoded)
    }
}
