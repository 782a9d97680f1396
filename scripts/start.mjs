// Run the demo: set up, build pkg/ and server-stub, write the demo tracks into media/ (when
// missing), then serve www/, pkg/ and media/ on http://127.0.0.1:$PORT/ (default 8080) until
// Ctrl-C.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { SERVER_BIN } from '../tests/support/server.mjs';
import { buildSdk } from './build-sdk.mjs';
import { DEMO_TRACKS, writeTracks } from './lib/tones.mjs';
import { ROOT, run, runMain, step } from './lib/proc.mjs';
import { setup } from './setup.mjs';

async function main() {
  await setup();
  await buildSdk();
  step('cargo build --release -p server-stub');
  await run('cargo', ['build', '--release', '-p', 'server-stub']);
  step('media/: demo tracks (self-generated, CC0)');
  writeTracks(join(ROOT, 'media'), DEMO_TRACKS);

  const port = process.env.PORT || '8080';
  // The DJ state file (PROTOCOL.md §13.15) lives in .p3-state/ unless P3_STATE_DIR says otherwise.
  const stateDir = process.env.P3_STATE_DIR || join(ROOT, '.p3-state');
  const server = spawn(SERVER_BIN, ['--host', '127.0.0.1', '--port', port, '--state-dir', stateDir], { cwd: ROOT, stdio: 'inherit' });
  console.log(`Open http://127.0.0.1:${port}/ in two tabs; the music room is http://127.0.0.1:${port}/music.html`);

  // Ctrl-C reaches the server directly (same process group); a SIGTERM sent to this script
  // only reaches us, so forward both. The server shuts down gracefully on either.
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.kill(signal));
  server.on('error', (err) => {
    console.error(`error: could not start ${SERVER_BIN}: ${err.message}`);
    process.exit(1);
  });
  server.on('exit', (code) => process.exit(code ?? 1));
}

runMain(main);
