// Tier 3 offline mode (seed 004; issue #5; PROTOCOL.md §13.3): changes recorded in the
// persisted offline change queue (`OfflineChangeQueue`, IndexedDB) survive a page reload
// issued the moment `record` resolves, and a restart of the whole browser process on the same
// profile, with their (origin, localSeq) intact. Two tabs and a module worker of the same
// origin recording for the same device id at the same time never get the same localSeq.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH, openSdkPage } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

const SDK_PAGE = readFileSync(new URL('./pages/sdk.html', import.meta.url), 'utf8');

/** @type {import('./support/server.mjs').Server} */
let server;
/** Profile directories to delete at the end. */
const profiles = [];

before(async () => {
  server = await startServer({ appVersion: 'e2e' });
});

after(async () => {
  await server?.stop();
  for (const dir of profiles) rmSync(dir, { recursive: true, force: true });
});

/** A new persistent-profile directory (IndexedDB lives there across browser restarts). */
function newProfile() {
  const dir = mkdtempSync(join(tmpdir(), 'p3-offline-profile-'));
  profiles.push(dir);
  return dir;
}

/** One browser process on profile `dir`. */
function launch(dir) {
  return chromium.launchPersistentContext(dir, { executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
}

/** After a reload the tab shows the server's /api/version again: put the SDK page back. */
async function reloadSdk(page) {
  await page.setContent(SDK_PAGE);
  await page.waitForFunction(() => window.sdkReady || window.sdkError, null, { timeout: 30_000 });
  assert.equal(await page.evaluate(() => window.sdkError ?? null), null);
}

/** The stored queue of `origin` in `room`, as `snapshot()` gives it. */
function snapshot(page, room, origin) {
  return page.evaluate(
    async ({ room, origin }) => {
      const q = await window.sdk.OfflineChangeQueue.open(room, origin);
      const state = await q.snapshot();
      q.close();
      return state;
    },
    { room, origin },
  );
}

/** Records `ops` one after the other in the page; returns the changes. */
function recordAll(page, room, origin, ops) {
  return page.evaluate(
    async ({ room, origin, ops }) => {
      const q = await window.sdk.OfflineChangeQueue.open(room, origin);
      const out = [];
      for (const op of ops) out.push(await q.record(op, 2, 1_700_000_000_000 + out.length));
      q.close();
      return out;
    },
    { room, origin, ops },
  );
}

const seqsOf = (changes) => changes.map((c) => c.localSeq);

test('changes survive a reload right after record resolves, and a browser restart', { timeout: 120_000 }, async () => {
  const dir = newProfile();
  const room = 'reload-room';
  const origin = 'device-a';
  let context = await launch(dir);
  try {
    const page = await openSdkPage(context, server.url, 'first', 'music');
    const first = await recordAll(page, room, origin, [{ action: 'play' }, { action: 'seek', data: { position: 12.5 } }]);
    assert.deepEqual(seqsOf(first), [1, 2]);

    // The third record: the tab reloads in the same task in which `record` resolved.
    const loaded = page.waitForEvent('load');
    await page.evaluate(
      async ({ room, origin }) => {
        const q = await window.sdk.OfflineChangeQueue.open(room, origin);
        q.record({ action: 'pause' }, 2, 1_700_000_000_100).then((change) => {
          sessionStorage.setItem('p3-last-recorded', JSON.stringify(change));
          location.reload();
        });
      },
      { room, origin },
    );
    await loaded;
    await reloadSdk(page);
    const third = await page.evaluate(() => JSON.parse(sessionStorage.getItem('p3-last-recorded')));
    assert.equal(third.localSeq, 3, 'the record resolved before the reload');
    let state = await snapshot(page, room, origin);
    assert.equal(state.origin, origin);
    assert.equal(state.nextSeq, 4);
    assert.deepEqual(state.pending, [...first, third], 'every resolved change is still stored, with its seq');

    const fourth = await recordAll(page, room, origin, [{ action: 'change-track', data: { trackId: 't2' } }]);
    assert.deepEqual(seqsOf(fourth), [4]);
    // Restart the browser process on the same profile.
    await context.close();
    context = await launch(dir);
    const again = await openSdkPage(context, server.url, 'restarted', 'music');
    state = await snapshot(again, room, origin);
    assert.deepEqual(state.pending, [...first, third, ...fourth]);
    assert.equal(state.nextSeq, 5);
    assert.deepEqual(seqsOf(await recordAll(again, room, origin, [{ action: 'play' }])), [5], 'numbering goes on after the restart');
  } finally {
    await context.close();
  }
});

test('two tabs and a module worker recording for one device id get distinct seqs', { timeout: 120_000 }, async () => {
  const room = 'tabs-room';
  const origin = 'device-shared';
  const perWriter = 12;
  const context = await launch(newProfile());
  try {
    const tabs = [await openSdkPage(context, server.url, 'tab1', 'music'), await openSdkPage(context, server.url, 'tab2', 'music')];
    // Every writer opens the queue first, then all record at once (a shared start time).
    const startAt = Date.now() + 1_500;
    const inTab = (page, who) =>
      page.evaluate(
        async ({ room, origin, perWriter, startAt, who }) => {
          const q = await window.sdk.OfflineChangeQueue.open(room, origin);
          await new Promise((resolve) => setTimeout(resolve, Math.max(0, startAt - Date.now())));
          const changes = await Promise.all(Array.from({ length: perWriter }, (_, i) => q.record({ who, i }, 1, Date.now())));
          q.close();
          return changes.map((c) => c.localSeq);
        },
        { room, origin, perWriter, startAt, who },
      );
    const inWorker = (page) =>
      page.evaluate(
        async ({ room, origin, perWriter, startAt }) => {
          const source = `
            import init, { OfflineChangeQueue } from '${location.origin}/pkg/music/p3_lanes.js';
            try {
              await init();
              const q = await OfflineChangeQueue.open(${JSON.stringify(room)}, ${JSON.stringify(origin)});
              await new Promise((resolve) => setTimeout(resolve, Math.max(0, ${startAt} - Date.now())));
              const changes = await Promise.all(Array.from({ length: ${perWriter} }, (_, i) => q.record({ who: 'worker', i }, 1, Date.now())));
              postMessage({ seqs: changes.map((c) => c.localSeq), window: typeof window });
            } catch (err) {
              postMessage({ error: String(err?.stack ?? err) });
            }`;
          const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
          const worker = new Worker(url, { type: 'module' });
          const reply = await new Promise((resolve) => {
            worker.onmessage = (e) => resolve(e.data);
            worker.onerror = (e) => resolve({ error: e.message ?? 'worker error' });
          });
          worker.terminate();
          return reply;
        },
        { room, origin, perWriter, startAt },
      );

    const [a, b, w] = await Promise.all([inTab(tabs[0], 'tab1'), inTab(tabs[1], 'tab2'), inWorker(tabs[0])]);
    assert.equal(w.error, undefined, `worker failed: ${w.error}`);
    assert.equal(w.window, 'undefined', 'the worker has no window');
    const all = [...a, ...b, ...w.seqs].sort((x, y) => x - y);
    const expected = Array.from({ length: 3 * perWriter }, (_, i) => i + 1);
    assert.deepEqual(all, expected, `distinct consecutive seqs: tab1 ${a}, tab2 ${b}, worker ${w.seqs}`);

    const [s1, s2] = await Promise.all(tabs.map((page) => snapshot(page, room, origin)));
    assert.deepEqual(s1, s2, 'both tabs read the same stored queue');
    assert.equal(s1.nextSeq, 3 * perWriter + 1);
    assert.deepEqual(seqsOf(s1.pending), expected);
  } finally {
    await context.close();
  }
});
