//! PWA cache protection, sans-IO (seed 000 "PWA Cache Protection"): decide what a page (or a
//! service worker) whose build may be stale must do, which caches and service-worker
//! registrations it owns, and which of several open tabs performs the purge.
//!
//! The seed's script compares `GET /api/version` with `<meta name="app-version">` and on a
//! mismatch unregisters every service worker, deletes every cache and reloads. Done naively
//! that reloads forever when the server claims a version the page cannot reach (a CDN still
//! serving the old `index.html`, a half-finished deploy), reloads every open tab at once,
//! throws away unsaved state, and deletes caches other code on the origin owns. This module
//! holds the rules that prevent that; `crate::wasm::pwa` performs the I/O.
//!
//! # Pieces
//! - [`decide`]: one check's outcome from the page's version, the server's answer, the
//!   remembered [`PurgeRecord`] and two wall-clock times. Pure function.
//! - [`Ownership`]: which caches and registrations a purge may touch (scope and cache-name
//!   prefixes; default: every cache and every registration, as the seed, except the guard's
//!   own record cache).
//! - [`Coordinator`]: the multi-tab election over a broadcast channel ([`TabMessage`]): the
//!   tabs that found the mismatch claim, the smallest tab id leads and purges, the others
//!   wait for `purged` and then reload when their app says it is safe.
//!
//! # Loop prevention (the record)
//! Before purging, the leader stores a [`PurgeRecord`] `{target, attempts, startedAt}` under a
//! key of the guard's own, and sets `finishedAt` once the caches are gone. A page compares
//! the record with the wall-clock time it was loaded at (`performance.timeOrigin`):
//! - loaded **before** the purge finished: it is an old tab, so it only reloads;
//! - loaded **after** it and still stale: the purge did not help. With `attempts` already at
//!   [`GuardConfig::max_attempts`] (default 1) this is [`Decision::StaleAfterPurge`], an
//!   error for the app, never another reload.
//!
//! So there is at most `max_attempts` purge-and-reload per target version, whatever the number
//! of tabs, reloads or version pushes.
//!
//! # Coordinator drive contract (str0m style)
//! The one contract of [`crate::core::drive`]: a monotonic `now` ([`Millis`]) from the
//! driver, always the last argument. After every call, drain
//! [`Coordinator::poll_output`] until it returns [`CoordOutput::Timeout`]:
//! [`CoordOutput::Broadcast`] → post the message on the channel; [`CoordOutput::Lead`] → run
//! the app's hook, purge, then call [`Coordinator::purge_finished`] (or
//! [`Coordinator::release`] if the hook postponed or the purge failed);
//! [`CoordOutput::Reload`] → another context purged: reload when the app says it is safe;
//! [`CoordOutput::Recheck`] → another context saw a new version: run a check;
//! [`CoordOutput::Timeout`] → call [`Coordinator::handle_timeout`] then.

use crate::core::drive::Millis;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};

/// Default key of the guard's own state: the name of its record cache (Cache Storage) and its
/// `localStorage` key where Cache Storage is not available.
pub const DEFAULT_STORAGE_KEY: &str = "p3-lanes-pwa-guard";
/// Default time tabs collect each other's claims before electing a leader, ms.
pub const DEFAULT_CLAIM_WINDOW_MS: u64 = 300;
/// Default period of the leader's `purging` heartbeat, ms.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
/// Default silence from the leader after which followers re-check, ms.
pub const DEFAULT_FOLLOW_TIMEOUT_MS: u64 = 5_000;
/// Default age after which an unfinished purge counts as abandoned, ms.
pub const DEFAULT_PURGE_TIMEOUT_MS: u64 = 30_000;

/// Which caches and service-worker registrations belong to the app, so a purge touches only
/// those. IndexedDB, `localStorage` and cookies are never touched, whatever this says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Absolute scope URL (e.g. `https://example.org/app/`); a registration is the app's when
    /// its scope starts with it, the same prefix rule service-worker scopes use. `None`:
    /// every registration of the origin (the seed's behaviour).
    pub scope: Option<String>,
    /// Cache names the app owns start with one of these. Empty: every cache (the seed's
    /// behaviour).
    pub cache_prefixes: Vec<String>,
    /// The guard's own record cache: never deleted, so the record survives the purge.
    pub record_cache: String,
}

impl Default for Ownership {
    fn default() -> Self {
        Ownership {
            scope: None,
            cache_prefixes: Vec::new(),
            record_cache: DEFAULT_STORAGE_KEY.to_owned(),
        }
    }
}

impl Ownership {
    /// Whether a purge may delete the cache named `name`.
    pub fn owns_cache(&self, name: &str) -> bool {
        name != self.record_cache
            && (self.cache_prefixes.is_empty()
                || self.cache_prefixes.iter().any(|p| name.starts_with(p)))
    }

    /// Whether a purge may unregister the registration whose `scope` (an absolute URL) is given.
    pub fn owns_registration(&self, scope: &str) -> bool {
        match &self.scope {
            Some(s) => scope.starts_with(s.as_str()),
            None => true,
        }
    }

    /// The names among `names` that a purge deletes, in their order.
    pub fn caches_to_delete<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        names.into_iter().filter(|n| self.owns_cache(n)).collect()
    }
}

/// Tuning of the guard. Times in ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Purge-and-reload attempts per target version before [`Decision::StaleAfterPurge`];
    /// at least 1 (default 1).
    pub max_attempts: u32,
    /// After this long since the last attempt for a target, forget it and allow a new round of
    /// attempts (e.g. one day). `None` (default): never; the record stays until another
    /// version is targeted.
    pub retry_after_ms: Option<u64>,
    /// An unfinished purge older than this is abandoned (its tab was closed mid-purge).
    pub purge_timeout_ms: u64,
    /// How long tabs collect claims before electing a leader.
    pub claim_window_ms: u64,
    /// Period of the leader's `purging` heartbeat.
    pub heartbeat_ms: u64,
    /// Followers that hear nothing from the leader for this long re-check.
    pub follow_timeout_ms: u64,
    /// What a purge may touch.
    pub ownership: Ownership,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            max_attempts: 1,
            retry_after_ms: None,
            purge_timeout_ms: DEFAULT_PURGE_TIMEOUT_MS,
            claim_window_ms: DEFAULT_CLAIM_WINDOW_MS,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            follow_timeout_ms: DEFAULT_FOLLOW_TIMEOUT_MS,
            ownership: Ownership::default(),
        }
    }
}

