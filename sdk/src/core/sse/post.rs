//! Exactly-once `POST`s to SSE lanes (PROTOCOL.md §14.6), sans-IO: the server's idempotency
//! ledger and the client's ordered, retrying send queue share the rules here.
//!
//! A `POST` whose answer is lost (network error, timeout, a proxy's 502/504) may or may not
//! have been delivered. The client numbers its messages per (session, lane) from 1 and sends
//! the number in the [`HEADER_SEQ`] header (`P3-Seq: 7`, a Structured Field Integer, RFC 9651
//! §3.3.1); it retries a message whose outcome is unknown with the **same** number. The server
//! keeps, per session and lane, only the last number it took and that request's outcome
//! ([`PostLedger`]: bounded memory, 8 entries per session), so a repeat is answered without
//! delivering again, a number below it is an old duplicate, and a number above the next one is
//! a gap (`409 seq_gap`, the next expected number in [`HEADER_SEQ_EXPECTED`]).
//!
//! Why not the IETF `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header-06):
//! its key is an opaque unique string, so a server must remember every key until it expires
//! and learns nothing about order; reliable lanes need in-order delivery and gap detection,
//! which a per-lane sequence gives with one entry per lane. The answers follow the draft where
//! they overlap: a repeat gets the first request's answer, a repeat while the first is still
//! being processed is `409` ([`ErrorCode::SeqInProgress`]), a repeat with another message is
//! `422` ([`ErrorCode::SeqReused`], checked with a [`fingerprint`] as the draft's "idempotency
//! fingerprint").
//!
//! The client side is [`PostQueue`]: one request in flight, in order; bounded exponential
//! backoff ([`backoff_ms`], [`MAX_ATTEMPTS`]) for unknown outcomes and `503` (honouring
//! `Retry-After`); a [`PostFailure`] (`send_failed`) when it gives up, never a silent drop.

use crate::core::drive::Millis;
use crate::core::error::ErrorCode;
use crate::core::lane::Lane;
use crate::core::sse::SsePost;
use std::collections::VecDeque;

/// Request header carrying the message's per-(session, lane) sequence number, from 1
/// (lower-case, as HTTP/2 writes it; header names are case-insensitive).
pub const HEADER_SEQ: &str = "p3-seq";
/// Response header of a `409 seq_gap`: the sequence number the server expects next.
pub const HEADER_SEQ_EXPECTED: &str = "p3-seq-expected";
/// Largest sequence number: the largest Structured Field Integer (15 digits, RFC 9651 §3.3.1).
pub const MAX_SEQ: u64 = 999_999_999_999_999;

/// Attempts per message before the client gives up with `send_failed` (the first included).
pub const MAX_ATTEMPTS: u32 = 8;
/// Delay after the first failed attempt, ms; doubles per attempt up to [`BACKOFF_MAX_MS`].
pub const BACKOFF_BASE_MS: u64 = 250;
/// Longest delay between two attempts from backoff alone, ms.
pub const BACKOFF_MAX_MS: u64 = 8_000;
/// Longest `Retry-After` the client honours, ms (a longer one is cut to this).
pub const RETRY_AFTER_MAX_MS: u64 = 30_000;
/// How long the client waits for an answer before it treats the attempt as lost, ms.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// `429` answers (`rate_limited`, `too_many_requests`) per message before the client gives up
/// with that code. They do not count toward [`MAX_ATTEMPTS`]: the message was not taken.
pub const MAX_RATE_LIMITED: u32 = 32;
/// The wait after a `429` without `retryAfterMs` or `Retry-After`, ms.
pub const RATE_LIMITED_DEFAULT_MS: u64 = 1_000;

/// A [`HEADER_SEQ`] value that is not an integer in `1..=`[`MAX_SEQ`] (bad request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("P3-Seq {0:?} is not an integer in 1..=999999999999999")]
pub struct SeqHeaderError(pub String);

