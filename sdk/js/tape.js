// The JS half of the value tape (sdk/src/core/tape.rs, PROTOCOL.md §8.1), shipped inside the
// npm package as a wasm-bindgen snippet. `writeTape` walks an app value into a tape (strictly:
// what JSON cannot represent is refused with the path of the offending part) and `readTape`
// turns a tape that wasm wrote into plain objects. Both replace one JS⇄wasm call per key and
// value with three bulk copies: node words, float64s and one UTF-8 text.
//
// Node word: x << 4 | tag, tags 0 null, 1 false, 2 true, 3 integer x, 4 number (next float),
// 5 string of x UTF-16 units (next of the text), 6 dictionary token x (1-based), 7 array of x,
// 8 map of x (key, value pairs).

const MAX_DEPTH = 128;
const X_LIMIT = 268435456; // 2^28
const decoder = new TextDecoder('utf-8', { ignoreBOM: true, fatal: false });

/** @type {WebAssembly.Memory | null} */
let memory = null;

/** Remembers wasm's memory (called once by wasm with `wasm_bindgen::memory()`). */
export function tapeSetMemory(mem) {
  memory = mem;
}

/**
 * Lookup tables for one dictionary: `tokens[i - 1]` has index i; `index` maps a token to i.
 * @param {string[]} tokens
 */
export function tapeTables(tokens) {
  let longest = 0;
  const index = new Map();
  tokens.forEach((t, i) => {
    index.set(t, i + 1);
    if (t.length > longest) longest = t.length;
  });
  return { tokens, index, longest };
}

// ---- reading (wasm → JS) ----

let rOps = new Uint32Array(0);
/** @type {Float64Array | null} */
let rNums = null;
let rText = '';
let rOp = 0;
let rNum = 0;
let rAt = 0;
/** @type {string[]} */
let rTokens = [];

/**
 * The value on the tape wasm left in its memory.
 * @returns {unknown}
 */
export function readTape(opsPtr, opsLen, numsPtr, numsLen, textPtr, textLen, tables) {
  const buf = /** @type {WebAssembly.Memory} */ (memory).buffer;
  rOps = new Uint32Array(buf, opsPtr, opsLen);
  rNums = numsLen > 0 ? new Float64Array(buf, numsPtr, numsLen) : null;
  rText = textLen > 0 ? decoder.decode(new Uint8Array(buf, textPtr, textLen)) : '';
  rTokens = tables === undefined || tables === null ? [] : tables.tokens;
  rOp = 0;
  rNum = 0;
  rAt = 0;
  const v = read();
  rNums = null;
  rText = '';
  return v;
}

function read() {
  const w = rOps[rOp++];
  const x = w >>> 4;
  switch (w & 15) {
    case 0:
      return null;
    case 1:
      return false;
    case 2:
      return true;
    case 3:
      return x;
    case 4:
      return /** @type {Float64Array} */ (rNums)[rNum++];
    case 5: {
      const s = rText.slice(rAt, rAt + x);
      rAt += x;
      return s;
    }
    case 6:
      return rTokens[x - 1];
    case 7: {
      const a = new Array(x);
      for (let i = 0; i < x; i++) a[i] = read();
      return a;
    }
    default: {
      /** @type {Record<string, unknown>} */
      const o = {};
      for (let i = 0; i < x; i++) {
        const k = /** @type {string} */ (read());
        const v = read();
        if (k === '__proto__') {
          // An own key, as JSON.parse makes it, never the prototype.
          Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
        } else {
          o[k] = v;
        }
      }
      return o;
    }
  }
}

// ---- writing (JS → wasm) ----

let wOps = new Uint32Array(256);
let wNums = new Float64Array(32);
let wOp = 0;
let wNum = 0;
let wText = '';
/** @type {Map<string, number>} */
let wIndex = new Map();
let wLongest = 0;
/** Why the walk failed, and the path segments collected on the way out (innermost first). */
let wWhat = '';
/** @type {string[]} */
let wPath = [];
const NO_TABLES = { tokens: [], index: new Map(), longest: 0 };
/** Whether a walk is under way (app code it calls, a getter or toJSON, may write a tape too). */
let walking = false;
/** Writer states of walks interrupted by such a nested write, innermost last. */
const outer = [];

/** Puts back the writer state of the walk a nested write interrupted, if any. */
function resumeOuter() {
  const s = outer.pop();
  if (s !== undefined) [wOps, wNums, wOp, wNum, wText, wIndex, wLongest, wWhat, wPath, walking] = s;
}

function op(word) {
  if (wOp === wOps.length) {
    const grown = new Uint32Array(wOps.length * 2);
    grown.set(wOps);
    wOps = grown;
  }
  wOps[wOp++] = word;
}

