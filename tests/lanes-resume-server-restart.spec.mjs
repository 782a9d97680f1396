// The lane multiplexer (PROTOCOL.md §11, the SDK's default) across a server crash: a page
// streams numbered reliable messages on Messaging and Data (every 25th Data message is 40 KB,
// so it is chunked) to another page in the same room while the server is SIGKILLed and
// restarted mid stream. Per lane the receiver must see exactly: 1..k once and in order, one
// `discontinuity` event (reason `peer-restarted`, the old and the new epoch of the server's
// stream), then j..N once and in order. Whatever lies between k and j (lost with the server)
// or repeats from j to k (relayed by the old server but not yet acknowledged to the sender,
// PROTOCOL.md §11.7) is thereby reported to the app: never a silent gap, never a silent
// duplicate.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const LANES = [1, 2, 5];
const ROOM = 'mux-e2e';
const MESSAGING = 2;
const DATA = 5;
const N = 400;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e' });
});

after(async () => {
  await server?.stop();
});

/** Connects `window.client` (the multiplexer is the default) and records messages and events in `window.log`. */
function connectMux(page, url, clientId) {
  return page.evaluate(
    async ({ url, clientId, lanes, room }) => {
      window.log = [];
      const client = await window.sdk.P3Client.connect(url, { clientId, lanes, reconnect: true });
      window.client = client;
      window.features = client.handshake.protocol.features;
      for (const lane of lanes) {
        client.onMessage(lane, (m) => window.log.push({ k: 'm', lane: m.lane, n: m.value.n }));
      }
      client.onEvent((ev) => {
        if (ev.type === 'discontinuity') {
          const { lane, reason, expectedEpoch, expectedSeq, epoch, seq } = ev;
          window.log.push({ k: 'd', lane, reason, expectedEpoch, expectedSeq, epoch, seq });
        }
        if (ev.type === 'drain') window.drains = (window.drains ?? 0) + 1;
      });
      await client.joinRoom(room);
      return client.sessionId;
    },
    { url, clientId, lanes: LANES, room: ROOM },
  );
}

/** Starts streaming 1..=n on Messaging and Data from the page; waits on backpressure. */
function startStream(page, n) {
  return page.evaluate((n) => {
    window.sent = 0;
    window.streamDone = (async () => {
      const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
      const send = async (lane, value) => {
        for (;;) {
          try {
            window.client.send(lane, value);
            return;
          } catch (e) {
            if (e.code !== 'backpressure') throw e;
            await sleep(20); // or wait for the 'drain' event
          }
        }
      };
      for (let i = 1; i <= n; i++) {
        await send(2, { n: i });
        await send(5, { n: i, pad: i % 25 === 0 ? 'x'.repeat(40_000) : '' });
        window.sent = i;
        await sleep(15);
      }
    })();
  }, n);
}

/** Asserts that `ns` is `from, from + 1, ..., to` (once each, in order). */
function assertRun(ns, from, to, what) {
  const want = Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
  assert.deepEqual(ns, want, what);
}

/**
 * Per lane: the log split at its discontinuity events. Asserts exactly one (the restart, reason
 * `peer-restarted`, a new non-zero epoch), 1..k once and in order before it and j..N once and
 * in order after it (j ≥ 1). Returns `{k, j, lost, repeated, discontinuity}`.
 */
function check(log, lane) {
  const segments = [[]];
  const discontinuities = [];
  for (const e of log) {
    if (e.lane !== lane) continue;
    if (e.k === 'd') {
      discontinuities.push(e);
      segments.push([]);
    } else {
      segments.at(-1).push(e.n);
    }
  }
  assert.equal(discontinuities.length, 1, `lane ${lane}: one discontinuity for one restart, got ${JSON.stringify(discontinuities)}`);
  const [d] = discontinuities;
  assert.equal(d.reason, 'peer-restarted', `lane ${lane}: ${JSON.stringify(d)}`);
  assert.ok(d.expectedEpoch !== 0 && d.epoch !== 0 && d.epoch !== d.expectedEpoch, `lane ${lane}: the epoch changes ${JSON.stringify(d)}`);
  assert.equal(d.seq, 1, `lane ${lane}: the new server's stream starts at 1 ${JSON.stringify(d)}`);
  const [before, after] = segments;
  const k = before.length;
  assertRun(before, 1, k, `lane ${lane}: before the restart, 1..${k} once and in order`);
  assert.ok(after.length > 0, `lane ${lane}: messages after the restart`);
  const j = after[0];
  assertRun(after, j, N, `lane ${lane}: after the restart, ${j}..${N} once and in order`);
  assert.ok(j >= 1 && k >= 1, `lane ${lane}: the restart happened mid stream (k ${k}, j ${j})`);
  return { k, j, lost: Math.max(0, j - k - 1), repeated: Math.max(0, k - j + 1), discontinuity: d };
}

test('reliable lanes across a server SIGKILL: every message once and in order, or a discontinuity', { timeout: 180_000 }, async () => {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [sender, receiver] = await Promise.all([
      openSdkPage(browsers[0], server.url, 'sender', 'lanes'),
      openSdkPage(browsers[1], server.url, 'receiver', 'lanes'),
    ]);
    await connectMux(receiver, server.url, 'mux-receiver');
    await connectMux(sender, server.url, 'mux-sender');
    assert.ok((await sender.evaluate(() => window.features)).includes('mux'), 'the multiplexer is on by default');

    await startStream(sender, N);
    await waitFor(() => receiver.evaluate((n) => window.log.filter((e) => e.k === 'm').length >= n, N / 2), 30_000, () => 'half of the stream');
    await server.restart();
    await sender.evaluate(() => window.streamDone);
    const log = await waitFor(
      () =>
        receiver.evaluate((n) => {
          const done = [2, 5].every((l) => window.log.some((e) => e.k === 'm' && e.lane === l && e.n === n));
          return done && window.log;
        }, N),
      60_000,
      async () => `the last message on both lanes; receiver log tail ${JSON.stringify((await receiver.evaluate(() => window.log)).slice(-8))}`,
    );
    for (const lane of [MESSAGING, DATA]) {
      const { k, j, lost, repeated, discontinuity } = check(log, lane);
      console.log(
        `lane ${lane}: 1..${k} before the restart, ${j}..${N} after it: ${lost} lost and ${repeated} repeated, ` +
          `all reported by ${JSON.stringify(discontinuity)}`,
      );
    }
    await Promise.all([sender, receiver].map((p) => p.evaluate(() => window.client.close())));
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
  }
});
