// The music-sync scenario of tests/music-sync-three-browsers.spec.mjs (three Chromium pages)
// and tests/firefox-music-sync.spec.mjs (Firefox and Chromium pages): three separate browsers
// (plus a late joiner) follow one music room through server-stub with 50 ± 20 ms of artificial
// latency per frame and direction (`--test-latency-ms 50 --test-jitter-ms 20`), each page's
// clocks skewed by up to ±2 s and ±40 ppm (tests/support/music.mjs). The DJ claims the room,
// changes track, plays, seeks, pauses, plays, changes track while playing; a fourth page
// joins mid-track (in the third browser); the DJ hands over and the new DJ seeks. Autoplay is
// allowed; audio is muted at the output.
//
// At common instants (sampleRound) every page's <audio> position (its currentTime read at a
// refresh edge, tests/pages/music.html `music.sample()`) is compared with the room
// state on the shared clock (the server's wall clock, which is also the machine's true clock)
// and with the other pages. Asserted, after each change has settled (2.5 s after it took
// effect), against the caller's `bounds`: every reading within `maxErrorMs` of the room, p95
// over all readings within `p95ErrorMs`, pairwise spread (max − min over the pages at one
// instant) p95 within `p95SpreadMs`. Also: each page's clock estimate after its join burst
// within `clockErrorMs` of the truth, despite the skew; a paused room is paused everywhere at
// its position; the late joiner is in sync (its own readings within 10 ms for 1 s) within
// `lateJoinMs` of its musicRoom() call (issue #4's target: 1.5 s); the old DJ's changes are
// refused with `not_controller`. Figures are printed, with the error against the room per
// browser kind and the spread per pair of kinds, and written to test-results/<figuresName>.json
// (`npm run bench` reads music-sync.json); every reading, split into the page's clock error
// and its follower's error (element − its own target), goes to <figuresName>-rounds.json, and
// with P3_MUSIC_CLOCKDUMP=1 each page's clock samples (the estimator's window) to
// <figuresName>-clock.json (diagnostics, PROTOCOL.md §12.8).

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from './client.mjs';
import { dj, launchMusicBrowser, openMusicPage, quantile, roomPosition, roomState, sampleRound, track } from './music.mjs';

const ROOM = 'e2e-music';
const PAGES = [
  { label: 'A', skewMs: 1800, driftPpm: 40 },
  { label: 'B', skewMs: -1900, driftPpm: -35 },
  { label: 'C', skewMs: 650, driftPpm: 10 },
];
const LATE = { label: 'D', skewMs: -700, driftPpm: 25 };

/** After a change takes effect, time allowed before its drift is measured, ms. */
const SETTLE_MS = 2500;
/** Sampling after each change: rounds and their spacing. */
const ROUNDS = 12;
const ROUND_EVERY_MS = 250;

/**
 * @typedef {object} SyncBounds what the scenario asserts, ms
 * @property {number} maxErrorMs every reading against the room
 * @property {number} p95ErrorMs p95 of all readings against the room
 * @property {number} p95SpreadMs p95 of the spread between the pages at one instant
 * @property {number} clockErrorMs each page's clock estimate after its join burst
 * @property {number} lateJoinMs from the late joiner's musicRoom() call to in sync
 */

/**
 * The bounds of the Chromium spec, ms. Issue #4's target is a p95 of 10 ms between devices; even on a heavily
 * loaded machine the figures printed are about p95 4-6 ms against the room and 4-10 ms
 * between pages (PROTOCOL.md §12.8). The bounds asserted leave room for a loaded CI machine
 * (three Chromium instances with audio on two shared cores delay timers and WebSocket
 * events) while still failing on any real regression (no clock sync: seconds off; no
 * correction: tens of ms and growing). `lateJoinMs` is not a speed target (issue #4's 1.5 s
 * is reported by `npm run bench` from this test's figures): a bound that only a joiner that
 * never converges exceeds, even on a loaded machine.
 * @type {SyncBounds}
 */
export const CHROMIUM_BOUNDS = { maxErrorMs: 40, p95ErrorMs: 15, p95SpreadMs: 25, clockErrorMs: 15, lateJoinMs: 12_000 };

