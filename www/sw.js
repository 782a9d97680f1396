// p3-lanes demo service worker (a module worker: register it with {type: 'module'}).
//
// - Precaches the app shell of ONE version under `p3-shell-<version>` at install, where the
//   version is the `?v=` of this script's URL (the page registers `/sw.js?v=<its version>`),
//   and refuses to install if the server meanwhile serves another version (the cache would
//   lie about what it holds).
// - Serves the shell cache-first; everything else, and every `/api/` request (so a version
//   check is never answered from a cache), goes to the network.
// - On activate, deletes the shell caches of other versions.
// - Answers version checks: a page posts {type: 'check-version'}; the worker runs the SDK's
//   checkVersion({currentVersion}) itself and replies {type: 'version-checked', version,
//   result | error}. On a mismatch the worker leads the purge (service workers win the tabs'
//   election), and the pages reload when their own guard hears it is done.
//
// Top-level await is not allowed in service workers, so the SDK is initialised lazily.

// Only the SDK's PWA entry (`p3-lanes/pwa`): checkVersion and CacheGuard, a few KB of wasm.
import init, { checkVersion } from '/pkg/pwa/p3_lanes.js';

const VERSION = new URL(self.location.href).searchParams.get('v') ?? 'unversioned';
const PREFIX = 'p3-shell-';
const CACHE = `${PREFIX}${VERSION}`;
/** The page's shell: the page, its script and style, and the two SDK entries app.js imports. */
const SHELL = [
  '/index.html',
  '/app.js',
  '/style.css',
  '/pkg/pwa/p3_lanes.js',
  '/pkg/pwa/p3_lanes_bg.wasm',
  '/pkg/lanes/p3_lanes.js',
  '/pkg/lanes/p3_lanes_bg.wasm',
];

/** Options shared with the page's guard (www/app.js): only our shell caches, only our scope. */
const GUARD_OPTIONS = { currentVersion: VERSION, cachePrefix: PREFIX, scope: '/' };

let sdkReady;
const sdk = () => (sdkReady ??= init());

self.addEventListener('install', (event) => {
  event.waitUntil(
    (async () => {
      const fetched = await Promise.all(
        SHELL.map(async (path) => {
          const response = await fetch(path, { cache: 'no-store' });
          if (!response.ok) throw new Error(`precaching ${path}: HTTP ${response.status}`);
          return [path, response];
        }),
      );
      const html = await fetched[0][1].clone().text();
      const served = /<meta\s+name="app-version"\s+content="([^"]*)"/.exec(html)?.[1];
      if (served !== VERSION) {
        throw new Error(`the server now serves version ${served}, not ${VERSION}: not installing`);
      }
      const cache = await caches.open(CACHE);
      await Promise.all(fetched.map(([path, response]) => cache.put(path, response)));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      const names = await caches.keys();
      await Promise.all(names.filter((n) => n.startsWith(PREFIX) && n !== CACHE).map((n) => caches.delete(n)));
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.startsWith('/api/')) return;
  const isPage = request.mode === 'navigate' && (url.pathname === '/' || url.pathname === '/index.html');
  const key = isPage ? '/index.html' : SHELL.includes(url.pathname) ? url.pathname : null;
  if (!key) return;
  // `caches.match` with a cacheName, not `caches.open`: after a purge deleted the cache, this
  // worker (still alive until its pages unload) must not re-create it.
  event.respondWith(caches.match(key, { cacheName: CACHE }).then((hit) => hit ?? fetch(request)));
});

self.addEventListener('message', (event) => {
  if (event.data?.type !== 'check-version') return;
  event.waitUntil(
    (async () => {
      let reply;
      try {
        await sdk();
        const result = await checkVersion(GUARD_OPTIONS);
        reply = { type: 'version-checked', version: VERSION, result };
      } catch (err) {
        reply = { type: 'version-checked', version: VERSION, error: { code: err?.code ?? 'internal', message: String(err?.message ?? err) } };
      }
      event.source?.postMessage(reply);
    })(),
  );
});