/// What the guard remembers across reloads about the last purge: stored as JSON
/// `{"target", "attempts", "startedAt", "finishedAt"?}` (times: wall clock, ms since the Unix
/// epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeRecord {
    /// The server version the purge was for.
    pub target: String,
    /// Purges started for `target` so far.
    pub attempts: u32,
    /// When the latest purge started.
    pub started_at: u64,
    /// When it finished (caches deleted, registrations unregistered); `None` while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

impl PurgeRecord {
    /// The record a leader stores before purging for [`Decision::Purge`] `{target, attempt}`.
    /// `wall_ms`: the wall clock (`Date.now()`), ms: the record outlives the page.
    pub fn started(target: &str, attempt: u32, wall_ms: u64) -> PurgeRecord {
        PurgeRecord {
            target: target.to_owned(),
            attempts: attempt,
            started_at: wall_ms,
            finished_at: None,
        }
    }

    /// This record with the purge marked finished at `wall_ms` (wall clock, ms).
    #[must_use]
    pub fn finished(mut self, wall_ms: u64) -> PurgeRecord {
        self.finished_at = Some(wall_ms.max(self.started_at));
        self
    }

    /// Parses the stored JSON; `None` for anything else (a corrupt record is ignored, which
    /// costs at most one extra purge).
    pub fn from_json(text: &str) -> Option<PurgeRecord> {
        serde_json::from_str(text).ok()
    }

    /// The stored JSON.
    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The server's answer to `GET /api/version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerVersion<'a> {
    /// `{"version": "<this>"}`.
    Known(&'a str),
    /// The browser says it is offline; nothing was fetched.
    Offline,
    /// The fetch failed, or the answer was not `{"version": "<non-empty string>"}`.
    Unreachable,
}

/// Everything one check decides on.
#[derive(Clone, Copy, Debug)]
pub struct CheckInput<'a> {
    /// The version this page runs (`<meta name="app-version">` or the `currentVersion`
    /// option); `None` if it has none.
    pub page_version: Option<&'a str>,
    /// What the server said.
    pub server_version: ServerVersion<'a>,
    /// The stored record, if any.
    pub record: Option<&'a PurgeRecord>,
    /// When this page (or worker) was loaded, wall clock ms (`performance.timeOrigin`).
    pub loaded_at: u64,
    /// Now, wall clock ms.
    pub now: u64,
}

/// Why a check did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The page has no version to compare (no `<meta name="app-version">`).
    NoPageVersion,
    /// The browser is offline.
    Offline,
    /// `/api/version` could not be fetched or did not answer a version.
    Unreachable,
}

impl SkipReason {
    /// `"no-page-version"`, `"offline"` or `"unreachable"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoPageVersion => "no-page-version",
            SkipReason::Offline => "offline",
            SkipReason::Unreachable => "unreachable",
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The page runs the server's version. `after_purge`: the record says this page was loaded
    /// after a purge for this version finished (the purge worked).
    UpToDate {
        /// The version.
        version: String,
        /// This load follows a purge for `version`.
        after_purge: bool,
    },
    /// Nothing to compare; do nothing.
    Skip(SkipReason),
    /// Stale and nobody purged for `target` yet: claim (see [`Coordinator::claim`]); the
    /// leader runs the hook, stores [`PurgeRecord::started`]`(target, attempt, now)`, purges,
    /// marks the record finished and reloads.
    Purge {
        /// The server version to reach.
        target: String,
        /// The attempt number to store.
        attempt: u32,
    },
    /// Stale, and another context is purging for `target` right now: follow it
    /// ([`Coordinator::follow`]) and reload when it is done.
    AwaitPurge {
        /// The server version being purged for.
        target: String,
    },
    /// Stale, but the caches were already purged for `target` after this page was loaded (by
    /// another tab or the service worker): reload only, when the app says it is safe.
    Reload {
        /// The server version to reach.
        target: String,
    },
    /// Still stale although this page was loaded after the last allowed purge for `target`:
    /// report `stale_after_purge`; never reload.
    StaleAfterPurge {
        /// The version the page runs.
        page: String,
        /// The version the server claims.
        target: String,
        /// Purges made for `target`.
        attempts: u32,
    },
}

/// Decides one check (see the module docs for the rules).
pub fn decide(input: &CheckInput<'_>, config: &GuardConfig) -> Decision {
    let Some(page) = input.page_version.map(str::trim).filter(|v| !v.is_empty()) else {
        return Decision::Skip(SkipReason::NoPageVersion);
    };
    let server = match input.server_version {
        ServerVersion::Known(v) if !v.trim().is_empty() => v.trim(),
        ServerVersion::Known(_) | ServerVersion::Unreachable => {
            return Decision::Skip(SkipReason::Unreachable)
        }
        ServerVersion::Offline => return Decision::Skip(SkipReason::Offline),
    };
    let max_attempts = config.max_attempts.max(1);
    // The record only counts for the version the server now claims, and until it expires.
    let record = input.record.filter(|r| {
        let fresh = match config.retry_after_ms {
            Some(d) => input.now.saturating_sub(r.started_at) < d,
            None => true,
        };
        r.target == server && fresh
    });
    if page == server {
        let after_purge =
            record.is_some_and(|r| r.finished_at.is_some_and(|f| input.loaded_at > f));
        return Decision::UpToDate {
            version: server.to_owned(),
            after_purge,
        };
    }
    let target = server.to_owned();
    let Some(r) = record else {
        return Decision::Purge { target, attempt: 1 };
    };
    let finished = match r.finished_at {
        Some(f) => f,
        None if input.now.saturating_sub(r.started_at) < config.purge_timeout_ms => {
            return Decision::AwaitPurge { target };
        }
        // Abandoned mid-purge (its tab was closed). A page older than the attempt takes it
        // over without counting a new attempt; a newer one is a result of it.
        None if input.loaded_at <= r.started_at => {
            return Decision::Purge {
                target,
                attempt: r.attempts.max(1),
            }
        }
        None => r.started_at,
    };
    if input.loaded_at <= finished {
        return Decision::Reload { target };
    }
    if r.attempts >= max_attempts {
        return Decision::StaleAfterPurge {
            page: page.to_owned(),
            target,
            attempts: r.attempts,
        };
    }
    Decision::Purge {
        target,
        attempt: r.attempts + 1,
    }
}