/**
 * Run the scenario on `music` (a startMusicServer result) with pages A, B, C in browsers of
 * `kinds` (the late joiner D opens in C's browser); `browsers` collects the launched browsers
 * for the caller to close. Returns the printed summary.
 * @param {{music: {server: import('./server.mjs').Server}, browsers: object[], kinds: import('./browser.mjs').BrowserKind[], name: string, figuresName: string, bounds: SyncBounds}} options
 *   `name`: for the printed summary (`music sync in <name>`); `figuresName`: file names under test-results/
 */
export async function runMusicSync({ music, browsers, kinds, name, figuresName, bounds }) {
  const url = music.server.url;
  browsers.push(...(await Promise.all(kinds.map((browser) => launchMusicBrowser({ browser, autoplay: true })))));
  const pages = [];
  /** Each page's browser kind, by label. */
  const kindOf = new Map();
  for (const [i, p] of PAGES.entries()) {
    pages.push(await openMusicPage(browsers[i], url, { ...p, room: ROOM }));
    kindOf.set(p.label, kinds[i]);
  }
  const [a, b] = pages;

  // The skew is in force, and each page's estimate of the shared clock sees through it.
  const clockErrors = await Promise.all(pages.map(clockErrorAfterBurst));
  for (const [i, e] of clockErrors.entries()) {
    assert.ok(Math.abs(e.dateSkewMs - PAGES[i].skewMs) < 5, `${PAGES[i].label}: Date.now() skew ${e.dateSkewMs}`);
    assert.ok(Math.abs(e.errorMs) < bounds.clockErrorMs, `${PAGES[i].label}: clock error ${e.errorMs.toFixed(2)} ms (±${e.uncertaintyMs} ms)`);
  }

  const figures = { errors: [], spreads: [], clock: [], phases: {}, rounds: [], retakes: 0, clockNow: [], byKind: {}, pairs: {}, kindOf, maxErrorMs: bounds.maxErrorMs };

  // The DJ claims the room, loads track a and plays from 0.
  await dj(a, 'claimController');
  await dj(a, 'changeTrack', [track('a')]);
  let state = await dj(a, 'play', [0]);
  await measure('play', pages, state, figures);

  state = await dj(a, 'seek', [70]);
  await measure('seek', pages, state, figures);

  // Pause: everyone stops at the room's position.
  state = await dj(a, 'pause');
  await settle(state, 600);
  const paused = await sampleRound(pages);
  for (const r of paused.readings) {
    assert.ok(r.paused, `${r.label} should be paused`);
    assert.ok(Math.abs(r.position - state.position) * 1000 < 5, `${r.label} paused at ${r.position}, room at ${state.position}`);
  }

  state = await dj(a, 'play');
  await measure('play-after-pause', pages, state, figures);

  // A track change while playing.
  state = await dj(a, 'changeTrack', [track('b'), 10]);
  await measure('change-track', pages, state, figures, (r) => {
    assert.equal(r.trackId, track('b').id, `${r.label} on track b`);
    assert.ok(r.raw.src.endsWith(`/media/${track('b').id}`), `${r.label} src ${r.raw.src}`);
  });

  // A late joiner mid-track, in a fourth page (of browser C). Join to in sync: from its
  // musicRoom() call until its own drift readings stay within 10 ms for 1 s.
  const late = await openMusicPage(browsers[2], url, { ...LATE, room: ROOM });
  kindOf.set(LATE.label, kinds[2]);
  pages.push(late);
  // Poll its drift log until a 1 s window in sync appears (bounded by LATE_JOIN_MS).
  let joinToSyncMs = Infinity;
  const lateDeadline = Date.now() + bounds.lateJoinMs + 1500;
  while (!Number.isFinite(joinToSyncMs) && Date.now() < lateDeadline) {
    await sleep(500);
    joinToSyncMs = await late.page.evaluate(() => {
      const drift = window.music.log.filter((e) => e.type === 'drift');
      for (const [i, d] of drift.entries()) {
        const window1s = drift.slice(i).filter((e) => e.trueMs <= d.trueMs + 1000);
        const spans = window1s.at(-1).trueMs - d.trueMs >= 900;
        if (spans && window1s.every((e) => Math.abs(e.errorMs) <= 10)) return d.trueMs - window.music.startedTrueMs;
      }
      return Infinity;
    });
  }
  await sleep(SETTLE_MS);
  assert.ok(joinToSyncMs < bounds.lateJoinMs, `late joiner in sync after ${joinToSyncMs.toFixed(0)} ms`);
  await measure('late-join', pages, await roomState(late), figures, undefined, 0);

  // Handover to B; the old DJ is refused; B seeks.
  state = await dj(a, 'handover', [b.sessionId]);
  assert.equal(state.controllerId, b.sessionId);
  await assert.rejects(dj(a, 'pause'), (err) => err.code === 'not_controller');
  state = await dj(b, 'seek', [30]);
  await measure('handover-seek', pages, state, figures);

  const summary = {
    links: '50 ± 20 ms per frame and direction',
    skewsMs: [...PAGES, LATE].map((p) => p.skewMs),
    clockErrorAfterBurstMs: clockErrors.map((e) => round(e.errorMs)),
    driftP50Ms: round(quantile(figures.errors, 0.5)),
    driftP95Ms: round(quantile(figures.errors, 0.95)),
    driftMaxMs: round(quantile(figures.errors, 1)),
    spreadP50Ms: round(quantile(figures.spreads, 0.5)),
    spreadP95Ms: round(quantile(figures.spreads, 0.95)),
    clockErrorP50Ms: round(quantile(figures.clock, 0.5)),
    clockErrorP95Ms: round(quantile(figures.clock, 0.95)),
    clockErrorByPhase: figures.clockNow,
    joinToSyncMs: round(joinToSyncMs),
    readings: figures.errors.length,
    retakenRounds: figures.retakes,
    phases: figures.phases,
    // Per browser kind (error against the room) and per pair of kinds (spread between two pages).
    driftByBrowser: quantiles(figures.byKind),
    spreadByPair: quantiles(figures.pairs),
  };
  console.log(`music sync in ${name}: ${JSON.stringify(summary, null, 2)}`);
  mkdirSync('test-results', { recursive: true });
  writeFileSync(`test-results/${figuresName}.json`, `${JSON.stringify(summary, null, 2)}\n`);
  writeFileSync(`test-results/${figuresName}-rounds.json`, `${JSON.stringify(figures.rounds)}\n`);
  if (process.env.P3_MUSIC_CLOCKDUMP) {
    const dump = await Promise.all(pages.map((mp, i) => mp.page.evaluate(() => ({
      trueNow: window.__p3True.now(),
      localNow: performance.now(),
      driftPpm: window.__p3True.driftPpm,
      samples: window.music.room.clockSamples(),
      clockErrorMs: window.music.room.serverNow() - window.__p3True.now(),
    })).then((d) => ({ label: mp.label, ...d }))));
    writeFileSync(`test-results/${figuresName}-clock.json`, `${JSON.stringify(dump)}\n`);
  }

  assert.ok(summary.driftP95Ms <= bounds.p95ErrorMs, `p95 |error| ${summary.driftP95Ms} ms`);
  assert.ok(summary.spreadP95Ms <= bounds.p95SpreadMs, `p95 spread ${summary.spreadP95Ms} ms`);
  return summary;
}

