// Small process helpers shared by the scripts in this folder: the repository root, step
// headings, running a command with inherited stdio, and probing a command's output.

import { spawn, spawnSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** Absolute path of the repository root (no trailing slash). */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

/**
 * Print one concise step line, e.g. `==> wasm-pack build sdk`.
 * @param {string} message
 */
export function step(message) {
  console.log(`==> ${message}`);
}

/**
 * Run a command with inherited stdio and wait for it.
 * @param {string} cmd program name or path
 * @param {string[]} [args]
 * @param {{cwd?: string, env?: Record<string, string>}} [options] `env` is merged over `process.env`
 * @returns {Promise<void>} resolves on exit code 0; rejects with an Error naming the command otherwise
 */
export function run(cmd, args = [], { cwd = ROOT, env } = {}) {
  const line = [cmd, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd,
      env: env ? { ...process.env, ...env } : process.env,
      stdio: 'inherit',
    });
    child.on('error', (err) => reject(new Error(`\`${line}\` could not start: ${err.message}`)));
    child.on('exit', (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`\`${line}\` failed (${signal ? `signal ${signal}` : `exit code ${code}`})`));
    });
  });
}

/**
 * Run a command quietly and return its trimmed stdout.
 * @param {string} cmd
 * @param {string[]} [args]
 * @returns {string | null} stdout, or null when the command is missing or exits non-zero
 */
export function probe(cmd, args = []) {
  const result = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return result.status === 0 ? result.stdout.trim() : null;
}

/**
 * True when the module at `moduleUrl` is the script node was asked to run
 * (so a script can be both imported and run directly).
 * @param {string} moduleUrl the caller's `import.meta.url`
 */
export function isMain(moduleUrl) {
  const entry = process.argv[1];
  return Boolean(entry) && pathToFileURL(realpathSync(entry)).href === moduleUrl;
}

/**
 * Entry-point wrapper: run `main`, and on failure print the message and exit 1.
 * @param {() => Promise<void>} main
 */
export function runMain(main) {
  main().catch((err) => {
    console.error(`\nerror: ${err.message}`);
    process.exit(1);
  });
}