/// A message between the tabs (and service worker) of one origin, on the guard's broadcast
/// channel. JSON shape `{"type": "claim" | "purging" | "purged" | "released", "target", "tab"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TabMessage {
    /// `tab` found the page stale for `target` and wants to purge.
    Claim {
        /// Server version to reach.
        target: String,
        /// Sender's tab id.
        tab: String,
    },
    /// `tab` leads the purge for `target` (sent on election, then as a heartbeat).
    Purging {
        /// Server version to reach.
        target: String,
        /// The leader's tab id.
        tab: String,
    },
    /// The purge for `target` is done: reload when safe.
    Purged {
        /// Server version to reach.
        target: String,
        /// The leader's tab id.
        tab: String,
    },
    /// The leader gave up (its app postponed, or the purge failed): claim again.
    Released {
        /// Server version to reach.
        target: String,
        /// The leader's tab id.
        tab: String,
    },
}

impl TabMessage {
    /// The message whose JSON `type` is `kind` (`"claim"`, `"purging"`, `"purged"` or
    /// `"released"`), for drivers that read the three fields themselves instead of through
    /// serde (the wasm PWA build, where the derived decoder is most of its size). `None` for
    /// another `kind`, as the derived decoder refuses it.
    #[must_use]
    pub fn from_parts(kind: &str, target: String, tab: String) -> Option<Self> {
        Some(match kind {
            "claim" => TabMessage::Claim { target, tab },
            "purging" => TabMessage::Purging { target, tab },
            "purged" => TabMessage::Purged { target, tab },
            "released" => TabMessage::Released { target, tab },
            _ => return None,
        })
    }

    fn parts(&self) -> (&str, &str) {
        match self {
            TabMessage::Claim { target, tab }
            | TabMessage::Purging { target, tab }
            | TabMessage::Purged { target, tab }
            | TabMessage::Released { target, tab } => (target, tab),
        }
    }
}

/// One output of [`Coordinator::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum CoordOutput {
    /// Post this on the broadcast channel.
    Broadcast(TabMessage),
    /// This tab leads the purge for `target`: run the hook, purge, then
    /// [`Coordinator::purge_finished`] or [`Coordinator::release`].
    Lead {
        /// Server version to reach.
        target: String,
    },
    /// Another context purged for `target`: reload when the app says it is safe.
    Reload {
        /// Server version to reach.
        target: String,
    },
    /// Another context saw a new version, or the leader went silent: run a check.
    Recheck,
    /// Nothing more now; call [`Coordinator::handle_timeout`] at this time ([`Millis::NEVER`]:
    /// no deadline).
    Timeout(Millis),
}

crate::core::drive::machine!(Coordinator, CoordOutput);

/// Where a [`Coordinator`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not taking part in a purge.
    Idle,
    /// Collecting claims before the election.
    Claiming,
    /// Leading a purge.
    Leading,
    /// Waiting for the leader's `purged`.
    Following,
}

#[derive(Clone, Debug)]
enum State {
    Idle,
    Claiming {
        target: String,
        claimants: BTreeSet<String>,
        deadline: u64,
    },
    Leading {
        target: String,
        next_heartbeat: u64,
    },
    Following {
        target: String,
        deadline: u64,
    },
}

/// The multi-tab election of one tab (see the module docs for the drive contract).
///
/// Rules: every tab that decides [`Decision::Purge`] broadcasts `claim` and collects claims
/// for [`GuardConfig::claim_window_ms`]; the smallest tab id among the claimants leads (ids
/// are random, so this is a fair coin) and broadcasts `purging` at once and every
/// [`GuardConfig::heartbeat_ms`]; a claim arriving at a leader is answered with `purging`, so
/// late tabs follow. Followers reload after `purged`, claim again after `released`, and
/// re-check after [`GuardConfig::follow_timeout_ms`] without a word from the leader. An idle
/// tab that hears about a purge re-checks: it may be stale too.
#[derive(Clone, Debug)]
pub struct Coordinator {
    tab: String,
    claim_window_ms: u64,
    heartbeat_ms: u64,
    follow_timeout_ms: u64,
    state: State,
    out: VecDeque<CoordOutput>,
}

impl Coordinator {
    /// A coordinator for tab `tab` (a random id, unique per page load).
    pub fn new(tab: impl Into<String>, config: &GuardConfig) -> Coordinator {
        Coordinator {
            tab: tab.into(),
            claim_window_ms: config.claim_window_ms,
            heartbeat_ms: config.heartbeat_ms.max(1),
            follow_timeout_ms: config.follow_timeout_ms.max(1),
            state: State::Idle,
            out: VecDeque::new(),
        }
    }

    // ---- getters ----

    /// This tab's id.
    pub fn tab(&self) -> &str {
        &self.tab
    }

    /// Where this tab stands.
    pub fn role(&self) -> Role {
        match self.state {
            State::Idle => Role::Idle,
            State::Claiming { .. } => Role::Claiming,
            State::Leading { .. } => Role::Leading,
            State::Following { .. } => Role::Following,
        }
    }

    /// The target version of the purge this tab takes part in, if any.
    pub fn target(&self) -> Option<&str> {
        match &self.state {
            State::Idle => None,
            State::Claiming { target, .. }
            | State::Leading { target, .. }
            | State::Following { target, .. } => Some(target),
        }
    }

    // ---- mutators ----

    /// [`Decision::Purge`]: claim the purge for `target`. No-op while already taking part in
    /// a purge for `target`.
    pub fn claim(&mut self, target: &str, now: Millis) {
        let now = now.as_u64();
        if self.target() == Some(target) {
            return;
        }
        self.start_claim(target, now);
    }

    /// [`Decision::AwaitPurge`]: follow the purge another context runs for `target`.
    pub fn follow(&mut self, target: &str, now: Millis) {
        let now = now.as_u64();
        if self.target() == Some(target) {
            return;
        }
        self.state = State::Following {
            target: target.to_owned(),
            deadline: now + self.follow_timeout_ms,
        };
    }

    /// The leader's purge is done: tell the others (`purged`) and go idle.
    pub fn purge_finished(&mut self, _now: Millis) {
        if let State::Leading { target, .. } = std::mem::replace(&mut self.state, State::Idle) {
            self.broadcast_purged(target);
        }
    }

