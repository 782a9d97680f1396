// Music sync end to end: three separate Chromium instances (plus a late joiner) follow one
// music room through server-stub with 50 ± 20 ms of artificial latency per frame and
// direction, each page's clocks skewed by up to ±2 s and ±40 ppm, through play, seek, pause,
// change-track, late join and handover. The scenario and what it checks:
// tests/support/music-sync.mjs. Figures: test-results/music-sync.json (`npm run bench`).

import { test } from 'node:test';
import { CHROMIUM_BOUNDS, runMusicSync } from './support/music-sync.mjs';
import { musicServerForSpec } from './support/music.mjs';

const spec = musicServerForSpec({ latencyMs: 50, jitterMs: 20 });

test('three browsers with skewed clocks over a 50 ± 20 ms link play in sync through play, seek, pause, change-track, late join and handover', { timeout: 300_000 }, async () => {
  await runMusicSync({ music: spec.music, browsers: spec.browsers, kinds: ['chromium', 'chromium', 'chromium'], name: 'Chromium', figuresName: 'music-sync', bounds: CHROMIUM_BOUNDS });
});
