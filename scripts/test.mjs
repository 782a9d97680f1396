// The whole test suite, in layers from cheapest to most expensive. The first failing layer
// stops the run; a summary of every layer is printed at the end. Exit code 0 only if all pass.
//
//   setup    scripts/setup.mjs --browser
//   fmt      cargo fmt --all -- --check
//   clippy   cargo clippy, native (all targets) and wasm32, warnings denied
//   unit     cargo test --workspace
//   wasm     build pkg/ and server-stub, then wasm-pack test in headless Chromium against a
//            live server-stub whose URL the tests read at compile time (P3_SERVER_URL)
//   e2e      node --test tests/*.spec.mjs (Playwright-driven Chromium against server-stub)
//
//   node scripts/test.mjs              every layer (what `npm test` and CI run)
//   node scripts/test.mjs wasm e2e     only the named layers, in the order above

import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startServer } from '../tests/support/server.mjs';
import { buildSdk } from './build-sdk.mjs';
import { ROOT, run, runMain } from './lib/proc.mjs';
import { setup } from './setup.mjs';

const CHROMEDRIVER = '/usr/bin/chromedriver';

/** @type {{name: string, title: string, run: () => Promise<void>}[]} */
const LAYERS = [
  { name: 'setup', title: 'Set-up (toolchain, npm deps, Chromium, redis-server, haproxy)', run: () => setup({ browser: true }) },
  { name: 'fmt', title: 'Formatting (cargo fmt --check)', run: () => cargo('fmt', '--all', '--', '--check') },
  { name: 'clippy', title: 'Lints (cargo clippy, native and wasm32)', run: clippy },
  { name: 'unit', title: 'Unit and integration tests (cargo test)', run: () => cargo('test', '--workspace') },
  { name: 'wasm', title: 'WebAssembly tests in headless Chromium (wasm-pack test)', run: wasmBrowserTests },
  { name: 'e2e', title: 'End-to-end tests (node --test tests/*.spec.mjs)', run: endToEnd },
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

/** Clippy on every native target, then on the SDK for wasm32 (its browser-only code). */
async function clippy() {
  await cargo('clippy', '--workspace', '--all-targets', '--', '-D', 'warnings');
  await cargo('clippy', '-p', 'p3-lanes', '--target', 'wasm32-unknown-unknown', '--', '-D', 'warnings');
}

/**
 * Build pkg/ and server-stub, start server-stub on a free port, run the SDK's wasm-bindgen
 * tests in headless Chromium through ChromeDriver (browser flags: sdk/webdriver.json), stop.
 */
async function wasmBrowserTests() {
  await buildSdk();
  await buildServer();
  const server = await startServer();
  console.log(`server-stub for wasm tests at ${server.url}`);
  try {
    await run('wasm-pack', ['test', '--headless', '--chrome', '--chromedriver', CHROMEDRIVER, 'sdk'], {
      env: { P3_SERVER_URL: server.url, CHROMEDRIVER, WASM_BINDGEN_TEST_TIMEOUT: '120' },
    });
  } finally {
    await server.stop();
  }
}

/** Run every tests/*.spec.mjs, one file at a time (each starts its own server and browsers). */
async function endToEnd() {
  await buildSdk();
  await buildServer();
  const specs = readdirSync(join(ROOT, 'tests'))
    .filter((file) => file.endsWith('.spec.mjs'))
    .sort()
    .map((file) => join('tests', file));
  if (specs.length === 0) throw new Error('no tests/*.spec.mjs found');
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
    console.log(`  ${layer.name.padEnd(8)} ${status.padEnd(8)} ${time}`);
  }
}

runMain(main);
