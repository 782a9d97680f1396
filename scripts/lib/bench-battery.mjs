// The battery figures of issue 15 (seed 004: "< 5 % increase over Socket.IO only") for
// `npm run bench` (`battery.*` rows): renderer CPU read through the Chrome DevTools Protocol
// (`Performance.getMetrics`: TaskDuration, ScriptDuration) in real Chromium, and the payload
// bytes each page sends, while nothing happens.
//
// Scenarios, one after the other in one run, each measured over the same window (60 s;
// `P3_BATTERY_SECONDS` overrides it):
// - `mesh-off`: a 3-device music room through server-stub (three Chromium processes, one page
//   each, tests/pages/music.html): the DJ claims, loads a track and plays; the window starts
//   after a warm-up (join bursts, mesh links up) and contains no command.
// - `mesh-on`: the same with `peerToPeer` (Messaging lane, DataChannel mesh).
// - `idle-client`: one page connected with `P3Client.connect` (default lanes), no room.
// - `socketio-idle`: one page connected to socket.io 4 (its own client bundle, WebSocket
//   transport, default 25 s ping) for the idle baseline.
// Bytes are counted in the page by wrapping `WebSocket.prototype.send` and
// `RTCDataChannel.prototype.send` (payload bytes, no framing), per minute.
//
//   node scripts/lib/bench-battery.mjs      (after `node scripts/build-sdk.mjs` and a release
//                                            server-stub build; `npm run bench` does both)

import { createServer } from 'node:http';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Server } from 'socket.io';
import { launchBrowser, openSdkPage } from '../../tests/support/browser.mjs';
import { dj, launchMusicBrowser, openMusicPage, startMusicServer, track } from '../../tests/support/music.mjs';
import { mergeResults } from './bench-report.mjs';
import { isMain, ROOT, runMain, step } from './proc.mjs';

/** Measuring window per scenario, ms. */
const WINDOW_MS = Number(process.env.P3_BATTERY_SECONDS ?? 60) * 1000;
/** After the DJ plays, before the window starts (join bursts, mesh links, first stats), ms. */
const WARM_UP_MS = 8_000;
/** Seed 004's bound: the mesh may cost at most 5 % more CPU than the server path. */
const TARGET = 1.05;

/** Init script: counts the payload bytes the page sends, by kind, in `window.__p3Sent`. */
function countSends() {
  const sent = { ws: 0, wsFrames: 0, dc: 0, dcFrames: 0 };
  window.__p3Sent = sent;
  const size = (d) => (typeof d === 'string' ? new TextEncoder().encode(d).length : (d?.byteLength ?? d?.size ?? 0));
  const wsSend = WebSocket.prototype.send;
  WebSocket.prototype.send = function send(d) {
    sent.ws += size(d);
    sent.wsFrames += 1;
    return wsSend.call(this, d);
  };
  const dcSend = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function send(d) {
    sent.dc += size(d);
    sent.dcFrames += 1;
    return dcSend.call(this, d);
  };
}

/**
 * CPU and bytes of `page` over the window: what `Performance.getMetrics` and the send counters
 * moved by, scaled to one minute.
 * @param {import('playwright-core').Page[]} pages
 * @returns {Promise<{taskMs: number, scriptMs: number, wsBytes: number, dcBytes: number, wsFrames: number, dcFrames: number}[]>} per page, per minute
 */
