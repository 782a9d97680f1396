// A plain socket.io 4 server, the comparison point of the `load.*` bench
// (server-stub/benches/load.rs, issue 11 "Latency under load"): in-memory adapter, WebSocket
// transport only, rooms and broadcast to a room, nothing else.
//
//   node scripts/lib/socketio-server.mjs     prints `listening on 127.0.0.1:PORT` (port 0: any)
//
// Events (Socket.IO v5 over Engine.IO v4):
// - `join` (room: string), with ack: joins the room, acks `true`.
// - `msg` (room: string, data: any): emits `msg` (data) to every other member of the room.
// Exits when stdin closes (the bench is gone) or after 10 minutes.

import { createServer } from 'node:http';
import { Server } from 'socket.io';

const http = createServer();
const io = new Server(http, { transports: ['websocket'], serveClient: false });

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