impl SeqHeaderError {
    /// `bad_request`.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

/// Parses a [`HEADER_SEQ`] value: optional spaces/tabs around 1 to 15 ASCII digits, not 0
/// (an sf-integer without sign). Any bytes are accepted as input; never panics.
///
/// Errors: [`SeqHeaderError`] for anything else (signs, fractions, parameters, 16+ digits).
pub fn parse_seq(value: &[u8]) -> Result<u64, SeqHeaderError> {
    let bad = || SeqHeaderError(String::from_utf8_lossy(value).into_owned());
    let t = value.trim_ascii();
    if t.is_empty() || t.len() > 15 || !t.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let n = t.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    if n == 0 {
        return Err(bad());
    }
    Ok(n)
}

/// What a repeated request must match to be the same message: a 64-bit FNV-1a hash of the
/// lane, the `to` query value, the `Content-Type` and the body (each length-prefixed). Not a
/// security measure: it tells a retry from a client bug reusing a number.
pub fn fingerprint(lane: Lane, to: Option<&str>, content_type: &str, body: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
    };
    eat(&[lane.id()]);
    eat(to.unwrap_or("").as_bytes());
    eat(content_type.as_bytes());
    eat(body);
    h
}

/// The server's verdict on a numbered `POST` ([`PostLedger::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqCheck<O> {
    /// The next number: now reserved (in progress). Process the message, then
    /// [`PostLedger::finish`] with its outcome.
    Fresh,
    /// The last number again, same message, its first request finished with `O`: a retry.
    /// Answer as `O` says without delivering again (for a partial outcome such as
    /// `backpressure`, complete the delivery to those still missing), then
    /// [`PostLedger::finish`] (the entry is in progress meanwhile).
    Repeat(O),
    /// Below the last number: an old duplicate whose answer the client already had. Answer
    /// `202`, deliver nothing.
    Stale,
    /// The last number while its first request is still being processed: `409
    /// seq_in_progress`.
    InProgress,
    /// The last number with another message ([`fingerprint`] differs): `422 seq_reused`.
    Reused,
    /// Above the next number: `409 seq_gap`; `expected` is the next number.
    Gap {
        /// The number the server takes next.
        expected: u64,
    },
}

/// One lane's entry: the last number taken, its fingerprint and outcome (`None`: in progress).
#[derive(Debug, Clone)]
struct LaneEntry<O> {
    last: u64,
    fingerprint: u64,
    outcome: Option<O>,
}

/// The server's idempotency memory of one session: per lane, the last [`HEADER_SEQ`] taken and
/// the outcome of its request (an outcome type `O` of the server's choosing). Bounded: 8
/// entries, whatever the traffic; it lives and dies with the session.
///
/// Drive: [`PostLedger::check`] under the session's lock before processing a numbered `POST`;
/// after [`SeqCheck::Fresh`] or [`SeqCheck::Repeat`], exactly one [`PostLedger::finish`] with
/// the outcome to remember (until then repeats get [`SeqCheck::InProgress`]).
#[derive(Debug, Clone)]
pub struct PostLedger<O> {
    lanes: [LaneEntry<O>; 8],
}

impl<O> Default for PostLedger<O> {
    fn default() -> Self {
        PostLedger {
            lanes: std::array::from_fn(|_| LaneEntry {
                last: 0,
                fingerprint: 0,
                outcome: None,
            }),
        }
    }
}

impl<O> PostLedger<O> {
    /// A ledger that has taken nothing (every lane expects 1).
    pub fn new() -> PostLedger<O> {
        PostLedger::default()
    }

    /// The last number taken on `lane` (0: none).
    pub fn last(&self, lane: Lane) -> u64 {
        self.lanes[lane as usize - 1].last
    }

    /// The verdict on number `seq` of a message with `fingerprint` on `lane`; reserves `seq`
    /// when it is the next one and takes the outcome out for a repeat (see [`SeqCheck`]).
    pub fn check(&mut self, lane: Lane, seq: u64, fingerprint: u64) -> SeqCheck<O> {
        let e = &mut self.lanes[lane as usize - 1];
        if e.last < MAX_SEQ && seq == e.last + 1 {
            *e = LaneEntry {
                last: seq,
                fingerprint,
                outcome: None,
            };
            return SeqCheck::Fresh;
        }
        if seq == e.last && seq != 0 {
            if fingerprint != e.fingerprint {
                return SeqCheck::Reused;
            }
            return match e.outcome.take() {
                None => SeqCheck::InProgress,
                Some(o) => SeqCheck::Repeat(o),
            };
        }
        if seq < e.last {
            return SeqCheck::Stale;
        }
        SeqCheck::Gap {
            expected: e.last.saturating_add(1).min(MAX_SEQ),
        }
    }

