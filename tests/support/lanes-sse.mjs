// The scenario of tests/lanes-sse.spec.mjs and tests/firefox-lanes-sse.spec.mjs, SSE lanes in
// real browsers of any kinds (PROTOCOL.md §14): page A uses `transport: 'sse'` (one
// EventSource for its lanes, sends by fetch POST), page B a WebSocket; they exchange messages
// in a room (and page C, where `WebSocket` is undefined, falls back to SSE by itself). Then
// the server ends A's stream (`POST /api/admin/sse/close`): the EventSource reconnects by
// itself with Last-Event-ID and A gets every message B sent meanwhile, once, in order, with no
// discontinuity (the history is small, so a resume from anywhere else would report one). A
// longer gap overflows the history: A gets an explicit `discontinuity`. Last, the server
// restarts: A re-handshakes, reports `peer-restarted`, and the pages talk again.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, openSdkPage } from './browser.mjs';
import { closeClient, connect, probeRoom, sendAll, waitFor } from './client.mjs';

const LANES = [1, 2, 5];
const ROOM = 'sse-e2e';
const MESSAGING = 2;
const DATA = 5;
/** Messages kept per session and lane by the server (`--sse-history`). */
const HISTORY = 16;
/** EventSource reconnect delay the server advertises (`retry:`), ms: the window of the gap. */
const RETRY_MS = 3000;
const DELIVERY_TIMEOUT_MS = 15_000;
const RECONNECT_TIMEOUT_MS = 40_000;

/** startServer options of the scenario's server: the SSE history and retry delay it counts on. */
export const SSE_SERVER = { appVersion: 'e2e', args: ['--sse-history', String(HISTORY), '--sse-retry-ms', String(RETRY_MS)] };

/**
 * Run the scenario against `server` (started with SSE_SERVER, restarted on the way): page A (SSE)
 * and page C (fallback) in a `kindA` browser, page B (WebSocket) in a `kindB` one; the
 * browsers are closed at the end.
 * @param {import('./server.mjs').Server} server
 * @param {[import('./browser.mjs').BrowserKind, import('./browser.mjs').BrowserKind]} kinds
 */
export async function runLanesSse(server, [kindA, kindB]) {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(kindA), await launchBrowser(kindB));
    const [pageA, pageB] = await Promise.all([
      openSdkPage(browsers[0], server.url, `A-sse (${kindA})`, 'lanes'),
      openSdkPage(browsers[1], server.url, `B-ws (${kindB})`, 'lanes'),
    ]);
    const a = await connect(pageA, server.url, 'sse-a', LANES, ROOM, { transport: 'sse' });
    await recordEvents(pageA);
    const b = await connect(pageB, server.url, 'ws-b', LANES, ROOM);
    const hs = await pageA.evaluate(() => window.client.handshake);
    assert.equal(hs.transport, 'sse');
    const stream = `/api/protocol/v2/session/${a.sessionId}/stream?lanes=1,2,5`;
    assert.deepEqual(hs.lanes.map((l) => l.url), [stream, stream, stream], 'one multiplexed stream');
    assert.equal((await pageB.evaluate(() => window.client.handshake)).transport, 'websocket');

    // Without WebSocket the SDK picks SSE by itself (`transport: 'auto'`, the default).
    const pageC = await openSdkPage(browsers[0], server.url, `C-auto (${kindA})`, 'lanes');
    await pageC.evaluate(() => {
      delete window.WebSocket;
    });
    const c = await connect(pageC, server.url, 'auto-c', LANES, ROOM);
    assert.equal(await pageC.evaluate(() => window.client.handshake.transport), 'sse');
    await sendAll(pageC, [{ lane: 'Messaging', value: { id: 'c-1', via: 'fallback' } }]);
    await expectOnce(pageB, c.sessionId, [[MESSAGING, 'c-1']]);
    await closeClient(pageC);
    await pageC.close();

    // Both directions, room and `to`, the same message shape on both sides.
    await sendAll(pageA, [
      { lane: 'Messaging', value: { id: 'a-1', text: 'hello from SSE ✓' } },
      { lane: DATA, value: { id: 'a-2', bytes: [0, 127, 255], nested: { ok: true } } },
    ]);
    await expectOnce(pageB, a.sessionId, [[MESSAGING, 'a-1'], [DATA, 'a-2']]);
    await sendAll(pageB, [
      { lane: 'Messaging', value: { id: 'b-1', text: 'hello from WebSocket' } },
      { lane: DATA, to: a.sessionId, value: { id: 'b-2', list: [1, 2, 3] } },
    ]);
    await expectOnce(pageA, b.sessionId, [[MESSAGING, 'b-1'], [DATA, 'b-2']]);

    // More than the history holds goes by live (in bursts the stream keeps up with): the
    // server forgets the oldest, so only a resume from the right id avoids a discontinuity.
    for (let burst = 0; burst < 4; burst++) {
      const live = numbered(`live${burst}`, HISTORY / 2);
      await sendAll(pageB, live);
      await expectOnce(pageA, b.sessionId, live.map((m) => [MESSAGING, m.value.id]));
    }

    // 1. The server ends the stream; B sends fewer than the history holds before the
    //    EventSource is back (after RETRY_MS): all arrive, once, in order, no discontinuity.
    assert.equal(await closeStreams(server, a.sessionId), 1);
    await sendAll(pageB, numbered('gap', HISTORY / 2));
    await expectOnce(pageA, b.sessionId, numbered('gap', HISTORY / 2).map((m) => [MESSAGING, m.value.id]));
    await expectInOrder(pageA, 'gap');
    assert.deepEqual(await eventsOf(pageA, 'discontinuity'), [], 'resumed from Last-Event-ID');
    assert.equal(await pageA.evaluate(() => window.client.state), 'open', 'the core never noticed');
    assert.ok(!(await pageA.evaluate(() => window.states)).includes('reconnecting'));

    // 2. A gap longer than the history: an explicit discontinuity, then the newest messages.
    assert.equal(await closeStreams(server, a.sessionId), 1);
    await sendAll(pageB, numbered('over', 3 * HISTORY));
    const discontinuity = await waitFor(
      async () => (await eventsOf(pageA, 'discontinuity'))[0],
      DELIVERY_TIMEOUT_MS,
      async () => `a discontinuity; events: ${JSON.stringify(await pageA.evaluate(() => window.events))}`,
    );
    assert.equal(discontinuity.lane, MESSAGING);
    assert.equal(discontinuity.reason, 'history-lost');
    assert.ok(discontinuity.seq > discontinuity.expectedSeq, JSON.stringify(discontinuity));
    const tail = numbered('over', 3 * HISTORY).slice(-HISTORY / 2);
    await expectOnce(pageA, b.sessionId, tail.map((m) => [MESSAGING, m.value.id]));
    await expectInOrder(pageA, 'over');

    // 3. Server restart: the session is gone; A re-handshakes over SSE and rejoins the room.
    const statesBefore = await pageA.evaluate(() => window.states.length);
    await server.restart();
    await waitFor(
      () => pageA.evaluate((since) => window.states.slice(since).includes('reconnecting') && window.client.state === 'open', statesBefore),
      RECONNECT_TIMEOUT_MS,
      async () => `A to reconnect; states: ${JSON.stringify(await pageA.evaluate(() => window.states))}`,
    );
    const a2 = await pageA.evaluate(() => window.client.sessionId);
    assert.notEqual(a2, a.sessionId);
    const changed = await eventsOf(pageA, 'session-changed');
    assert.equal(changed.length, 1);
    const restarted = (await eventsOf(pageA, 'discontinuity')).filter((d) => d.reason === 'peer-restarted');
    assert.ok(restarted.some((d) => d.lane === MESSAGING), JSON.stringify(restarted));
    await waitFor(
      () => pageB.evaluate(() => window.client.state === 'open'),
      RECONNECT_TIMEOUT_MS,
      () => 'B to reconnect',
    );
    const b2 = await pageB.evaluate(() => window.client.sessionId);
    await probeRoom(pageA, pageB, a2, DELIVERY_TIMEOUT_MS);
    await sendAll(pageB, [{ lane: 'Messaging', value: { id: 'b-after', after: 'restart' } }]);
    await expectOnce(pageA, b2, [[MESSAGING, 'b-after']]);

    await Promise.all([pageA, pageB].map(closeClient));
  } finally {
    await Promise.all(browsers.map((browser) => browser.close()));
  }
}

