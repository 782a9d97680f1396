// The README's examples, run as written: every code block of README.md marked with a line
// `<!-- readme-check: name -->` right above its ```js fence is executed in real Chromium on a
// page of a real server-stub, and its outcome checked (a message arrives, a music room plays, a
// mesh link connects, ...). So the README cannot go stale silently: renaming an option, a method
// or an event, or removing an export, fails here.
//
// Each block runs as the body of an async function on a page of the server's origin, after two
// mechanical rewrites: `import init, { X } from '/pkg/p3_lanes.js'` becomes the equivalent
// dynamic `import()`, and the README's default address `http://127.0.0.1:8080` becomes the test
// server's. The placeholders a block leaves to the app (`showTapToPlay`, `deviceId`, a connected
// `client`, ...) are defined per block in CHECKS below (`given`); `then` runs after the block in
// the same scope and returns what the test asserts on. A marked block without an entry in
// CHECKS, or an entry whose block is gone, fails the first test.
//
// A second test reads the blocks statically: every `ev.type === '...'`-style event type and
// every `code === '...'` / `case '...'` error code they use must exist in pkg/p3_lanes.d.ts.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from './support/browser.mjs';
import { startServer } from './support/server.mjs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTracks } from '../scripts/lib/tones.mjs';

const ROOT = new URL('..', import.meta.url);
const README = readFileSync(new URL('README.md', ROOT), 'utf8');
const DTS_PATH = new URL('pkg/p3_lanes.d.ts', ROOT);
/** The address the README's examples use for a locally started server-stub. */
const README_SERVER = 'http://127.0.0.1:8080';
const WAIT_MS = 20_000;

/**
 * The README's marked blocks, in order.
 * @returns {{name: string, code: string}[]}
 */
function readmeBlocks() {
  const blocks = [];
  const re = /^<!-- readme-check: ([a-z0-9-]+) -->\n```js\n([\s\S]*?)\n```$/gm;
  for (const m of README.matchAll(re)) blocks.push({ name: m[1], code: m[2] });
  return blocks;
}

/**
 * A block as an async function body: static imports of the SDK become dynamic ones.
 * @param {string} code
 * @param {string} serverUrl
 */
function runnable(code, serverUrl) {
  return code
    .replace(/^import\s+(\w+)\s*,\s*\{([^}]*)\}\s*from\s*('[^']+');?$/gm,
      (_, def, names, from) => `const { default: ${def}, ${names.trim()} } = await import(${from});`)
    .replace(/^import\s+\{([^}]*)\}\s*from\s*('[^']+');?$/gm,
      (_, names, from) => `const { ${names.trim()} } = await import(${from});`)
    .replaceAll(README_SERVER, serverUrl);
}

/** Defines the SDK names a block uses without importing them itself. */
const SDK = "const givenSdk = await import('/pkg/p3_lanes.js'); await givenSdk.default(); const { P3Client, isP3Error } = givenSdk;";
/** Records calls of the app functions a block leaves to the app, in `window.readmeCalls`. */
const stubs = (...names) =>
  `window.readmeCalls ??= []; ${names.map((n) => `const ${n} = (...args) => { window.readmeCalls.push([${JSON.stringify(n)}, ...JSON.parse(JSON.stringify(args))]); };`).join(' ')}`;
/** Polls `cond` (a JS expression) in the block's scope until it holds, or throws. */
const waitUntil = (cond, what) =>
  `for (const t0 = performance.now(); !(${cond}); await new Promise((r) => setTimeout(r, 50))) { if (performance.now() - t0 > ${WAIT_MS}) throw new Error('timed out waiting for ' + ${JSON.stringify(what)}); }`;

/**
 * Per marked block: `given` runs before it (placeholders), `then` after it (returns the outcome),
 * `page`: which page runs it ('a', or 'b' for blocks run on both), `check(outcome, ctx)` asserts.
 */