    /// The leader gives up (hook postponed, purge failed): tell the others (`released`).
    pub fn release(&mut self, _now: Millis) {
        if let State::Leading { target, .. } = std::mem::replace(&mut self.state, State::Idle) {
            let tab = self.tab.clone();
            self.out
                .push_back(CoordOutput::Broadcast(TabMessage::Released { target, tab }));
        }
    }

    /// Stops taking part (e.g. the guard is stopped); says nothing to the others.
    pub fn cancel(&mut self) {
        self.state = State::Idle;
    }

    // ---- inputs ----

    /// A message from another context arrived on the channel.
    pub fn handle_message(&mut self, msg: TabMessage, now: Millis) {
        let now = now.as_u64();
        let (target, tab) = msg.parts();
        if tab == self.tab {
            return;
        }
        let (target, tab) = (target.to_owned(), tab.to_owned());
        let same = self.target() == Some(target.as_str());
        match (&mut self.state, msg) {
            (State::Idle, TabMessage::Released { .. }) => {}
            (State::Idle, _) => self.recheck(),
            (_, _) if !same => {}
            (State::Claiming { claimants, .. }, TabMessage::Claim { .. }) => {
                claimants.insert(tab);
            }
            (State::Claiming { .. } | State::Following { .. }, TabMessage::Purging { .. }) => {
                self.state = State::Following {
                    target,
                    deadline: now + self.follow_timeout_ms,
                };
            }
            (State::Claiming { .. } | State::Following { .. }, TabMessage::Purged { .. }) => {
                self.state = State::Idle;
                self.out.push_back(CoordOutput::Reload { target });
            }
            (State::Following { .. }, TabMessage::Released { .. }) => {
                self.start_claim(&target, now);
            }
            (State::Leading { .. }, TabMessage::Claim { .. }) => {
                let tab = self.tab.clone();
                self.out
                    .push_back(CoordOutput::Broadcast(TabMessage::Purging { target, tab }));
            }
            // A claim while following goes to the leader, which answers it. A second leader
            // (messages crossed) is not stopped: purging twice is harmless, and its record
            // write carries the same attempt number.
            _ => {}
        }
    }

    /// A deadline returned by [`CoordOutput::Timeout`] passed.
    pub fn handle_timeout(&mut self, now: Millis) {
        let now = now.as_u64();
        match &mut self.state {
            State::Claiming {
                target,
                claimants,
                deadline,
            } if *deadline <= now => {
                let target = target.clone();
                let leader = claimants.first().cloned().unwrap_or_default();
                if leader == self.tab {
                    self.state = State::Leading {
                        target: target.clone(),
                        next_heartbeat: now + self.heartbeat_ms,
                    };
                    let tab = self.tab.clone();
                    self.out
                        .push_back(CoordOutput::Broadcast(TabMessage::Purging {
                            target: target.clone(),
                            tab,
                        }));
                    self.out.push_back(CoordOutput::Lead { target });
                } else {
                    self.state = State::Following {
                        target,
                        deadline: now + self.follow_timeout_ms,
                    };
                }
            }
            State::Leading {
                target,
                next_heartbeat,
            } if *next_heartbeat <= now => {
                *next_heartbeat = now + self.heartbeat_ms;
                let msg = TabMessage::Purging {
                    target: target.clone(),
                    tab: self.tab.clone(),
                };
                self.out.push_back(CoordOutput::Broadcast(msg));
            }
            State::Following { deadline, .. } if *deadline <= now => {
                self.state = State::Idle;
                self.recheck();
            }
            _ => {}
        }
    }

    // ---- outputs ----

    /// The next output; drain until [`CoordOutput::Timeout`].
    pub fn poll_output(&mut self, _now: Millis) -> CoordOutput {
        if let Some(o) = self.out.pop_front() {
            return o;
        }
        CoordOutput::Timeout(match &self.state {
            State::Idle => Millis::NEVER,
            State::Claiming { deadline, .. } | State::Following { deadline, .. } => {
                Millis::from_u64(*deadline)
            }
            State::Leading { next_heartbeat, .. } => Millis::from_u64(*next_heartbeat),
        })
    }

    // ---- internals ----

    fn start_claim(&mut self, target: &str, now: u64) {
        self.state = State::Claiming {
            target: target.to_owned(),
            claimants: BTreeSet::from([self.tab.clone()]),
            deadline: now + self.claim_window_ms,
        };
        self.out
            .push_back(CoordOutput::Broadcast(TabMessage::Claim {
                target: target.to_owned(),
                tab: self.tab.clone(),
            }));
    }

    fn broadcast_purged(&mut self, target: String) {
        let tab = self.tab.clone();
        self.out
            .push_back(CoordOutput::Broadcast(TabMessage::Purged { target, tab }));
    }

    fn recheck(&mut self) {
        if !self.out.contains(&CoordOutput::Recheck) {
            self.out.push_back(CoordOutput::Recheck);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn from_parts_agrees_with_the_json_shape() {
        for kind in ["claim", "purging", "purged", "released"] {
            let json = serde_json::json!({"type": kind, "target": "v2", "tab": "t1"});
            let derived: TabMessage = serde_json::from_value(json).unwrap();
            let built = TabMessage::from_parts(kind, "v2".into(), "t1".into());
            assert_eq!(built, Some(derived), "{kind}");
        }
        assert_eq!(
            TabMessage::from_parts("Claim", "v2".into(), "t1".into()),
            None
        );
        assert_eq!(TabMessage::from_parts("", "v2".into(), "t1".into()), None);
    }

    fn input<'a>(
        page: Option<&'a str>,
        server: ServerVersion<'a>,
        record: Option<&'a PurgeRecord>,
        loaded_at: u64,
        now: u64,
    ) -> CheckInput<'a> {
        CheckInput {
            page_version: page,
            server_version: server,
            record,
            loaded_at,
            now,
        }
    }

    fn decide_simple(
        page: &str,
        server: &str,
        record: Option<&PurgeRecord>,
        loaded: u64,
    ) -> Decision {
        let i = input(
            Some(page),
            ServerVersion::Known(server),
            record,
            loaded,
            loaded + 50,
        );
        decide(&i, &GuardConfig::default())
    }

