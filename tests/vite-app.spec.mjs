// p3-lanes in a Vite app written in strict TypeScript, installed as a user installs it (issue 16):
// `npm pack pkg`, `npm install <tarball>` into a copy of tests/vite-app, `tsc --noEmit` (strict,
// `skipLibCheck: false`), `vite build`; then `vite preview` serves the build on its own origin
// and Chromium (then Firefox, through the adapter of the Firefox specs where the tree has it)
// runs it against a real server-stub on another origin, as an app served apart from its P3
// server (e.g. from a CDN): the app checks the version against the server's base URL (the page's
// own origin has no `/api/version`: the old origin-only check could not), connects through
// self-initialising entries (no `init()`), joins a room and exchanges messages with a second
// (Chromium) page that uses the SDK directly; in the same room, as its music room, it becomes
// the DJ and plays the server's one track (a generated WAV in a temporary --media-dir). The
// TypeScript and Vite binaries are the workspace's dev dependencies; the install is offline (the
// tarball has no dependencies, `ws` is optional).

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { writeTracks } from '../scripts/lib/tones.mjs';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { connect, waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const VITE = join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js');
const WAIT_MS = 20_000;
const FIREFOX_ADAPTER = fileURLToPath(new URL('./support/firefox.mjs', import.meta.url));
/** The one track of the server's media folder: 8 kHz, 20 s (a small file). */
const TRACK = { file: 'vite-track.wav', seconds: 20, bpm: 100, chords: [[60, 64, 67]], style: 'pad', rate: 8000 };

let work;
let app;
let server;
let preview;
let browser;
let firefox;

/** Run a command to completion; fails the test with its output otherwise. */
function sh(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, `\`${cmd} ${args.join(' ')}\` failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** A free TCP port on 127.0.0.1 (for `vite preview --strictPort`). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer().once('error', reject).listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/**
 * `vite preview` of the app's build on 127.0.0.1; resolves with its URL once it listens.
 * @returns {Promise<{url: string, proc: import('node:child_process').ChildProcess}>}
 */
async function startPreview() {
  const port = await freePort();
  // NO_COLOR: with `CI` set Vite colours its output, the port in bold, even into a pipe.
  const env = { ...process.env, NO_COLOR: '1' };
  delete env.FORCE_COLOR;
  const proc = spawn(process.execPath, [VITE, 'preview', '--host', '127.0.0.1', '--port', String(port), '--strictPort'], { cwd: app, env });
  const url = `http://127.0.0.1:${port}`;
  let output = '';
  try {
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`vite preview did not start:\n${output}`)), WAIT_MS);
      const onData = (chunk) => {
        output += chunk;
        // eslint-disable-next-line no-control-regex
        if (output.replace(/\x1b\[[0-9;]*m/g, '').includes(url)) { clearTimeout(timer); resolve(); }
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', (chunk) => { output += chunk; });
      proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`vite preview exited (${code}):\n${output}`)); });
    });
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return { url, proc };
}

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'p3-vite-'));
  app = join(work, 'app');
  cpSync(join(ROOT, 'tests', 'vite-app'), app, { recursive: true, filter: (src) => !/node_modules|dist/.test(src) });
  // A package of per-feature entries: the app imports the music and PWA entries (sdk-entries.ts).
  const { exports } = JSON.parse(readFileSync(join(ROOT, 'pkg', 'package.json'), 'utf8'));
  if (['./music/auto', './pwa/auto'].every((subpath) => subpath in exports)) {
    cpSync(join(app, 'sdk-entries.ts'), join(app, 'src', 'sdk.ts'));
  }
  sh('npm', ['pack', join(ROOT, 'pkg'), '--pack-destination', work, '--silent'], ROOT);
  const tarball = readdirSync(work).find((f) => f.endsWith('.tgz'));
  sh('npm', ['install', '--offline', '--no-audit', '--no-fund', '--no-save', join(work, tarball)], app);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await firefox?.close();
  preview?.proc.kill();
  await server?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('the app type-checks under strict TypeScript against the installed package', () => {
  sh(process.execPath, [TSC, '-p', app, '--pretty', 'false'], app);
});

