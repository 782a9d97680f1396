// PWA cache protection, the main case: the demo is served at version A, its service worker
// installs and caches the app shell, the app stores data in IndexedDB, localStorage and a
// cache of its own. The server is redeployed at version B. On reload the service worker
// serves the stale A page from its cache; the SDK's guard sees /api/version say B, purges
// (unregisters the service worker, deletes the shell cache) and reloads exactly once. The
// page then runs B, the old cache and registration are gone, the app's data is intact, and
// nothing reloads again.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  countNavigations,
  launchPwaBrowser,
  metaVersion,
  ofType,
  openDemo,
  pwaLog,
  readAppData,
  redeploy,
  startDemoServer,
  swState,
  waitForCheck,
  waitForConnected,
  waitForServiceWorker,
  waitUntil,
  writeAppData,
} from './support/pwa.mjs';

let server;
let browser;

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a stale cached page is purged and reloaded exactly once; app data survives', { timeout: 120_000 }, async () => {
  server = await startDemoServer({ appVersion: 'A' });
  browser = await launchPwaBrowser('purge');
  const page = await openDemo(browser.context, server.url);
  assert.equal(await metaVersion(page), 'A');
  await waitForServiceWorker(page, 'A');
  await writeAppData(page);
  // The app's own connection would also learn of the deploy (a `version` event) and update
  // by itself; this test is about the reload, so it goes away first.
  await waitForConnected(page);
  await page.evaluate(() => window.p3demo.client.close());

  server = await redeploy(server, { appVersion: 'B' });
  const navigations = countNavigations(page);
  await page.reload();
  await waitUntil(
    async () => (await metaVersion(page)) === 'B' && ofType(await pwaLog(page), 'checked').some((e) => e.status === 'up-to-date'),
    30_000,
    async () => `the page to run B; log: ${JSON.stringify(await pwaLog(page))}`,
  );
  await waitForCheck(page);

  const log = await pwaLog(page);
  const loads = ofType(log, 'load').map((e) => `${e.version}${e.controlled ? ' (from the service worker)' : ''}`);
  assert.deepEqual(loads, ['A', 'A (from the service worker)', 'B'], JSON.stringify(log));
  assert.equal(ofType(log, 'purging').length, 1, 'exactly one purge');
  assert.deepEqual(ofType(log, 'purged')[0].caches, ['p3-shell-A'], 'only the shell cache was deleted');
  assert.deepEqual(ofType(log, 'reloading').map((e) => e.purged), [true], 'exactly one reload, by the tab that purged');
  assert.equal(ofType(log, 'stale-after-purge').length, 0);
  assert.equal(navigations.count, 2, 'the test reload and the one purge reload');

  // The new page registered a service worker for B; nothing of A is left.
  await waitForServiceWorker(page, 'B');
  const state = await swState(page);
  assert.deepEqual(state.active, ['/sw.js?v=B'], JSON.stringify(state));
  assert.ok(!state.caches.includes('p3-shell-A'), JSON.stringify(state));
  assert.deepEqual(await readAppData(page), { local: 'keep me', idb: 'keep me too', download: '{"track":1}' });

  // Settled: no further reload.
  await sleep(2_000);
  assert.equal(navigations.count, 2);
  assert.equal(ofType(await pwaLog(page), 'load').length, 3);
});
