// Room-key rotation (issue 12 "Rooms, keys, control"; PROTOCOL.md §13.4, §16.3): three separate
// Chromium instances follow one music room with `peerToPeer`. Each page records every
// `room-key` the server gives it (from its very first join). Member C is removed
// (`DELETE` of its session); A and B hear `peer-left` and get a new key with a new key id, C
// gets nothing. The server is SIGKILLed, so control travels only over the mesh, sealed by the
// DJ (A) under the new key: B follows A's seek, and the frames B received for it are taken from
// its DataChannels. A WebCrypto implementation of the §13.4 envelope (HKDF-SHA256 subkey,
// AES-256-GCM) opens them in B's page with B's new key (so the opener is right), and fails in
// C's page with every key C ever held: a removed member cannot open control sealed after its
// removal, while the others still sync.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openSdkPage } from './support/browser.mjs';
import { waitFor } from './support/client.mjs';
import { dj, launchMusicBrowser, musicServerForSpec, track } from './support/music.mjs';

const ROOM = 'e2e-room-key-rotation';
const TIMEOUT_MS = 30_000;

const spec = musicServerForSpec();
const { browsers } = spec;

/**
 * In the page: taps every DataChannel's incoming messages (before the mesh exists), keeping
 * the base64url runs (≥ 60 chars) found in them in `window.tapped`; connects a client that
 * records every `room-key` event in `window.keys` from before its first join; opens the music
 * room with `peerToPeer`. Sets `window.music`
 * as tests/pages/music.html does, so `dj()` works.
 */
async function openMember(browser, url, label, { reconnect = true } = {}) {
  const page = await openSdkPage(browser, url, label, 'music');
  const { sessionId, sessionToken } = await page.evaluate(async ({ url, room, label, reconnect }) => {
    window.tapped = [];
    const tap = (data) => {
      if (!(data instanceof ArrayBuffer)) return;
      const bytes = new Uint8Array(data);
      let text = '';
      for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
      for (const m of text.matchAll(/[A-Za-z0-9_-]{60,}/g)) window.tapped.push(m[0]);
    };
    const proto = RTCDataChannel.prototype;
    const add = proto.addEventListener;
    const watch = (ch) => {
      if (ch.__p3Tapped) return;
      ch.__p3Tapped = true;
      add.call(ch, 'message', (ev) => tap(ev.data));
    };
    proto.addEventListener = function addEventListener(type, ...rest) {
      if (type === 'message') watch(this);
      return add.call(this, type, ...rest);
    };
    const onmessage = Object.getOwnPropertyDescriptor(proto, 'onmessage');
    Object.defineProperty(proto, 'onmessage', {
      configurable: true,
      get() { return onmessage.get.call(this); },
      set(fn) { watch(this); onmessage.set.call(this, fn); },
    });

    window.keys = [];
    window.events = [];
    const client = await window.sdk.P3Client.connect(url, {
      clientId: label,
      lanes: ['Control', 'Messaging', 'Sync'],
      reconnect,
    });
    client.onEvent((ev) => {
      if (ev.type === 'room-key') window.keys.push({ keyId: ev.keyId, key: ev.key });
    });
    const media = new Audio();
    const musicRoom = await client.musicRoom(room, {
      media,
      peerToPeer: { rtcConfiguration: { iceServers: [] }, statsIntervalMs: 500 },
    });
    musicRoom.onEvent((ev) => window.events.push(ev));
    window.music = { client, room: musicRoom, audio: media };
    return { sessionId: client.sessionId, sessionToken: client.handshake.sessionToken };
  }, { url, room: ROOM, label, reconnect });
  return { page, label, sessionId, sessionToken };
}

/**
 * Defines `window.openSealed(keyB64, room, sender, envB64)` in the page: opens a §13.4 v2
 * envelope with WebCrypto (an implementation independent of the SDK's Rust), resolving with
 * the plaintext or rejecting.
 */
function installOpener(page) {
  return page.evaluate(() => {
    const enc = new TextEncoder();
    const b64 = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4)), (c) => c.charCodeAt(0));
    const cat = (...parts) => {
      const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of parts) { out.set(p, at); at += p.length; }
      return out;
    };
    const part = (s) => {
      const b = enc.encode(s);
      const len = new Uint8Array(4);
      new DataView(len.buffer).setUint32(0, b.length);
      return cat(len, b);
    };
    window.openSealed = async (keyB64, room, sender, envB64) => {
      const env = b64(envB64);
      if (env.length < 45 || env[0] !== 2) throw new Error('not a v2 envelope');
      const ikm = await crypto.subtle.importKey('raw', b64(keyB64), 'HKDF', false, ['deriveKey']);
      const info = cat(enc.encode('p3-seal-v2 subkey'), env.subarray(1, 5), part(room), part(sender));
      const key = await crypto.subtle.deriveKey(
        { name: 'HKDF', hash: 'SHA-256', salt: env.subarray(5, 21), info },
        ikm,
        { name: 'AES-GCM', length: 256 },
        false,
        ['decrypt'],
      );
      const iv = cat(new Uint8Array(4), env.subarray(21, 29));
      const additionalData = cat(enc.encode('p3-seal-v2'), part(room), part(sender), env.subarray(0, 29));
      const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv, additionalData }, key, env.subarray(29));
      return new TextDecoder().decode(plain);
    };
    window.envelopeKeyId = (envB64) => new DataView(b64(envB64).buffer).getUint32(1);
  });
}

const keysOf = (m) => m.page.evaluate(() => window.keys);
const eventsOf = (m) => m.page.evaluate(() => window.events);

