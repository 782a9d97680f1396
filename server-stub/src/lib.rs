//! # server-stub
//!
//! The reference server of P3 Protocol's real-time layer (axum + tokio): handshake v2, session
//! management and 8 multiplexed lanes over one WebSocket per session, with rooms, relaying,
//! transcoding between msgpack and json, heartbeats and bounded queues. Every wire type comes
//! from the sans-IO core, [`p3_lanes::core`]; this crate only does I/O and bookkeeping.
//!
//! | module | implements |
//! | --- | --- |
//! | [`config`] | flags and environment (seed 001 "Environment Variables") |
//! | [`api`] | the HTTP API (seed 000 "Session Handshake", "Session Management", `/api/version`) |
//! | [`auth`] | session credentials (token, tickets, Bearer, admin token), verified identity (SIWE, app JWTs), the room access policy, TURN REST credentials (issue 12) |
//! | [`calls`] | `POST /api/nexus/calls/*`: calls addressed to an identity, rung on its live sessions, answered, signaled on the Messaging lane (seed 000 "Nexus as P2P signaling"; issue 12) |
//! | [`ws`] | the session WebSocket: rooms, relay, heartbeats (seed 000 lanes, seed 001) |
//! | [`state`] | the app state: wires the registry, the music service and the signaling server; lock rules; TTL sweeper |
//! | `registry` | sessions, rooms, routing, outbound queues and multiplexers (`send(lane, frame)`), per-receiver encodings |
//! | [`cluster`] | several nodes as one server: sessions, room membership, room streams, room keys and the signaling server's rooms in Redis (`--redis-url`; issue 14, PROTOCOL.md §17) |
//! | [`close`] | every WebSocket close code, the close signal |
//! | [`music`] | music rooms: one sync authority per room behind its own lock, returning deliveries (issue #4, seed 004 Tier 1) |
//! | [`media`] | `GET /api/media`: the audio files music rooms play, served at `/media/` |
//! | `lock` | locking server-wide state: a poisoned lock aborts loudly |
//! | `signal_route` | WebRTC signaling on the Messaging lane: routed to one member of the room, `from` checked (seed 000 "Nexus as P2P signaling") |
//! | [`signaling`] | `GET /api/signaling` (handler) and its hub: the seed 001 signaling server (auth with the session's `signalingToken`, rooms, offer/answer/ice/end relay, heartbeat timeout) |
//! | [`webrtc`] | `GET /api/webrtc/config`: STUN/TURN servers as an `RTCConfiguration` (seed 001 "ICE/TURN Configuration") |
//! | `room_key` | the room key each joiner gets for sealing music control between peers, replaced for the remaining members whenever one leaves; one key per room for the whole cluster with `--redis-url` (issue #5 "Security", issue 12, PROTOCOL.md §13.4, §17) |
//! | [`pwa`] | the app version in `index.html`, runtime version changes pushed to sockets (seed 000 "PWA Cache Protection") |
//! | [`sse`] | SSE lanes: per-lane and multiplexed `text/event-stream`s with `Last-Event-ID` resume, `POST` to a lane (seed 001 "Server-Sent Events"; issue 3) |
//! | [`limits`] | bounds on what one client can make the server hold (issue 11, PROTOCOL.md §15) |
//! | [`error`] | the JSON error shape `{"error", "code"}` of every HTTP error |
//! | [`linger`] | lingering close of accepted connections, so a refusal sent before the request was read still reaches its client |
//! | [`pulse`] | `GET /metrics` (Prometheus text) and `/pulse/stream` (node registration, metrics broadcast; seed 001 "Pulse WebSocket", seed 002 "Node Metrics"; issue 14) |
//! | [`limits`] | rate limiting: per-IP budgets of handshakes, lane POSTs and upgrades, per-session lane budgets (issue 11, PROTOCOL.md §15) |
//!
//! Use [`app`] to get the router (tests), or [`serve`] to run it with graceful shutdown.

