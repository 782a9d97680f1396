// The scenario of tests/lanes-two-pages.spec.mjs and tests/firefox-lanes-two-pages.spec.mjs:
// two separate browsers (any pair of kinds), each with the SDK loaded from a real server-stub,
// exchange messages on several lanes through a room; then the server is killed and restarted
// (all sessions lost) and the clients must reconnect, rejoin the room by themselves and
// exchange messages again.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, openSdkPage } from './browser.mjs';
import { closeClient, connect, probeRoom, sendAll, waitFor } from './client.mjs';

const LANES = [1, 2, 5, 7, 8];
const ROOM = 'e2e';
const MESSAGING = 2;
const DATA = 5;
const SYNC = 7;
const RELAY = 8;

/** Long enough for the 1 s + 2 s + 4 s ... backoff (with jitter) to reach a restarted server. */
const RECONNECT_TIMEOUT_MS = 40_000;
const DELIVERY_TIMEOUT_MS = 10_000;

/**
 * Run the scenario against `server` (restarted on the way) with page A in a `kindA` browser
 * and page B in a `kindB` one; the browsers are closed at the end.
 * @param {import('./server.mjs').Server} server
 * @param {[import('./browser.mjs').BrowserKind, import('./browser.mjs').BrowserKind]} kinds
 */
export async function runLanesTwoPages(server, [kindA, kindB]) {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(kindA), await launchBrowser(kindB));
    const [pageA, pageB] = await Promise.all([
      openSdkPage(browsers[0], server.url, `A (${kindA})`, 'lanes'),
      openSdkPage(browsers[1], server.url, `B (${kindB})`, 'lanes'),
    ]);
    const a = await connect(pageA, server.url, 'tab-a', LANES, ROOM);
    const b = await connect(pageB, server.url, 'tab-b', LANES, ROOM);
    assert.notEqual(a.sessionId, b.sessionId);

    const aToB = [
      { lane: 'Messaging', laneId: MESSAGING, value: { id: 'a-msg-1', text: 'hello from A ✓', tags: ['chat', 'e2e'] } },
      { lane: 'Data', laneId: DATA, value: { id: 'a-data-1', chunk: { index: 3, bytes: [0, 127, 255], last: false } } },
      { lane: 'Sync', laneId: SYNC, value: { id: 'a-sync-1', state: { track: { title: 'Song', positionMs: 61_250 }, playing: true, rate: 1.25, owner: null } } },
    ];
    await sendAll(pageA, aToB);
    await expectReceivedOnce(pageB, a.sessionId, aToB);

    const bToA = [
      { lane: RELAY, laneId: RELAY, to: a.sessionId, value: { id: 'b-relay-1', overflow: { items: [{ n: 1 }, { n: -2 }], note: 'relayed' } } },
    ];
    await sendAll(pageB, bToA);
    await expectReceivedOnce(pageA, b.sessionId, bToA);

    const statesBefore = await Promise.all([pageA, pageB].map(stateCount));
    await server.restart();
    await Promise.all([
      waitReconnected(pageA, statesBefore[0], 'A'),
      waitReconnected(pageB, statesBefore[1], 'B'),
    ]);
    const a2 = await sessionOf(pageA);
    const b2 = await sessionOf(pageB);
    await probeRoom(pageA, pageB, a2, DELIVERY_TIMEOUT_MS);

    const aToB2 = [
      { lane: DATA, laneId: DATA, value: { id: 'a-data-2', after: 'restart', list: [1, 2, 3] } },
      { lane: 'Sync', laneId: SYNC, value: { id: 'a-sync-2', state: { playing: false, positionMs: 0 } } },
    ];
    const bToA2 = [
      { lane: 'Relay', laneId: RELAY, to: a2, value: { id: 'b-relay-2', nested: { deep: { deeper: ['x'] } } } },
    ];
    await sendAll(pageA, aToB2);
    await sendAll(pageB, bToA2);
    await expectReceivedOnce(pageB, a2, aToB2);
    await expectReceivedOnce(pageA, b2, bToA2);

    await Promise.all([pageA, pageB].map(closeClient));
  } finally {
    await Promise.all(browsers.map((browser) => browser.close()));
  }
}

/**
 * Wait until the page has received every expected message from `from`, then check each arrived
 * exactly once, on its lane, with its value intact.
 * @param {import('playwright-core').Page} page
 * @param {string} from sender's session id
 * @param {{laneId: number, value: {id: string}}[]} expected
 */
async function expectReceivedOnce(page, from, expected) {
  const ids = expected.map((m) => m.value.id);
  const matching = (inbox) => inbox.filter((m) => m.from === from && ids.includes(m.value?.id));
  const inbox = await waitFor(
    async () => {
      const inbox = await page.evaluate(() => window.inbox);
      return new Set(matching(inbox).map((m) => m.value.id)).size === ids.length && inbox;
    },
    DELIVERY_TIMEOUT_MS,
    async () => `messages ${ids.join(', ')} from ${from}; inbox: ${JSON.stringify(await page.evaluate(() => window.inbox))}`,
  );
  // Give a duplicate a moment to show up before asserting "exactly once".
  await sleep(300);
  const received = matching(await page.evaluate(() => window.inbox));
  for (const { laneId, value } of expected) {
    const copies = received.filter((m) => m.value.id === value.id);
    assert.equal(copies.length, 1, `message ${value.id} received ${copies.length} times: ${JSON.stringify(inbox)}`);
    assert.equal(copies[0].lane, laneId, `message ${value.id} arrived on the wrong lane`);
    assert.equal(typeof copies[0].seq, 'number', `message ${value.id} has no numeric seq`);
    assert.deepEqual(copies[0].value, value);
  }
}

/**
 * After the server restart: wait until the client has reported 'reconnecting' and is 'open' again.
 * @param {import('playwright-core').Page} page
 * @param {number} since number of state changes recorded before the restart
 * @param {string} label
 */
function waitReconnected(page, since, label) {
  return waitFor(
    () => page.evaluate((since) => window.states.slice(since).includes('reconnecting') && window.client.state === 'open', since),
    RECONNECT_TIMEOUT_MS,
    async () => `client ${label} to reconnect; states since restart: ${JSON.stringify(await page.evaluate((since) => window.states.slice(since), since))}, now '${await page.evaluate(() => window.client.state)}'`,
  );
}

/** @param {import('playwright-core').Page} page */
function stateCount(page) {
  return page.evaluate(() => window.states.length);
}

/** @param {import('playwright-core').Page} page */
function sessionOf(page) {
  return page.evaluate(() => window.client.sessionId);
}
