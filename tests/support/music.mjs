// Helpers for the music-sync end-to-end tests: a server-stub serving tests/pages and a folder
// of generated tracks, with artificial per-connection latency and jitter; separate headless
// Chromium (or Firefox) instances; pages whose clocks are skewed; and sampling every page's
// <audio> position against one true clock.
//
// Clock skew. An init script, run before any page script, keeps the page's true clock
// (`performance.timeOrigin + performance.now()` as the page found them: the machine's wall
// clock, the one server-stub stamps `serverTime` with) as `window.__p3True.now()`, then
// replaces `Date.now()` with the true clock + `skewMs` and `performance.now()` with
// `(true performance.now) × (1 + driftPpm/1e6) + skewMs + 2000`. The SDK reads its local
// clock from `performance.now()` (and the seed's `timestamp` from `Date.now()`), so every
// estimate it makes goes through the skew; the +2000 ms keeps `performance.now()` positive
// as it always is in a real browser.
//
// Sampling. `sampleRound` reads every page at about the same moment (one evaluate per page,
// in parallel; a page reads its element at the next refresh edge of `currentTime`, within
// 150 ms, see tests/pages/music.html); each reading carries the true time it was taken at, and each page's position
// is extrapolated to one common true instant (the median reading time) at the element's
// rate: the few ms the evaluates take apart do not count as drift.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';
import { writeTracks } from '../../scripts/lib/tones.mjs';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from './browser.mjs';
import { FIREFOX_AUTOPLAY_PREFS, launchFirefox } from './firefox.mjs';
import { waitFor } from './client.mjs';
import { startServer } from './server.mjs';

const PAGES_DIR = fileURLToPath(new URL('../pages', import.meta.url));

/** The tracks of the music tests: 8 kHz (small files), durations in s. */
export const TRACKS = {
  a: { file: 'sync-a.wav', seconds: 150, bpm: 100, chords: [[60, 64, 67], [55, 59, 62]], style: 'pad', rate: 8000 },
  b: { file: 'sync-b.wav', seconds: 90, bpm: 120, chords: [[62, 65, 69], [58, 62, 65]], style: 'arpeggio', rate: 8000 },
};

/**
 * The `MusicTrack` of a test track, as `GET /api/media` lists it.
 * @param {keyof typeof TRACKS} key
 */
export function track(key) {
  const t = TRACKS[key];
  return { id: t.file, title: t.file, url: `/media/${t.file}`, duration: t.seconds };
}

/** A new temporary media dir holding TRACKS (the caller removes it). */
export function writeMusicMedia() {
  const mediaDir = mkdtempSync(join(tmpdir(), 'p3-music-media-'));
  writeTracks(mediaDir, Object.values(TRACKS));
  return mediaDir;
}

/**
 * The server flags of a music server (startMusicServer; each node of a cluster, e.g.
 * tests/cluster-music.spec.mjs): tests/pages as its static dir, `mediaDir` as its media dir,
 * `--test-latency-ms` / `--test-jitter-ms`.
 * @param {string} mediaDir
 * @param {{latencyMs?: number, jitterMs?: number}} [options]
 */
export function musicServerArgs(mediaDir, { latencyMs = 50, jitterMs = 20 } = {}) {
  return ['--static-dir', PAGES_DIR, '--media-dir', mediaDir, '--test-latency-ms', String(latencyMs), '--test-jitter-ms', String(jitterMs)];
}

/**
 * server-stub with tests/pages as its static dir, a temporary media dir holding TRACKS, and
 * `--test-latency-ms` / `--test-jitter-ms`; `args`: more server flags (e.g. `--state-dir`).
 * @param {{latencyMs?: number, jitterMs?: number, args?: string[]}} [options]
 */
export async function startMusicServer({ latencyMs = 50, jitterMs = 20, args = [] } = {}) {
  const mediaDir = writeMusicMedia();
  const server = await startServer({
    appVersion: 'music-e2e',
    args: [...musicServerArgs(mediaDir, { latencyMs, jitterMs }), ...args],
  });
  return {
    server,
    mediaDir,
    async stop() {
      await server.stop();
      rmSync(mediaDir, { recursive: true, force: true });
    },
  };
}

