// The music failover scenario shared by tests/music-failover-*.spec.mjs (issue #5 Tier 2):
// three separate Chromium instances follow one music room with `peerToPeer` (a WebRTC
// DataChannel mesh kept while the server is up; loopback host candidates only). Mid-song the
// server process gets `signal` (SIGKILL: crash; SIGSTOP: silent loss, sockets stay open):
// every page reports a `tier` event socket → webrtc with the expected reason, the DJ seeks and
// pauses, and every page follows (changes sealed under the room key over the mesh, ordered by
// the DJ with (epoch, sequence)). Checked: each page holds the DJ's state, positions agree with
// the room (generous bounds), every DJ change arrives once on every page (by its (epoch,
// sequence)), state versions only go up, no error event. Failover time (tier event − signal,
// true clock) is written to test-results/<figures> for `npm run bench`; not asserted.
// With `meshDrift` (the crash spec), page C resets its clock right after the failover (so it
// only has samples of the controller's clock, taken over the mesh), and after the serverless
// seek every page is sampled for MESH_DRIFT_MS: spread between pages and clock errors go to
// the figures as `mesh` (tests/support/mesh-drift.mjs), and the peer clock is checked.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from './client.mjs';
import { checkPeerClock, measureMeshDrift } from './mesh-drift.mjs';
import { dj, launchMusicBrowser, openMusicPage, roomPosition, sampleRound, track } from './music.mjs';

/** Three devices with skewed, drifting clocks: the pages of the failover and cluster scenarios. */
export const PAGES = [
  { label: 'A', skewMs: 1800, driftPpm: 20 },
  { label: 'B', skewMs: -1900, driftPpm: -15 },
  { label: 'C', skewMs: 1300, driftPpm: 5 },
];
/** With `meshDrift`: how long mesh-mode drift is sampled, ms. */
const MESH_DRIFT_MS = 10_000;
/** Generous agreement bounds, ms: the claim is "follows", not the drift target. */
const MAX_ERROR_MS = 120;
const PAUSED_ERROR_MS = 60;
/** Time after a change's reference time before positions are compared, ms. */
const SETTLE_MS = 2500;
const LINK_TIMEOUT_MS = 30_000;

/**
 * Run the scenario against `music` (a startMusicServer result); `browsers` collects the
 * launched browsers for the caller to close.
 * @param {{music: {server: import('./server.mjs').Server}, browsers: import('playwright-core').Browser[], room: string, signal: 'SIGKILL' | 'SIGSTOP', reason: string, scenario: string, figures: string, meshDrift?: boolean}} options
 */
export async function runFailover({ music, browsers, room: ROOM, signal, reason, scenario, figures: figuresFile, meshDrift = false }) {
  const url = music.server.url;
  browsers.push(...(await Promise.all(PAGES.map(() => launchMusicBrowser({ autoplay: true })))));
  const pages = [];
  for (const [i, p] of PAGES.entries()) {
    pages.push(await openMusicPage(browsers[i], url, { ...p, room: ROOM, p2p: true }));
  }
  const [a] = pages;

  // Full mesh before anything else, then mid-song through the server.
  await awaitSocketMesh(pages);
  let state = await djPlaysMidSong(pages);

  // The server dies (or stops answering).
  const killedMs = Date.now();
  music.server.proc.kill(signal);
  const tierEvents = await Promise.all(pages.map((p) => waitFor(
    () => p.events.find((e) => e.type === 'tier' && e.to === 'webrtc'),
    LINK_TIMEOUT_MS,
    () => `${p.label}: a tier event to webrtc; events ${JSON.stringify(p.events.filter((e) => e.type !== 'clock').slice(-10))}`,
  )));
  for (const [i, e] of tierEvents.entries()) {
    assert.equal(e.from, 'socket', `${pages[i].label}: ${JSON.stringify(e)}`);
    assert.equal(e.reason, reason, `${pages[i].label}: ${JSON.stringify(e)}`);
  }
  const failoverMs = tierEvents.map((e) => e.trueMs - killedMs);
  // A device with no server samples: C forgets its clock and gets the room clock over the mesh.
  if (meshDrift) await pages[2].page.evaluate(() => window.music.room.resetClock());
  // Still playing in sync on the last state, with no server.
  await sleep(1000);
  await checkFollow(pages, state, 'after the crash');

  // The DJ's changes travel over the mesh.
  const marks = pages.map((p) => p.events.length);
  const seek = await dj(a, 'seek', [70]);
  assert.ok(seek.sequence > state.sequence && seek.epoch === state.epoch, `seek stamped ${seek.epoch}/${seek.sequence} after ${state.epoch}/${state.sequence}`);
  await settle(seek, SETTLE_MS);
  await checkFollow(pages, seek, 'after the serverless seek');
  let mesh;
  if (meshDrift) {
    const drift = await measureMeshDrift(pages, seek, { host: 0, durationMs: MESH_DRIFT_MS });
    const clock = await checkPeerClock(pages, { host: 0, reset: 2 });
    mesh = { ...drift, ...clock };
    console.log(`mesh mode (${drift.rounds} rounds, load ${drift.loadavg.map((l) => l.toFixed(1)).join(' ')}): spread p50 ${drift.spreadMs.p50.toFixed(1)} ms, p95 ${drift.spreadMs.p95.toFixed(1)} ms; clock vs controller p95 ${drift.clockVsHostMs.p95.toFixed(1)} ms; reset page vs controller ${clock.resetPageVsHostMs.map((d) => d.toFixed(1)).join(', ')} ms`);
  }

  const pause = await dj(a, 'pause');
  await settle(pause, 800);
  await waitFor(
    async () => (await sampleRound(pages)).readings.every((r) => r.paused),
    10_000,
    async () => `every page paused: ${JSON.stringify((await sampleRound(pages)).readings.map((r) => [r.label, r.paused, r.position]))}`,
  );
  const paused = await sampleRound(pages);
  for (const r of paused.readings) {
    assert.ok(Math.abs(r.position - pause.position) * 1000 < PAUSED_ERROR_MS, `${r.label} paused at ${r.position}, room at ${pause.position}`);
  }
  await checkState(pages, pause);

  // Each serverless change reached every page exactly once; versions only went up.
  const counts = countCopies(pages, marks, [seek, pause]);
  for (const [i, p] of pages.entries()) {
    for (const [k, change] of [seek, pause].entries()) {
      const n = counts.copies[i][k];
      assert.equal(n, 1, `${p.label}: change ${change.epoch}/${change.sequence} seen ${n} times`);
    }
    checkVersionsAndErrors(p);
  }

  const figures = { scenario, signal, failoverMs, signalledAtMs: killedMs, tierEvents, changes: counts.changes, lost: counts.lost, duplicated: counts.duplicated, loadavg: loadavg(), ...(mesh ? { mesh } : {}) };
  console.log(`failover after ${signal} (tier event − signal), ms: ${failoverMs.map((f) => f.toFixed(0)).join(', ')}`);
  mkdirSync('test-results', { recursive: true });
  writeFileSync(`test-results/${figuresFile}`, `${JSON.stringify(figures, null, 2)}\n`);
}

