// A strict-TypeScript app on p3-lanes, as a user writes it with Vite: the self-initialising
// entry (no `init()`), typed lanes, `isP3Error`, and the PWA version check against the server's
// base URL. It connects to the server named by `?server=` (default: the page's origin), joins
// `?room=` and records what arrives in `window.app` for tests/vite-app.spec.mjs.

import { P3Client, checkVersion, isP3Error, type TypedP3Client, type VersionCheckResult } from 'p3-lanes/auto';

interface Chat { text: string; n: number }
interface Lanes { Messaging: Chat }

interface AppState {
  sessionId: string;
  members: string[];
  inbox: { from: string | null; value: Chat }[];
  version: VersionCheckResult;
  refused: string | null;
  send(text: string, n: number): void;
}

declare global {
  interface Window { app?: AppState; appError?: string }
}

const params = new URLSearchParams(location.search);
const server = params.get('server') ?? location.origin;
const room = params.get('room') ?? 'vite';
const status = document.getElementById('status');

async function main(): Promise<void> {
  const version = await checkVersion(server, { recheckOnVisible: false });
  const client = await P3Client.connect(server, { lanes: ['Control', 'Messaging'] }) as TypedP3Client<Lanes>;
  const inbox: AppState['inbox'] = [];
  client.onMessage('messaging', (msg) => inbox.push({ from: msg.from, value: msg.value }));
  const { members } = await client.joinRoom(room);
  let refused: string | null = null;
  try {
    client.send('Voice', { muted: true });
  } catch (err) {
    if (!isP3Error(err)) throw err;
    refused = err.code;
  }
  window.app = {
    sessionId: client.sessionId,
    members,
    inbox,
    version,
    refused,
    send: (text, n) => client.send('Messaging', { text, n }),
  };
  if (status) status.textContent = `connected as ${client.sessionId}`;
}

main().catch((err: unknown) => {
  window.appError = isP3Error(err) ? `${err.code}: ${err.message}` : String(err);
  if (status) status.textContent = window.appError;
});