/** Record the page client's `onEvent` events in `window.events`. */
function recordEvents(page) {
  return page.evaluate(() => {
    window.events = [];
    window.client.onEvent((ev) => window.events.push(JSON.parse(JSON.stringify(ev))));
  });
}

function eventsOf(page, type) {
  return page.evaluate((type) => window.events.filter((e) => e.type === type), type);
}

/** `n` Messaging messages `{id: '<prefix>-<i>', i}`. */
function numbered(prefix, n) {
  return Array.from({ length: n }, (_, i) => ({ lane: 'Messaging', value: { id: `${prefix}-${i}`, i } }));
}

/** Ends the session's SSE streams through the server's loopback admin endpoint (with the admin token). */
async function closeStreams(server, sid) {
  const resp = await fetch(`${server.url}/api/admin/sse/close?session=${sid}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${server.adminToken}` },
  });
  assert.equal(resp.status, 200);
  return (await resp.json()).closed;
}

/**
 * Wait until `page` has every `[lane, id]` from `from`, then check each arrived exactly once on
 * its lane.
 */
async function expectOnce(page, from, expected) {
  const ids = expected.map((e) => e[1]);
  const matching = (inbox) => inbox.filter((m) => m.from === from && ids.includes(m.value?.id));
  await waitFor(
    async () => new Set(matching(await page.evaluate(() => window.inbox)).map((m) => m.value.id)).size === ids.length,
    DELIVERY_TIMEOUT_MS,
    async () => `${ids.length} messages (${ids[0]}…) from ${from}; inbox: ${JSON.stringify((await page.evaluate(() => window.inbox)).slice(-10))}`,
  );
  // Give a duplicate a moment to show up before asserting "exactly once".
  await sleep(300);
  const received = matching(await page.evaluate(() => window.inbox));
  for (const [lane, id] of expected) {
    const copies = received.filter((m) => m.value.id === id);
    assert.equal(copies.length, 1, `message ${id} received ${copies.length} times`);
    assert.equal(copies[0].lane, lane, `message ${id} arrived on the wrong lane`);
  }
}

/** The messages named `<prefix>-<i>` arrived in increasing `i` and `seq`. */
async function expectInOrder(page, prefix) {
  const got = (await page.evaluate(() => window.inbox)).filter((m) => String(m.value?.id).startsWith(`${prefix}-`));
  for (let k = 1; k < got.length; k++) {
    assert.ok(got[k].value.i > got[k - 1].value.i, `out of order: ${JSON.stringify(got)}`);
    assert.ok(got[k].seq > got[k - 1].seq, `seq not increasing: ${JSON.stringify(got)}`);
  }
}