/**
 * Waits until every page is linked to every other page and on the socket tier (the full mesh
 * pre-established while the server is up).
 * @param {{label: string, page: import('playwright-core').Page}[]} pages
 */
export function awaitSocketMesh(pages) {
  const peers = pages.length - 1;
  return Promise.all(pages.map((p) => waitFor(
    () => p.page.evaluate((n) => window.music.room.peers.length === n && window.music.room.tier === 'socket', peers),
    LINK_TIMEOUT_MS,
    async () => `${p.label}: ${peers} connected peers on the socket tier; peers ${JSON.stringify(await p.page.evaluate(() => window.music.room.peers))}`,
  )));
}

/**
 * Mid-song through the server: the first page claims the DJ role, loads track a and plays it
 * from 10 s; returns that state once every page follows it.
 * @param {{label: string, page: import('playwright-core').Page}[]} pages
 */
export async function djPlaysMidSong(pages) {
  const [a] = pages;
  await dj(a, 'claimController');
  await dj(a, 'changeTrack', [track('a')]);
  const state = await dj(a, 'play', [10]);
  await settle(state, SETTLE_MS);
  await checkFollow(pages, state, 'before the crash');
  return state;
}

/**
 * The page's `state` events only ever went up by (epoch, sequence) (no change applied twice or
 * out of order), and it reported no `error` event other than `closed`.
 * @param {{label: string, events: any[]}} p
 */
export function checkVersionsAndErrors(p) {
  const versions = p.events.filter((e) => e.type === 'state').map((e) => [e.state.epoch, e.state.sequence]);
  for (let k = 1; k < versions.length; k++) {
    const [pe, ps] = versions[k - 1];
    const [e, s] = versions[k];
    assert.ok(e > pe || (e === pe && s > ps), `${p.label}: state ${e}/${s} after ${pe}/${ps}`);
  }
  const errors = p.events.filter((e) => e.type === 'error' && e.code !== 'closed');
  assert.deepEqual(errors, [], `${p.label}: errors`);
}

/**
 * How often each page saw each of `changes` (a `control` event with its (epoch, sequence))
 * since `marks[i]` (an index into its events): `copies[page][change]`, and over all pages the
 * deliveries expected (`changes`), missing (`lost`) and extra (`duplicated`).
 * @param {{events: object[]}[]} pages
 * @param {number[]} marks
 * @param {{epoch: number, sequence: number}[]} changes
 */
export function countCopies(pages, marks, changes) {
  const copies = pages.map((p, i) => changes.map((c) => p.events.slice(marks[i]).filter((e) => e.type === 'control'
    && e.control.epoch === c.epoch && e.control.sequence === c.sequence).length));
  const flat = copies.flat();
  return {
    copies,
    changes: flat.length,
    lost: flat.filter((n) => n === 0).length,
    duplicated: flat.reduce((sum, n) => sum + Math.max(0, n - 1), 0),
  };
}

/** Wait until `state` has taken effect plus `ms` (true clock = shared clock). */
export async function settle(state, ms) {
  const wait = state.referenceTime + ms - Date.now();
  if (wait > 0) await sleep(wait);
}

/** Every page holds `state` (same version). */
export async function checkState(pages, state) {
  for (const p of pages) {
    const s = await p.page.evaluate(() => window.music.room.state);
    assert.deepEqual([s.epoch, s.sequence, s.isPlaying, s.trackId], [state.epoch, state.sequence, state.isPlaying, state.trackId], `${p.label}: state`);
  }
}

/** Every page holds `state` and plays where the room is, within MAX_ERROR_MS. */
export async function checkFollow(pages, state, when) {
  await checkState(pages, state);
  const round = await sampleRound(pages);
  const room = roomPosition(state, round.atMs);
  for (const r of round.readings) {
    assert.equal(r.paused, !state.isPlaying, `${when}: ${r.label} paused=${r.paused}`);
    const err = (r.position - room) * 1000;
    assert.ok(Math.abs(err) < MAX_ERROR_MS, `${when}: ${r.label} ${err.toFixed(1)} ms from the room`);
  }
}