pub mod api;
pub mod auth;
pub mod calls;
pub mod close;
pub mod cluster;
pub mod config;
pub mod error;
pub mod limits;
pub mod linger;
mod lock;
pub mod media;
pub mod music;
pub mod pulse;
pub mod pwa;
mod registry;
mod room_key;
mod signal_route;
pub mod signaling;
pub mod sse;
pub mod state;
pub mod webrtc;
pub mod ws;

pub use config::Config;
pub use error::AppError;
pub use state::AppState;

use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use axum::Router;
use limits::ip::IpClass;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::time::{timeout_at, Instant};
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// How long [`serve`] waits, after the shutdown signal, for connections and WebSockets to
/// close before returning anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Wall clock, ms since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The whole HTTP surface: the API under `/api/`, the pkg dir at `/pkg/`, the media dir at
/// `/media/` (with range requests, for seeking), the static dir at
/// `/`, with permissive CORS (any origin; GET, POST, DELETE; `content-type`, `authorization`, `p3-seq`; exposing
/// `retry-after`, `p3-seq-expected`, `ratelimit-limit`, `ratelimit-remaining`,
/// `ratelimit-reset`) and request tracing. Handshakes, lane POSTs and WebSocket/SSE upgrades
/// pass their per-client-IP rate limit first ([`limits`]). Static files are sent with `Cache-Control: no-cache`, `.wasm` as
/// `application/wasm`.
pub fn app(state: Arc<AppState>) -> Router {
    let config = state.config();
    // Per-client-IP budgets (crate::limits): handshakes, lane POSTs, WebSocket/SSE upgrades.
    let limits = state.limits();
    let api = Router::new()
        .route(
            "/api/protocol/v2/session/handshake",
            limits.guard(IpClass::Handshake, post(api::handshake)),
        )
        .route(
            "/api/protocol/v2/auth/nonce",
            limits.guard(IpClass::Handshake, get(auth::nonce)),
        )
        .route(
            "/api/protocol/v2/session/{sid}",
            get(api::session_status).delete(api::delete_session),
        )
        .route(
            "/api/protocol/v2/session/{sid}/ticket",
            limits.guard(IpClass::Post, post(api::mint_ticket)),
        )
        .route(
            "/api/protocol/v2/session/{sid}/ws",
            limits.guard(IpClass::Upgrade, get(ws::upgrade)),
        )
        .route(
            "/api/protocol/v2/session/{sid}/stream",
            limits.guard(IpClass::Upgrade, get(sse::stream)),
        )
        .route(
            "/api/protocol/v2/session/{sid}/lane/{id}",
            limits.guard(IpClass::Post, post(sse::post)),
        )
        .route(
            "/api/protocol/v2/session/{sid}/lane/{id}/stream",
            limits.guard(IpClass::Upgrade, get(sse::lane_stream)),
        )
        .route(
            "/api/nexus/calls/initiate",
            limits.guard(IpClass::Post, post(calls::initiate)),
        )
        .route(
            "/api/nexus/calls/{call_id}/accept",
            limits.guard(IpClass::Post, post(calls::accept)),
        )
        .route(
            "/api/nexus/calls/{call_id}/decline",
            limits.guard(IpClass::Post, post(calls::decline)),
        )
        .route(
            "/api/nexus/calls/{call_id}/end",
            limits.guard(IpClass::Post, post(calls::end)),
        )
        .route("/api/admin/sse/close", post(sse::admin_close))
        .route(
            "/api/protocol/v2/protocol/info",
            get(api::protocol_info_handler),
        )
        .route("/api/version", get(api::version))
        .route("/api/media", get(media::media_list))
        .route("/api/webrtc/config", get(webrtc::config))
        .route(
            "/api/signaling",
            limits.guard(IpClass::Upgrade, get(signaling::upgrade)),
        )
        .route("/api/admin/version", post(pwa::set_version))
        .route("/metrics", get(pulse::metrics_handler))
        .route(
            "/pulse/stream",
            limits.guard(IpClass::Upgrade, get(pulse::stream::upgrade)),
        )
        .route("/", get(pwa::index))
        .route("/index.html", get(pwa::index))
        .route("/api/{*rest}", any(api::not_found))
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state.clone());
    let statics = Router::new()
        .nest_service("/pkg", ServeDir::new(&config.pkg_dir))
        .nest_service("/media", ServeDir::new(&config.media_dir))
        .fallback_service(ServeDir::new(&config.static_dir))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ));
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            // Bearer secrets of session-scoped routes (`/api/webrtc/config`'s TURN credentials,
            // the call routes).
            header::AUTHORIZATION,
            HeaderName::from_static(p3_lanes::core::sse::post::HEADER_SEQ),
            HeaderName::from_static(p3_lanes::core::call::HEADER_SESSION),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static(p3_lanes::core::sse::post::HEADER_SEQ_EXPECTED),
            limits::ip::HEADER_LIMIT,
            limits::ip::HEADER_REMAINING,
            limits::ip::HEADER_RESET,
        ]);
    api.merge(statics)
        .layer(TraceLayer::new_for_http())
        .layer(cors)
        .layer(axum::middleware::map_response(close_after_refusal))
}

