//! Music rooms (seed 004; PROTOCOL.md §12, §13): the machines of a music room, by role.

pub mod authority;
