// Music failover, silent server loss (issue #5 Tier 2): the server process is SIGSTOPped
// mid-song, so its sockets stay open and nothing closes; the heartbeats (every 750 ms, gone
// after 2.25 s without a pong) detect it, every page switches to the WebRTC mesh (`tier` event,
// reason `heartbeat-timeout`) and follows the DJ's seek and pause over it. The scenario and its
// checks: tests/support/failover.mjs. Figures: test-results/music-failover-silent.json.

import { test } from 'node:test';
import { runFailover } from './support/failover.mjs';
import { musicServerForSpec } from './support/music.mjs';

const spec = musicServerForSpec();
const { browsers } = spec;

test('server SIGSTOP mid-song (sockets stay open): heartbeats detect it, every page switches to the mesh and follows the DJ\'s seek and pause, each change once', { timeout: 240_000 }, async () => {
  await runFailover({ music: spec.music, browsers, room: 'e2e-failover-silent', signal: 'SIGSTOP', reason: 'heartbeat-timeout', scenario: 'silent-loss', figures: 'music-failover-silent.json' });
});
