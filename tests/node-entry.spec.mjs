// The package's Node.js entry (issue 16): `pkg/p3_lanes.node.js` loads the wasm from the file
// system (no `init()` to call) and, on Node.js 20, which has no global WebSocket, takes the `ws`
// package's. A Node.js client and a Chromium page that loaded the self-initialising browser entry
// (`pkg/p3_lanes.auto.js`, no `init()` either) join one room on a real server-stub and exchange
// messages both ways. Without `ws` (the package copied where `ws` cannot be resolved) `connect`
// rejects with a `P3Error` `connect_failed` that says to install it; with a global WebSocket the
// entry leaves it alone.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { launchBrowser } from './support/browser.mjs';
import { waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const PKG = fileURLToPath(new URL('../pkg/', import.meta.url));
const ROOM = 'node-and-browser';
const WAIT_MS = 15_000;

let server;
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
 * Run `code` (an ES module body) in a fresh Node.js process; returns what it printed as JSON.
 * @param {string} code
 */
function inChild(code) {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `child failed:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1));
}

test('a Node.js client (node entry, ws) and a Chromium page (auto entry) exchange messages in one room', async () => {
  const hadWebSocket = typeof globalThis.WebSocket === 'function';
  const sdk = await import(new URL('p3_lanes.node.js', `file://${PKG}`).href);
  if (!hadWebSocket) {
    const ws = await import('ws');
    assert.equal(Object.getPrototypeOf(globalThis.WebSocket), ws.WebSocket, 'Node.js without a global WebSocket gets ws\'s');
  }

  // The page: the auto entry, no init() call.
  const page = await browser.newPage();
  page.on('pageerror', (err) => console.error(`[page pageerror] ${err.stack ?? err}`));
  await page.goto(`${server.url}/api/version`);
  const pageSession = await page.evaluate(async ({ url, room }) => {
    const { P3Client } = await import('/pkg/p3_lanes.auto.js');
    window.inbox = [];
    const client = await P3Client.connect(url, { clientId: 'chromium-1', lanes: ['Control', 'Messaging'] });
    client.onMessage('Messaging', (m) => window.inbox.push({ from: m.from, value: m.value }));
    window.client = client;
    await client.joinRoom(room);
    return client.sessionId;
  }, { url: server.url, room: ROOM });

  // Node.js: already initialised, default options (a device key needs a browser profile:
  // Node.js sessions simply have none).
  const client = await sdk.P3Client.connect(server.url, { clientId: 'node-1', lanes: ['Control', 'Messaging'] });
  try {
    assert.equal(client.handshake.transport, 'websocket');
    const inbox = [];
    client.onMessage('Messaging', (m) => inbox.push({ from: m.from, value: m.value }));
    const { members } = await client.joinRoom(ROOM);
    assert.ok(members.includes(pageSession), 'the page is a member of the room Node.js joined');

    for (let i = 0; i < 5; i += 1) client.send('Messaging', { text: `from node ${i}`, i });
    const got = await waitFor(
      () => page.evaluate(() => (window.inbox.length >= 5 ? window.inbox : null)),
      WAIT_MS, 'the page to receive the 5 messages of Node.js');
    assert.deepEqual(got.map((m) => m.value.text), [0, 1, 2, 3, 4].map((i) => `from node ${i}`));
    assert.ok(got.every((m) => m.from === client.sessionId));

    await page.evaluate(() => { for (let i = 0; i < 5; i += 1) window.client.send('Messaging', { text: `from chromium ${i}`, i }); });
    await waitFor(() => inbox.length >= 5, WAIT_MS, 'Node.js to receive the 5 messages of the page');
    assert.deepEqual(inbox.map((m) => m.value.text), [0, 1, 2, 3, 4].map((i) => `from chromium ${i}`));
    assert.ok(inbox.every((m) => m.from === pageSession));

    // Errors are P3Errors in Node.js too.
    let thrown;
    try { client.send('Voice', 1); } catch (err) { thrown = err; }
    assert.ok(sdk.isP3Error(thrown) && thrown instanceof Error);
    assert.equal(thrown.code, 'lane_not_negotiated');
  } finally {
    client.close();
    await page.evaluate(() => window.client.close());
    await page.close();
  }
});

test('without a WebSocket and without ws, connect rejects with a P3Error connect_failed that names ws', () => {
  // A copy of the package where `ws` cannot be resolved (no node_modules above it).
  const dir = mkdtempSync(join(tmpdir(), 'p3-lanes-no-ws-'));
  try {
    cpSync(PKG, dir, { recursive: true });
    const out = inChild(`
      delete globalThis.WebSocket;
      const sdk = await import(${JSON.stringify(`file://${dir}/p3_lanes.node.js`)});
      const r = { hasWebSocket: typeof globalThis.WebSocket };
      try { await sdk.P3Client.connect(${JSON.stringify(server.url)}); r.connected = true; }
      catch (err) { Object.assign(r, { code: err.code, name: err.name, message: err.message, p3: sdk.isP3Error(err), error: err instanceof Error }); }
      console.log(JSON.stringify(r));`);
    assert.equal(out.hasWebSocket, 'undefined');
    assert.equal(out.connected, undefined, 'connect must not succeed without a WebSocket');
    assert.deepEqual([out.code, out.name, out.p3, out.error], ['connect_failed', 'P3Error', true, true]);
    assert.match(out.message, /`ws` package/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a global WebSocket (Node.js 22 and later) is used as it is', () => {
  const out = inChild(`
    const { WebSocket } = await import('ws');
    globalThis.WebSocket = WebSocket;
    const sdk = await import(${JSON.stringify(`file://${PKG}p3_lanes.node.js`)});
    const client = await sdk.P3Client.connect(${JSON.stringify(server.url)}, { lanes: ['Control'] });
    const r = { same: globalThis.WebSocket === WebSocket, state: client.state };
    client.close();
    console.log(JSON.stringify(r));
    process.exit(0);`);
  assert.deepEqual(out, { same: true, state: 'open' });
});
