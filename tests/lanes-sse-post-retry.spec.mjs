// Exactly-once SSE POSTs in real Chromium (PROTOCOL.md §14.6): page A sends over SSE
// (`transport: 'sse'`, fetch POSTs numbered with `P3-Seq`), page B receives over a WebSocket.
// Playwright's request routing on A plays the network:
// - `lost-*` messages: the first attempt reaches the server (route.fetch, the server delivers
//   it) but A's fetch fails as if the connection dropped before the answer; A sends again with
//   the same number and the server answers from its ledger. B must get each message once, in
//   order (without the number, B would get them twice).
// - `slow-*`: the first attempt reaches the server but its answer never comes; A aborts it after
//   its 10 s request timeout and sends again with the same number.
// - `busy-*`: the first attempt is answered 503 `backpressure` with `Retry-After: 1` without
//   reaching the server; A retries after the delay.
// - `dead-*`: every attempt fails before the server; A gives up after its bounded retries with
//   an `error` event `send_failed` (lane, seq), and the next message (which the server then
//   sees one number too far, 409 `seq_gap`) is renumbered and delivered.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { closeClient, connect, waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const LANES = [1, 2];
const ROOM = 'sse-retry';
const MESSAGING = 2;
const DELIVERY_TIMEOUT_MS = 20_000;
/** The SDK's per-attempt request timeout (`REQUEST_TIMEOUT_MS`), ms. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Longer than the SDK's whole retry budget (8 attempts, backoff 250 ms doubling to 8 s). */
const GIVE_UP_TIMEOUT_MS = 60_000;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e' });
});

after(async () => {
  await server?.stop();
});

test('retried SSE POSTs reach the receiver exactly once, in order; a hopeless one is reported', { timeout: 180_000 }, async () => {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [pageA, pageB] = await Promise.all([
      openSdkPage(browsers[0], server.url, 'A-sse', 'lanes'),
      openSdkPage(browsers[1], server.url, 'B-ws', 'lanes'),
    ]);
    const a = await connect(pageA, server.url, 'sse-a', LANES, ROOM, { transport: 'sse' });
    assert.equal(await pageA.evaluate(() => window.client.handshake.transport), 'sse');
    await pageA.evaluate(() => {
      window.events = [];
      window.client.onEvent((ev) => window.events.push(JSON.parse(JSON.stringify(ev))));
    });
    await connect(pageB, server.url, 'ws-b', LANES, ROOM);

    // Every POST attempt A makes on the Messaging lane: message id → the P3-Seq of each attempt.
    /** @type {Map<string, string[]>} */
    const attempts = new Map();
    let reachedServer = 0;
    await pageA.route(`**/api/protocol/v2/session/${a.sessionId}/lane/${MESSAGING}*`, async (route) => {
      const request = route.request();
      if (request.method() !== 'POST') return route.continue();
      const id = JSON.parse(request.postData() ?? 'null')?.id ?? '';
      const seqs = attempts.get(id) ?? [];
      seqs.push(request.headers()['p3-seq']);
      attempts.set(id, seqs);
      const first = seqs.length === 1;
      if (id.startsWith('lost-') && first) {
        const response = await route.fetch(); // the server takes (and delivers) it
        assert.equal(response.status(), 202);
        reachedServer++;
        return route.abort('connectionreset'); // ...but A never sees the answer
      }
      if (id.startsWith('slow-') && first) {
        const response = await route.fetch(); // the server takes (and delivers) it
        assert.equal(response.status(), 202);
        reachedServer++;
        // ...and the answer never comes: A gives up on this attempt after its timeout.
        await sleep(REQUEST_TIMEOUT_MS + 2_000);
        return route.abort('timedout').catch(() => {});
      }
      if (id.startsWith('busy-') && first) {
        return route.fulfill({
          status: 503,
          headers: { 'content-type': 'application/json', 'retry-after': '1' },
          body: JSON.stringify({ error: 'queue full (test)', code: 'backpressure' }),
        });
      }
      if (id.startsWith('dead-')) return route.abort('connectionrefused');
      return route.continue();
    });

    const ids = ['ok-0', 'lost-1', 'lost-2', 'ok-3', 'busy-4', 'lost-5', 'slow-6', 'ok-7'];
    await send(pageA, ids);
    await expectExactlyOnceInOrder(pageB, a.sessionId, ids);
    assert.equal(reachedServer, 4, 'four answers were lost after the server took the message');
    for (const id of ids) {
      const seqs = attempts.get(id);
      const retried = ['lost-', 'busy-', 'slow-'].some((p) => id.startsWith(p));
      assert.equal(seqs.length, retried ? 2 : 1, `${id}: attempts ${JSON.stringify(seqs)}`);
      assert.ok(seqs.every((s) => s === seqs[0]), `${id}: a retry keeps its number: ${JSON.stringify(seqs)}`);
    }
    assert.deepEqual(ids.map((id) => Number(attempts.get(id)[0])), [1, 2, 3, 4, 5, 6, 7, 8], 'numbered from 1 per lane');

    // A message that never gets through is reported, never dropped silently; the next one goes.
    await send(pageA, ['dead-8', 'ok-9']);
    const failed = await waitFor(
      async () => (await pageA.evaluate(() => window.events)).find((e) => e.type === 'error' && e.code === 'send_failed'),
      GIVE_UP_TIMEOUT_MS,
      async () => `a send_failed error on A; events: ${JSON.stringify(await pageA.evaluate(() => window.events))}`,
    );
    assert.equal(failed.lane, MESSAGING);
    assert.equal(failed.seq, 9);
    const dead = attempts.get('dead-8');
    assert.deepEqual(dead, Array(8).fill('9'), 'bounded attempts, all with the same number');
    await expectExactlyOnceInOrder(pageB, a.sessionId, [...ids, 'ok-9']);
    assert.deepEqual(attempts.get('ok-9'), ['10', '9'], 'after 409 seq_gap the next message takes the number the server never got');
    const inbox = await pageB.evaluate(() => window.inbox);
    assert.ok(!inbox.some((m) => m.value?.id === 'dead-8'), 'the failed message never reached B');

    await Promise.all([pageA, pageB].map(closeClient));
  } finally {
    await Promise.all(browsers.map((browser) => browser.close()));
  }
});

/** Sends `{id, i}` on Messaging from the page's client, one per id. */
function send(page, ids) {
  return page.evaluate((ids) => {
    for (const id of ids) window.client.send('Messaging', { id, i: Number(id.split('-')[1]) });
  }, ids);
}

/** Waits until `page` has every id from `from`, then checks each arrived once, in order. */
async function expectExactlyOnceInOrder(page, from, ids) {
  const mine = async () => (await page.evaluate(() => window.inbox)).filter((m) => m.from === from && m.lane === MESSAGING);
  await waitFor(
    async () => {
      const got = new Set((await mine()).map((m) => m.value.id));
      return ids.every((id) => got.has(id));
    },
    DELIVERY_TIMEOUT_MS,
    async () => `messages ${ids.join(', ')} from ${from}; inbox: ${JSON.stringify(await mine())}`,
  );
  // Give a duplicate a moment to show up before asserting "exactly once".
  await sleep(300);
  const got = (await mine()).map((m) => m.value.id);
  assert.deepEqual(got, ids, 'each message exactly once, in send order');
}
