// Helpers for the PWA cache-protection end-to-end tests: a persistent Chromium or Firefox
// profile (so the service worker, Cache Storage, IndexedDB and localStorage survive reloads),
// the demo page served by a real server-stub, restarting that server with another app version
// on the same origin, readers for what the page, its caches and its registrations look like,
// and the version-purge scenario of tests/pwa-version-purge.spec.mjs and
// tests/firefox-pwa-version-purge.spec.mjs.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from './browser.mjs';
import { waitFor } from './client.mjs';
import { launchFirefox } from './firefox.mjs';
import { startServer } from './server.mjs';

/** Where a page keeps its log of loads and guard events (www/app.js). */
const PWA_LOG = 'p3demo.pwa-log';

/**
 * A headless Chromium (or Firefox, `browser: 'firefox'`) with its own temporary profile that
 * persists across reloads and restarts of the server (http://127.0.0.1 is a secure context,
 * so service workers work). Console errors and warnings of its pages (and, in Chromium, its
 * service workers) are printed to stderr.
 * @param {string} label
 * @param {import('./browser.mjs').BrowserKind} [browser]
 * @returns {Promise<{context: {newPage: () => Promise<import('playwright-core').Page>}, close: () => Promise<void>}>}
 */
export async function launchPwaBrowser(label, browser = 'chromium') {
  const dir = mkdtempSync(join(tmpdir(), 'p3-pwa-profile-'));
  const forward = (who) => (msg) => {
    const kind = msg.type();
    if (kind === 'error' || kind === 'warning') console.error(`[${label} ${who} console.${kind}] ${msg.text()}`);
  };
  const watch = (page) => {
    page.on('console', forward('page'));
    page.on('pageerror', (err) => console.error(`[${label} pageerror] ${err.stack ?? err}`));
    return page;
  };
  const cleanUp = () => rmSync(dir, { recursive: true, force: true });
  if (browser === 'firefox') {
    const firefox = await launchFirefox({ profileDir: dir });
    return {
      context: { newPage: async () => watch(await firefox.newPage()) },
      async close() {
        await firefox.close();
        cleanUp();
      },
    };
  }
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  context.on('page', watch);
  context.on('serviceworker', (worker) => worker.on?.('console', forward('sw')));
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      cleanUp();
    },
  };
}

/**
 * Start server-stub serving the demo with `appVersion` (and `--reported-version` if given).
 * @param {{appVersion: string, reportedVersion?: string, port?: number}} options
 */
export function startDemoServer({ appVersion, reportedVersion, port = 0 }) {
  const args = reportedVersion ? ['--reported-version', reportedVersion] : [];
  return startServer({ appVersion, port, args });
}

/**
 * Stop `server` and start a new one with `appVersion` on the same port (same origin for the
 * browser), as a deploy does. Returns the new server.
 * @param {import('./server.mjs').Server} server
 * @param {{appVersion: string, reportedVersion?: string}} options
 */
export async function redeploy(server, options) {
  await server.stop();
  for (let attempt = 1; ; attempt++) {
    try {
      return await startDemoServer({ ...options, port: server.port });
    } catch (err) {
      // Right after the stop the port can still be busy for a moment.
      if (attempt >= 10) throw err;
      await sleep(300);
    }
  }
}

/**
 * Poll `check` like waitFor (tests/support/client.mjs), but a page that is navigating (its
 * execution context destroyed under a `page.evaluate`) counts as "not yet": these tests wait
 * across reloads on purpose.
 * @template T
 * @param {() => Promise<T>} check
 * @param {number} timeoutMs
 * @param {() => string | Promise<string>} what
 */
export function waitUntil(check, timeoutMs, what) {
  const tolerant = async () => {
    try {
      return await check();
    } catch (err) {
      if (/Execution context was destroyed|navigat/i.test(String(err?.message))) return false;
      throw err;
    }
  };
  const describe = async () => {
    try {
      return await what();
    } catch (err) {
      return `(could not describe: ${err?.message})`;
    }
  };
  return waitFor(tolerant, timeoutMs, describe);
}

/**
 * Open the demo in a new tab and wait until its first version check has an outcome.
 * @param {import('playwright-core').BrowserContext} context
 * @param {string} url
 */
