// Calls addressed to an identity (issue 12, seed 000 "Nexus as P2P signaling", PROTOCOL.md
// §13.16): two Chromium pages, signed in with app JWTs (HS256, signed here with node:crypto;
// the server runs with `--jwt-secret`), share no room. A calls B's identity with
// `client.call('bob')`; B's `incoming-call` event accepts; both get a one-peer `PeerMesh`
// whose RTCPeerConnection is negotiated on the Messaging lane through the server (which relays
// between the call's two parties only), and a lane message crosses the DataChannel. A stranger
// identity that B does not admit is refused with `forbidden`, a declined call rejects with
// `call_declined`, a page without identity (or only the SDK's device key) gets `auth_required`,
// and a request naming A's session without its token is refused `unauthorized`.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, test } from 'node:test';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { closeClient, waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const SECRET = 'p3-e2e-calls-secret-0123456789abcdef';
const LINK_TIMEOUT_MS = 30_000;

/** An HS256 JWT `{sub, exp: now + 1 h}` signed with SECRET. */
function jwt(sub) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e', args: ['--jwt-secret', SECRET, '--stun', ''] });
});

after(async () => {
  await server?.stop();
});

/** Connects `window.client` (lanes 1, 2, 5) with `options`; records `incoming-call` events. */
function signIn(page, url, clientId, options) {
  return page.evaluate(
    async ({ url, clientId, options }) => {
      window.calls = [];
      const client = await window.sdk.P3Client.connect(url, { clientId, lanes: [1, 2, 5], ...options });
      window.client = client;
      client.onEvent((ev) => {
        if (ev.type !== 'incoming-call') return;
        window.calls.push({ callId: ev.callId, from: ev.from, fromMember: ev.fromMember });
        window.incoming = ev;
      });
      return client.sessionId;
    },
    { url, clientId, options },
  );
}

/** `window.client.call(to)` in the page: `{ok, code}`; the call is kept as `window.call`. */
function callFrom(page, to) {
  return page.evaluate(async (to) => {
    try {
      window.call = await window.client.call(to, { rtcConfiguration: { iceServers: [] } });
      return { ok: true, peer: window.call.peer, remote: window.call.remote };
    } catch (e) {
      return { ok: false, name: e.name, code: e.code };
    }
  }, to);
}

/** Records `window.call.mesh`'s messages and peer states. */
function watchMesh(page) {
  return page.evaluate(() => {
    window.meshInbox = [];
    window.meshStates = [];
    window.call.mesh.onMessage((m) => window.meshInbox.push({ from: m.from, lane: m.lane, data: m.data }));
    window.call.mesh.onEvent((e) => e.type === 'peer-state' && window.meshStates.push(e.state));
  });
}

test('two signed-in pages in no common room set up a DataChannel through a call', { timeout: 180_000 }, async () => {
  const browsers = [];
  try {
    browsers.push(await launchBrowser(), await launchBrowser());
    const [pa, pb] = await Promise.all(browsers.map((b, i) => openSdkPage(b, server.url, 'AB'[i], 'music')));
    const a = await signIn(pa, server.url, 'call-a', { auth: { token: jwt('alice') } });
    const b = await signIn(pb, server.url, 'call-b', { auth: { token: jwt('bob') }, acceptCallsFrom: ['alice'] });
    assert.equal(await pa.evaluate(() => window.client.room), null, 'A is in no room');
    assert.equal(await pb.evaluate(() => window.client.room), null, 'B is in no room');

    // Declined first: A's call() rejects with call_declined.
    const declined = callFrom(pa, 'bob');
    await waitFor(() => pb.evaluate(() => window.calls.length === 1), 10_000, 'the first incoming-call on B');
    await pb.evaluate(() => window.incoming.decline());
    assert.deepEqual(await declined, { ok: false, name: 'P3Error', code: 'call_declined' });

    // Then accepted: both sides get a Call whose mesh links the two sessions.
    const calling = callFrom(pa, 'bob');
    await waitFor(() => pb.evaluate(() => window.calls.length === 2), 10_000, 'the second incoming-call on B');
    const incoming = await pb.evaluate(() => window.calls[1]);
    assert.deepEqual(incoming.from, { kind: 'token', id: 'alice' });
    assert.equal(incoming.fromMember, a);
    await pb.evaluate(async () => {
      window.call = await window.incoming.accept({ rtcConfiguration: { iceServers: [] } });
    });
    const called = await calling;
    assert.deepEqual(called, { ok: true, peer: b, remote: { kind: 'token', id: 'bob' } });
    assert.equal(await pb.evaluate(() => window.call.peer), a);
    await Promise.all([pa, pb].map(watchMesh));

    // The DataChannel comes up and carries a lane message each way.
    for (const [page, peer, label] of [[pa, b, 'A'], [pb, a, 'B']]) {
      await waitFor(
        () => page.evaluate((peer) => window.call.mesh.peers.some((l) => l.peer === peer && l.state === 'connected'), peer),
        LINK_TIMEOUT_MS,
        async () => `${label}'s link to the other party (${JSON.stringify(await page.evaluate(() => window.call.mesh.peers))})`,
      );
    }
    await pa.evaluate(() => window.call.mesh.send('Data', { hello: 'bob', via: 'datachannel' }));
    await pb.evaluate(() => window.call.mesh.send('Data', { hello: 'alice' }));
    const got = await waitFor(() => pb.evaluate(() => window.meshInbox.find((m) => m.data?.hello === 'bob')), 10_000, 'A\'s message on B');
    assert.deepEqual(got, { from: a, lane: 5, data: { hello: 'bob', via: 'datachannel' } });
    await waitFor(() => pa.evaluate(() => window.meshInbox.some((m) => m.data?.hello === 'alice')), 10_000, 'B\'s message on A');

    // A third identity that B does not admit is refused; a page without identity too.
    const [pc] = [await openSdkPage(browsers[0], server.url, 'C', 'music')];
    await signIn(pc, server.url, 'call-c', { auth: { token: jwt('carol') } });
    assert.deepEqual(await callFrom(pc, 'bob'), { ok: false, name: 'P3Error', code: 'forbidden' });
    // No `auth`: the SDK signs in with its device key, which is not an identity that calls.
    await signIn(pc, server.url, 'call-anon', {});
    assert.deepEqual(await callFrom(pc, 'bob'), { ok: false, name: 'P3Error', code: 'auth_required' });
    // The call routes need the acting session's token: A's public member id alone rings nobody.
    const forged = await pc.evaluate(async ({ url, sid }) => {
      const r = await fetch(`${url}/api/nexus/calls/initiate`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', 'P3-Session': sid },
        body: JSON.stringify({ to: 'bob' }),
      });
      return { status: r.status, body: await r.json() };
    }, { url: server.url, sid: a });
    assert.deepEqual(forged, { status: 401, body: { error: 'unauthorized', code: 'unauthorized' } });
    assert.deepEqual(await callFrom(pa, 'nobody-here'), { ok: false, name: 'P3Error', code: 'callee_unavailable' });

    await pa.evaluate(() => window.call.hangUp());
    await Promise.all([pa, pb, pc].map(closeClient));
  } finally {
    await Promise.all(browsers.map((br) => br.close()));
  }
});
