// One music room across three server-stub nodes on one redis-server behind HAProxy (issue 14,
// PROTOCOL.md §17 "Music rooms: one authority per room"), in three separate headless Chromium
// instances with skewed clocks: page A's balancer port goes to node0, B's to node1, C's to
// node2 (tests/support/cluster.mjs; a killed node's port falls back to the next node).
//
// 1. C claims the DJ role: the room's first music message, so node2 takes the room's lease
//    (`p3:music:{room}:lease` in Redis names it) and is the room's one authority. C hands the
//    role to A: A's changes (node0) go to the authority on node2, whose states reach every
//    page. A loads a track and plays, then seeks: every page holds the same (epoch, sequence)
//    and plays where the room is, within the single-node drift bounds of the music-sync spec
//    (CHROMIUM_BOUNDS), each change seen once per page.
// 2. Mid-song, the node that holds the lease (read from Redis) is SIGKILLed. Its page
//    reconnects through its balancer port (to node0) under the same session; another node
//    takes the lease with a higher fencing token and sends the room's state under a higher
//    epoch: every page gets it within TAKEOVER_ALL_MS of the kill (a liveness bound; the
//    takeover time itself is a benchmark figure, `cluster.takeover.*`). The room keeps its track, DJ
//    and position (no jump) and keeps playing, in sync again within the bounds.
// 3. The DJ seeks after the takeover: every page gets that change exactly once (its `control`
//    and its `state`), states only ever went up by (epoch, sequence) on every page, and no page
//    reported an error.
// Takeover times are printed (`# ` lines): kill → new lease holder in Redis, and kill → first
// new-epoch state per page; they and the drift figures go to test-results/cluster-music.json.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { waitFor } from './support/client.mjs';
import { startCluster } from './support/cluster.mjs';
// PAGES[i] connects through balancer port i, to node i.
import { checkState, checkVersionsAndErrors, countCopies, PAGES, settle } from './support/failover.mjs';
import { CHROMIUM_BOUNDS, dumpLogs } from './support/music-sync.mjs';
import { dj, launchMusicBrowser, musicServerArgs, openMusicPage, quantile, roomPosition, sampleRound, track, writeMusicMedia } from './support/music.mjs';

const ROOM = 'e2e-cluster-music';
/**
 * Kill → the new authority's state on every page, the killed node's reconnecting one included,
 * ms: a liveness bound (the room goes on), not the speed target. Issue 14's takeover target
 * (≤ 2 s) is a benchmark figure: `node scripts/bench.mjs --takeover` runs this spec repeatedly
 * and reports `cluster.takeover.*` from test-results/cluster-music.json.
 */
const TAKEOVER_ALL_MS = 5000;
/** After a change takes effect, time allowed before drift is measured, ms (music-sync's). */
const SETTLE_MS = 2500;
/** Sampling after each change: rounds and their spacing. */
const ROUNDS = 10;
const ROUND_EVERY_MS = 250;
/** Lease holder polling (Redis), ms. */
const POLL_MS = 25;

const execFileAsync = promisify(execFile);

/** @type {Awaited<ReturnType<typeof startCluster>>} */
let cluster;
let mediaDir;
const browsers = [];

before(async () => {
  mediaDir = writeMusicMedia();
  cluster = await startCluster({
    nodes: 3,
    frontends: [0, 1, 2].map((i) => ({ handshake: i, rest: i })),
    args: musicServerArgs(mediaDir, { latencyMs: 20, jitterMs: 5 }),
  });
  browsers.push(...(await Promise.all(PAGES.map(() => launchMusicBrowser({ autoplay: true })))));
});

after(async () => {
  await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  await cluster?.stop();
  if (mediaDir) rmSync(mediaDir, { recursive: true, force: true });
});