    #[test]
    fn skips_without_a_page_version_or_a_server_answer() {
        let c = GuardConfig::default();
        for page in [None, Some(""), Some("  ")] {
            let d = decide(&input(page, ServerVersion::Known("B"), None, T0, T0), &c);
            assert_eq!(d, Decision::Skip(SkipReason::NoPageVersion));
        }
        let d = decide(&input(Some("A"), ServerVersion::Offline, None, T0, T0), &c);
        assert_eq!(d, Decision::Skip(SkipReason::Offline));
        for server in [ServerVersion::Unreachable, ServerVersion::Known(" ")] {
            let d = decide(&input(Some("A"), server, None, T0, T0), &c);
            assert_eq!(d, Decision::Skip(SkipReason::Unreachable));
        }
        assert_eq!(SkipReason::NoPageVersion.as_str(), "no-page-version");
    }

    #[test]
    fn same_version_is_up_to_date_and_reports_a_successful_purge() {
        assert_eq!(
            decide_simple("A", " A\n", None, T0),
            Decision::UpToDate {
                version: "A".into(),
                after_purge: false
            }
        );
        let done = PurgeRecord::started("B", 1, T0).finished(T0 + 20);
        assert_eq!(
            decide_simple("B", "B", Some(&done), T0 + 100),
            Decision::UpToDate {
                version: "B".into(),
                after_purge: true
            }
        );
        // A tab loaded at B before somebody else's purge for B did not need it.
        assert_eq!(
            decide_simple("B", "B", Some(&done), T0 - 100),
            Decision::UpToDate {
                version: "B".into(),
                after_purge: false
            }
        );
    }

    #[test]
    fn first_mismatch_purges_then_a_still_stale_page_is_an_error_not_a_loop() {
        assert_eq!(
            decide_simple("B", "C", None, T0),
            Decision::Purge {
                target: "C".into(),
                attempt: 1
            }
        );
        let done = PurgeRecord::started("C", 1, T0 + 50).finished(T0 + 80);
        // The reloaded page (loaded after the purge) still says B.
        assert_eq!(
            decide_simple("B", "C", Some(&done), T0 + 90),
            Decision::StaleAfterPurge {
                page: "B".into(),
                target: "C".into(),
                attempts: 1
            }
        );
        // ... and so does every later load and re-check.
        let later = input(
            Some("B"),
            ServerVersion::Known("C"),
            Some(&done),
            T0 + 86_400_000,
            T0 + 90_000_000,
        );
        assert!(matches!(
            decide(&later, &GuardConfig::default()),
            Decision::StaleAfterPurge { .. }
        ));
    }

    #[test]
    fn a_record_for_another_version_does_not_count() {
        let done = PurgeRecord::started("B", 1, T0).finished(T0 + 10);
        assert_eq!(
            decide_simple("B", "C", Some(&done), T0 + 100),
            Decision::Purge {
                target: "C".into(),
                attempt: 1
            }
        );
    }

    #[test]
    fn an_old_tab_only_reloads_after_another_purged() {
        let done = PurgeRecord::started("B", 1, T0).finished(T0 + 10);
        assert_eq!(
            decide_simple("A", "B", Some(&done), T0 - 5_000),
            Decision::Reload { target: "B".into() }
        );
        // Loaded while the purge ran: it reloads too, and is judged after that reload.
        assert_eq!(
            decide_simple("A", "B", Some(&done), T0 + 5),
            Decision::Reload { target: "B".into() }
        );
    }

    #[test]
    fn a_running_purge_is_awaited_and_an_abandoned_one_taken_over() {
        let c = GuardConfig::default();
        let running = PurgeRecord::started("B", 1, T0);
        let d = decide(
            &input(
                Some("A"),
                ServerVersion::Known("B"),
                Some(&running),
                T0 - 10,
                T0 + 1_000,
            ),
            &c,
        );
        assert_eq!(d, Decision::AwaitPurge { target: "B".into() });
        let late = T0 + c.purge_timeout_ms;
        // An older tab takes the abandoned purge over without a new attempt ...
        let d = decide(
            &input(
                Some("A"),
                ServerVersion::Known("B"),
                Some(&running),
                T0 - 10,
                late,
            ),
            &c,
        );
        assert_eq!(
            d,
            Decision::Purge {
                target: "B".into(),
                attempt: 1
            }
        );
        // ... a page loaded after it started is a result of it.
        let d = decide(
            &input(
                Some("A"),
                ServerVersion::Known("B"),
                Some(&running),
                T0 + 10,
                late,
            ),
            &c,
        );
        assert!(matches!(d, Decision::StaleAfterPurge { attempts: 1, .. }));
    }

    #[test]
    fn more_attempts_and_retry_after_are_configurable() {
        let c = GuardConfig {
            max_attempts: 2,
            retry_after_ms: Some(60_000),
            ..GuardConfig::default()
        };
        let first = PurgeRecord::started("C", 1, T0).finished(T0 + 10);
        let at = |rec: &PurgeRecord, loaded: u64, now: u64| {
            decide(
                &input(Some("B"), ServerVersion::Known("C"), Some(rec), loaded, now),
                &c,
            )
        };
        assert_eq!(
            at(&first, T0 + 20, T0 + 30),
            Decision::Purge {
                target: "C".into(),
                attempt: 2
            }
        );
        let second = PurgeRecord::started("C", 2, T0 + 40).finished(T0 + 50);
        assert!(matches!(
            at(&second, T0 + 60, T0 + 70),
            Decision::StaleAfterPurge { attempts: 2, .. }
        ));
        // A minute after the last attempt, the record is forgotten: a new round.
        assert_eq!(
            at(&second, T0 + 60, T0 + 40 + 60_000),
            Decision::Purge {
                target: "C".into(),
                attempt: 1
            }
        );
        // max_attempts 0 means 1.
        let zero = GuardConfig {
            max_attempts: 0,
            ..GuardConfig::default()
        };
        let d = decide(
            &input(
                Some("B"),
                ServerVersion::Known("C"),
                Some(&first),
                T0 + 20,
                T0 + 30,
            ),
            &zero,
        );
        assert!(matches!(d, Decision::StaleAfterPurge { .. }));
    }

