// Silent server loss (seed 004 "Connection Monitoring"): two separate Chromium browsers build a
// DataChannel mesh through a real server-stub, then the server process is stopped (SIGSTOP:
// its sockets stay open, nothing answers). The mesh's tier machine must notice from the
// missing pongs alone and move both pages to the `webrtc` tier, while lane messages keep
// flowing peer to peer. The detection time is printed as a figure (target ≤ 3 s).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { connect, waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const LANES = [1, 2, 5, 6, 7];
const ROOM = 'mesh-silent';
const LINK_TIMEOUT_MS = 30_000;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e' });
});

after(async () => {
  // A stopped process ignores SIGTERM until continued.
  server?.proc.kill('SIGCONT');
  await server?.stop();
});

test('a stopped server (sockets open) moves the mesh to the webrtc tier by heartbeats; lanes keep flowing', { timeout: 120_000 }, async () => {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const pages = await Promise.all(browsers.map((b, i) => openSdkPage(b, server.url, 'AB'[i], 'music')));
    const ids = [];
    for (const [i, page] of pages.entries()) {
      ids.push((await connect(page, server.url, `silent-${'ab'[i]}`, LANES)).sessionId);
      await page.evaluate(async (room) => {
        window.meshInbox = [];
        window.meshEvents = [];
        window.mesh = await window.client.peerMesh(room, { rtcConfiguration: { iceServers: [] } });
        window.mesh.onMessage((m) => window.meshInbox.push({ from: m.from, lane: m.lane, data: m.data }));
        window.mesh.onEvent((e) => window.meshEvents.push(e));
      }, ROOM);
    }
    const [pa, pb] = pages;
    const [a, b] = ids;
    await waitFor(
      () => Promise.all([pa.evaluate((b) => window.mesh.peers.some((l) => l.peer === b && l.state === 'connected'), b), pb.evaluate((a) => window.mesh.peers.some((l) => l.peer === a && l.state === 'connected'), a)]).then((r) => r.every(Boolean)),
      LINK_TIMEOUT_MS,
      () => 'the A–B link',
    );
    // Pongs flow: the tier is socket (unless the loaded machine made the RTT ≥ 300 ms).
    const before = await Promise.all(pages.map((p) => p.evaluate(() => window.mesh.tier)));

    const stoppedAt = await Promise.all(pages.map((p) => p.evaluate(() => performance.now())));
    server.proc.kill('SIGSTOP');
    const changes = await Promise.all(pages.map((p, i) => waitFor(
      () => p.evaluate(() => window.meshEvents.find((e) => e.type === 'tier' && e.to === 'webrtc' && e.reason === 'heartbeat-timeout')),
      LINK_TIMEOUT_MS,
      async () => `page ${'AB'[i]} to leave the socket tier by heartbeat timeout (tier before: ${before[i]}); tier events ${JSON.stringify(await p.evaluate(() => window.meshEvents.filter((e) => e.type === 'tier')))}`,
    )));
    for (const [i, page] of pages.entries()) {
      assert.equal(await page.evaluate(() => window.mesh.tier), 'webrtc');
      // The WebSocket itself is still open: only the heartbeats told.
      assert.equal(await page.evaluate(() => window.client.state), 'open', `page ${'AB'[i]}'s socket is still open`);
    }
    const detection = changes.map((c, i) => Math.round(c.atMs - stoppedAt[i]));
    console.error(`figure p2p.silent-loss-detection: ${detection.join(' ms, ')} ms after SIGSTOP (target ≤ 3000; tier before: ${before.join(', ')})`);

    await pa.evaluate(() => window.mesh.send('Sync', { id: 'while-stopped', positionMs: 42 }));
    const got = await waitFor(
      () => pb.evaluate((a) => window.meshInbox.find((m) => m.from === a && m.data?.id === 'while-stopped'), a),
      LINK_TIMEOUT_MS,
      () => 'A\'s Sync message on B over the mesh while the server is stopped',
    );
    assert.deepEqual(got, { from: a, lane: 7, data: { id: 'while-stopped', positionMs: 42 } });

    await Promise.all(pages.map((p) => p.evaluate(() => { window.mesh.close(); window.client.close(); })));
  } finally {
    server.proc.kill('SIGCONT');
    await Promise.all(browsers.map((browser) => browser.close()));
  }
});
