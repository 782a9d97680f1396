//! Server configuration: command-line flags, each also readable from an environment variable
//! (seed 001 "Environment Variables": `WS_HEARTBEAT_INTERVAL`, `WS_HEARTBEAT_TIMEOUT`).

use crate::auth::policy::RoomAccess;
use crate::limits::bounds;
use crate::limits::rate::Rate;
use crate::limits::RateLimitsMode;
use clap::Parser;
use p3_lanes::core::frame::DEFAULT_MAX_FRAME_BYTES;
use p3_lanes::core::handshake::DEFAULT_TTL_SECONDS;
use p3_lanes::core::p2p::changes::{MAX_CHANGES_PER_PUSH, MAX_ORIGINS_PER_ROOM};
use p3_lanes::core::p2p::ice::{parse_url_list, IceSettings};
use std::path::PathBuf;
use std::time::Duration;

/// Default outbound queue length per WebSocket, frames.
pub const DEFAULT_QUEUE_FRAMES: usize = 256;
/// Default outbound queue budget per WebSocket, bytes (4 MiB).
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

/// Default `--sse-history`: messages kept per session and lane.
pub const DEFAULT_SSE_HISTORY: usize = 256;
/// Default `--sse-history-bytes`: event data kept per session and lane (1 MiB).
pub const DEFAULT_SSE_HISTORY_BYTES: usize = 1 << 20;

/// Default `--rate-ip-handshake`: handshakes per client IP.
pub const DEFAULT_RATE_IP_HANDSHAKE: Rate = rate(20, 100);
/// Default `--rate-ip-post`: SSE lane POSTs per client IP.
pub const DEFAULT_RATE_IP_POST: Rate = rate(500, 1000);
/// Default `--rate-ip-upgrade`: WebSocket and SSE upgrades per client IP.
pub const DEFAULT_RATE_IP_UPGRADE: Rate = rate(20, 100);
/// Default `--rate-pulse`: messages per pulse stream connection.
pub const DEFAULT_RATE_PULSE: Rate = rate(5, 10);
/// Default `--pulse-interval-ms`: the pulse stream's `metrics` broadcast period.
pub const DEFAULT_PULSE_INTERVAL_MS: u64 = 5_000;
/// Default `--rate-control`: Control-lane messages per session.
pub const DEFAULT_RATE_CONTROL: Rate = rate(50, 200);
/// Default `--rate-sync`: Sync-lane messages per session.
pub const DEFAULT_RATE_SYNC: Rate = rate(100, 400);
/// Default `--rate-bulk`: messages per session on each other lane.
pub const DEFAULT_RATE_BULK: Rate = rate(5000, 10_000);
/// Default `--rate-strikes`: refused frames a socket may send (in a burst, refilled at this
/// many per 10 s) before it is closed with 4429.
pub const DEFAULT_RATE_STRIKES: u32 = 100;

/// `count/s,burst=burst` for the constants above (both nonzero, checked at compile time).
const fn rate(count: u32, burst: u32) -> Rate {
    match Rate::per_second(count, burst) {
        Some(r) => r,
        None => panic!("default rates are nonzero"),
    }
}

/// Default `--dj-grace-s`, s (the core's [`p3_lanes::core::sync::state::DEFAULT_DJ_GRACE_MS`]).
pub const DEFAULT_DJ_GRACE_S: u64 = 30;

