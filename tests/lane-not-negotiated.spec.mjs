// Sending on a lane the client did not negotiate in its handshake is the caller's mistake:
// `send` throws synchronously an Error whose `code` is 'lane_not_negotiated', whether the lane
// is given by number or by name. Listening on such a lane (`onMessage`) throws the same, rather
// than registering a listener that can never fire.

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
    const page = await openSdkPage(browser, server.url, 'C');
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
