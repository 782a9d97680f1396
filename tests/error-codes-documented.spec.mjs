// Every error `code` the SDK and server-stub can produce is documented, and nothing else is:
// the names of `core::error::ErrorCode` (the one mapping to the wire, the HTTP JSON `code` and
// the SDK's `err.code`), the TypeScript `ErrorCode` union in pkg/p3_lanes.d.ts and the list in
// PROTOCOL.md §7 must be the same set; and every code string written literally in the SDK's
// TypeScript declarations, the demo or server-stub must be one of them.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const read = (path) => readFileSync(join(ROOT, path), 'utf8');

/** The codes of `ErrorCode::as_str` in sdk/src/core/error.rs. */
function coreCodes() {
  const src = read('sdk/src/core/error.rs');
  const body = src.slice(src.indexOf('pub fn as_str'));
  return new Set([...body.slice(0, body.indexOf('\n    }\n')).matchAll(/ErrorCode::\w+ => "([a-z_]+)"/g)].map((m) => m[1]));
}

/** The string literals of `export type ErrorCode = ...;` in pkg/p3_lanes.d.ts. */
function tsCodes() {
  const dts = read('pkg/p3_lanes.d.ts');
  const start = dts.indexOf('export type ErrorCode');
  assert.ok(start >= 0, 'pkg/p3_lanes.d.ts declares ErrorCode (run `node scripts/build-sdk.mjs`)');
  const union = dts.slice(start, dts.indexOf(';', start));
  return new Set([...union.matchAll(/'([a-z_]+)'/g)].map((m) => m[1]));
}

/** The backticked names in PROTOCOL.md §7 before its close-code paragraph. */
function protocolCodes() {
  const md = read('PROTOCOL.md');
  const start = md.indexOf('\n## 7. Error codes');
  assert.ok(start >= 0, 'PROTOCOL.md has §7 Error codes');
  const section = md.slice(start, md.indexOf('WebSocket close codes', start));
  // `auth` and `auth_ok` name signaling messages in the text, not codes.
  return new Set([...section.matchAll(/`([a-z][a-z_]*)`/g)].map((m) => m[1]).filter((c) => !['auth', 'auth_ok', 'code'].includes(c)));
}

/** Every `*.rs`/`*.js` file below `dir`. */
function sources(dir) {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && /\.(rs|js)$/.test(e.name))
    .map((e) => join(e.parentPath ?? e.path, e.name));
}

const sorted = (set) => [...set].sort();

test('core ErrorCode, the TypeScript ErrorCode and PROTOCOL.md §7 list the same codes', () => {
  const core = coreCodes();
  assert.ok(core.size >= 30, `found ${core.size} codes in core::error`);
  assert.deepEqual(sorted(tsCodes()), sorted(core), 'TypeScript ErrorCode vs core::error');
  assert.deepEqual(sorted(protocolCodes()), sorted(core), 'PROTOCOL.md §7 vs core::error');
});

test('every code written literally in server-stub, the SDK and the demo is an ErrorCode', () => {
  const core = coreCodes();
  const files = [...sources('server-stub/src'), ...sources('sdk/src'), ...sources('www')];
  const found = [];
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    // JSON bodies and JS objects: "code":"x", code: 'x'; TS declarations: code: 'x' | 'y'.
    for (const m of text.matchAll(/"code"\s*:\s*"([a-z_]+)"|\bcode: ((?:'[a-z_]+'(?: \| )?)+)/g)) {
      const names = m[1] ? [m[1]] : [...m[2].matchAll(/'([a-z_]+)'/g)].map((x) => x[1]);
      for (const name of names) found.push({ name, file: file.slice(ROOT.length) });
    }
  }
  assert.ok(found.length > 5, `found ${found.length} literal codes`);
  const unknown = found.filter(({ name }) => !core.has(name));
  assert.deepEqual(unknown, [], 'literal codes that are not in core::error::ErrorCode');
});