/**
 * Wait until `state` has been in force for `extraMs` (its referenceTime is on the shared
 * clock, which is this machine's clock).
 */
async function settle(state, extraMs) {
  const wait = state.referenceTime + extraMs - Date.now();
  if (wait > 0) await sleep(wait);
}

/**
 * After `state` settled, sample every page ROUNDS times; every reading must be playing on the
 * room's track within MAX_ERROR_MS of the room. Errors and spreads go into `figures`.
 */
async function measure(phase, pages, state, figures, check, settleMs = SETTLE_MS) {
  try {
    await measureOrThrow(phase, pages, state, figures, check, settleMs);
    if (process.env.P3_MUSIC_DEBUG === phase) await dumpLogs(pages, state);
  } catch (err) {
    await dumpLogs(pages, state);
    throw err;
  }
}

/** Prints each page's drift samples and events since 1 s before `state` took effect, the last 150 (on failure). */
export async function dumpLogs(pages, state) {
  console.error(`room state: ${JSON.stringify(state)}`);
  for (const mp of pages) {
    const from = state.referenceTime - 1000;
    const log = await mp.page.evaluate((from) => window.music.log.filter((e) => e.trueMs >= from).slice(-150), from).catch(() => []);
    const lat = await mp.page.evaluate(() => window.music.room.latencies).catch(() => null);
    console.error(`--- ${mp.label} (latencies ${JSON.stringify(lat)})`);
    for (const e of log) {
      const t = (e.trueMs - state.referenceTime).toFixed(1);
      if (e.type === 'drift') console.error(`  ${t} drift ${e.errorMs.toFixed(2)} rate ${e.rate.toFixed(4)} ${e.correction}`);
      else console.error(`  ${t} ${e.type} ${JSON.stringify({ ...e, type: undefined, trueMs: undefined })}`);
    }
  }
}