/**
 * The failover and restart specs' shared set-up: registers a `before` hook that starts a music
 * server (`startMusicServer(options)`, default 20 ± 5 ms test latency) into `spec.music`, and an
 * `after` hook that closes every browser the spec pushed into `spec.browsers`, SIGKILLs the
 * server (it may be stopped or already dead) and removes its media dir.
 * @param {{latencyMs?: number, jitterMs?: number, args?: string[]}} [options]
 * @returns {{music: Awaited<ReturnType<typeof startMusicServer>> | undefined, browsers: import('playwright-core').Browser[]}}
 */
export function musicServerForSpec(options = { latencyMs: 20, jitterMs: 5 }) {
  const spec = { music: undefined, browsers: [] };
  before(async () => {
    spec.music = await startMusicServer(options);
  });
  after(async () => {
    await Promise.all(spec.browsers.map((b) => b.close().catch(() => {})));
    spec.music?.server.proc.kill('SIGKILL');
    await spec.music?.stop();
  });
  return spec;
}

/**
 * A separate headless Chromium, or Firefox with `browser: 'firefox'`. `autoplay`:
 * `--autoplay-policy=no-user-gesture-required` (Firefox: FIREFOX_AUTOPLAY_PREFS); without it
 * the default policy applies (a real click is needed to play). Audio is muted at the output
 * (`--mute-audio`; Firefox: `media.volume_scale` 0); the media clock still runs.
 * `extraArgs`: more Chromium flags.
 * @param {{browser?: import('./browser.mjs').BrowserKind, autoplay?: boolean, extraArgs?: string[]}} [options]
 */
export function launchMusicBrowser({ browser = 'chromium', autoplay = true, extraArgs = [] } = {}) {
  if (browser === 'firefox') {
    return launchFirefox({ prefs: { 'media.volume_scale': '0.0', ...(autoplay ? FIREFOX_AUTOPLAY_PREFS : {}) } });
  }
  const args = [...CHROMIUM_ARGS, '--mute-audio', ...extraArgs];
  if (autoplay) args.push('--autoplay-policy=no-user-gesture-required');
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args });
}

/**
 * @typedef {object} MusicPage
 * @property {import('playwright-core').Page} page
 * @property {string} label
 * @property {number} skewMs
 * @property {object[]} events what the page reported (statuses, states, clock, errors, ...), oldest first
 * @property {string} sessionId
 */

/**
 * Open tests/pages/music.html in a new page of `browser`, skewed, and wait until it joined the
 * room. Events arrive as console messages, so nothing evaluates in the page before it is
 * ready (see music.html).
 * @param {import('playwright-core').Browser} browser
 * @param {string} url server base URL
 * @param {{label: string, room: string, skewMs: number, driftPpm?: number, wait?: boolean, p2p?: boolean, device?: string, retry?: boolean, offline?: boolean, initScripts?: Function[], query?: Record<string, string>}} options
 *   `device`: the room's `deviceId`; `retry`: keep trying to connect while the server is
 *   unreachable; `offline` (with `retry`, `p2p`): then open the room without the server and
 *   attach a client once one connects (music.html); `query`: more query parameters for music.html
 *   (e.g. `stats`); `initScripts`: more init scripts, run after the clock skew's
 * @returns {Promise<MusicPage>}
 */
export async function openMusicPage(browser, url, { label, room, skewMs, driftPpm = 0, wait = true, p2p = false, device, retry = false, offline = false, initScripts = [], query: extra = {} }) {
  const page = await browser.newPage();
  const events = [];
  page.on('console', (msg) => {
    const text = msg.text();
    if (text.startsWith('p3report ')) {
      const event = JSON.parse(text.slice('p3report '.length));
      events.push(event);
      if (event.type === 'page-error' || event.type === 'error') console.error(`[${label}] ${text}`);
    } else if (msg.type() === 'error' || msg.type() === 'warning') {
      console.error(`[${label} console.${msg.type()}] ${text}`);
    }
  });
  page.on('pageerror', (err) => console.error(`[${label} pageerror] ${err.stack ?? err}`));
  await page.addInitScript(skewScript, { skewMs, driftPpm });
  for (const script of initScripts) await page.addInitScript(script);
  const query = new URLSearchParams({ room, client: label });
  if (p2p) query.set('p2p', '1');
  if (device) query.set('device', device);
  if (retry) query.set('retry', '1');
  if (offline) query.set('offline', '1');
  for (const [k, v] of Object.entries(extra)) query.set(k, v);
  await page.goto(`${url}/music.html?${query}`);
  const mp = { page, label, skewMs, events, sessionId: '' };
  if (wait) await waitReady(mp);
  return mp;
}

/**
 * Wait for the page's `ready` report; fails on its `page-error`.
 * @param {MusicPage} mp
 */
