// A hostile room member (issue 12 "Tests": e2e "hostile member"; PROTOCOL.md §16 threat model).
//
// One server-stub, three separate headless Chromium instances, one music room: A and B are
// honest SDK clients (A is the DJ), M is a member too, and knows A's and B's session ids
// (they are public: `members`, `peer-joined`, every `from`). From its page, with raw
// `fetch`, `WebSocket` and `EventSource`, M tries every route to read, send as, inspect,
// delete, move and kick A, to push music changes in A's name, to take the DJ role, to reach
// a session of another room and to use the admin endpoints. Every attempt is asserted with
// its documented refusal (status and `code`, or close code), so the spec fails when any one
// protection is removed:
//
//   A's SSE streams, both routes (no / made-up / M's ticket)  401 `unauthorized` (§2.1)
//   A's WebSocket (no / made-up / M's ticket)                 close 4401 "unauthorized", no `welcome`
//   POST to A's lanes, a `join` for A, A's ticket route      401 `unauthorized`
//   GET / DELETE A's session (no / wrong / M's token)         401 `unauthorized`
//   admin endpoints without (or with a wrong) admin token     401 `unauthorized` (§2.1 "Admin")
//   signaling server `auth` as A (M's / made-up / no token)   `error` `unauthorized`, also after (§13.7)
//   `music-changes` in A's identity or session origin         Control `error` `forbidden`, lane 7 (§13.15)
//   DJ claim / DJ change while A is DJ                        `not_controller` (§13.15 rule 1)
//   a frame `to` a session of another room (WS and POST)      `forbidden` (HTTP 403 / Control error)
//
// Afterwards A and B noticed nothing: same session, state never left `connected`, no `error`,
// `session-changed`, `room-left` or new `room-key` event (a rotation would mean someone left),
// still in the room by their own `GET` of their session, still exchanging Messaging-lane
// messages, and B follows A's next music change with A still the DJ.
//
// Seen failing: with the Bearer check of server-stub/src/auth/session.rs reduced to "the
// session exists", M's token-less POSTs are 202 (the `join` moves A to another room), the
// GET is 200 (A's `deviceInfo`, identity) and the DELETE 204; with the origin binding of
// server-stub/src/music/mod.rs off, M's pushes in A's origins get no `forbidden`.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openSdkPage } from './support/browser.mjs';
import { waitFor } from './support/client.mjs';
import { dj, launchMusicBrowser, musicServerForSpec, track } from './support/music.mjs';

const ROOM = 'e2e-hostile-member';
const ELSEWHERE = 'e2e-hostile-elsewhere';
const TIMEOUT_MS = 20_000;
/** A token and a ticket of the right shape that belong to nobody (base64url, 32 and 16 bytes). */
const MADE_UP_TOKEN = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';
const MADE_UP_TICKET = 'AAAAAAAAAAAAAAAAAAAAAA';
const UNAUTHORIZED = { status: 401, body: { error: 'unauthorized', code: 'unauthorized' }, wwwAuthenticate: 'Bearer' };

const spec = musicServerForSpec({ latencyMs: 0, jitterMs: 0 });
const { browsers } = spec;

/**
 * Opens an SDK page, connects a client (default options: WebSocket, SDK device key) on the
 * Control, Messaging and Sync lanes and opens the music room, recording everything the client
 * and the room report: `window.states`, `window.events` (client events), `window.musicEvents`,
 * `window.inbox` (Messaging-lane messages).
 */
async function openMember(browser, url, label) {
  const page = await openSdkPage(browser, url, label, 'music');
  const sessionId = await page.evaluate(async ({ url, room, label }) => {
    const plain = (v) => JSON.parse(JSON.stringify(v ?? null));
    window.states = [];
    window.events = [];
    window.musicEvents = [];
    window.inbox = [];
    const client = await window.sdk.P3Client.connect(url, { clientId: label, lanes: ['Control', 'Messaging', 'Sync'], reconnect: true });
    client.onStateChange((s) => window.states.push(s));
    client.onEvent((ev) => window.events.push(plain(ev)));
    client.onMessage('Messaging', (msg) => window.inbox.push({ from: msg.from, value: plain(msg.value) }));
    const media = new Audio();
    const musicRoom = await client.musicRoom(room, { media });
    musicRoom.onEvent((ev) => window.musicEvents.push(plain(ev)));
    window.music = { client, room: musicRoom, audio: media };
    return client.sessionId;
  }, { url, room: ROOM, label });
  return { page, label, sessionId };
}