/// A refusal that may leave its request body unread (413 over a body bound, 429 past a rate)
/// ends its connection: `Connection: close` tells the client not to send its next request on
/// it (hyper closes such a connection after the answer, and [`linger`] drains what the client
/// still sends so the answer is not lost to a reset).
async fn close_after_refusal(mut resp: axum::response::Response) -> axum::response::Response {
    use axum::http::StatusCode;
    if matches!(
        resp.status(),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS
    ) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Tasks aborted when dropped.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Serves [`app`] on `listener` until `shutdown` resolves, then shuts down gracefully: stops
/// accepting, closes every WebSocket with 1001 (going away), and returns once connections are
/// closed or [`SHUTDOWN_GRACE`] has passed. Also runs the session sweeper and the rate-limit sweeper ([`limits::spawn_sweeper`]).
///
/// Errors: I/O errors of the server.
pub async fn serve<F>(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let sweeper = state::spawn_sweeper(state.clone());
    let limits_sweeper = limits::spawn_sweeper(state.clone());
    let pulse_ticker = pulse::spawn_ticker(state.clone());
    // Aborted with this future too: a server task aborted (in tests, a node's crash) takes
    // its cluster tasks (lease renewals included) with it.
    let cluster_tasks = AbortOnDrop(state.spawn_cluster());
    let signalled = state.clone();
    // Connect info lets the admin endpoint tell loopback clients apart.
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // TCP_NODELAY on every accepted socket: without it Nagle's algorithm holds small
    // server → client writes until the peer's delayed ACK (tens of ms at p99, issue 11
    // "Latency under load"); the send tasks coalesce frames themselves (`ws`).
    // Lingering close (`linger`): a refusal answered before its request body was read still
    // reaches the client instead of being destroyed by a TCP reset.
    let listener = linger::LingerListener(listener).tap_io(|io| {
        if let Err(e) = io.tcp().map_or(Ok(()), |tcp| tcp.set_nodelay(true)) {
            tracing::debug!("TCP_NODELAY on an accepted socket: {e}");
        }
    });
    let server = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            signalled.begin_shutdown();
        })
        .into_future();
    let mut server = std::pin::pin!(server);
    let mut deadline = None;
    let result = tokio::select! {
        r = &mut server => r,
        () = state.shutdown_started() => {
            let at = Instant::now() + SHUTDOWN_GRACE;
            deadline = Some(at);
            timeout_at(at, &mut server).await.unwrap_or_else(|_| {
                tracing::warn!("connections still open after the grace period; stopping anyway");
                Ok(())
            })
        }
    };
    // Upgraded connections are not awaited by axum: give the WebSockets the rest of the grace
    // period to send their close frames.
    let at = deadline.unwrap_or_else(|| Instant::now() + SHUTDOWN_GRACE);
    if timeout_at(at, state.sockets_closed()).await.is_err() {
        tracing::warn!("WebSockets still open after the grace period; stopping anyway");
    }
    sweeper.abort();
    limits_sweeper.abort();
    pulse_ticker.abort();
    drop(cluster_tasks);
    // Clean shutdown: other nodes take this node's music rooms over at once.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, state.release_music_leases()).await;
    result
}