export async function waitReady(mp) {
  const ready = await waitFor(
    () => mp.events.find((e) => e.type === 'ready' || e.type === 'page-error'),
    30_000,
    () => `${mp.label} to join its music room; events: ${JSON.stringify(mp.events)}`,
  );
  if (ready.type === 'page-error') throw new Error(`${mp.label}: ${ready.message}`);
  mp.sessionId = ready.sessionId;
}

/**
 * The init script (runs in the page before its own scripts): see the module docs.
 * @param {{skewMs: number, driftPpm: number}} arg
 */
function skewScript({ skewMs, driftPpm }) {
  const perf = window.performance;
  const perfNow = perf.now.bind(perf);
  const dateNow = Date.now;
  const origin = perf.timeOrigin;
  const rate = 1 + driftPpm / 1e6;
  window.__p3True = { now: () => origin + perfNow(), skewMs, driftPpm };
  perf.now = () => perfNow() * rate + skewMs + 2000;
  Date.now = () => Math.floor(origin + perfNow() + skewMs);
}

/** A reading whose clock reads lie further apart than this has no known instant, ms. */
const MAX_READ_SPAN_MS = 1;
/** Rounds taken again at most, when a reading had no known instant. */
const MAX_RETAKES = 5;

/**
 * One reading of every page at about the same moment, extrapolated to a common true instant.
 * A round where some page's renderer stalled between reading the clock and `currentTime`
 * (`readSpanMs` over MAX_READ_SPAN_MS: that reading's instant is unknown, so its error would
 * be the stall, not drift) is taken again, up to MAX_RETAKES times; `retakes` counts them.
 * @param {MusicPage[]} pages
 * @returns {Promise<{atMs: number, retakes: number, readings: {label: string, position: number, paused: boolean, rate: number, status: string, trackId: string | null, raw: object}[]}>}
 */
export async function sampleRound(pages) {
  let raw;
  let retakes = 0;
  for (;;) {
    raw = await Promise.all(pages.map((p) => p.page.evaluate(() => window.music.sample())));
    if (retakes >= MAX_RETAKES || raw.every((r) => r.readSpanMs <= MAX_READ_SPAN_MS)) break;
    retakes += 1;
  }
  const times = raw.map((r) => r.trueMs).sort((a, b) => a - b);
  const atMs = times[Math.floor(times.length / 2)];
  const readings = raw.map((r, i) => ({
    label: pages[i].label,
    position: r.paused ? r.position : r.position + ((atMs - r.trueMs) / 1000) * r.rate,
    paused: r.paused,
    rate: r.rate,
    status: r.status,
    trackId: r.trackId,
    raw: r,
  }));
  return { atMs, retakes, readings };
}

/**
 * The room state as the pages report it (`music.room.state`), from the first page.
 * @param {MusicPage} mp
 */
export function roomState(mp) {
  return mp.page.evaluate(() => window.music.room.state);
}

/**
 * Where the room is at true (= server) time `atMs`, by `state`: the seed's
 * `calculateSyncPosition` on the shared clock, bounded by the track's duration.
 * @param {object} state a MusicRoomState
 * @param {number} atMs
 */
export function roomPosition(state, atMs) {
  let p = state.position;
  if (state.isPlaying && atMs > state.referenceTime) p += ((atMs - state.referenceTime) / 1000) * state.playbackRate;
  const d = state.track?.duration;
  return Math.max(0, typeof d === 'number' && d > 0 ? Math.min(p, d) : p);
}

/**
 * Run a DJ action in a page (`room[method](...args)`); resolves with the new room state, or
 * rejects with `{code, message}`.
 * @param {MusicPage} mp
 * @param {string} method
 * @param {unknown[]} [args]
 */
export async function dj(mp, method, args = []) {
  const r = await mp.page.evaluate(
    async ({ method, args }) => {
      try {
        return { ok: await window.music.room[method](...args) };
      } catch (err) {
        return { err: { code: err.code, message: err.message } };
      }
    },
    { method, args },
  );
  if (r.err) {
    const e = new Error(`${mp.label} ${method}: ${r.err.code}: ${r.err.message}`);
    e.code = r.err.code;
    throw e;
  }
  return r.ok;
}

/**
 * Quantile `q` (0..1) of `values` (nearest rank).
 * @param {number[]} values
 * @param {number} q
 */
export function quantile(values, q) {
  if (values.length === 0) return NaN;
  const v = [...values].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))];
}
