// PROTOCOL.md is the normative spec (issue 13, Deliver 4): it says what MUST happen on the wire,
// in RFC 2119 / RFC 8174 words, and nothing else. Measurements live in BENCHMARKS.md (generated
// by `npm run bench`), decisions and what was tried in DESIGN.md, tests in the tree. This spec
// fails when PROTOCOL.md
// - lacks the BCP 14 boilerplate sentence,
// - cites a commit ("at 42c63e8"),
// - holds a test list ("Tests: ..." paragraphs, "(tests: ...)", test file paths),
// - reports measurements or history ("measured", "we tried", "what was tried"),
// and when a "PROTOCOL.md §N" that the code, the tests or the scripts cite names no section.
// Needs no browser and no build.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PROTOCOL = readFileSync(join(ROOT, 'PROTOCOL.md'), 'utf8');
const LINES = PROTOCOL.split('\n');

/** Every line of PROTOCOL.md matching `re`, as "line N: text" (for assertion messages). */
function offending(re) {
  return LINES.flatMap((line, i) => (re.test(line) ? [`line ${i + 1}: ${line.trim().slice(0, 120)}`] : []));
}

test('PROTOCOL.md carries the BCP 14 (RFC 2119, RFC 8174) boilerplate and uses its words', () => {
  const boilerplate =
    'The key words "MUST", "MUST NOT", "REQUIRED", "SHALL", "SHALL NOT", "SHOULD", "SHOULD NOT", ' +
    '"RECOMMENDED", "NOT RECOMMENDED", "MAY", and "OPTIONAL" in this document are to be interpreted ' +
    'as described in BCP 14 [RFC2119] [RFC8174] when, and only when, they appear in all capitals, ' +
    'as shown here.';
  const flat = PROTOCOL.replace(/\s+/g, ' ');
  assert.ok(flat.includes(boilerplate), 'the BCP 14 boilerplate sentence, verbatim');
  const must = (PROTOCOL.match(/\bMUST\b/g) ?? []).length;
  assert.ok(must >= 50, `MUST used ${must} times: requirements are stated as MUST/SHOULD/MAY`);
});

test('PROTOCOL.md cites no commits', () => {
  // "at 42c63e8", "commit 9674d07", "(since a1b2c3d)": a hex word with a digit and a letter.
  const hash = /\b(?:at|commit|since|before|after|from|in)\s+`?(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b/i;
  assert.deepEqual(offending(hash), [], 'commit references (history belongs in DESIGN.md or git log)');
});

test('PROTOCOL.md holds no test lists', () => {
  const paragraph = /^\s*(?:[-*]\s+)?(?:\*\*)?(?:Tests?|e2e)(?:\*\*)?\s*:/i;
  const inline = /\((?:tests?|e2e)\s*:/i;
  const paths = /\btests\/[\w.-]+\.(?:spec\.mjs|rs)\b|\bserver-stub\/tests\/|sdk\/tests\//;
  assert.deepEqual(offending(paragraph), [], '"Tests:" paragraphs');
  assert.deepEqual(offending(inline), [], '"(tests: ...)" asides');
  assert.deepEqual(offending(paths), [], 'test file paths (tests are found in the tree)');
});

test('PROTOCOL.md reports no measurements or history', () => {
  const words = /\bmeasured\b|\bwe tried\b|\bwas tried\b|\bwhat was tried\b|\bre-measured\b/i;
  assert.deepEqual(offending(words), [], 'measurements go to BENCHMARKS.md, what was tried to DESIGN.md');
});

/** The `N` of every "PROTOCOL.md §N" / "PROTOCOL §N" in the files below `dir`. */
function citations(dir) {
  const found = [];
  for (const e of readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !/\.(rs|mjs|js|ts|md)$/.test(e.name)) continue;
    const file = join(e.parentPath ?? e.path, e.name);
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/PROTOCOL(?:\.md)?\s*§\s*(\d+(?:\.\d+)*)/g)) {
      found.push({ section: m[1], file: file.slice(ROOT.length) });
    }
  }
  return found;
}

test('every PROTOCOL.md section cited by the code, tests and scripts exists', () => {
  const sections = new Set(
    LINES.map((line) => line.match(/^#{2,4} (\d+(?:\.\d+)*)\.? /)?.[1]).filter((s) => s !== undefined),
  );
  assert.ok(sections.has('7') && sections.has('11.6'), 'headings are numbered "## 7." / "### 11.6"');
  const cited = ['sdk', 'server-stub', 'tests', 'scripts', 'www'].flatMap(citations);
  assert.ok(cited.length > 50, `found ${cited.length} citations`);
  const missing = cited.filter(({ section }) => !sections.has(section));
  assert.deepEqual(missing, [], 'citations of sections PROTOCOL.md does not have');
});