/** What an honest page looks like now: compared before and after the attacks. */
function snapshot(m) {
  return m.page.evaluate(() => ({
    sessionId: window.music.client.sessionId,
    state: window.music.client.state,
    states: [...window.states],
    events: window.events.filter((e) => e.type !== 'pong'),
    musicErrors: window.musicEvents.filter((e) => e.type === 'error'),
    controllerId: window.music.room.state?.controllerId ?? null,
  }));
}

/** The page's own view of its session: `GET` with its own token (the owner may). */
function ownSession(m) {
  return m.page.evaluate(async () => {
    const { sessionId, sessionToken } = window.music.client.handshake;
    const r = await fetch(`/api/protocol/v2/session/${sessionId}`, { headers: { authorization: `Bearer ${sessionToken}` } });
    return { status: r.status, body: await r.json() };
  });
}

test('a hostile member cannot read, send as, inspect, delete, move or kick others, push in their name, take the DJ role or reach another room; the honest members notice nothing', { timeout: 240_000 }, async () => {
  const url = spec.music.server.url;
  browsers.push(...(await Promise.all([0, 1, 2].map(() => launchMusicBrowser({ autoplay: true })))));
  const a = await openMember(browsers[0], url, 'A');
  const b = await openMember(browsers[1], url, 'B');
  const m = await openMember(browsers[2], url, 'M');

  // A is the DJ and plays; B follows.
  await dj(a, 'claimController');
  await dj(a, 'changeTrack', [track('a')]);
  const playing = await dj(a, 'play', [5]);
  assert.equal(playing.controllerId, a.sessionId);
  for (const p of [b, m]) {
    await waitFor(
      () => p.page.evaluate((s) => window.music.room.state?.sequence === s.sequence && window.music.room.state?.epoch === s.epoch, playing),
      TIMEOUT_MS,
      () => `${p.label} follows A's play`,
    );
  }
  const identityA = await a.page.evaluate(() => window.music.client.handshake.identity);
  assert.equal(identityA?.kind, 'device', 'A signed in with its SDK device key');
  const keyA = `${identityA.kind}:${identityA.id}`;

  // M learned A's and B's ids from the room itself, as any member does.
  const seen = await m.page.evaluate(() => window.events.filter((e) => e.type === 'room-joined').at(-1)?.members ?? []);
  assert.ok(seen.includes(a.sessionId) && seen.includes(b.sessionId), `M sees A and B as members: ${JSON.stringify(seen)}`);

  const before = { a: await snapshot(a), b: await snapshot(b) };
  for (const [label, s] of Object.entries(before)) {
    assert.equal(s.state, 'open', `${label} open before the attacks`);
    assert.deepEqual(s.musicErrors, [], `${label}: no music errors before the attacks`);
  }

  // ---- M's attempts, from its page, on A's session (and B's streams) ----
  const results = await m.page.evaluate(async ({ victims, madeUpToken, madeUpTicket, elsewhere }) => {
    const base = '/api/protocol/v2/session';
    const own = window.music.client.handshake;
    const mToken = own.sessionToken;
    const out = {};
    const answer = async (r) => {
      let body = null;
      try {
        body = await r.json();
      } catch {
        body = null;
      }
      return { status: r.status, body, wwwAuthenticate: r.headers.get('www-authenticate') };
    };
    const http = async (method, path, { bearer, body, type = 'application/json' } = {}) => {
      const headers = {};
      if (bearer) headers.authorization = `Bearer ${bearer}`;
      if (body !== undefined) headers['content-type'] = type;
      return answer(await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }));
    };
    const mintOwnTicket = async () => {
      const r = await fetch(`${base}/${own.sessionId}/ticket`, { method: 'POST', headers: { authorization: `Bearer ${mToken}` } });
      if (r.status !== 200) throw new Error(`M could not mint its own ticket: ${r.status}`);
      return (await r.json()).ticket;
    };
    const wsTry = (path) => new Promise((resolve) => {
      const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}${path}`);
      ws.binaryType = 'arraybuffer';
      const frames = [];
      let opened = false;
      const timer = setTimeout(() => {
        ws.close();
        resolve({ timeout: true, opened, frames });
      }, 10_000);
      ws.onopen = () => { opened = true; };
      ws.onmessage = (ev) => {
        const bytes = new Uint8Array(ev.data);
        frames.push({ kind: bytes[0], lane: bytes[1], text: new TextDecoder('utf-8', { fatal: false }).decode(bytes) });
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        resolve({ opened, code: ev.code, reason: ev.reason, frames });
      };
    });
    const eventSourceTry = (path) => new Promise((resolve) => {
      const es = new EventSource(path);
      const got = [];
      es.onmessage = (ev) => got.push(ev.data);
      for (const name of ['joined', 'room-key', 'message']) es.addEventListener(name, (ev) => got.push(ev.data));
      const timer = setTimeout(() => {
        es.close();
        resolve({ timeout: true, readyState: es.readyState, got });
      }, 10_000);
      es.onerror = () => {
        clearTimeout(timer);
        const readyState = es.readyState;
        es.close();
        resolve({ readyState, got });
      };
    });
    const tickets = async () => [['no ticket', ''], ['a made-up ticket', `?ticket=${madeUpTicket}`], ["M's own ticket", `?ticket=${await mintOwnTicket()}`]];
    const tokens = [['no token', undefined], ['a made-up token', madeUpToken], ["M's token", mToken]];

    for (const [victimLabel, victim] of Object.entries(victims)) {
      // Read: both SSE routes and the WebSocket.
      for (const [how, q] of await tickets()) out[`GET ${victimLabel}'s stream with ${how}`] = await answer(await fetch(`${base}/${victim}/stream${q}`, { headers: { accept: 'text/event-stream' } }));
      for (const [how, q] of await tickets()) out[`GET ${victimLabel}'s lane 2 stream with ${how}`] = await answer(await fetch(`${base}/${victim}/lane/2/stream${q}`, { headers: { accept: 'text/event-stream' } }));
      out[`EventSource on ${victimLabel}'s stream with M's ticket`] = await eventSourceTry(`${base}/${victim}/stream?ticket=${await mintOwnTicket()}`);
      out[`EventSource on ${victimLabel}'s lane 7 stream with M's ticket`] = await eventSourceTry(`${base}/${victim}/lane/7/stream?ticket=${await mintOwnTicket()}`);
      for (const [how, q] of await tickets()) out[`WebSocket of ${victimLabel} with ${how}`] = await wsTry(`${base}/${victim}/ws${q}`);
    }
    const A = victims.A;
    for (const [how, bearer] of tokens) {
      // Send as A, move A, inspect A, kick A, mint A's tickets.
      out[`POST to A's Messaging lane with ${how}`] = await http('POST', `${base}/${A}/lane/2`, { bearer, body: { text: 'forged by M' } });
      out[`POST to A's Sync lane with ${how}`] = await http('POST', `${base}/${A}/lane/7`, { bearer, body: { type: 'music-control', action: 'pause', data: {} } });
      out[`POST a join for A with ${how}`] = await http('POST', `${base}/${A}/lane/1`, { bearer, body: { type: 'join', room: elsewhere } });
      out[`GET A's session with ${how}`] = await http('GET', `${base}/${A}`, { bearer });
      out[`DELETE A's session with ${how}`] = await http('DELETE', `${base}/${A}`, { bearer });
      out[`POST A's ticket route with ${how}`] = await http('POST', `${base}/${A}/ticket`, { bearer });
    }
    // Admin endpoints: M's page is a loopback, same-origin client (as a DNS-rebound page would
    // be); without the admin token it is refused.
    for (const [how, bearer] of tokens) {
      out[`POST /api/admin/sse/close?session=A with ${how}`] = await http('POST', `/api/admin/sse/close?session=${A}`, { bearer });
      out[`POST /api/admin/version with ${how}`] = await http('POST', '/api/admin/version', { bearer, body: { version: 'hostile' } });
    }
    // The seed 001 signaling server: authenticate as A (its id is the `address`) with M's own
    // signaling token, a made-up one and none; then act without `auth_ok`.
    const signaling = (messages) => new Promise((resolve) => {
      const ws = new WebSocket(`${location.origin.replace(/^http/, 'ws')}/api/signaling`);
      const got = [];
      const timer = setTimeout(() => { ws.close(); resolve(got); }, 5_000);
      ws.onopen = () => { for (const msg of messages) ws.send(JSON.stringify(msg)); };
      ws.onmessage = (ev) => {
        got.push(JSON.parse(ev.data));
        if (got.length === messages.length) { clearTimeout(timer); ws.close(); resolve(got); }
      };
      ws.onclose = () => { clearTimeout(timer); resolve(got); };
    });
    for (const [how, signature] of [["M's signaling token", own.signalingToken], ['a made-up token', madeUpToken], ['no token', undefined]]) {
      out[`signaling auth as A with ${how}`] = await signaling([
        { type: 'auth', address: A, ...(signature === undefined ? {} : { signature }) },
        { type: 'join', roomId: elsewhere },
        { type: 'offer', to: victims.B, data: { sdp: 'forged' } },
      ]);
    }
    return out;
  }, { victims: { A: a.sessionId, B: b.sessionId }, madeUpToken: MADE_UP_TOKEN, madeUpTicket: MADE_UP_TICKET, elsewhere: ELSEWHERE });

  const failures = [];
  const check = (name, fn) => {
    try {
      fn(results[name]);
    } catch (err) {
      failures.push(`${name}: ${err.message}`);
    }
  };
  for (const name of Object.keys(results)) {
    if (name.startsWith('signaling auth')) {
      check(name, (r) => {
        assert.deepEqual(r.map((m) => [m.type, m.code]), [['error', 'unauthorized'], ['error', 'unauthorized'], ['error', 'unauthorized']], `every message refused (got ${JSON.stringify(r)})`);
      });
    } else if (name.startsWith('WebSocket of')) {
      check(name, (r) => {
        assert.equal(r.code, 4401, `close code (got ${JSON.stringify(r)})`);
        assert.equal(r.reason, 'unauthorized');
        assert.equal(r.frames.length, 1, 'only the `error` frame');
        for (const f of r.frames) {
          assert.equal(f.kind, 2, 'a Control frame');
          assert.match(f.text, /unauthorized/, 'the `error` frame says unauthorized');
          assert.doesNotMatch(f.text, /welcome/, 'no welcome');
        }
      });
    } else if (name.startsWith('EventSource')) {
      check(name, (r) => {
        assert.equal(r.readyState, 2, `the EventSource failed for good (CLOSED), got ${JSON.stringify(r)}`);
        assert.deepEqual(r.got, [], 'no event read');
      });
    } else {
      check(name, (r) => {
        assert.equal(r.status, UNAUTHORIZED.status, `status (got ${JSON.stringify(r)})`);
        assert.deepEqual(r.body, UNAUTHORIZED.body);
        assert.equal(r.wwwAuthenticate, UNAUTHORIZED.wwwAuthenticate);
      });
    }
  }
  // 2 victims × (3 + 3 stream fetches, 2 EventSources, 3 WebSockets) + 3 credentials × (6 A
  // routes + 2 admin routes) + 3 signaling sign-ins.
  assert.equal(Object.keys(results).length, 49, 'every attempt was made');
  assert.deepEqual(failures, [], `attempts not refused as documented:\n${failures.join('\n')}`);

  // ---- In A's name on the music room, the DJ role, another room (M's own session) ----
  const music = await m.page.evaluate(async ({ A, keyA, elsewhere }) => {
    const client = window.music.client;
    const { sessionId, sessionToken } = client.handshake;
    const out = {};
    const errorsAfter = (mark) => window.events.slice(mark).filter((e) => e.type === 'error');
    const waitErrors = async (mark, n) => {
      for (let i = 0; i < 100 && errorsAfter(mark).length < n; i++) await new Promise((r) => setTimeout(r, 50));
      return errorsAfter(mark);
    };
    const change = (origin) => ({
      type: 'music-changes',
      changes: [{ origin, localSeq: 1, epoch: 0, timestamp: Date.now(), op: { type: 'music-control', action: 'pause', data: {}, epoch: 0, sequence: 0 } }],
    });
    // music-changes in A's identity (its device key) and A's session, over the WebSocket and a POST.
    let mark = window.events.length;
    client.send('Sync', change(`${keyA}/offline`));
    client.send('Sync', change(`session:${A}`));
    out.pushOverWebSocket = await waitErrors(mark, 2);
    mark = window.events.length;
    const posted = await fetch(`/api/protocol/v2/session/${sessionId}/lane/7`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sessionToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(change(keyA)),
    });
    out.pushOverPostStatus = posted.status;
    out.pushOverPost = await waitErrors(mark, 1);

    // The DJ role while A holds it.
    for (const [what, call] of [['claim', () => window.music.room.claimController()], ['pause', () => window.music.room.pause()]]) {
      try {
        out[what] = { ok: await call() };
      } catch (err) {
        out[what] = { code: err.code };
      }
    }

    // A session in another room (M's second client), addressed from M's session in this room.
    const other = await window.sdk.P3Client.connect(location.origin, { clientId: 'M-elsewhere', lanes: ['Control', 'Messaging'], reconnect: false });
    await other.joinRoom(elsewhere);
    window.otherInbox = [];
    other.onMessage('Messaging', (msg) => window.otherInbox.push(msg.value));
    mark = window.events.length;
    client.send('Messaging', { text: 'across rooms' }, other.sessionId);
    out.toElsewhereOverWebSocket = await waitErrors(mark, 1);
    const r = await fetch(`/api/protocol/v2/session/${sessionId}/lane/2?to=${other.sessionId}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${sessionToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ text: 'across rooms' }),
    });
    out.toElsewhereOverPost = { status: r.status, body: await r.json().catch(() => null) };
    await new Promise((res) => setTimeout(res, 300));
    out.otherInbox = window.otherInbox;
    other.close();
    return out;
  }, { A: a.sessionId, keyA, elsewhere: ELSEWHERE });

  const codes = (errs) => errs.map((e) => ({ code: e.code, lane: e.lane }));
  assert.deepEqual(codes(music.pushOverWebSocket), [{ code: 'forbidden', lane: 7 }, { code: 'forbidden', lane: 7 }], `music-changes in A's origins over the WebSocket: ${JSON.stringify(music.pushOverWebSocket)}`);
  assert.equal(music.pushOverPostStatus, 202, 'a POST of music-changes is taken; the authority answers on the Control lane');
  assert.deepEqual(codes(music.pushOverPost), [{ code: 'forbidden', lane: 7 }], `music-changes in A's identity over a POST: ${JSON.stringify(music.pushOverPost)}`);
  assert.deepEqual(music.claim, { code: 'not_controller' }, 'M claims the DJ role while A holds it');
  assert.deepEqual(music.pause, { code: 'not_controller' }, 'M pauses as if DJ');
  assert.deepEqual(codes(music.toElsewhereOverWebSocket), [{ code: 'forbidden', lane: 2 }], `a frame to another room over the WebSocket: ${JSON.stringify(music.toElsewhereOverWebSocket)}`);
  assert.equal(music.toElsewhereOverPost.status, 403);
  assert.equal(music.toElsewhereOverPost.body?.code, 'forbidden');
  assert.deepEqual(music.otherInbox, [], 'the session in the other room received nothing');

  // ---- A and B noticed nothing ----
  for (const p of [a, b]) {
    const s = await snapshot(p);
    const was = before[p.label.toLowerCase()];
    assert.equal(s.sessionId, p.sessionId, `${p.label}: same session`);
    assert.equal(s.state, 'open', `${p.label}: still open`);
    assert.deepEqual(s.states, was.states, `${p.label}: no state change (no reconnect)`);
    assert.deepEqual(s.events.slice(was.events.length), [], `${p.label}: no event at all (error, session-changed, room-left, peer-left, room-key...)`);
    assert.deepEqual(s.musicErrors, [], `${p.label}: no music error`);
    assert.equal(s.controllerId, a.sessionId, `${p.label}: A is still the DJ`);
    const own = await ownSession(p);
    assert.equal(own.status, 200, `${p.label}: its own GET of its session`);
    assert.equal(own.body.connected, true, `${p.label}: the server has it connected`);
    assert.equal(own.body.room, ROOM, `${p.label}: the server has it in the room`);
  }
  const inboxFrom = (p) => p.page.evaluate(() => window.inbox);
  assert.deepEqual((await inboxFrom(a)).filter((x) => x.value?.text === 'forged by M'), [], 'nothing forged reached A');
  assert.deepEqual((await inboxFrom(b)).filter((x) => x.value?.text === 'forged by M'), [], 'nothing sent in A\'s name reached B');

  // Still exchanging messages, both ways, stamped with the right sender.
  await a.page.evaluate(() => window.music.client.send('Messaging', { text: 'hello from A' }));
  await b.page.evaluate(() => window.music.client.send('Messaging', { text: 'hello from B' }));
  await waitFor(async () => (await inboxFrom(b)).some((x) => x.value?.text === 'hello from A' && x.from === a.sessionId), TIMEOUT_MS, () => 'B receives A\'s message');
  await waitFor(async () => (await inboxFrom(a)).some((x) => x.value?.text === 'hello from B' && x.from === b.sessionId), TIMEOUT_MS, () => 'A receives B\'s message');

  // Still sharing music state: A's next change reaches B, A still the DJ.
  const seek = await dj(a, 'seek', [40]);
  assert.equal(seek.controllerId, a.sessionId);
  await waitFor(
    () => b.page.evaluate((s) => {
      const st = window.music.room.state;
      return st?.epoch === s.epoch && st?.sequence === s.sequence && st?.controllerId === s.controllerId;
    }, seek),
    TIMEOUT_MS,
    () => 'B follows A\'s seek after the attacks',
  );
  for (const p of [a, b]) {
    const s = await snapshot(p);
    assert.deepEqual(s.musicErrors, [], `${p.label}: no music error at the end`);
    assert.deepEqual(s.events.slice(before[p.label.toLowerCase()].events.length).filter((e) => e.type === 'error' || e.type === 'session-changed'), [], `${p.label}: no error at the end`);
  }
});
