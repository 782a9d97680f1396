// BENCHMARKS.md is generated (issue 13, Deliver 4): it is exactly what scripts/lib/bench-report.mjs
// renders from bench-results.json, the machine-readable rows every bench writes. A hand edit of
// BENCHMARKS.md, or a results file committed without re-rendering (`node scripts/bench.mjs
// --render`), fails here. Needs no browser and no build.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { renderBenchmarksMd } from '../scripts/lib/bench-report.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

test('bench-results.json holds well-formed rows', () => {
  const rows = JSON.parse(readFileSync(join(ROOT, 'bench-results.json'), 'utf8'));
  assert.ok(Array.isArray(rows) && rows.length > 0, 'a non-empty array');
  const names = new Set();
  for (const row of rows) {
    assert.equal(typeof row.name, 'string', JSON.stringify(row));
    assert.match(row.name, /^[a-z][\w-]*\./, `a name with a prefix: ${row.name}`);
    assert.ok(!names.has(row.name), `name once: ${row.name}`);
    names.add(row.name);
    assert.ok(row.value === null || typeof row.value === 'number' || typeof row.value === 'string', row.name);
  }
});

test('BENCHMARKS.md is rendered from bench-results.json', () => {
  const rows = JSON.parse(readFileSync(join(ROOT, 'bench-results.json'), 'utf8'));
  const md = readFileSync(join(ROOT, 'BENCHMARKS.md'), 'utf8');
  assert.equal(md, renderBenchmarksMd(rows), 'run `node scripts/bench.mjs --render`');
});
