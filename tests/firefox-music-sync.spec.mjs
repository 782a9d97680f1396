// Music sync with Firefox: pages A and B in Firefox, C (and the late joiner D) in Chromium,
// follow one music room through server-stub with 50 ± 20 ms of artificial latency per frame
// and direction, clocks skewed, through play, seek, pause, change-track, late join and
// handover. The scenario and what it checks: tests/support/music-sync.mjs. The summary prints
// the error against the room per browser and the spread between pages per pair of browsers
// (firefox/firefox, chromium/firefox); figures: test-results/music-sync-firefox.json.

import { test } from 'node:test';
import { runMusicSync } from './support/music-sync.mjs';
import { musicServerForSpec } from './support/music.mjs';

/**
 * Bounds for rooms with Firefox pages, ms: looser than Chromium's (CHROMIUM_BOUNDS) because
 * headless Firefox advances `audio.currentTime` in steps of about 40 ms (Chromium's about
 * 4 ms), so a single reading, which the follower and this test both take, is off by up to a
 * step. A single reading can be further off: the follower often corrects Firefox by seeking,
 * and a Firefox element stands still for its seek (about 145 ms here); on this 2-core machine
 * at load 16-18 single readings were 155 and 227 ms behind (2 runs in 5), hence `maxErrorMs`.
 * Tight enough to fail without clock sync (the pages' skews are 0.65-1.9 s) or without
 * correction (growing drift, caught by the p95 bounds); issue 16's target (p95 10 ms between
 * pages) is measured, not asserted, here. `clockErrorMs`: at load 14-17 the Chromium page's
 * estimate after its join burst was 24 and 16 ms off (uncertainty ±66 ms) in 2 runs of 4 of
 * this room, whose two Firefox processes starve its renderer; three Chromium pages keep 15.
 * @type {import('./support/music-sync.mjs').SyncBounds}
 */
const FIREFOX_BOUNDS = { maxErrorMs: 300, p95ErrorMs: 60, p95SpreadMs: 100, clockErrorMs: 30, lateJoinMs: 12_000 };

const spec = musicServerForSpec({ latencyMs: 50, jitterMs: 20 });

test('two Firefox pages and a Chromium page with skewed clocks over a 50 ± 20 ms link play in sync through play, seek, pause, change-track, late join and handover', { timeout: 300_000 }, async () => {
  await runMusicSync({ music: spec.music, browsers: spec.browsers, kinds: ['firefox', 'firefox', 'chromium'], name: 'Firefox and Chromium', figuresName: 'music-sync-firefox', bounds: FIREFOX_BOUNDS });
});
