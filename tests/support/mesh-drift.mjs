// Mesh-mode drift in real Chromium (issue #5, PROTOCOL.md §13.10): after the server is gone,
// every page's listeners take the room clock from the controller over the mesh's p3-control
// DataChannel. `measureMeshDrift` samples every page's <audio> position at common true instants
// (sampleRound) for a while and returns the spread between pages, each page's error against
// the room, and each page's clock error against the controller's kept clock (the room clock
// while serverless) and against the true clock. `checkPeerClock` is the correctness check
// (not a speed target): peer clock samples were actually taken, the controller hosts and
// answers, and a page whose clock was reset after the server died (so every sample it has came
// over the mesh) reads the room clock within a bound despite its ±2 s skew.
//
// The mesh links are loopback DataChannels with no artificial latency (the server's test
// latency applies to WebSocket frames only, and the server is dead here).

import assert from 'node:assert/strict';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { quantile, roomPosition, sampleRound } from './music.mjs';

/** Bound on a reset page's clock against the controller's, ms (correctness, not a target). */
export const RESET_CLOCK_BOUND_MS = 20;
/** Bound on a reset page's clock against the true clock, ms (the controller's kept clock is
 * itself off by its own server-sync error). */
export const RESET_CLOCK_TRUE_BOUND_MS = 30;

/**
 * The room's `MusicClock` of every page.
 * @param {import('./music.mjs').MusicPage[]} pages
 */
export function clocks(pages) {
  return Promise.all(pages.map((p) => p.page.evaluate(() => window.music.room.clock)));
}

/**
 * Sample every page every `everyMs` for `durationMs` while `state` plays.
 * @param {import('./music.mjs').MusicPage[]} pages
 * @param {object} state the room state in force (a MusicRoomState)
 * @param {{host: number, durationMs?: number, everyMs?: number}} options `host`: index of the controller's page
 */
export async function measureMeshDrift(pages, state, { host, durationMs = 10_000, everyMs = 250 }) {
  const spread = [];
  const vsRoom = [];
  const vsHost = [];
  const vsTrue = [];
  let retakes = 0;
  let rounds = 0;
  const end = Date.now() + durationMs;
  while (Date.now() < end) {
    const round = await sampleRound(pages);
    rounds += 1;
    retakes += round.retakes;
    const pos = round.readings.map((r) => r.position * 1000);
    spread.push(Math.max(...pos) - Math.min(...pos));
    const room = roomPosition(state, round.atMs) * 1000;
    for (const p of pos) vsRoom.push(Math.abs(p - room));
    const hostErr = round.readings[host].raw.clockErrorMs;
    for (const [i, r] of round.readings.entries()) {
      vsTrue.push(Math.abs(r.raw.clockErrorMs));
      if (i !== host) vsHost.push(Math.abs(r.raw.clockErrorMs - hostErr));
    }
    await sleep(everyMs);
  }
  const stats = (v) => ({ p50: quantile(v, 0.5), p95: quantile(v, 0.95), max: quantile(v, 1) });
  return {
    rounds,
    retakes,
    spreadMs: stats(spread),
    vsRoomMs: stats(vsRoom),
    clockVsHostMs: stats(vsHost),
    clockVsTrueMs: stats(vsTrue),
    loadavg: loadavg(),
    links: 'loopback DataChannels, no artificial latency',
  };
}

/**
 * `pages[i]`'s clock minus `pages[host]`'s, ms: the median over `rounds` rounds (each page's
 * `serverNow()` against the true clock read around it; see checkPeerClock on stalls).
 * @param {import('./music.mjs').MusicPage[]} pages
 * @param {number} i
 * @param {number} host
 * @param {number} [rounds]
 */
export async function clockApart(pages, i, host, rounds = 3) {
  const d = [];
  for (let k = 0; k < rounds; k++) {
    const round = await sampleRound(pages);
    d.push(round.readings[i].raw.clockErrorMs - round.readings[host].raw.clockErrorMs);
  }
  return quantile(d, 0.5);
}

/**
 * The correctness check of the room clock over the mesh (module docs).
 * @param {import('./music.mjs').MusicPage[]} pages
 * @param {{host: number, reset: number}} options page indexes: the controller, the page reset after the crash
 */
export async function checkPeerClock(pages, { host, reset }) {
  const cs = await clocks(pages);
  for (const [i, c] of cs.entries()) {
    const label = pages[i].label;
    if (i === host) {
      assert.equal(c.source, 'host', `${label}: ${JSON.stringify(c)}`);
      assert.equal(c.peerProbes, 0, `${label} probes nobody as host: ${JSON.stringify(c)}`);
      assert.ok(c.peerAnswers >= 20, `${label} answered its peers: ${JSON.stringify(c)}`);
    } else {
      assert.equal(c.source, 'peer', `${label}: ${JSON.stringify(c)}`);
      assert.ok(c.synced, `${label}: ${JSON.stringify(c)}`);
      assert.ok(c.peerSamples >= 10, `${label} took peer clock samples: ${JSON.stringify(c)}`);
    }
  }
  // The reset page has only mesh samples; its reading of the room clock against the host's,
  // both stamped with the true clock in the same round.
  const c = cs[reset];
  assert.ok(c.samples <= c.peerSamples, `${pages[reset].label}: every sample since the reset came over the mesh: ${JSON.stringify(c)}`);
  const worst = [];
  const vsTrue = [];
  for (let k = 0; k < 5; k++) {
    const round = await sampleRound(pages);
    const d = round.readings[reset].raw.clockErrorMs - round.readings[host].raw.clockErrorMs;
    worst.push(Math.abs(d));
    vsTrue.push(Math.abs(round.readings[reset].raw.clockErrorMs));
  }
  // The median of 5 rounds: a renderer descheduled between a page's two true-clock reads (a
  // loaded machine) puts one reading off by half the stall; that is not the clock.
  const label = `${pages[reset].label} (skew ${pages[reset].skewMs} ms, clock reset after the crash)`;
  const med = quantile(worst, 0.5);
  assert.ok(med < RESET_CLOCK_BOUND_MS, `${label} reads the room clock ${med.toFixed(1)} ms from the controller's (median of ${worst.map((d) => d.toFixed(1)).join(', ')})`);
  const medTrue = quantile(vsTrue, 0.5);
  assert.ok(medTrue < RESET_CLOCK_TRUE_BOUND_MS, `${label} reads the room clock ${medTrue.toFixed(1)} ms from the true clock (median of ${vsTrue.map((d) => d.toFixed(1)).join(', ')})`);
  return { clocks: cs.map((c, i) => ({ label: pages[i].label, skewMs: pages[i].skewMs, ...c })), resetPage: pages[reset].label, resetPageVsHostMs: worst, resetPageVsTrueMs: vsTrue };
}
