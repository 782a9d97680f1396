// Sign-In with Ethereum from a page (issue 12, PROTOCOL.md §3.1, §6.1): the server runs with
// `--room-access authenticated`. Page A builds the EIP-4361 message with
// `P3Client.siweMessage` (nonce from the server), signs it through an injected test wallet
// (`window.ethereum.request({method: 'personal_sign'})`, backed by a fixed secp256k1 key with
// @noble/curves, no extension), connects with `auth: {siwe}`, gets its EIP-55 address as
// `handshake.identity` and joins the room. Page B, without identity, is refused with
// `auth_required` and stays out; replaying A's signature is refused with `auth_invalid` /
// `nonce_reused`.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { secp256k1 } from '@noble/curves/secp256k1';
import { keccak_256 } from '@noble/hashes/sha3';
import { withTwoPages } from './support/browser.mjs';
import { closeClient } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const ROOM = 'members-only';
/** Test key: scalar 1. Its address is well known. */
const PRIVATE_KEY = new Uint8Array(32);
PRIVATE_KEY[31] = 1;
const ADDRESS = '0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf';

/** EIP-191 `personal_sign` of `message` by the test key: `0x` + r ‖ s ‖ v (27/28). */
function personalSign(message) {
  const bytes = new TextEncoder().encode(message);
  const prefix = new TextEncoder().encode(`\x19Ethereum Signed Message:\n${bytes.length}`);
  const hash = keccak_256(new Uint8Array([...prefix, ...bytes]));
  const sig = secp256k1.sign(hash, PRIVATE_KEY);
  const hex = Buffer.from(sig.toCompactRawBytes()).toString('hex');
  return `0x${hex}${(27 + sig.recovery).toString(16)}`;
}

/** The address of the test key, computed like a wallet does (keccak of the public key). */
function testAddress() {
  const pub = secp256k1.getPublicKey(PRIVATE_KEY, false).slice(1);
  return `0x${Buffer.from(keccak_256(pub).slice(12)).toString('hex')}`;
}

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e', args: ['--room-access', 'authenticated'] });
});

after(async () => {
  await server?.stop();
});

/** Gives `page` a minimal EIP-1193 wallet whose `personal_sign` uses the test key. */
async function injectTestWallet(page) {
  await page.exposeFunction('__p3TestSign', personalSign);
  await page.evaluate((address) => {
    window.ethereum = {
      async request({ method, params }) {
        if (method === 'eth_requestAccounts') return [address];
        if (method === 'personal_sign') return window.__p3TestSign(params[0]);
        throw new Error(`test wallet: ${method} not supported`);
      },
    };
  }, testAddress());
}

/** Runs `fn` in the page and returns `{ok: true, value}` or the rejection's `{ok: false, code, reason}`. */
function attempt(page, fn, arg) {
  return page.evaluate(
    async ({ src, arg }) => {
      try {
        return { ok: true, value: await new Function('arg', `return (${src})(arg)`)(arg) };
      } catch (e) {
        return { ok: false, name: e.name, code: e.code, reason: e.reason ?? null };
      }
    },
    { src: fn.toString(), arg },
  );
}

test('a page signs in with SIWE and joins an authenticated room; a page without identity is refused', { timeout: 120_000 }, async () => {
  assert.equal(testAddress(), ADDRESS.toLowerCase(), 'test key address');
  await withTwoPages(server.url, async (pageA, pageB) => {
    await injectTestWallet(pageA);

    // A: nonce + message from the SDK, signature from the wallet, identity from the server.
    const signedIn = await attempt(
      pageA,
      async ({ url, room }) => {
        const [address] = await window.ethereum.request({ method: 'eth_requestAccounts' });
        const message = await window.sdk.P3Client.siweMessage(url, {
          address,
          chainId: 1,
          statement: 'Sign in to the P3 e2e room',
          expiresInMs: 600_000,
        });
        const signature = await window.ethereum.request({ method: 'personal_sign', params: [message, address] });
        window.signed = { message, signature };
        const client = await window.sdk.P3Client.connect(url, { clientId: 'siwe-a', lanes: [1, 2], auth: { siwe: window.signed } });
        window.client = client;
        window.keys = [];
        client.onEvent((ev) => ev.type === 'room-key' && window.keys.push(ev.room));
        const joined = await client.joinRoom(room);
        return { identity: client.handshake.identity, members: joined.members.length, message };
      },
      { url: server.url, room: ROOM },
    );
    assert.equal(signedIn.ok, true, JSON.stringify(signedIn));
    assert.deepEqual(signedIn.value.identity, { kind: 'siwe', id: ADDRESS });
    assert.equal(signedIn.value.members, 1);
    assert.match(signedIn.value.message, new RegExp(`\\n${ADDRESS}\\n`), 'the SDK wrote the EIP-55 address');
    assert.deepEqual(await pageA.evaluate(() => window.keys), [ROOM], 'the admitted member got the room key');

    // B: no identity → auth_required, no room, no key; A hears nothing.
    const anonymous = await attempt(
      pageB,
      async ({ url, room }) => {
        const client = await window.sdk.P3Client.connect(url, { clientId: 'anon-b', lanes: [1, 2] });
        window.client = client;
        window.keys = [];
        client.onEvent((ev) => ev.type === 'room-key' && window.keys.push(ev.room));
        await client.joinRoom(room);
      },
      { url: server.url, room: ROOM },
    );
    assert.deepEqual(anonymous, { ok: false, name: 'P3Error', code: 'auth_required', reason: null });
    assert.equal(await pageB.evaluate(() => window.client.room), null, 'B is not in the room');
    assert.deepEqual(await pageB.evaluate(() => window.keys), [], 'B got no room key');

    // Replaying A's signed message (another page, same signature) is refused: single-use nonce.
    const replay = await attempt(
      pageB,
      async ({ url, signed }) => {
        await window.sdk.P3Client.connect(url, { clientId: 'replay-b', lanes: [1, 2], reconnect: false, auth: { siwe: signed } });
      },
      { url: server.url, signed: await pageA.evaluate(() => window.signed) },
    );
    assert.deepEqual(replay, { ok: false, name: 'P3Error', code: 'auth_invalid', reason: 'nonce_reused' });

    await Promise.all([pageA, pageB].map(closeClient));
  }, 'lanes');
});
