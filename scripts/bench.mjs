// Run the benchmarks. Each entry of BENCHES is one cargo bench target (a `[[bench]]` of its
// crate); each bench replaces its own entries in its results file (see the bench's source).

import { run, runMain, step } from './lib/proc.mjs';

/** @type {{name: string, args: string[], results: string}[]} */
const BENCHES = [
  { name: 'codec', args: ['bench', '-p', 'p3-lanes', '--bench', 'codec'], results: 'bench-results.json' },
  { name: 'sync', args: ['bench', '-p', 'p3-lanes', '--bench', 'sync'], results: 'bench-results.json' },
  { name: 'mux', args: ['bench', '-p', 'p3-lanes', '--bench', 'mux'], results: 'bench-results.json' },
];

async function main() {
  for (const bench of BENCHES) {
    step(`bench ${bench.name}: cargo ${bench.args.join(' ')}`);
    await run('cargo', bench.args);
    step(`bench ${bench.name}: results in ${bench.results}`);
  }
}

runMain(main);
