// The DJ role belongs to a SIWE identity and survives a server crash (issue 12; PROTOCOL.md
// §3.1 re-handshakes, §13.15). The server runs with `--room-access authenticated` and a
// `--state-dir` (a temp dir). Separate headless Chromium instances, each with an injected test
// wallet (fixed secp256k1 keys signed with @noble/curves, as in auth-siwe.spec.mjs):
//
// 1. A connects with `auth` as a FUNCTION (fetch a nonce with `P3Client.siweMessage`, sign it),
//    joins the music room and claims the DJ role: `controllerIdentity` is `siwe:<A's address>`.
//    B (another SIWE key) joins; its claim is refused `not_controller`. An anonymous page (no
//    `auth`: only the SDK's device key, which admits nowhere but open rooms) is refused
//    `auth_required`. S connects with a STATIC `auth: {siwe}`.
// 2. The server is SIGKILLed and restarted on the same port and state dir. A's SDK calls the
//    function again (a fresh nonce, a fresh signature) and A is DJ again without claiming,
//    under a new session; B comes back too, sees A as DJ, and its claim is still refused.
// 3. S's spent signature is refused (`nonce_unknown`: the restarted server forgot its nonces;
//    `nonce_reused` on the same server): S reports one `error` `auth_invalid` and
//    closes (state `closed`) instead of retrying forever.
//
// 4. Another SIWE page opening a peer-to-peer room without `deviceId` gets the default origin
//    bound to its identity (`siwe:<address>/device-<hex>`, PROTOCOL.md §13.15), which the server
//    refuses from anyone else.
//
// Without the auth function being called per handshake A could not sign in again (it would
// end like S); without the state file (run with a server that drops `--state-dir`) the
// restarted room has no DJ and A is not DJ again.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { secp256k1 } from '@noble/curves/secp256k1';
import { keccak_256 } from '@noble/hashes/sha3';
import { launchBrowser, openSdkPage } from './support/browser.mjs';
import { waitFor } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const ROOM = 'e2e-dj-siwe';
/** Reconnect backoff after the outage can reach 16 s (seed 001: 1, 2, 4, 8, 16 s). */
const BACK_TIMEOUT_MS = 90_000;

/** A test key: the scalar `n` (1: A, 2: B, 3: S). */
function testKey(n) {
  const key = new Uint8Array(32);
  key[31] = n;
  return key;
}

/** The (lowercase) address of `key`, computed like a wallet does. */
function addressOf(key) {
  const pub = secp256k1.getPublicKey(key, false).slice(1);
  return `0x${Buffer.from(keccak_256(pub).slice(12)).toString('hex')}`;
}

/** EIP-191 `personal_sign` of `message` by `key`: `0x` + r ‖ s ‖ v (27/28). */
function personalSign(key, message) {
  const bytes = new TextEncoder().encode(message);
  const prefix = new TextEncoder().encode(`\x19Ethereum Signed Message:\n${bytes.length}`);
  const sig = secp256k1.sign(keccak_256(new Uint8Array([...prefix, ...bytes])), key);
  return `0x${Buffer.from(sig.toCompactRawBytes()).toString('hex')}${(27 + sig.recovery).toString(16)}`;
}

const stateDir = mkdtempSync(join(tmpdir(), 'p3-dj-siwe-state-'));
/** @type {import('./support/server.mjs').Server} */
let server;
const browsers = [];

before(async () => {
  server = await startServer({
    appVersion: 'e2e',
    args: ['--room-access', 'authenticated', '--state-dir', stateDir, '--dj-grace-s', '600'],
  });
});

after(async () => {
  await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  server?.proc.kill('SIGKILL');
  await server?.stop().catch(() => {});
  rmSync(stateDir, { recursive: true, force: true });
});

/** A page in its own browser with the SDK loaded and, given `key`, a test wallet for it. */
async function openPage(label, key) {
  const browser = await launchBrowser();
  browsers.push(browser);
  const page = await openSdkPage(browser, server.url, label, 'music');
  if (key) {
    await page.exposeFunction('__p3TestSign', (message) => personalSign(key, message));
    await page.evaluate((address) => {
      window.ethereum = {
        async request({ method, params }) {
          if (method === 'eth_requestAccounts') return [address];
          if (method === 'personal_sign') return window.__p3TestSign(params[0]);
          throw new Error(`test wallet: ${method} not supported`);
        },
      };
    }, addressOf(key));
  }
  return page;
}

