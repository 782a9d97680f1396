// Typed lanes and typed errors under strict TypeScript (issue 16; the music entry, a superset of the lanes one): what an app declares, what the
// compiler then accepts, and what it refuses (each `@ts-expect-error` fails the compile if the
// line below it ever type-checks, e.g. if a payload type collapsed to `unknown` or `any`).

import init, {
  P3Client,
  isP3Error,
  start,
  type ErrorCode,
  type HandshakeResponse,
  type MusicControl,
  type P3Error,
  type P3Message,
  type TypedP3Client,
} from 'p3-lanes/music';

interface ChatMessage { text: string; at: number }
interface Position { positionMs: number }
/** What arrives on each lane. */
interface Incoming { Messaging: ChatMessage & { from: string }; Sync: Position }
/** What this app sends. */
interface Outgoing { Messaging: ChatMessage; Sync: Position }

await init();
start(); // typed; calling it again does nothing

const client = await P3Client.connect('http://127.0.0.1:8080', { transport: 'websocket' }) as TypedP3Client<Incoming, Outgoing>;

// A lane by name, lower-case name or id denotes the same payload type.
client.onMessage('Messaging', (msg) => msg.value.text.toUpperCase());
client.onMessage('messaging', (msg) => msg.value.from.length);
client.onMessage(2, (msg: P3Message<ChatMessage & { from: string }>) => msg.value.at.toFixed());
client.onMessage('Sync', (msg) => msg.value.positionMs + 1);
client.onMessage(7, (msg) => msg.value.positionMs);
// A lane the map leaves out carries `unknown`.
client.onMessage('Data', (msg) => {
  // @ts-expect-error: `unknown` has no properties
  msg.value.anything;
});

client.send('Messaging', { text: 'hi', at: Date.now() });
client.send(7, { positionMs: 61250 }, 'a-session-id');
client.send('Data', new Uint8Array([1, 2, 3]));
// @ts-expect-error: Messaging carries ChatMessage
client.send('Messaging', { positionMs: 1 });
// @ts-expect-error: `text` must be a string
client.send('messaging', { text: 1, at: 0 });
client.onMessage('Sync', (msg) => {
  // @ts-expect-error: Sync's payload has no `text`
  msg.value.text;
});
// @ts-expect-error: not a lane
client.send('Chat', {});

// Closed sets are literal unions.
const handshake: HandshakeResponse = client.handshake;
const transport: 'websocket' | 'sse' = handshake.transport;
// @ts-expect-error: no such transport
const bad: typeof handshake.transport = 'http';
void transport;
void bad;
const actions: MusicControl['action'][] = ['play', 'pause', 'seek', 'change-track', 'handover'];
// @ts-expect-error: not an action the authority resolves
const unknownAction: MusicControl['action'] = 'rewind';
void actions;
void unknownAction;

// Errors: a `catch` variable is `unknown`; `isP3Error` narrows it, `code` is an ErrorCode.
try {
  client.send('Voice', 'not negotiated');
} catch (err) {
  // @ts-expect-error: `err` is unknown before narrowing
  err.code;
  if (!isP3Error(err)) throw err;
  const code: ErrorCode = err.code;
  const asError: Error = err;
  switch (err.code) {
    case 'lane_not_negotiated': break;
    case 'backpressure': break;
    // @ts-expect-error: not an error code
    case 'no_such_code': break;
    default: throw err;
  }
  void code;
  void asError;
}
const fromP3: P3Error | undefined = undefined;
void fromP3;
client.close();
