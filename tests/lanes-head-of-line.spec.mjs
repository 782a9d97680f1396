// Head-of-line protection end to end (PROTOCOL.md §11.3-§11.4, issue 3): page A sends a 3 MiB
// message on the Data lane to page B through a room, then at once small messages on the
// Messaging and Sync lanes. With the multiplexer (the default) the small ones overtake the big
// one (it travels as 16 KiB chunks, interactive lanes first), so B receives every small message
// before the big one completes. The same exchange with `mux: false` (v1, one WebSocket message
// per frame) delivers the big message first: the assertion is able to fail. Only orderings are
// asserted, no timings.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const LANES = [1, 2, 5, 7];
const BIG_BYTES = 3 << 20;
/** Room for the big message and its frame header on both ends. */
const MAX_MESSAGE_BYTES = 8 << 20;
const SMALL = 5;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e', args: ['--max-frame-bytes', String(MAX_MESSAGE_BYTES)] });
});

after(async () => {
  await server?.stop();
});

/**
 * Connects `window.client` (multiplexer on or off), joins `room`, and records in `window.log`
 * every message's lane and id, in arrival order (not the 3 MiB payload).
 */
function connect(page, clientId, room, mux) {
  return page.evaluate(
    async ({ url, clientId, lanes, room, mux, maxMessageBytes }) => {
      window.log = [];
      const client = await window.sdk.P3Client.connect(url, { clientId, lanes, mux, maxMessageBytes });
      window.client = client;
      for (const lane of lanes) {
        client.onMessage(lane, (m) => window.log.push({ lane: m.lane, id: m.value.id, bytes: m.value.pad?.length ?? 0 }));
      }
      await client.joinRoom(room);
      return client.handshake.protocol.features;
    },
    { url: server.url, clientId, lanes: LANES, room, mux, maxMessageBytes: MAX_MESSAGE_BYTES },
  );
}

/** On A, in one task: the big Data message, then `SMALL` messages each on Messaging and Sync. */
function sendBigThenSmall(page, bigBytes, small) {
  return page.evaluate(
    ({ bigBytes, small }) => {
      window.client.send('Data', { id: 'big', pad: 'x'.repeat(bigBytes) });
      for (let i = 1; i <= small; i++) {
        window.client.send('Messaging', { id: `m${i}` });
        window.client.send('Sync', { id: `s${i}` });
      }
    },
    { bigBytes, small },
  );
}

/** Runs the exchange between two fresh browsers; returns B's arrival log once all arrived. */
async function exchange(mux, room) {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [pageA, pageB] = await Promise.all([
      openSdkPage(browsers[0], server.url, `A(mux ${mux})`, 'lanes'),
      openSdkPage(browsers[1], server.url, `B(mux ${mux})`, 'lanes'),
    ]);
    const featuresB = await connect(pageB, `hol-b-${mux}`, room, mux);
    const featuresA = await connect(pageA, `hol-a-${mux}`, room, mux);
    for (const features of [featuresA, featuresB]) {
      assert.equal(features.includes('mux'), mux, `mux granted: ${JSON.stringify(features)}`);
    }
    await sendBigThenSmall(pageA, BIG_BYTES, SMALL);
    const log = await waitFor(
      () => pageB.evaluate((n) => window.log.length === n && window.log, 1 + 2 * SMALL),
      60_000,
      async () => `all ${1 + 2 * SMALL} messages at B; got ${JSON.stringify(await pageB.evaluate(() => window.log))}`,
    );
    await Promise.all([pageA, pageB].map((p) => p.evaluate(() => window.client.close())));
    return log;
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
  }
}

/** Asserts every message arrived once, in send order per lane, the big one whole. */
function assertComplete(log) {
  const ids = (lane) => log.filter((e) => e.lane === lane).map((e) => e.id);
  const series = (prefix) => Array.from({ length: SMALL }, (_, i) => `${prefix}${i + 1}`);
  assert.deepEqual(ids(2), series('m'), 'Messaging: each once, in order');
  assert.deepEqual(ids(7), series('s'), 'Sync: each once, in order');
  assert.deepEqual(ids(5), ['big']);
  assert.equal(log.find((e) => e.id === 'big').bytes, BIG_BYTES, 'the big message arrives whole');
}

test('multiplexer: Messaging and Sync messages sent after a 3 MiB Data message overtake it', { timeout: 120_000 }, async () => {
  const log = await exchange(true, 'hol-mux');
  assertComplete(log);
  const big = log.findIndex((e) => e.id === 'big');
  assert.equal(big, log.length - 1, `every small message arrives before the big one completes: ${JSON.stringify(log)}`);
});

test('v1 framing (mux: false) for contrast: the 3 MiB Data message blocks the ones sent after it', { timeout: 120_000 }, async () => {
  const log = await exchange(false, 'hol-v1');
  assertComplete(log);
  assert.equal(log[0].id, 'big', `head-of-line blocking without the multiplexer: ${JSON.stringify(log)}`);
});
