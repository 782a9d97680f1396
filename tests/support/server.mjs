// Start and stop a real server-stub for end-to-end tests. The release binary must already be
// built (`npm test` builds it; or `cargo build --release -p server-stub`).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const TARGET_DIR = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');

/** Path of the server-stub release binary (`P3_SERVER_BIN` overrides it). */
export const SERVER_BIN = process.env.P3_SERVER_BIN ?? join(TARGET_DIR, 'release', 'server-stub');

const LISTENING = /^listening on (http:\/\/\S+:(\d+))\s*$/m;
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const LOG_TAIL_CHARS = 4_000;

/** Servers still running, killed if the test process exits without stopping them. */
const live = new Set();
process.on('exit', () => {
  for (const proc of live) proc.kill('SIGKILL');
});

/**
 * @typedef {object} Server
 * @property {string} url      base URL, e.g. `http://127.0.0.1:41234` (no trailing slash)
 * @property {number} port
 * @property {string} adminToken the `--admin-token` it was started with
 * @property {import('node:child_process').ChildProcess} proc the current server process
 * @property {() => Promise<void>} stop     SIGTERM, then SIGKILL after 5 s; safe to call twice
 * @property {() => Promise<void>} restart  SIGKILL (all sessions lost), start again on the same port
 */

/**
 * Spawn server-stub on 127.0.0.1 and wait for its `listening on http://ip:port` line.
 * @param {object} [options]
 * @param {number} [options.port] 0 (default) lets the server pick a free port
 * @param {string} [options.appVersion] passed as `--app-version`
 * @param {Record<string, string>} [options.env] extra environment (e.g. `WS_HEARTBEAT_INTERVAL`)
 * @param {string[]} [options.args] extra command-line arguments
 * @returns {Promise<Server>}
 */
/** The admin token every test server gets (`--admin-token`): `/api/admin/*` needs it as `Authorization: Bearer`. */
export const ADMIN_TOKEN = 'e2e-admin-token-0123456789';

export async function startServer({ port = 0, appVersion, env = {}, args = [] } = {}) {
  if (!existsSync(SERVER_BIN)) {
    throw new Error(`${SERVER_BIN} not found: run \`cargo build --release -p server-stub\` first`);
  }
  const extraArgs = ['--admin-token', ADMIN_TOKEN, ...(appVersion ? ['--app-version', appVersion] : []), ...args];
  const spawnOn = (p) => spawnServer(p, extraArgs, env);

  let current = await spawnOn(port);
  return {
    url: current.url,
    port: current.port,
    adminToken: ADMIN_TOKEN,
    get proc() {
      return current.proc;
    },
    stop: () => stopProcess(current.proc),
    async restart() {
      await killProcess(current.proc);
      current = await retry(() => spawnOn(current.port));
    },
  };
}

/**
 * A spec's server: registers a `before` hook that starts one (`startServer(options)`) into
 * `spec.server` and an `after` hook that stops it.
 * @param {Parameters<typeof startServer>[0]} [options]
 * @returns {{server: Server | undefined}}
 */
export function serverForSpec(options) {
  const spec = { server: undefined };
  before(async () => {
    spec.server = await startServer(options);
  });
  after(async () => {
    await spec.server?.stop();
  });
  return spec;
}

/**
 * Spawn one server process and resolve once it prints its listening line.
 * Server output after that line is forwarded to stderr prefixed with `[server-stub]`.
 * @param {number} port
 * @param {string[]} args
 * @param {Record<string, string>} env
 * @returns {Promise<{proc: import('node:child_process').ChildProcess, url: string, port: number}>}
 */
function spawnServer(port, args, env) {
  const proc = spawn(SERVER_BIN, ['--host', '127.0.0.1', '--port', String(port), ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  live.add(proc);
  proc.on('exit', () => live.delete(proc));

  let stdout = '';
  let stderrTail = '';
  let started = false;
  const forward = (chunk) => {
    if (started) process.stderr.write(prefixLines(chunk.toString()));
  };
  proc.stderr.on('data', (chunk) => {
    stderrTail = (stderrTail + chunk).slice(-LOG_TAIL_CHARS);
    forward(chunk);
  });

  return new Promise((resolve, reject) => {
    const fail = (why) => {
      clearTimeout(timer);
      proc.kill('SIGKILL');
      reject(new Error(`server-stub ${why}\n--- server-stub stderr (tail) ---\n${stderrTail}`));
    };
    const timer = setTimeout(() => fail(`did not print "listening on ..." within ${START_TIMEOUT_MS} ms`), START_TIMEOUT_MS);
    proc.on('error', (err) => fail(`could not start: ${err.message}`));
    proc.on('exit', (code, signal) => {
      if (!started) fail(`exited before listening (${signal ?? `code ${code}`})`);
    });
    proc.stdout.on('data', (chunk) => {
      if (started) return forward(chunk);
      stdout += chunk;
      const match = LISTENING.exec(stdout);
      if (!match) return;
      started = true;
      clearTimeout(timer);
      resolve({ proc, url: match[1], port: Number(match[2]) });
    });
  });
}

/**
 * Retry a server start a few times: right after a SIGKILL the port can still be briefly busy.
 * @template T
 * @param {() => Promise<T>} attempt
 * @returns {Promise<T>}
 */
async function retry(attempt, tries = 10, pauseMs = 300) {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (i >= tries) throw err;
      await sleep(pauseMs);
    }
  }
}

/**
 * SIGTERM, then SIGKILL if the process is still running after 5 s.
 * @param {import('node:child_process').ChildProcess} proc
 */
async function stopProcess(proc) {
  if (exited(proc)) return;
  const gone = onceExited(proc);
  proc.kill('SIGTERM');
  const timer = setTimeout(() => proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await gone;
  clearTimeout(timer);
}

/**
 * SIGKILL and wait for the exit.
 * @param {import('node:child_process').ChildProcess} proc
 */
async function killProcess(proc) {
  if (exited(proc)) return;
  const gone = onceExited(proc);
  proc.kill('SIGKILL');
  await gone;
}

/** @param {import('node:child_process').ChildProcess} proc */
function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** @param {import('node:child_process').ChildProcess} proc */
function onceExited(proc) {
  return new Promise((resolve) => proc.once('exit', resolve));
}

/** @param {string} text */
function prefixLines(text) {
  return text.replace(/^(?=.)/gm, '[server-stub] ');
}
