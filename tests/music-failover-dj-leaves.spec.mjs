// Music failover, the DJ's browser closes while serverless (issue #5 Tier 2, election): three
// separate Chromium instances follow a room with `peerToPeer`; the server is SIGKILLed
// mid-song, every page goes to the webrtc tier, then the DJ's whole browser is closed. The
// two others elect a new controller by the documented rule (lowest reachable session id,
// epoch + 1; PROTOCOL.md §13.2) without any vote, report it (`controller` event, `room.claim`),
// and follow the new DJ's seek over the mesh; the old DJ's epoch is over (the new changes carry
// epoch + 1, and only the claim's controller may change the room: the other survivor's seek is
// refused with `not_controller`). The room clock follows the election (PROTOCOL.md §13.10): the
// new DJ hosts it from its own mapping and the other survivor reads it over the mesh. Figures
// (election ms per page, the seek's copies): test-results/music-failover-dj-leaves.json for
// `npm run bench`; nothing timed is asserted.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { test } from 'node:test';
import { waitFor } from './support/client.mjs';
import { checkFollow, countCopies, settle } from './support/failover.mjs';
import { clockApart, clocks, RESET_CLOCK_BOUND_MS } from './support/mesh-drift.mjs';
import { dj, launchMusicBrowser, musicServerForSpec, openMusicPage, track } from './support/music.mjs';

const ROOM = 'e2e-failover-dj-leaves';
const PAGES = [
  { label: 'A', skewMs: 700, driftPpm: 10 },
  { label: 'B', skewMs: -900, driftPpm: -10 },
  { label: 'C', skewMs: 300, driftPpm: 5 },
];
const TIMEOUT_MS = 30_000;

const spec = musicServerForSpec();
const { browsers } = spec;

test('DJ browser closed while serverless: the lowest remaining id is elected with epoch + 1 and everyone follows it', { timeout: 240_000 }, async () => {
  const url = spec.music.server.url;
  browsers.push(...(await Promise.all(PAGES.map(() => launchMusicBrowser({ autoplay: true })))));
  const pages = [];
  for (const [i, p] of PAGES.entries()) {
    pages.push(await openMusicPage(browsers[i], url, { ...p, room: ROOM, p2p: true }));
  }
  const [a, ...rest] = pages;
  await Promise.all(pages.map((p) => waitFor(
    () => p.page.evaluate(() => window.music.room.peers.length === 2),
    TIMEOUT_MS,
    () => `${p.label}: two connected peers`,
  )));

  await dj(a, 'claimController');
  await dj(a, 'changeTrack', [track('a')]);
  const state = await dj(a, 'play', [5]);
  await settle(state, 1500);

  spec.music.server.proc.kill('SIGKILL');
  await Promise.all(pages.map((p) => waitFor(
    () => p.events.find((e) => e.type === 'tier' && e.to === 'webrtc'),
    TIMEOUT_MS,
    () => `${p.label}: tier webrtc`,
  )));

  // The DJ's browser goes away.
  const closedMs = Date.now();
  await browsers[0].close();
  const expected = [...rest.map((p) => p.sessionId)].sort()[0];
  const elected = await Promise.all(rest.map((p) => waitFor(
    () => p.events.find((e) => e.type === 'controller' && e.epoch > state.epoch),
    TIMEOUT_MS,
    () => `${p.label}: a controller event; events ${JSON.stringify(p.events.filter((e) => !['clock', 'status'].includes(e.type)).slice(-8))}`,
  )));
  for (const [i, e] of elected.entries()) {
    assert.equal(e.controller, expected, `${rest[i].label}: ${JSON.stringify(e)}`);
    assert.equal(e.epoch, state.epoch + 1, `${rest[i].label}: ${JSON.stringify(e)}`);
  }
  for (const p of rest) {
    assert.deepEqual(await p.page.evaluate(() => window.music.room.claim), { epoch: state.epoch + 1, controller: expected });
  }

  const electionMs = elected.map((e) => Math.round((e.trueMs - closedMs) * 10) / 10);
  const marks = rest.map((p) => p.events.length);
  const newDj = rest.find((p) => p.sessionId === expected);
  const other = rest.find((p) => p.sessionId !== expected);
  await assert.rejects(dj(other, 'seek', [20]), (err) => err.code === 'not_controller');
  const seek = await dj(newDj, 'seek', [40]);
  assert.deepEqual([seek.epoch, seek.sequence, seek.controllerId], [state.epoch + 1, 1, expected]);
  await settle(seek, 2500);
  await checkFollow(rest, seek, 'after the election');
  const [hostClock, otherClock] = await clocks([newDj, other]);
  assert.equal(hostClock.source, 'host', `${newDj.label}: ${JSON.stringify(hostClock)}`);
  assert.ok(hostClock.peerAnswers >= 10, `${newDj.label} answered the other's probes: ${JSON.stringify(hostClock)}`);
  assert.equal(otherClock.source, 'peer', `${other.label}: ${JSON.stringify(otherClock)}`);
  const apart = await clockApart([newDj, other], 1, 0);
  assert.ok(Math.abs(apart) < RESET_CLOCK_BOUND_MS, `${other.label} reads the room clock ${apart.toFixed(1)} ms from the new DJ's`);
  for (const p of rest) {
    const errors = p.events.filter((e) => e.type === 'error' && e.code !== 'closed');
    assert.deepEqual(errors, [], `${p.label}: errors`);
  }
  // Figures for `npm run bench` (election: the DJ's browser closed → `controller` event).
  const counts = countCopies(rest, marks, [seek]);
  console.log(`DJ left, election after (ms): ${electionMs.join(', ')}`);
  mkdirSync('test-results', { recursive: true });
  writeFileSync('test-results/music-failover-dj-leaves.json', `${JSON.stringify({
    scenario: 'dj-leaves', electionMs, changes: counts.changes, lost: counts.lost, duplicated: counts.duplicated, loadavg: loadavg(),
  }, null, 2)}\n`);
  assert.deepEqual([counts.lost, counts.duplicated], [0, 0], 'the new DJ\'s seek once on every page');
});