test('a removed member gets no new room key and cannot open control sealed after its removal; the others still sync', { timeout: 240_000 }, async () => {
  const url = spec.music.server.url;
  browsers.push(...(await Promise.all([0, 1, 2].map(() => launchMusicBrowser({ autoplay: true })))));
  const members = [];
  for (const [i, label] of ['A', 'B', 'C'].entries()) {
    // C does not reconnect: once removed it stays out (a new session could join an open room).
    members.push(await openMember(browsers[i], url, label, { reconnect: label !== 'C' }));
  }
  const [a, b, c] = members;
  await Promise.all(members.map((m) => waitFor(
    () => m.page.evaluate(() => window.music.room.peers.length === 2),
    TIMEOUT_MS,
    () => `${m.label}: two connected peers`,
  )));
  const [first] = await keysOf(c);
  assert.ok(first, 'C got the room key at its join');
  for (const m of [a, b]) assert.deepEqual((await keysOf(m)).at(-1), first, `${m.label} holds the same key as C`);

  await dj(a, 'claimController');
  await dj(a, 'changeTrack', [track('a')]);
  const playing = await dj(a, 'play', [5]);

  // C is removed from the room (its session deleted): A and B get a new key, C nothing.
  // The DELETE carries C's own session token (PROTOCOL.md §2.1): the test removes C as its owner would.
  assert.ok(c.sessionToken, 'the handshake gave C a sessionToken');
  const del = await fetch(`${url}/api/protocol/v2/session/${c.sessionId}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${c.sessionToken}` },
  });
  assert.equal(del.status, 204);
  const rotated = await Promise.all([a, b].map((m) => waitFor(
    async () => (await keysOf(m)).find((k) => k.keyId !== first.keyId),
    TIMEOUT_MS,
    () => `${m.label}: a new room key after C's removal`,
  )));
  assert.deepEqual(rotated[0], rotated[1], 'A and B share the new key');
  const newKey = rotated[0];
  assert.notEqual(newKey.key, first.key);
  await waitFor(
    () => a.page.evaluate(() => window.music.room.peers.length === 1),
    TIMEOUT_MS,
    () => 'A: C is no longer a peer',
  );

  // Only the mesh is left: A's changes are sealed for the peers under the key it holds.
  spec.music.server.proc.kill('SIGKILL');
  await Promise.all([a, b].map((m) => waitFor(
    async () => (await eventsOf(m)).find((e) => e.type === 'tier' && e.to === 'webrtc'),
    TIMEOUT_MS,
    async () => `${m.label}: tier webrtc; events ${JSON.stringify((await eventsOf(m)).filter((e) => !['clock', 'status', 'drift'].includes(e.type)).slice(-12))}`,
  )));
  const mark = await b.page.evaluate(() => window.tapped.length);
  const seek = await dj(a, 'seek', [40]);
  assert.equal(seek.epoch, playing.epoch);
  // B still syncs: it follows the DJ's serverless seek.
  await waitFor(
    () => b.page.evaluate((s) => {
      const st = window.music.room.state;
      return st && st.epoch === s.epoch && st.sequence === s.sequence;
    }, seek),
    TIMEOUT_MS,
    () => `B follows A's seek ${seek.epoch}/${seek.sequence}`,
  );

  // The frames B received for the seek: runs of its DataChannel bytes that open under B's key
  // (a run may carry a byte of framing on either side: trimmed until one opens).
  await installOpener(b.page);
  const sealed = await b.page.evaluate(async ({ mark, key, room, sender }) => {
    const found = [];
    for (const run of window.tapped.slice(mark)) {
      for (let s = 0; s < 3; s++) {
        for (let e = 0; e < 3; e++) {
          const env = run.slice(s, run.length - e);
          try {
            const plain = await window.openSealed(key, room, sender, env);
            found.push({ env, keyId: window.envelopeKeyId(env), plain });
          } catch {
            // not this trim, or not an envelope
          }
        }
      }
    }
    return found;
  }, { mark, key: newKey.key, room: ROOM, sender: a.sessionId });
  const seekFrames = sealed.filter((f) => {
    const msg = JSON.parse(f.plain);
    return msg.type === 'change' && msg.control.action === 'seek' && msg.control.sequence === seek.sequence;
  });
  assert.ok(seekFrames.length >= 1, `B received A's seek sealed under the new key; opened: ${JSON.stringify(sealed.map((f) => f.plain.slice(0, 80)))}`);
  for (const f of seekFrames) assert.equal(f.keyId, newKey.keyId, 'sealed under the key issued after C left');

  // C, with every key it ever held, opens none of them.
  const cKeys = await keysOf(c);
  assert.ok(!cKeys.some((k) => k.keyId === newKey.keyId || k.key === newKey.key), `C never received the new key: ${JSON.stringify(cKeys.map((k) => k.keyId))}`);
  await installOpener(c.page);
  const opened = await c.page.evaluate(async ({ frames, keys, room, sender }) => {
    const ok = [];
    for (const f of frames) {
      for (const k of keys) {
        try {
          await window.openSealed(k.key, room, sender, f.env);
          ok.push(k.keyId);
        } catch {
          // expected: not C's key
        }
      }
    }
    return ok;
  }, { frames: seekFrames, keys: cKeys, room: ROOM, sender: a.sessionId });
  assert.deepEqual(opened, [], 'C opened control sealed after its removal');

  // Nothing B received from A failed to open (the rotation did not break the mesh's control).
  const refused = (await eventsOf(b)).filter((e) => e.type === 'error' && e.code === 'forbidden');
  assert.deepEqual(refused, [], 'B: sealed frames refused');
});