export async function openDemo(context, url) {
  const page = await context.newPage();
  await page.goto(url);
  await waitForCheck(page);
  return page;
}

/** Wait until the demo's load-time check in the current document has finished. */
export async function waitForCheck(page, timeoutMs = 20_000) {
  await page.waitForFunction(() => window.p3pwa && window.p3pwa.result !== null, null, { timeout: timeoutMs });
}

/**
 * This tab's log: `{type: 'load', version, controlled}` per page load and one entry per guard
 * event (`checked` with `status`, `purging` with `attempt`, `purged` with `caches`,
 * `reloading` with `purged`, `stale-after-purge` and `error` with `code`, `postponed`).
 * @param {import('playwright-core').Page} page
 * @returns {Promise<Array<Record<string, unknown>>>}
 */
export async function pwaLog(page) {
  return page.evaluate((key) => JSON.parse(sessionStorage.getItem(key) ?? '[]'), PWA_LOG);
}

/** Entries of `log` of one type. */
export function ofType(log, type) {
  return log.filter((e) => e.type === type);
}

/**
 * Wait until the page at `version` is up to date and controlled by an active service worker
 * registered for `version`, whose cache holds the 7 shell files (www/sw.js `SHELL`).
 */
export async function waitForServiceWorker(page, version, timeoutMs = 20_000) {
  await waitUntil(
    async () => {
      const state = await swState(page);
      return state.controlled && state.active.includes(`/sw.js?v=${version}`) && state.shell[`p3-shell-${version}`] === 7;
    },
    timeoutMs,
    async () => `service worker for ${version}: ${JSON.stringify(await swState(page))}`,
  );
}

/**
 * Registrations (active script URLs), whether the page is controlled, every cache name and,
 * for the shell caches, how many entries they hold.
 * @returns {Promise<{active: string[], registrations: number, controlled: boolean, caches: string[], shell: Record<string, number>}>}
 */
export async function swState(page) {
  return page.evaluate(async () => {
    const regs = await navigator.serviceWorker.getRegistrations();
    const caches_ = await caches.keys();
    const shell = {};
    for (const name of caches_.filter((n) => n.startsWith('p3-shell-'))) {
      // caches.has first: opening a cache that does not exist would create it.
      if (await caches.has(name)) shell[name] = (await (await caches.open(name)).keys()).length;
    }
    return {
      active: regs.map((r) => (r.active ?? r.waiting ?? r.installing)?.scriptURL ?? '').map((u) => u.replace(location.origin, '')),
      registrations: regs.length,
      controlled: Boolean(navigator.serviceWorker.controller),
      caches: caches_,
      shell,
    };
  });
}

/** The page's `<meta name="app-version">`. */
export function metaVersion(page) {
  return page.evaluate(() => document.querySelector('meta[name="app-version"]')?.content ?? null);
}

/**
 * Store app data the purge must not touch: a localStorage key, an IndexedDB record and a
 * cache that is not the app shell's.
 */
export function writeAppData(page) {
  return page.evaluate(async () => {
    localStorage.setItem('app.notes', 'keep me');
    await new Promise((resolve, reject) => {
      const open = indexedDB.open('app-db', 1);
      open.onupgradeneeded = () => open.result.createObjectStore('notes', { keyPath: 'id' });
      open.onerror = () => reject(open.error);
      open.onsuccess = () => {
        const tx = open.result.transaction('notes', 'readwrite');
        tx.objectStore('notes').put({ id: 1, text: 'keep me too' });
        tx.oncomplete = () => {
          open.result.close();
          resolve();
        };
        tx.onerror = () => reject(tx.error);
      };
    });
    const downloads = await caches.open('user-downloads');
    await downloads.put('/offline-track.json', new Response('{"track":1}'));
  });
}

/** Read back what writeAppData stored: `{local, idb, download}` (null where missing). */
export function readAppData(page) {
  return page.evaluate(async () => {
    const idb = await new Promise((resolve) => {
      const open = indexedDB.open('app-db', 1);
      open.onupgradeneeded = () => open.result.createObjectStore('notes', { keyPath: 'id' });
      open.onerror = () => resolve(null);
      open.onsuccess = () => {
        const get = open.result.transaction('notes').objectStore('notes').get(1);
        get.onsuccess = () => {
          open.result.close();
          resolve(get.result?.text ?? null);
        };
        get.onerror = () => resolve(null);
      };
    });
    const hit = (await caches.has('user-downloads')) ? await (await caches.open('user-downloads')).match('/offline-track.json') : null;
    return { local: localStorage.getItem('app.notes'), idb, download: hit ? await hit.text() : null };
  });
}

