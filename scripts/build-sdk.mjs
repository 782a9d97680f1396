// Build the SDK to WebAssembly in pkg/ (git-ignored), then optimise the .wasm with binaryen.
//
//   node scripts/build-sdk.mjs           skip when pkg/ is newer than sdk/, Cargo.lock, Cargo.toml
//   node scripts/build-sdk.mjs --force   always rebuild
//
// wasm-pack cannot download binaryen here, so sdk/Cargo.toml turns its wasm-opt step off and
// we run wasm-opt from npm's `binaryen` package instead (a devDependency). Then
// scripts/lib/package-extras.mjs adds what the npm package needs beyond wasm-pack's output.

import { existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { finishPackage } from './lib/package-extras.mjs';
import { ROOT, isMain, run, runMain, step } from './lib/proc.mjs';

const PKG_DIR = join(ROOT, 'pkg');
const WASM_FILE = join(PKG_DIR, 'p3_lanes_bg.wasm');
const JS_FILE = join(PKG_DIR, 'p3_lanes.js');
const WASM_OPT = join(ROOT, 'node_modules', '.bin', 'wasm-opt');

/** Inputs whose change makes pkg/ stale: every file under these, plus these files. */
const INPUT_DIRS = [join(ROOT, 'sdk')];
const INPUT_FILES = [join(ROOT, 'Cargo.lock'), join(ROOT, 'Cargo.toml')];

/**
 * Build pkg/ with wasm-pack (release, `--target web`) and optimise it, unless it is fresh.
 * @param {{force?: boolean}} [options] `force`: rebuild even when pkg/ looks fresh
 */
export async function buildSdk({ force = false } = {}) {
  if (!force && pkgIsFresh()) {
    step('pkg/ is newer than sdk/ and Cargo.lock: skipping the wasm build');
    finishPackage(PKG_DIR);
    return;
  }
  step('wasm-pack build sdk --target web --release');
  await run('wasm-pack', [
    'build', 'sdk',
    '--target', 'web',
    '--release',
    '--out-dir', '../pkg',
    '--out-name', 'p3_lanes',
  ]);
  await optimizeWasm();
  finishPackage(PKG_DIR);
}

/**
 * Run `wasm-opt -O3` over pkg/p3_lanes_bg.wasm in place. A failure only costs size and speed,
 * so it is reported and the unoptimised module is kept.
 */
async function optimizeWasm() {
  if (!existsSync(WASM_OPT)) {
    step('wasm-opt: node_modules/.bin/wasm-opt missing (run `npm ci`); keeping the unoptimised wasm');
    return;
  }
  const before = statSync(WASM_FILE).size;
  const tmp = `${WASM_FILE}.opt`;
  step('wasm-opt -O3 pkg/p3_lanes_bg.wasm');
  try {
    await run(WASM_OPT, ['-O3', WASM_FILE, '-o', tmp]);
    renameSync(tmp, WASM_FILE);
    step(`wasm-opt: ${kib(before)} -> ${kib(statSync(WASM_FILE).size)}`);
  } catch (err) {
    rmSync(tmp, { force: true });
    step(`wasm-opt: ${err.message}; keeping the unoptimised wasm`);
  }
}

/** True when both pkg outputs exist and are newer than every build input. */
function pkgIsFresh() {
  if (!existsSync(WASM_FILE) || !existsSync(JS_FILE)) return false;
  const built = Math.min(statSync(WASM_FILE).mtimeMs, statSync(JS_FILE).mtimeMs);
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

/** @param {number} bytes */
function kib(bytes) {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

if (isMain(import.meta.url)) {
  runMain(() => buildSdk({ force: process.argv.includes('--force') }));
}
