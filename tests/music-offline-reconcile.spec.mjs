// Music offline (issue #5 Tier 3) and reconciliation when the server returns, in three
// separate headless Chromium instances (tests/support/music.mjs) following one room with
// `peerToPeer` and a fixed `deviceId` each (PROTOCOL.md §13.12):
//
// 1. Full mesh on the socket tier; DJ A plays track a from 10 s.
// 2. The server is SIGKILLed AND every peer link is cut: each page's init script (`cutLinks`
//    below) wraps the real `RTCPeerConnection`; `__p3Links.cut()` closes every DataChannel and
//    connection the page made and makes the constructor throw until `__p3Links.restore()`
//    (we cannot use iptables on CI machines; this goes through the real browser API, and the
//    mesh sees what a dead network gives it: channels closing, new links failing). Every page
//    reaches the `offline` tier and keeps playing (currentTime advances).
// 3. Offline, A changes the track position (changeTrack to the same track at 40 s) and
//    pauses; B (independent mode: every device is its own controller offline) seeks to 100 s
//    first. Each resolves once queued in IndexedDB (`pendingChanges`).
// 4. A's page is reloaded while the server is down. Its page, SDK and track come from a
//    Playwright route (the app shell and media a service worker would serve; the server is
//    dead); the client cannot connect (`connect-failed`), so the page opens the room without
//    the server (`MusicRoom.openOffline`, PROTOCOL.md §13.12 "Starting offline") and keeps
//    trying to connect. The reloaded page reads its queue back from IndexedDB
//    (`OfflineChangeQueue.snapshot()`): both changes and the state they produced; the room is
//    on the `offline` tier with that state (paused at A's pause). A then plays offline (a
//    third queued change) and its element advances from the stored position.
// 5. The server restarts on the same port (it lost every session and room) and links are
//    restored. Every page reconnects under a new session (A's page connects and attaches its
//    client to the offline room, `room.attach`), the mesh links again under the new ids, each
//    page pushes its queue (`music-changes`), the server acknowledges (`music-changes-ack`) and
//    every page follows the server's state.
//
// Checked: every page converges to one state (same version, playing as A's last change, made
// after the reload, says, on track a, positions agree); every offline change appears exactly
// once in the servers' acks (`appliedOrder` over all pages), the version vector covers them,
// no page has pending changes left; the mesh is full again with the new session ids. The figure (server restart
// → every page converged, true clock) goes to test-results/music-offline-reconcile.json.

import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { waitFor } from './support/client.mjs';
import { checkFollow, djPlaysMidSong, settle } from './support/failover.mjs';
import { dj, launchMusicBrowser, musicServerForSpec, openMusicPage, roomState, sampleRound, track } from './support/music.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ROOM = 'e2e-offline-reconcile';
const PAGES = [
  { label: 'A', skewMs: 900, driftPpm: 20, device: 'dev-A' },
  { label: 'B', skewMs: -1200, driftPpm: -15, device: 'dev-B' },
  { label: 'C', skewMs: 400, driftPpm: 5, device: 'dev-C' },
];
const LINK_TIMEOUT_MS = 30_000;
/** Reconnect backoff after a ~30 s outage can reach 16 s (seed 001: 1, 2, 4, 8, 16 s). */
const CONVERGE_TIMEOUT_MS = 90_000;

const spec = musicServerForSpec();
const { browsers } = spec;

/**
 * Init script: the real RTCPeerConnection, with a switch to cut every link (see the header).
 */
function cutLinks() {
  const Native = window.RTCPeerConnection;
  const conns = new Set();
  const channels = new Set();
  let blocked = false;
  class Switched extends Native {
    constructor(...args) {
      if (blocked) throw new DOMException('peer links are cut (test)', 'NotAllowedError');
      super(...args);
      conns.add(this);
    }

    createDataChannel(...args) {
      const dc = super.createDataChannel(...args);
      channels.add(dc);
      return dc;
    }
  }
  window.RTCPeerConnection = Switched;
  window.__p3Links = {
    cut() {
      blocked = true;
      for (const dc of channels) dc.close();
      for (const pc of conns) pc.close();
      channels.clear();
      conns.clear();
    },
    restore() {
      blocked = false;
    },
  };
}

