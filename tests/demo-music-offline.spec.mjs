// The music demo (www/music.html) reloaded while the server is down (issue #5 Tier 3;
// PROTOCOL.md §13.12 "Starting offline"), as an installed app would be: its page, script,
// styles, SDK and tracks come from a Playwright route (what a service worker's cache would
// serve), the connect fails, and the demo opens the room with `MusicRoom.openOffline`: the
// restored state (playing) is shown on the `offline` tier and the controls work (every device
// is its own controller offline). A real click pauses (queued: "1 waiting for the server").
// When the server is back the demo's own connect loop (1, 2, 4, 8, 16 s) attaches a client:
// socket tier, nothing pending, and the room shows the offline pause the server took (a
// restarted server has lost the room, so the track it had ordered before is gone with it).

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { writeTracks } from '../scripts/lib/tones.mjs';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const WAIT_MS = 30_000;
/** The demo's reconnect backoff after the server returns: up to 1 + 2 + 4 + 8 + 16 s of tries. */
const BACK_MS = 60_000;

let server;
let mediaDir;
let browser;

before(async () => {
  mediaDir = mkdtempSync(join(tmpdir(), 'p3-demo-offline-media-'));
  writeTracks(mediaDir);
  server = await startServer({ appVersion: 'demo-offline-e2e', args: ['--stun', '', '--media-dir', mediaDir] });
  // The routed page counts as public for Local Network Access, which would refuse its
  // WebSocket to 127.0.0.1 (a real app shell comes from the same loopback origin).
  browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS, '--autoplay-policy=no-user-gesture-required', '--mute-audio', '--disable-features=LocalNetworkAccessChecks'],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (mediaDir) rmSync(mediaDir, { recursive: true, force: true });
});

/** Serve the demo, the SDK and the tracks from disk, with byte ranges for the media. */
async function serveShell(page, url) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm' };
  const file = (path) => {
    const clean = decodeURIComponent(path);
    if (clean.split('/').includes('..')) return null;
    if (clean.startsWith('/pkg/')) return join(ROOT, 'pkg', clean.slice(5));
    if (clean.startsWith('/media/')) return join(mediaDir, clean.slice(7));
    return join(ROOT, 'www', clean.slice(1));
  };
  await page.route(`${url}/**`, (route) => {
    const { pathname } = new URL(route.request().url());
    if (pathname.startsWith('/api/')) return route.abort('connectionrefused');
    const path = file(pathname);
    if (!path) return route.abort();
    let body;
    try {
      body = readFileSync(path);
    } catch {
      return route.fulfill({ status: 404, body: '' });
    }
    const ext = path.slice(path.lastIndexOf('.'));
    const type = types[ext] ?? (ext === '.wav' ? 'audio/wav' : 'application/octet-stream');
    const range = /^bytes=(\d+)-(\d*)$/.exec(route.request().headers().range ?? '');
    if (!range) return route.fulfill({ status: 200, headers: { 'content-type': type, 'accept-ranges': 'bytes' }, body });
    const start = Number(range[1]);
    const end = range[2] ? Math.min(Number(range[2]), body.length - 1) : body.length - 1;
    return route.fulfill({
      status: 206,
      headers: { 'content-type': type, 'accept-ranges': 'bytes', 'content-range': `bytes ${start}-${end}/${body.length}` },
      body: body.subarray(start, end + 1),
    });
  });
}

const text = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);

test('music demo reloaded offline: opens the room from its last state, takes a pause offline, attaches when the server is back', { timeout: 180_000 }, async () => {
  const page = await browser.newPage();
  const url = server.url;
  await page.goto(`${url}/music.html?room=demo-offline`);
  await page.waitForSelector('#state[data-state="open"]', { timeout: WAIT_MS });
  await page.waitForFunction(() => document.getElementById('track-select').options.length > 0 && !document.getElementById('claim').disabled, null, { timeout: WAIT_MS });
  await page.click('#claim');
  await page.waitForFunction(() => document.getElementById('dj').textContent === 'you', null, { timeout: WAIT_MS });
  await page.click('#change-track');
  await page.click('#play');
  await page.waitForFunction(() => document.getElementById('now-playing').textContent.startsWith('▶'), null, { timeout: WAIT_MS });
  const playing = await page.evaluate(() => window.p3music.room.state);
  // Let the clock offset and the state be saved (after every input; a few media events).
  await page.waitForFunction(() => document.getElementById('offset').textContent.includes('probes'), null, { timeout: WAIT_MS });

  // The server dies; the app is reloaded from its "cache".
  server.proc.kill('SIGKILL');
  await serveShell(page, url);
  await page.reload();
  await page.waitForFunction(() => window.p3music?.room?.tier === 'offline', null, { timeout: WAIT_MS });
  assert.equal(await text(page, 'tier'), 'offline');
  const restored = await page.evaluate(() => window.p3music.room.state);
  assert.deepEqual([restored.epoch, restored.sequence, restored.trackId, restored.isPlaying], [playing.epoch, playing.sequence, playing.trackId, true], 'the last state followed');
  assert.ok((await text(page, 'now-playing')).startsWith('▶'));
  // It plays on from there.
  await page.waitForFunction(() => !document.getElementById('player').paused && document.getElementById('player').currentTime > 0.5, null, { timeout: WAIT_MS });
  // Offline every device is its own controller: the DJ buttons work; a real click pauses.
  await page.waitForFunction(() => !document.getElementById('pause').disabled, null, { timeout: WAIT_MS });
  await page.click('#pause');
  await page.waitForFunction(() => document.getElementById('pending').textContent === '1 waiting for the server', null, { timeout: WAIT_MS });
  await page.waitForFunction(() => document.getElementById('player').paused, null, { timeout: WAIT_MS });

  // The server is back: the demo connects, attaches, pushes its pause and follows the server.
  await page.unrouteAll({ behavior: 'ignoreErrors' });
  await server.restart();
  await page.waitForFunction(
    () => window.p3music.room.tier === 'socket' && window.p3music.room.pendingChanges === 0 && window.p3music.client && window.p3music.room.state,
    null,
    { timeout: BACK_MS },
  );
  await page.waitForSelector('#state[data-state="open"]', { timeout: WAIT_MS });
  const final = await page.evaluate(() => window.p3music.room.state);
  // The restarted server lost the room (and the changes it had ordered before): its state is
  // what the queue brought back, the offline pause.
  assert.equal(final.isPlaying, false, 'the server took the offline pause');
  assert.equal(await text(page, 'pending'), 'none');
  assert.equal(await text(page, 'tier'), 'socket');
});