    #[test]
    fn record_json_round_trips_and_garbage_is_ignored() {
        let r = PurgeRecord::started("v2", 1, 5).finished(9);
        assert_eq!(
            r.to_json(),
            r#"{"target":"v2","attempts":1,"startedAt":5,"finishedAt":9}"#
        );
        assert_eq!(PurgeRecord::from_json(&r.to_json()), Some(r));
        assert_eq!(
            PurgeRecord::from_json(r#"{"target":"v","attempts":1,"startedAt":5}"#)
                .unwrap()
                .finished_at,
            None
        );
        assert_eq!(PurgeRecord::from_json("{}"), None);
        assert_eq!(PurgeRecord::from_json("not json"), None);
        // A clock that went backwards never makes a purge finish before it started.
        assert_eq!(
            PurgeRecord::started("v", 1, 100).finished(50).finished_at,
            Some(100)
        );
    }

    #[test]
    fn ownership_defaults_to_everything_but_the_record() {
        let all = Ownership::default();
        let names = [
            "p3-shell-A",
            "workbox-precache-v2",
            DEFAULT_STORAGE_KEY,
            "other",
        ];
        assert_eq!(
            all.caches_to_delete(names),
            vec!["p3-shell-A", "workbox-precache-v2", "other"]
        );
        assert!(all.owns_registration("http://127.0.0.1:8080/"));
        assert!(all.owns_registration("http://127.0.0.1:8080/other-app/"));
    }

    #[test]
    fn ownership_filters_by_prefix_and_scope() {
        let o = Ownership {
            scope: Some("https://example.org/app/".into()),
            cache_prefixes: vec!["p3-shell-".into(), "p3-data-".into()],
            record_cache: "guard".into(),
        };
        assert_eq!(
            o.caches_to_delete([
                "p3-shell-A",
                "p3-data-1",
                "workbox-precache",
                "guard",
                "p3-"
            ]),
            vec!["p3-shell-A", "p3-data-1"]
        );
        assert!(o.owns_registration("https://example.org/app/"));
        assert!(o.owns_registration("https://example.org/app/admin/"));
        assert!(!o.owns_registration("https://example.org/"));
        assert!(!o.owns_registration("https://example.org/other/"));
        assert!(!o.owns_registration("https://evil.example/app/"));
    }

    // ---- multi-tab ----

    /// Drains a coordinator: (broadcasts, leads, reloads, rechecks, next timeout).
    #[derive(Default, Debug)]
    struct Drained {
        sent: Vec<TabMessage>,
        lead: Vec<String>,
        reload: Vec<String>,
        recheck: usize,
        timeout: Option<u64>,
    }

    fn drain(c: &mut Coordinator) -> Drained {
        let mut d = Drained::default();
        loop {
            match c.poll_output(Millis::ZERO) {
                CoordOutput::Broadcast(m) => d.sent.push(m),
                CoordOutput::Lead { target } => d.lead.push(target),
                CoordOutput::Reload { target } => d.reload.push(target),
                CoordOutput::Recheck => d.recheck += 1,
                CoordOutput::Timeout(t) => {
                    d.timeout = t.deadline().map(Millis::as_u64);
                    return d;
                }
            }
        }
    }

    fn claim(tab: &str, target: &str) -> TabMessage {
        TabMessage::Claim {
            target: target.into(),
            tab: tab.into(),
        }
    }

    #[test]
    fn tab_messages_have_a_stable_json_shape() {
        let m = TabMessage::Purged {
            target: "B".into(),
            tab: "t1".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"purged","target":"B","tab":"t1"}"#
        );
        let back: TabMessage =
            serde_json::from_str(r#"{"type":"claim","target":"B","tab":"x"}"#).unwrap();
        assert_eq!(back, claim("x", "B"));
    }

    #[test]
    fn smallest_claimant_leads_and_tells_the_others() {
        let c = GuardConfig::default();
        let mut a = Coordinator::new("a", &c);
        let mut b = Coordinator::new("b", &c);
        a.claim("B", Millis::from_u64(0));
        b.claim("B", Millis::from_u64(10));
        let da = drain(&mut a);
        let db = drain(&mut b);
        assert_eq!(da.sent, vec![claim("a", "B")]);
        assert_eq!(da.timeout, Some(c.claim_window_ms));
        a.handle_message(db.sent[0].clone(), Millis::from_u64(11));
        b.handle_message(da.sent[0].clone(), Millis::from_u64(11));
        a.handle_timeout(Millis::from_u64(c.claim_window_ms));
        b.handle_timeout(Millis::from_u64(10 + c.claim_window_ms));
        let da = drain(&mut a);
        let db = drain(&mut b);
        assert_eq!(da.lead, vec!["B".to_string()]);
        assert!(db.lead.is_empty());
        assert_eq!(a.role(), Role::Leading);
        assert_eq!(b.role(), Role::Following);
        assert_eq!(
            da.sent,
            vec![TabMessage::Purging {
                target: "B".into(),
                tab: "a".into()
            }]
        );
        a.purge_finished(Millis::from_u64(500));
        let da = drain(&mut a);
        assert_eq!(a.role(), Role::Idle);
        for m in da.sent {
            b.handle_message(m, Millis::from_u64(501));
        }
        let db = drain(&mut b);
        assert_eq!(db.reload, vec!["B".to_string()]);
        assert_eq!(b.role(), Role::Idle);
        // Its own messages (a channel that echoes) are ignored.
        a.handle_message(claim("a", "B"), Millis::from_u64(600));
        assert_eq!(drain(&mut a).recheck, 0);
    }

    #[test]
    fn a_late_claim_is_answered_by_the_leader_and_follows() {
        let c = GuardConfig::default();
        let mut a = Coordinator::new("m", &c);
        a.claim("B", Millis::from_u64(0));
        drain(&mut a);
        a.handle_timeout(Millis::from_u64(c.claim_window_ms));
        assert_eq!(drain(&mut a).lead.len(), 1);
        // "a" sorts before "m", but the election is over.
        let mut late = Coordinator::new("a", &c);
        late.claim("B", Millis::from_u64(400));
        let sent = drain(&mut late).sent;
        a.handle_message(sent[0].clone(), Millis::from_u64(401));
        let answer = drain(&mut a).sent;
        assert_eq!(
            answer,
            vec![TabMessage::Purging {
                target: "B".into(),
                tab: "m".into()
            }]
        );
        late.handle_message(answer[0].clone(), Millis::from_u64(402));
        assert_eq!(late.role(), Role::Following);
        assert!(drain(&mut late).lead.is_empty());
    }

    #[test]
    fn leader_heartbeats_keep_followers_waiting_and_silence_makes_them_recheck() {
        let c = GuardConfig::default();
        let mut f = Coordinator::new("f", &c);
        f.follow("B", Millis::from_u64(0));
        assert_eq!(drain(&mut f).timeout, Some(c.follow_timeout_ms));
        f.handle_message(
            TabMessage::Purging {
                target: "B".into(),
                tab: "l".into(),
            },
            Millis::from_u64(4_000),
        );
        assert_eq!(drain(&mut f).timeout, Some(4_000 + c.follow_timeout_ms));
        f.handle_timeout(Millis::from_u64(4_000 + c.follow_timeout_ms));
        let d = drain(&mut f);
        assert_eq!(d.recheck, 1);
        assert_eq!(f.role(), Role::Idle);

        let mut l = Coordinator::new("l", &c);
        l.claim("B", Millis::from_u64(0));
        drain(&mut l);
        l.handle_timeout(Millis::from_u64(c.claim_window_ms));
        let d = drain(&mut l);
        assert_eq!(d.timeout, Some(c.claim_window_ms + c.heartbeat_ms));
        l.handle_timeout(Millis::from_u64(c.claim_window_ms + c.heartbeat_ms));
        let d = drain(&mut l);
        assert!(matches!(&d.sent[..], [TabMessage::Purging { .. }]));
    }

    #[test]
    fn a_released_purge_is_claimed_again() {
        let c = GuardConfig::default();
        let mut f = Coordinator::new("f", &c);
        f.follow("B", Millis::from_u64(0));
        f.handle_message(
            TabMessage::Released {
                target: "B".into(),
                tab: "l".into(),
            },
            Millis::from_u64(100),
        );
        assert_eq!(f.role(), Role::Claiming);
        assert_eq!(drain(&mut f).sent, vec![claim("f", "B")]);

        let mut l = Coordinator::new("l", &c);
        l.claim("B", Millis::from_u64(0));
        drain(&mut l);
        l.handle_timeout(Millis::from_u64(c.claim_window_ms));
        drain(&mut l);
        l.release(Millis::from_u64(500));
        assert_eq!(l.role(), Role::Idle);
        assert!(matches!(
            &drain(&mut l).sent[..],
            [TabMessage::Released { .. }]
        ));
    }

    #[test]
    fn idle_tabs_recheck_when_they_hear_of_a_purge() {
        let c = GuardConfig::default();
        let mut idle = Coordinator::new("i", &c);
        idle.handle_message(claim("x", "B"), Millis::from_u64(0));
        idle.handle_message(
            TabMessage::Purged {
                target: "B".into(),
                tab: "x".into(),
            },
            Millis::from_u64(1),
        );
        idle.handle_message(
            TabMessage::Released {
                target: "B".into(),
                tab: "x".into(),
            },
            Millis::from_u64(2),
        );
        let d = drain(&mut idle);
        assert_eq!(d.recheck, 1, "rechecks are coalesced");
        assert_eq!(d.timeout, None);
        // Messages about another target do not disturb a running election.
        let mut a = Coordinator::new("a", &c);
        a.claim("B", Millis::from_u64(0));
        drain(&mut a);
        a.handle_message(
            TabMessage::Purged {
                target: "C".into(),
                tab: "x".into(),
            },
            Millis::from_u64(1),
        );
        assert_eq!(a.role(), Role::Claiming);
        assert!(drain(&mut a).reload.is_empty());
    }

    // ---- whole-origin simulation: pages, reloads, one shared record, a broadcast bus ----

    /// A browser origin with `tabs` open pages at `page_version`, a server at `server`, and
    /// a shared record; pages reload into `reload_version` (what the network serves). Runs
    /// the decide + coordinate loop on a virtual clock with `latency_ms` channel delay and
    /// returns (purges, reloads per tab, stale errors per tab, final versions).
    struct Origin {
        config: GuardConfig,
        server: String,
        network_serves: String,
        record: Option<PurgeRecord>,
        tabs: Vec<Tab>,
        /// (deliver at, tab index, that tab's load generation, message).
        bus: Vec<(u64, usize, u32, TabMessage)>,
        latency_ms: u64,
        now: u64,
        purges: u32,
        /// Elections won (a leader that finds the purge done by then does not purge).
        leads: u32,
    }

    struct Tab {
        version: String,
        loaded_at: u64,
        coord: Coordinator,
        reloads: u32,
        stale_errors: u32,
        timer: Option<u64>,
        needs_check: bool,
    }

    impl Origin {
        fn new(tabs: usize, page: &str, server: &str, serves: &str) -> Origin {
            let config = GuardConfig::default();
            let tabs = (0..tabs)
                .map(|i| Tab {
                    version: page.into(),
                    loaded_at: T0,
                    coord: Coordinator::new(format!("tab-{i}-load-0"), &config),
                    reloads: 0,
                    stale_errors: 0,
                    timer: None,
                    needs_check: true,
                })
                .collect();
            Origin {
                config,
                server: server.into(),
                network_serves: serves.into(),
                record: None,
                tabs,
                bus: Vec::new(),
                latency_ms: 7,
                now: T0 + 1_000,
                purges: 0,
                leads: 0,
            }
        }

        fn decide(&self, i: usize) -> Decision {
            let t = &self.tabs[i];
            decide(
                &CheckInput {
                    page_version: Some(&t.version),
                    server_version: ServerVersion::Known(&self.server),
                    record: self.record.as_ref(),
                    loaded_at: t.loaded_at,
                    now: self.now,
                },
                &self.config,
            )
        }

        fn check(&mut self, i: usize) {
            let d = self.decide(i);
            self.apply(i, d);
        }

        fn apply(&mut self, i: usize, d: Decision) {
            let now = self.now;
            match d {
                Decision::Purge { target, .. } => {
                    self.tabs[i].coord.claim(&target, Millis::from_u64(now))
                }
                Decision::AwaitPurge { target } => {
                    self.tabs[i].coord.follow(&target, Millis::from_u64(now))
                }
                Decision::Reload { .. } => self.reload(i),
                Decision::StaleAfterPurge { .. } => self.tabs[i].stale_errors += 1,
                Decision::UpToDate { .. } | Decision::Skip(_) => {}
            }
        }

        fn reload(&mut self, i: usize) {
            self.now += 1;
            let t = &mut self.tabs[i];
            t.reloads += 1;
            t.version = self.network_serves.clone();
            t.loaded_at = self.now;
            t.coord = Coordinator::new(format!("tab-{i}-load-{}", t.reloads), &self.config);
            t.timer = None;
            t.needs_check = true;
        }

        /// Leader: re-decide with the fresh record (another context may have purged since),
        /// then purge: record, delete, finish, tell the others, reload.
        fn lead(&mut self, i: usize, target: &str) {
            self.leads += 1;
            let d = self.decide(i);
            let Decision::Purge { attempt, .. } = d else {
                self.tabs[i].coord.release(Millis::from_u64(self.now));
                self.pump(i);
                return self.apply(i, d);
            };
            self.purges += 1;
            self.record = Some(PurgeRecord::started(target, attempt, self.now));
            self.now += 3;
            self.record = self.record.take().map(|r| r.finished(self.now));
            self.tabs[i]
                .coord
                .purge_finished(Millis::from_u64(self.now));
            self.pump(i);
            self.reload(i);
        }

        fn pump(&mut self, i: usize) {
            loop {
                match self.tabs[i].coord.poll_output(Millis::from_u64(self.now)) {
                    CoordOutput::Broadcast(m) => {
                        for j in 0..self.tabs.len() {
                            if j != i {
                                let at = self.now + self.latency_ms;
                                self.bus.push((at, j, self.tabs[j].reloads, m.clone()));
                            }
                        }
                    }
                    CoordOutput::Lead { target } => return self.lead(i, &target),
                    CoordOutput::Reload { .. } => return self.reload(i),
                    CoordOutput::Recheck => self.tabs[i].needs_check = true,
                    CoordOutput::Timeout(t) => {
                        self.tabs[i].timer = t.deadline().map(Millis::as_u64);
                        return;
                    }
                }
            }
        }

        /// Runs until nothing is pending; returns the number of steps taken.
        fn run(&mut self) -> usize {
            for step in 0..10_000 {
                if let Some(i) = self.tabs.iter().position(|t| t.needs_check) {
                    self.tabs[i].needs_check = false;
                    self.check(i);
                    self.pump(i);
                    continue;
                }
                let next_msg = self.bus.iter().map(|m| m.0).min();
                let next_timer = self.tabs.iter().filter_map(|t| t.timer).min();
                let Some(at) = next_msg.into_iter().chain(next_timer).min() else {
                    return step;
                };
                self.now = self.now.max(at);
                if let Some(k) = self.bus.iter().position(|m| m.0 <= self.now) {
                    let (_, j, generation, m) = self.bus.remove(k);
                    // A message posted to a page that has since reloaded is lost with it.
                    if generation == self.tabs[j].reloads {
                        let now = self.now;
                        self.tabs[j].coord.handle_message(m, Millis::from_u64(now));
                        self.pump(j);
                    }
                } else if let Some(i) = self.tabs.iter().position(|t| t.timer == Some(at)) {
                    self.tabs[i].timer = None;
                    self.tabs[i].coord.handle_timeout(Millis::from_u64(at));
                    self.pump(i);
                }
            }
            panic!("the origin never settles: a reload loop");
        }
    }

    #[test]
    fn one_tab_stale_deploy_purges_once_and_runs_the_new_version() {
        let mut o = Origin::new(1, "A", "B", "B");
        o.run();
        assert_eq!(o.purges, 1);
        assert_eq!(o.tabs[0].reloads, 1);
        assert_eq!(o.tabs[0].version, "B");
        assert_eq!(o.tabs[0].stale_errors, 0);
    }

    #[test]
    fn unreachable_version_purges_once_then_errors_without_a_loop() {
        for max_attempts in [1, 3] {
            let mut o = Origin::new(1, "B", "C", "B");
            o.config.max_attempts = max_attempts;
            o.tabs[0].coord = Coordinator::new("solo", &o.config);
            o.run();
            assert_eq!(o.purges, max_attempts);
            assert_eq!(o.tabs[0].reloads, max_attempts);
            assert_eq!(o.tabs[0].stale_errors, 1);
            // Re-checks later (visibility, version pushes) stay errors.
            for _ in 0..5 {
                o.now += 60_000;
                o.tabs[0].needs_check = true;
                o.run();
            }
            assert_eq!(o.purges, max_attempts);
            assert_eq!(o.tabs[0].stale_errors, 6);
        }
    }

    #[test]
    fn many_tabs_one_purge_all_reload_once() {
        for (tabs, latency) in [(2, 1), (2, 7), (5, 7), (8, 40)] {
            let mut o = Origin::new(tabs, "A", "B", "B");
            o.latency_ms = latency;
            o.run();
            assert_eq!(o.purges, 1, "{tabs} tabs, {latency} ms");
            assert_eq!(o.leads, 1, "one election winner, {tabs} tabs, {latency} ms");
            for t in &o.tabs {
                assert_eq!(t.reloads, 1, "{tabs} tabs, {latency} ms");
                assert_eq!(t.version, "B");
            }
        }
    }

    #[test]
    fn many_tabs_unreachable_version_one_purge_each_tab_one_error() {
        let mut o = Origin::new(4, "B", "C", "B");
        o.run();
        assert_eq!(o.purges, 1);
        for t in &o.tabs {
            assert_eq!(t.reloads, 1);
            assert_eq!(t.stale_errors, 1);
        }
    }

    #[test]
    fn a_tab_checking_late_follows_the_finished_purge() {
        let mut o = Origin::new(3, "A", "B", "B");
        // Tab 2 does not check until long after the others are done.
        o.tabs[2].needs_check = false;
        o.run();
        assert_eq!(o.purges, 1);
        // It heard the purge on the channel (and re-checked) ...
        assert_eq!(o.tabs[2].reloads, 1);
        // ... and a tab with no channel at all only reloads, from the record.
        let mut o = Origin::new(2, "A", "B", "B");
        o.tabs[1].needs_check = false;
        o.latency_ms = 1_000_000;
        o.run_until_purged();
        o.bus.clear();
        o.tabs[1].needs_check = true;
        o.run();
        assert_eq!(o.purges, 1);
        assert_eq!(o.tabs[1].reloads, 1);
    }

    impl Origin {
        fn run_until_purged(&mut self) {
            while self.purges == 0 {
                if let Some(i) = self.tabs.iter().position(|t| t.needs_check) {
                    self.tabs[i].needs_check = false;
                    self.check(i);
                    self.pump(i);
                    continue;
                }
                let i = self.tabs.iter().position(|t| t.timer.is_some()).unwrap();
                let at = self.tabs[i].timer.take().unwrap();
                self.now = self.now.max(at);
                self.tabs[i].coord.handle_timeout(Millis::from_u64(at));
                self.pump(i);
            }
        }
    }
}