    /// Records the outcome of `seq` on `lane` after [`SeqCheck::Fresh`] / [`SeqCheck::Repeat`];
    /// ignored unless `seq` is still the lane's last number and in progress.
    pub fn finish(&mut self, lane: Lane, seq: u64, outcome: O) {
        let e = &mut self.lanes[lane as usize - 1];
        if e.last == seq && e.outcome.is_none() {
            e.outcome = Some(outcome);
        }
    }
}

/// The delay before attempt `attempt + 1` after `attempt` (1-based) failed, ms:
/// [`BACKOFF_BASE_MS`] · 2^(attempt−1), at most [`BACKOFF_MAX_MS`].
pub fn backoff_ms(attempt: u32) -> u64 {
    let shift = attempt.saturating_sub(1).min(16);
    (BACKOFF_BASE_MS << shift).min(BACKOFF_MAX_MS)
}

/// One request for the driver to make: `POST` [`SsePost::path`] with [`HEADER_SEQ`]` = seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostSend {
    /// The message.
    pub post: SsePost,
    /// Its sequence number on its lane (the same on every attempt, within one session).
    pub seq: u64,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// Pass back to [`PostQueue::handle_outcome`] (answers of an older session are ignored).
    pub ticket: u64,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// A 2xx answer.
    Accepted,
    /// No answer: a network error or [`REQUEST_TIMEOUT_MS`] passed. The message may or may not
    /// have been delivered.
    Lost,
    /// An error answer.
    Refused {
        /// HTTP status.
        status: u16,
        /// The body's `code` (a proxy's non-JSON error: `internal`).
        code: ErrorCode,
        /// The body's `error`, or a description.
        message: String,
        /// `Retry-After` in seconds, when given (delay-seconds form).
        retry_after_s: Option<u64>,
        /// The body's `retryAfterMs` (a `429`), when given; preferred to `retry_after_s`.
        retry_after_ms: Option<u64>,
        /// [`HEADER_SEQ_EXPECTED`], when given.
        expected_seq: Option<u64>,
    },
}

/// A message the queue stopped sending (`dropped`), or one refused with `429` that it sends
/// again after `retry_after_ms`: report it (as the `error` event of a WebSocket refusal, with
/// `lane` and `seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostFailure {
    /// The message's lane.
    pub lane: Lane,
    /// Its sequence number.
    pub seq: u64,
    /// The server's code, or [`ErrorCode::SendFailed`] when the queue gave up (delivery
    /// unknown).
    pub code: ErrorCode,
    /// Human-readable description.
    pub message: String,
    /// A `429`: the wait before the message goes again, ms.
    pub retry_after_ms: Option<u64>,
    /// Whether the queue stopped sending the message (`false`: it goes again).
    pub dropped: bool,
}

/// One output of [`PostQueue::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutput {
    /// Make this request now (it is in flight until [`PostQueue::handle_outcome`]).
    Send(PostSend),
    /// Nothing to send before then ([`Millis::NEVER`]: until an outcome, a push or a new
    /// session).
    Timeout(Millis),
}

#[derive(Debug, Clone)]
struct Queued {
    post: SsePost,
    seq: Option<u64>,
    attempts: u32,
    /// `429` answers so far.
    rate_limited: u32,
}

