// A strict-TypeScript app on p3-lanes, as a user writes it with Vite: self-initialising entries
// (no `init()`, see ./sdk.ts), typed lanes, `isP3Error`, the PWA version check against the
// server's base URL, and a music room. It connects to the server named by `?server=` (default:
// the page's origin), joins `?room=` as its music room, becomes the DJ, plays the server's first
// track and records what happens in `window.app` for tests/vite-app.spec.mjs.

import {
  P3Client,
  checkVersion,
  isP3Error,
  type MusicRoomState,
  type MusicTrack,
  type TypedP3Client,
  type VersionCheckResult,
} from './sdk';

interface Chat { text: string; n: number }
interface Lanes { Messaging: Chat }

interface AppState {
  sessionId: string;
  members: string[];
  inbox: { from: string | null; value: Chat }[];
  version: VersionCheckResult;
  refused: string | null;
  music: MusicRoomState;
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
  const client = await P3Client.connect(server, { lanes: ['Control', 'Messaging', 'Sync'] }) as TypedP3Client<Lanes>;
  const inbox: AppState['inbox'] = [];
  client.onMessage('messaging', (msg) => inbox.push({ from: msg.from, value: msg.value }));
  const { members } = await client.joinRoom(room);
  // The same room as a music room (a session is in one room at a time): DJ, first track, play.
  const music = await client.musicRoom(room, { media: new Audio() });
  await music.claimController();
  const { tracks } = await (await fetch(`${server}/api/media`)).json() as { tracks: MusicTrack[] };
  const first = tracks[0];
  if (!first) throw new Error('the server lists no media');
  // Its `url` is relative to the server (`/media/...`), not to this page.
  await music.changeTrack({ ...first, url: new URL(first.url ?? first.id, server).href });
  const playing = await music.play();
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
    music: playing,
    send: (text, n) => client.send('Messaging', { text, n }),
  };
  if (status) status.textContent = `connected as ${client.sessionId}`;
}

main().catch((err: unknown) => {
  window.appError = isP3Error(err) ? `${err.code}: ${err.message}` : String(err);
  if (status) status.textContent = window.appError;
});
