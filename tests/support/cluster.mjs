// Several server-stub nodes as one server (issue 14): a redis-server, N nodes on it and an
// HAProxy in front, each a plain child process on free loopback ports (no system service).
// Debian's `redis-server` and `haproxy` packages provide the binaries (scripts/setup.mjs
// installs them when missing).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startServer } from './server.mjs';

const START_TIMEOUT_MS = 10_000;

/** Processes still running, killed if the test process exits without stopping them. */
const live = new Set();
process.on('exit', () => {
  for (const proc of live) proc.kill('SIGKILL');
});

/** @returns {Promise<number>} a loopback port free right now */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`. */
async function waitForPort(port, what) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const sock = tcpConnect(port, '127.0.0.1');
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} within ${START_TIMEOUT_MS} ms`);
    await sleep(50);
  }
}

/** Spawns `cmd` as a tracked child; stderr is kept for errors. */
function child(cmd, args) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(proc);
  proc.on('exit', () => live.delete(proc));
  proc.stderrTail = '';
  proc.stderr.on('data', (c) => (proc.stderrTail = (proc.stderrTail + c).slice(-4000)));
  return proc;
}

/** Kills `proc` and waits for it to exit. */
async function kill(proc, signal = 'SIGTERM') {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  proc.kill(signal);
  await exited;
}

/**
 * @typedef {object} Redis
 * @property {number} port
 * @property {string} url `redis://127.0.0.1:<port>/`
 * @property {(...args: string[]) => string} cli runs `redis-cli` against it, returns its output
 * @property {() => Promise<void>} kill SIGKILL (everything it held is gone: no persistence)
 * @property {() => Promise<void>} start starts it again on the same port after `kill`
 * @property {() => Promise<void>} stop
 */

/**
 * Starts `redis-server` without persistence on a free port.
 * @returns {Promise<Redis>}
 */
export async function startRedis() {
  const port = await freePort();
  const spawnRedis = async () => {
    const proc = child('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
    await waitForPort(port, 'redis-server');
    return proc;
  };
  let proc = await spawnRedis();
  return {
    port,
    url: `redis://127.0.0.1:${port}/`,
    cli: (...args) => execFileSync('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' }).trim(),
    kill: () => kill(proc, 'SIGKILL'),
    async start() {
      proc = await spawnRedis();
    },
    stop: () => kill(proc),
  };
}

/**
 * Starts HAProxy (HTTP mode, WebSocket-capable) with `frontends`: each a loopback port whose
 * handshakes (`POST .../session/handshake`) go to node `handshake` and every other request
 * (pages, tickets, sockets, streams) to node `rest`: so a session is handshaked on one node and
 * its socket opened on another, deterministically. While a node is down (health checks every
 * 200 ms), its requests go to the next node (`backup`): a client of a killed node reconnects
 * through the same URL to another node.
 * @param {{url: string}[]} nodes
 * @param {{handshake: number, rest: number}[]} frontends
 * @returns {Promise<{urls: string[], stop: () => Promise<void>}>}
 */
export async function startBalancer(nodes, frontends) {
  const ports = await Promise.all(frontends.map(() => freePort()));
  const host = (i) => new URL(nodes[i % nodes.length].url).host;
  const backend = (name, i) => `backend ${name}
  option redispatch
  retries 3
  server primary ${host(i)} check inter 200 fall 1 rise 2
  server backup ${host(i + 1)} check inter 200 fall 1 rise 2 backup
`;
  const cfg = `global
  maxconn 4096
defaults
  mode http
  option http-server-close
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
${frontends
  .map(
    (f, i) => `frontend f${i}
  bind 127.0.0.1:${ports[i]}
  acl handshake path_end /session/handshake
  use_backend f${i}_handshake if handshake
  default_backend f${i}_rest
${backend(`f${i}_handshake`, f.handshake)}${backend(`f${i}_rest`, f.rest)}`,
  )
  .join('')}`;
  const dir = mkdtempSync(join(tmpdir(), 'p3-haproxy-'));
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, cfg);
  const proc = child('haproxy', ['-db', '-f', file]);
  try {
    await Promise.all(ports.map((p) => waitForPort(p, 'haproxy')));
  } catch (err) {
    throw new Error(`${err.message}\n--- haproxy stderr ---\n${proc.stderrTail}`);
  }
  return {
    urls: ports.map((p) => `http://127.0.0.1:${p}`),
    async stop() {
      await kill(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Starts a redis-server, `nodes` server-stub nodes on it (`--redis-url`, `--node-id nodeI`)
 * and an HAProxy with `frontends` (see startBalancer).
 * @param {{nodes?: number, frontends: {handshake: number, rest: number}[], args?: string[]}} options
 */
export async function startCluster({ nodes = 3, frontends, args = [] }) {
  const redis = await startRedis();
  const servers = [];
  for (let i = 0; i < nodes; i++) {
    servers.push(await startServer({ appVersion: 'e2e', args: ['--redis-url', redis.url, '--node-id', `node${i}`, ...args] }));
  }
  const balancer = await startBalancer(servers, frontends);
  return {
    redis,
    nodes: servers,
    urls: balancer.urls,
    async stop() {
      await balancer.stop();
      await Promise.all(servers.map((s) => s.stop()));
      await redis.stop();
    },
  };
}
