// Build the SDK to WebAssembly in pkg/ (git-ignored): one wasm build per npm entry point, each
// of a Cargo feature set of the one SDK crate (scripts/lib/bundle.mjs `ENTRIES`, DESIGN.md
// "Entry points by feature"), then optimise each .wasm with binaryen, and write the package's
// package.json with its `exports` map:
//
//   pkg/                 `p3-lanes/full` (everything; what /pkg/p3_lanes.js serves)
//   pkg/lanes/           `p3-lanes`       (the client: handshake, lanes, codec, mux, SSE)
//   pkg/music/           `p3-lanes/music` (the client + music rooms, peer mesh, calls, offline queue)
//   pkg/pwa/             `p3-lanes/pwa`   (checkVersion, CacheGuard)
//
//   node scripts/build-sdk.mjs           skip when pkg/ is newer than sdk/, Cargo.lock, Cargo.toml
//   node scripts/build-sdk.mjs --force   always rebuild
//   node scripts/build-sdk.mjs --force --only pwa,lanes   rebuild these entries, reuse the others'
//                                        last builds (target/sdk-entries/)
//
// Each entry: `cargo rustc --crate-type cdylib` with its profile of Cargo.toml (`wasm-size`, or
// `wasm-tiny` for the PWA entry: scripts/lib/bundle.mjs; native builds and benches keep
// `release`; cdylib alone so that its `lto` applies),
// then `wasm-bindgen --target web` (the CLI must match the crate's pinned wasm-bindgen), then
// wasm-opt from npm's `binaryen` package (a devDependency), -Oz and -Os, keeping whichever
// gzips smaller. (`wasm-pack build` would build the manifest's cdylib + rlib, without LTO.)
// Then scripts/lib/package-extras.mjs adds what the npm package needs beyond the builds
// (exports conditions, the Node.js and self-initialising variants, README, LICENSE).

import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ENTRIES, entrySize, gzipBytes, kb } from './lib/bundle.mjs';
import { finishPackage } from './lib/package-extras.mjs';
import { ROOT, isMain, run, runMain, step } from './lib/proc.mjs';

const PKG_DIR = join(ROOT, 'pkg');
const STAGE_DIR = join(ROOT, 'target', 'sdk-entries');
/** Where Cargo writes its builds (`CARGO_TARGET_DIR`, as tests/support/server.mjs reads it). */
const CARGO_TARGET = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');
const WASM_OPT = join(ROOT, 'node_modules', '.bin', 'wasm-opt');
/** What each entry folder holds (wasm-bindgen's output for `--out-name p3_lanes`). */
const OUTPUTS = ['p3_lanes.js', 'p3_lanes.d.ts', 'p3_lanes_bg.wasm', 'p3_lanes_bg.wasm.d.ts'];

/** Inputs whose change makes pkg/ stale: every file under these, plus these files. */
const INPUT_DIRS = [join(ROOT, 'sdk')];
const INPUT_FILES = [
  join(ROOT, 'Cargo.lock'),
  join(ROOT, 'Cargo.toml'),
  join(ROOT, 'scripts', 'build-sdk.mjs'),
  join(ROOT, 'scripts', 'lib', 'bundle.mjs'),
  join(ROOT, 'scripts', 'lib', 'package-extras.mjs'),
];

/**
 * Build every entry into pkg/ (release, `--target web`) and optimise it, unless pkg/ is fresh.
 * @param {{force?: boolean, only?: string[] | null}} [options] `force`: rebuild even when pkg/
 *   looks fresh; `only`: build just these entries when the others have a staged build
 */
export async function buildSdk({ force = false, only = null } = {}) {
  if (!force && pkgIsFresh()) {
    step('pkg/ is newer than sdk/ and Cargo.lock: skipping the wasm build');
    finishPackage(PKG_DIR);
    return;
  }
  // Each entry's wasm-opt runs while Cargo builds the next entry.
  const optimizing = [];
  for (const entry of ENTRIES) {
    const out = join(STAGE_DIR, entry.name);
    if (only && !only.includes(entry.name) && existsSync(join(out, 'p3_lanes_bg.wasm'))) continue;
    rmSync(out, { recursive: true, force: true });
    step(`cargo rustc --crate-type cdylib --profile ${entry.profile} --features ${entry.features} (entry ${entry.specifier})`);
    await run('cargo', [
      'rustc', '-p', 'p3-lanes', '--lib',
      // cdylib alone: with the manifest's `rlib` beside it Cargo would skip LTO.
      '--crate-type', 'cdylib',
      '--target', 'wasm32-unknown-unknown',
      '--profile', entry.profile,
      '--no-default-features', '--features', entry.features,
    ]);
    step(`wasm-bindgen --target web (entry ${entry.specifier})`);
    await run('wasm-bindgen', [
      '--target', 'web',
      '--out-dir', out,
      '--out-name', 'p3_lanes',
      join(CARGO_TARGET, 'wasm32-unknown-unknown', entry.profile, 'p3_lanes.wasm'),
    ]);
    optimizing.push(optimizeWasm(join(out, 'p3_lanes_bg.wasm')));
  }
  await Promise.all(optimizing);
  assemble();
  finishPackage(PKG_DIR);
  for (const entry of ENTRIES) {
    const s = entrySize(PKG_DIR, entry);
    step(`${entry.specifier.padEnd(15)} wasm + JS: ${kb(s.gzip)} gzip -9, ${kb(s.brotli)} brotli (${kb(s.raw)} raw)`);
  }
}

