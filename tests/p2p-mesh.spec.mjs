// Three separate Chromium browsers, each with the SDK loaded from a real server-stub, build a
// WebRTC DataChannel mesh in one room (signaling through the server on the Messaging lane;
// loopback host candidates, `iceServers: []`) and exchange lane messages peer to peer,
// including one larger than a 16 KiB chunk. Then the server process is SIGKILLed: the mesh
// keeps carrying lane messages, and a link that is closed while the server is down (A–C) comes
// back with its signaling relayed by the peer connected to both (B).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { connect, waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const LANES = [1, 2, 5, 6, 7];
const ROOM = 'mesh-e2e';
const MESSAGING = 2;
const DATA = 5;
const TELEMETRY = 6;
const SYNC = 7;
const CHUNK_BYTES = 16 * 1024;
const BULK_COUNT = 64;
const BULK_BYTES = 64 * 1024;
/** Messages in flight through the server: 4 × 64 KiB, a quarter of a receiver's lane queue. */
const SERVER_WINDOW = 4;

const LINK_TIMEOUT_MS = 30_000;
const DELIVERY_TIMEOUT_MS = 10_000;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e' });
});

after(async () => {
  await server?.stop();
});

test('three browsers exchange lanes over DataChannels, keep doing so after a server SIGKILL, and heal a link through a relaying peer', { timeout: 180_000 }, async () => {
  const browsers = [];
  try {
    for (let i = 0; i < 3; i++) browsers.push(await launchBrowser());
    const pages = await Promise.all(browsers.map((b, i) => openSdkPage(b, server.url, 'ABC'[i])));
    const ids = [];
    for (const [i, page] of pages.entries()) {
      const { sessionId } = await connect(page, server.url, `mesh-${'abc'[i]}`, LANES);
      ids.push(sessionId);
      await startMesh(page);
    }
    const [pa, pb, pc] = pages;
    const [a, b, c] = ids;

    // Full mesh: every page holds a connected link to the two others.
    await Promise.all(pages.map((p, i) => waitLinks(p, ids.filter((_, j) => j !== i), 'ABC'[i])));

    // Broadcast on Messaging, one peer on Sync, and a 40 KiB value on Data (chunked).
    const big = 'x'.repeat(40 * 1024);
    const framesBefore = await pb.evaluate((c) => window.mesh.linkStats(c).framesSent, c);
    await send(pa, 'Messaging', { id: 'a-hello', text: 'hi over WebRTC ✓' });
    await send(pb, DATA, { id: 'b-big', big }, c);
    await send(pc, 'Sync', { id: 'c-sync', state: { positionMs: 1234, playing: true } }, a);
    await expectOnce(pb, a, MESSAGING, { id: 'a-hello', text: 'hi over WebRTC ✓' });
    await expectOnce(pc, a, MESSAGING, { id: 'a-hello', text: 'hi over WebRTC ✓' });
    await expectOnce(pc, b, DATA, { id: 'b-big', big });
    await expectOnce(pa, c, SYNC, { id: 'c-sync', state: { positionMs: 1234, playing: true } });
    const framesAfter = await pb.evaluate((c) => window.mesh.linkStats(c).framesSent, c);
    assert.ok(framesAfter - framesBefore >= Math.ceil((40 * 1024) / CHUNK_BYTES), `40 KiB went out in ${framesAfter - framesBefore} DataChannel messages, expected at least 3 chunks`);
    // B did not receive C's message to A, nor B's own big message.
    assert.equal((await inbox(pb)).filter((m) => m.data?.id === 'c-sync' || m.data?.id === 'b-big').length, 0);

    // Bulk: 64 × 64 KiB from B to C on Data. The multiplexer writes while `bufferedAmount` is
    // under its high-water mark and resumes on `bufferedamountlow`; everything arrives once, in
    // order. The same transfer through the server's WebSocket is the baseline of the figure.
    // The server does not flow-control a relay end to end: a receiver whose lane queue
    // (`--lane-queue-bytes`, 1 MiB = 16 of these) is full makes it refuse the sender's frame
    // with a `backpressure` error (PROTOCOL §5, §17). So the server path keeps at most
    // SERVER_WINDOW messages in flight, as an app moving bulk through the server must; a
    // refusal fails the test.
    const meshMs = await bulk(pb, pc, b, 'mesh', (lane, data, to) => window.mesh.send(lane, data, to), c, BULK_COUNT);
    const serverMs = await bulk(pb, pc, b, 'server', (lane, data, to) => window.client.send(lane, data, to), c, SERVER_WINDOW);
    console.error(`figure p2p.bulk: ${BULK_COUNT} × ${BULK_BYTES / 1024} KiB B→C over the DataChannel ${meshMs} ms, through server-stub ${serverMs} ms with ${SERVER_WINDOW} in flight (ratio ${(meshMs / serverMs).toFixed(2)})`);

    // Call quality from getStats(): a class per link, published to the peer on Telemetry.
    const quality = await waitFor(
      () => pa.evaluate((b) => window.meshEvents.find((e) => e.type === 'quality' && e.peer === b), b),
      LINK_TIMEOUT_MS,
      () => 'a quality event on A for B',
    );
    assert.ok(['excellent', 'good', 'poor', 'critical'].includes(quality.quality));
    assert.equal(quality.stats.iceState === 'connected' || quality.stats.iceState === 'completed', true, JSON.stringify(quality));
    assert.equal(typeof quality.stats.rtt, 'number');
    await waitFor(
      async () => (await inbox(pb)).some((m) => m.from === a && m.lane === TELEMETRY && m.data?.type === 'link-stats'),
      LINK_TIMEOUT_MS,
      () => 'link-stats from A on B\'s Telemetry lane',
    );

    // The server dies: its sockets drop, the mesh carries on.
    server.proc.kill('SIGKILL');
    await Promise.all(pages.map((p, i) => waitFor(
      () => p.evaluate(() => window.client.state !== 'open'),
      LINK_TIMEOUT_MS,
      () => `client ${'ABC'[i]} to notice the server is gone`,
    )));
    // The tier machine moves every page to the mesh (webrtc): its links are usable.
    await Promise.all(pages.map((p, i) => waitFor(
      () => p.evaluate(() => window.mesh.tier === 'webrtc' && window.meshEvents.some((e) => e.type === 'tier' && e.to === 'webrtc')),
      LINK_TIMEOUT_MS,
      async () => `page ${'ABC'[i]} on the webrtc tier; tier events ${JSON.stringify(await p.evaluate(() => window.meshEvents.filter((e) => e.type === 'tier')))}`,
    )));
    await send(pa, 'Messaging', { id: 'a-after-kill' });
    await send(pc, DATA, { id: 'c-after-kill', big }, b);
    await expectOnce(pb, a, MESSAGING, { id: 'a-after-kill' });
    await expectOnce(pc, a, MESSAGING, { id: 'a-after-kill' });
    await expectOnce(pb, c, DATA, { id: 'c-after-kill', big });

    // Heal without the server: A closes its link to C; both reopen it after 1 s with the
    // offer/answer/ICE relayed by B over its DataChannels.
    const mark = await pa.evaluate(() => window.meshEvents.length);
    await pa.evaluate((c) => window.mesh.closeLink(c), c);
    await waitFor(
      () => pa.evaluate(({ c, mark }) => window.meshEvents.slice(mark).some((e) => e.type === 'peer-state' && e.peer === c && e.state === 'closed'), { c, mark }),
      LINK_TIMEOUT_MS,
      () => 'A to report its link to C closed',
    );
    // Queued while the link is down: delivered once it is back.
    await send(pa, 'Sync', { id: 'a-while-down' }, c);
    try {
      await waitLinks(pa, [b, c], 'A after the heal', mark);
    } catch (err) {
      // The relay's and C's side of the story, for the failure report.
      for (const [name, page] of [['B', pb], ['C', pc]]) {
        const seen = await page.evaluate(() => ({ peers: window.mesh.peers, events: window.meshEvents.filter((e) => e.type !== 'quality') }));
        console.error(`${name}: ${JSON.stringify(seen)}`);
      }
      throw err;
    }
    await waitLinks(pc, [a, b], 'C after the heal');
    await expectOnce(pc, a, SYNC, { id: 'a-while-down' });
    const relayed = await pb.evaluate(() => window.meshEvents.filter((e) => e.type === 'signal-relayed'));
    assert.ok(relayed.some((e) => e.from === a && e.to === c), `B relayed A's signals to C: ${JSON.stringify(relayed)}`);
    assert.ok(relayed.some((e) => e.from === c && e.to === a), `B relayed C's signals to A: ${JSON.stringify(relayed)}`);
    await send(pc, 'Messaging', { id: 'c-after-heal' }, a);
    await expectOnce(pa, c, MESSAGING, { id: 'c-after-heal' });

    const errors = (await Promise.all(pages.map((p) => p.evaluate(() => window.meshEvents.filter((e) => e.type === 'error'))))).flat();
    // Signals to a dead server fail with `closed`/`backpressure` only if the client refused
    // them; WebRTC steps must not fail.
    assert.deepEqual(errors.filter((e) => e.code === 'webrtc_failed'), []);

    await Promise.all(pages.map((p) => p.evaluate(() => { window.mesh.close(); window.client.close(); })));
  } finally {
    await Promise.all(browsers.map((browser) => browser.close()));
  }
});

