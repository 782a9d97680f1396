// SSE lanes in real Chromium (PROTOCOL.md §14): page A uses `transport: 'sse'`, page B a
// WebSocket, page C falls back to SSE without `WebSocket`; they exchange messages in a room
// across a stream the server ends (resumed with Last-Event-ID), a gap longer than the history
// (an explicit `discontinuity`) and a server restart. The scenario:
// tests/support/lanes-sse.mjs.

import { test } from 'node:test';
import { runLanesSse, SSE_SERVER } from './support/lanes-sse.mjs';
import { serverForSpec } from './support/server.mjs';

const spec = serverForSpec(SSE_SERVER);

test('an SSE page and a WebSocket page exchange messages across stream reconnects and a restart', { timeout: 180_000 }, async () => {
  await runLanesSse(spec.server, ['chromium', 'chromium']);
});
