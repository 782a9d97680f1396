// The whole test suite, in layers from cheapest to most expensive. The first failing layer
// stops the run; a summary of every layer is printed at the end. Exit code 0 only if all pass.
//
//   setup         scripts/setup.mjs --browser (toolchain, npm deps, Chromium, Firefox, drivers)
//   fmt           cargo fmt --all -- --check
//   clippy        cargo clippy, native (all targets) and wasm32 (each entry's features, and
//                 the wasm-bindgen test crates),
//                 warnings denied
//   unit          cargo test --workspace
//   wasm          build pkg/ (every npm entry) and server-stub, then wasm-pack test in headless
//                 Chromium, once per npm entry with its features only, against a live
//                 server-stub whose URL the tests read at compile time (P3_SERVER_URL)
//   wasm-firefox  the same tests in headless Firefox ESR (through geckodriver), once, with
//                 every feature (the full entry)
//   e2e           node --test tests/*.spec.mjs but tests/firefox-*.spec.mjs (Playwright-driven
//                 Chromium against server-stub)
//   e2e-firefox   node --test tests/firefox-*.spec.mjs (Firefox, alone and with Chromium,
//                 through tests/support/firefox.mjs)
//
//   node scripts/test.mjs                  every layer (what `npm test` and CI run)
//   node scripts/test.mjs wasm e2e         only the named layers, in the order above

import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startServer } from '../tests/support/server.mjs';
import { buildSdk } from './build-sdk.mjs';
import { ENTRIES } from './lib/bundle.mjs';
import { ROOT, run, runMain } from './lib/proc.mjs';
import { geckodriverPath, setup } from './setup.mjs';

const CHROMEDRIVER = '/usr/bin/chromedriver';
/** The end-to-end specs of the Firefox layer: tests/firefox-*.spec.mjs. */
const FIREFOX_SPEC = /^firefox-.*\.spec\.mjs$/;

/** @type {{name: string, title: string, run: () => Promise<void>}[]} */
const LAYERS = [
  { name: 'setup', title: 'Set-up (toolchain, npm deps, Chromium, Firefox, redis-server, haproxy)', run: () => setup({ browser: true }) },
  { name: 'fmt', title: 'Formatting (cargo fmt --check)', run: () => cargo('fmt', '--all', '--', '--check') },
  { name: 'clippy', title: 'Lints (cargo clippy, native and wasm32)', run: clippy },
  { name: 'unit', title: 'Unit and integration tests (cargo test)', run: () => cargo('test', '--workspace') },
  { name: 'wasm', title: 'WebAssembly tests in headless Chromium (wasm-pack test)', run: () => wasmBrowserTests('chrome') },
  { name: 'wasm-firefox', title: 'WebAssembly tests in headless Firefox (wasm-pack test)', run: () => wasmBrowserTests('firefox') },
  { name: 'e2e', title: 'End-to-end tests in Chromium (node --test tests/*.spec.mjs)', run: () => endToEnd((file) => !FIREFOX_SPEC.test(file)) },
  { name: 'e2e-firefox', title: 'End-to-end tests with Firefox (node --test tests/firefox-*.spec.mjs)', run: () => endToEnd((file) => FIREFOX_SPEC.test(file)) },
];

/**
 * Run the layers named on the command line (all when none), in order; stop at the first
 * failure, print the summary, set the exit code.
 */
async function main() {
  const names = process.argv.slice(2);
  const unknown = names.filter((name) => !LAYERS.some((layer) => layer.name === name));
  if (unknown.length > 0) {
    throw new Error(`unknown layer ${unknown.join(', ')}; layers: ${LAYERS.map((l) => l.name).join(', ')}`);
  }
  const selected = names.length > 0 ? LAYERS.filter((layer) => names.includes(layer.name)) : LAYERS;
  const results = [];
  for (const layer of selected) {
    console.log(`\n======== ${layer.title} ========`);
    const started = Date.now();
    try {
      await layer.run();
      results.push({ name: layer.name, status: 'ok', ms: Date.now() - started });
    } catch (err) {
      console.error(`\n${layer.name} FAILED: ${err.message}`);
      results.push({ name: layer.name, status: 'FAILED', ms: Date.now() - started });
      break;
    }
  }
  printSummary(selected, results);
  if (results.some((r) => r.status !== 'ok')) process.exitCode = 1;
}

/**
 * Clippy on every native target, then on the SDK for wasm32 (its browser-only code): every
 * feature, then each feature set an npm entry is built from (scripts/lib/bundle.mjs).
 */