const CHECKS = {
  connect: {
    given: '',
    then: 'return { sessionId: client.sessionId, state: client.state, members };',
    async check(out, { listener }) {
      assert.equal(out.state, 'closed', 'client.close() leaves the client closed');
      assert.ok(out.members.includes(out.sessionId), 'joinRoom resolves with the members, this client included');
      const got = await listener.evaluate(async (from) => {
        for (const t0 = performance.now(); performance.now() - t0 < 20_000; await new Promise((r) => setTimeout(r, 50))) {
          const m = window.received.find((x) => x.from === from && x.lane === 2);
          if (m) return m;
        }
        return null;
      }, out.sessionId);
      assert.ok(got, 'the room member received the example\'s Messaging message');
      assert.equal(got.value.text, 'hello');
    },
  },
  'auto-entry': {
    given: '',
    then: 'const out = { state: client.state, transport: client.handshake.transport }; client.close(); return out;',
    async check(out) {
      assert.deepEqual(out, { state: 'open', transport: 'websocket' }, 'the auto entry connects without init()');
    },
  },
  'error-codes': {
    given: SDK,
    then: 'client.close(); return { state: client.state };',
    async check(_out, { consoleOf, settled }) {
      await settled();
      assert.ok(consoleOf('warning').some((args) => args[0] === 'P3Error' && args[1] === 'lane_not_negotiated'),
        'send on a lane not negotiated throws a P3Error with code lane_not_negotiated');
    },
  },
  'mux-events': {
    given: `${SDK} ${stubs('resync', 'resume')} const chunk = { bytes: [1, 2, 3] };
      const client = await P3Client.connect(location.origin, { lanes: ['Control', 'Data'] });`,
    then: 'const mux = client.handshake.protocol.features.includes("mux"); client.close(); return { mux };',
    async check(out) {
      assert.equal(out.mux, true, 'the server grants the multiplexer by default');
    },
  },
  sse: {
    given: `${SDK} ${stubs('retryLater')}`,
    then: `const transport = client.handshake.transport; client.close(); return { transport };`,
    async check(out, { consoleOf, settled }) {
      await settled();
      assert.equal(out.transport, 'sse');
      assert.ok(consoleOf('log').some((args) => args[0] === 'sse'), 'the example logs the chosen transport');
    },
  },
  presence: {
    given: SDK,
    then: `${waitUntil('here.has(client.sessionId)', "this client's own 'online' presence event")}
      const me = here.get(client.sessionId); client.close(); return { me, now: Date.now() };`,
    async check(out) {
      assert.ok(out.me.since > 0 && out.me.since <= out.now + 1000, `since ${out.me.since} is a join time in ms since the epoch`);
      assert.ok(out.me.lastSeen >= out.me.since - 1000, 'lastSeen is a time in ms since the epoch too');
    },
  },
  'music-room': {
    given: stubs('showTapToPlay', 'plot', 'show', 'render'),
    then: `${waitUntil("window.readmeCalls.some(([f, s]) => f === 'render' && s.isPlaying && s.trackId === tracks[0].id)", "a playing 'state' event")}
      const out = { status: room.status, controller: room.state?.controllerId, me: client.sessionId, track: tracks[0].id };
      room.close(); client.close(); return out;`,
    async check(out) {
      assert.equal(out.controller, out.me, 'claimController made this client the DJ');
    },
  },
  'music-peer-to-peer': {
    given: `${SDK} ${stubs('showBanner')} const audio = document.querySelector('audio');`,
    then: 'const tier = room.tier; room.close(); client.close(); return { tier };',
    async check(out) {
      assert.equal(out.tier, 'socket', 'a peer-to-peer room starts on the server tier');
    },
  },
  'music-offline': {
    given: `${SDK} ${stubs('showBanner', 'showBadge')} const audio = document.querySelector('audio');
      const deviceId = 'readme-device-' + Math.random().toString(36).slice(2);
      const client = await P3Client.connect(location.origin, { lanes: ['Control', 'Messaging', 'Sync'] });`,
    then: 'const out = { pending: room.pendingChanges, deviceId: room.deviceId, mine: deviceId }; room.close(); client.close(); return out;',
    async check(out) {
      assert.equal(out.deviceId, out.mine, 'the room reports the deviceId it was given');
      assert.equal(out.pending, 0, 'nothing queued on a fresh device');
    },
  },
  'peer-mesh': {
    page: 'both',
    given: `${SDK} const peer = undefined; /* the README's one peer; none here: send to every linked peer */`,
    then: `${waitUntil('mesh.peers.some((p) => p.state === "connected")', 'a connected mesh link')}
      return { peers: mesh.peers.map((p) => p.state) };`,
    async check(outs) {
      for (const out of outs) assert.ok(out.peers.includes('connected'), 'the two pages running the example linked up');
    },
  },
  'offline-queue': {
    given: `${SDK} const deviceId = 'readme-device-' + Math.random().toString(36).slice(2); const epoch = 1; const sharedNowMs = Date.now();
      const client = await P3Client.connect(location.origin, { lanes: ['Control', 'Sync'] }); await client.joinRoom('readme-offline');
      /* The server's answer to music-changes is the room's business; its ack for this device's first change: */
      const ack = { type: 'music-changes-ack', versionVector: { [deviceId]: 1 } };`,
    then: 'const left = await queue.unacknowledged(); queue.close(); client.close(); return { change, left: left.length };',
    async check(out) {
      assert.equal(out.change.localSeq, 1);
      assert.match(out.change.origin, /^readme-device-/);
      assert.equal(out.left, 0, 'acknowledge dropped the covered change');
    },
  },
  'cache-guard': {
    given: `${SDK} ${stubs('saveDrafts', 'showUpdateBanner')}
      const client = await P3Client.connect(location.origin, { lanes: ['Control'] });`,
    then: `const reg = await navigator.serviceWorker.ready; client.close();
      return { result, sw: reg.active?.scriptURL ?? null };`,
    async check(out) {
      assert.equal(out.result.status, 'up-to-date');
      assert.match(out.sw ?? '', /\/sw\.js\?v=readme$/, 'the example registered the module service worker');
    },
  },
};

