//! The sans-IO protocol core: wire types, codec and state machines of P3 Protocol's
//! real-time layer. No networking, no clock, no browser APIs: callers pass bytes and the
//! current time (ms) in, and take frames, events and the next deadline out. It builds and is
//! tested natively; server-stub uses it for every wire type.
//!
//! | module | implements |
//! | --- | --- |
//! | [`lane`] | the 8 lanes and their registry (seed 000 "8-Lane Protocol") |
//! | [`auth`] | verified identity: handshake `auth`, `identity`, SIWE message text (EIP-4361; issue 12) |
//! | [`handshake`] | handshake v2 bodies and negotiation (seed 000 "Session Handshake") |
//! | [`drive`] | the one drive contract of every state machine: [`drive::Millis`], [`drive::Machine`], [`drive::drain`] (issue 13) |
//! | [`dictionary`] | the negotiated token dictionary (seed 000 "Handshake Response") |
//! | [`codec`] | dictionary MessagePack and JSON payloads; learned shapes ([`codec::learned`], issue 15) |
//! | [`frame`] | the binary frame layout (PROTOCOL.md "Frames") |
//! | [`payload`] | payload encode/decode with dictionary-version checks |
//! | [`control`] | Control messages: rooms, heartbeats, errors (seed 001) |
//! | [`client`] | the client connection state machine: heartbeats, reconnect (seed 001) |
//! | [`music`] | music rooms by role, sans-IO: the device's `Room` and the server's room authority (seed 004 Tiers 1-3; issue 13) |
//! | [`mux`] | the lane multiplexer (v2 frames): priority scheduling, chunking, acks, resume (seed 000, 001; issue 3) |
//! | [`p2p`] | peer-to-peer and offline tiers: tier decision, election, change queue, sealing, signaling (seed 004, 001; issue 5) |
//! | [`pwa`] | PWA cache protection: version check decisions, purge ownership, multi-tab election (seed 000) |
//! | [`rate`] | GCRA pacing of the server's per-session lane quotas (issue 11) |
//! | [`sse`] | SSE lanes: stream URLs and negotiation, event shapes, events ⇄ frames, `POST` (seed 001; issue 3) |
//! | [`varint`] | LEB128 varints of every frame header |
//! | [`error`] | machine-readable error codes shared by server and SDK, their fault class and HTTP status |
//! | [`close`] | the one table of WebSocket close codes (server and SDK) |
//! | [`sync`] | music sync: clock offset, shared playback state, media follower (seed 004) |

pub mod auth;
pub mod call;
pub mod client;
pub mod close;
pub mod codec;
pub mod control;
pub mod dictionary;
pub mod drive;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod lane;
pub mod music;
pub mod mux;
pub mod p2p;
pub mod payload;
pub mod pwa;
pub mod rate;
pub mod sse;
pub mod sync;
pub mod tape;
pub mod varint;
