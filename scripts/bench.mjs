// Run the benchmarks. Each entry of BENCHES is one command: a cargo bench target (a `[[bench]]`
// of its crate) or a Node script; each bench replaces its own entries (names starting with its
// prefix) in its results file (see the bench's source).
// Then the browser figure of music sync: the three-browser end-to-end test
// (tests/music-sync-three-browsers.spec.mjs, real Chromium through server-stub with 50 ± 20 ms
// links and skewed clocks) is run and its figures are merged in as `sync.browser.*`; then the
// same with two Firefox pages and a Chromium page (tests/firefox-music-sync.spec.mjs) as
// `sync.browser.firefox.*`, against the Chromium figure of the same run (issue 16).
// Then the browser failover figures of issue #5 (scripts/lib/bench-failover.mjs): the four
// tests/music-failover-*.spec.mjs scenarios and tests/music-offline-reconcile.spec.mjs run in real Chromium and their figures are printed
// next to the simulation's `p2p.*` rows with the targets, as `p2p.browser.*`.
// Then the battery figures of issue 15 (scripts/lib/bench-battery.mjs, `battery.*`): renderer
// CPU of a 3-device music room with the mesh against without it, idle clients, bytes sent.
//
//   node scripts/bench.mjs                 everything
//   node scripts/bench.mjs --no-browser    only the cargo benches
//   node scripts/bench.mjs --failover      only the browser failover scenarios
//   node scripts/bench.mjs --battery       only the battery figures (~5 min)
//   node scripts/bench.mjs --sync          only music sync in real browsers, Chromium then Firefox (~5 min)
//   node scripts/bench.mjs --takeover      only a music room's takeover across nodes (~3 min)
//   node scripts/bench.mjs --socketio      only three nodes beside socket.io 4 on Redis (~5 min)
//   node scripts/bench.mjs --render        only BENCHMARKS.md from bench-results.json (alias --report)
//   node scripts/bench.mjs --only a,b      only the named BENCHES (no browser)
//
// bench-results.json (committed) holds every figure as {name, value, unit, baseline, ratio}; the
// benches write their rows into it, and every run ends by rendering BENCHMARKS.md from it
// (scripts/lib/bench-report.mjs; tests/benchmarks-generated.spec.mjs checks the two agree).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildSdk } from './build-sdk.mjs';
import { browserBattery } from './lib/bench-battery.mjs';
import { browserFailover } from './lib/bench-failover.mjs';
import { mergeResults, writeBenchmarksMd } from './lib/bench-report.mjs';
import { ROOT, run, runMain, step } from './lib/proc.mjs';
import { setup } from './setup.mjs';

/** @type {{name: string, cmd?: string, args: string[], results: string}[]} */
const BENCHES = [
  { name: 'codec', args: ['bench', '-p', 'p3-lanes', '--bench', 'codec'], results: 'bench-results.json' },
  { name: 'sync', args: ['bench', '-p', 'p3-lanes', '--bench', 'sync'], results: 'bench-results.json' },
  // Issue #5: failover after crash / silent loss / DJ leaving, mesh drift, changes lost (~1 min).
  { name: 'p2p', args: ['bench', '-p', 'p3-lanes', '--bench', 'p2p'], results: 'bench-results.json' },
  { name: 'mux', args: ['bench', '-p', 'p3-lanes', '--bench', 'mux'], results: 'bench-results.json' },
  // The wasm codec in Node.js against JSON, @msgpack/msgpack and msgpackr (builds pkg/ if stale).
  { name: 'codec-node', cmd: 'node', args: ['scripts/bench-codec-node.mjs'], results: 'bench-results.json' },
  // Issue 15: what each npm entry downloads, gzip -9 and brotli, beside the JS stack's 58 KB
  // (builds pkg/ if stale; the budgets are enforced by tests/bundle-size.spec.mjs).
  { name: 'bundle', cmd: 'node', args: ['scripts/bench-bundle.mjs'], results: 'bench-results.json' },
  // server-stub: 10,000 idle WebSocket sessions, memory per session, room fan-out (~1 min).
  { name: 'capacity', args: ['bench', '-p', 'server-stub', '--bench', 'capacity'], results: 'bench-results.json' },
  // Issue 11: delivery latency and sustainable rate, 20 rooms × 10, rate ladder, server-stub
  // beside socket.io 4 (scripts/lib/socketio-server.mjs), one load generator (~1 min).
  { name: 'load', args: ['bench', '-p', 'server-stub', '--bench', 'load'], results: 'bench-results.json' },
  // Issue 11: seven abusive clients, one at a time, while an honest client measures (~2 min).
  { name: 'abuse', args: ['bench', '-p', 'server-stub', '--bench', 'abuse'], results: 'bench-results.json' },
  // Issue 14: the load ladder on one node and on three nodes on one redis-server (~1 min).
  { name: 'cluster', args: ['bench', '-p', 'server-stub', '--bench', 'load', '--', '--cluster'], results: 'bench-results.json' },
  // Issue 14: three server-stub nodes beside three socket.io 4 nodes with
  // @socket.io/redis-adapter and with @socket.io/redis-streams-adapter (scripts/lib/
  // socketio-server.mjs), each on one redis-server, one load generator, ladder steps
  // interleaved; then what each loses across a redis-server SIGKILL and restart, 3 runs each (~5 min).
  { name: 'cluster-socketio', args: ['bench', '-p', 'server-stub', '--bench', 'load', '--', '--socketio'], results: 'bench-results.json' },
];

