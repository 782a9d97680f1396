// The npm package's entry points (issue 15, "Entry points by feature"; layout:
// scripts/build-sdk.mjs): package.json's `exports` offers every entry of scripts/lib/bundle.mjs
// with its types, and each entry's wasm, instantiated in Node.js, exports what the entry
// contains and nothing it leaves out (a lanes-only page must not carry the music rooms).
// Needs pkg/ (`node scripts/build-sdk.mjs`).

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ENTRIES } from '../scripts/lib/bundle.mjs';

const PKG = join(fileURLToPath(new URL('..', import.meta.url)), 'pkg');

/** Per entry: exports it must have, exports it must not have, `P3Client` methods likewise. */
const API = {
  lanes: {
    has: ['P3Client', 'DictionaryCodec'],
    lacks: ['MusicRoom', 'PeerMesh', 'OfflineChangeQueue', 'CacheGuard', 'checkVersion'],
    methods: ['joinRoom', 'send'],
    noMethods: ['musicRoom', 'peerMesh', 'call'],
  },
  music: {
    has: ['P3Client', 'DictionaryCodec', 'MusicRoom', 'PeerMesh', 'OfflineChangeQueue'],
    lacks: ['CacheGuard', 'checkVersion'],
    methods: ['joinRoom', 'musicRoom', 'peerMesh', 'call'],
    noMethods: [],
  },
  pwa: {
    has: ['CacheGuard', 'checkVersion'],
    lacks: ['P3Client', 'DictionaryCodec', 'MusicRoom', 'PeerMesh', 'OfflineChangeQueue'],
    methods: [],
    noMethods: [],
  },
  full: {
    has: ['P3Client', 'DictionaryCodec', 'MusicRoom', 'PeerMesh', 'OfflineChangeQueue', 'CacheGuard', 'checkVersion'],
    lacks: [],
    methods: ['joinRoom', 'musicRoom', 'peerMesh', 'call'],
    noMethods: [],
  },
};

test('package.json exports every entry with its types', () => {
  const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8'));
  assert.equal(pkg.name, 'p3-lanes');
  assert.equal(pkg.type, 'module');
  assert.deepEqual(Object.keys(API).sort(), ENTRIES.map((e) => e.name).sort(), 'every entry has an API row here');
  for (const entry of ENTRIES) {
    const key = entry.specifier === 'p3-lanes' ? '.' : `./${entry.specifier.slice('p3-lanes/'.length)}`;
    const target = pkg.exports[key];
    assert.ok(target, `exports has ${key} (${entry.specifier})`);
    for (const condition of ['types', 'default']) {
      assert.ok(existsSync(join(PKG, target[condition])), `${entry.specifier} ${condition}: ${target[condition]} exists`);
      assert.ok(pkg.files.includes(target[condition].slice(2)), `files lists ${target[condition]}`);
    }
    assert.equal(Object.keys(target)[0], 'types', `${key}: \`types\` comes first, as TypeScript requires`);
  }
  assert.equal(pkg.exports['.'].default, `./${pkg.main}`, 'main is the lanes entry');
  assert.equal(pkg.exports['.'].types, `./${pkg.types}`, 'types is the lanes entry');
});

for (const entry of ENTRIES) {
  test(`${entry.specifier} exports what it contains and nothing else`, async () => {
    const api = API[entry.name];
    const dir = join(PKG, entry.dir);
    const mod = await import(pathToFileURL(join(dir, 'p3_lanes.js')).href);
    mod.initSync({ module: readFileSync(join(dir, 'p3_lanes_bg.wasm')) });
    const dts = readFileSync(join(dir, 'p3_lanes.d.ts'), 'utf8');
    const declared = (name) => new RegExp(`export (class|function) ${name}\\b`).test(dts);
    for (const name of api.has) {
      assert.equal(typeof mod[name], 'function', `${entry.specifier} exports ${name}`);
      assert.ok(declared(name), `${entry.specifier} declares ${name} in its types`);
    }
    for (const name of api.lacks) {
      assert.equal(mod[name], undefined, `${entry.specifier} leaves out ${name}`);
      assert.ok(!declared(name), `${entry.specifier} types leave out ${name}`);
    }
    for (const name of api.methods) assert.equal(typeof mod.P3Client.prototype[name], 'function', `P3Client.${name}`);
    for (const name of api.noMethods) assert.equal(mod.P3Client.prototype[name], undefined, `no P3Client.${name}`);
    if (mod.DictionaryCodec) {
      // The entry's wasm runs, not only loads: the codec round-trips a message.
      const codec = new mod.DictionaryCodec(null);
      const value = { type: 'chat', text: 'hé', n: [1, 2.5, null, true] };
      assert.deepEqual(codec.decode(codec.encode(value)), value);
    }
  });
}