async function measure(pages) {
  const sessions = await Promise.all(pages.map(async (page) => {
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Performance.enable', { timeDomain: 'threadTicks' }).catch(() => cdp.send('Performance.enable'));
    return cdp;
  }));
  const read = () => Promise.all(pages.map(async (page, i) => {
    const { metrics } = await sessions[i].send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    const sent = await page.evaluate(() => ({ ...window.__p3Sent }));
    return { task: m.TaskDuration, script: m.ScriptDuration, ...sent };
  }));
  const before = await read();
  const t0 = performance.now();
  await sleep(WINDOW_MS);
  const after = await read();
  const perMin = 60_000 / (performance.now() - t0);
  return after.map((a, i) => {
    const b = before[i];
    return {
      taskMs: (a.task - b.task) * 1000 * perMin,
      scriptMs: (a.script - b.script) * 1000 * perMin,
      wsBytes: (a.ws - b.ws) * perMin,
      dcBytes: (a.dc - b.dc) * perMin,
      wsFrames: (a.wsFrames - b.wsFrames) * perMin,
      dcFrames: (a.dcFrames - b.dcFrames) * perMin,
    };
  });
}

/** A 3-device music room, with or without the mesh; the per-device figures. */
async function musicRoom(url, p2p) {
  const browsers = await Promise.all([0, 1, 2].map(() => launchMusicBrowser({ autoplay: true })));
  try {
    const room = `battery-${p2p ? 'mesh' : 'server'}`;
    const pages = [];
    for (const label of ['A', 'B', 'C']) {
      pages.push(await openMusicPage(browsers[pages.length], url, { label, room, skewMs: 0, p2p, initScripts: [countSends], query: { stats: process.env.P3_BATTERY_STATS ?? 'default', quiet: '1' } }));
    }
    await dj(pages[0], 'claimController');
    await dj(pages[0], 'changeTrack', [track('a')]);
    await dj(pages[0], 'play', [0]);
    await sleep(WARM_UP_MS);
    if (p2p) {
      // The window is about the mesh: it must be up (every page linked to a peer).
      const linked = await Promise.all(pages.map((p) => p.page.evaluate(() => window.__p3Sent.dcFrames)));
      if (linked.some((n) => n === 0)) throw new Error(`mesh not up after ${WARM_UP_MS} ms: DataChannel sends per page ${linked}`);
    }
    return await measure(pages.map((p) => p.page));
  } finally {
    await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  }
}

/** One page connected to server-stub with the SDK's defaults, no room. */
async function idleClient(url) {
  const browser = await launchBrowser();
  try {
    const page = await openSdkPage(browser, url, 'idle');
    await page.evaluate(countSends);
    await page.evaluate(async () => {
      window.client = await window.sdk.P3Client.connect(location.origin, { clientId: 'battery-idle' });
    });
    await sleep(2_000);
    return (await measure([page]))[0];
  } finally {
    await browser.close().catch(() => {});
  }
}

