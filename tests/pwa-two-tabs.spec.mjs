// PWA cache protection with two tabs: both run version A under the service worker and are
// connected. The server switches to version B at runtime (POST /api/admin/version), which
// pushes Control `version` to both sockets in the same instant, so both tabs find themselves
// stale and claim the purge at the same time: the worst case for "one purge". Exactly one of
// them purges; the other waits for its `purged` message on the BroadcastChannel, then reloads.
// Both end up on B, each having reloaded once.

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
  setServerVersion,
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

test('two tabs, one deploy: one purge, each tab reloads once', { timeout: 120_000 }, async () => {
  server = await startDemoServer({ appVersion: 'A' });
  browser = await launchPwaBrowser('two-tabs');
  const first = await openDemo(browser.context, server.url);
  await waitForServiceWorker(first, 'A');
  const second = await openDemo(browser.context, server.url);
  assert.equal((await swState(second)).controlled, true, 'the second tab comes from the service worker');
  await Promise.all([waitForConnected(first), waitForConnected(second)]);
  const navigations = [countNavigations(first), countNavigations(second)];

  const changed = await setServerVersion(server, 'B');
  assert.equal(changed.notified, 2, 'both tabs were told');
  for (const [i, page] of [first, second].entries()) {
    await waitUntil(
      async () => (await metaVersion(page)) === 'B' && ofType(await pwaLog(page), 'checked').at(-1)?.status === 'up-to-date',
      45_000,
      async () => `tab ${i + 1} to run B; log: ${JSON.stringify(await pwaLog(page))}`,
    );
  }
  await sleep(2_000);

  const logs = await Promise.all([first, second].map(pwaLog));
  const detail = JSON.stringify(logs);
  const purges = logs.flatMap((log) => ofType(log, 'purging'));
  assert.equal(purges.length, 1, `exactly one purge across the tabs: ${detail}`);
  for (const [i, log] of logs.entries()) {
    assert.deepEqual(ofType(log, 'load').map((e) => e.version), ['A', 'B'], `tab ${i + 1}: ${detail}`);
    assert.equal(ofType(log, 'reloading').length, 1, `tab ${i + 1} reloaded once: ${detail}`);
    assert.equal(navigations[i].count, 1, `tab ${i + 1} navigated once`);
  }
  // The tab that purged reloaded as the leader, the other as a follower.
  const roles = logs.map((log) => ofType(log, 'reloading')[0].purged).sort();
  assert.deepEqual(roles, [false, true], detail);

  await waitForServiceWorker(first, 'B');
  const state = await swState(first);
  assert.deepEqual(state.active, ['/sw.js?v=B']);
  assert.ok(!state.caches.includes('p3-shell-A'), JSON.stringify(state));
});
