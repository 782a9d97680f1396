// Music failover, silent server loss (issue #5 Tier 2): the server process is SIGSTOPped
// mid-song, so its sockets stay open and nothing closes; the heartbeats (every 750 ms, gone
// after 2.25 s without a pong) detect it, every page switches to the WebRTC mesh (`tier` event,
// reason `heartbeat-timeout`) and follows the DJ's seek and pause over it. The scenario and its
// checks: tests/support/failover.mjs. Figures: test-results/music-failover-silent.json.

import { after, before, test } from 'node:test';
import { runFailover } from './support/failover.mjs';
import { startMusicServer } from './support/music.mjs';

let music;
const browsers = [];

before(async () => {
  music = await startMusicServer({ latencyMs: 20, jitterMs: 5 });
});

after(async () => {
  await Promise.all(browsers.map((b) => b.close()));
  music?.server.proc.kill('SIGKILL');
  await music?.stop();
});

test('server SIGSTOP mid-song (sockets stay open): heartbeats detect it, every page switches to the mesh and follows the DJ\'s seek and pause, each change once', { timeout: 240_000 }, async () => {
  await runFailover({ music, browsers, room: 'e2e-failover-silent', signal: 'SIGSTOP', reason: 'heartbeat-timeout', scenario: 'silent-loss', figures: 'music-failover-silent.json' });
});