/** Count main-frame navigations (loads and reloads) of `page` from now on. */
export function countNavigations(page) {
  const counter = { count: 0 };
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) counter.count += 1;
  });
  return counter;
}

/** Wait until the demo's client is connected (so it can receive Control pushes). */
export function waitForConnected(page, timeoutMs = 20_000) {
  return page.waitForFunction(() => window.p3demo?.client?.state === 'open', null, { timeout: timeoutMs });
}

/** POST /api/admin/version from this (loopback) process. */
export async function setServerVersion(server, version) {
  const resp = await fetch(`${server.url}/api/admin/version`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminToken}` },
    body: JSON.stringify({ version }),
  });
  if (!resp.ok) throw new Error(`POST /api/admin/version: HTTP ${resp.status} ${await resp.text()}`);
  return resp.json();
}

/**
 * The version-purge scenario (tests/pwa-version-purge.spec.mjs): the demo is served at
 * version A, its service worker installs and caches the app shell, the app stores data in
 * IndexedDB, localStorage and a cache of its own. The server is redeployed at version B. On
 * reload the service worker serves the stale A page from its cache; the SDK's guard sees
 * /api/version say B, purges (unregisters the service worker, deletes the shell cache) and
 * reloads exactly once. The page then runs B, the old cache and registration are gone, the
 * app's data is intact, and nothing reloads again. The browser and server are closed at the
 * end.
 * @param {import('./browser.mjs').BrowserKind} browserKind
 */
export async function runVersionPurge(browserKind) {
  let server;
  let browser;
  try {
    server = await startDemoServer({ appVersion: 'A' });
    browser = await launchPwaBrowser(`purge ${browserKind}`, browserKind);
    const page = await openDemo(browser.context, server.url);
    assert.equal(await metaVersion(page), 'A');
    await waitForServiceWorker(page, 'A');
    await writeAppData(page);
    // The app's own connection would also learn of the deploy (a `version` event) and update
    // by itself; this test is about the reload, so it goes away first.
    await waitForConnected(page);
    await page.evaluate(() => window.p3demo.client.close());

    server = await redeploy(server, { appVersion: 'B' });
    const navigations = countNavigations(page);
    await page.reload();
    await waitUntil(
      async () => (await metaVersion(page)) === 'B' && ofType(await pwaLog(page), 'checked').some((e) => e.status === 'up-to-date'),
      30_000,
      async () => `the page to run B; log: ${JSON.stringify(await pwaLog(page))}`,
    );
    await waitForCheck(page);

    const log = await pwaLog(page);
    const loads = ofType(log, 'load').map((e) => `${e.version}${e.controlled ? ' (from the service worker)' : ''}`);
    assert.deepEqual(loads, ['A', 'A (from the service worker)', 'B'], JSON.stringify(log));
    assert.equal(ofType(log, 'purging').length, 1, 'exactly one purge');
    assert.deepEqual(ofType(log, 'purged')[0].caches, ['p3-shell-A'], 'only the shell cache was deleted');
    assert.deepEqual(ofType(log, 'reloading').map((e) => e.purged), [true], 'exactly one reload, by the tab that purged');
    assert.equal(ofType(log, 'stale-after-purge').length, 0);
    assert.equal(navigations.count, 2, 'the test reload and the one purge reload');

    // The new page registered a service worker for B; nothing of A is left.
    await waitForServiceWorker(page, 'B');
    const state = await swState(page);
    assert.deepEqual(state.active, ['/sw.js?v=B'], JSON.stringify(state));
    assert.ok(!state.caches.includes('p3-shell-A'), JSON.stringify(state));
    assert.deepEqual(await readAppData(page), { local: 'keep me', idb: 'keep me too', download: '{"track":1}' });

    // Settled: no further reload.
    await sleep(2_000);
    assert.equal(navigations.count, 2);
    assert.equal(ofType(await pwaLog(page), 'load').length, 3);
  } finally {
    await browser?.close();
    await server?.stop();
  }
}
