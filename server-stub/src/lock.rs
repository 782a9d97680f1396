//! Locking server-wide state (issue 11 "a poisoned lock is never silently reused
//! half-updated"): [`lock_or_abort`]. A leaf, used by the app state, the music room map and the
//! signaling hub. Per-room and per-session locks reset their own state instead (see
//! [`crate::music`] and the registry's outbound module).

use std::sync::{Mutex, MutexGuard};

/// Locks `m`; if a panic poisoned it (its state may be half-updated and every session depends
/// on it), logs `what` at `error` and aborts the process: the server goes down loudly and its
/// supervisor restarts it, rather than serving from inconsistent state.
pub(crate) fn lock_or_abort<'a, T>(m: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    match m.lock() {
        Ok(g) => g,
        Err(_) => {
            tracing::error!(lock = what, "lock poisoned by a panic while held: its state may be half-updated; aborting the server");
            eprintln!("server-stub: {what} lock poisoned by a panic; aborting");
            std::process::abort();
        }
    }
}