test('vite build bundles the package and its wasm', () => {
  sh(process.execPath, [VITE, 'build', '--logLevel', 'warn'], app);
  const assets = readdirSync(join(app, 'dist', 'assets'));
  assert.ok(assets.some((f) => f.endsWith('.wasm')), `the wasm is an asset of the build: ${assets.join(', ')}`);
  assert.match(readFileSync(join(app, 'dist', 'index.html'), 'utf8'), /<script type="module"[^>]*src="\/assets\//);
});

/** server-stub (with the track) and `vite preview` of the build, started once for every browser. */
async function serve() {
  if (server) return;
  const mediaDir = join(work, 'media');
  writeTracks(mediaDir, [TRACK]);
  // The app's index.html says version 1.0.0 (its <meta name="app-version">), as does the server.
  server = await startServer({ appVersion: '1.0.0', args: ['--media-dir', mediaDir] });
  preview = await startPreview();
}

/**
 * The built app in `appBrowser` (room `room`): version check, music room, refusal, and messages
 * both ways with an SDK page in the Chromium of this spec.
 */
async function runApp(appBrowser, room) {
  await serve();
  const page = await appBrowser.newPage();
  page.on('pageerror', (err) => console.error(`[vite app pageerror] ${err.stack ?? err}`));
  await page.goto(`${preview.url}/?room=${room}&server=${encodeURIComponent(server.url)}`);
  await page.waitForFunction(() => window.app || window.appError, null, { timeout: WAIT_MS });
  const started = await page.evaluate(() => window.appError ?? { version: window.app.version, refused: window.app.refused, sessionId: window.app.sessionId, music: window.app.music });
  assert.equal(typeof started, 'object', `the app failed: ${started}`);
  assert.deepEqual(
    { trackId: started.music.trackId, isPlaying: started.music.isPlaying, controllerId: started.music.controllerId },
    { trackId: TRACK.file, isPlaying: true, controllerId: started.sessionId },
    'the music room plays the track with the app as its DJ',
  );
  assert.deepEqual(started.version, { status: 'up-to-date', version: '1.0.0', afterPurge: false }, "checkVersion(baseUrl) asked the P3 server, not the page's origin");
  assert.equal(started.refused, 'lane_not_negotiated', 'isP3Error narrowed the SDK error');

  const other = await openSdkPage(browser, server.url, 'other');
  const { sessionId: otherId } = await connect(other, server.url, 'other-page', [1, 2], room);
  await page.evaluate(() => { for (let n = 0; n < 3; n += 1) window.app.send(`from vite ${n}`, n); });
  const got = await waitFor(() => other.evaluate(() => (window.inbox.length >= 3 ? window.inbox : null)), WAIT_MS, 'the other page to receive 3 messages');
  assert.deepEqual(got.map((m) => [m.from, m.value.text]), [0, 1, 2].map((n) => [started.sessionId, `from vite ${n}`]));

  await other.evaluate(() => window.client.send('Messaging', { text: 'to vite', n: 9 }));
  const back = await waitFor(() => page.evaluate(() => (window.app.inbox.length >= 1 ? window.app.inbox : null)), WAIT_MS, 'the app to receive a message');
  assert.deepEqual(back, [{ from: otherId, value: { text: 'to vite', n: 9 } }]);
  await other.evaluate(() => window.client.close());
  await other.close();
  await page.close();
}

test('the built app connects, joins and exchanges messages with another page and plays a music room in Chromium', async () => {
  await runApp(browser, 'vite-chromium');
});

// Firefox through the puppeteer-core adapter of the Firefox specs, where the tree has it; the
// page it talks with is Chromium's, so this is also a mixed-browser room.
test('the same in Firefox, with a Chromium page', { skip: !existsSync(FIREFOX_ADAPTER) && 'no tests/support/firefox.mjs' }, async () => {
  const { launchFirefox, FIREFOX_AUTOPLAY_PREFS } = await import(pathToFileURL(FIREFOX_ADAPTER).href);
  firefox = await launchFirefox({ prefs: FIREFOX_AUTOPLAY_PREFS });
  await runApp(firefox, 'vite-firefox');
});
