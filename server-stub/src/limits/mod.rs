//! What one client may make the server hold or do (issue 11, PROTOCOL.md §15).
//!
//! | module | implements |
//! | --- | --- |
//! | [`bounds`] | size and count bounds: handshake body and fields, sessions, rooms, queues, SSE streams, signaling queues |

pub mod bounds;