const RESULTS = join(ROOT, 'bench-results.json');
const REPORT = join(ROOT, 'BENCHMARKS.md');
const BROWSER_SPEC = join('tests', 'music-sync-three-browsers.spec.mjs');
const BROWSER_FIGURES = join(ROOT, 'test-results', 'music-sync.json');
const RENDER_ONLY = process.argv.includes('--render') || process.argv.includes('--report');

async function main() {
  if (RENDER_ONLY) {
    // Alone, a missing results file is an error: there is nothing to render.
    const n = writeBenchmarksMd(RESULTS, REPORT);
    step(`BENCHMARKS.md: ${n} entries from bench-results.json`);
    return;
  }
  try {
    await benches();
  } finally {
    writeReport();
  }
}

/** BENCHMARKS.md from whatever bench-results.json holds (nothing if there is no results file). */
function writeReport() {
  try {
    const n = writeBenchmarksMd(RESULTS, REPORT);
    step(`BENCHMARKS.md: ${n} entries from bench-results.json`);
  } catch (e) {
    if (e.code !== 'ENOENT') throw e;
  }
}

async function benches() {
  if (process.argv.includes('--failover')) {
    await prepareBrowser();
    await browserFailover(RESULTS);
    return;
  }
  if (process.argv.includes('--battery')) {
    await prepareBrowser();
    await browserBattery(RESULTS);
    return;
  }
  if (process.argv.includes('--sync')) {
    await browserSync();
    await browserSyncFirefox();
    return;
  }
  if (process.argv.includes('--takeover')) {
    await clusterTakeover();
    return;
  }
  const i = process.argv.indexOf('--only');
  const only = process.argv.includes('--socketio')
    ? ['cluster-socketio']
    : i >= 0
      ? (process.argv[i + 1] ?? '').split(',')
      : null;
  for (const bench of BENCHES) {
    if (only && !only.includes(bench.name)) continue;
    const cmd = bench.cmd ?? 'cargo';
    step(`bench ${bench.name}: ${cmd} ${bench.args.join(' ')}`);
    await run(cmd, bench.args);
    step(`bench ${bench.name}: results in ${bench.results}`);
  }
  if (!only && !process.argv.includes('--no-browser')) {
    await browserSync();
    await browserSyncFirefox();
    await browserFailover(RESULTS);
    await browserBattery(RESULTS);
    await clusterTakeover();
  }
}

/** What the browser benches need: Chromium, pkg/ and the release server-stub. */
async function prepareBrowser() {
  await setup({ browser: true });
  await buildSdk();
  await run('cargo', ['build', '--release', '-p', 'server-stub']);
}

/**
 * The music-sync figures in real Chromium: build what the e2e test needs, run it, and merge
 * its figures into bench-results.json as `sync.browser.*` (ratios against issue #4's
 * targets: p95 10 ms between devices, 1.5 s from join to in sync; and the raw clock skew).
 */
async function browserSync() {
  step(`bench sync.browser: ${BROWSER_SPEC}`);
  await prepareBrowser();
  await run(process.execPath, ['--test', BROWSER_SPEC]);
  const f = JSON.parse(readFileSync(BROWSER_FIGURES, 'utf8'));
  const target = (ms) => `issue #4 target: ${ms} ms`;
  const maxSkew = Math.max(...f.skewsMs.map(Math.abs));
  const ours = [
    ['drift_vs_room.p50', f.driftP50Ms, target(10), 10],
    ['drift_vs_room.p95', f.driftP95Ms, target(10), 10],
    ['drift_between_devices.p50', f.spreadP50Ms, target(10), 10],
    ['drift_between_devices.p95', f.spreadP95Ms, target(10), 10],
    ['join_to_in_sync', f.joinToSyncMs, target(1500), 1500],
    ['clock_offset_error.p95', f.clockErrorP95Ms, `unsynchronized clock skew: ${maxSkew} ms`, maxSkew],
  ].map(([name, value, baseline, base]) => ({ name: `sync.browser.${name}`, value, unit: 'ms', baseline, ratio: value / base }));
  // The Firefox rows (`sync.browser.firefox.*`) are this run's too: browserSyncFirefox follows.
  mergeResults(RESULTS, 'sync.browser.', ours);
  console.log(`\nmusic sync in Chromium (${f.links}; clocks skewed by ${f.skewsMs.join(', ')} ms):`);
  for (const e of ours) console.log(`  ${e.name.padEnd(42)} ${e.value.toFixed(2).padStart(9)} ms   (${e.baseline}, ratio ${e.ratio.toFixed(2)})`);
  step(`bench sync.browser: results in bench-results.json`);
}