/// The client's ordered `POST` queue, sans-IO: numbers messages per lane, sends one at a
/// time, retries unknown outcomes with the same number, gives up with a report.
///
/// Drive contract ([`crate::core::drive`]; `now` is the driver's monotonic clock, last):
/// - [`PostQueue::push`] each message to send;
/// - after every input, drain [`PostQueue::poll_output`] until [`PostOutput::Timeout`] (at
///   most one request is in flight); at that deadline call [`PostQueue::handle_timeout`] and
///   drain again;
/// - when a request ends, [`PostQueue::handle_outcome`] with its ticket; report the returned
///   [`PostFailure`], if any;
/// - [`PostQueue::session_changed`] after a new handshake (numbering restarts at 1; queued
///   messages are kept and sent on the new session).
///
/// Outcomes: 2xx → next message. [`PostOutcome::Lost`], 502, 503 (`Retry-After` honoured up
/// to [`RETRY_AFTER_MAX_MS`]), 504 and `409 seq_in_progress` → the same message again after
/// [`backoff_ms`]; after [`MAX_ATTEMPTS`] attempts a `send_failed` failure and the next
/// message. `409 seq_gap` → the server never got the numbers from `expected` on (a message
/// the queue gave up on): the message is renumbered `expected` and sent at once. `429`
/// (`rate_limited`, `too_many_requests`; the server did not take the number) → the same
/// message again after the body's `retryAfterMs` (else `Retry-After`, else
/// [`RATE_LIMITED_DEFAULT_MS`]), reported each time (not dropped) and given up after
/// [`MAX_RATE_LIMITED`] such answers. `404
/// session_not_found` → paused until [`PostQueue::session_changed`]. Any other error → a
/// failure with the server's code and the next message.
#[derive(Debug, Clone, Default)]
pub struct PostQueue {
    outbox: VecDeque<Queued>,
    /// Per lane (index `id - 1`): the last number assigned in this session.
    assigned: [u64; 8],
    in_flight: bool,
    paused: bool,
    /// The head waits until then before its next attempt.
    retry_at: Option<u64>,
    /// Bumped by [`PostQueue::session_changed`]; tickets of older requests are ignored.
    generation: u64,
}

impl PostQueue {
    /// An empty queue.
    pub fn new() -> PostQueue {
        PostQueue::default()
    }

    /// Messages waiting or in flight.
    pub fn len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Whether the queue waits for a new session (`session_not_found`).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Queues a message (sent after every message queued before it).
    pub fn push(&mut self, post: SsePost) {
        self.outbox.push_back(Queued {
            post,
            seq: None,
            attempts: 0,
            rate_limited: 0,
        });
    }

    /// The next output at `now`: [`PostOutput::Send`] when the head may go (none in flight,
    /// not paused, its retry delay passed; it is then in flight), else
    /// [`PostOutput::Timeout`] with the end of the retry delay.
    #[must_use]
    pub fn poll_output(&mut self, now: Millis) -> PostOutput {
        match self.next_send(now.as_u64()) {
            Some(send) => PostOutput::Send(send),
            None => PostOutput::Timeout(Millis::from_deadline(self.next_deadline())),
        }
    }

    /// A deadline of [`PostOutput::Timeout`] passed: nothing to do (the retry delay is
    /// checked by [`PostQueue::poll_output`]).
    pub fn handle_timeout(&mut self, _now: Millis) {}

    /// The next request, if the head may go at `now_ms`. Marks it in flight.
    fn next_send(&mut self, now_ms: u64) -> Option<PostSend> {
        if self.in_flight || self.paused || self.retry_at.is_some_and(|t| now_ms < t) {
            return None;
        }
        let head = self.outbox.front_mut()?;
        let i = head.post.lane as usize - 1;
        let seq = *head.seq.get_or_insert_with(|| {
            self.assigned[i] = (self.assigned[i] + 1).min(MAX_SEQ);
            self.assigned[i]
        });
        head.attempts += 1;
        self.in_flight = true;
        self.retry_at = None;
        Some(PostSend {
            post: head.post.clone(),
            seq,
            attempt: head.attempts,
            ticket: self.generation,
        })
    }

    /// When the head may go again after a retry delay, ms (`None`: it waits for an outcome,
    /// a push or a new session, or has nothing).
    fn next_deadline(&self) -> Option<u64> {
        if self.in_flight || self.paused || self.outbox.is_empty() {
            return None;
        }
        self.retry_at
    }