/// Everything the server can be told at start-up. Flags win over environment variables.
///
/// Build it with [`Config::parse`] (main) or start from [`Config::default`] and set fields
/// (tests); the default never reads the environment.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "server-stub",
    version,
    about = "P3 Protocol real-time reference server"
)]
pub struct Config {
    /// Address or host name to bind.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// TCP port to bind; 0 picks any free port (the chosen one is printed).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Version string served by `GET /api/version` (seed 000 "PWA Cache Protection").
    #[arg(long, env = "APP_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    pub app_version: String,
    /// Answer `GET /api/version` (and the `version` pushes) with this instead, while pages
    /// keep `--app-version` in their `<meta>`: a server claiming a version its pages can never
    /// reach, as when a CDN keeps serving an old `index.html`. For testing stale-cache handling.
    #[arg(long, env = "REPORTED_VERSION")]
    pub reported_version: Option<String>,
    /// How often clients should ping, ms (seed 001 `HEARTBEAT_INTERVAL`).
    #[arg(long, env = "WS_HEARTBEAT_INTERVAL", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_interval_ms: u64,
    /// A WebSocket silent this long is closed with 4408, ms (seed 001 `HEARTBEAT_TIMEOUT`).
    #[arg(long, env = "WS_HEARTBEAT_TIMEOUT", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_timeout_ms: u64,
    /// A session without a socket expires this long after its last activity, s.
    #[arg(long = "session-ttl-s", env = "SESSION_TTL_SECONDS", default_value_t = DEFAULT_TTL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub session_ttl_s: u64,
    /// Largest frame accepted, bytes. Frames up to twice this get a `frame_too_large` error
    /// frame; bigger WebSocket messages close the socket with 1009.
    #[arg(long, env = "MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES,
          value_parser = parse_frame_limit)]
    pub max_frame_bytes: usize,
    /// Directory served at `/` (the demo app).
    #[arg(long, env = "STATIC_DIR", default_value = "www")]
    pub static_dir: PathBuf,
    /// Directory served at `/pkg/` (the wasm-pack output).
    #[arg(long, env = "PKG_DIR", default_value = "pkg")]
    pub pkg_dir: PathBuf,
    /// Outbound queue length per WebSocket, frames; a relay to a full queue is refused with a
    /// `backpressure` error frame to the sender.
    #[arg(long, env = "OUTBOUND_QUEUE_FRAMES", default_value_t = DEFAULT_QUEUE_FRAMES,
          value_parser = parse_queue_frames)]
    pub queue_frames: usize,
    /// Outbound queue budget per WebSocket, bytes (same rule as `--queue-frames`).
    #[arg(long, env = "OUTBOUND_QUEUE_BYTES", default_value_t = DEFAULT_QUEUE_BYTES)]
    pub queue_bytes: usize,
    /// Directory of music files served at `/media/` and listed by `GET /api/media` (music
    /// rooms; drop `.wav`, `.ogg`, `.mp3`, ... files in it).
    #[arg(long, env = "MEDIA_DIR", default_value = "media")]
    pub media_dir: PathBuf,
    /// SSE lanes: messages kept per session and lane for `Last-Event-ID` resume (PROTOCOL.md
    /// §14); older ones are forgotten and a resuming stream gets a `discontinuity` event.
    #[arg(long, env = "SSE_HISTORY", default_value_t = DEFAULT_SSE_HISTORY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub sse_history: usize,
    /// SSE lanes: bytes of event data kept per session and lane (the newest message is always
    /// kept).
    #[arg(long, env = "SSE_HISTORY_BYTES", default_value_t = DEFAULT_SSE_HISTORY_BYTES)]
    pub sse_history_bytes: usize,
    /// SSE lanes: a keep-alive comment is written after this much silence on a stream, ms.
    #[arg(long, env = "SSE_KEEPALIVE_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub sse_keepalive_ms: u64,
    /// SSE lanes: the `retry:` hint (EventSource reconnect delay) sent first on every stream, ms.
    #[arg(long, env = "SSE_RETRY_MS", default_value_t = 1_000)]
    pub sse_retry_ms: u64,
    // --- Bounds (issue 11; defaults in `crate::limits::bounds`, PROTOCOL.md §15) ---
    /// Largest handshake body, bytes; a bigger one is refused with 413 `payload_too_large`
    /// before it is parsed.
    #[arg(long, env = "MAX_HANDSHAKE_BYTES", default_value_t = bounds::DEFAULT_MAX_HANDSHAKE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(256..=(1 << 20)))]
    pub max_handshake_bytes: usize,
    /// Largest handshake `deviceInfo`, serialized JSON bytes (413 `payload_too_large`); its
    /// nesting depth is at most [`bounds::MAX_DEVICE_INFO_DEPTH`] (400 `invalid_argument`).
    #[arg(long, env = "MAX_DEVICE_INFO_BYTES", default_value_t = bounds::DEFAULT_MAX_DEVICE_INFO_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=(1 << 20)))]
    pub max_device_info_bytes: usize,
    /// Live sessions in total; a handshake beyond is refused with 429 `too_many_requests`.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = bounds::DEFAULT_MAX_SESSIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_sessions: usize,
    /// Live sessions per client IP address (429 `too_many_requests`).
    #[arg(long, env = "MAX_SESSIONS_PER_IP", default_value_t = bounds::DEFAULT_MAX_SESSIONS_PER_IP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_sessions_per_ip: usize,
    /// A session that never opened a WebSocket or an SSE stream expires this long after its
    /// handshake, s (instead of `--session-ttl-s`).
    #[arg(long = "unattached-ttl-s", env = "UNATTACHED_TTL_SECONDS", default_value_t = bounds::DEFAULT_UNATTACHED_TTL_S,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub unattached_ttl_s: u64,
    /// Rooms in total; a `join` creating one more is refused with `too_many_requests`.
    #[arg(long, env = "MAX_ROOMS", default_value_t = bounds::DEFAULT_MAX_ROOMS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_rooms: usize,
    /// Members per room; a `join` to a full room is refused with `room_full`.
    #[arg(long, env = "MAX_ROOM_MEMBERS", default_value_t = bounds::DEFAULT_MAX_ROOM_MEMBERS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_room_members: usize,
    /// Outbound queue budget per session and lane, bytes (with or without a socket attached);
    /// a relay beyond it is refused with `backpressure`.
    #[arg(long, env = "LANE_QUEUE_BYTES", default_value_t = bounds::DEFAULT_LANE_QUEUE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=(1 << 30)))]
    pub lane_queue_bytes: usize,
    /// SSE streams open at once per session (429 `too_many_requests`).
    #[arg(long, env = "MAX_SSE_STREAMS_PER_SESSION", default_value_t = bounds::DEFAULT_MAX_SSE_STREAMS_PER_SESSION,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub max_sse_streams_per_session: usize,
    /// SSE streams open at once per client IP address (429 `too_many_requests`).
    #[arg(long, env = "MAX_SSE_PER_IP", default_value_t = bounds::DEFAULT_MAX_SSE_PER_IP,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_sse_per_ip: usize,
    /// An SSE write that does not complete within this is abandoned and the stream closed, ms.
    #[arg(long, env = "SSE_WRITE_TIMEOUT_MS", default_value_t = bounds::DEFAULT_SSE_WRITE_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_write_timeout_ms: u64,
    /// An SSE stream ends cleanly after this long; the client resumes with `Last-Event-ID`, s.
    #[arg(long, env = "SSE_MAX_AGE_S", default_value_t = bounds::DEFAULT_SSE_MAX_AGE_S,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_max_age_s: u64,
    /// Signaling server (`GET /api/signaling`): outbound queue budget per peer, bytes.
    #[arg(long, env = "SIGNALING_QUEUE_BYTES", default_value_t = bounds::DEFAULT_SIGNALING_QUEUE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=(1 << 30)))]
    pub signaling_queue_bytes: usize,
    /// Most changes in one `music-changes` push; a bigger push is refused whole with
    /// `limit_exceeded` (PROTOCOL.md §13.9, §15).
    #[arg(long, env = "MAX_CHANGES_PER_PUSH", default_value_t = MAX_CHANGES_PER_PUSH,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_CHANGES_PER_PUSH as u64))]
    pub max_changes_per_push: usize,
    /// Most device origins in one music room's version vector; a push naming more new ones is
    /// refused whole with `limit_exceeded` (PROTOCOL.md §13.9, §15).
    #[arg(long, env = "MAX_ORIGINS_PER_ROOM", default_value_t = MAX_ORIGINS_PER_ROOM,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_ORIGINS_PER_ROOM as u64))]
    pub max_origins_per_room: usize,
    // --- end of bounds ---
    /// Serve `GET /metrics` to anyone (a scraper on another host). Default: off, `/metrics`
    /// is an admin route (loopback client and the admin token), like `/pulse/stream`.
    #[arg(long, env = "P3_METRICS_PUBLIC", default_value_t = false)]
    pub metrics_public: bool,
    /// How often the pulse stream broadcasts this node's `metrics` to registered
    /// connections, ms (PROTOCOL.md §18.2).
    #[arg(long, env = "PULSE_INTERVAL_MS", default_value_t = DEFAULT_PULSE_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    pub pulse_interval_ms: u64,
    /// Messages per pulse stream connection. Over it: `error` `rate_limited` (the message is
    /// not handled); more than `--rate-strikes` in a row close the socket with 4429.
    #[arg(long, env = "RATE_PULSE", default_value_t = DEFAULT_RATE_PULSE,
          value_parser = Rate::parse)]
    pub rate_pulse: Rate,
    /// Token of the admin endpoints (`/api/admin/*`: `Authorization: Bearer <token>`, besides
    /// a loopback client), at least 16 characters. Unset: a random one is generated and
    /// printed on stdout at start-up (`admin token: <token>`). Never logged.
    #[arg(long, env = "P3_ADMIN_TOKEN")]
    pub admin_token: Option<crate::auth::AdminToken>,
    /// A ticket (`POST .../ticket`, `?ticket=` on WebSocket and SSE URLs) is valid this long
    /// after it is minted, ms (PROTOCOL.md §2.1).
    #[arg(long, env = "TICKET_TTL_MS", default_value_t = crate::auth::TICKET_TTL_MS,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub ticket_ttl_ms: u64,
    /// The signaling server's `signalingToken` (`GET /api/signaling`, `auth`) is valid this
    /// long after the handshake that gave it, s; a new handshake gives a new one.
    #[arg(long, env = "SIGNALING_TOKEN_TTL_S", default_value_t = DEFAULT_TTL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub signaling_token_ttl_s: u64,
    /// TEST ONLY: delay every WebSocket frame, in each direction and per connection, by this
    /// many ms plus the jitter (a slow link for music-sync tests). Frames stay in order, as on
    /// TCP. 0: no delay. Never use in production.
    #[arg(long, env = "TEST_LATENCY_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub test_latency_ms: u64,
    /// TEST ONLY: uniform jitter around `--test-latency-ms`, ± ms (a delay is never below 0).
    #[arg(long, env = "TEST_JITTER_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub test_jitter_ms: u64,
    /// STUN server URLs for `GET /api/webrtc/config`, comma-separated; `""` for none
    /// (loopback tests). Default: the seed's two Google STUN servers.
    #[arg(long = "stun", env = "STUN_URLS", default_value = DEFAULT_STUN)]
    pub stun_urls: String,
    /// TURN server URLs, comma-separated; the TURN entry is only sent when `TURN_USERNAME`
    /// and `TURN_CREDENTIAL`, or `TURN_SECRET`, are set. Default: the seed's `turn:turn.replit.dev:3478` (udp, tcp).
    #[arg(long = "turn-url", env = "TURN_URLS", default_value = DEFAULT_TURN)]
    pub turn_urls: String,
    /// TURN user name (seed 001 `TURN_USERNAME`).
    #[arg(long, env = "TURN_USERNAME")]
    pub turn_username: Option<String>,
    /// TURN credential (seed 001 `TURN_CREDENTIAL`); prefer the environment variable to the
    /// flag, which other users of the machine can see.
    #[arg(long, env = "TURN_CREDENTIAL", hide_env_values = true)]
    pub turn_credential: Option<String>,
    /// TURN REST shared secret (`TURN_SECRET`, coturn's `static-auth-secret`): when set,
    /// `GET /api/webrtc/config` answers ephemeral credentials (`username`
    /// `<expiry s>:<user>`, `credential` base64(HMAC-SHA1(secret, username))) instead of
    /// `TURN_USERNAME`/`TURN_CREDENTIAL`, and outside `--room-access open` only to a session
    /// in a room. Prefer the environment variable to the flag.
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<Secret>,
    /// Lifetime of TURN REST credentials, s: 60..=604800 (one minute to seven days).
    #[arg(long = "turn-ttl-s", env = "TURN_TTL_SECONDS", default_value_t = crate::auth::turn::DEFAULT_TURN_TTL_S,
          value_parser = clap::value_parser!(u64).range(60..=86_400 * 7))]
    pub turn_ttl_s: u64,
    /// How long a call (`POST /api/nexus/calls/initiate`, PROTOCOL.md §13.16) rings before it
    /// expires unanswered, ms.
    #[arg(long, env = "P3_CALL_RING_TIMEOUT_MS", default_value_t = p3_lanes::core::call::RING_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub call_ring_timeout_ms: u64,
    // --- Identity and room access (issue 12, PROTOCOL.md §3.1, §6.1) ---
    /// Who may join a room: `open` (anyone; the default), `authenticated` (a verified
    /// identity: SIWE or an app JWT), `token` (an app JWT whose `rooms` claim names the room).
    #[arg(long, env = "P3_ROOM_ACCESS", value_enum, default_value = "open")]
    pub room_access: RoomAccess,
    /// Directory of the server's small state file (`music-dj.json`: each music room's DJ
    /// identity and epoch, PROTOCOL.md §13.15), so the DJ survives a restart. Default: none,
    /// nothing is written and DJs are forgotten on restart (`npm start` passes `.p3-state`).
    #[arg(long, env = "P3_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// How long a music room's DJ role waits for its identity to come back after its last
    /// session vanished (socket closed, session expired, server restart), s. Within it
    /// another identity's claim is refused (`not_controller`); an explicit leave frees it at
    /// once.
    #[arg(long = "dj-grace-s", env = "P3_DJ_GRACE_SECONDS", default_value_t = DEFAULT_DJ_GRACE_S,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub dj_grace_s: u64,
    /// The SIWE `domain` sign-in messages must name (e.g. `app.example.com`); default: the
    /// handshake request's `Host` header. Set it behind a proxy that rewrites `Host`.
    #[arg(long, env = "P3_SIWE_DOMAIN")]
    pub siwe_domain: Option<String>,
    /// EIP-155 chain ids a SIWE message may name, comma-separated.
    #[arg(
        long,
        env = "P3_SIWE_CHAIN_IDS",
        value_delimiter = ',',
        default_value = "1"
    )]
    pub siwe_chain_ids: Vec<u64>,
    /// Lifetime of a SIWE nonce from `GET /api/protocol/v2/auth/nonce`, s; a message issued
    /// longer ago than this is `expired`.
    #[arg(long = "siwe-nonce-ttl-s", env = "P3_SIWE_NONCE_TTL_SECONDS", default_value_t = crate::auth::nonce::DEFAULT_NONCE_TTL_S,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub siwe_nonce_ttl_s: u64,
    /// App JWTs signed HS256 with this secret (at least 32 bytes). Prefer the environment
    /// variable to the flag.
    #[arg(long, env = "P3_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// App JWTs signed ES256 or EdDSA: the PEM file of the public key (`BEGIN PUBLIC KEY`).
    #[arg(long, env = "P3_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Rate limiting (PROTOCOL.md §15): `on`, or `off` to disable every rate limit below (load
    /// benchmarks).
    #[arg(long, env = "RATE_LIMITS", value_enum, default_value = "on")]
    pub rate_limits: RateLimitsMode,
    /// Handshakes per client IP (IPv6: per /64), as `N/s` or `N/min` with an optional
    /// `,burst=B` (default burst `N`). Over it: HTTP 429 `rate_limited`.
    #[arg(long, env = "RATE_IP_HANDSHAKE", default_value_t = DEFAULT_RATE_IP_HANDSHAKE,
          value_parser = Rate::parse)]
    pub rate_ip_handshake: Rate,
    /// SSE lane POSTs per client IP (same format and answer).
    #[arg(long, env = "RATE_IP_POST", default_value_t = DEFAULT_RATE_IP_POST,
          value_parser = Rate::parse)]
    pub rate_ip_post: Rate,
    /// WebSocket and SSE upgrades per client IP, `/api/signaling` included (same format and
    /// answer).
    #[arg(long, env = "RATE_IP_UPGRADE", default_value_t = DEFAULT_RATE_IP_UPGRADE,
          value_parser = Rate::parse)]
    pub rate_ip_upgrade: Rate,
    /// Control-lane (1) messages per session, over WebSocket or POST. Over it: a Control
    /// `error` `rate_limited` (the frame is not processed), or HTTP 429.
    #[arg(long, env = "RATE_CONTROL", default_value_t = DEFAULT_RATE_CONTROL,
          value_parser = Rate::parse)]
    pub rate_control: Rate,
    /// Sync-lane (7) messages per session (same answer).
    #[arg(long, env = "RATE_SYNC", default_value_t = DEFAULT_RATE_SYNC,
          value_parser = Rate::parse)]
    pub rate_sync: Rate,
    /// Messages per session on each other lane, each lane with its own budget (same answer).
    #[arg(long, env = "RATE_BULK", default_value_t = DEFAULT_RATE_BULK,
          value_parser = Rate::parse)]
    pub rate_bulk: Rate,
    /// Rate-limited frames a socket may send (a burst, refilled at this many per 10 s) before
    /// it is closed with 4429 ("rate limited").
    #[arg(long, env = "RATE_STRIKES", default_value_t = DEFAULT_RATE_STRIKES,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_strikes: u32,
    /// Redis URL (`redis://host:port/db`) of the cluster ([`crate::cluster`]): with it, every
    /// node given the same URL behind a load balancer serves one set of sessions and rooms.
    /// Default: none, a single process holding everything in memory.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// This node's name in the cluster (letters, digits, `-`, `_`; at most 64). Default: a
    /// random one at each start.
    #[arg(long, env = "P3_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// Entries kept per room stream in Redis (approximately: `MAXLEN ~`): how far behind a
    /// node may fall (a dropped Redis connection) before its members get a `discontinuity`.
    #[arg(long, env = "P3_ROOM_STREAM_LEN", default_value_t = DEFAULT_ROOM_STREAM_LEN,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub room_stream_len: u64,
}

