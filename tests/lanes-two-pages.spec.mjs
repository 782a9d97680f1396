// Two separate Chromium browsers, each with the SDK loaded from a real server-stub, exchange
// messages on several lanes through a room; then the server is killed and restarted (all
// sessions lost) and the clients must reconnect, rejoin the room by themselves and exchange
// messages again. The scenario: tests/support/lanes-two-pages.mjs.

import { test } from 'node:test';
import { runLanesTwoPages } from './support/lanes-two-pages.mjs';
import { serverForSpec } from './support/server.mjs';

const spec = serverForSpec({ appVersion: 'e2e' });

test('messages cross Messaging, Data, Sync and Relay, before and after a server restart', { timeout: 180_000 }, async () => {
  await runLanesTwoPages(spec.server, ['chromium', 'chromium']);
});
