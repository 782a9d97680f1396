// Headless Debian Chromium (/usr/bin/chromium) driven by playwright-core, or headless Debian
// Firefox ESR behind the same page API (tests/support/firefox.mjs), and a page that has the
// SDK loaded. Never `npx playwright install`: our machines cannot download browsers.

import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { launchFirefox } from './firefox.mjs';

/** Chromium binary; `scripts/setup.mjs --browser` installs it from Debian. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/**
 * Flags for running as root in a sandboxed machine with no outside network: without the
 * background-networking ones Chromium keeps trying (and failing) to reach Google's hosts.
 */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
];

const SDK_PAGE = readFileSync(new URL('../pages/sdk.html', import.meta.url), 'utf8');
const SDK_READY_TIMEOUT_MS = 30_000;

/** The browsers a spec can launch. @typedef {'chromium' | 'firefox'} BrowserKind */

/** @typedef {'lanes' | 'music' | 'pwa' | 'full'} SdkEntry */

/**
 * The URL path of an entry's module as server-stub serves pkg/ (layout: scripts/build-sdk.mjs).
 * @param {SdkEntry} entry
 */
export function sdkModule(entry) {
  if (!['lanes', 'music', 'pwa', 'full'].includes(entry)) throw new Error(`unknown SDK entry ${entry}`);
  return entry === 'full' ? '/pkg/p3_lanes.js' : `/pkg/${entry}/p3_lanes.js`;
}

/**
 * Launch one headless browser (a separate process with its own temporary profile).
 * @param {BrowserKind} [kind] `'chromium'` (Playwright) by default, or `'firefox'` (the adapter)
 * @returns {Promise<import('playwright-core').Browser>}
 */
export function launchBrowser(kind = 'chromium') {
  if (kind === 'firefox') return launchFirefox();
  if (kind !== 'chromium') throw new Error(`unknown browser '${kind}'`);
  return chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS });
}

/**
 * Open a page on the server's origin with tests/pages/sdk.html as its content, and wait until
 * `window.sdk` holds the initialised SDK module: the package entry `entry` (scripts/lib/bundle.mjs:
 * `lanes`, `music`, `pwa` or `full`), so a spec loads only the build it exercises.
 *
 * The page first loads a real server response (`/api/version`) and then has its content
 * replaced: a document Playwright fulfils from a route has no network address, so Chromium's
 * Local Network Access checks treat it as public and block its WebSocket to 127.0.0.1.
 * Page errors and console errors and warnings are printed to stderr, prefixed with `label`.
 * @param {import('playwright-core').Browser} browser
 * @param {string} serverUrl e.g. `http://127.0.0.1:41234`
 * @param {string} [label] name used in forwarded console output
 * @param {SdkEntry} [entry] which build of the SDK the page imports (default: everything)
 * @returns {Promise<import('playwright-core').Page>}
 */
export async function openSdkPage(browser, serverUrl, label = 'page', entry = 'full') {
  const page = await browser.newPage();
  page.on('console', (msg) => {
    const kind = msg.type();
    if ((kind === 'error' || kind === 'warning') && !msg.location().url.endsWith('/favicon.ico')) {
      console.error(`[${label} console.${kind}] ${msg.text()}`);
    }
  });
  page.on('pageerror', (err) => console.error(`[${label} pageerror] ${err.stack ?? err}`));

  await page.goto(`${serverUrl}/api/version`);
  await page.setContent(SDK_PAGE.replace('/pkg/p3_lanes.js', sdkModule(entry)));
  await page.waitForFunction(() => window.sdkReady || window.sdkError, null, { timeout: SDK_READY_TIMEOUT_MS });
  const error = await page.evaluate(() => window.sdkError);
  if (error) throw new Error(`SDK failed to load in ${label}: ${error}`);
  return page;
}

/**
 * Run `body(pageA, pageB)` with two separate headless Chromium browsers, each with one SDK
 * page (openSdkPage) on `serverUrl`, labelled A and B; both browsers are closed afterwards,
 * whether `body` succeeds or throws.
 * @template T
 * @param {string} serverUrl e.g. `http://127.0.0.1:41234`
 * @param {(pageA: import('playwright-core').Page, pageB: import('playwright-core').Page) => Promise<T>} body
 * @param {SdkEntry} [entry] as in openSdkPage
 * @returns {Promise<T>}
 */
export async function withTwoPages(serverUrl, body, entry = 'full') {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [pageA, pageB] = await Promise.all([
      openSdkPage(browsers[0], serverUrl, 'A', entry),
      openSdkPage(browsers[1], serverUrl, 'B', entry),
    ]);
    return await body(pageA, pageB);
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
  }
}
