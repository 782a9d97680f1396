//! One session created by a handshake (seed 000 "Session Management"), its status body and
//! its lane grants.

use super::outbound::mono_ms;
use super::outbound::SharedTransport;
use crate::auth::{SessionToken, Tickets};
use crate::close::CloseSignal;
use crate::error::AppError;
use crate::limits::bounds::RegistryBounds;
use crate::now_ms;
use crate::sse::hub::SseHub;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::handshake::LaneGrant;
use p3_lanes::core::handshake::Secret;
use p3_lanes::core::lane::{Encoding, Lane};
use p3_lanes::core::sse::lane_urls;
use p3_lanes::core::sse::post::PostLedger;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the session's ledger remembers of a numbered `POST` (PROTOCOL.md §14.6), to answer a
/// retry of it without delivering again.
#[derive(Debug, Clone)]
pub(crate) enum PostOutcome {
    /// 202: delivered.
    Accepted,
    /// Refused with this error (a retry gets the same answer).
    Refused(AppError),
    /// 503 `backpressure`: these receivers did not get it; a retry delivers to them only.
    Backpressure(Vec<SessionId>),
}

/// The registry's view of an attached socket: its id and close signal.
#[derive(Clone, Debug)]
pub(crate) struct ConnRef {
    pub(crate) id: u64,
    pub(crate) close: Arc<CloseSignal>,
}

/// What the handshake gives a new session's owner only: its token and a first ticket.
#[derive(Debug)]
pub(crate) struct Credentials {
    pub(crate) token: Secret,
    pub(crate) ticket: Secret,
}

/// One session created by a handshake.
#[derive(Debug)]
pub(crate) struct Session {
    /// The session's secret ([`crate::auth`]); `Debug` redacts it.
    pub(crate) token: SessionToken,
    /// Its outstanding single-use tickets.
    pub(crate) tickets: Tickets,
    pub(crate) client_id: String,
    pub(crate) wallet: Option<String>,
    pub(crate) device_info: Option<serde_json::Map<String, serde_json::Value>>,
    pub(crate) transport: &'static str,
    pub(crate) lanes: Vec<(Lane, Encoding)>,
    pub(crate) created_at_ms: u64,
    pub(crate) last_activity: Instant,
    pub(crate) last_activity_ms: u64,
    pub(crate) room: Option<String>,
    /// When it joined `room`, ms since the epoch (presence `since`, PROTOCOL.md §6.2).
    pub(crate) room_since_ms: u64,
    /// Its place in `room`'s join order across nodes: the entry number of its `joined` in
    /// the room's stream (cluster only; 0 on a single node, where `Registry::rooms` keeps
    /// join order).
    pub(crate) room_order: u64,
    /// Whether it gets Control `presence` messages (feature `presence`, PROTOCOL.md §6.2).
    pub(crate) presence: bool,
    /// The client address it counts against for `--max-sessions-per-ip`
    /// ([`crate::limits::ip::IpKey`], as the per-IP rate limits count it).
    pub(crate) ip: crate::limits::ip::IpKey,
    /// Whether it ever opened a WebSocket or an SSE stream; until then it expires after
    /// `--unattached-ttl-s` instead of its TTL.
    pub(crate) attached: bool,
    /// Socket queue and multiplexer, behind their own lock ([`super::outbound`]).
    pub(crate) out: SharedTransport,
    /// Whether the multiplexer was granted (for the session's whole life).
    pub(crate) mux: bool,
    /// The attached socket, mirrored here so the registry reads it without `out`'s lock.
    pub(crate) conn: Option<ConnRef>,
    /// SSE lanes ([`crate::sse`]): history and streams; from the handshake for `sse`
    /// sessions, from the first stream (or HTTP `join`) for others.
    pub(crate) sse: Option<SseHub>,
    /// The last `P3-Seq` of a `POST` per lane and its outcome (PROTOCOL.md §14.6).
    pub(crate) posts: PostLedger<PostOutcome>,
    /// The identity its handshake proved ([`crate::auth`]); the unverified `wallet` never is.
    pub(crate) identity: Option<crate::auth::VerifiedIdentity>,
    /// Who may ring that identity on this session (handshake `acceptCallsFrom`, default
    /// nobody; PROTOCOL.md §13.16).
    pub(crate) accept_calls_from: p3_lanes::core::call::AcceptCallsFrom,
}