/**
 * Music sync with Firefox (issue 16): tests/firefox-music-sync.spec.mjs (two Firefox pages, a
 * Chromium page and a Chromium late joiner), merged as `sync.browser.firefox.*`: the spread
 * between two pages, p95, per pair of browsers, each as a ratio against the spread between the
 * Chromium pages of the three-Chromium spec run just before (`sync.browser.*`, same bench run);
 * issue 16's target is 10 ms.
 */
async function browserSyncFirefox() {
  const spec = join('tests', 'firefox-music-sync.spec.mjs');
  step(`bench sync.browser.firefox: ${spec}`);
  await prepareBrowser();
  await run(process.execPath, ['--test', spec]);
  const f = JSON.parse(readFileSync(join(ROOT, 'test-results', 'music-sync-firefox.json'), 'utf8'));
  const chromium = JSON.parse(readFileSync(BROWSER_FIGURES, 'utf8'));
  const base = chromium.spreadP95Ms;
  const baseline = `three Chromium pages, same bench run: ${base.toFixed(2)} ms (issue 16 target: 10 ms)`;
  const pair = (key) => f.spreadByPair?.[key]?.p95Ms;
  const ours = [
    ['between_devices.firefox_firefox.p95', pair('firefox/firefox')],
    ['between_devices.chromium_firefox.p95', pair('chromium/firefox')],
    ['between_devices.all.p95', f.spreadP95Ms],
  ]
    .filter(([, value]) => typeof value === 'number')
    .map(([name, value]) => ({ name: `sync.browser.firefox.${name}`, value, unit: 'ms', baseline, ratio: value / base }));
  mergeResults(RESULTS, 'sync.browser.firefox.', ours);
  console.log('\nmusic sync with Firefox pages (spread between two pages, p95):');
  for (const e of ours) console.log(`  ${e.name.padEnd(52)} ${e.value.toFixed(2).padStart(9)} ms   (ratio ${e.ratio.toFixed(2)} to ${base.toFixed(2)} ms)`);
  step('bench sync.browser.firefox: results in bench-results.json');
}

/** Runs of tests/cluster-music.spec.mjs that `--takeover` takes its figures from. */
const TAKEOVER_RUNS = 5;

/**
 * A music room's takeover after its lease holder's SIGKILL (issue 14): three nodes, one Redis,
 * HAProxy, three Chromium pages (tests/cluster-music.spec.mjs), TAKEOVER_RUNS runs. Merged as
 * `cluster.takeover.*`: the time from the kill until Redis names a new holder, and until the
 * first page of a surviving node has the new epoch's state, p50 and p95 over the runs, each as
 * a ratio against issue 14's target (2 s).
 */
async function clusterTakeover() {
  const spec = join('tests', 'cluster-music.spec.mjs');
  step(`bench cluster.takeover: ${spec} × ${TAKEOVER_RUNS}`);
  await prepareBrowser();
  const lease = [];
  const state = [];
  for (let i = 0; i < TAKEOVER_RUNS; i++) {
    await run(process.execPath, ['--test', spec]);
    const f = JSON.parse(readFileSync(join(ROOT, 'test-results', 'cluster-music.json'), 'utf8'));
    lease.push(f.leaseTakeoverMs);
    const survivors = Object.entries(f.stateTakeoverMs).filter(([label]) => !f.victims.includes(label));
    state.push(Math.min(...survivors.map(([, ms]) => ms)));
  }
  const quantile = (xs, q) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
  };
  const baseline = `issue 14 target: 2000 ms (${TAKEOVER_RUNS} runs)`;
  const ours = [
    ['lease_moved.p50', quantile(lease, 0.5)],
    ['lease_moved.p95', quantile(lease, 0.95)],
    ['first_state.p50', quantile(state, 0.5)],
    ['first_state.p95', quantile(state, 0.95)],
  ].map(([name, value]) => ({ name: `cluster.takeover.${name}`, value, unit: 'ms', baseline, ratio: value / 2000 }));
  mergeResults(RESULTS, 'cluster.takeover.', ours);
  console.log(`\nmusic room takeover after SIGKILL of the lease holder (ms, ${TAKEOVER_RUNS} runs): lease ${lease.join(', ')}; first state ${state.join(', ')}`);
  for (const e of ours) console.log(`  ${e.name.padEnd(36)} ${e.value.toFixed(0).padStart(6)} ms   (ratio ${e.ratio.toFixed(2)} to 2000 ms)`);
  step('bench cluster.takeover: results in bench-results.json');
}

runMain(main);