/** pkg/ from the staged builds: each entry in its folder, then package.json. */
function assemble() {
  rmSync(PKG_DIR, { recursive: true, force: true });
  for (const entry of ENTRIES) {
    const from = join(STAGE_DIR, entry.name);
    const to = join(PKG_DIR, entry.dir);
    mkdirSync(to, { recursive: true });
    for (const file of OUTPUTS) copyFileSync(join(from, file), join(to, file));
    if (existsSync(join(from, 'snippets'))) cpSync(join(from, 'snippets'), join(to, 'snippets'), { recursive: true });
  }
  writeFileSync(join(PKG_DIR, 'package.json'), `${JSON.stringify(packageJson(), null, 2)}\n`);
}

/**
 * The npm package: `p3-lanes` (an ES module) whose `exports` offer one specifier per entry,
 * each with its types; `main`/`types` are the lanes entry's for tools that predate `exports`.
 */
function packageJson() {
  const cargo = readFileSync(join(ROOT, 'Cargo.toml'), 'utf8');
  const version = /^version = "([^"]+)"/m.exec(cargo)?.[1] ?? '0.0.0';
  const license = /^license = "([^"]+)"/m.exec(cargo)?.[1];
  const path = (entry, file) => (entry.dir === '.' ? file : `${entry.dir}/${file}`);
  const lanes = ENTRIES.find((e) => e.name === 'lanes');
  /** @type {Record<string, unknown>} */
  const exports = {};
  for (const entry of ENTRIES) {
    const key = entry.specifier === 'p3-lanes' ? '.' : `./${entry.specifier.slice('p3-lanes/'.length)}`;
    exports[key] = { types: `./${path(entry, 'p3_lanes.d.ts')}`, default: `./${path(entry, 'p3_lanes.js')}` };
  }
  exports['./package.json'] = './package.json';
  return {
    name: 'p3-lanes',
    type: 'module',
    version,
    description:
      'P3 Protocol real-time layer for the browser (Rust/WebAssembly): one entry per use, each with its own wasm: ' +
      ENTRIES.map((e) => `${e.specifier} (${e.contains})`).join('; '),
    ...(license ? { license } : {}),
    main: path(lanes, 'p3_lanes.js'),
    types: path(lanes, 'p3_lanes.d.ts'),
    exports,
    files: ENTRIES.flatMap((e) => [...OUTPUTS.map((f) => path(e, f)), path(e, 'snippets/')]),
    sideEffects: ENTRIES.map((e) => `./${path(e, 'snippets/*')}`),
  };
}

/**
 * Run `wasm-opt -Oz` and `-Os` over `wasm` and keep the output that gzips smaller, in place.
 * A failure only costs size, so it is reported and the unoptimised module is kept.
 * @param {string} wasm
 */
async function optimizeWasm(wasm) {
  if (!existsSync(WASM_OPT)) {
    step('wasm-opt: node_modules/.bin/wasm-opt missing (run `npm ci`); keeping the unoptimised wasm');
    return;
  }
  const before = statSync(wasm).size;
  /** @type {{level: string, file: string, gzip: number}[]} */
  const tried = [];
  for (const level of ['-Oz', '-Os']) {
    const file = `${wasm}${level}`;
    try {
      await run(WASM_OPT, [level, '--strip-debug', '--strip-producers', wasm, '-o', file]);
      tried.push({ level, file, gzip: gzipBytes(readFileSync(file)) });
    } catch (err) {
      rmSync(file, { force: true });
      step(`wasm-opt ${level}: ${err.message}`);
    }
  }
  if (tried.length === 0) {
    step('wasm-opt failed: keeping the unoptimised wasm');
    return;
  }
  tried.sort((a, b) => a.gzip - b.gzip);
  renameSync(tried[0].file, wasm);
  for (const t of tried.slice(1)) rmSync(t.file, { force: true });
  step(
    `wasm-opt ${tried[0].level} (${tried.map((t) => `${t.level}: ${kb(t.gzip)} gzip`).join(', ')}): ` +
      `${kb(before)} -> ${kb(statSync(wasm).size)}`,
  );
}

/** True when every entry's outputs and package.json exist and are newer than every build input. */
function pkgIsFresh() {
  const outputs = [
    join(PKG_DIR, 'package.json'),
    ...ENTRIES.flatMap((e) => OUTPUTS.map((f) => join(PKG_DIR, e.dir, f))),
  ];
  if (!outputs.every(existsSync)) return false;
  const built = Math.min(...outputs.map((f) => statSync(f).mtimeMs));
  const inputs = [...INPUT_FILES.filter(existsSync), ...INPUT_DIRS.flatMap(filesUnder)];
  return inputs.every((file) => statSync(file).mtimeMs < built);
}

/**
 * Every regular file below `dir`, recursively.
 * @param {string} dir
 * @returns {string[]}
 */
function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return filesUnder(path);
    return entry.isFile() ? [path] : [];
  });
}

if (isMain(import.meta.url)) {
  const i = process.argv.indexOf('--only');
  const only = i > 0 ? (process.argv[i + 1] ?? '').split(',') : null;
  runMain(() => buildSdk({ force: process.argv.includes('--force'), only }));
}
