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
 * Bounds for rooms with Firefox pages, ms. Headless Firefox refreshes `audio.currentTime`
 * about every 40 ms (Chromium within a few ms): the page reads it at a refresh edge
 * (tests/pages/music.html `music.sample()`), and the SDK does the same before it decides a
 * correction (PROTOCOL.md §12.5.2). Measured on a busy 2-core machine: p95 spread (all pages
 * at one instant) 7-10 ms in most runs, 22 ms in one where a Firefox element jumped 20 ms ahead
 * under load (issue 16's target, 10 ms between two pages, is a bench row,
 * `sync.browser.firefox.*`). The bounds leave room for a loaded CI machine (two Firefox
 * processes starve the Chromium renderer) while failing without edge readings (p95 spread
 * 47 ms), without clock sync (the skews are 0.65-1.9 s) or without correction.
 * `clockErrorMs`: at load 14-17 the Chromium page's estimate after its join burst was 24 and
 * 16 ms off (uncertainty ±66 ms) in 2 runs of 4 of this room; three Chromium pages keep 15.
 * @type {import('./support/music-sync.mjs').SyncBounds}
 */
const FIREFOX_BOUNDS = { maxErrorMs: 120, p95ErrorMs: 20, p95SpreadMs: 30, clockErrorMs: 30, lateJoinMs: 12_000 };

const spec = musicServerForSpec({ latencyMs: 50, jitterMs: 20 });

test('two Firefox pages and a Chromium page with skewed clocks over a 50 ± 20 ms link play in sync through play, seek, pause, change-track, late join and handover', { timeout: 300_000 }, async () => {
  await runMusicSync({ music: spec.music, browsers: spec.browsers, kinds: ['firefox', 'firefox', 'chromium'], name: 'Firefox and Chromium', figuresName: 'music-sync-firefox', bounds: FIREFOX_BOUNDS });
});