/// Default `--room-stream-len`: entries kept per room stream.
pub const DEFAULT_ROOM_STREAM_LEN: u64 = 10_000;

fn parse_node_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err("1 to 64 letters, digits, '-' or '_'".into())
    }
}

/// A secret flag value (`--jwt-secret`, `--turn-secret`): its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// `--stun` default: the seed's STUN servers.
const DEFAULT_STUN: &str = "stun:stun.l.google.com:19302,stun:stun1.l.google.com:19302";
/// `--turn-url` default: the seed's TURN URLs.
const DEFAULT_TURN: &str =
    "turn:turn.replit.dev:3478?transport=udp,turn:turn.replit.dev:3478?transport=tcp";

fn parse_frame_limit(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !(64..=(256 << 20)).contains(&n) {
        return Err("must be in 64..=268435456 bytes".into());
    }
    Ok(n)
}

fn parse_queue_frames(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !(1..=1_000_000).contains(&n) {
        return Err("must be in 1..=1000000 frames".into());
    }
    Ok(n)
}

impl Default for Config {
    /// The documented defaults, without reading the environment or the command line.
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8080,
            app_version: env!("CARGO_PKG_VERSION").into(),
            reported_version: None,
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 60_000,
            session_ttl_s: DEFAULT_TTL_SECONDS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            static_dir: "www".into(),
            pkg_dir: "pkg".into(),
            queue_frames: DEFAULT_QUEUE_FRAMES,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            media_dir: "media".into(),
            sse_history: DEFAULT_SSE_HISTORY,
            sse_history_bytes: DEFAULT_SSE_HISTORY_BYTES,
            sse_keepalive_ms: 15_000,
            sse_retry_ms: 1_000,
            // Bounds (issue 11).
            max_handshake_bytes: bounds::DEFAULT_MAX_HANDSHAKE_BYTES,
            max_device_info_bytes: bounds::DEFAULT_MAX_DEVICE_INFO_BYTES,
            max_sessions: bounds::DEFAULT_MAX_SESSIONS,
            max_sessions_per_ip: bounds::DEFAULT_MAX_SESSIONS_PER_IP,
            unattached_ttl_s: bounds::DEFAULT_UNATTACHED_TTL_S,
            max_rooms: bounds::DEFAULT_MAX_ROOMS,
            max_room_members: bounds::DEFAULT_MAX_ROOM_MEMBERS,
            lane_queue_bytes: bounds::DEFAULT_LANE_QUEUE_BYTES,
            max_sse_streams_per_session: bounds::DEFAULT_MAX_SSE_STREAMS_PER_SESSION,
            max_sse_per_ip: bounds::DEFAULT_MAX_SSE_PER_IP,
            sse_write_timeout_ms: bounds::DEFAULT_SSE_WRITE_TIMEOUT_MS,
            sse_max_age_s: bounds::DEFAULT_SSE_MAX_AGE_S,
            signaling_queue_bytes: bounds::DEFAULT_SIGNALING_QUEUE_BYTES,
            max_changes_per_push: MAX_CHANGES_PER_PUSH,
            max_origins_per_room: MAX_ORIGINS_PER_ROOM,
            admin_token: None,
            ticket_ttl_ms: crate::auth::TICKET_TTL_MS,
            signaling_token_ttl_s: DEFAULT_TTL_SECONDS,
            test_latency_ms: 0,
            test_jitter_ms: 0,
            stun_urls: DEFAULT_STUN.into(),
            turn_urls: DEFAULT_TURN.into(),
            turn_username: None,
            turn_credential: None,
            turn_secret: None,
            turn_ttl_s: crate::auth::turn::DEFAULT_TURN_TTL_S,
            call_ring_timeout_ms: p3_lanes::core::call::RING_TIMEOUT_MS,
            room_access: RoomAccess::Open,
            state_dir: None,
            dj_grace_s: DEFAULT_DJ_GRACE_S,
            siwe_domain: None,
            siwe_chain_ids: vec![1],
            siwe_nonce_ttl_s: crate::auth::nonce::DEFAULT_NONCE_TTL_S,
            jwt_secret: None,
            jwt_public_key: None,
            rate_limits: RateLimitsMode::On,
            rate_ip_handshake: DEFAULT_RATE_IP_HANDSHAKE,
            rate_ip_post: DEFAULT_RATE_IP_POST,
            rate_ip_upgrade: DEFAULT_RATE_IP_UPGRADE,
            rate_control: DEFAULT_RATE_CONTROL,
            rate_sync: DEFAULT_RATE_SYNC,
            rate_bulk: DEFAULT_RATE_BULK,
            rate_strikes: DEFAULT_RATE_STRIKES,
            metrics_public: false,
            pulse_interval_ms: DEFAULT_PULSE_INTERVAL_MS,
            rate_pulse: DEFAULT_RATE_PULSE,
            redis_url: None,
            node_id: None,
            room_stream_len: DEFAULT_ROOM_STREAM_LEN,
        }
    }
}