/** @type {import('./support/server.mjs').Server} */
let server;
/** Temporary media directory with the demo tracks. */
let mediaDir;
/** @type {import('playwright-core').Browser[]} */
const browsers = [];

before(async () => {
  // The demo tracks `npm start` writes into media/, in a directory of this run.
  mediaDir = mkdtempSync(join(tmpdir(), 'p3-readme-media-'));
  writeTracks(mediaDir);
  server = await startServer({ appVersion: 'readme', args: ['--stun', '', '--media-dir', mediaDir] });
  browsers.push(
    await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_ARGS, '--autoplay-policy=no-user-gesture-required'] }),
    await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS }),
  );
});

after(async () => {
  await Promise.all(browsers.map((b) => b.close()));
  await server?.stop();
  if (mediaDir) rmSync(mediaDir, { recursive: true, force: true });
});

/**
 * A fresh page on the server's origin with an `<audio>` and the app version meta; console
 * output is collected (as JSON values) and page errors fail the block.
 * @param {import('playwright-core').Browser} browser
 */
async function openPage(browser) {
  const page = await browser.newPage();
  const logs = [];
  const errors = [];
  /** Console messages whose arguments are still being read. */
  const pending = [];
  page.on('console', (msg) => {
    pending.push(Promise.all(msg.args().map((a) => a.jsonValue().catch(() => String(a))))
      .then((args) => logs.push({ type: msg.type(), args })));
  });
  page.on('pageerror', (err) => errors.push(err));
  await page.goto(`${server.url}/api/version`);
  await page.setContent('<!doctype html><meta name="app-version" content="readme"><audio></audio>');
  return { page, logs, errors, pending };
}

/**
 * Run one block (with its `given` and `then`) on `page`; resolves with `then`'s value, or
 * rejects with the block's error and its `code`.
 */
async function runBlock(page, name, code) {
  const { given, then } = CHECKS[name];
  const body = `${given}\n${runnable(code, server.url)}\n${then}`;
  const out = await page.evaluate(async (src) => {
    const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
    try {
      return { ok: await new AsyncFunction(src)() };
    } catch (err) {
      return { error: `${err?.name}: ${err?.message} (code ${err?.code})` };
    }
  }, body);
  if (out.error) throw new Error(`README block "${name}" failed: ${out.error}\n--- as run ---\n${body}`);
  return out.ok;
}

test('every marked README block has a check, and every check a block', () => {
  const names = readmeBlocks().map((b) => b.name);
  assert.ok(names.length >= 9, `README.md has ${names.length} marked blocks`);
  assert.deepEqual([...names].sort(), Object.keys(CHECKS).sort());
});

test('event types and error codes used in the README blocks exist in pkg/p3_lanes.d.ts', () => {
  const dts = readFileSync(DTS_PATH, 'utf8');
  const eventTypes = new Set([...dts.matchAll(/type: '([a-z-]+)'/g)].map((m) => m[1]));
  const codeUnion = dts.slice(dts.indexOf('export type ErrorCode'), dts.indexOf('export interface P3Error'));
  const codes = new Set([...codeUnion.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]));
  assert.ok(eventTypes.size > 20 && codes.size > 20, 'found the event and ErrorCode types in the .d.ts');
  for (const { name, code } of readmeBlocks()) {
    for (const [, t] of code.matchAll(/\.type === '([^']+)'/g)) {
      assert.ok(eventTypes.has(t), `README block "${name}": event type '${t}' is not in p3_lanes.d.ts`);
    }
    for (const [, c] of code.matchAll(/(?:\.code === |case )'([^']+)'/g)) {
      assert.ok(codes.has(c), `README block "${name}": error code '${c}' is not an ErrorCode`);
    }
    for (const [, c] of code.matchAll(/err\.code: ([^\n]*)/g)) {
      for (const [, l] of c.matchAll(/'([a-z_]+)'/g)) assert.ok(codes.has(l), `README block "${name}": '${l}' is not an ErrorCode`);
    }
  }
});

