// What `npm pack pkg` ships (issue 16, "Package"): README and LICENSE files, the Node.js and
// self-initialising entry variants with their declarations, no placeholder repository URL,
// `sideEffects` naming exactly the modules that run code on import, `ws` as an optional peer
// dependency; and Node.js resolves the package's `exports` to its Node.js entry. Needs pkg/
// (`node scripts/build-sdk.mjs`); no browser, no server.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const PKG = fileURLToPath(new URL('../pkg', import.meta.url));

test('npm pack ships README, licenses, every entry and its types; package.json has no placeholder', () => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--json', PKG], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const [{ files }] = JSON.parse(r.stdout);
  const packed = new Set(files.map((f) => f.path));
  for (const f of ['README.md', 'LICENSE-MIT', 'LICENSE-APACHE', 'package.json', 'p3_lanes.js', 'p3_lanes.d.ts',
    'p3_lanes_bg.wasm', 'p3_lanes.node.js', 'p3_lanes.node.d.ts', 'p3_lanes.auto.js', 'p3_lanes.auto.d.ts',
    'node-websocket.js', 'node-websocket.d.ts']) {
    assert.ok(packed.has(f), `npm pack ships ${f} (it ships: ${[...packed].join(', ')})`);
  }

  const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8'));
  assert.doesNotMatch(JSON.stringify(pkg), /example\.invalid/, 'no placeholder URL');
  assert.deepEqual(pkg.peerDependenciesMeta?.ws, { optional: true });
  assert.ok(pkg.peerDependencies?.ws);
  assert.ok(Array.isArray(pkg.sideEffects), 'sideEffects lists the modules with effects');
  for (const f of ['./p3_lanes.node.js', './p3_lanes.auto.js']) assert.ok(pkg.sideEffects.includes(f), `${f} runs code on import`);
  assert.ok(!pkg.sideEffects.includes('./p3_lanes.js'), 'the glue module is free of effects: bundlers may drop what is unused');

  // Every file the exports map names is in the package.
  const targets = [];
  const walk = (v) => (typeof v === 'string' ? targets.push(v) : Object.values(v).forEach(walk));
  walk(pkg.exports);
  for (const t of targets.filter((t) => !t.includes('*'))) assert.ok(packed.has(t.replace(/^\.\//, '')), `exports target ${t} is packed`);
  // Every declaration file starts with the lib reference it needs for Symbol.dispose.
  for (const f of [...packed].filter((f) => f.endsWith('.d.ts'))) {
    const text = readFileSync(join(PKG, f), 'utf8');
    if (text.includes('Symbol.dispose')) assert.match(text, /^\/\/\/ <reference lib="esnext.disposable" \/>/, f);
  }
});

test('Node.js resolves p3-lanes and p3-lanes/auto to the Node.js entry, and the wasm by name', () => {
  const app = mkdtempSync(join(tmpdir(), 'p3-lanes-resolve-'));
  try {
    mkdirSync(join(app, 'node_modules'));
    symlinkSync(PKG, join(app, 'node_modules', 'p3-lanes'), 'dir');
    const r = spawnSync(process.execPath, ['--input-type=module', '-e',
      "console.log(JSON.stringify(['p3-lanes', 'p3-lanes/auto', 'p3-lanes/p3_lanes_bg.wasm'].map((s) => import.meta.resolve(s))))"],
    { cwd: app, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const [main, auto, wasm] = JSON.parse(r.stdout).map((u) => fileURLToPath(u));
    assert.match(main, /p3_lanes\.node\.js$/);
    assert.match(auto, /p3_lanes\.node\.js$/);
    assert.match(wasm, /p3_lanes_bg\.wasm$/);
    assert.ok(existsSync(wasm));
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});