/** One page connected to a socket.io 4 server (default ping: 25 s), WebSocket transport. */
async function socketIoIdle() {
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'], serveClient: true });
  await new Promise((resolve) => http.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${http.address().port}`;
  const browser = await launchBrowser();
  try {
    const page = await browser.newPage();
    await page.goto(`${base}/socket.io/socket.io.min.js`);
    await page.setContent('<!doctype html><title>socket.io idle</title>');
    await page.evaluate(countSends);
    await page.addScriptTag({ url: `${base}/socket.io/socket.io.min.js` });
    await page.evaluate((u) => new Promise((resolve, reject) => {
      window.socket = window.io(u, { transports: ['websocket'] });
      window.socket.on('connect', resolve);
      window.socket.on('connect_error', reject);
    }), base);
    await sleep(2_000);
    return (await measure([page]))[0];
  } finally {
    await browser.close().catch(() => {});
    io.close();
  }
}

const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * Run the scenarios and merge their `battery.*` rows into `resultsPath`.
 * @param {string} resultsPath bench-results.json
 */
export async function browserBattery(resultsPath) {
  const load = loadavg()[0];
  const music = await startMusicServer({ latencyMs: 0, jitterMs: 0 });
  let off;
  let on;
  let idle;
  try {
    step(`bench battery: 3-device music room through the server, ${WINDOW_MS / 1000} s`);
    off = await musicRoom(music.server.url, false);
    step(`bench battery: the same with the DataChannel mesh (peerToPeer), ${WINDOW_MS / 1000} s`);
    on = await musicRoom(music.server.url, true);
    step(`bench battery: idle connected client, ${WINDOW_MS / 1000} s`);
    idle = await idleClient(music.server.url);
  } finally {
    await music.stop();
  }
  step(`bench battery: idle socket.io 4 client, ${WINDOW_MS / 1000} s`);
  const sio = await socketIoIdle();

  const per = (xs, key) => xs.map((x) => round(x[key])).join(' / ');
  const cpu = (key) => ({ off: mean(off.map((x) => x[key])), on: mean(on.map((x) => x[key])) });
  const task = cpu('taskMs');
  const script = cpu('scriptMs');
  const bytes = (x) => x.wsBytes + x.dcBytes;
  const span = `${WINDOW_MS / 1000} s window, load average ${load.toFixed(1)}`;
  const sioBytes = bytes(sio);
  const rows = [
    {
      name: 'battery.mesh-on.task-ms-per-min',
      value: round(task.on),
      unit: 'ms/min',
      baseline: `renderer TaskDuration per device (mean of DJ/B/C ${per(on, 'taskMs')}) with the mesh; same room without it: ${round(task.off)} ms/min (${per(off, 'taskMs')}); seed 004 target ≤ ${TARGET}×; ${span}`,
      ratio: task.on / task.off,
    },
    {
      name: 'battery.mesh-on.script-ms-per-min',
      value: round(script.on),
      unit: 'ms/min',
      baseline: `renderer ScriptDuration per device (${per(on, 'scriptMs')}); without the mesh: ${round(script.off)} ms/min (${per(off, 'scriptMs')})`,
      ratio: script.on / script.off,
    },
    {
      name: 'battery.idle-client.task-ms-per-min',
      value: round(idle.taskMs),
      unit: 'ms/min',
      baseline: `connected P3Client, no room; idle socket.io 4 client: ${round(sio.taskMs)} ms/min`,
      ratio: idle.taskMs / sio.taskMs,
    },
    {
      name: 'battery.idle-client.bytes-per-min',
      value: round(bytes(idle), 0),
      unit: 'bytes/min',
      baseline: `payload bytes sent (${round(idle.wsFrames)} frames/min); socket.io 4 (25 s ping): ${round(sioBytes, 0)} bytes/min in ${round(sio.wsFrames)} frames/min`,
      ratio: bytes(idle) / Math.max(sioBytes, 1),
    },
    {
      name: 'battery.music-server.bytes-per-min',
      value: round(mean(off.map(bytes)), 0),
      unit: 'bytes/min',
      baseline: `per device, playing, no command (DJ/B/C ${off.map((x) => round(bytes(x), 0)).join(' / ')}: heartbeats, clock probes); socket.io 4 idle: ${round(sioBytes, 0)} bytes/min`,
      ratio: mean(off.map(bytes)) / Math.max(sioBytes, 1),
    },
    {
      name: 'battery.music-mesh.bytes-per-min',
      value: round(mean(on.map(bytes)), 0),
      unit: 'bytes/min',
      baseline: `per device with the mesh (DJ/B/C WebSocket ${per(on, 'wsBytes')}, DataChannel ${per(on, 'dcBytes')}: heartbeats, clock probes, mesh liveness, stats); socket.io 4 idle: ${round(sioBytes, 0)} bytes/min`,
      ratio: mean(on.map(bytes)) / Math.max(sioBytes, 1),
    },
  ];
  mergeResults(resultsPath, 'battery.', rows);
  console.log('\nbattery (renderer CPU per minute, bytes sent per minute):');
  for (const r of rows) console.log(`  ${r.name.padEnd(40)} ${String(r.value).padStart(10)} ${r.unit.padEnd(10)} ratio ${r.ratio.toFixed(3)}  (${r.baseline})`);
  return rows;
}

if (isMain(import.meta.url)) runMain(() => browserBattery(join(ROOT, 'bench-results.json')));
