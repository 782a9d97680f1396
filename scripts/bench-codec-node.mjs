// Codec benchmark in Node.js (issue 3, "Benchmarks"): encoded bytes and encode+decode speed
// of our wasm dictionary codec (`DictionaryCodec` from pkg/) against JSON.stringify/parse,
// @msgpack/msgpack, and msgpackr (plain, and with shared structures = records), on the
// seed-shaped corpus of sdk/benches/codec.rs (printed by that bench with `-- --corpus-json`,
// so both benches run on one corpus).
//
//   node scripts/bench-codec-node.mjs              build pkg/ if stale, then measure
//   node scripts/bench-codec-node.mjs --pkg DIR    use the wasm-pack output in DIR
//   node scripts/bench-codec-node.mjs --learned-only   only the learned-shapes bytes (no wasm)
//
// Learned shapes (PROTOCOL.md §8.3, issue 15): the corpus also holds message sequences (the
// app messages 10 times over, and seeded random corpora of layouts the dictionary does not
// list) with the bytes the Rust core wrote for them through one `ShapeSender`; this script
// sets them beside msgpackr records over the same sequence: one Packr with shared structures
// (its steady state: definitions never travel, so they are not counted) and
// `new Packr({useRecords: true})` alone (definitions inline in every message).
//
// Prints a table of ratios from this run and replaces the `codec-node.` entries of
// bench-results.json with {name, value, unit, baseline, ratio}.
//
// Timing: each codec's round trip (encode then decode every corpus message) is timed in
// rounds of about 20 ms, codecs interleaved round by round so machine noise hits them alike;
// the figure is the mean of 41 rounds in process CPU time (user + system), which a loaded
// machine inflates far less than wall time. Bytes are the sum over the corpus of one encoded message.
// msgpackr with records is measured warm (sender and receiver already share the structures,
// its steady state) and cold (structures written inline in each message).

import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { decode as mpDecode, Encoder as MpEncoder, Decoder as MpDecoder } from '@msgpack/msgpack';
import { Packr } from 'msgpackr';
import { buildSdk } from './build-sdk.mjs';
import { ROOT, runMain, step } from './lib/proc.mjs';

const RESULTS = join(ROOT, 'bench-results.json');
const PREFIX = 'codec-node.';

/** @returns {{dictionary: {version: string, tokens: string[], indexMap: Record<string, number>}, messages: {name: string, value: unknown}[]}} */
function loadCorpus() {
  step('corpus: cargo bench -p p3-lanes --bench codec -- --corpus-json');
  const r = spawnSync('cargo', ['bench', '-q', '-p', 'p3-lanes', '--bench', 'codec', '--', '--corpus-json'], {
    cwd: ROOT,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`exporting the corpus failed (exit ${r.status})`);
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error('the codec bench printed no corpus');
  return JSON.parse(line);
}

/** Deep equality of JSON-compatible values (key order ignored). */
function same(a, b) {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => same(a[k], b[k]));
}

/**
 * @typedef {{name: string, encode: (v: unknown) => Uint8Array | string, decode: (b: any) => unknown,
 *   bytes?: (values: unknown[]) => number}} Codec
 */

/**
 * Bytes of the learned-shapes sequences: ours (from the Rust core) against msgpackr records.
 * @param {{learned?: {name: string, messages: unknown[], bytes: Record<string, number>}[]}} corpus
 * @returns {{name: string, value: number, unit: string, baseline: string, ratio: number}[]}
 */