/** Serve the page, the SDK and the tracks from disk (the server may be dead): an app-shell cache. */
async function serveShell(page, url, mediaDir) {
  const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.wav': 'audio/wav' };
  const fulfill = (route, file) => {
    const ext = file.slice(file.lastIndexOf('.'));
    return route.fulfill({ status: 200, headers: { 'content-type': types[ext] ?? 'application/octet-stream' }, body: readFileSync(file) });
  };
  await page.route(`${url}/music.html*`, (route) => fulfill(route, join(ROOT, 'tests', 'pages', 'music.html')));
  // The SDK with its snippets (pkg/snippets/...).
  await page.route(`${url}/pkg/**`, (route) => {
    const path = decodeURIComponent(new URL(route.request().url()).pathname).slice('/pkg/'.length);
    if (path.split('/').includes('..')) return route.abort();
    return fulfill(route, join(ROOT, 'pkg', path));
  });
  await page.route(`${url}/media/*`, (route) => {
    const name = decodeURIComponent(new URL(route.request().url()).pathname).slice('/media/'.length);
    if (name.includes('/') || name.includes('..')) return route.abort();
    // Byte ranges, as the server answers them: the element seeks with Range requests.
    const body = readFileSync(join(mediaDir, name));
    const range = /^bytes=(\d+)-(\d*)$/.exec(route.request().headers().range ?? '');
    if (!range) return route.fulfill({ status: 200, headers: { 'content-type': 'audio/wav', 'accept-ranges': 'bytes' }, body });
    const start = Number(range[1]);
    const end = range[2] ? Math.min(Number(range[2]), body.length - 1) : body.length - 1;
    return route.fulfill({
      status: 206,
      headers: { 'content-type': 'audio/wav', 'accept-ranges': 'bytes', 'content-range': `bytes ${start}-${end}/${body.length}` },
      body: body.subarray(start, end + 1),
    });
  });
}

const evalRoom = (p, f, arg) => p.page.evaluate(f, arg);

