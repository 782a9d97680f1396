// Headless Debian Firefox ESR (/usr/bin/firefox-esr) for the end-to-end specs, driven by
// puppeteer-core over WebDriver BiDi, behind the subset of Playwright's Browser and Page API
// the specs and their helpers use (newPage, evaluate, waitForFunction, goto, setContent,
// reload, addInitScript, on('console' | 'pageerror' | 'framenavigated'), mainFrame, close).
// A spec written against Playwright's Chromium then runs unchanged in Firefox. Playwright
// itself drives only its own patched Firefox builds, which our machines cannot download
// (DESIGN.md, "Firefox in the end-to-end tests").

import puppeteer from 'puppeteer-core';

/** Firefox binary; `scripts/setup.mjs --browser` installs Debian's `firefox-esr`. */
export const FIREFOX_PATH = process.env.FIREFOX_PATH ?? '/usr/bin/firefox-esr';

/**
 * Preferences every test Firefox gets, on top of puppeteer's (no updates, no telemetry, no
 * safe browsing): no captive-portal or connectivity probes either (our machines have no
 * outside network; Chromium gets `--disable-background-networking` for the same reason).
 */
export const FIREFOX_PREFS = {
  'network.captive-portal-service.enabled': false,
  'network.connectivity-service.enabled': false,
};

/** Preferences that let `<audio>.play()` run without a user gesture (Chromium: `--autoplay-policy=no-user-gesture-required`). */
export const FIREFOX_AUTOPLAY_PREFS = {
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
};

/**
 * Launch one headless Firefox (its own process and profile).
 * @param {{prefs?: Record<string, string | number | boolean>, profileDir?: string}} [options]
 *   `prefs`: more preferences; `profileDir`: a profile kept after close (persistent storage,
 *   service workers), a fresh temporary one when omitted
 * @returns {Promise<FirefoxBrowser>}
 */
export async function launchFirefox({ prefs = {}, profileDir } = {}) {
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX_PATH,
    headless: true,
    userDataDir: profileDir,
    extraPrefsFirefox: { ...FIREFOX_PREFS, ...prefs },
  });
  return new FirefoxBrowser(browser);
}

/** A launched Firefox, shaped like Playwright's `Browser` (and `BrowserContext`: `newPage`, `close`). */
export class FirefoxBrowser {
  /** @param {import('puppeteer-core').Browser} browser */
  constructor(browser) {
    this.puppeteer = browser;
  }

  /** Which browser this is, for labels: `'firefox'`. */
  get kind() {
    return 'firefox';
  }

  /** A new tab. */
  async newPage() {
    return new FirefoxPage(await this.puppeteer.newPage());
  }

  /** Close the browser; a second call, or one after Firefox died, resolves too. */
  async close() {
    await this.puppeteer.close().catch(() => {});
  }
}

/**
 * One tab, shaped like Playwright's `Page` for what the specs call. Arguments follow
 * Playwright's order (`waitForFunction(fn, arg, {timeout})`), values cross as puppeteer
 * serializes them (JSON-like, as with Playwright). One difference: Firefox's remote agent
 * retries a command whose document went away, so an `evaluate` still pending when the page
 * navigates may run again in the new document (up to 10 times) before it fails; keep
 * evaluates that span a navigation free of side effects (reads), as the PWA helpers' are.
 */
export class FirefoxPage {
  /** @param {import('puppeteer-core').Page} page */
  constructor(page) {
    this.puppeteer = page;
  }

  /**
   * Run `fn(arg)` in the page and return its (awaited) result.
   * @template T, A
   * @param {(arg: A) => T | Promise<T>} fn
   * @param {A} [arg]
   * @returns {Promise<T>}
   */
  async evaluate(fn, arg) {
    try {
      return await this.puppeteer.evaluate(fn, arg);
    } catch (err) {
      throw playwrightNavigationError(err);
    }
  }

  /**
   * Poll `fn(arg)` in the page every 100 ms until it is truthy.
   * @param {(arg: unknown) => unknown} fn
   * @param {unknown} [arg]
   * @param {{timeout?: number}} [options] ms, 30 000 by default (Playwright's default)
   */
  async waitForFunction(fn, arg, { timeout = 30_000 } = {}) {
    await this.puppeteer.waitForFunction(fn, { timeout, polling: 100 }, arg);
  }

  /** Navigate and wait for the `load` event. @param {string} url */
  async goto(url) {
    await this.puppeteer.goto(url);
  }

  /** Reload and wait for the `load` event. */
  async reload() {
    await this.puppeteer.reload();
  }

  /** Replace the document with `html` (keeps the origin) and wait for `load`. @param {string} html */
  async setContent(html) {
    await this.puppeteer.setContent(html);
  }

  /**
   * Run `fn(arg)` in every document this page loads from now on, before its own scripts.
   * @param {(arg: unknown) => void} fn
   * @param {unknown} [arg]
   */
  async addInitScript(fn, arg) {
    await this.puppeteer.evaluateOnNewDocument(fn, arg);
  }

  /** The top-level frame (compare with the frame `framenavigated` handlers get). */
  mainFrame() {
    return this.puppeteer.mainFrame();
  }

  /**
   * Listen to `console` (messages whose `type()` uses Playwright's names: `warning`, not
   * `warn`), `pageerror` (an Error) or `framenavigated` (a frame).
   * @param {'console' | 'pageerror' | 'framenavigated'} event
   * @param {(value: any) => void} handler
   */
  on(event, handler) {
    if (event === 'console') {
      this.puppeteer.on('console', (msg) => handler(playwrightConsoleMessage(msg)));
    } else if (event === 'pageerror' || event === 'framenavigated') {
      this.puppeteer.on(event, handler);
    } else {
      throw new Error(`FirefoxPage.on('${event}') is not supported by the adapter`);
    }
    return this;
  }

  /** Close the tab. */
  async close() {
    await this.puppeteer.close();
  }
}

/**
 * @param {import('puppeteer-core').ConsoleMessage} msg
 * @returns {{type: () => string, text: () => string, location: () => {url?: string}}}
 */
function playwrightConsoleMessage(msg) {
  return {
    type: () => (msg.type() === 'warn' ? 'warning' : msg.type()),
    text: () => msg.text(),
    location: () => msg.location(),
  };
}

/**
 * An evaluate that failed because its document went away (`no such frame`, a discarded
 * browsing context) as Playwright words it, so helpers that wait across reloads on purpose
 * (waitUntil in tests/support/pwa.mjs) recognise it; any other error unchanged.
 * @param {unknown} err
 */
function playwrightNavigationError(err) {
  const message = String(err?.message ?? err);
  if (!/no such frame|DiscardedBrowsingContext|context.*(destroyed|discarded)/i.test(message)) return err;
  return new Error(`Execution context was destroyed, most likely because of a navigation (${message.split('\n')[0]})`, { cause: err });
}
