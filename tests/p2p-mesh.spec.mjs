// Three separate Chromium browsers build a WebRTC DataChannel mesh in one room and exchange
// lane messages peer to peer (a chunked 40 KiB value, a bulk transfer timed against the
// server path); the server is SIGKILLed, the mesh carries on, and a link closed meanwhile
// heals with its signaling relayed by the third peer. The scenario: tests/support/p2p-mesh.mjs.

import { test } from 'node:test';
import { runP2pMesh } from './support/p2p-mesh.mjs';
import { serverForSpec } from './support/server.mjs';

const spec = serverForSpec({ appVersion: 'e2e' });

test('three browsers exchange lanes over DataChannels, keep doing so after a server SIGKILL, and heal a link through a relaying peer', { timeout: 180_000 }, async () => {
  await runP2pMesh(spec.server, ['chromium', 'chromium', 'chromium']);
});
