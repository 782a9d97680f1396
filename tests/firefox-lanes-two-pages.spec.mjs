// Lanes in Firefox (Debian's firefox-esr through tests/support/firefox.mjs): two Firefox pages,
// then a Firefox page and a Chromium page, exchange messages on Messaging, Data, Sync and Relay
// through a room, before and after a server restart (reconnect and rejoin by themselves). The
// scenario: tests/support/lanes-two-pages.mjs.

import { test } from 'node:test';
import { runLanesTwoPages } from './support/lanes-two-pages.mjs';
import { serverForSpec } from './support/server.mjs';

const spec = serverForSpec({ appVersion: 'e2e' });

test('two Firefox pages: messages cross Messaging, Data, Sync and Relay, before and after a server restart', { timeout: 180_000 }, async () => {
  await runLanesTwoPages(spec.server, ['firefox', 'firefox']);
});

test('a Firefox page and a Chromium page in one room: messages cross every lane, before and after a server restart', { timeout: 180_000 }, async () => {
  await runLanesTwoPages(spec.server, ['firefox', 'chromium']);
});