/**
 * Create the page's PeerMesh in ROOM (`window.mesh`), recording its messages in
 * `window.meshInbox` and its events in `window.meshEvents`.
 * @param {import('playwright-core').Page} page
 */
function startMesh(page) {
  return page.evaluate(async (room) => {
    window.meshInbox = [];
    window.meshEvents = [];
    const mesh = await window.client.peerMesh(room, { rtcConfiguration: { iceServers: [] }, statsIntervalMs: 500 });
    window.mesh = mesh;
    // Bulk blobs are recorded by their length (the inbox is read back often).
    const record = (d) => (d && typeof d.blob === 'string' ? { ...d, blob: d.blob.length } : d);
    mesh.onMessage((m) => window.meshInbox.push({ from: m.from, lane: m.lane, data: record(m.data) }));
    mesh.onEvent((e) => window.meshEvents.push(e));
  }, ROOM);
}

/**
 * Wait until the page's mesh reports a connected link to each of `peers` (from `peer-state`
 * events after index `since`, and `mesh.peers`).
 * @param {import('playwright-core').Page} page
 * @param {string[]} peers
 * @param {string} label
 * @param {number} [since]
 */
function waitLinks(page, peers, label, since = 0) {
  return waitFor(
    () => page.evaluate(({ peers }) => peers.every((p) => window.mesh.peers.some((l) => l.peer === p && l.state === 'connected')), { peers, since }),
    LINK_TIMEOUT_MS,
    async () => `${label}: connected links to ${peers.join(', ')}; peers now ${JSON.stringify(await page.evaluate(() => window.mesh.peers))}, events ${JSON.stringify(await page.evaluate((since) => window.meshEvents.slice(since), since))}`,
  );
}

