//! TypeScript declarations of the cache guard's options, results and events, appended to
//! `p3_lanes.d.ts`. Shapes mirror `CheckResult` and `GuardEvent` in [`crate::wasm::pwa`].

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TS_PWA_TYPES: &'static str = r#"
/** What `beforePurge` is told. `role`: `'leader'` purges next, `'follower'` only reloads. */
export interface PurgeInfo {
  pageVersion: string;
  serverVersion: string;
  role: 'leader' | 'follower';
}

/**
 * The app's answer to `beforePurge`: `false` postpones (nothing happens until the next check:
 * visibility, a `version` event, or `check()`), a number of ms postpones that long and then
 * checks again, anything else (`undefined`, `true`) goes ahead.
 */
export type BeforePurgeAnswer = boolean | number | void;

/** Options of `checkVersion` and `new CacheGuard`; every field is optional. */
export interface CacheGuardOptions {
  /** The version this context runs. Default: `<meta name="app-version" content>`; required in a service worker. */
  currentVersion?: string;
  /** The version endpoint, answering `{"version": string}`. Default: `'/api/version'`, relative to the scope's location, or `{baseUrl}/api/version` when `checkVersion` / `CacheGuard` are given the server's `baseUrl`. */
  versionUrl?: string;
  /** Only service-worker registrations whose scope starts with this URL are unregistered. Default: all of the origin's. */
  scope?: string;
  /** Only caches whose name starts with one of these are deleted. Default: all (except the guard's own record cache). */
  cachePrefix?: string | string[];
  /** Runs before this context purges (`role: 'leader'`) or reloads after another one purged (`'follower'`): flush unsaved state here. */
  beforePurge?: (info: PurgeInfo) => BeforePurgeAnswer | Promise<BeforePurgeAnswer>;
  /** Listener for `CacheGuardEvent`s (same as `guard.onEvent`). */
  onEvent?: (event: CacheGuardEvent) => void;
  /** Windows: check again whenever the page becomes visible (home-screen apps resumed on iOS). Default: true. */
  recheckOnVisible?: boolean;
  /** Purge-and-reload attempts per server version before `stale_after_purge`. Default: 1. */
  maxAttempts?: number;
  /** Forget the attempts for a version after this long, ms (allowing a new round). Default: never. */
  retryAfterMs?: number;
  /** Name of the guard's record cache, its `localStorage` fallback key and its BroadcastChannel. Default: `'p3-lanes-pwa-guard'`. */
  storageKey?: string;
  /** Service worker: after purging, also navigate every window client to its URL (reloads pages that run no guard, without asking them). Default: false. */
  navigateClients?: boolean;
  /** How long tabs collect claims before electing the one that purges, ms. Default: 300. */
  claimWindowMs?: number;
}

/** What a version check found. */
export type VersionCheckResult =
  /** The page runs the server's version; `afterPurge`: this load follows a purge for it. */
  | { status: 'up-to-date'; version: string; afterPurge: boolean }
  /** Nothing compared: no page version, offline, or the version endpoint did not answer. */
  | { status: 'skipped'; reason: 'no-page-version' | 'offline' | 'unreachable'; pageVersion: string | null }
  /** Stale, but `beforePurge` said not now. */
  | { status: 'postponed'; pageVersion: string; serverVersion: string }
  /** Stale: the page is reloading now (in a service worker: the pages were told to). `purged`: this context purged. */
  | { status: 'reloading'; pageVersion: string; serverVersion: string; purged: boolean };

/** A `stale_after_purge` error, with the versions. */
export interface StaleAfterPurgeError extends P3Error {
  code: 'stale_after_purge';
  pageVersion: string;
  serverVersion: string;
  attempts: number;
}

/** What a `CacheGuard` reports (`onEvent`). */
export type CacheGuardEvent =
  /** A check finished. */
  | { type: 'checked'; result: VersionCheckResult }
  /** This context won the election and starts purging (`attempt` for this server version). */
  | { type: 'purging'; pageVersion: string; serverVersion: string; attempt: number }
  /** The purge is done: registrations (scopes) unregistered and caches deleted. */
  | { type: 'purged'; serverVersion: string; caches: string[]; registrations: string[] }
  /** `beforePurge` postponed. */
  | { type: 'postponed'; pageVersion: string; serverVersion: string }
  /** About to reload (`purged`: after this context's own purge). */
  | { type: 'reloading'; pageVersion: string; serverVersion: string; purged: boolean }
  /** Still stale after the allowed purge(s): no reload; show the user something. */
  | { type: 'stale-after-purge'; pageVersion: string; serverVersion: string; attempts: number; error: StaleAfterPurgeError }
  /** A check failed for another reason (e.g. the purge record could not be stored). */
  | { type: 'error'; error: P3Error };
"#;
