// Backpressure on a reliable lane with the multiplexer (PROTOCOL.md §11.5, issue 3): page A
// sends 2 KB Messaging messages in one task, faster than any socket drains, until the SDK
// refuses one with a JS error whose `code` is `backpressure` (the lane's `queueDepth` is
// reached). A `drain` event for that lane follows; A then sends again. Page B receives every
// accepted message exactly once and in order, and never the refused one: nothing is dropped
// silently on a reliable lane.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const LANES = [1, 2];
const MESSAGING = 2;
const ROOM = 'backpressure';
/** More than the socket budget (256 KiB) plus Messaging's queueDepth (500) of 2 KB messages. */
const MAX_TRIES = 5000;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e' });
});

after(async () => {
  await server?.stop();
});

/** Connects `window.client` (defaults: multiplexer on), joins the room, records in `window.log`. */
function connect(page, clientId) {
  return page.evaluate(
    async ({ url, clientId, lanes, room }) => {
      window.log = [];
      const client = await window.sdk.P3Client.connect(url, { clientId, lanes });
      window.client = client;
      client.onMessage('Messaging', (m) => window.log.push({ k: 'm', n: m.value.n }));
      client.onEvent((ev) => {
        if (ev.type === 'drain' || ev.type === 'dropped' || ev.type === 'discontinuity') window.log.push({ k: ev.type, lane: ev.lane });
      });
      await client.joinRoom(room);
      return {
        features: client.handshake.protocol.features,
        queueDepth: client.handshake.lanes.find((l) => l.id === 2).queueDepth,
      };
    },
    { url: server.url, clientId, lanes: LANES, room: ROOM },
  );
}

test('a reliable lane over its queueDepth throws `backpressure`, then emits `drain`; nothing is lost', { timeout: 120_000 }, async () => {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [pageA, pageB] = await Promise.all([
      openSdkPage(browsers[0], server.url, 'A', 'lanes'),
      openSdkPage(browsers[1], server.url, 'B', 'lanes'),
    ]);
    await connect(pageB, 'bp-b');
    const { features, queueDepth } = await connect(pageA, 'bp-a');
    assert.ok(features.includes('mux'), 'the multiplexer is the default');

    const burst = await pageA.evaluate((maxTries) => {
      const pad = 'y'.repeat(2000);
      for (let n = 1; n <= maxTries; n++) {
        try {
          window.client.send('Messaging', { n, pad });
        } catch (e) {
          window.log.push({ k: 'error', code: e.code, name: e.name, isError: e instanceof Error });
          return { accepted: n - 1, code: e.code };
        }
      }
      return { accepted: maxTries, code: null };
    }, MAX_TRIES);
    assert.equal(burst.code, 'backpressure', `a send is refused within ${MAX_TRIES} tries`);
    assert.ok(burst.accepted >= queueDepth, `at least queueDepth (${queueDepth}) accepted, got ${burst.accepted}`);

    // The drain event follows the refusal; then the lane takes messages again.
    await waitFor(
      () => pageA.evaluate((lane) => window.log.some((e) => e.k === 'drain' && e.lane === lane), MESSAGING),
      30_000,
      async () => `a drain event on lane 2; A's log ${JSON.stringify(await pageA.evaluate(() => window.log))}`,
    );
    const logA = await pageA.evaluate(() => window.log);
    const errorAt = logA.findIndex((e) => e.k === 'error');
    const drainAt = logA.findIndex((e) => e.k === 'drain');
    assert.deepEqual(logA[errorAt], { k: 'error', code: 'backpressure', name: 'P3Error', isError: true });
    assert.ok(errorAt < drainAt, `the error comes before the drain event: ${JSON.stringify(logA)}`);
    assert.equal(logA.filter((e) => e.k === 'drain').length, 1, 'one drain event for one refusal');
    const last = burst.accepted + 1;
    await pageA.evaluate((n) => window.client.send('Messaging', { n }), last);

    const logB = await waitFor(
      () => pageB.evaluate((n) => window.log.some((e) => e.n === n) && window.log, last),
      60_000,
      async () => `message ${last} at B; B got ${(await pageB.evaluate(() => window.log)).length}`,
    );
    const got = logB.filter((e) => e.k === 'm').map((e) => e.n);
    assert.deepEqual(
      got,
      Array.from({ length: last }, (_, i) => i + 1),
      'B gets every accepted message once and in order (the refused one was never queued: the app resent it)',
    );
    assert.deepEqual(logB.filter((e) => e.k !== 'm'), [], 'no discontinuity or drop on B');
    await Promise.all([pageA, pageB].map((p) => p.evaluate(() => window.client.close())));
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
  }
});
