// PWA cache protection, no reload loop: the server claims version C on /api/version while it
// serves pages carrying version B (server-stub --reported-version C: a CDN still serving the
// old index.html, a half-finished deploy). The naive seed script would purge and reload
// forever. The guard purges and reloads once, then reports `stale_after_purge`, and every
// later re-check (visibility, a pushed `version` event, an explicit check) reports it again
// without reloading.

import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  countNavigations,
  launchPwaBrowser,
  ofType,
  pwaLog,
  setServerVersion,
  startDemoServer,
  swState,
  waitForConnected,
  waitUntil,
} from './support/pwa.mjs';

let server;
let browser;

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a version the page can never reach: one purge and reload, then an error, no loop', { timeout: 120_000 }, async () => {
  server = await startDemoServer({ appVersion: 'B', reportedVersion: 'C' });
  browser = await launchPwaBrowser('no-loop');
  const page = await browser.context.newPage();
  const navigations = countNavigations(page);
  await page.goto(server.url);

  const staleEvents = async () => ofType(await pwaLog(page), 'stale-after-purge');
  await waitUntil(async () => (await staleEvents()).length >= 1, 30_000, async () => `stale-after-purge; log: ${JSON.stringify(await pwaLog(page))}`);
  // The app then connects; the server's welcome says C too, which checks (and errs) again.
  await waitForConnected(page);
  // Give a loop every chance to show itself.
  await sleep(2_000);
  let log = await pwaLog(page);
  assert.deepEqual(ofType(log, 'load').map((e) => e.version), ['B', 'B'], JSON.stringify(log));
  assert.deepEqual(ofType(log, 'purging').map((e) => e.attempt), [1]);
  assert.equal(ofType(log, 'reloading').length, 1);
  assert.ok(ofType(log, 'stale-after-purge').every((e) => e.code === 'stale_after_purge'));
  assert.equal(navigations.count, 2, 'the first load and the one reload');
  // The app showed the error, and did not register a service worker for a stale page.
  assert.match(await page.locator('#errors').innerText(), /stale_after_purge/);
  assert.equal((await swState(page)).registrations, 0);

  // Every way of checking again says the same, and reloads nothing.
  const before = (await staleEvents()).length;
  const checked = await page.evaluate(() =>
    window.p3pwa.guard.check().then(
      (r) => ({ resolved: r }),
      (e) => ({ code: e.code, pageVersion: e.pageVersion, serverVersion: e.serverVersion, attempts: e.attempts, isError: e instanceof Error }),
    ),
  );
  assert.deepEqual(checked, { code: 'stale_after_purge', pageVersion: 'B', serverVersion: 'C', attempts: 1, isError: true });
  const more = (n) => waitUntil(async () => (await staleEvents()).length >= before + n, 15_000, async () => `${n} more stale events; log: ${JSON.stringify(await pwaLog(page))}`);
  await more(1); // the explicit check above
  await page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
  await more(2);
  await setServerVersion(server, 'B2'); // pushes `version` (C, as reported) to the open page
  await more(3);
  await sleep(1_500);
  log = await pwaLog(page);
  assert.equal(ofType(log, 'purging').length, 1, 'still one purge');
  assert.equal(ofType(log, 'reloading').length, 1, 'still one reload');
  assert.equal(ofType(log, 'load').length, 2);
  assert.equal(navigations.count, 2);
});
