// Two separate Chromium browsers open a real RTCPeerConnection to each other through
// server-stub's seed 001 signaling server (`GET /api/signaling`, PROTOCOL.md §13.7) with the
// ICE configuration of `GET /api/webrtc/config` (§13.8): handshake, `auth` with the session's
// `signalingToken`, `join`, offer / answer / ICE relayed by the server, a DataChannel opens and
// carries messages both ways; when one browser closes, the other hears `peer_left`.
// Plain browser APIs, no SDK: this checks the server against what browsers really send.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from './support/browser.mjs';
import { chromium } from 'playwright-core';
import { startServer } from './support/server.mjs';

const ROOM = 'rtc-e2e';
const STEP_TIMEOUT_MS = 20_000;

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  // No STUN: both browsers are on this machine; host candidates on loopback suffice.
  server = await startServer({ appVersion: 'e2e', args: ['--stun', ''] });
});

after(async () => {
  await server?.stop();
});

/**
 * A browser that offers loopback host candidates under their real address (the machine has
 * nothing else, and mDNS names would not resolve between two headless browsers).
 */
function launchRtcBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS, '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
}

/**
 * Runs in the page: handshake, signaling socket, auth, join, RTCPeerConnection. State goes to
 * `window.rtc`: `{sessionId, config, peer, channelOpen, received: [], events: [], errors: []}`.
 * The first member (no peers in `joined`) makes the offer when the other joins.
 */
async function startPeer({ role, room }) {
  const rtc = (window.rtc = { received: [], events: [], errors: [], channelOpen: false });
  const post = await fetch('/api/protocol/v2/session/handshake', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      clientId: `rtc-${role}`,
      capabilities: { transports: ['websocket'], encodings: ['json'], lanes: [1] },
    }),
  });
  const hs = await post.json();
  rtc.sessionId = hs.sessionId;
  rtc.config = await (await fetch('/api/webrtc/config?deviceType=desktop')).json();
  const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/api/signaling`);
  rtc.ws = ws;
  const send = (m) => ws.send(JSON.stringify(m));
  const pc = new RTCPeerConnection(rtc.config);
  rtc.pc = pc;
  const useChannel = (ch) => {
    rtc.channel = ch;
    ch.onopen = () => (rtc.channelOpen = true);
    ch.onmessage = (e) => rtc.received.push(e.data);
  };
  pc.ondatachannel = (e) => useChannel(e.channel);
  pc.onicecandidate = ({ candidate }) => {
    if (candidate && rtc.peer) send({ type: 'ice', to: rtc.peer, data: candidate.toJSON() });
  };
  const offer = async () => {
    useChannel(pc.createDataChannel('control', { ordered: true, maxRetransmits: 3 }));
    await pc.setLocalDescription();
    send({ type: 'offer', to: rtc.peer, data: pc.localDescription.toJSON() });
  };
  // Signaling messages are handled one after the other (an ICE candidate must not overtake
  // the offer it belongs to).
  let chain = Promise.resolve();
  const handle = async (m) => {
    rtc.events.push(m);
    switch (m.type) {
      case 'auth_ok':
        send({ type: 'join', roomId: room });
        break;
      case 'joined':
        if (m.peers.length > 0) rtc.peer = m.peers[0];
        break;
      case 'peer_joined':
        rtc.peer = m.from;
        await offer();
        break;
      case 'offer':
        await pc.setRemoteDescription(m.data);
        await pc.setLocalDescription();
        send({ type: 'answer', to: m.from, data: pc.localDescription.toJSON() });
        break;
      case 'answer':
        await pc.setRemoteDescription(m.data);
        break;
      case 'ice':
        await pc.addIceCandidate(m.data);
        break;
      case 'error':
        rtc.errors.push(m);
        break;
    }
  };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    chain = chain.then(() => handle(m)).catch((err) => rtc.errors.push({ type: 'exception', error: String(err) }));
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error('signaling socket failed'));
  });
  send({ type: 'auth', address: hs.sessionId, signature: hs.signalingToken });
  return { sessionId: hs.sessionId, hasToken: typeof hs.signalingToken === 'string', config: rtc.config };
}

async function waitFor(page, fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: STEP_TIMEOUT_MS });
  } catch (err) {
    const state = await page.evaluate(() => ({ events: window.rtc?.events, errors: window.rtc?.errors }));
    throw new Error(`${what}: ${err.message}\n${JSON.stringify(state, null, 1)}`);
  }
}

test('two browsers connect a DataChannel through /api/signaling', { timeout: 120_000 }, async () => {
  const browsers = [];
  try {
    browsers.push(await launchRtcBrowser(), await launchRtcBrowser());
    const pages = await Promise.all(browsers.map((b) => b.newPage()));
    for (const [i, page] of pages.entries()) {
      page.on('pageerror', (err) => console.error(`[${i} pageerror] ${err.stack ?? err}`));
      // A real server page first: the page's origin is then the server's (Local Network Access).
      await page.goto(`${server.url}/api/version`);
    }
    const [pageA, pageB] = pages;
    const a = await pageA.evaluate(startPeer, { role: 'a', room: ROOM });
    assert.ok(a.hasToken, 'the handshake gives a signalingToken');
    assert.deepEqual(a.config.iceServers, [], '--stun "" gives no ICE servers');
    assert.equal(a.config.bundlePolicy, 'max-bundle');
    await waitFor(pageA, () => window.rtc.events.some((e) => e.type === 'joined'), null, 'A joined');
    const b = await pageB.evaluate(startPeer, { role: 'b', room: ROOM });

    for (const [page, name] of [[pageA, 'A'], [pageB, 'B']]) {
      await waitFor(page, () => window.rtc.channelOpen, null, `${name}'s DataChannel opens`);
    }
    assert.equal(await pageB.evaluate(() => window.rtc.peer), a.sessionId);
    assert.equal(await pageA.evaluate(() => window.rtc.peer), b.sessionId);
    // The relayed messages carry the real sender and the room.
    const offerAtB = await pageB.evaluate(() => window.rtc.events.find((e) => e.type === 'offer'));
    assert.equal(offerAtB.from, a.sessionId);
    assert.equal(offerAtB.to, b.sessionId);
    assert.equal(offerAtB.roomId, ROOM);
    assert.match(offerAtB.data.sdp, /m=application/);

    await pageA.evaluate(() => window.rtc.channel.send('hello from A over the DataChannel'));
    await waitFor(pageB, () => window.rtc.received.includes('hello from A over the DataChannel'), null, 'B receives');
    await pageB.evaluate(() => window.rtc.channel.send('hello from B'));
    await waitFor(pageA, () => window.rtc.received.includes('hello from B'), null, 'A receives');
    for (const page of pages) {
      assert.deepEqual(await page.evaluate(() => window.rtc.errors), []);
    }

    // A's browser goes away: B hears it from the signaling server.
    await browsers[0].close();
    browsers.shift();
    await waitFor(
      pageB,
      (from) => window.rtc.events.some((e) => e.type === 'peer_left' && e.from === from && e.reason === 'closed'),
      a.sessionId,
      'B hears peer_left',
    );
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
  }
});
