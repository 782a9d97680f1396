// Sending on a lane the client did not negotiate in its handshake is the caller's mistake:
// `send` throws synchronously an Error whose `code` is 'lane_not_negotiated', whether the lane
// is given by number or by name. Listening on such a lane (`onMessage`) throws the same, rather
// than registering a listener that can never fire. A music room (Control + Sync, + Messaging
// with peerToPeer) or a peer mesh (Messaging) on a client without those lanes rejects the same.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { closeClient, connect } from './support/client.mjs';
import { startServer } from './support/server.mjs';

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e' });
});

after(async () => {
  await server?.stop();
});

test("sending on a lane that was not negotiated throws code 'lane_not_negotiated'", { timeout: 60_000 }, async () => {
  const browser = await launchBrowser();
  try {
    const page = await openSdkPage(browser, server.url, 'C', 'music');
    await connect(page, server.url, 'tab-c', [1, 2]); // Voice (3) not negotiated
    for (const lane of [3, 'Voice']) {
      const error = await page.evaluate((lane) => {
        try {
          window.client.send(lane, { text: 'not negotiated' });
          return null;
        } catch (err) {
          return { isError: err instanceof Error, code: err.code, message: err.message };
        }
      }, lane);
      assert.ok(error, `send(${JSON.stringify(lane)}) should throw`);
      assert.equal(error.isError, true, `send(${JSON.stringify(lane)}) should throw an Error`);
      assert.equal(error.code, 'lane_not_negotiated', `send(${JSON.stringify(lane)}): ${error.message}`);
    }
    for (const lane of [3, 'voice']) {
      const error = await page.evaluate((lane) => {
        try {
          window.client.onMessage(lane, () => {});
          return null;
        } catch (err) {
          return { isError: err instanceof Error, code: err.code, message: err.message };
        }
      }, lane);
      assert.ok(error, `onMessage(${JSON.stringify(lane)}) should throw`);
      assert.equal(error.code, 'lane_not_negotiated', `onMessage(${JSON.stringify(lane)}): ${error.message}`);
    }
    const unsubscribe = await page.evaluate(() => typeof window.client.onMessage('Messaging', () => {}));
    assert.equal(unsubscribe, 'function', 'onMessage on a negotiated lane returns its unsubscribe function');
    await closeClient(page);
  } finally {
    await browser.close();
  }
});

test("a music room or mesh without the lanes it is built on rejects with 'lane_not_negotiated'", { timeout: 60_000 }, async () => {
  const browser = await launchBrowser();
  try {
    const page = await openSdkPage(browser, server.url, 'D', 'music');
    // Control + Messaging: no Sync, so no music room (with or without peerToPeer).
    await connect(page, server.url, 'tab-d', [1, 2]);
    const refusal = (call) => page.evaluate(async (call) => {
      const media = document.createElement('audio');
      try {
        if (call === 'music') await window.client.musicRoom('lnn-music', { media });
        else if (call === 'music-p2p') await window.client.musicRoom('lnn-music', { media, peerToPeer: true });
        else await window.client.peerMesh('lnn-mesh');
        return null;
      } catch (err) {
        return { isError: err instanceof Error, code: err.code, message: err.message };
      }
    }, call);
    for (const call of ['music', 'music-p2p']) {
      const error = await refusal(call);
      assert.ok(error, `${call} without the Sync lane should reject`);
      assert.equal(error.isError, true);
      assert.equal(error.code, 'lane_not_negotiated', `${call}: ${error.message}`);
      assert.match(error.message, /sync/i, `${call}: the message names the missing lane: ${error.message}`);
    }
    await closeClient(page);
    // Control + Sync: a music room is fine, but no mesh (signaling needs Messaging).
    await connect(page, server.url, 'tab-d2', [1, 7]);
    const mesh = await refusal('mesh');
    assert.ok(mesh, 'peerMesh without the Messaging lane should reject');
    assert.equal(mesh.code, 'lane_not_negotiated', mesh.message);
    assert.match(mesh.message, /messaging/i, mesh.message);
    const p2p = await refusal('music-p2p');
    assert.ok(p2p, 'musicRoom with peerToPeer without the Messaging lane should reject');
    assert.equal(p2p.code, 'lane_not_negotiated', p2p.message);
    assert.equal(await refusal('music'), null, 'a music room on Control + Sync joins');
    await closeClient(page);
  } finally {
    await browser.close();
  }
});
