// Two Chromium pages connect with `presence: true` and join one room through a real
// server-stub: each sees the other's `presence` event (`online`, its join time, last activity),
// and when one leaves the other sees it `offline` (PROTOCOL.md §6.2). A third page connected
// without the option sees no `presence` event at all.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { closeClient, connect, waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const ROOM = 'presence-e2e';
const WAIT_MS = 10_000;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e' });
});

after(async () => {
  await server?.stop();
});

/** Records the page client's `presence` events in `window.presence`. */
function recordPresence(page) {
  return page.evaluate(() => {
    window.presence = [];
    window.client.onEvent((ev) => ev.type === 'presence' && window.presence.push(ev));
  });
}

/** The page's recorded presence events for `sessionId` with `status`. */
function presenceOf(page, sessionId, status) {
  return page.evaluate(
    ({ sessionId, status }) => window.presence.filter((e) => e.sessionId === sessionId && e.status === status),
    { sessionId, status },
  );
}

test('two pages see each other online with their join times, then offline', { timeout: 90_000 }, async () => {
  const browser = await launchBrowser();
  try {
    const [pageA, pageB, pageC] = await Promise.all(['A', 'B', 'C'].map((n) => openSdkPage(browser, server.url, n)));
    const t0 = Date.now();
    const a = await connect(pageA, server.url, 'presence-a', [1, 2], undefined, { presence: true });
    await recordPresence(pageA);
    await pageA.evaluate((room) => window.client.joinRoom(room), ROOM);
    await sleep(50);
    const b = await connect(pageB, server.url, 'presence-b', [1, 2], undefined, { presence: true });
    await recordPresence(pageB);
    await pageB.evaluate((room) => window.client.joinRoom(room), ROOM);
    const c = await connect(pageC, server.url, 'presence-c', [1, 2], undefined, {});
    await recordPresence(pageC);
    await pageC.evaluate((room) => window.client.joinRoom(room), ROOM);

    // B, on joining, hears A (who was there first) and itself; A hears B join.
    const [bSeesA] = await waitFor(async () => (await presenceOf(pageB, a.sessionId, 'online')).length && presenceOf(pageB, a.sessionId, 'online'), WAIT_MS, () => 'B hears A online');
    const [aSeesB] = await waitFor(async () => (await presenceOf(pageA, b.sessionId, 'online')).length && presenceOf(pageA, b.sessionId, 'online'), WAIT_MS, () => 'A hears B online');
    const [bSeesB] = await presenceOf(pageB, b.sessionId, 'online');
    assert.equal(bSeesA.room, ROOM);
    assert.ok(bSeesA.since >= t0 - 1000 && bSeesA.since <= Date.now() + 1000, `A's join time ${bSeesA.since} is now-ish`);
    assert.ok(aSeesB.since > bSeesA.since, 'B joined after A');
    assert.equal(bSeesB?.since, aSeesB.since, 'both pages agree on when B joined');
    assert.equal(typeof aSeesB.lastSeen, 'number');
    // A also hears C, who did not ask for presence.
    await waitFor(async () => (await presenceOf(pageA, c.sessionId, 'online')).length, WAIT_MS, () => 'A hears C online');

    await pageB.evaluate((room) => window.client.leaveRoom(room), ROOM);
    const [gone] = await waitFor(async () => (await presenceOf(pageA, b.sessionId, 'offline')).length && presenceOf(pageA, b.sessionId, 'offline'), WAIT_MS, () => 'A hears B offline');
    assert.equal(gone.since, aSeesB.since, 'offline keeps the join time');
    assert.ok(gone.lastSeen >= aSeesB.since, 'lastSeen is when it left');

    // C never asked: it got no presence event.
    assert.deepEqual(await pageC.evaluate(() => window.presence), []);
    await Promise.all([pageA, pageB, pageC].map(closeClient));
  } finally {
    await browser.close();
  }
});