const leaseKey = (part) => `p3:music:{${ROOM}}:${part}`;
const nodeOf = (sessionId) => cluster.redis.cli('HGET', `p3:session:${sessionId}`, 'node');
/** The lease holder and fencing token, read without blocking the test's event loop. */
async function lease() {
  const { stdout } = await execFileAsync('redis-cli', ['-p', String(cluster.redis.port), 'MGET', leaseKey('lease'), leaseKey('fence')]);
  const [holder, fence] = stdout.split('\n');
  return { holder: holder || null, fence: Number(fence) || 0 };
}

test('one music room on three nodes: followed across nodes; the lease holder SIGKILLed mid-song, another node takes over with a higher epoch, the room plays on and the next DJ change reaches every page once', { timeout: 90_000 }, async () => {
  const pages = [];
  for (const [i, p] of PAGES.entries()) {
    pages.push(await openMusicPage(browsers[i], cluster.urls[i], { ...p, room: ROOM }));
  }
  const [a, b, c] = pages;
  for (const [i, p] of pages.entries()) assert.equal(nodeOf(p.sessionId), `node${i}`, `${p.label} held by node${i}`);
  await Promise.all(pages.map((p) => waitFor(
    () => p.page.evaluate(() => window.music.room.clock.synced && window.music.room.clock.samples >= 10),
    15_000,
    () => `${p.label}: clock burst`,
  )));
  const figures = { errors: [], spreads: [], phases: {} };

  // C's claim is the room's first music message: node2 takes the lease. C hands over to A.
  assert.deepEqual(await lease(), { holder: null, fence: 0 }, 'no lease before the first music message');
  await dj(c, 'claimController');
  const first = await lease();
  assert.equal(first.holder, 'node2', 'the node of the first music message holds the lease');
  const handover = await dj(c, 'handover', [a.sessionId]);
  assert.equal(handover.controllerId, a.sessionId);
  await waitFor(async () => (await Promise.all(pages.map((p) => p.page.evaluate(() => window.music.room.state?.controllerId))))
    .every((id) => id === a.sessionId), 10_000, () => 'every page to see A as DJ');

  // A (node0) drives the room held by node2; B (node1) and C (node2) follow.
  const marks0 = pages.map((p) => p.events.length);
  await dj(a, 'changeTrack', [track('a')]);
  const play = await dj(a, 'play', [10]);
  await measure('play', pages, play, figures);
  const seek = await dj(a, 'seek', [70]);
  assert.equal(seek.epoch, play.epoch);
  await measure('seek', pages, seek, figures);
  expectOnce(pages, marks0, [play, seek], 'before the kill');
  assert.equal((await lease()).holder, 'node2', 'node2 still holds the lease');

  // SIGKILL the lease holder mid-song.
  const { holder, fence } = await lease();
  const victim = Number(holder.replace('node', ''));
  const victims = pages.filter((_, i) => i === victim);
  const survivors = pages.filter((_, i) => i !== victim);
  const sessionsBefore = pages.map((p) => p.sessionId);
  const marks1 = pages.map((p) => p.events.length);
  const killedMs = Date.now();
  cluster.nodes[victim].proc.kill('SIGKILL');

  // Kill → another node holds the lease (Redis), polled meanwhile.
  let taken = null;
  const leasePoll = (async () => {
    while (Date.now() - killedMs < TAKEOVER_ALL_MS * 2) {
      const l = await lease().catch(() => null);
      if (l?.holder && l.holder !== holder) {
        taken = { ...l, afterMs: Date.now() - killedMs };
        return;
      }
      await sleep(POLL_MS);
    }
  })();
  // Kill → the first state of a newer epoch on each page.
  const newEpoch = (p, i) => p.events.slice(marks1[i]).find((e) => e.type === 'state' && e.state.epoch > seek.epoch);
  const firstNew = await Promise.all(pages.map((p, i) => waitFor(
    () => newEpoch(p, i),
    TAKEOVER_ALL_MS + 5000,
    () => `${p.label}: a state of a newer epoch than ${seek.epoch}; events ${JSON.stringify(p.events.slice(marks1[i]).filter((e) => e.type !== 'clock'))}`,
  )));
  await leasePoll;
  const takeoverMs = firstNew.map((e) => e.trueMs - killedMs);
  const line = pages.map((p, i) => `${p.label}${i === victim ? ' (reconnected)' : ''} ${takeoverMs[i].toFixed(0)}`).join(', ');
  console.log(`# lease holder ${holder} (token ${fence}) SIGKILLed; lease taken by ${taken?.holder} (token ${taken?.fence}) after ${taken?.afterMs} ms`);
  console.log(`# kill → first new-epoch state (epoch ${firstNew[0].state.epoch}), ms: ${line}`);
  const survivorMs = Math.min(...survivors.map((p) => takeoverMs[pages.indexOf(p)]));
  console.log(`# takeover on pages of surviving nodes: ${survivorMs.toFixed(0)} ms (first), ${Math.max(...survivors.map((p) => takeoverMs[pages.indexOf(p)])).toFixed(0)} ms (last)`);
  assert.ok(taken, 'another node took the lease');
  assert.ok(taken.fence > fence, `the fencing token went up: ${fence} → ${taken.fence}`);
  for (const [i, ms] of takeoverMs.entries()) assert.ok(ms <= TAKEOVER_ALL_MS, `${pages[i].label}: new-epoch state ${ms.toFixed(0)} ms after the kill`);

  // The killed node's page reconnected through its balancer port, under the same session.
  for (const p of victims) {
    await waitFor(() => p.page.evaluate(() => window.music.client.state === 'open'), 10_000, () => `${p.label} to reconnect`);
    assert.equal(await p.page.evaluate(() => window.music.client.sessionId), sessionsBefore[pages.indexOf(p)], `${p.label} resumed its session`);
    const now = nodeOf(p.sessionId);
    assert.equal(now, `node${(victim + 1) % 3}`, `${p.label} held by the killed node's backup`);
  }

  // The new authority's state: same track, DJ, play state and position (no jump), a higher
  // epoch, on every page; and the room keeps playing in sync.
  const resumed = firstNew[0].state;
  for (const e of firstNew) assert.deepEqual([e.state.epoch, e.state.sequence], [resumed.epoch, resumed.sequence], 'one new state on every page');
  assert.ok(resumed.epoch > seek.epoch && resumed.epoch >= taken.fence, `epoch ${seek.epoch} → ${resumed.epoch} (token ${taken.fence})`);
  assert.deepEqual([resumed.trackId, resumed.isPlaying, resumed.controllerId], [seek.trackId, true, a.sessionId]);
  const jumpMs = (roomPosition(resumed, killedMs) - roomPosition(seek, killedMs)) * 1000;
  assert.ok(Math.abs(jumpMs) < 1, `the room's position did not jump (${jumpMs.toFixed(2)} ms)`);
  const earlier = await sampleRound(pages);
  await measure('after-takeover', pages, resumed, figures, Math.max(0, killedMs + Math.max(...takeoverMs) + SETTLE_MS - resumed.referenceTime));
  const later = await sampleRound(pages);
  for (const [i, r] of later.readings.entries()) {
    const advanced = r.position - earlier.readings[i].position;
    assert.ok(advanced > (later.atMs - earlier.atMs) / 1000 - 0.1, `${r.label} advanced ${advanced.toFixed(3)} s in ${((later.atMs - earlier.atMs) / 1000).toFixed(3)} s`);
  }

  // A DJ change after the takeover reaches every page exactly once.
  const marks2 = pages.map((p) => p.events.length);
  const seek2 = await dj(a, 'seek', [30]);
  assert.equal(seek2.epoch, resumed.epoch, 'the DJ\'s change is in the new authority\'s epoch');
  assert.ok(seek2.sequence > resumed.sequence);
  await measure('seek-after-takeover', pages, seek2, figures);
  await checkState(pages, seek2);
  expectOnce(pages, marks2, [seek2], 'after the takeover');
  for (const p of pages) checkVersionsAndErrors(p);
  assert.equal((await lease()).holder, taken.holder, 'the new holder kept the lease');

  const summary = {
    driftP50Ms: round(quantile(figures.errors, 0.5)),
    driftP95Ms: round(quantile(figures.errors, 0.95)),
    driftMaxMs: round(quantile(figures.errors, 1)),
    spreadP95Ms: round(quantile(figures.spreads, 0.95)),
    phases: figures.phases,
  };
  console.log(`# drift against the room: ${JSON.stringify(summary)}`);
  mkdirSync('test-results', { recursive: true });
  writeFileSync('test-results/cluster-music.json', `${JSON.stringify({ killed: holder, leaseTakenBy: taken.holder, leaseTakeoverMs: taken.afterMs, stateTakeoverMs: Object.fromEntries(pages.map((p, i) => [p.label, round(takeoverMs[i])])), victims: victims.map((p) => p.label), ...summary }, null, 2)}\n`);
  assert.ok(summary.driftP95Ms <= CHROMIUM_BOUNDS.p95ErrorMs, `p95 |error| ${summary.driftP95Ms} ms`);
  assert.ok(summary.spreadP95Ms <= CHROMIUM_BOUNDS.p95SpreadMs, `p95 spread ${summary.spreadP95Ms} ms`);
});

