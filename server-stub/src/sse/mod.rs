//! SSE lanes (seed 001 "Server-Sent Events (SSE)", seed 000 lane `url`s; issue 3; PROTOCOL.md
//! §14): a session's lanes as `text/event-stream`, and `POST` to send on a lane.
//!
//! | route | does |
//! | --- | --- |
//! | `GET /api/protocol/v2/session/{sid}/lane/{id}/stream` | one lane's events |
//! | `GET /api/protocol/v2/session/{sid}/stream?lanes=1,2,5` | several lanes on one stream (default: every granted lane) |
//! | `POST /api/protocol/v2/session/{sid}/lane/{id}[?to=<sid>]` | sends one message, 202 (body `application/json` or `application/msgpack`; at most once per `P3-Seq`, §14.6) |
//! | `POST /api/admin/sse/close[?session=<sid>]` | ends SSE streams (clients resume with `Last-Event-ID`); loopback only |
//!
//! Per session an `SseHub` (module `hub`) keeps a bounded history per lane of what the session received
//! (the same messages its WebSocket gets: relays, server data, Control messages), each with an
//! event id that increases across the session's lanes. Streams read that history from their
//! cursor (`Last-Event-ID`, header or `lastEventId` query) and wait on the hub's `watch` for
//! more, so a stream that reconnects loses nothing the history still holds, and gets an
//! explicit `discontinuity` event for each lane whose history forgot part of what it missed.
//! An `sse` session has a hub from its handshake; any other session gets one when it first
//! opens a stream. While a stream is open the session does not expire; a session with a hub
//! keeps its room while its streams reconnect (until its TTL ends).
//!
//! Each stream starts with `retry: <--sse-retry-ms>` and, when it carries lane 1, a per-stream
//! Control `welcome` (no event id, not in the history). Keep-alive comments follow silence of
//! `--sse-keepalive-ms`. Streams end when the session is deleted or expires, when the server
//! shuts down, or on `POST /api/admin/sse/close`.
//!
//! | module | holds |
//! | --- | --- |
//! | `hub` | the per-session history and its streams' wake-up (a leaf the registry keeps) |
//! | `handler` | the HTTP handlers: streams, `POST` to a lane, admin close |

mod handler;
pub(crate) mod hub;

pub use handler::{admin_close, lane_stream, post, stream, StreamsClosed};
