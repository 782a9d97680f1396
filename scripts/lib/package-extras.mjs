// What the npm package in pkg/ needs beyond wasm-pack's output (issue 16, "Package"):
//
// - declarations that compile under `tsc --strict --skipLibCheck false`: wasm-bindgen gives every
//   class `[Symbol.dispose](): void` without referencing the `esnext.disposable` lib that
//   declares `Symbol.dispose`, so each generated `.d.ts` that uses it gets the reference;
// - per entry `<stem>.js` (wasm-pack's glue): a Node.js variant `<stem>.node.js` that loads the
//   wasm from the file system and provides a `WebSocket` (sdk/npm/node-websocket.js), and a
//   self-initialising variant `<stem>.auto.js` (top-level `await init()`), each with its `.d.ts`;
// - README.md and the LICENSE files; no `repository` (the project has no public one yet);
//   `sideEffects` naming the modules that run code on import; `ws` as an optional peer
//   dependency (the Node.js entry's WebSocket on Node.js 20).
//
// `finishPackage(pkgDir)` runs after every build (scripts/build-sdk.mjs); it is idempotent.
// The subpaths of the `exports` map are scripts/build-sdk.mjs's business when it builds several
// entries; `finishPackage` then gives each of them its `node`, `browser` and `/auto` conditions
// (`entryExports`), and writes the map itself for a single build.

import { copyFileSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { ROOT } from './proc.mjs';

/** The reference that declares `Symbol.dispose` (TypeScript ≥ 5.2). */
const DISPOSABLE_REF = '/// <reference lib="esnext.disposable" />';

/** Hand-written modules of the package, copied as they are. */
const NPM_SRC = join(ROOT, 'sdk', 'npm');
const STATIC_FILES = ['node-websocket.js', 'node-websocket.d.ts'];
/** Files of the repository root that go into the package. */
const ROOT_FILES = ['LICENSE-MIT', 'LICENSE-APACHE'];

/**
 * Complete pkg/ after wasm-pack: declarations, entry variants, files, package.json fields.
 * @param {string} pkgDir
 * @param {{stems?: string[]}} [options] `stems`: the glue modules (`<stem>.js`, `<stem>_bg.wasm`,
 *   paths relative to `pkgDir`, e.g. `'p3_lanes'`, `'music/p3_lanes_music'`) to give Node.js and
 *   self-initialising variants; default: every `*_bg.wasm` under `pkgDir` with its glue
 */
export function finishPackage(pkgDir, { stems = findStems(pkgDir) } = {}) {
  for (const file of filesUnder(pkgDir)) {
    if (file.endsWith('.d.ts')) referenceDisposable(file);
  }
  for (const file of STATIC_FILES) copyFileSync(join(NPM_SRC, file), join(pkgDir, file));
  copyFileSync(join(NPM_SRC, 'README.md'), join(pkgDir, 'README.md'));
  for (const file of ROOT_FILES) copyFileSync(join(ROOT, file), join(pkgDir, file));
  const written = [...STATIC_FILES, 'README.md', ...ROOT_FILES];
  for (const stem of stems) written.push(...writeEntryVariants(pkgDir, stem));
  patchPackageJson(pkgDir, stems, written);
}

/**
 * This file's part of the `exports` map for entry `stem` at subpath `subpath` ('.', './music'):
 * the entry itself with a `node` condition, and its self-initialising `/auto` variant.
 * @param {string} stem e.g. 'p3_lanes'
 * @param {string} [subpath] e.g. '.'
 */
export function entryExports(stem, subpath = '.') {
  const node = { types: `./${stem}.node.d.ts`, default: `./${stem}.node.js` };
  const auto = subpath === '.' ? './auto' : `${subpath}/auto`;
  return {
    [subpath]: { types: `./${stem}.d.ts`, node, browser: `./${stem}.js`, default: `./${stem}.js` },
    [auto]: { types: `./${stem}.auto.d.ts`, node, default: `./${stem}.auto.js` },
  };
}

/** @param {string} pkgDir */
function findStems(pkgDir) {
  return filesUnder(pkgDir)
    .filter((f) => f.endsWith('_bg.wasm') && existsSync(f.replace(/_bg\.wasm$/, '.js')))
    .map((f) => relative(pkgDir, f).replace(/_bg\.wasm$/, '').split('\\').join('/'))
    .sort();
}

/**
 * Every file under `dir` (not under `node_modules` or `snippets`).
 * @param {string} dir
 * @returns {string[]}
 */
function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' || e.name === 'snippets' ? [] : filesUnder(path);
    return e.isFile() ? [path] : [];
  });
}

/**
 * Put the `esnext.disposable` lib reference on top of a declaration file that uses
 * `Symbol.dispose` (triple-slash directives only count before any statement).
 * @param {string} path
 */
function referenceDisposable(path) {
  const text = readFileSync(path, 'utf8');
  if (text.includes('Symbol.dispose') && !text.includes(DISPOSABLE_REF)) {
    writeFileSync(path, `${DISPOSABLE_REF}\n${text}`);
  }
}