/**
 * Every change of `changes` reached every page exactly once since `marks`: its resolved
 * `control` and its `state`.
 */
function expectOnce(pages, marks, changes, when) {
  const counts = countCopies(pages, marks, changes);
  for (const [i, p] of pages.entries()) {
    for (const [k, change] of changes.entries()) {
      assert.equal(counts.copies[i][k], 1, `${when}: ${p.label} saw change ${change.epoch}/${change.sequence} ${counts.copies[i][k]} times`);
      const states = p.events.slice(marks[i]).filter((e) => e.type === 'state' && e.state.epoch === change.epoch && e.state.sequence === change.sequence);
      assert.equal(states.length, 1, `${when}: ${p.label} got state ${change.epoch}/${change.sequence} ${states.length} times`);
    }
  }
}

/**
 * Once `state` has been in force for `settleMs`, sample every page ROUNDS times: each holds
 * `state` (epoch, sequence), plays its track within CHROMIUM_BOUNDS.maxErrorMs of the room.
 */
async function measure(phase, pages, state, figures, settleMs = SETTLE_MS) {
  await settle(state, settleMs);
  try {
    await checkState(pages, state);
    const errors = [];
    for (let i = 0; i < ROUNDS; i++) {
      const { atMs, readings } = await sampleRound(pages);
      const truth = roomPosition(state, atMs);
      for (const r of readings) {
        assert.equal(r.trackId, state.trackId, `${phase}: ${r.label} track`);
        assert.ok(!r.paused, `${phase}: ${r.label} should play (status ${r.status})`);
        const err = (r.position - truth) * 1000;
        assert.ok(Math.abs(err) <= CHROMIUM_BOUNDS.maxErrorMs, `${phase}: ${r.label} is ${err.toFixed(1)} ms off the room (status ${r.status}, rate ${r.rate})`);
        errors.push(Math.abs(err));
      }
      const positions = readings.map((r) => r.position);
      figures.spreads.push((Math.max(...positions) - Math.min(...positions)) * 1000);
      await sleep(ROUND_EVERY_MS);
    }
    figures.errors.push(...errors);
    figures.phases[phase] = { p50Ms: round(quantile(errors, 0.5)), p95Ms: round(quantile(errors, 0.95)), maxMs: round(quantile(errors, 1)) };
  } catch (err) {
    await dumpLogs(pages, state);
    throw err;
  }
}

function round(x) {
  return Math.round(x * 100) / 100;
}
