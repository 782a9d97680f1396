//! Music sync, sans-IO (issue #4; seed 004 "P2P Music Sync", Tier 1 over the server): a group
//! of devices plays the same track at the same position while one controller (DJ) drives it.
//!
//! | module | role |
//! | --- | --- |
//! | [`clock`] | NTP-style offset and drift of the local clock against the shared (server) clock |
//! | [`state`] | the room's shared playback state, seed 004's `music-control` / `sync-state` messages, the authority that orders changes |
//! | [`follower`] | keeps one media element on the room state with a correction ladder |
//! | [`position`] | estimates the element's position from its readings over time (coarse `currentTime`) |
//! | [`peer_clock`] | while serverless, where clock probes go (the controller over the mesh) and who answers them |
//!
//! The pieces meet only through values: a device runs a [`clock::ClockSync`] on its Control
//! lane probes and hands its [`clock::ClockMapping`] to a [`follower::Follower`], which follows
//! the [`state::RoomState`]s received on the Sync lane; server-stub runs a
//! [`state::RoomAuthority`] per music room. Nothing here names a transport, so issue #5 runs
//! the same machines over a WebRTC DataChannel mesh.

pub mod clock;
pub mod follower;
pub mod peer_clock;
pub mod position;
pub mod state;