test('pkg/package.json is what the README promises: ES module p3-lanes, one entry per row of its table', () => {
  const pkg = JSON.parse(readFileSync(new URL('pkg/package.json', ROOT), 'utf8'));
  assert.equal(pkg.name, 'p3-lanes');
  assert.equal(pkg.type, 'module');
  assert.match(README, /`pkg\/` is also an npm package \(`p3-lanes`/);
  // The README's table: | `specifier` | contains | `/pkg/<path>` |
  const rows = [...README.matchAll(/^\| `(p3-lanes[^`]*)` \| [^\n]* \| `\/pkg\/([^`]+)` \|$/gm)];
  const specifiers = Object.keys(pkg.exports).filter((k) => k !== './package.json').map((k) => (k === '.' ? 'p3-lanes' : `p3-lanes/${k.slice(2)}`));
  // The table lists the entries; the text below it their `/auto` twins and the wasm files.
  const entries = specifiers.filter((k) => !k.endsWith('/auto') && !k.includes('*'));
  assert.deepEqual(rows.map(([, specifier]) => specifier).sort(), entries.sort(), 'the README lists every entry of `exports`');
  for (const entry of entries) {
    assert.ok(specifiers.includes(`${entry}/auto`), `${entry} has an /auto twin in exports`);
  }
  for (const twin of ['p3-lanes/auto', 'p3-lanes/music/auto', 'p3-lanes/pwa/auto']) {
    assert.ok(README.includes(`\`${twin}\``), `the README names ${twin}`);
  }
  assert.deepEqual(specifiers.filter((k) => !entries.includes(k) && !k.endsWith('/auto')), ['p3-lanes/*.wasm'], 'the wasm files are exported by name');
  assert.ok(README.includes('`p3-lanes/p3_lanes_bg.wasm`'), 'the README says how the wasm files are exported');
  for (const [, specifier, path] of rows) {
    const key = specifier === 'p3-lanes' ? '.' : `./${specifier.slice('p3-lanes/'.length)}`;
    assert.equal(pkg.exports[key].default, `./${path}`, `${specifier} is served at /pkg/${path}`);
    const wasm = path.replace(/p3_lanes\.js$/, 'p3_lanes_bg.wasm');
    for (const file of [path, pkg.exports[key].types.slice(2), wasm]) {
      assert.ok(pkg.files.includes(file), `files lists ${file}`);
      assert.ok(existsSync(new URL(`pkg/${file}`, ROOT)), `pkg/${file} exists`);
    }
  }
  assert.equal(pkg.main, pkg.exports['.'].default.slice(2), '`main` is the `p3-lanes` entry');
});

test('the README blocks run as written against a real server', { timeout: 240_000 }, async (t) => {
  const blocks = readmeBlocks();
  for (const { name, code } of blocks) {
    await t.test(name, async () => {
      const check = CHECKS[name];
      const a = await openPage(browsers[0]);
      const b = check.page === 'both' || name === 'connect' ? await openPage(browsers[1]) : null;
      try {
        const consoleOf = (type) => a.logs.filter((l) => l.type === type).map((l) => l.args);
        const settled = () => Promise.all(a.pending);
        let out;
        if (name === 'connect') {
          // A room member on another browser, to receive the example's message.
          await b.page.evaluate(async (url) => {
            const { default: init, P3Client } = await import('/pkg/p3_lanes.js');
            await init();
            window.received = [];
            window.client = await P3Client.connect(url, { lanes: ['Control', 'Messaging'] });
            window.client.onMessage('Messaging', (m) => window.received.push(m));
            await window.client.joinRoom('demo');
          }, server.url);
          out = await runBlock(a.page, name, code);
          await check.check(out, { listener: b.page, consoleOf });
          await b.page.evaluate(() => window.client.close());
        } else if (check.page === 'both') {
          out = await Promise.all([runBlock(a.page, name, code), runBlock(b.page, name, code)]);
          await check.check(out, { consoleOf, settled });
        } else {
          out = await runBlock(a.page, name, code);
          await check.check(out, { consoleOf, settled });
        }
        assert.deepEqual([...a.errors, ...(b?.errors ?? [])].map(String), [], 'no page errors');
      } finally {
        await a.page.close();
        await b?.page.close();
      }
    });
  }
});
