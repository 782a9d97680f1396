// A music room opened without a connection (issue #5 Tier 3; PROTOCOL.md §13.12 "Starting
// offline"), in real Chromium against a real server-stub: `MusicRoom.openOffline` refuses bad
// arguments with typed codes; a room of a device with nothing stored opens on the `offline`
// tier with no state and no synced clock, takes changes as its own controller (queued in
// IndexedDB) and plays them on the <audio> element; `attach(client)` goes back to the `socket`
// tier, pushes the queue (each change applied once, in order) and follows the server's state;
// the state followed is kept in localStorage with the clock offset, and a second offline open
// of the room starts from it. Misuse: a second `attach` is `invalid_argument`, `attach` after
// `close()` is `closed`.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { openSdkPage } from './support/browser.mjs';
import { launchMusicBrowser, startMusicServer, track } from './support/music.mjs';

let music;
let browser;

before(async () => {
  music = await startMusicServer({ latencyMs: 5, jitterMs: 2 });
  browser = await launchMusicBrowser({ autoplay: true });
});

after(async () => {
  await browser?.close();
  await music?.stop();
});

test('openOffline: typed errors, plays its own changes offline, attach pushes them once and follows the server, the followed state is restored next time', { timeout: 120_000 }, async () => {
  const page = await openSdkPage(browser, music.server.url, 'offline-start', 'music');
  const out = await page.evaluate(async (t) => {
    const { MusicRoom, P3Client } = window.sdk;
    const audio = document.createElement('audio');
    document.body.append(audio);
    const room = 'e2e-open-offline';
    const deviceId = `dev-${Math.random().toString(36).slice(2)}`;
    const options = { media: audio, peerToPeer: { rtcConfiguration: { iceServers: [] } }, deviceId };
    const code = (p) => p.then(() => 'resolved', (e) => e.code);
    const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
    const errors = {
      badUrl: await code(MusicRoom.openOffline('ftp://x', room, options)),
      badName: await code(MusicRoom.openOffline(location.origin, '', options)),
      noPeerToPeer: await code(MusicRoom.openOffline(location.origin, room, { media: audio })),
      noMedia: await code(MusicRoom.openOffline(location.origin, room, { peerToPeer: true })),
    };

    const r = await MusicRoom.openOffline(location.origin, room, options);
    const events = [];
    r.onEvent((ev) => events.push(ev));
    const opened = { tier: r.tier, state: r.state, synced: r.clock.synced, pending: r.pendingChanges };
    const changed = await r.changeTrack(t, 5);
    const played = await r.play();
    const pendingOffline = r.pendingChanges;
    await sleep(Math.max(0, played.referenceTime - r.serverNow()) + 300);
    const at1 = audio.currentTime;
    await sleep(1500);
    const at2 = audio.currentTime;
    const offlinePlayback = { at1, at2, paused: audio.paused, src: audio.currentSrc };

    const client = await P3Client.connect(location.origin, { lanes: ['Control', 'Messaging', 'Sync'] });
    await r.attach(client);
    const secondAttach = await code(r.attach(client));
    for (let i = 0; i < 200 && !(r.tier === 'socket' && r.pendingChanges === 0 && r.state && events.some((e) => e.type === 'reconciled')); i++) await sleep(100);
    await sleep(500);
    const attached = { tier: r.tier, pending: r.pendingChanges, state: r.state, sessionId: client.sessionId };
    const reconciled = events.filter((e) => e.type === 'reconciled');
    const tierEvents = events.filter((e) => e.type === 'tier');
    const saved = JSON.parse(localStorage.getItem(`p3-lanes-music:${room}`) ?? 'null');
    r.close();
    const afterClose = await code(r.attach(client));
    client.close();

    // Next time offline: the followed (server's) state comes back.
    const again = await MusicRoom.openOffline(location.origin, room, options);
    const reopened = { tier: again.tier, state: again.state };
    again.close();
    return { errors, opened, changed, played, pendingOffline, offlinePlayback, secondAttach, attached, reconciled, tierEvents, saved, afterClose, reopened, deviceId };
  }, track('a'));

  assert.deepEqual(out.errors, { badUrl: 'invalid_argument', badName: 'invalid_argument', noPeerToPeer: 'invalid_argument', noMedia: 'invalid_argument' });

  // Nothing stored for this device: offline, no state, no synced clock, an empty queue.
  assert.deepEqual(out.opened, { tier: 'offline', state: null, synced: false, pending: 0 });
  assert.equal(out.changed.trackId, track('a').id);
  assert.equal(out.changed.controllerId, out.deviceId, 'its own controller, as its deviceId');
  assert.deepEqual([out.played.isPlaying, out.played.position], [true, 5]);
  assert.equal(out.pendingOffline, 2);
  const p = out.offlinePlayback;
  assert.ok(p.src.endsWith(`/media/${track('a').id}`), `track loaded offline: ${p.src}`);
  assert.ok(!p.paused && p.at2 - p.at1 > 1.0 && p.at2 - p.at1 < 2.0, `plays offline: ${p.at1} → ${p.at2} in 1.5 s`);
  assert.ok(p.at1 > 5 && p.at1 < 7, `from the position asked for: ${p.at1}`);

  // Attached: socket tier again, both changes applied once and in order, the server's state.
  assert.equal(out.secondAttach, 'invalid_argument');
  assert.deepEqual(out.tierEvents.map((e) => [e.from, e.to, e.reason]), [['offline', 'socket', 'server-back']]);
  assert.equal(out.attached.tier, 'socket');
  assert.equal(out.attached.pending, 0);
  const applied = out.reconciled.flatMap((e) => e.appliedOrder);
  assert.deepEqual(applied, [[out.deviceId, 1], [out.deviceId, 2]]);
  assert.equal(out.attached.state.trackId, track('a').id);
  assert.equal(out.attached.state.isPlaying, true);

  // Saved with the clock offset (the page's clock is the machine's: a small offset), and
  // restored by the next offline open.
  assert.equal(out.saved?.format, 1);
  assert.deepEqual([out.saved.state.epoch, out.saved.state.sequence], [out.attached.state.epoch, out.attached.state.sequence]);
  assert.ok(Number.isFinite(out.saved.clockOffsetMs) && Math.abs(out.saved.clockOffsetMs) < 1000, `clock offset ${out.saved.clockOffsetMs} ms`);
  assert.equal(out.afterClose, 'closed');
  assert.equal(out.reopened.tier, 'offline');
  assert.deepEqual([out.reopened.state?.epoch, out.reopened.state?.sequence, out.reopened.state?.isPlaying], [out.attached.state.epoch, out.attached.state.sequence, true]);
});
