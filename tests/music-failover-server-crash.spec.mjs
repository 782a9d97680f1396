// Music failover, server crash (issue #5 Tier 2): the server process is SIGKILLed mid-song;
// its sockets close, every page switches to the WebRTC mesh at once (`tier` event, reason
// `socket-closed`) and follows the DJ's seek and pause over it; listeners take the room clock
// from the DJ over the mesh (one of them after forgetting its clock), and mesh-mode drift is
// sampled for 10 s. The scenario and its checks: tests/support/failover.mjs and
// mesh-drift.mjs. Figures: test-results/music-failover-crash.json (`mesh` for the drift).

import { test } from 'node:test';
import { runFailover } from './support/failover.mjs';
import { musicServerForSpec } from './support/music.mjs';

const spec = musicServerForSpec();
const { browsers } = spec;

test('server SIGKILL mid-song: every page switches to the mesh and follows the DJ\'s seek and pause, each change once', { timeout: 240_000 }, async () => {
  await runFailover({ music: spec.music, browsers, room: 'e2e-failover-crash', signal: 'SIGKILL', reason: 'socket-closed', scenario: 'server-crash', figures: 'music-failover-crash.json', meshDrift: true });
});