impl Session {
    /// The negotiated encoding of `lane`, if granted.
    pub(crate) fn encoding(&self, lane: Lane) -> Option<Encoding> {
        self.lanes.iter().find(|(l, _)| *l == lane).map(|&(_, e)| e)
    }

    /// Whether its TTL ran out: no socket, no open SSE stream that is being read, and no
    /// activity for `ttl`, or for `--unattached-ttl-s` (if shorter) while it never opened a
    /// socket or stream.
    pub(crate) fn expired(&self, now: Instant, ttl: Duration, bounds: &RegistryBounds) -> bool {
        let ttl = if self.attached {
            ttl
        } else {
            ttl.min(bounds.unattached_ttl)
        };
        self.conn.is_none()
            && !matches!(&self.sse, Some(h) if h.streams > 0 && h.read_within(mono_ms(), bounds.sse_stall_ms))
            && now.saturating_duration_since(self.last_activity) >= ttl
    }

    /// Records activity now.
    pub(crate) fn touch(&mut self, now: Instant) {
        self.last_activity = now;
        self.last_activity_ms = now_ms();
    }

    /// Whether a message sent to it now reaches it: a socket, a multiplexer or an SSE history.
    pub(crate) fn reachable(&self) -> bool {
        self.conn.is_some() || self.mux || self.sse.is_some()
    }
}

/// The grants of `lanes` to session `sid` over `transport`, with their registry entries and
/// SSE URLs (per lane, or the multiplexed stream: [`p3_lanes::core::sse::lane_urls`]).
pub fn lane_grants(sid: SessionId, transport: &str, lanes: &[(Lane, Encoding)]) -> Vec<LaneGrant> {
    let ids: Vec<Lane> = lanes.iter().map(|l| l.0).collect();
    let urls = lane_urls(sid, transport, &ids);
    lanes
        .iter()
        .zip(urls)
        .map(|(&(lane, encoding), url)| {
            let spec = lane.spec();
            LaneGrant {
                id: lane.id(),
                name: lane.name().to_owned(),
                encoding,
                url,
                priority: spec.priority,
                queue_depth: spec.queue_depth,
                reliable: spec.reliable,
            }
        })
        .collect()
}

/// `GET /api/protocol/v2/session/{sid}` body. Times are ms since the Unix epoch.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// The session id.
    pub session_id: SessionId,
    /// `clientId` from the handshake.
    pub client_id: String,
    /// `wallet` from the handshake, or null.
    pub wallet: Option<String>,
    /// `deviceInfo` from the handshake, or null.
    pub device_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// Negotiated transport.
    pub transport: String,
    /// Granted lanes (same as in the handshake response).
    pub lanes: Vec<LaneGrant>,
    /// Handshake time, ms.
    pub created_at: u64,
    /// Last activity (handshake, frame received, socket closed), ms.
    pub last_activity: u64,
    /// When the session expires if nothing else happens, ms; while a socket is connected the
    /// session cannot expire and this is `now + ttl`.
    pub expires_at: u64,
    /// Sliding lifetime, s.
    pub ttl_seconds: u64,
    /// Whether a WebSocket is connected.
    pub connected: bool,
    /// Open SSE streams.
    pub sse_streams: usize,
    /// Current room, or null.
    pub room: Option<String>,
    /// The verified identity (issue 12), or null.
    pub identity: Option<p3_lanes::core::auth::Identity>,
}