function learnedComparison(corpus) {
  const utf8 = new TextEncoder();
  const pad = (/** @type {string} */ s, n) => s.padStart(n);
  console.log('\nlearned shapes: bytes of message sequences on one lane, ratios from this run');
  console.log(
    `${'sequence'.padEnd(32)}${pad('json', 8)}${pad('records', 9)}${pad('rec/msg', 9)}${pad('p3 dict', 9)}${pad('p3 learned', 11)}${pad('/records', 9)}`,
  );
  /** @type {{name: string, value: number, unit: string, baseline: string, ratio: number}[]} */
  const results = [];
  for (const seq of corpus.learned ?? []) {
    const shared = new Packr({ structures: [] });
    let records = 0;
    for (const v of seq.messages) {
      const b = shared.pack(v);
      records += b.length;
      if (!same(shared.unpack(b), v)) throw new Error(`msgpackr records does not round-trip ${seq.name}`);
    }
    const perMessage = new Packr({ useRecords: true });
    const recMsg = seq.messages.reduce((n, v) => n + perMessage.pack(v).length, 0);
    const json = seq.messages.reduce((n, v) => n + utf8.encode(JSON.stringify(v)).length, 0);
    const dict = seq.bytes['p3 dictionary'];
    const learned = seq.bytes['p3 learned shapes'];
    console.log(
      `${seq.name.padEnd(32)}${pad(String(json), 8)}${pad(String(records), 9)}${pad(String(recMsg), 9)}` +
        `${pad(String(dict), 9)}${pad(String(learned), 11)}${pad((learned / records).toFixed(3), 9)}`,
    );
    console.log(
      `target learned bytes vs msgpackr records (${seq.name}): ${(learned / records).toFixed(3)} (≤ 0.8) ${learned / records <= 0.8 ? 'met' : 'MISSED'}`,
    );
    for (const [what, value] of [
      ['msgpackr records', records],
      ['msgpackr useRecords per message', recMsg],
      ['p3 dictionary', dict],
      ['p3 learned shapes', learned],
    ]) {
      results.push({
        name: `${PREFIX}learned.${seq.name}.${what}`,
        value: Number(value),
        unit: 'bytes',
        baseline: `msgpackr records (shared structures): ${records} bytes`,
        ratio: Number(value) / records,
      });
    }
  }
  return results;
}

