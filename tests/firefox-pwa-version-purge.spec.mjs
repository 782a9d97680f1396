// PWA cache protection in Firefox, with a real service worker: a stale page served by the
// service worker after a deploy is purged and reloaded exactly once, and the app's data
// survives. The scenario: runVersionPurge in tests/support/pwa.mjs.

import { test } from 'node:test';
import { runVersionPurge } from './support/pwa.mjs';

test('Firefox: a stale cached page is purged and reloaded exactly once; app data survives', { timeout: 120_000 }, async () => {
  await runVersionPurge('firefox');
});
