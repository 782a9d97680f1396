// The DJ role belongs to an identity and survives a server crash (PROTOCOL.md §13.15), in two
// separate headless Chromium instances (two browser profiles: two device keys in two
// IndexedDBs) following one music room, the server started with `--state-dir`:
//
// 1. Both pages connect with the SDK's defaults: each handshake carries `auth.device` (a
//    non-extractable P-256 key the SDK keeps in IndexedDB), so each session has a `device`
//    identity, different for the two pages. A claims the DJ role: the room's `controllerId` is
//    A's session and `controllerIdentity` A's identity.
// 2. A goes offline (its context's network is cut) and the server is SIGKILLed and restarted
//    on the same port and state dir. B reconnects under a new session: the room names A's
//    identity with no controller session; B's claim is refused `not_controller` (another
//    identity holds the role within the grace).
// 3. A comes back online, reconnects under a new session (a fresh nonce signed by the same
//    key) and is the DJ again without claiming: `controllerId` is its new session, seen by B.
//
// Without the state file (or without identity-bound roles) the restarted room has no DJ and
// B's claim is taken; without the SDK's device key A is a stranger to the restarted server.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { waitFor } from './support/client.mjs';
import { dj, launchMusicBrowser, musicServerForSpec, openMusicPage } from './support/music.mjs';

const ROOM = 'e2e-dj-identity';
/** Reconnect backoff after the outage can reach 16 s (seed 001: 1, 2, 4, 8, 16 s). */
const BACK_TIMEOUT_MS = 90_000;

const stateDir = mkdtempSync(join(tmpdir(), 'p3-dj-state-'));
const spec = musicServerForSpec({ latencyMs: 0, jitterMs: 0, args: ['--state-dir', stateDir, '--dj-grace-s', '600'] });
const { browsers } = spec;
after(() => rmSync(stateDir, { recursive: true, force: true }));

/** The page's session id, verified identity and room state. */
function view(mp) {
  return mp.page.evaluate(() => ({
    sessionId: window.music.client.sessionId,
    identity: window.music.client.handshake?.identity ?? null,
    state: window.music.room.state,
  }));
}

test('the DJ identity is DJ again after SIGKILL and restart without claiming; another identity cannot claim', { timeout: 240_000 }, async () => {
  const url = spec.music.server.url;
  browsers.push(...(await Promise.all([launchMusicBrowser(), launchMusicBrowser()])));
  const a = await openMusicPage(browsers[0], url, { label: 'A', room: ROOM, skewMs: 0 });
  const b = await openMusicPage(browsers[1], url, { label: 'B', room: ROOM, skewMs: 0 });

  const a0 = await view(a);
  const b0 = await view(b);
  assert.equal(a0.identity?.kind, 'device', 'the SDK signed in with its device key');
  assert.equal(b0.identity?.kind, 'device');
  assert.notEqual(a0.identity.id, b0.identity.id, 'two profiles, two device keys');
  const keyA = `device:${a0.identity.id}`;

  await dj(a, 'claimController');
  await waitFor(async () => (await view(b)).state?.controllerId === a0.sessionId, 10_000, () => 'B to see A as DJ');
  assert.equal((await view(a)).state.controllerIdentity, keyA);

  await a.page.context().setOffline(true);
  await spec.music.server.restart(); // SIGKILL, then the same port and state dir
  const bBack = await waitFor(async () => {
    const v = await view(b);
    return v.sessionId !== b0.sessionId && v.state?.controllerIdentity === keyA ? v : null;
  }, BACK_TIMEOUT_MS, () => 'B back on the restarted server, the room naming A\'s identity');
  assert.equal(bBack.identity?.id, b0.identity.id, 'B is the same device after the restart');
  if (bBack.state.controllerId === null) {
    // A is still away: the role waits for A's identity, B's claim is the server's to refuse.
    await assert.rejects(dj(b, 'claimController'), (err) => err.code === 'not_controller');
  }

  await a.page.context().setOffline(false);
  const aBack = await waitFor(async () => {
    const v = await view(a);
    return v.sessionId !== a0.sessionId && v.state?.controllerId === v.sessionId ? v : null;
  }, BACK_TIMEOUT_MS, () => 'A DJ again on the restarted server without claiming');
  assert.equal(aBack.state.controllerIdentity, keyA);
  assert.ok(aBack.state.epoch >= 1);
  await waitFor(async () => (await view(b)).state?.controllerId === aBack.sessionId, 10_000, () => 'B to see A\'s new session as DJ');
  await assert.rejects(dj(b, 'claimController'), (err) => err.code === 'not_controller', 'B cannot take the role');
  assert.equal((await view(b)).state.controllerId, aBack.sessionId);
});
