// The lane multiplexer (PROTOCOL.md §11, `mux: true`) across a server crash: a page streams
// numbered reliable messages on Messaging and Data (every 25th Data message is 40 KB, so it is
// chunked) to another page in the same room while the server is SIGKILLed and restarted mid
// stream. The receiver must get every number once and in order, or a `discontinuity` event
// naming the lane right before a jump: never a silent gap, never a duplicate without one.

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

/** Connects `window.client` with the multiplexer and records messages and events in `window.log`. */
function connectMux(page, url, clientId) {
  return page.evaluate(
    async ({ url, clientId, lanes, room }) => {
      window.log = [];
      const client = await window.sdk.P3Client.connect(url, { clientId, lanes, reconnect: true, mux: true });
      window.client = client;
      window.features = client.handshake.protocol.features;
      for (const lane of lanes) {
        client.onMessage(lane, (m) => window.log.push({ k: 'm', lane: m.lane, n: m.value.n }));
      }
      client.onEvent((ev) => {
        if (ev.type === 'discontinuity') window.log.push({ k: 'd', lane: ev.lane, reason: ev.reason });
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

/** Per lane: the numbers in order; asserts the no-silent-gap / no-silent-duplicate rule. */
function check(log, lane) {
  let last = 0;
  let afterDiscontinuity = false;
  const got = [];
  for (const e of log) {
    if (e.lane !== lane) continue;
    if (e.k === 'd') {
      afterDiscontinuity = true;
      continue;
    }
    assert.ok(
      e.n === last + 1 || afterDiscontinuity,
      `lane ${lane}: ${e.n} after ${last} without a discontinuity`,
    );
    afterDiscontinuity = false;
    last = e.n;
    got.push(e.n);
  }
  return got;
}

test('reliable lanes across a server SIGKILL: every message once and in order, or a discontinuity', { timeout: 180_000 }, async () => {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [sender, receiver] = await Promise.all([
      openSdkPage(browsers[0], server.url, 'sender'),
      openSdkPage(browsers[1], server.url, 'receiver'),
    ]);
    await connectMux(receiver, server.url, 'mux-receiver');
    await connectMux(sender, server.url, 'mux-sender');
    assert.ok((await sender.evaluate(() => window.features)).includes('mux'), 'the server grants mux');

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
      const got = check(log, lane);
      assert.equal(got.at(-1), N);
      assert.ok(
        log.some((e) => e.k === 'd' && e.lane === lane),
        `lane ${lane}: the restart is reported as a discontinuity`,
      );
      const unique = new Set(got).size;
      console.log(
        `lane ${lane}: ${got.length} received, ${N - unique} lost and ${got.length - unique} repeated, all right after ` +
          `a discontinuity ${JSON.stringify(log.filter((e) => e.k === 'd' && e.lane === lane))}`,
      );
    }
    await Promise.all([sender, receiver].map((p) => p.evaluate(() => window.client.close())));
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
  }
});
