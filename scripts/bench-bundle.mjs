// Bundle sizes (issue 15, "Size targets"): what a page of each kind downloads from the SDK,
// the entry's wasm + JS glue (+ snippets), gzip -9 and brotli (quality 11), each file
// compressed on its own as a server sends it. Entries and budgets: scripts/lib/bundle.mjs;
// tests/bundle-size.spec.mjs enforces the budgets.
//
//   node scripts/bench-bundle.mjs              build pkg/ if stale, then measure
//   node scripts/bench-bundle.mjs --pkg DIR    measure the package in DIR (same layout) instead
//
// Replaces the `bundle.` entries of bench-results.json: per entry `bundle.<entry>.gzip` (ratio
// against the JS stack a web developer would pick instead, 58 KB min+gzip, the baseline the
// issue names; the target is in the baseline text) and `bundle.<entry>.brotli`.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildSdk } from './build-sdk.mjs';
import { ENTRIES, JS_STACK_GZIP, entrySize, kb } from './lib/bundle.mjs';
import { ROOT, runMain, step } from './lib/proc.mjs';

const RESULTS = join(ROOT, 'bench-results.json');
const PREFIX = 'bundle.';
const STACK = `JS stack (socket.io-client, simple-peer, msgpackr, workbox-window; min+gzip): ${kb(JS_STACK_GZIP)}`;

async function main() {
  const i = process.argv.indexOf('--pkg');
  const pkgDir = i > 0 ? process.argv[i + 1] : join(ROOT, 'pkg');
  if (i < 0) await buildSdk();
  /** @type {{name: string, value: number, unit: string, baseline: string, ratio: number}[]} */
  const rows = [];
  console.log(`\nbundle sizes of ${pkgDir} (wasm + JS glue; 1 KB = 1,000 bytes)`);
  console.log(`${'entry'.padEnd(16)}${'raw'.padStart(11)}${'gzip -9'.padStart(11)}${'brotli'.padStart(11)}${'target'.padStart(10)}${'budget'.padStart(10)}`);
  for (const entry of ENTRIES) {
    const s = entrySize(pkgDir, entry);
    const target = entry.target === null ? '—' : kb(entry.target);
    console.log(
      `${entry.specifier.padEnd(16)}${kb(s.raw).padStart(11)}${kb(s.gzip).padStart(11)}${kb(s.brotli).padStart(11)}${target.padStart(10)}${kb(entry.budget).padStart(10)}`,
    );
    const goal = entry.target === null ? '' : `; issue 15 target ${kb(entry.target)} gzip`;
    rows.push({
      name: `${PREFIX}${entry.name}.gzip`,
      value: s.gzip,
      unit: 'bytes',
      baseline: `${STACK}${goal}`,
      ratio: s.gzip / JS_STACK_GZIP,
    });
    rows.push({
      name: `${PREFIX}${entry.name}.brotli`,
      value: s.brotli,
      unit: 'bytes',
      baseline: STACK,
      ratio: s.brotli / JS_STACK_GZIP,
    });
  }
  let all = [];
  try {
    all = JSON.parse(readFileSync(RESULTS, 'utf8'));
  } catch {
    all = [];
  }
  all = all.filter((e) => !(typeof e.name === 'string' && e.name.startsWith(PREFIX))).concat(rows);
  writeFileSync(RESULTS, `${JSON.stringify(all, null, 2)}\n`);
  step(`bench bundle: ${rows.length} rows in bench-results.json`);
}

runMain(main);
