// A plain socket.io 4 server, the comparison point of the `load.*` bench
// (server-stub/benches/load.rs, issue 11 "Latency under load"): in-memory adapter, WebSocket
// transport only, rooms and broadcast to a room, nothing else. With `--adapter`, one node of a
// socket.io cluster on one Redis, the comparison point of the `cluster.socketio.*` and
// `cluster.redis-restart.*` rows (`load.rs -- --socketio`, issue 14): each adapter set up as
// its README shows, with node-redis clients on their default options (reconnect, offline
// queue), as users would run it.
//
//   node scripts/lib/socketio-server.mjs     prints `listening on 127.0.0.1:PORT` (port 0: any)
//   node scripts/lib/socketio-server.mjs --adapter redis --redis-url redis://127.0.0.1:6379/
//       @socket.io/redis-adapter (Redis pub/sub; a publish client and a subscribe client)
//   node scripts/lib/socketio-server.mjs --adapter redis-streams --redis-url redis://...
//       @socket.io/redis-streams-adapter (one Redis stream, XADD / XREAD)
// With an adapter, an unhandled promise rejection is printed once and does not end the process
// (see below).
//
// Events (Socket.IO v5 over Engine.IO v4):
// - `join` (room: string), with ack: joins the room, acks `true`.
// - `msg` (room: string, data: any): emits `msg` (data) to every other member of the room
//   (with an adapter: on every node).
// Exits when stdin closes (the bench is gone) or after 10 minutes.

import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { Server } from 'socket.io';

const { values: opts } = parseArgs({
  options: { adapter: { type: 'string' }, 'redis-url': { type: 'string' } },
});

/** The socket.io adapter asked for (undefined: the in-memory one). */
async function adapter() {
  if (opts.adapter === undefined) return undefined;
  const url = opts['redis-url'];
  if (!url) throw new Error('--adapter needs --redis-url');
  const { createClient } = await import('redis');
  // A client without an `error` listener throws on a dropped connection (a Redis restart).
  const quiet = (c) => c.on('error', () => {});
  if (opts.adapter === 'redis') {
    const { createAdapter } = await import('@socket.io/redis-adapter');
    const pub = quiet(createClient({ url }));
    const sub = quiet(pub.duplicate());
    await Promise.all([pub.connect(), sub.connect()]);
    return createAdapter(pub, sub);
  }
  if (opts.adapter === 'redis-streams') {
    const { createAdapter } = await import('@socket.io/redis-streams-adapter');
    const client = quiet(createClient({ url }));
    await client.connect();
    return createAdapter(client);
  }
  throw new Error(`unknown --adapter ${opts.adapter} (redis, redis-streams)`);
}

// @socket.io/redis-adapter publishes without handling the returned promise
// (`pubClient.publish(channel, msg)`): while Redis is down each publish rejects, and Node's
// default for an unhandled rejection ends the process (a SIGKILL of redis-server took the node
// down in the bench). Kept alive here, so the bench counts what the adapter delivers rather than
// a crash; the `cluster.redis-restart.*` rows say so.
let rejections = 0;
if (opts.adapter !== undefined) {
  process.on('unhandledRejection', (e) => {
    if (rejections++ === 0) console.error(`socket.io node: unhandled rejection (${e?.code ?? e}), kept alive; further ones not printed`);
  });
}

const http = createServer();
const io = new Server(http, { transports: ['websocket'], serveClient: false, adapter: await adapter() });

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    if (typeof room !== 'string') return;
    socket.join(room);
    if (typeof ack === 'function') ack(true);
  });
  socket.on('msg', (room, data) => {
    if (typeof room !== 'string') return;
    socket.to(room).emit('msg', data);
  });
});

http.listen(0, '127.0.0.1', () => {
  const { address, port } = http.address();
  console.log(`listening on ${address}:${port}`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(0), 600_000).unref();
