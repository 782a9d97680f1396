// `checkVersion` and `CacheGuard` take the server's base URL like `P3Client.connect` (issue 16):
// an app served from one origin (server A, version 1.0.0) whose P3 server is another (server B,
// version 2.0.0) finds B's version with `checkVersion(B.url, options)`, where the old
// `checkVersion(options)` shape keeps asking the page's own origin. Both shapes run in one real
// Chromium page against two real server-stubs; `beforePurge` answers `false`, so a stale check
// ends `postponed` and nothing is purged or reloaded.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { startServer } from './support/server.mjs';

let app;
let api;
let browser;
before(async () => {
  [app, api] = await Promise.all([startServer({ appVersion: '1.0.0' }), startServer({ appVersion: '2.0.0' })]);
  browser = await launchBrowser();
});
after(async () => {
  await browser?.close();
  await Promise.all([app?.stop(), api?.stop()]);
});

test('checkVersion(baseUrl) and new CacheGuard(baseUrl) ask that server; checkVersion(options) the page origin', async () => {
  const page = await openSdkPage(browser, app.url, 'app');
  const out = await page.evaluate(async (apiUrl) => {
    const { checkVersion, CacheGuard } = window.sdk;
    const options = { currentVersion: '1.0.0', beforePurge: () => false, recheckOnVisible: false };
    const settle = (p) => p.then((value) => ({ value }), (err) => ({ code: err.code, name: err.name }));
    const viaBase = await settle(checkVersion(apiUrl, options));
    const own = await settle(checkVersion(options));
    const guard = new CacheGuard(`${apiUrl}/`, { ...options, storageKey: 'p3-test-guard' });
    const viaGuard = await settle(guard.check());
    guard.stop();
    const explicitPath = await settle(checkVersion(apiUrl, { ...options, versionUrl: '/api/version' }));
    const badBase = await settle(checkVersion('ftp://example.com', options));
    const badFirst = await settle(checkVersion(42, options));
    return { viaBase, own, viaGuard, explicitPath, badBase, badFirst };
  }, api.url);

  const postponed = { value: { status: 'postponed', pageVersion: '1.0.0', serverVersion: '2.0.0' } };
  assert.deepEqual(out.viaBase, postponed, 'checkVersion(baseUrl, options) compares with the server at baseUrl');
  assert.deepEqual(out.viaGuard, postponed, 'new CacheGuard(baseUrl, options) too (a trailing / is fine)');
  assert.deepEqual(out.explicitPath, postponed, "a versionUrl starting with '/' is appended to baseUrl");
  assert.equal(out.own.value?.status, 'up-to-date', 'checkVersion(options) still asks the page origin');
  assert.equal(out.own.value?.version, '1.0.0');
  assert.deepEqual(out.badBase, { code: 'invalid_argument', name: 'P3Error' });
  assert.deepEqual(out.badFirst, { code: 'invalid_argument', name: 'P3Error' });
  await page.close();
});
