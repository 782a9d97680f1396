// A full room refuses a join, typed (issue 11, PROTOCOL.md §15): with `--max-room-members 1`,
// page A joins the room; page B's `joinRoom` rejects with a `P3Error` whose `code` is
// `room_full`, B gets an `error` event with that code first, and B stays out of the room
// (`client.room` is null, A hears no `peer-joined`). B can still join another room.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { withTwoPages } from './support/browser.mjs';
import { closeClient } from './support/client.mjs';
import { startServer } from './support/server.mjs';

const LANES = [1, 2];
const ROOM = 'only-one';

/** @type {import('./support/server.mjs').Server} */
let server;

before(async () => {
  server = await startServer({ appVersion: 'e2e', args: ['--max-room-members', '1'] });
});

after(async () => {
  await server?.stop();
});

/** Connects `window.client` and records its events in `window.log`. */
function connect(page, clientId) {
  return page.evaluate(
    async ({ url, clientId, lanes }) => {
      window.log = [];
      const client = await window.sdk.P3Client.connect(url, { clientId, lanes });
      window.client = client;
      client.onEvent((ev) => window.log.push({ type: ev.type, code: ev.code ?? null, room: ev.room ?? null }));
    },
    { url: server.url, clientId, lanes: LANES },
  );
}

/** `joinRoom(room)`: `{ok: true}` or the rejection's `{ok: false, name, code, isError}`. */
function join(page, room) {
  return page.evaluate(async (room) => {
    try {
      await window.client.joinRoom(room);
      return { ok: true };
    } catch (e) {
      return { ok: false, name: e.name, code: e.code, isError: e instanceof Error };
    }
  }, room);
}

test('joinRoom on a full room rejects with room_full and an error event; the client stays out', { timeout: 120_000 }, async () => {
  await withTwoPages(server.url, async (pageA, pageB) => {
    await connect(pageA, 'full-a');
    await connect(pageB, 'full-b');
    assert.deepEqual(await join(pageA, ROOM), { ok: true });

    assert.deepEqual(await join(pageB, ROOM), { ok: false, name: 'P3Error', code: 'room_full', isError: true });
    const logB = await pageB.evaluate(() => window.log);
    assert.ok(
      logB.some((e) => e.type === 'error' && e.code === 'room_full'),
      `B's error event comes with the rejection: ${JSON.stringify(logB)}`,
    );
    assert.equal(await pageB.evaluate(() => window.client.room), null, 'B is not in (nor rejoining) the room');

    // Nothing of B reached A's room; B can use another room.
    await sleep(500);
    const logA = await pageA.evaluate(() => window.log);
    assert.deepEqual(logA.filter((e) => e.type === 'peer-joined'), [], `A hears no peer-joined: ${JSON.stringify(logA)}`);
    assert.deepEqual(await join(pageB, 'another-room'), { ok: true });
    await Promise.all([pageA, pageB].map(closeClient));
  }, 'lanes');
});