function num(n) {
  if (wNum === wNums.length) {
    const grown = new Float64Array(wNums.length * 2);
    grown.set(wNums);
    wNums = grown;
  }
  wNums[wNum++] = n;
  op(4);
}

function fail(what) {
  wWhat = what;
  return false;
}

/**
 * Walks `value` onto the writer's tape. Returns `null`, or the message of a `bad_payload`
 * error (`value.a[2] is NaN, which JSON cannot represent`) for a part JSON cannot hold.
 * @returns {string | null}
 */
export function writeTape(value, tables) {
  if (walking) {
    // Called from app code inside another walk: keep that walk's state (and buffers) aside
    // until this tape has been taken (`tapeText`) or refused.
    outer.push([wOps, wNums, wOp, wNum, wText, wIndex, wLongest, wWhat, wPath, walking]);
    wOps = new Uint32Array(64);
    wNums = new Float64Array(8);
  }
  const t = tables === undefined || tables === null ? NO_TABLES : tables;
  wIndex = t.index;
  wLongest = t.longest;
  wOp = 0;
  wNum = 0;
  wText = '';
  wPath = [];
  if (value === undefined) {
    op(0);
    return null;
  }
  walking = true;
  let msg = null;
  try {
    if (!walk(value, 0)) {
      let path = 'value';
      for (let i = wPath.length - 1; i >= 0; i--) path += wPath[i];
      msg = `${path} ${wWhat}`;
    }
  } catch (e) {
    // App code (a getter, a Proxy trap) threw where the walk does not catch it itself.
    msg = `value could not be read: ${e instanceof Error ? e.message : String(e)}`;
  }
  walking = false;
  if (msg !== null) resumeOuter(); // refused: nothing will be taken
  return msg;
}

/** The words of the last `writeTape`. */
export function tapeOps() {
  return wOps.subarray(0, wOp);
}

/** The numbers of the last `writeTape`. */
export function tapeNums() {
  return wNums.subarray(0, wNum);
}

/** The text of the last `writeTape` (then forgotten); the last of the three takes. */
export function tapeText() {
  const s = wText;
  wText = '';
  resumeOuter();
  return s;
}

function string(s) {
  if (s.length <= wLongest) {
    const i = wIndex.get(s);
    if (i !== undefined) {
      op((i << 4) | 6);
      return true;
    }
  }
  if (s.length >= X_LIMIT) return fail('is a string too long to send');
  op((s.length << 4) | 5);
  wText += s;
  return true;
}

/** @returns {boolean} false after `fail` (the caller adds its path segment). */
function walk(v, depth) {
  switch (typeof v) {
    case 'string':
      return string(v);
    case 'number':
      if (v >= 0 && v < X_LIMIT && Number.isInteger(v)) {
        op((v << 4) | 3);
        return true;
      }
      if (!Number.isFinite(v)) return fail(`is ${v}, which JSON cannot represent`);
      num(v);
      return true;
    case 'boolean':
      op(v ? 2 : 1);
      return true;
    case 'undefined':
      op(0); // in arrays: null, as JSON; object members are skipped before we get here
      return true;
    case 'bigint':
      return fail('is a BigInt; convert it to a number or a string');
    case 'function':
      return fail('is a function');
    case 'symbol':
      return fail('is a symbol');
    default:
      break;
  }
  if (v === null) {
    op(0);
    return true;
  }
  if (depth >= MAX_DEPTH) {
    return fail(`is nested deeper than ${MAX_DEPTH} levels (is the value cyclic?)`);
  }
  if (Array.isArray(v)) {
    const n = v.length;
    if (n >= X_LIMIT) return fail('is an array too long to send');
    op((n << 4) | 7);
    for (let i = 0; i < n; i++) {
      if (!walk(v[i], depth + 1)) {
        wPath.push(`[${i}]`);
        return false;
      }
    }
    return true;
  }
  if (typeof v.toJSON === 'function') {
    let converted;
    try {
      converted = v.toJSON();
    } catch (e) {
      return fail(`toJSON() threw: ${e instanceof Error ? e.message : String(e)}`);
    }
    return walk(converted, depth + 1);
  }
  if (v instanceof Map || v instanceof Set) return fail('is a Map or Set; use a plain object or an array');
  if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
    return fail('is binary data; send an array of numbers or a base64 string');
  }
  const keys = Object.keys(v);
  const at = wOp;
  op(8);
  let n = 0;
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    let item;
    try {
      item = v[k];
    } catch (e) {
      return fail(`reading .${k} threw: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (item === undefined) continue; // omitted, as JSON does
    if (!string(k) || !walk(item, depth + 1)) {
      wPath.push(`.${k}`);
      return false;
    }
    n++;
  }
  wOps[at] = (n << 4) | 8;
  return true;
}