async function main() {
  if (process.argv.includes('--learned-only')) {
    const results = learnedComparison(loadCorpus());
    writeResults(results, `${PREFIX}learned.`);
    return;
  }
  const pkgArg = process.argv.indexOf('--pkg');
  const pkgDir = pkgArg > 0 ? process.argv[pkgArg + 1] : join(ROOT, 'pkg');
  if (pkgArg < 0) await buildSdk();
  const wasm = await import(pathToFileURL(join(pkgDir, 'p3_lanes.js')).href);
  wasm.initSync({ module: readFileSync(join(pkgDir, 'p3_lanes_bg.wasm')) });

  const corpus = loadCorpus();
  const values = corpus.messages.map((m) => m.value);
  const ours = new wasm.DictionaryCodec(corpus.dictionary);
  const oursPlain = new wasm.DictionaryCodec(null);
  const utf8 = new TextEncoder();

  const mpEnc = new MpEncoder();
  const mpDec = new MpDecoder();
  const packrPlain = new Packr({ useRecords: false });
  // Shared structures: one Packr encodes and decodes, so the receiver knows every record
  // the sender defined (msgpackr's `structures` sharing, in process).
  const packrRecords = new Packr({ structures: [] });

  /** @type {Codec[]} */
  const codecs = [
    {
      name: 'JSON.stringify/parse',
      encode: (v) => JSON.stringify(v),
      decode: (s) => JSON.parse(s),
      bytes: (vs) => vs.reduce((n, v) => n + utf8.encode(JSON.stringify(v)).length, 0),
    },
    { name: '@msgpack/msgpack', encode: (v) => mpEnc.encode(v), decode: (b) => mpDec.decode(b) },
    { name: 'msgpackr (no records)', encode: (v) => packrPlain.pack(v), decode: (b) => packrPlain.unpack(b) },
    {
      name: 'msgpackr records (warm)',
      encode: (v) => packrRecords.pack(v),
      decode: (b) => packrRecords.unpack(b),
      bytes: (vs) => {
        for (const v of vs) packrRecords.unpack(packrRecords.pack(v)); // share the structures
        return vs.reduce((n, v) => n + packrRecords.pack(v).length, 0);
      },
    },
    {
      name: 'msgpackr records (cold)',
      encode: (v) => new Packr().pack(v),
      decode: (b) => new Packr().unpack(b),
    },
    { name: 'p3 wasm, no dictionary', encode: (v) => oursPlain.encode(v), decode: (b) => oursPlain.decode(b) },
    { name: 'p3 wasm dictionary', encode: (v) => ours.encode(v), decode: (b) => ours.decode(b) },
  ];

  // Correctness first: every codec must give back every message.
  for (const c of codecs) {
    for (const m of corpus.messages) {
      const back = c.decode(c.encode(m.value));
      if (!same(back, m.value)) throw new Error(`${c.name} does not round-trip ${m.name}`);
    }
  }
  // Our bytes are exactly what the Rust core writes: check against @msgpack/msgpack's reading
  // of the no-dictionary output (plain MessagePack).
  for (const v of values) {
    if (!same(mpDecode(oursPlain.encode(v)), v)) throw new Error('plain output is not stock MessagePack');
  }

  const bytes = codecs.map((c) =>
    c.bytes ? c.bytes(values) : values.reduce((n, v) => n + /** @type {Uint8Array} */ (c.encode(v)).length, 0),
  );

  // Interleaved timing of full round trips over the corpus.
  const roundTrip = (/** @type {Codec} */ c) => {
    let sink = 0;
    for (const v of values) {
      const d = c.decode(c.encode(v));
      if (d !== null) sink++;
    }
    return sink;
  };
  const iters = codecs.map((c) => {
    let n = 1;
    for (;;) {
      const t = process.hrtime.bigint();
      for (let i = 0; i < n; i++) roundTrip(c);
      if (Number(process.hrtime.bigint() - t) > 20e6) return n;
      n *= 2;
    }
  });
  const ROUNDS = 41;
  /** Process CPU time in ns (user + system): unlike wall time, not inflated while other
   * processes on a loaded machine hold the cores. */
  const cpuNs = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) * 1e3;
  };
  /** @type {number[][]} */
  const samples = codecs.map(() => []);
  for (let r = 0; r < ROUNDS; r++) {
    codecs.forEach((c, i) => {
      const t = cpuNs();
      for (let k = 0; k < iters[i]; k++) roundTrip(c);
      samples[i].push((cpuNs() - t) / iters[i]);
    });
  }
  // The kernel accounts CPU time in scheduler ticks, so one round's figure is coarse; the mean
  // over all rounds (total CPU / total round trips) averages the ticks out.
  const mean = (/** @type {number[]} */ xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const ns = samples.map(mean);

  const J = 0; // JSON row
  const M = 1; // @msgpack/msgpack row
  const R = codecs.findIndex((c) => c.name === 'msgpackr records (warm)');
  const P = codecs.findIndex((c) => c.name === 'p3 wasm dictionary');
  console.log(`\ncodec-node: ${values.length} seed-shaped messages, Node ${process.version}, ratios from this run`);
  const pad = (/** @type {string} */ s, n) => s.padStart(n);
  console.log(
    `${'codec'.padEnd(30)}${pad('bytes', 7)}${pad('/json', 7)}${pad('/records', 9)}${pad('µs/corpus', 11)}${pad('/json', 7)}${pad('/msgpack', 9)}`,
  );
  codecs.forEach((c, i) => {
    console.log(
      `${c.name.padEnd(30)}${pad(String(bytes[i]), 7)}${pad((bytes[i] / bytes[J]).toFixed(3), 7)}` +
        `${pad((bytes[i] / bytes[R]).toFixed(3), 9)}${pad((ns[i] / 1e3).toFixed(2), 11)}` +
        `${pad((ns[i] / ns[J]).toFixed(2), 7)}${pad((ns[i] / ns[M]).toFixed(2), 9)}`,
    );
  });
  const check = (/** @type {string} */ what, /** @type {number} */ ratio, /** @type {number} */ target) =>
    console.log(`target ${what}: ${ratio.toFixed(3)} (≤ ${target}) ${ratio <= target ? 'met' : 'MISSED'}`);
  check('bytes vs msgpackr records (warm)', bytes[P] / bytes[R], 0.9);
  check('bytes vs JSON', bytes[P] / bytes[J], 0.5);
  check('round trip time vs @msgpack/msgpack', ns[P] / ns[M], 1.0);
  // The handshake response carries the dictionary itself (tokens written as value indices by
  // us, as strings by the others), which flatters us: the app messages alone are a first-class
  // row, with the same targets.
  const apps = corpus.messages.filter((m) => m.name !== 'handshake response').map((m) => m.value);
  const appBytes = (/** @type {number} */ i) =>
    codecs[i].bytes
      ? /** @type {(vs: unknown[]) => number} */ (codecs[i].bytes)(apps)
      : apps.reduce((n, v) => n + /** @type {Uint8Array} */ (codecs[i].encode(v)).length, 0);
  const app = codecs.map((_, i) => appBytes(i));
  const [aP, aR, aJ] = [app[P], app[R], app[J]];
  console.log(`
app messages only (${apps.length}, without the handshake response)`);
  console.log(`${'codec'.padEnd(30)}${pad('bytes', 7)}${pad('/json', 7)}${pad('/records', 9)}`);
  codecs.forEach((c, i) => {
    console.log(
      `${c.name.padEnd(30)}${pad(String(app[i]), 7)}${pad((app[i] / aJ).toFixed(3), 7)}${pad((app[i] / aR).toFixed(3), 9)}`,
    );
  });
  check('app bytes vs msgpackr records (warm)', aP / aR, 0.9);
  check('app bytes vs JSON', aP / aJ, 0.5);

  /** @type {{name: string, value: number, unit: string, baseline: string, ratio: number}[]} */
  const results = [];
  codecs.forEach((c, i) => {
    results.push({
      name: `${PREFIX}bytes.${c.name}`,
      value: bytes[i],
      unit: 'bytes',
      baseline: `JSON.stringify/parse: ${bytes[J]} bytes`,
      ratio: bytes[i] / bytes[J],
    });
    results.push({
      name: `${PREFIX}roundtrip.${c.name}`,
      value: Math.round(ns[i]),
      unit: 'ns/corpus',
      baseline: `@msgpack/msgpack: ${Math.round(ns[M])} ns/corpus`,
      ratio: ns[i] / ns[M],
    });
  });
  codecs.forEach((c, i) => {
    results.push({
      name: `${PREFIX}bytes-app.${c.name}`,
      value: app[i],
      unit: 'bytes',
      baseline: `JSON.stringify/parse: ${aJ} bytes`,
      ratio: app[i] / aJ,
    });
  });
  results.push({
    name: `${PREFIX}target.app-bytes-vs-msgpackr-records`,
    value: aP,
    unit: 'bytes',
    baseline: `msgpackr records (warm): ${aR} bytes`,
    ratio: aP / aR,
  });
  results.push({
    name: `${PREFIX}target.bytes-vs-msgpackr-records`,
    value: bytes[P],
    unit: 'bytes',
    baseline: `msgpackr records (warm): ${bytes[R]} bytes`,
    ratio: bytes[P] / bytes[R],
  });
  results.push(...learnedComparison(corpus));
  writeResults(results);
}

/**
 * Replaces this benchmark's entries (names starting with `prefix`) in bench-results.json.
 * @param {object[]} ours
 * @param {string} [prefix]
 */
function writeResults(ours, prefix = PREFIX) {
  /** @type {{name?: string}[]} */
  let all = [];
  try {
    all = JSON.parse(readFileSync(RESULTS, 'utf8'));
  } catch {
    all = [];
  }
  all = all.filter((e) => !(typeof e.name === 'string' && e.name.startsWith(prefix)));
  writeFileSync(RESULTS, `${JSON.stringify([...all, ...ours], null, 2)}`);
  console.log(`wrote ${RESULTS}`);
}

runMain(main);