/**
 * Write `<stem>.node.js`, `<stem>.auto.js` and their declarations next to `<stem>.js`.
 * @param {string} pkgDir
 * @param {string} path the glue module without `.js`, relative to `pkgDir` (e.g. `'p3_lanes'`)
 * @returns {string[]} the files written, relative to `pkgDir`
 */
export function writeEntryVariants(pkgDir, path) {
  const stem = basename(path);
  const root = '../'.repeat(path.split('/').length - 1) || './';
  const header = (what) => `// ${what} of ./${stem}.js, written by scripts/lib/package-extras.mjs.\n`;
  const files = {
    [`${stem}.node.js`]: `${header('The Node.js variant')}// The same exports, already initialised from ./${stem}_bg.wasm on disk (\`init()\` resolves at
// once), with a WebSocket from the runtime or the \`ws\` package (${root}node-websocket.js).
import { readFileSync } from 'node:fs';
import { initSync } from './${stem}.js';
import { provideWebSocket } from '${root}node-websocket.js';

await provideWebSocket();
initSync({ module: readFileSync(new URL('./${stem}_bg.wasm', import.meta.url)) });

export * from './${stem}.js';
export { default } from './${stem}.js';
`,
    [`${stem}.node.d.ts`]: `${header('Declarations of the Node.js variant')}export * from './${stem}.js';
export { default } from './${stem}.js';
`,
    [`${stem}.auto.js`]: `${header('The self-initialising variant')}// The same exports, usable as soon as the import resolves: it awaits \`init()\` (fetching
// ./${stem}_bg.wasm next to it) at the top level, so forgetting \`init()\` is impossible.
import init from './${stem}.js';

await init();

export * from './${stem}.js';
export { default } from './${stem}.js';
`,
    [`${stem}.auto.d.ts`]: `${header('Declarations of the self-initialising variant')}export * from './${stem}.js';
export { default } from './${stem}.js';
`,
  };
  const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/') + 1) : '';
  for (const [name, text] of Object.entries(files)) writeFileSync(join(pkgDir, dir + name), text);
  return Object.keys(files).map((name) => dir + name);
}

/**
 * package.json: no placeholder `repository`, the extra files, `sideEffects`, `ws` as an
 * optional peer dependency, `engines`.
 * @param {string} pkgDir
 * @param {string[]} stems
 * @param {string[]} written
 */
function patchPackageJson(pkgDir, stems, written) {
  const path = join(pkgDir, 'package.json');
  const pkg = JSON.parse(readFileSync(path, 'utf8'));
  if (String(pkg.repository?.url ?? pkg.repository ?? '').includes('example.invalid')) delete pkg.repository;
  pkg.files = [...new Set([...(pkg.files ?? []), ...written])];
  // Modules that run code on import: the snippets wasm-bindgen keeps (wasm-pack's own entry)
  // and the variants that initialise themselves. The glue modules themselves are pure.
  const effects = stems.flatMap((s) => [`./${s}.node.js`, `./${s}.auto.js`]);
  pkg.sideEffects = [...new Set([...(pkg.sideEffects ?? ['./snippets/*']), ...effects])];
  pkg.peerDependencies = { ...pkg.peerDependencies, ws: '>=8' };
  pkg.peerDependenciesMeta = { ...pkg.peerDependenciesMeta, ws: { optional: true } };
  pkg.engines ??= { node: '>=20' };
  pkg.exports = withEntryConditions(pkg.exports, stems, pkg.main);
  writeFileSync(path, `${JSON.stringify(pkg, null, 2)}\n`);
}

/**
 * The `exports` map with every entry's conditions: each subpath whose target is one of `stems`'
 * glue module (`./<stem>.js`, e.g. the per-feature entries' map that scripts/build-sdk.mjs
 * writes) gets `entryExports(stem, subpath)`; without a map (a single wasm-pack build), the main
 * entry (`main`, else the first stem) is `.`. Adds `./*.wasm` and `./package.json`.
 * Idempotent: a subpath already carrying the conditions is rewritten the same.
 * @param {Record<string, unknown> | undefined} exports
 * @param {string[]} stems
 * @param {string | undefined} main package.json `main`
 */
function withEntryConditions(exports, stems, main) {
  const mainStem = stems.find((s) => `${s}.js` === main) ?? stems[0];
  const map = exports ?? (mainStem ? { '.': `./${mainStem}.js` } : {});
  /** The glue module a subpath's target names (its `default`, or the string itself). */
  const target = (value) => (typeof value === 'string' ? value : value?.default);
  const out = {};
  for (const [subpath, value] of Object.entries(map)) {
    const stem = stems.find((s) => target(value) === `./${s}.js`);
    Object.assign(out, stem ? entryExports(stem, subpath) : { [subpath]: value });
  }
  return { ...out, './*.wasm': './*.wasm', './package.json': './package.json' };
}