/**
 * In `page`: connect (`auth`: `'function'` signs anew for every handshake, `'static'` signs
 * once, `'none'`), record `error` events and states, open the music room. Resolves to
 * `{ok, identity}` or the rejection's `{ok: false, code, reason}`.
 */
function joinMusic(page, auth) {
  return page.evaluate(
    async ({ url, room, auth }) => {
      const { P3Client } = window.sdk;
      window.signIns = 0;
      window.errors = [];
      window.states = [];
      const signIn = async () => {
        window.signIns += 1;
        const [address] = await window.ethereum.request({ method: 'eth_requestAccounts' });
        const message = await P3Client.siweMessage(url, { address, chainId: 1, expiresInMs: 600_000 });
        const signature = await window.ethereum.request({ method: 'personal_sign', params: [message, address] });
        return { siwe: { message, signature } };
      };
      const options = { lanes: ['Control', 'Sync'] };
      if (auth === 'function') options.auth = signIn;
      if (auth === 'static') options.auth = await signIn();
      try {
        const client = await P3Client.connect(url, options);
        window.client = client;
        client.onEvent((ev) => ev.type === 'error' && window.errors.push({ code: ev.code, message: ev.message }));
        client.onStateChange((state) => window.states.push(state));
        window.room = await client.musicRoom(room, { media: document.createElement('audio') });
        return { ok: true, identity: client.handshake.identity ?? null };
      } catch (err) {
        return { ok: false, code: err.code, reason: err.reason ?? null, message: err.message };
      }
    },
    { url: server.url, room: ROOM, auth },
  );
}

/** The page's session, identity, room state, sign-ins, errors and connection state. */
function view(page) {
  return page.evaluate(() => ({
    sessionId: window.client?.sessionId ?? null,
    identity: window.client?.handshake?.identity ?? null,
    state: window.room?.state ?? null,
    connection: window.client?.state ?? null,
    signIns: window.signIns,
    errors: window.errors,
  }));
}

/** `room.claimController()` in `page`: `null` on success, else the rejection's code. */
function claim(page) {
  return page.evaluate(async () => {
    try {
      await window.room.claimController();
      return null;
    } catch (err) {
      return err.code ?? String(err);
    }
  });
}

