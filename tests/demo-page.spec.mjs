// The demo pages as README.md's first section tells a newcomer to use them: open
// http://…/ in two tabs (each handshakes, shows its lanes, joins room `demo`; a message sent in
// one arrives in the other), the same over SSE (`?transport=sse`; `?room=` picks the room), and music.html (the music
// room panels render, the room is joined, "Become DJ" makes this tab the DJ). Any console
// error or uncaught page error on any of these pages fails the test.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser } from './support/browser.mjs';
import { startServer } from './support/server.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTracks } from '../scripts/lib/tones.mjs';

const WAIT_MS = 20_000;

/** @type {import('./support/server.mjs').Server} */
let server;
/** Temporary media directory with the demo tracks. */
let mediaDir;
/** @type {import('playwright-core').Browser} */
let browser;
/** Console errors and page errors of every page opened, with the page's label. */
const problems = [];

before(async () => {
  // The demo tracks `npm start` writes into media/, in a directory of this run.
  mediaDir = mkdtempSync(join(tmpdir(), 'p3-readme-media-'));
  writeTracks(mediaDir);
  server = await startServer({ appVersion: 'demo-e2e', args: ['--stun', '', '--media-dir', mediaDir] });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (mediaDir) rmSync(mediaDir, { recursive: true, force: true });
});

/**
 * Open `path` of the server in a new tab of `context`, recording console errors and page
 * errors in `problems`.
 * @param {import('playwright-core').BrowserContext} context
 * @param {string} path
 * @param {string} label
 */
async function openTab(context, path, label) {
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`[${label} console.error] ${msg.text()} (${msg.location().url})`);
  });
  page.on('pageerror', (err) => problems.push(`[${label} pageerror] ${err.stack ?? err}`));
  await page.goto(`${server.url}${path}`);
  return page;
}

/**
 * Wait until the lanes demo in `page` is open with its lanes listed and the room joined.
 * @param {import('playwright-core').Page} page
 * @param {string} room
 */
async function waitLanesDemoReady(page, room) {
  await page.waitForSelector('#state[data-state="open"]', { timeout: WAIT_MS });
  await page.waitForFunction((r) => document.getElementById('room-name').textContent === r, room, { timeout: WAIT_MS });
  await page.waitForFunction(() => !document.getElementById('send-button').disabled, null, { timeout: WAIT_MS });
  return page.evaluate(() => ({
    sessionId: document.getElementById('session-id').textContent,
    transport: document.getElementById('transport').textContent,
    lanes: [...document.querySelectorAll('#lane-rows tr')].map((tr) => tr.cells[1]?.textContent),
    sendLanes: document.getElementById('send-lane').options.length,
  }));
}

/**
 * Send `text` from `from` on its default lane and wait until `to` shows it in its log.
 * @param {import('playwright-core').Page} from
 * @param {import('playwright-core').Page} to
 * @param {string} text
 */
async function sendAndSee(from, to, text) {
  await from.fill('#send-text', text);
  await from.click('#send-button');
  await to.waitForFunction((t) => document.getElementById('log').textContent.includes(t), text, { timeout: WAIT_MS });
}

// Each run in its own room: the first run's sessions may still be members of its room.
for (const [transport, query, room] of [['websocket', '', 'demo'], ['sse', '?transport=sse&room=demo-sse', 'demo-sse']]) {
  test(`lanes demo (${transport}): two tabs connect, list their lanes, join "${room}" and exchange a message`, { timeout: 90_000 }, async () => {
    const context = await browser.newContext();
    try {
      const a = await openTab(context, `/${query}`, `${transport} tab A`);
      const b = await openTab(context, `/${query}`, `${transport} tab B`);
      const [infoA, infoB] = await Promise.all([waitLanesDemoReady(a, room), waitLanesDemoReady(b, room)]);
      assert.notEqual(infoA.sessionId, infoB.sessionId);
      assert.match(infoA.sessionId, /^[0-9a-f-]{36}$/);
      assert.match(infoA.transport.toLowerCase(), transport === 'sse' ? /sse/ : /websocket/);
      assert.deepEqual(infoA.lanes, ['Control', 'Messaging', 'Voice', 'Video', 'Data', 'Telemetry', 'Sync', 'Relay']);
      assert.ok(infoA.sendLanes > 0, 'the send form lists lanes');
      await a.waitForFunction(() => document.getElementById('member-count').textContent === '2 members', null, { timeout: WAIT_MS });
      await sendAndSee(a, b, `hello from A over ${transport}`);
      await sendAndSee(b, a, `hello from B over ${transport}`);
      assert.deepEqual(problems, [], 'no console errors or page errors');
    } finally {
      await context.close();
    }
  });
}

test('music room demo: panels render, the room is joined and "Become DJ" makes this tab the DJ', { timeout: 90_000 }, async () => {
  const context = await browser.newContext();
  try {
    const page = await openTab(context, '/music.html', 'music');
    await page.waitForSelector('#state[data-state="open"]', { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById('room-name').textContent === 'music', null, { timeout: WAIT_MS });
    for (const id of ['room-form', 'offset', 'player', 'track-select', 'plot', 'sync-status']) {
      assert.ok(await page.$(`#${id}`), `#${id} is on the page`);
    }
    await page.waitForFunction(() => document.getElementById('track-select').options.length > 0, null, { timeout: WAIT_MS });
    await page.waitForFunction(() => !document.getElementById('claim').disabled, null, { timeout: WAIT_MS });
    await page.click('#claim');
    await page.waitForFunction(() => document.getElementById('dj').textContent === 'you', null, { timeout: WAIT_MS });
    await page.waitForFunction(() => document.getElementById('offset').textContent.includes('probes'), null, { timeout: WAIT_MS });
    assert.deepEqual(problems, [], 'no console errors or page errors');
  } finally {
    await context.close();
  }
});
