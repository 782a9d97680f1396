//! The sans-IO protocol core: wire types, codec and state machines of P3 Protocol's
//! real-time layer. No networking, no clock, no browser APIs: callers pass bytes and the
//! current time (ms) in, and take frames, events and the next deadline out. It builds and is
//! tested natively; server-stub uses it for every wire type.
//!
//! Every state machine follows the one drive contract of [`drive`]: `now` as
//! [`drive::Millis`], last; `poll_output(now)` drained until its `Timeout`.
//!
//! By layer (each module's own docs give its drive contract and sources):
//!
//! | layer | module | implements |
//! | --- | --- | --- |
//! | contract | [`drive`] | the one drive contract: [`drive::Millis`], [`drive::Machine`], [`drive::drain`] (issue 13) |
//! | codec | [`codec`] | dictionary MessagePack and JSON payloads; learned shapes ([`codec::learned`], issue 15) |
//! | codec | [`dictionary`] | the negotiated token dictionary (seed 000 "Handshake Response") |
//! | codec | [`payload`] | payload encode/decode with dictionary-version checks |
//! | codec | [`varint`], [`tape`] | LEB128 varints of every frame header; the value tape of the codec |
//! | transport | [`lane`] | the 8 lanes and their registry (seed 000 "8-Lane Protocol") |
//! | transport | [`handshake`], [`auth`] | handshake v2 bodies and negotiation (seed 000 "Session Handshake"); verified identity, SIWE text (EIP-4361; issue 12) |
//! | transport | [`frame`] | the binary frame layout (PROTOCOL.md "Frames") |
//! | transport | [`control`] | Control messages: rooms, heartbeats, errors (seed 001) |
//! | transport | [`client`] | the client connection machine: heartbeats, reconnect; owns the [`mux`] (seed 001) |
//! | transport | [`mux`] | the lane multiplexer (v2 frames): priority scheduling, chunking, acks, resume (seed 000, 001; issue 3) |
//! | transport | [`sse`] | SSE lanes: stream URLs and negotiation, event shapes, events ⇄ frames, `POST` (seed 001; issue 3) |
//! | transport | [`rate`] | GCRA pacing of the server's per-session lane quotas (issue 11) |
//! | transport | [`error`], [`close`] | error codes with fault class and HTTP status; the one table of close codes |
//! | mesh | [`p2p`], [`call`] | peer-to-peer and offline tiers: mesh, tier decision, election, change queue, sealing, signaling; calls (seed 004, 001; issue 5) |
//! | music | [`music`] | music rooms by role: the device's `Room` and the server's room authority (seed 004 Tiers 1-3; issue 13) |
//! | music | [`sync`] | clock offset, shared playback state, media follower (seed 004) |
//! | pwa | [`pwa`] | PWA cache protection: version check decisions, purge ownership, multi-tab election (seed 000) |

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