async function clippy() {
  await cargo('clippy', '--workspace', '--all-targets', '--', '-D', 'warnings');
  await cargo('clippy', '-p', 'p3-lanes', '--target', 'wasm32-unknown-unknown', '--', '-D', 'warnings');
  for (const entry of ENTRIES.filter((e) => e.features !== 'full')) {
    await cargo('clippy', '-p', 'p3-lanes', '--lib', '--target', 'wasm32-unknown-unknown', '--no-default-features',
      '--features', entry.features, '--', '-D', 'warnings');
  }
  // The wasm-bindgen test crates with every feature, so that a test broken by an API change
  // fails here rather than after the `wasm` layer's builds. They read the server's URL at
  // compile time (`env!`); nothing runs, so any URL compiles them.
  await run('cargo', ['clippy', '-p', 'p3-lanes', '--tests', '--target', 'wasm32-unknown-unknown', '--', '-D', 'warnings'],
    { env: { P3_SERVER_URL: 'http://127.0.0.1:9' } });
}

/**
 * Build pkg/ and server-stub, start server-stub on a free port, run the SDK's wasm-bindgen
 * tests in headless Chromium through ChromeDriver, once per npm entry with that entry's Cargo
 * features only (scripts/lib/bundle.mjs; each test file is gated by the feature of the entry it
 * tests, so a build of `lanes` or `pwa` alone runs its own tests), or in headless Firefox
 * through geckodriver once with every feature (browser options: sdk/webdriver.json), stop.
 * @param {'chrome' | 'firefox'} browser
 */
async function wasmBrowserTests(browser) {
  await buildSdk();
  await buildServer();
  const driver = browser === 'chrome' ? ['--chromedriver', CHROMEDRIVER] : ['--geckodriver', geckodriver()];
  const server = await startServer();
  console.log(`server-stub for wasm tests at ${server.url}`);
  try {
    // Chromium: every entry's features alone; Firefox: the full build (all tests) once.
    const runs = browser === 'chrome' ? ENTRIES : ENTRIES.filter((e) => e.name === 'full');
    for (const entry of runs) {
      console.log(`wasm-bindgen tests of ${entry.specifier} in ${browser} (features: ${entry.features})`);
      await run(
        'wasm-pack',
        // After the crate's path, options go to `cargo test` (after `--`, to the test runner).
        ['test', '--headless', `--${browser}`, ...driver, 'sdk', '--no-default-features', '--features', entry.features],
        { env: { P3_SERVER_URL: server.url, CHROMEDRIVER, WASM_BINDGEN_TEST_TIMEOUT: '120' } },
      );
    }
  } finally {
    await server.stop();
  }
}

/** geckodriver's path (scripts/setup.mjs builds it), or an error saying how to get it. */
function geckodriver() {
  const path = geckodriverPath();
  if (!path) throw new Error('geckodriver not found: run `node scripts/setup.mjs --browser`');
  return path;
}

/**
 * Run the tests/*.spec.mjs whose file name passes `select`, one file at a time (each starts
 * its own server and browsers).
 * @param {(file: string) => boolean} select
 */
async function endToEnd(select) {
  await buildSdk();
  await buildServer();
  const specs = readdirSync(join(ROOT, 'tests'))
    .filter((file) => file.endsWith('.spec.mjs') && select(file))
    .sort()
    .map((file) => join('tests', file));
  if (specs.length === 0) throw new Error('no spec selected in tests/');
  await run(process.execPath, ['--test', '--test-concurrency=1', ...specs]);
}

/** `cargo build --release -p server-stub` (a no-op when up to date). */
function buildServer() {
  return cargo('build', '--release', '-p', 'server-stub');
}

/** @param {...string} args */
function cargo(...args) {
  return run('cargo', args);
}

/**
 * Print one line per selected layer: ok / FAILED / skipped, with its duration.
 * @param {{name: string}[]} selected
 * @param {{name: string, status: string, ms: number}[]} results
 */
function printSummary(selected, results) {
  console.log('\n======== Summary ========');
  for (const layer of selected) {
    const result = results.find((r) => r.name === layer.name);
    const status = result?.status ?? 'skipped';
    const time = result ? `${(result.ms / 1000).toFixed(1)} s` : '';
    console.log(`  ${layer.name.padEnd(13)} ${status.padEnd(8)} ${time}`);
  }
}

runMain(main);
