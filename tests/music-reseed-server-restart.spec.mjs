// A restarted server's music room is re-seeded by the devices (PROTOCOL.md §13.14), in three
// separate headless Chromium instances following one room with `peerToPeer`:
//
// 1. Full mesh on the socket tier; DJ A plays track a from 10 s through the server.
// 2. The server is SIGKILLed: every page goes to the mesh and keeps playing the same track.
// 3. The server restarts on the same port with an empty room (no track, not playing). Every
//    page reconnects under a new session and rejoins; each pushes the state it followed as
//    the `seed` of a `music-changes` push; the first to arrive seeds the fresh room (epoch
//    raised), the others' seeds are refused (server wins) and every page follows the server.
//
// Checked: every page ends on one server state above the pre-crash version, still playing
// track a on the same timeline (the seeded state's position at any instant is the pre-crash
// state's), positions agree with the room; exactly one page's push was `seeded`; a late
// joiner D (no mesh) gets that state from the server's snapshot and plays in step; no page
// reports an error. Without the seed (server ignoring it) the pushes only raise the empty
// room's epoch: every page follows that empty state (no track, paused) and the music stops.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from './support/client.mjs';
import { awaitSocketMesh, checkFollow, djPlaysMidSong, settle } from './support/failover.mjs';
import { launchMusicBrowser, musicServerForSpec, openMusicPage, roomPosition } from './support/music.mjs';

const ROOM = 'e2e-reseed-restart';
const PAGES = [
  { label: 'A', skewMs: 900, driftPpm: 20 },
  { label: 'B', skewMs: -1200, driftPpm: -15 },
  { label: 'C', skewMs: 400, driftPpm: 5 },
];
const LINK_TIMEOUT_MS = 30_000;
/** Reconnect backoff after the outage can reach 16 s (seed 001: 1, 2, 4, 8, 16 s). */
const BACK_TIMEOUT_MS = 90_000;

const spec = musicServerForSpec();
const { browsers } = spec;

test('server restarted mid-song: the devices re-seed its empty room, everyone keeps playing the same track, a late joiner gets it', { timeout: 240_000 }, async () => {
  const url = spec.music.server.url;
  browsers.push(...(await Promise.all([...PAGES, {}].map(() => launchMusicBrowser({ autoplay: true })))));
  const pages = [];
  for (const [i, p] of PAGES.entries()) {
    pages.push(await openMusicPage(browsers[i], url, { ...p, room: ROOM, p2p: true }));
  }
  const [a] = pages;
  await awaitSocketMesh(pages);
  const before = await djPlaysMidSong(pages);

  spec.music.server.proc.kill('SIGKILL');
  await Promise.all(pages.map((p) => waitFor(
    () => p.events.find((e) => e.type === 'tier' && e.to === 'webrtc'),
    LINK_TIMEOUT_MS,
    () => `${p.label}: a tier event to webrtc`,
  )));
  await sleep(1000);
  await checkFollow(pages, before, 'on the mesh');
  const marks = pages.map((p) => p.events.length);

  await spec.music.server.restart();
  const restartedMs = Date.now();
  await Promise.all(pages.map((p) => waitFor(
    () => p.page.evaluate((v) => {
      const s = window.music.room.state;
      return window.music.room.tier === 'socket' && s !== null && s.epoch > v;
    }, before.epoch),
    BACK_TIMEOUT_MS,
    async () => `${p.label}: a server state above epoch ${before.epoch}; state ${JSON.stringify(await p.page.evaluate(() => window.music.room.state))}, events ${JSON.stringify(p.events.filter((e) => e.type !== 'clock').slice(-8))}`,
  )));
  console.log(`server back → every page on the seeded state: ${((Date.now() - restartedMs) / 1000).toFixed(1)} s`);
  // Every seed push is answered; one of them seeded the room.
  const acks = await Promise.all(pages.map((p, i) => waitFor(
    () => p.events.slice(marks[i]).find((e) => e.type === 'reconciled'),
    30_000,
    () => `${p.label}: the seed push's ack`,
  )));
  await sleep(500);
  const seeded = await a.page.evaluate(() => window.music.room.state);
  assert.equal(seeded.trackId, before.trackId, 'the track chosen before the crash survives');
  assert.equal(seeded.isPlaying, true, 'still playing');
  await checkFollow(pages, seeded, 'on the server state');
  for (const t of [seeded.referenceTime, Date.now(), Date.now() + 60_000]) {
    const drift = Math.abs(roomPosition(seeded, t) - roomPosition(before, t));
    assert.ok(drift < 0.001, `same timeline: ${drift} s apart at ${t}`);
  }
  assert.equal(acks.filter((e) => e.seeded).length, 1, `exactly one seed taken: ${JSON.stringify(acks)}`);

  await settle(seeded, 1500);
  await checkFollow(pages, seeded, 'after the server is back');

  // A late joiner gets the seeded state from the restarted server and plays in step.
  const d = await openMusicPage(browsers[3], url, { label: 'D', room: ROOM, skewMs: -600 });
  await waitFor(
    () => d.page.evaluate(() => window.music.room.state !== null),
    LINK_TIMEOUT_MS,
    () => 'D: a snapshot from the restarted server',
  );
  await sleep(2500);
  await checkFollow([...pages, d], seeded, 'with the late joiner');

  for (const p of [...pages, d]) {
    const errors = p.events.filter((e) => e.type === 'error' && e.code !== 'closed');
    assert.deepEqual(errors, [], `${p.label}: errors`);
  }
});
