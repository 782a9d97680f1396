// PWA cache protection run by the service worker: the SDK's PWA entry (`p3-lanes/pwa`, and no
// other) is imported by the demo's module service worker (www/sw.js), which answers version
// checks with checkVersion({currentVersion}).
// The page (opened with ?check=sw) asks its worker instead of checking itself. After a
// redeploy, the worker finds its cached version stale, leads the purge (it deletes its own
// cache and unregisters itself; service workers win the tabs' election), and the page, whose
// guard follows on the BroadcastChannel, reloads once into the new version.

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
  redeploy,
  startDemoServer,
  swState,
  waitForCheck,
  waitForConnected,
  waitForServiceWorker,
  waitUntil,
} from './support/pwa.mjs';

let server;
let browser;

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the service worker runs the check, purges, and the page follows', { timeout: 120_000 }, async () => {
  server = await startDemoServer({ appVersion: 'A' });
  browser = await launchPwaBrowser('sw-check');
  // What the worker itself loads as code (its module graph): only the SDK's PWA entry.
  /** @type {string[]} */
  const workerScripts = [];
  browser.context.on('request', (request) => {
    if (request.serviceWorker() && request.resourceType() === 'script') workerScripts.push(new URL(request.url()).pathname);
  });
  const page = await openDemo(browser.context, `${server.url}/?check=sw`);
  await waitForServiceWorker(page, 'A');
  // Controlled now: this load asks the worker, which finds A up to date.
  await page.reload();
  await waitForCheck(page);
  let log = await pwaLog(page);
  assert.deepEqual(ofType(log, 'worker-replied').map((e) => e.status), ['up-to-date'], JSON.stringify(log));
  // The worker ran checkVersion from `p3-lanes/pwa` and imported no other entry.
  const sdkScripts = [...new Set(workerScripts.filter((path) => path.startsWith('/pkg/')))];
  assert.deepEqual(sdkScripts, ['/pkg/pwa/p3_lanes.js'], `the worker's scripts: ${JSON.stringify(workerScripts)}`);
  await waitForConnected(page);
  await page.evaluate(() => window.p3demo.client.close());

  server = await redeploy(server, { appVersion: 'B' });
  const navigations = countNavigations(page);
  await page.reload();
  await waitUntil(
    async () => (await metaVersion(page)) === 'B' && ofType(await pwaLog(page), 'checked').at(-1)?.status === 'up-to-date',
    30_000,
    async () => `the page to run B; log: ${JSON.stringify(await pwaLog(page))}`,
  );
  await sleep(1_500);

  log = await pwaLog(page);
  const detail = JSON.stringify(log);
  assert.deepEqual(
    ofType(log, 'load').map((e) => `${e.version}${e.controlled ? ' (from the service worker)' : ''}`),
    ['A', 'A (from the service worker)', 'A (from the service worker)', 'B'],
    detail,
  );
  // The page never purged: the worker did. The page only followed and reloaded.
  assert.equal(ofType(log, 'purging').length, 0, detail);
  assert.deepEqual(ofType(log, 'reloading').map((e) => e.purged), [false], detail);
  assert.equal(navigations.count, 2, 'the test reload and the one reload after the worker purged');
  const state = await swState(page);
  assert.ok(!state.caches.includes('p3-shell-A'), JSON.stringify(state));
  assert.ok(!state.active.includes('/sw.js?v=A'), JSON.stringify(state));
});
