// SSE and WebSocket lanes between two Firefox pages (PROTOCOL.md §14): page A uses
// `transport: 'sse'`, page B a WebSocket, page C (without `WebSocket`) falls back to SSE; they
// exchange messages across a stream the server ends, a gap longer than the history and a
// server restart. The scenario: tests/support/lanes-sse.mjs.

import { test } from 'node:test';
import { runLanesSse, SSE_SERVER } from './support/lanes-sse.mjs';
import { serverForSpec } from './support/server.mjs';

const spec = serverForSpec(SSE_SERVER);

test('two Firefox pages, one on SSE and one on a WebSocket, exchange messages across stream reconnects and a restart', { timeout: 180_000 }, async () => {
  await runLanesSse(spec.server, ['firefox', 'firefox']);
});