    /// The outcome of the request of `ticket`. Returns a failure to report when the queue
    /// stopped sending a message (see the type's docs).
    pub fn handle_outcome(
        &mut self,
        ticket: u64,
        outcome: PostOutcome,
        now: Millis,
    ) -> Option<PostFailure> {
        let now_ms = now.as_u64();
        if ticket != self.generation || !self.in_flight {
            return None;
        }
        self.in_flight = false;
        let head = self.outbox.front_mut()?;
        let (lane, seq) = (head.post.lane, head.seq.unwrap_or(0));
        match outcome {
            PostOutcome::Accepted => {
                self.outbox.pop_front();
                None
            }
            PostOutcome::Lost => {
                self.retry_later(0, now_ms, "no answer (network error or timeout)")
            }
            PostOutcome::Refused {
                status,
                code,
                message,
                retry_after_s,
                retry_after_ms,
                expected_seq,
            } => {
                if status == 429 || code == ErrorCode::RateLimited {
                    // Refused before it was taken: the same number goes again, later.
                    let wait = retry_after_ms
                        .or(retry_after_s.map(|s| s.saturating_mul(1000)))
                        .unwrap_or(RATE_LIMITED_DEFAULT_MS)
                        .min(RETRY_AFTER_MAX_MS);
                    head.attempts = head.attempts.saturating_sub(1);
                    head.rate_limited += 1;
                    let dropped = head.rate_limited >= MAX_RATE_LIMITED;
                    if dropped {
                        self.outbox.pop_front();
                    } else {
                        self.retry_at = Some(now_ms.saturating_add(wait));
                    }
                    return Some(PostFailure {
                        lane,
                        seq,
                        code,
                        message,
                        retry_after_ms: (!dropped).then_some(wait),
                        dropped,
                    });
                }
                // `unauthorized`: the server no longer accepts this session's token (it forgot
                // the session), as good as `session_not_found` for an honest client.
                if matches!(code, ErrorCode::SessionNotFound | ErrorCode::Unauthorized) {
                    self.paused = true;
                    return None;
                }
                if code == ErrorCode::SeqGap {
                    if let Some(e) = expected_seq.filter(|&e| e >= 1 && e < seq) {
                        if head.attempts < MAX_ATTEMPTS {
                            head.seq = Some(e);
                            self.assigned[lane as usize - 1] = e;
                            self.retry_at = Some(now_ms);
                            return None;
                        }
                    }
                }
                if matches!(status, 502..=504) || code == ErrorCode::SeqInProgress {
                    let wait =
                        retry_after_s.map_or(0, |s| s.saturating_mul(1000).min(RETRY_AFTER_MAX_MS));
                    return self.retry_later(wait, now_ms, &format!("{code}: {message}"));
                }
                self.outbox.pop_front();
                Some(PostFailure {
                    lane,
                    seq,
                    code,
                    message,
                    retry_after_ms: None,
                    dropped: true,
                })
            }
        }
    }

    /// Retries the head after `max(wait_ms, backoff)`, or gives up after [`MAX_ATTEMPTS`].
    fn retry_later(&mut self, wait_ms: u64, now_ms: u64, why: &str) -> Option<PostFailure> {
        let head = self.outbox.front()?;
        if head.attempts >= MAX_ATTEMPTS {
            let (lane, seq, attempts) = (head.post.lane, head.seq.unwrap_or(0), head.attempts);
            self.outbox.pop_front();
            return Some(PostFailure {
                lane,
                seq,
                code: ErrorCode::SendFailed,
                message: format!(
                    "gave up sending message {seq} on lane {} after {attempts} attempts \
                     (last: {why}); it may or may not have been delivered",
                    lane.id()
                ),
                retry_after_ms: None,
                dropped: true,
            });
        }
        let delay = wait_ms.max(backoff_ms(head.attempts));
        self.retry_at = Some(now_ms.saturating_add(delay));
        None
    }

    /// The client has a new session: numbering restarts at 1, queued messages (including one
    /// whose outcome was unknown: it may reach the receivers twice, once per session) are sent
    /// on it, and answers of requests still in flight are ignored.
    pub fn session_changed(&mut self) {
        self.generation += 1;
        self.assigned = [0; 8];
        self.in_flight = false;
        self.paused = false;
        self.retry_at = None;
        for q in &mut self.outbox {
            q.seq = None;
            q.attempts = 0;
            q.rate_limited = 0;
        }
    }
}