test('offline: each device plays on and queues its changes (surviving a reload); the server returns and all converge, each change applied once', { timeout: 300_000 }, async () => {
  const url = spec.music.server.url;
  // A's page is served by a Playwright route after its reload (no server address), which
  // Chromium's Local Network Access checks treat as a public page and then refuse its
  // WebSocket to 127.0.0.1; a real app shell would come from the same loopback origin.
  const lna = ['--disable-features=LocalNetworkAccessChecks'];
  browsers.push(...(await Promise.all(PAGES.map((_, i) => launchMusicBrowser({ autoplay: true, extraArgs: i === 0 ? lna : [] })))));
  const pages = [];
  for (const [i, p] of PAGES.entries()) {
    pages.push(await openMusicPage(browsers[i], url, { ...p, room: ROOM, p2p: true, retry: true, offline: i === 0, initScripts: [cutLinks] }));
  }
  // A's page must load again while the server is dead (step 4).
  await serveShell(pages[0].page, url, spec.music.mediaDir);
  const [a, b, c] = pages;

  await Promise.all(pages.map((p) => waitFor(
    () => evalRoom(p, () => window.music.room.peers.length === 2 && window.music.room.tier === 'socket' && window.music.room.pendingChanges === 0),
    LINK_TIMEOUT_MS,
    () => `${p.label}: two connected peers on the socket tier, an empty offline queue`,
  )));
  for (const p of pages) assert.equal(await evalRoom(p, () => window.music.room.deviceId), PAGES[pages.indexOf(p)].device);

  await djPlaysMidSong(pages);

  // No server, no links.
  spec.music.server.proc.kill('SIGKILL');
  await Promise.all(pages.map((p) => evalRoom(p, () => window.__p3Links.cut())));
  await Promise.all(pages.map((p) => waitFor(
    () => p.events.find((e) => e.type === 'tier' && e.to === 'offline'),
    LINK_TIMEOUT_MS,
    () => `${p.label}: a tier event to offline; events ${JSON.stringify(p.events.filter((e) => e.type !== 'clock').slice(-8))}`,
  )));
  // Each keeps playing on its own.
  const r1 = await sampleRound(pages);
  await sleep(1500);
  const r2 = await sampleRound(pages);
  for (const [i, r] of r2.readings.entries()) {
    const advanced = r.position - r1.readings[i].position;
    assert.ok(!r.paused && advanced > 1.0 && advanced < 2.0, `${r.label} advanced ${advanced.toFixed(3)} s in 1.5 s offline`);
  }

  // Changes offline: B (its own controller now) seeks first, then A changes position and pauses.
  const bSeek = await dj(b, 'seek', [100]);
  assert.equal(bSeek.position, 100);
  const aTrack = await dj(a, 'changeTrack', [track('a'), 40]);
  const aPause = await dj(a, 'pause');
  assert.equal(aTrack.trackId, track('a').id);
  assert.equal(aPause.isPlaying, false);
  assert.equal(await evalRoom(a, () => window.music.room.pendingChanges), 2);
  assert.equal(await evalRoom(b, () => window.music.room.pendingChanges), 1);
  assert.equal(await evalRoom(c, () => window.music.room.pendingChanges), 0);
  // A is paused locally, B jumped, C plays on.
  await sleep(800);
  const r3 = await sampleRound(pages);
  assert.ok(r3.readings[0].paused, 'A paused offline');
  assert.ok(Math.abs(r3.readings[1].position - (100 + (r3.atMs - bSeek.referenceTime) / 1000)) < 0.5, `B at ${r3.readings[1].position} after its seek to 100`);
  assert.ok(!r3.readings[2].paused, 'C plays on');

  // Reload A while the server is down: the queue and the state it produced are still there.
  a.events.length = 0;
  await a.page.reload();
  await waitFor(() => a.events.find((e) => e.type === 'connect-failed'), 30_000, () => `A reloaded: connect-failed; ${JSON.stringify(a.events)}`);
  const stored = await a.page.evaluate(async () => {
    const q = await window.music.sdk.OfflineChangeQueue.open('e2e-offline-reconcile', 'dev-A');
    const s = await q.snapshot();
    q.close();
    return s;
  });
  assert.deepEqual(stored.pending.map((ch) => [ch.origin, ch.localSeq, ch.op.action]), [['dev-A', 1, 'change-track'], ['dev-A', 2, 'pause']]);
  assert.equal(stored.roomState.isPlaying, false);
  assert.equal(stored.roomState.trackId, track('a').id);
  assert.equal(stored.roomState.position, aPause.position);

  // The reloaded page opened the room without the server, on the stored state, and plays it
  // on (A's own change, the third in its queue).
  await waitFor(() => a.events.find((e) => e.type === 'ready' || e.type === 'page-error'), 30_000, () => `A reloaded: ready offline; ${JSON.stringify(a.events)}`);
  const opened = a.events.find((e) => e.type === 'offline-opened');
  assert.ok(opened, `A opened the room offline; ${JSON.stringify(a.events)}`);
  assert.equal(opened.tier, 'offline');
  assert.deepEqual([opened.state?.trackId, opened.state?.isPlaying, opened.state?.position], [track('a').id, false, aPause.position], 'A restored the paused state');
  assert.equal(await evalRoom(a, () => window.music.room.pendingChanges), 2);
  const aPlay = await dj(a, 'play');
  assert.equal(aPlay.isPlaying, true);
  assert.equal(aPlay.position, aPause.position, 'A plays on from the stored position');
  assert.equal(await evalRoom(a, () => window.music.room.pendingChanges), 3);
  await settle(aPlay, 1500);
  const p1 = await sampleRound([a]);
  await sleep(1500);
  const p2 = await sampleRound([a]);
  const [ra1, ra2] = [p1.readings[0], p2.readings[0]];
  const advancedA = ra2.position - ra1.position;
  assert.ok(!ra2.paused && advancedA > 1.0 && advancedA < 2.0, `A (reloaded, offline) advanced ${advancedA.toFixed(3)} s in 1.5 s`);
  assert.ok(ra1.position > aPause.position && ra1.position < aPause.position + 5, `A at ${ra1.position}, from the stored ${aPause.position}`);

  // The server comes back (new process: sessions and rooms lost), links are allowed again.
  const marks = pages.map((p) => p.events.length);
  await spec.music.server.restart();
  const backMs = Date.now();
  await Promise.all([b, c].map((p) => evalRoom(p, () => window.__p3Links.restore())));
  await waitFor(() => a.events.find((e) => e.type === 'attached'), 60_000, () => `A attached a client; ${JSON.stringify(a.events.slice(-8))}`);

  const converged = async () => {
    const states = await Promise.all(pages.map(async (p) => ({
      s: await roomState(p),
      pending: await evalRoom(p, () => window.music.room.pendingChanges),
    })));
    const [first] = states;
    // Every page's push was acknowledged, C's too (it has no changes but carries its seed,
    // PROTOCOL.md §13.14): a push answered later could still raise the room's epoch.
    const pushed = pages.every((p, i) => p.events.slice(p === a ? 0 : marks[i]).some((e) => e.type === 'reconciled' && e.trueMs >= backMs));
    return pushed && states.every(({ s, pending }) => pending === 0 && s && first.s && s.epoch === first.s.epoch && s.sequence === first.s.sequence && s.isPlaying)
      && ['dev-A', 'dev-B'].every((d) => pages.some((p) => p.events.some((e) => e.type === 'reconciled' && e.appliedOrder.some(([o]) => o === d))));
  };
  await waitFor(converged, CONVERGE_TIMEOUT_MS, async () => `convergence; states ${JSON.stringify(await Promise.all(pages.map(async (p) => [p.label, await roomState(p), await evalRoom(p, () => window.music.room.pendingChanges)])))}; reconciled ${JSON.stringify(pages.map((p) => p.events.filter((e) => e.type === 'reconciled')))}`);
  const convergedMs = Date.now() - backMs;

  // Figures first (so a lost or doubled change shows in `npm run bench` as a number), then
  // the checks. Per page: server back → its push acknowledged (`reconciled`; C pushes only
  // its seed), → its first state from the new server.
  const made = ['dev-A/1', 'dev-A/2', 'dev-A/3', 'dev-B/1'];
  const acks = pages.flatMap((p) => p.events.filter((e) => e.type === 'reconciled'));
  const applied = acks.flatMap((e) => e.appliedOrder.map(([o, n]) => `${o}/${n}`)).sort();
  const perPage = pages.map((p, i) => {
    // A's offline room reported its restored state before the server was back: not counted.
    const since = p.events.slice(p === a ? 0 : marks[i]).filter((e) => e.trueMs >= backMs);
    const at = (f) => since.find(f)?.trueMs;
    const ms = (t) => (t === undefined ? null : Math.round(t - backMs));
    return { label: p.label, reconciledMs: ms(at((e) => e.type === 'reconciled')), firstStateMs: ms(at((e) => e.type === 'state')) };
  });
  const figures = {
    scenario: 'offline-reconcile',
    convergedAfterServerBackMs: convergedMs,
    perPage,
    changes: made.length,
    lost: made.filter((c) => !applied.includes(c)).length,
    duplicated: applied.length - new Set(applied).size,
    serverBackTrueMs: backMs,
    acks,
  };
  console.log(`server back → every page converged (pending 0, one state): ${convergedMs} ms; per page ${JSON.stringify(perPage)}`);
  mkdirSync('test-results', { recursive: true });
  writeFileSync('test-results/music-offline-reconcile.json', `${JSON.stringify(figures, null, 2)}\n`);

  // One state, A's offline play (after its pause and the reload) last, on track a, followed
  // by every page.
  const final = await roomState(a);
  assert.equal(final.isPlaying, true);
  assert.equal(final.trackId, track('a').id);
  await settle(final, 2500);
  await checkFollow(pages, final, 'after reconciliation');

  // Each offline change applied exactly once by the server.
  assert.deepEqual(applied, made);
  const vv = acks.reduce((last, e) => (e.trueMs > last.trueMs ? e : last)).versionVector;
  assert.ok(vv['dev-A'] >= 3 && vv['dev-B'] >= 1, `version vector ${JSON.stringify(vv)}`);
  for (const p of pages) {
    const errors = p.events.slice(p === a ? 0 : marks[pages.indexOf(p)]).filter((e) => e.type === 'error');
    assert.deepEqual(errors, [], `${p.label}: errors after the server returned`);
  }

  // The mesh links again under the new session ids (per page: when it had both links).
  const linkedMs = {};
  await Promise.all(pages.map(async (p) => {
    await waitFor(
      () => evalRoom(p, () => window.music.room.peers.length === 2 && window.music.room.tier === 'socket'),
      LINK_TIMEOUT_MS,
      async () => `${p.label}: two peers again on the socket tier; ${JSON.stringify(await evalRoom(p, () => [window.music.room.tier, window.music.room.peers, window.music.client.sessionId]))}`,
    );
    linkedMs[p.label] = Date.now() - backMs;
  }));
  const ids = await Promise.all(pages.map((p) => evalRoom(p, () => window.music.client.sessionId)));
  for (const [i, p] of pages.entries()) {
    const peers = await evalRoom(p, () => window.music.room.peers);
    assert.deepEqual([...peers].sort(), ids.filter((_, j) => j !== i).sort(), `${p.label}: linked to the others' new ids`);
  }
  figures.meshRelinkedMs = Date.now() - backMs;
  figures.linkedMs = linkedMs;
  console.log(`server back → full mesh again under the new ids: ${figures.meshRelinkedMs} ms; per page ${JSON.stringify(linkedMs)}`);
  writeFileSync('test-results/music-offline-reconcile.json', `${JSON.stringify(figures, null, 2)}\n`);
});