impl Config {
    /// Session lifetime after the last activity.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_s)
    }

    /// Silence after which a WebSocket is closed with 4408.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.heartbeat_timeout_ms)
    }

    /// The artificial one-way delay of `--test-latency-ms` / `--test-jitter-ms`, if any:
    /// `(latency, jitter)`; each frame waits `latency ± jitter` (uniform, at least 0).
    pub fn test_delay(&self) -> Option<(Duration, Duration)> {
        (self.test_latency_ms > 0 || self.test_jitter_ms > 0).then(|| {
            (
                Duration::from_millis(self.test_latency_ms),
                Duration::from_millis(self.test_jitter_ms),
            )
        })
    }

    /// The ICE servers of `GET /api/webrtc/config` (seed 001 `getWebRTCConfig`).
    pub fn ice_settings(&self) -> IceSettings {
        IceSettings {
            stun_urls: parse_url_list(&self.stun_urls),
            turn_urls: parse_url_list(&self.turn_urls),
            turn_credentials: self.turn_username.clone().zip(self.turn_credential.clone()),
        }
    }

    /// How often the sweeper looks for expired sessions: `min(ttl / 4, unattached ttl / 4,
    /// 30 s)`, at least 100 ms.
    pub fn sweep_period(&self) -> Duration {
        (self.ttl().min(Duration::from_secs(self.unattached_ttl_s)) / 4)
            .min(Duration::from_secs(30))
            .max(Duration::from_millis(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_default_matches() {
        let c = Config::try_parse_from([
            "server-stub",
            "--port",
            "0",
            "--heartbeat-timeout-ms",
            "500",
        ])
        .unwrap();
        assert_eq!(c.port, 0);
        assert_eq!(c.heartbeat_timeout_ms, 500);
        assert!(Config::try_parse_from(["server-stub", "--max-frame-bytes", "1"]).is_err());
        let d = Config::default();
        assert_eq!(d.sweep_period(), Duration::from_secs(15));
        let short = Config {
            session_ttl_s: 1,
            ..Config::default()
        };
        assert_eq!(short.sweep_period(), Duration::from_millis(250));
        // The seed's STUN list by default; `--stun ""` for none.
        assert_eq!(d.ice_settings().stun_urls.len(), 2);
        assert_eq!(d.ice_settings().turn_credentials, None);
        let c =
            Config::try_parse_from(["server-stub", "--stun", "", "--turn-url", "turn:a"]).unwrap();
        assert!(c.ice_settings().stun_urls.is_empty());
        assert_eq!(c.ice_settings().turn_urls, vec!["turn:a"]);
        // Identity flags: open rooms and chain 1 unless told otherwise.
        let parsed = Config::try_parse_from(["server-stub"]).unwrap();
        assert_eq!(parsed.room_access, RoomAccess::Open);
        assert_eq!(parsed.siwe_chain_ids, d.siwe_chain_ids);
        assert_eq!(parsed.siwe_nonce_ttl_s, d.siwe_nonce_ttl_s);
        assert_eq!(parsed.turn_ttl_s, d.turn_ttl_s);
        let c = Config::try_parse_from([
            "server-stub",
            "--room-access",
            "token",
            "--siwe-chain-ids",
            "1,137",
        ])
        .unwrap();
        assert_eq!(c.room_access, RoomAccess::Token);
        assert_eq!(c.siwe_chain_ids, vec![1, 137]);
        assert!(Config::try_parse_from(["server-stub", "--room-access", "closed"]).is_err());
    }

    #[test]
    fn rate_flags_parse_and_defaults_match() {
        // The parsed defaults are Config::default()'s, and print as COMMON.md pins them.
        let parsed = Config::try_parse_from(["server-stub"]).unwrap();
        let d = Config::default();
        assert_eq!(parsed.rate_limits, RateLimitsMode::On);
        for (p, d, text) in [
            (
                parsed.rate_ip_handshake,
                d.rate_ip_handshake,
                "20/s,burst=100",
            ),
            (parsed.rate_ip_post, d.rate_ip_post, "500/s,burst=1000"),
            (parsed.rate_ip_upgrade, d.rate_ip_upgrade, "20/s,burst=100"),
            (parsed.rate_control, d.rate_control, "50/s,burst=200"),
            (parsed.rate_sync, d.rate_sync, "100/s,burst=400"),
            (parsed.rate_bulk, d.rate_bulk, "5000/s,burst=10000"),
        ] {
            assert_eq!(p, d);
            assert_eq!(p.to_string(), text);
        }
        assert_eq!((parsed.rate_strikes, d.rate_strikes), (100, 100));
        let c = Config::try_parse_from([
            "server-stub",
            "--rate-limits",
            "off",
            "--rate-control",
            "3/min",
            "--rate-bulk",
            "10/s,burst=2",
            "--rate-strikes",
            "5",
        ])
        .unwrap();
        assert_eq!(c.rate_limits, RateLimitsMode::Off);
        assert_eq!(c.rate_control, Rate::per_minute(3, 3).unwrap());
        assert_eq!(c.rate_bulk, Rate::per_second(10, 2).unwrap());
        assert_eq!(c.rate_strikes, 5);
        // Bad input is a clap error, never a panic or a silent default.
        for (flag, bad) in [
            ("--rate-limits", "maybe"),
            ("--rate-ip-handshake", "20"),
            ("--rate-ip-post", "0/s"),
            ("--rate-ip-upgrade", "20/h"),
            ("--rate-control", "50/s,burst=0"),
            ("--rate-sync", "-1/s"),
            ("--rate-bulk", "5000/s,burst=x"),
            ("--rate-strikes", "0"),
            ("--rate-strikes", "-3"),
        ] {
            let arg = format!("{flag}={bad}");
            assert!(
                Config::try_parse_from(["server-stub", arg.as_str()]).is_err(),
                "{arg} should be refused"
            );
        }
    }
}