crate::core::drive::machine!(PostQueue, PostOutput);

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn ms(v: u64) -> Millis {
        Millis::from_u64(v)
    }

    /// [`PostQueue::poll_output`] as the request to make, if any.
    pub(super) fn send(q: &mut PostQueue, now: u64) -> Option<PostSend> {
        match q.poll_output(ms(now)) {
            PostOutput::Send(s) => Some(s),
            PostOutput::Timeout(_) => None,
        }
    }

    fn post(lane: Lane, body: &str) -> SsePost {
        SsePost {
            lane,
            to: None,
            content_type: "application/json",
            body: body.as_bytes().to_vec(),
        }
    }

    fn refused(status: u16, code: ErrorCode) -> PostOutcome {
        PostOutcome::Refused {
            status,
            code,
            message: "x".into(),
            retry_after_s: None,
            retry_after_ms: None,
            expected_seq: None,
        }
    }

    #[test]
    fn seq_headers_parse_strictly() {
        assert_eq!(parse_seq(b"1"), Ok(1));
        assert_eq!(parse_seq(b" 42\t"), Ok(42));
        assert_eq!(parse_seq(b"999999999999999"), Ok(MAX_SEQ));
        for bad in [
            &b""[..],
            b"0",
            b"-1",
            b"+1",
            b"1.0",
            b"1;a=b",
            b"1000000000000000",
            b"\"1\"",
            b"\xff",
        ] {
            let e = parse_seq(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest);
        }
    }

    #[test]
    fn ledger_takes_each_number_once_and_replays_the_outcome() {
        let mut l: PostLedger<&str> = PostLedger::new();
        let (a, b) = (
            fingerprint(Lane::Messaging, None, "application/json", b"1"),
            fingerprint(Lane::Messaging, None, "application/json", b"2"),
        );
        assert_ne!(a, b);
        assert_eq!(
            l.check(Lane::Messaging, 2, a),
            SeqCheck::Gap { expected: 1 }
        );
        assert_eq!(l.check(Lane::Messaging, 1, a), SeqCheck::Fresh);
        assert_eq!(l.check(Lane::Messaging, 1, a), SeqCheck::InProgress);
        l.finish(Lane::Messaging, 1, "202");
        assert_eq!(l.check(Lane::Messaging, 1, b), SeqCheck::Reused);
        assert_eq!(l.check(Lane::Messaging, 1, a), SeqCheck::Repeat("202"));
        l.finish(Lane::Messaging, 1, "202");
        assert_eq!(l.check(Lane::Messaging, 2, b), SeqCheck::Fresh);
        l.finish(Lane::Messaging, 2, "400");
        assert_eq!(l.check(Lane::Messaging, 1, a), SeqCheck::Stale);
        assert_eq!(l.check(Lane::Messaging, 2, b), SeqCheck::Repeat("400"));
        // Lanes are independent; a late finish of an older number is ignored.
        assert_eq!(l.check(Lane::Data, 1, a), SeqCheck::Fresh);
        l.finish(Lane::Messaging, 1, "late");
        assert_eq!(l.last(Lane::Messaging), 2);
        assert_eq!(l.check(Lane::Messaging, 2, b), SeqCheck::InProgress);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(
            (1..=8).map(backoff_ms).collect::<Vec<_>>(),
            vec![250, 500, 1000, 2000, 4000, 8000, 8000, 8000]
        );
        assert_eq!(backoff_ms(u32::MAX), BACKOFF_MAX_MS);
    }

    #[test]
    fn queue_retries_with_the_same_number_and_then_gives_up() {
        let mut q = PostQueue::new();
        q.push(post(Lane::Messaging, "a"));
        q.push(post(Lane::Messaging, "b"));
        let s = send(&mut q, 0).unwrap();
        assert_eq!((s.seq, s.attempt), (1, 1));
        assert_eq!(send(&mut q, 0), None, "one in flight");
        assert_eq!(q.handle_outcome(s.ticket, PostOutcome::Lost, ms(0)), None);
        assert_eq!(q.next_deadline(), Some(250));
        assert_eq!(send(&mut q, 249), None);
        let mut now = 250;
        for attempt in 2..=MAX_ATTEMPTS {
            let s = send(&mut q, now).unwrap();
            assert_eq!((s.seq, s.attempt), (1, attempt));
            let f = q.handle_outcome(s.ticket, PostOutcome::Lost, ms(now));
            if attempt < MAX_ATTEMPTS {
                assert_eq!(f, None);
                now = q.next_deadline().unwrap();
            } else {
                let f = f.unwrap();
                assert_eq!(
                    (f.lane, f.seq, f.code),
                    (Lane::Messaging, 1, ErrorCode::SendFailed)
                );
            }
        }
        let s = send(&mut q, now).unwrap();
        assert_eq!((s.post.body.as_slice(), s.seq), (&b"b"[..], 2));
        // The server never got 1: it says so, and "b" becomes 1.
        let gap = PostOutcome::Refused {
            status: 409,
            code: ErrorCode::SeqGap,
            message: "gap".into(),
            retry_after_s: None,
            retry_after_ms: None,
            expected_seq: Some(1),
        };
        assert_eq!(q.handle_outcome(s.ticket, gap, ms(now)), None);
        let s = send(&mut q, now).unwrap();
        assert_eq!((s.post.body.as_slice(), s.seq), (&b"b"[..], 1));
        assert_eq!(
            q.handle_outcome(s.ticket, PostOutcome::Accepted, ms(now)),
            None
        );
        assert!(q.is_empty());
    }

    #[test]
    fn rate_limited_posts_wait_and_go_again_with_the_same_number() {
        let mut q = PostQueue::new();
        q.push(post(Lane::Messaging, "a"));
        q.push(post(Lane::Messaging, "b"));
        let limited = |ms: Option<u64>, s: Option<u64>| PostOutcome::Refused {
            status: 429,
            code: ErrorCode::RateLimited,
            message: "slow down".into(),
            retry_after_s: s,
            retry_after_ms: ms,
            expected_seq: None,
        };
        let mut now = 0;
        for i in 0..(MAX_ATTEMPTS + 4) {
            let s = send(&mut q, now).unwrap();
            assert_eq!((s.post.body.as_slice(), s.seq), (&b"a"[..], 1), "try {i}");
            let f = q
                .handle_outcome(s.ticket, limited(Some(300), Some(1)), ms(now))
                .unwrap();
            assert_eq!(
                (f.code, f.seq, f.retry_after_ms, f.dropped),
                (ErrorCode::RateLimited, 1, Some(300), false)
            );
            assert_eq!(send(&mut q, now + 299), None, "waits retryAfterMs");
            now += 300;
        }
        let s = send(&mut q, now).unwrap();
        assert_eq!(
            q.handle_outcome(s.ticket, PostOutcome::Accepted, ms(now)),
            None
        );
        // `Retry-After` alone is honoured too; "b" is next with the next number.
        let s = send(&mut q, now).unwrap();
        assert_eq!((s.post.body.as_slice(), s.seq), (&b"b"[..], 2));
        let f = q
            .handle_outcome(s.ticket, limited(None, Some(2)), ms(now))
            .unwrap();
        assert_eq!(f.retry_after_ms, Some(2000));
        assert_eq!(q.next_deadline(), Some(now + 2000));
    }

    #[test]
    fn queue_honours_retry_after_and_reports_refusals() {
        let mut q = PostQueue::new();
        q.push(post(Lane::Data, "a"));
        q.push(post(Lane::Data, "b"));
        let s = send(&mut q, 0).unwrap();
        let busy = PostOutcome::Refused {
            status: 503,
            code: ErrorCode::Backpressure,
            message: "full".into(),
            retry_after_s: Some(1),
            retry_after_ms: None,
            expected_seq: None,
        };
        assert_eq!(q.handle_outcome(s.ticket, busy, ms(0)), None);
        assert_eq!(q.next_deadline(), Some(1000));
        let s = send(&mut q, 1000).unwrap();
        assert_eq!((s.seq, s.attempt), (1, 2));
        let f = q
            .handle_outcome(s.ticket, refused(400, ErrorCode::BadPayload), ms(1000))
            .unwrap();
        assert_eq!((f.seq, f.code), (1, ErrorCode::BadPayload));
        let s = send(&mut q, 1000).unwrap();
        assert_eq!(
            s.seq, 2,
            "a refused message keeps its number (the server took it)"
        );
        // A lost session pauses; the new session numbers from 1 and ignores old answers.
        assert_eq!(
            q.handle_outcome(s.ticket, refused(404, ErrorCode::SessionNotFound), ms(1000)),
            None
        );
        assert!(q.is_paused());
        assert_eq!(send(&mut q, 5000), None);
        q.session_changed();
        let s2 = send(&mut q, 5000).unwrap();
        assert_eq!((s2.seq, s2.attempt), (1, 1));
        assert_eq!(
            q.handle_outcome(s.ticket, PostOutcome::Accepted, ms(5000)),
            None
        );
        assert_eq!(q.len(), 1, "a stale ticket changes nothing");
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod prop {
    use super::tests::{ms, send};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_seq_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(n) = parse_seq(&bytes) {
                prop_assert!((1..=MAX_SEQ).contains(&n));
            }
        }

        #[test]
        fn parse_seq_round_trips(n in 1..=MAX_SEQ) {
            prop_assert_eq!(parse_seq(n.to_string().as_bytes()), Ok(n));
        }

        /// A queue and a ledger over a link that loses requests and answers: the server
        /// delivers every message at most once and in order, and every message is either
        /// delivered or reported (a message given up on may be either).
        #[test]
        fn lossy_link_delivers_once_in_order_and_never_drops_silently(
            messages in proptest::collection::vec((0u8..3, any::<bool>()), 1..30),
            fates in proptest::collection::vec(0u8..6, 1..400),
        ) {
            let lanes = [Lane::Messaging, Lane::Data, Lane::Sync];
            let mut q = PostQueue::new();
            for (i, (lane, _)) in messages.iter().enumerate() {
                let mut p = SsePost {
                    lane: lanes[usize::from(*lane)],
                    to: None,
                    content_type: "application/json",
                    body: i.to_string().into_bytes(),
                };
                p.body.push(b' ');
                q.push(p);
            }
            // Server: messages whose second field is false are refused (bad payload).
            let mut ledger: PostLedger<u16> = PostLedger::new();
            let mut delivered: Vec<usize> = Vec::new();
            let mut failures: Vec<(usize, ErrorCode)> = Vec::new();
            let mut now = 0u64;
            let mut fate = fates.iter().cycle();
            for _ in 0..10_000 {
                let Some(send) = send(&mut q, now) else {
                    match q.next_deadline() {
                        Some(t) => { now = now.max(t); continue; }
                        None => break,
                    }
                };
                let id: usize = std::str::from_utf8(&send.post.body).unwrap().trim().parse().unwrap();
                let f = *fate.next().unwrap();
                let outcome = if f == 0 {
                    PostOutcome::Lost // lost on the way to the server
                } else {
                    let fp = fingerprint(send.post.lane, None, send.post.content_type, &send.post.body);
                    let status = match ledger.check(send.post.lane, send.seq, fp) {
                        SeqCheck::Fresh => {
                            let good = messages[id].1;
                            if good && f != 5 {
                                delivered.push(id);
                            }
                            let st = if !good { 400 } else if f == 5 { 503 } else { 202 };
                            ledger.finish(send.post.lane, send.seq, st);
                            st
                        }
                        SeqCheck::Repeat(st) => {
                            let st = if st == 503 { delivered.push(id); 202 } else { st };
                            ledger.finish(send.post.lane, send.seq, st);
                            st
                        }
                        SeqCheck::Stale => 202,
                        SeqCheck::Gap { expected } => {
                            let o = PostOutcome::Refused { status: 409, code: ErrorCode::SeqGap,
                                message: "gap".into(), retry_after_s: None, retry_after_ms: None, expected_seq: Some(expected) };
                            if let Some(fl) = q.handle_outcome(send.ticket, o, ms(now)) { failures.push((id, fl.code)); }
                            continue;
                        }
                        other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                    };
                    if f == 1 {
                        PostOutcome::Lost // the answer is lost
                    } else {
                        match status {
                            202 => PostOutcome::Accepted,
                            503 => PostOutcome::Refused { status, code: ErrorCode::Backpressure,
                                message: "full".into(), retry_after_s: Some(1), retry_after_ms: None, expected_seq: None },
                            _ => PostOutcome::Refused { status, code: ErrorCode::BadPayload,
                                message: "bad".into(), retry_after_s: None, retry_after_ms: None, expected_seq: None },
                        }
                    }
                };
                if let Some(fl) = q.handle_outcome(send.ticket, outcome, ms(now)) {
                    failures.push((id, fl.code));
                }
            }
            prop_assert!(q.is_empty(), "the queue drains");
            // At most once, in order, per lane and overall.
            prop_assert!(delivered.windows(2).all(|w| w[0] < w[1]), "{:?}", delivered);
            for (id, (_, good)) in messages.iter().enumerate() {
                let reported = failures.iter().find(|f| f.0 == id).map(|f| f.1);
                let got = delivered.contains(&id);
                match reported {
                    None => prop_assert!(got && *good, "message {} silently dropped", id),
                    Some(ErrorCode::BadPayload) => prop_assert!(!got && !*good),
                    Some(ErrorCode::SendFailed) => {}
                    Some(c) => prop_assert!(false, "unexpected failure {:?}", c),
                }
            }
        }
    }
}
