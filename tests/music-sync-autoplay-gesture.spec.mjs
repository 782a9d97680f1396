// Music sync under the browser's autoplay policy: a listener in a Chromium started WITHOUT
// `--autoplay-policy=no-user-gesture-required` joins a room the DJ (another Chromium, autoplay
// allowed) plays. Its play() is refused (NotAllowedError): the SDK must surface the
// `needs-user-gesture` state (event and `room.status`) and keep the element paused, without
// retrying; one real click on the page must then start it, in sync with the room.
//
// Nothing is evaluated in the listener's page before the refusal (Playwright's evaluate grants
// user activation): its page reports through console messages (tests/pages/music.html).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from './support/client.mjs';
import {
  dj,
  launchMusicBrowser,
  openMusicPage,
  roomPosition,
  roomState,
  sampleRound,
  startMusicServer,
  track,
} from './support/music.mjs';

const ROOM = 'e2e-gesture';
/** After the click, the listener must be this close to the room (ms), within CLICK_TO_SYNC_MS. */
const TOLERANCE_MS = 40;
const CLICK_TO_SYNC_MS = 4000;

let music;
const browsers = [];

before(async () => {
  music = await startMusicServer({ latencyMs: 30, jitterMs: 10 });
});

after(async () => {
  await Promise.all(browsers.map((b) => b.close()));
  await music?.stop();
});

test('a refused autoplay surfaces needs-user-gesture, and a click starts playback in sync', { timeout: 120_000 }, async () => {
  const url = music.server.url;
  const [djBrowser, listenerBrowser] = await Promise.all([
    launchMusicBrowser({ autoplay: true }),
    launchMusicBrowser({ autoplay: false }),
  ]);
  browsers.push(djBrowser, listenerBrowser);
  const host = await openMusicPage(djBrowser, url, { label: 'DJ', room: ROOM, skewMs: 900 });
  const listener = await openMusicPage(listenerBrowser, url, { label: 'L', room: ROOM, skewMs: -1300 });

  await dj(host, 'claimController');
  await dj(host, 'changeTrack', [track('a'), 20]);
  await dj(host, 'play');

  // The refusal is surfaced, as an event and as the status.
  const gesture = await waitFor(
    () => listener.events.find((e) => e.type === 'needs-user-gesture'),
    15_000,
    () => `needs-user-gesture; listener events: ${JSON.stringify(listener.events)}`,
  );
  assert.ok(
    listener.events.some((e) => e.type === 'status' && e.status === 'needs-user-gesture' && e.trueMs >= gesture.trueMs - 1),
    'status needs-user-gesture',
  );
  // It does not retry by itself: still paused a while later, while the DJ plays.
  await sleep(1500);
  const before = await sampleRound([host, listener]);
  assert.equal(before.readings[0].paused, false, 'the DJ plays');
  assert.equal(before.readings[1].paused, true, 'the listener waits for a gesture');
  assert.equal(before.readings[1].status, 'needs-user-gesture');
  assert.equal(listener.events.filter((e) => e.type === 'needs-user-gesture').length, 1, 'one event, no retry loop');

  // One real click (pointer events give user activation) starts it, in sync.
  const clickedAt = Date.now();
  await listener.page.click('#tap');
  await waitFor(
    () => listener.events.find((e) => e.type === 'status' && e.status === 'in-sync' && e.trueMs > gesture.trueMs),
    CLICK_TO_SYNC_MS,
    () => `in-sync after the click; listener events: ${JSON.stringify(listener.events.slice(-8))}`,
  );
  await sleep(1500);
  const state = await roomState(host);
  const { atMs, readings } = await sampleRound([host, listener]);
  const truth = roomPosition(state, atMs);
  for (const r of readings) {
    assert.equal(r.paused, false, `${r.label} plays`);
    const err = (r.position - truth) * 1000;
    assert.ok(Math.abs(err) <= TOLERANCE_MS, `${r.label} is ${err.toFixed(1)} ms off the room`);
  }
  console.log(`click to in sync: ${(listener.events.find((e) => e.type === 'status' && e.status === 'in-sync' && e.trueMs > gesture.trueMs).trueMs - clickedAt).toFixed(0)} ms`);
});
