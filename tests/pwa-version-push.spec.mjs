// PWA cache protection without any reload by the user: a page running version A (from the
// service worker) stays open while server-stub is redeployed at version B. The page's client
// reconnects by itself; the new server's `welcome` carries its app version (the Control lane
// push), the app calls the guard, and the page purges and reloads once into B.

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

test('an open page learns of a deploy on the Control lane and updates itself once', { timeout: 120_000 }, async () => {
  server = await startDemoServer({ appVersion: 'A' });
  browser = await launchPwaBrowser('push');
  const page = await openDemo(browser.context, server.url);
  await waitForServiceWorker(page, 'A');
  // A second load, from the service worker's cache, is the one that will be stale.
  await page.reload();
  await waitForConnected(page);
  assert.equal((await swState(page)).controlled, true);
  const navigations = countNavigations(page);

  server = await redeploy(server, { appVersion: 'B' });
  await waitUntil(
    async () => (await metaVersion(page)) === 'B' && ofType(await pwaLog(page), 'checked').at(-1)?.status === 'up-to-date',
    45_000,
    async () => `the page to update itself to B; log: ${JSON.stringify(await pwaLog(page))}`,
  );
  await sleep(1_500);

  const log = await pwaLog(page);
  const loads = ofType(log, 'load').map((e) => e.version);
  assert.deepEqual(loads, ['A', 'A', 'B'], JSON.stringify(log));
  // What set it off: the new server's version, received on the Control lane by the A page.
  const types = log.map((e) => (e.type === 'server-version' ? `server-version ${e.version}` : e.type));
  const staleLoad = types.indexOf('load', types.indexOf('load') + 1);
  const pushed = types.indexOf('server-version B');
  assert.ok(staleLoad < pushed && pushed < types.indexOf('purging'), types.join(', '));
  assert.equal(ofType(log, 'purging').length, 1, JSON.stringify(log));
  assert.equal(ofType(log, 'reloading').length, 1);
  assert.equal(navigations.count, 1, 'one navigation: the purge reload, nobody else reloaded');
  const state = await swState(page);
  assert.ok(!state.caches.includes('p3-shell-A'), JSON.stringify(state));
  assert.ok(!state.active.includes('/sw.js?v=A'), JSON.stringify(state));
});
