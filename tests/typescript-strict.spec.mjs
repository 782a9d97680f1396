// The package's declarations under strict TypeScript (issue 16), as an app compiles them:
// `tsc --noEmit` with `strict` and `skipLibCheck: false` (tests/ts/tsconfig.json) over
// - every ```js / ```ts example of README.md and of the package's README (sdk/npm/README.md),
//   extracted here into tests/ts/.readme/ (one module per block; imports of the demo server's
//   paths become the package's specifiers: '/pkg/lanes/p3_lanes.js' 'p3-lanes',
//   '/pkg/music/p3_lanes.js' 'p3-lanes/music', '/pkg/pwa/p3_lanes.js' 'p3-lanes/pwa',
//   '/pkg/p3_lanes.js' 'p3-lanes/full', each '.auto.js' its '/auto' twin; the placeholders the examples
//   leave to the app are declared in tests/ts/readme-context.d.ts);
// - tests/ts/typed-lanes.ts (typed lanes, literal unions, `isP3Error` narrowing, with
//   `@ts-expect-error` lines for what must be refused) and tests/ts/entries.ts (the `auto` and
//   Node.js entries, `checkVersion(baseUrl)`).
// Needs pkg/ (`node scripts/build-sdk.mjs`) and the `typescript` dev dependency; no browser.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TS_DIR = join(ROOT, 'tests', 'ts');
const OUT_DIR = join(TS_DIR, '.readme');
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
const READMES = ['README.md', join('sdk', 'npm', 'README.md')];

/**
 * The ```js and ```ts blocks of a Markdown file.
 * @param {string} markdown
 * @returns {{line: number, code: string}[]}
 */
function codeBlocks(markdown) {
  const blocks = [];
  for (const m of markdown.matchAll(/^```(?:js|ts)\n([\s\S]*?)\n```$/gm)) {
    blocks.push({ line: markdown.slice(0, m.index).split('\n').length, code: m[1] });
  }
  return blocks;
}

/** Run tsc on tests/ts; returns its exit status and output. */
function tsc(project = TS_DIR) {
  const r = spawnSync(process.execPath, [TSC, '-p', project, '--pretty', 'false'], { encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

test('README examples, typed lanes and every entry compile under strict TypeScript', () => {
  rmSync(OUT_DIR, { recursive: true, force: true });
  mkdirSync(OUT_DIR, { recursive: true });
  let count = 0;
  for (const readme of READMES) {
    const stem = readme.replace(/[^a-z0-9]+/gi, '_');
    for (const { line, code } of codeBlocks(readFileSync(join(ROOT, readme), 'utf8'))) {
      // The served path of each entry (README "pkg/ is also an npm package") → its specifier.
      const source = code.replace(/'\/pkg\/(?:(lanes|music|pwa)\/)?p3_lanes(\.auto)?\.js'/g, (_, dir, auto) => {
        const entry = dir === undefined ? 'p3-lanes/full' : dir === 'lanes' ? 'p3-lanes' : `p3-lanes/${dir}`;
        return `'${entry}${auto ? '/auto' : ''}'`;
      });
      writeFileSync(join(OUT_DIR, `${stem}_L${line}.ts`), `// ${readme}:${line}\n${source}\nexport {};\n`);
      count += 1;
    }
  }
  assert.ok(count >= 15, `expected the READMEs' examples, found ${count} blocks`);
  const { status, output } = tsc();
  assert.equal(status, 0, `tsc --strict reported errors:\n${output}`);
});

test('the check fails on a type error (it is not vacuous)', () => {
  mkdirSync(OUT_DIR, { recursive: true });
  const bad = join(OUT_DIR, 'zz_must_fail.ts');
  writeFileSync(bad, "import { P3Client } from 'p3-lanes';\nconst c = await P3Client.connect(1);\nexport { c };\n");
  try {
    const { status, output } = tsc();
    assert.notEqual(status, 0);
    assert.match(output, /zz_must_fail\.ts.*TS2345/, output);
  } finally {
    rmSync(bad);
  }
});
