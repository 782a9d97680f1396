// The npm package's entry points (issue 15, "Entry points by feature"), one wasm build each of
// a Cargo feature set of the SDK (sdk/Cargo.toml `[features]`), and what a page of each kind
// downloads: the entry's JS glue, its snippets and its wasm. Shared by scripts/build-sdk.mjs
// (what to build where), scripts/bench-bundle.mjs (`bundle.*` rows) and
// tests/bundle-size.spec.mjs (the budgets).
//
// Sizes are bytes; 1 KB = 1,000 bytes (the targets are read the strict way).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';

/**
 * One entry of the package.
 * - `dir`: its folder under pkg/ (`.` is the package root).
 * - `specifier`: what an app imports.
 * - `profile`: the Cargo profile of its wasm build (Cargo.toml): `wasm-size` (`opt-level = 3`,
 *   for the entries with the codec's hot paths) or `wasm-tiny` (`opt-level = "z"`).
 * - `target`: the issue's size target, gzip -9 bytes of wasm + JS (null: none of its own).
 * - `budget`: what the bundle-size test allows, gzip -9 bytes. Equal to `target` when the
 *   target is met; otherwise the measured size rounded up by at most 5 %, a ratchet to lower
 *   as the build shrinks (never raise it to make a change pass without saying why). Set from
 *   the build of issue 15's entry split with the `opt-level = 3` wasm profile (raised from the
 *   `"s"` build's, which cost the wasm codec 14-26 % of its speed; DESIGN.md "How the wasm is
 *   built"; BENCHMARKS.md `bundle`); no target is met yet.
 * @typedef {{name: string, features: string, profile: string, dir: string, specifier: string,
 *   contains: string, target: number | null, budget: number}} Entry
 */

/** @type {Entry[]} */
export const ENTRIES = [
  {
    name: 'lanes',
    features: 'lanes',
    profile: 'wasm-size',
    dir: 'lanes',
    specifier: 'p3-lanes',
    contains: 'P3Client (handshake, lanes, codec, multiplexer, SSE), DictionaryCodec',
    target: 60_000,
    budget: 310_000,
  },
  {
    name: 'music',
    features: 'music',
    profile: 'wasm-size',
    dir: 'music',
    specifier: 'p3-lanes/music',
    contains: 'the lanes entry + MusicRoom, PeerMesh, calls, OfflineChangeQueue',
    target: 150_000,
    budget: 625_000,
  },
  {
    name: 'pwa',
    features: 'pwa',
    profile: 'wasm-tiny',
    dir: 'pwa',
    specifier: 'p3-lanes/pwa',
    contains: 'checkVersion, CacheGuard',
    target: 25_000,
    // 51,040 bytes with the `wasm-tiny` profile and no serde deserializer or JSON parser.
    budget: 53_000,
  },
  {
    name: 'full',
    features: 'full',
    profile: 'wasm-size',
    dir: '.',
    specifier: 'p3-lanes/full',
    contains: 'everything',
    target: 150_000,
    budget: 655_000,
  },
];

/** The JS-stack baseline of issue 15: socket.io-client 14.8 + simple-peer 28.3 + msgpackr 12.6 + workbox-window 2.4 KB, min+gzip. */
export const JS_STACK_GZIP = 58_000;

/**
 * Files a page loads for an entry: its JS glue, the snippets the glue imports (wasm-bindgen
 * writes every snippet of the crate, used or not), its wasm.
 * @param {string} pkgDir pkg/ (or a build of the same layout)
 * @param {Entry} entry
 * @returns {string[]} absolute paths
 */
export function entryFiles(pkgDir, entry) {
  const dir = join(pkgDir, entry.dir);
  const glue = join(dir, 'p3_lanes.js');
  const files = [glue, join(dir, 'p3_lanes_bg.wasm')];
  if (!existsSync(glue)) return files;
  const snippets = new Set(
    [...readFileSync(glue, 'utf8').matchAll(/from\s*['"]\.\/(snippets\/[^'"]+)['"]/g)].map((m) => join(dir, m[1])),
  );
  return [...files, ...[...snippets].sort()];
}

/**
 * Raw, gzip -9 and brotli (quality 11) bytes of an entry, each file compressed on its own (as
 * a server sends it), and the wasm and JS parts of the gzip figure.
 * @param {string} pkgDir
 * @param {Entry} entry
 * @returns {{raw: number, gzip: number, brotli: number, wasmGzip: number, jsGzip: number}}
 */
export function entrySize(pkgDir, entry) {
  const out = { raw: 0, gzip: 0, brotli: 0, wasmGzip: 0, jsGzip: 0 };
  for (const file of entryFiles(pkgDir, entry)) {
    const bytes = readFileSync(file);
    const gz = gzipBytes(bytes);
    out.raw += bytes.length;
    out.gzip += gz;
    out.brotli += brotliCompressSync(bytes, {
      params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: bytes.length },
    }).length;
    if (file.endsWith('.wasm')) out.wasmGzip += gz;
    else out.jsGzip += gz;
  }
  return out;
}

/**
 * gzip -9 length of `bytes`.
 * @param {Uint8Array} bytes
 */
export function gzipBytes(bytes) {
  return gzipSync(bytes, { level: 9 }).length;
}

/** @param {number} bytes */
export function kb(bytes) {
  return `${(bytes / 1000).toFixed(1)} KB`;
}