async function measureOrThrow(phase, pages, state, figures, check, settleMs) {
  await settle(state, settleMs);
  const errors = [];
  for (let i = 0; i < ROUNDS; i++) {
    const { atMs, retakes, readings } = await sampleRound(pages);
    figures.retakes += retakes;
    const truth = roomPosition(state, atMs);
    const positions = [];
    for (const r of readings) {
      check?.(r);
      assert.equal(r.trackId, state.trackId, `${phase}: ${r.label} track`);
      assert.ok(!r.paused, `${phase}: ${r.label} should play (status ${r.status})`);
      const err = (r.position - truth) * 1000;
      assert.ok(Math.abs(err) <= figures.maxErrorMs, `${phase}: ${r.label} is ${err.toFixed(1)} ms off the room (status ${r.status}, rate ${r.rate})`);
      errors.push(Math.abs(err));
      positions.push(r.position);
      push(figures.byKind, figures.kindOf.get(r.label), Math.abs(err));
    }
    figures.spreads.push((Math.max(...positions) - Math.min(...positions)) * 1000);
    for (const [i, x] of readings.entries()) {
      for (const y of readings.slice(i + 1)) {
        const pair = [figures.kindOf.get(x.label), figures.kindOf.get(y.label)].sort().join('/');
        push(figures.pairs, pair, Math.abs(x.position - y.position) * 1000);
      }
    }
    figures.rounds.push({
      phase,
      atMs,
      readings: readings.map((r) => ({
        label: r.label,
        errorMs: (r.position - truth) * 1000,
        clockErrorMs: r.raw.clockErrorMs,
        followErrorMs: (r.raw.position - r.raw.target) * 1000 + (r.raw.targetTrueMs - r.raw.trueMs) * r.rate,
        readSpanMs: r.raw.readSpanMs,
        rate: r.rate,
        status: r.status,
        skewMs: r.raw.trueMs - atMs,
      })),
    });
    for (const r of readings) figures.clock.push(Math.abs(r.raw.clockErrorMs));
    if (i === 0) figures.clockNow.push(readings.map((r) => `${r.label} ${r.raw.clockErrorMs.toFixed(1)}`).join(', '));
    await sleep(ROUND_EVERY_MS);
  }
  figures.errors.push(...errors);
  figures.phases[phase] = { p50Ms: round(quantile(errors, 0.5)), p95Ms: round(quantile(errors, 0.95)), maxMs: round(quantile(errors, 1)) };
}

/**
 * Once the page's clock burst is over: its Date.now() skew and the error of its shared-clock
 * estimate against the true clock, ms.
 */
async function clockErrorAfterBurst(mp) {
  await waitFor(
    () => mp.page.evaluate(() => window.music.room.clock.synced && window.music.room.clock.samples >= 10),
    15_000,
    () => `${mp.label}: clock burst`,
  );
  return mp.page.evaluate(() => {
    const trueMs = window.__p3True.now();
    const estimate = window.music.room.serverNow();
    const clock = window.music.room.clock;
    return { dateSkewMs: Date.now() - trueMs, errorMs: estimate - trueMs, uncertaintyMs: clock.uncertaintyMs };
  });
}

function round(x) {
  return Math.round(x * 100) / 100;
}

/** Append `value` to the list `lists[key]`. */
function push(lists, key, value) {
  (lists[key] ??= []).push(value);
}

/** `{p50Ms, p95Ms, maxMs, n}` of each list in `lists`. */
function quantiles(lists) {
  return Object.fromEntries(Object.entries(lists).map(([key, v]) => [
    key,
    { p50Ms: round(quantile(v, 0.5)), p95Ms: round(quantile(v, 0.95)), maxMs: round(quantile(v, 1)), n: v.length },
  ]));
}
