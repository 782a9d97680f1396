// Three server-stub nodes on one redis-server behind HAProxy behave as one server (issue 14,
// PROTOCOL.md §17). Every handshake goes to node0; page A's socket (and every other request
// of it) to node1 through one balancer port, page B's to node2 through another: each session
// is handshaked on one node and opens its socket on another, and the two pages, on different
// nodes, share a room and exchange messages on several lanes, to the room and to one member.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { closeClient, connect, waitFor } from './support/client.mjs';
import { startCluster } from './support/cluster.mjs';

const LANES = [1, 2, 5, 7, 8];
const ROOM = 'cluster-e2e';
const DELIVERY_TIMEOUT_MS = 10_000;

/** @type {Awaited<ReturnType<typeof startCluster>>} */
let cluster;

before(async () => {
  cluster = await startCluster({
    nodes: 3,
    frontends: [
      { handshake: 0, rest: 1 },
      { handshake: 0, rest: 2 },
    ],
  });
});

after(async () => {
  await cluster?.stop();
});

test('pages on different nodes share a room; sessions handshaked on one node open their socket on another', { timeout: 120_000 }, async () => {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [urlA, urlB] = cluster.urls;
    const [pageA, pageB] = await Promise.all([openSdkPage(browsers[0], urlA, 'A'), openSdkPage(browsers[1], urlB, 'B')]);
    const a = await connect(pageA, urlA, 'cluster-a', LANES, ROOM);
    const b = await connect(pageB, urlB, 'cluster-b', LANES, ROOM);

    // Each socket is held by the node its balancer port sends it to, not node0 (handshakes).
    assert.equal(cluster.redis.cli('HGET', `p3:session:${a.sessionId}`, 'node'), 'node1');
    assert.equal(cluster.redis.cli('HGET', `p3:session:${b.sessionId}`, 'node'), 'node2');
    // B's `joined` lists A, a member held by another node.
    assert.ok(b.members.includes(a.sessionId), `B's joined lists A: ${JSON.stringify(b.members)}`);

    const aToB = [
      { lane: 'Messaging', laneId: 2, value: { id: 'a-msg', text: 'hello across nodes ✓' } },
      { lane: 'Data', laneId: 5, value: { id: 'a-data', chunk: { index: 1, bytes: [0, 127, 255] } } },
      { lane: 'Sync', laneId: 7, value: { id: 'a-sync', state: { positionMs: 61_250, playing: true } } },
    ];
    await sendAll(pageA, aToB);
    await expectReceivedOnce(pageB, a.sessionId, aToB);

    const bToA = [
      { lane: 'Relay', laneId: 8, to: a.sessionId, value: { id: 'b-relay', nested: { items: [{ n: 1 }, { n: -2 }] } } },
      { lane: 'Messaging', laneId: 2, value: { id: 'b-msg', text: 'and back' } },
    ];
    await sendAll(pageB, bToA);
    await expectReceivedOnce(pageA, b.sessionId, bToA);

    await Promise.all([pageA, pageB].map(closeClient));
  } finally {
    await Promise.all(browsers.map((browser) => browser.close()));
  }
});

/**
 * Send each message from the page's client; a message's `to` (a session id) is optional.
 * @param {import('playwright-core').Page} page
 * @param {{lane: number | string, value: object, to?: string}[]} messages
 */
function sendAll(page, messages) {
  return page.evaluate((messages) => {
    for (const { lane, value, to } of messages) {
      if (to === undefined) window.client.send(lane, value);
      else window.client.send(lane, value, to);
    }
  }, messages);
}

/**
 * Wait until the page has every expected message from `from`, then check each arrived exactly
 * once, on its lane, intact.
 * @param {import('playwright-core').Page} page
 * @param {string} from
 * @param {{laneId: number, value: {id: string}}[]} expected
 */
async function expectReceivedOnce(page, from, expected) {
  const ids = expected.map((m) => m.value.id);
  const matching = (inbox) => inbox.filter((m) => m.from === from && ids.includes(m.value?.id));
  await waitFor(
    async () => new Set(matching(await page.evaluate(() => window.inbox)).map((m) => m.value.id)).size === ids.length,
    DELIVERY_TIMEOUT_MS,
    async () => `messages ${ids.join(', ')} from ${from}; inbox: ${JSON.stringify(await page.evaluate(() => window.inbox))}`,
  );
  await sleep(300);
  const received = matching(await page.evaluate(() => window.inbox));
  for (const { laneId, value } of expected) {
    const copies = received.filter((m) => m.value.id === value.id);
    assert.equal(copies.length, 1, `message ${value.id} received ${copies.length} times`);
    assert.equal(copies[0].lane, laneId, `message ${value.id} arrived on the wrong lane`);
    assert.deepEqual(copies[0].value, value);
  }
}
