// A runtime without the transport's browser API (Node.js 20 has neither WebSocket nor
// EventSource; some embedded webviews lack EventSource) gets a clear `connect_failed` naming
// the missing API, before any handshake, instead of a console error and a generic socket
// failure. Run in real Chromium with the globals removed; a page that keeps WebSocket but
// loses EventSource still connects on 'auto' (WebSocket) and fails only when SSE is forced.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

/** @type {import('./support/server.mjs').Server} */
let server;
/** @type {import('playwright-core').Browser} */
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/**
 * Remove `globals` from the page, then `P3Client.connect` with `options`; resolves with the
 * outcome: `{ok: state}` or `{code, name, message}`.
 */
async function connectWithout(globals, options) {
  const page = await openSdkPage(browser, server.url, `without ${globals.join('+')}`, 'lanes');
  try {
    return await page.evaluate(async ({ url, globals, options }) => {
      for (const name of globals) delete globalThis[name];
      try {
        const client = await window.sdk.P3Client.connect(url, options);
        const state = client.state;
        client.close();
        return { ok: state };
      } catch (err) {
        return { code: err.code, name: err.name, message: err.message };
      }
    }, { url: server.url, globals, options });
  } finally {
    await page.close();
  }
}

test('no WebSocket and no EventSource: connect rejects with connect_failed naming WebSocket', async () => {
  const out = await connectWithout(['WebSocket', 'EventSource'], { lanes: ['Control'] });
  assert.equal(out.code, 'connect_failed');
  assert.equal(out.name, 'P3Error');
  assert.match(out.message, /globalThis\.WebSocket is not available/);
});

test('no EventSource: auto still connects over WebSocket; forced SSE rejects naming EventSource', async () => {
  assert.deepEqual(await connectWithout(['EventSource'], { lanes: ['Control'] }), { ok: 'open' });
  const out = await connectWithout(['EventSource'], { lanes: ['Control'], transport: 'sse' });
  assert.equal(out.code, 'connect_failed');
  assert.match(out.message, /globalThis\.EventSource is not available/);
});
