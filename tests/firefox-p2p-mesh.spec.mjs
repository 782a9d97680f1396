// A Firefox ↔ Chromium WebRTC DataChannel mesh: pages A and B in Firefox, C in Chromium, in one
// room; lane messages peer to peer (a chunked 40 KiB value Firefox → Chromium, a bulk transfer
// Firefox → Chromium timed against the server path); the server is SIGKILLed, the mesh
// carries on, and the Firefox ↔ Chromium link A–C, closed meanwhile, heals with its signaling
// relayed by B. The scenario: tests/support/p2p-mesh.mjs.

import { test } from 'node:test';
import { runP2pMesh } from './support/p2p-mesh.mjs';
import { serverForSpec } from './support/server.mjs';

const spec = serverForSpec({ appVersion: 'e2e' });

test('Firefox and Chromium exchange lanes over DataChannels, keep doing so after a server SIGKILL, and heal a Firefox ↔ Chromium link through a relaying peer', { timeout: 180_000 }, async () => {
  await runP2pMesh(spec.server, ['firefox', 'firefox', 'chromium']);
});