test('a SIWE DJ is DJ again after SIGKILL and restart, signing anew; others cannot claim; a spent static auth stops', { timeout: 240_000 }, async () => {
  const [keyA, keyB, keyS] = [testKey(1), testKey(2), testKey(3)];
  const [pageA, pageB, pageS, pageAnon] = await Promise.all([
    openPage('A', keyA),
    openPage('B', keyB),
    openPage('S', keyS),
    openPage('anon'),
  ]);

  // 1. A signs in (function form), joins, claims.
  const a = await joinMusic(pageA, 'function');
  assert.equal(a.ok, true, JSON.stringify(a));
  assert.equal(a.identity?.kind, 'siwe');
  assert.equal(a.identity.id.toLowerCase(), addressOf(keyA));
  const identityA = `siwe:${a.identity.id}`;
  assert.equal(await claim(pageA), null, 'A claims the free role');
  const a0 = await waitFor(async () => {
    const v = await view(pageA);
    return v.state?.controllerId === v.sessionId ? v : null;
  }, 10_000, () => 'A to be the DJ');
  assert.equal(a0.state.controllerIdentity, identityA, 'the role belongs to A\'s address');
  assert.equal(a0.signIns, 1);

  // The anonymous page has no verified identity (its device key admits only to open rooms).
  const anon = await joinMusic(pageAnon, 'none');
  assert.equal(anon.ok, false, JSON.stringify(anon));
  assert.equal(anon.code, 'auth_required', JSON.stringify(anon));

  const b = await joinMusic(pageB, 'function');
  assert.equal(b.ok, true, JSON.stringify(b));
  assert.equal(b.identity.id.toLowerCase(), addressOf(keyB));
  const b0 = await waitFor(async () => {
    const v = await view(pageB);
    return v.state?.controllerId === a0.sessionId ? v : null;
  }, 10_000, () => 'B to see A as DJ');
  assert.equal(await claim(pageB), 'not_controller', 'B cannot take A\'s role');

  const s = await joinMusic(pageS, 'static');
  assert.equal(s.ok, true, JSON.stringify(s));
  const s0 = await view(pageS);

  // 2. SIGKILL, restart on the same port and state dir.
  await server.restart();

  const aBack = await waitFor(async () => {
    const v = await view(pageA);
    return v.sessionId !== a0.sessionId && v.state?.controllerId === v.sessionId ? v : null;
  }, BACK_TIMEOUT_MS, async () => `A DJ again on the restarted server without claiming: ${JSON.stringify(await view(pageA))}`);
  assert.equal(aBack.state.controllerIdentity, identityA);
  assert.deepEqual(aBack.identity, a.identity, 'the same address signed in again');
  assert.ok(aBack.signIns >= 2, `the auth function was called again (${aBack.signIns})`);
  assert.ok(aBack.state.epoch > a0.state.epoch, 'the epoch never goes backwards');
  assert.deepEqual(aBack.errors.filter((e) => e.code === 'auth_invalid'), [], 'A was never refused');

  const bBack = await waitFor(async () => {
    const v = await view(pageB);
    return v.sessionId !== b0.sessionId && v.state?.controllerId === aBack.sessionId ? v : null;
  }, BACK_TIMEOUT_MS, async () => `B back, seeing A's new session as DJ: ${JSON.stringify(await view(pageB))}`);
  assert.equal(bBack.state.controllerIdentity, identityA);
  assert.equal(await claim(pageB), 'not_controller', 'B still cannot take the role');
  assert.equal((await view(pageA)).state.controllerId, aBack.sessionId);

  // 3. S's static signature is spent: one auth_invalid error, then closed, no loop.
  const sEnd = await waitFor(async () => {
    const v = await view(pageS);
    return v.connection === 'closed' ? v : null;
  }, BACK_TIMEOUT_MS, async () => `S to stop with a spent static auth: ${JSON.stringify(await view(pageS))}`);
  assert.equal(sEnd.sessionId, s0.sessionId, 'S never got a new session');
  const refusals = sEnd.errors.filter((e) => e.code === 'auth_invalid');
  assert.equal(refusals.length, 1, JSON.stringify(sEnd.errors));
  assert.match(refusals[0].message, /nonce_(unknown|reused)/, 'the refusal names the spent nonce');
  await new Promise((resolve) => setTimeout(resolve, 3_000));
  const sLater = await view(pageS);
  assert.equal(sLater.connection, 'closed');
  assert.equal(sLater.errors.length, sEnd.errors.length, 'no retries after closing');
});

test('with a verified identity the default origin of offline changes is bound to it', { timeout: 60_000 }, async () => {
  const key = testKey(4);
  const page = await openPage('P', key);
  const r = await page.evaluate(
    async ({ url }) => {
      const { P3Client } = window.sdk;
      const auth = async () => {
        const [address] = await window.ethereum.request({ method: 'eth_requestAccounts' });
        const message = await P3Client.siweMessage(url, { address, chainId: 1 });
        const signature = await window.ethereum.request({ method: 'personal_sign', params: [message, address] });
        return { siwe: { message, signature } };
      };
      const client = await P3Client.connect(url, { lanes: ['Control', 'Messaging', 'Sync'], auth });
      const media = document.createElement('audio');
      const room = await client.musicRoom('e2e-dj-siwe-origin', { media, peerToPeer: { rtcConfiguration: { iceServers: [] } } });
      return {
        identity: client.handshake.identity,
        deviceId: room.deviceId,
        stored: localStorage.getItem('p3-lanes-device-id'),
      };
    },
    { url: server.url },
  );
  assert.equal(r.identity.id.toLowerCase(), addressOf(key));
  assert.match(r.stored, /^device-[0-9a-f]{16}$/);
  assert.equal(r.deviceId, `siwe:${r.identity.id}/${r.stored}`, 'bound: `<identity key>/<device name>`');
});
