// Three server-stub nodes on one redis-server behind HAProxy behave as one server (issue 14,
// PROTOCOL.md §17 "Several nodes"). Handshakes of pages A and B go to node0, of page C to
// node1; A's socket (and every other request of it) goes to node1, B's to node2, C's SSE
// streams to node0, each through its own balancer port: every session is handshaked on one
// node and served by another, and the three pages, on three nodes, share a room over
// WebSocket and SSE. Then node2 is SIGKILLed (B reconnects through its balancer port to
// node0 and keeps its room, and gets what A sent meanwhile, each once, in order), then redis-server is SIGKILLed and started again (nodes keep
// serving their own members meanwhile; what was relayed during the outage reaches the other
// nodes once it is back, each message once).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { closeClient, connect, waitFor } from './support/client.mjs';
import { startCluster } from './support/cluster.mjs';

const LANES = [1, 2, 5, 7, 8];
const ROOM = 'cluster-e2e';
const DELIVERY_TIMEOUT_MS = 10_000;
const RECONNECT_TIMEOUT_MS = 20_000;

/** @type {Awaited<ReturnType<typeof startCluster>>} */
let cluster;
const browsers = [];
/** @type {{page: import('playwright-core').Page, sessionId: string, url: string}} */
let A, B, C;

before(async () => {
  cluster = await startCluster({
    nodes: 3,
    frontends: [
      { handshake: 0, rest: 1 },
      { handshake: 0, rest: 2 },
      { handshake: 1, rest: 0 },
    ],
  });
  browsers.push(await launchBrowser(), await launchBrowser(), await launchBrowser());
});

after(async () => {
  for (const page of [A, B, C]) await page?.page.evaluate(() => window.client?.close()).catch(() => {});
  await Promise.all(browsers.map((browser) => browser.close()));
  await cluster?.stop();
});

const nodeOf = (sessionId) => cluster.redis.cli('HGET', `p3:session:${sessionId}`, 'node');

test('pages on three nodes share a room over WebSocket and SSE; each session is handshaked on one node and served by another', { timeout: 120_000 }, async () => {
  const [urlA, urlB, urlC] = cluster.urls;
  const [pageA, pageB, pageC] = await Promise.all([
    openSdkPage(browsers[0], urlA, 'A'),
    openSdkPage(browsers[1], urlB, 'B'),
    openSdkPage(browsers[2], urlC, 'C'),
  ]);
  const a = await connect(pageA, urlA, 'cluster-a', LANES, ROOM);
  const b = await connect(pageB, urlB, 'cluster-b', LANES, ROOM);
  const c = await connect(pageC, urlC, 'cluster-c', LANES, ROOM, { transport: 'sse' });
  A = { page: pageA, sessionId: a.sessionId, url: urlA };
  B = { page: pageB, sessionId: b.sessionId, url: urlB };
  C = { page: pageC, sessionId: c.sessionId, url: urlC };

  // Each session is held by the node its balancer port sends it to, not its handshake's.
  assert.equal(nodeOf(a.sessionId), 'node1');
  assert.equal(nodeOf(b.sessionId), 'node2');
  assert.equal(nodeOf(c.sessionId), 'node0');
  // `joined` lists the members held by other nodes.
  assert.ok(b.members.includes(a.sessionId), `B's joined lists A: ${JSON.stringify(b.members)}`);
  assert.ok(c.members.includes(a.sessionId) && c.members.includes(b.sessionId), `C's joined lists A and B: ${JSON.stringify(c.members)}`);

  const fromA = [
    { lane: 'Messaging', laneId: 2, value: { id: 'a-msg', text: 'hello across nodes ✓' } },
    { lane: 'Data', laneId: 5, value: { id: 'a-data', chunk: { index: 1, bytes: [0, 127, 255] } } },
    { lane: 'Sync', laneId: 7, value: { id: 'a-sync', state: { positionMs: 61_250, playing: true } } },
  ];
  await sendAll(pageA, fromA);
  await Promise.all([expectReceivedOnce(pageB, a.sessionId, fromA), expectReceivedOnce(pageC, a.sessionId, fromA)]);

  const fromB = [
    { lane: 'Relay', laneId: 8, to: a.sessionId, value: { id: 'b-relay', nested: { items: [{ n: 1 }, { n: -2 }] } } },
    { lane: 'Messaging', laneId: 2, value: { id: 'b-msg', text: 'and back' } },
  ];
  await sendAll(pageB, fromB);
  await expectReceivedOnce(pageA, b.sessionId, fromB);
  await expectReceivedOnce(pageC, b.sessionId, fromB.slice(1));

  const fromC = numbered('c-sse', 2, 10);
  await sendAll(pageC, fromC);
  await Promise.all([expectReceivedOnce(pageA, c.sessionId, fromC), expectReceivedOnce(pageB, c.sessionId, fromC)]);
});

