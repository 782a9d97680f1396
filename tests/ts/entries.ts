// The package's other entries have the main entry's API (issue 16): the self-initialising
// `p3-lanes/auto` (and the `/auto` twins of the PWA and full entries) and the Node.js variant (`node` condition of `p3-lanes`).

import { P3Client as AutoClient } from 'p3-lanes/auto';
import { checkVersion, CacheGuard } from 'p3-lanes/pwa/auto';
import { P3Client as FullClient, checkVersion as fullCheckVersion } from 'p3-lanes/full/auto';
import initNode, { P3Client as NodeClient, isP3Error } from '../../pkg/p3_lanes.node.js';
import { provideWebSocket } from '../../pkg/node-websocket.js';

const from: 'global' | 'ws' | 'none' = await provideWebSocket();
await initNode(); // already initialised: resolves at once
const a: AutoClient = await AutoClient.connect('http://127.0.0.1:8080');
const n: NodeClient = await NodeClient.connect('http://127.0.0.1:8080', { lanes: ['Control', 'Messaging'], deviceKey: false });
const f: FullClient = await FullClient.connect('http://127.0.0.1:8080');
const fullStatus: Promise<unknown> = fullCheckVersion('http://127.0.0.1:8080');
void a; void n; void f; void fullStatus; void from;

// checkVersion and CacheGuard take the server's base URL like connect; the old shapes stay.
const viaBase = await checkVersion('https://p3.example.com', { currentVersion: '1.2.3' });
const old = await checkVersion({ currentVersion: '1.2.3' });
const none = await checkVersion();
const guard = new CacheGuard('https://p3.example.com', { recheckOnVisible: false });
const oldGuard = new CacheGuard({ versionUrl: '/api/version' });
for (const r of [viaBase, old, none]) {
  if (r.status === 'reloading') console.log(r.serverVersion, r.purged);
}
guard.stop();
oldGuard.stop();
try {
  await checkVersion('https://p3.example.com');
} catch (err) {
  if (isP3Error(err) && err.code === 'stale_after_purge') console.warn(err.message);
}