/**
 * @param {import('playwright-core').Page} page
 * @param {number | string} lane
 * @param {object} data
 * @param {string} [to]
 */
function send(page, lane, data, to) {
  return page.evaluate(({ lane, data, to }) => window.mesh.send(lane, data, to), { lane, data, to });
}

/**
 * Send BULK_COUNT values of BULK_BYTES on Data from `sender` to `receiver` (session `to`) with
 * `sendFn` run in the sender page, at most `inFlight` of them ahead of what the receiver holds
 * (in the mesh inbox for `via` 'mesh', the client inbox for 'server'); check that all arrived
 * once, in order, and that the sender's client reported no `error` event meanwhile (a server
 * refusal such as `backpressure`); return the elapsed ms.
 * @param {import('playwright-core').Page} sender
 * @param {import('playwright-core').Page} receiver
 * @param {string} from sender's session id
 * @param {'mesh' | 'server'} via
 * @param {(lane: number, data: object, to: string) => void} sendFn
 * @param {string} to
 * @param {number} inFlight messages in flight at most
 */
async function bulk(sender, receiver, from, via, sendFn, to, inFlight) {
  await sender.evaluate(() => {
    window.bulkRefusals = [];
    window.bulkUnsubscribe?.();
    window.bulkUnsubscribe = window.client.onEvent((e) => {
      if (e.type === 'error') window.bulkRefusals.push(e);
    });
  });
  const received = () => receiver.evaluate(({ via, from }) => {
    const box = via === 'mesh' ? window.meshInbox : window.inbox.map((m) => ({ from: m.from, data: m.value }));
    const got = box.filter((m) => m.from === from && typeof m.data?.id === 'string' && m.data.id.startsWith(`bulk-${via}-`));
    return got.map((m) => [m.data.seq, typeof m.data.blob === 'string' ? m.data.blob.length : m.data.blob]);
  }, { via, from });
  const t0 = Date.now();
  let seqs = [];
  for (let sent = 0; sent < BULK_COUNT;) {
    const upTo = Math.min(BULK_COUNT, sent + inFlight);
    await sender.evaluate(async ({ first, end, bytes, via, send, to }) => {
      const sendOne = new Function('lane', 'data', 'to', `return (${send})(lane, data, to)`);
      const blob = 'b'.repeat(bytes);
      for (let i = first; i < end; i++) {
        for (;;) {
          try {
            sendOne(5, { id: `bulk-${via}-${i}`, seq: i, blob }, to);
            break;
          } catch (err) {
            if (err.code !== 'backpressure') throw err;
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      }
    }, { first: sent, end: upTo, bytes: BULK_BYTES, via, send: sendFn.toString(), to });
    sent = upTo;
    // The next messages go out once the receiver holds all but `inFlight - 1` of those sent.
    const need = sent === BULK_COUNT ? BULK_COUNT : sent - inFlight + 1;
    seqs = await waitFor(
      async () => {
        const got = await received();
        const refusals = await sender.evaluate(() => window.bulkRefusals);
        assert.deepEqual(refusals, [], `the sender's client reported errors during the bulk via ${via}`);
        return got.length >= need && got;
      },
      60_000,
      async () => `${need} of ${BULK_COUNT} bulk messages via ${via} (${sent} sent, ${(await received()).length} received)`,
    );
  }
  const elapsed = Date.now() - t0;
  await sender.evaluate(() => window.bulkUnsubscribe());
  assert.deepEqual(seqs.map((x) => x[0]), [...Array(BULK_COUNT).keys()], `bulk via ${via} in order, once`);
  assert.ok(seqs.every((x) => x[1] === BULK_BYTES));
  return elapsed;
}

/** @param {import('playwright-core').Page} page */
function inbox(page) {
  return page.evaluate(() => window.meshInbox);
}

/**
 * Wait until the page's mesh received `data` from `from` on `lane`, then check it arrived once.
 * @param {import('playwright-core').Page} page
 * @param {string} from
 * @param {number} lane
 * @param {{id: string}} data
 */
async function expectOnce(page, from, lane, data) {
  const match = (m) => m.from === from && m.data?.id === data.id;
  await waitFor(
    async () => (await inbox(page)).some(match),
    DELIVERY_TIMEOUT_MS,
    async () => `message ${data.id} from ${from}; inbox ids ${JSON.stringify((await inbox(page)).map((m) => [m.from, m.lane, m.data?.id]))}`,
  );
  await sleep(200);
  const copies = (await inbox(page)).filter(match);
  assert.equal(copies.length, 1, `message ${data.id} received ${copies.length} times`);
  assert.equal(copies[0].lane, lane);
  assert.deepEqual(copies[0].data, data);
}