test('SIGKILL of a node: its page reconnects through the balancer to another node and keeps its room', { timeout: 120_000 }, async () => {
  assert.ok(A && B && C, 'the first test connected the pages');
  const statesBefore = await B.page.evaluate(() => window.states.length);
  const inboxA = await A.page.evaluate(() => window.inbox.length);
  // Everything B got so far is acknowledged and in its resume cursor (written every 200 ms).
  await sleep(600);
  cluster.nodes[2].proc.kill('SIGKILL');
  // Sent while B's node is dead and B reconnects: they reach the room's stream through node1,
  // and B's new node replays them after B's resume cursor (PROTOCOL.md §17 "Resuming a
  // multiplexed session on another node"): each once, in order, on its lane.
  const whileDown = [...numbered('a-while-b-down', 2, 10), ...numbered('a-while-b-down-data', 5, 5)];
  await sendAll(A.page, whileDown);
  await waitFor(
    () => B.page.evaluate((since) => window.states.slice(since).includes('reconnecting') && window.client.state === 'open', statesBefore),
    RECONNECT_TIMEOUT_MS,
    async () => `B to reconnect; states: ${JSON.stringify(await B.page.evaluate(() => window.states))}`,
  );
  // B's balancer port now sends it to node0 (node2's backup), which took the session over.
  await waitFor(async () => nodeOf(B.sessionId) === 'node0', DELIVERY_TIMEOUT_MS, () => `B held by node0, not ${nodeOf(B.sessionId)}`);
  await expectReceivedOnce(B.page, A.sessionId, whileDown);

  // Still in the room on both sides: messages flow both ways, to the room and to one member.
  const fromA = numbered('a-after-kill', 2, 10);
  await sendAll(A.page, fromA);
  await Promise.all([expectReceivedOnce(B.page, A.sessionId, fromA), expectReceivedOnce(C.page, A.sessionId, fromA)]);
  const fromB = [...numbered('b-after-kill', 5, 5), { lane: 'Relay', laneId: 8, to: A.sessionId, value: { id: 'b-after-kill-to-a' } }];
  await sendAll(B.page, fromB);
  await expectReceivedOnce(A.page, B.sessionId, fromB);
  // A never heard that B left: it only reconnected through another node.
  const control = (await A.page.evaluate((since) => window.inbox.slice(since), inboxA)).filter((m) => m.lane === 1);
  assert.ok(!control.some((m) => m.value?.type === 'peer-left'), `A heard no peer-left: ${JSON.stringify(control)}`);
});

test('redis-server SIGKILLed and started again: nodes serve their own members meanwhile, cross-node delivery resumes, no message lost', { timeout: 120_000 }, async () => {
  assert.ok(A && B && C, 'the first test connected the pages');
  // B and C are both held by node0 now, A by node1.
  assert.equal(nodeOf(C.sessionId), 'node0');
  await cluster.redis.kill();

  // node0 relays between its own members without Redis.
  const fromC = numbered('c-no-redis', 2, 5);
  await sendAll(C.page, fromC);
  await expectReceivedOnce(B.page, C.sessionId, fromC);
  // A's messages wait in node1's publisher until Redis is back.
  const fromA = numbered('a-no-redis', 2, 10);
  await sendAll(A.page, fromA);
  await sleep(500);

  await cluster.redis.start();
  await Promise.all([
    expectReceivedOnce(B.page, A.sessionId, fromA),
    expectReceivedOnce(C.page, A.sessionId, fromA),
    expectReceivedOnce(A.page, C.sessionId, fromC),
  ]);
  // A Redis without persistence lost the room's history: its sequence restarted (new epoch),
  // which node0's members were told as a discontinuity, not silence.
  const gaps = (await B.page.evaluate(() => window.inbox)).filter((m) => m.value?.type === 'discontinuity');
  assert.ok(gaps.length > 0, 'B got a discontinuity for the restarted room stream');
  assert.ok(gaps.every((g) => g.value.reason === 'history-lost' && g.from == null), JSON.stringify(gaps));

  // And after it, everything flows again.
  const after = numbered('a-after-redis', 7, 5);
  await sendAll(A.page, after);
  await Promise.all([expectReceivedOnce(B.page, A.sessionId, after), expectReceivedOnce(C.page, A.sessionId, after)]);
  await Promise.all([A, B, C].map((p) => closeClient(p.page)));
});

/**
 * `count` messages on lane `laneId` with ids `prefix-0`, `prefix-1`, ... (their order is checked).
 * @returns {{lane: number, laneId: number, value: {id: string, i: number}}[]}
 */
function numbered(prefix, laneId, count) {
  return Array.from({ length: count }, (_, i) => ({ lane: laneId, laneId, value: { id: `${prefix}-${i}`, i } }));
}

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
  const order = received.map((m) => ids.indexOf(m.value.id));
  const lanes = new Set(expected.map((m) => m.laneId));
  for (const lane of lanes) {
    const seen = received.filter((m) => m.lane === lane).map((m) => ids.indexOf(m.value.id));
    assert.deepEqual(seen, [...seen].sort((x, y) => x - y), `messages on lane ${lane} out of order: ${JSON.stringify(order)}`);
  }
}
