// Rate limiting, SDK side (issue 11, PROTOCOL.md §15): the server limits each session's bulk
// lanes to 20 messages/s with bursts of 20 (`--rate-bulk 20/s,burst=20`) and advertises it in
// the handshake (`limits.rates.bulk`). Page A sends 200 Messaging (reliable) messages in one
// task, far faster than that. The SDK paces the lane below the quota (keeping half the burst
// against jitter that bunches frames on the way, here up to ~475 ms): every send is accepted
// (they wait in the lane's queue), the server refuses none (no `rate_limited` event on A), and
// page B receives all 200 exactly once and in order. Without the SDK's pacing the server
// refuses most of them (`--rate-strikes 1000` keeps it from closing the socket), so this test
// fails.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { withTwoPages } from './support/browser.mjs';
import { closeClient, waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const LANES = [1, 2];
const ROOM = 'rate-limited';
const COUNT = 200;
/** 200 messages: 10 at once, then 19/s (the SDK's margin below 20/s): about 10 s; generous for CI. */
const DELIVERY_TIMEOUT_MS = 90_000;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({
    appVersion: 'e2e',
    args: ['--rate-bulk', '20/s,burst=20', '--rate-strikes', '1000'],
  });
});

after(async () => {
  await server?.stop();
});

/** Connects `window.client`, joins the room; records Messaging values and `error` events in `window.log`. */
function connect(page, clientId) {
  return page.evaluate(
    async ({ url, clientId, lanes, room }) => {
      window.log = [];
      const client = await window.sdk.P3Client.connect(url, { clientId, lanes });
      window.client = client;
      client.onMessage('Messaging', (m) => window.log.push({ k: 'm', n: m.value.n }));
      client.onEvent((ev) => {
        if (ev.type === 'error' || ev.type === 'dropped' || ev.type === 'discontinuity') {
          window.log.push({ k: ev.type, code: ev.code, lane: ev.lane, seq: ev.seq, retryAfterMs: ev.retryAfterMs, dropped: ev.dropped });
        }
      });
      await client.joinRoom(room);
      return { limits: client.handshake.limits ?? null, features: client.handshake.protocol.features };
    },
    { url: server.url, clientId, lanes: LANES, room: ROOM },
  );
}

test('200 fast Messaging sends under a 20/s quota: paced by the SDK, none refused, all delivered in order', { timeout: 180_000 }, async () => {
  await withTwoPages(server.url, async (pageA, pageB) => {
    await connect(pageB, 'rate-b');
    const { limits, features } = await connect(pageA, 'rate-a');
    assert.ok(features.includes('mux'), 'the multiplexer is the default');
    assert.deepEqual(
      limits?.rates?.bulk,
      { perSecond: 20, burst: 20 },
      `the server advertises its bulk quota in the handshake: ${JSON.stringify(limits)}`,
    );

    const thrown = await pageA.evaluate((count) => {
      const errors = [];
      for (let n = 1; n <= count; n++) {
        try {
          window.client.send('Messaging', { n });
        } catch (e) {
          errors.push({ n, code: e.code });
        }
      }
      return errors;
    }, COUNT);
    assert.deepEqual(thrown, [], 'every send is accepted (queued behind the pacer)');

    const logB = await waitFor(
      () => pageB.evaluate((count) => window.log.filter((e) => e.k === 'm').length >= count && window.log, COUNT),
      DELIVERY_TIMEOUT_MS,
      async () => `${COUNT} messages at B; B got ${(await pageB.evaluate(() => window.log.filter((e) => e.k === 'm').length))}, A's events ${JSON.stringify(await pageA.evaluate(() => window.log))}`,
    );
    assert.deepEqual(
      logB.filter((e) => e.k === 'm').map((e) => e.n),
      Array.from({ length: COUNT }, (_, i) => i + 1),
      'B gets every message once and in order',
    );
    assert.deepEqual(logB.filter((e) => e.k !== 'm'), [], 'no error, drop or discontinuity on B');
    const logA = await pageA.evaluate(() => window.log);
    const refusals = logA.filter((e) => e.k === 'error' && e.code === 'rate_limited');
    assert.deepEqual(logA.filter((e) => e.dropped === true || e.k === 'dropped'), [], 'A lost nothing');
    assert.deepEqual(refusals, [], 'the paced client is never refused by the server');
    assert.deepEqual(logA.filter((e) => e.k !== 'm'), [], `no other event on A: ${JSON.stringify(logA)}`);
    await Promise.all([pageA, pageB].map(closeClient));
  }, 'lanes');
});
