// Run the demo: set up, build pkg/ and server-stub, then serve www/ and pkg/ on
// http://127.0.0.1:$PORT/ (default 8080) until Ctrl-C.

import { spawn } from 'node:child_process';
import { SERVER_BIN } from '../tests/support/server.mjs';
import { buildSdk } from './build-sdk.mjs';
import { ROOT, run, runMain, step } from './lib/proc.mjs';
import { setup } from './setup.mjs';

async function main() {
  await setup();
  await buildSdk();
  step('cargo build --release -p server-stub');
  await run('cargo', ['build', '--release', '-p', 'server-stub']);

  const port = process.env.PORT || '8080';
  const server = spawn(SERVER_BIN, ['--host', '127.0.0.1', '--port', port], { cwd: ROOT, stdio: 'inherit' });
  console.log(`Open http://127.0.0.1:${port}/ in two tabs`);

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
