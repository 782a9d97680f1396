// p3-lanes demo: connects to the server this page came from with all 8 lanes, shows the
// handshake result and the live connection state, keeps per-lane sent/received counters,
// auto-joins a room (?room=name, default "demo") and logs what arrives.
//
// For tests: window.p3demo = { client, counters, members } once connected, where
// counters = { sent: {1: n, ..., 8: n}, received: {...} } keyed by lane id.
//
// PWA cache protection (seed 000): before connecting, a CacheGuard compares this page's
// <meta name="app-version"> with GET /api/version; a stale page (e.g. served by the service
// worker from an old cache) is purged and reloaded once, safely. Only when the page is up to
// date does it register the service worker (/sw.js?v=<version>) that caches this version for
// offline use. It checks again on the server's `version` event and when the tab becomes
// visible. ?check=sw lets the service worker run the check instead. For tests:
// window.p3pwa = { guard, pageVersion, result }, and sessionStorage['p3demo.pwa-log'] lists
// this tab's loads and guard events across reloads.
//
// It imports two entries of the SDK (README "Install"), each with its own small wasm: the PWA
// guard, loaded first, and the lanes client, loaded only once the page is known to be current.

import initPwa, { CacheGuard } from '/pkg/pwa/p3_lanes.js';
import initLanes, { P3Client } from '/pkg/lanes/p3_lanes.js';

const ALL_LANES = [1, 2, 3, 4, 5, 6, 7, 8];
const LOG_LIMIT = 200;
const room = new URLSearchParams(location.search).get('room') || 'demo';
/** `?transport=sse` receives the lanes over one EventSource and sends with POST (PROTOCOL.md §14). */
const transport = new URLSearchParams(location.search).get('transport') || 'auto';

const counters = {
  sent: Object.fromEntries(ALL_LANES.map((id) => [id, 0])),
  received: Object.fromEntries(ALL_LANES.map((id) => [id, 0])),
};
/** Session ids of the room's members, this tab's included. */
const members = new Set();

const $ = (id) => document.getElementById(id);

/** Show an error (an SDK error carries a machine-readable `code`). */
function showError(err, context) {
  const item = document.createElement('p');
  const code = document.createElement('code');
  code.textContent = err?.code ?? 'error';
  item.append(context ? `${context}: ` : '', code, ` ${err?.message ?? String(err)}`);
  $('errors').prepend(item);
  while ($('errors').children.length > 5) $('errors').lastElementChild.remove();
}

function showState(state, reason) {
  const el = $('state');
  el.textContent = reason && state !== 'open' ? `${state} (${reason})` : state;
  el.dataset.state = state;
  $('send-button').disabled = state === 'closed';
}

function shortId(id) {
  return id ? id.slice(0, 8) : 'server';
}

function showHandshake(client) {
  const hs = client.handshake;
  $('session-id').textContent = hs.sessionId;
  // The lane multiplexer (chunking, priorities, resume) is the SDK's default when granted.
  $('transport').textContent =
    hs.transport === 'sse'
      ? 'sse · one EventSource for every lane, sends by POST'
      : hs.protocol.features.includes('mux')
        ? `${hs.transport} · lane multiplexer (v2 frames)`
        : `${hs.transport} · v1 frames`;
  $('protocol-version').textContent = `${hs.protocol.version} (${hs.protocol.features.join(', ')})`;
  $('dictionary').textContent = `v${hs.dictionary.version}, ${hs.dictionary.tokens.length} tokens, ${hs.dictionary.shapes?.length ?? 0} shapes`;
  $('ttl').textContent = `${hs.ttlSeconds} s`;
  $('heartbeat').textContent = `ping every ${hs.heartbeat.intervalMs / 1000} s, timeout ${hs.heartbeat.timeoutMs / 1000} s`;
}

/** One table row per granted lane; the counter cells are updated in place. */
function buildLaneTable(client) {
  const rows = $('lane-rows');
  const select = $('send-lane');
  rows.replaceChildren();
  const previous = select.value;
  select.replaceChildren();
  for (const lane of client.handshake.lanes) {
    const tr = document.createElement('tr');
    tr.id = `lane-${lane.id}`;
    const cells = [lane.id, lane.name, lane.encoding, lane.priority, lane.reliable ? 'yes' : 'no', counters.sent[lane.id], counters.received[lane.id]];
    cells.forEach((text, i) => {
      const cell = document.createElement(i === 1 ? 'th' : 'td');
      if (i === 1) cell.scope = 'row';
      cell.textContent = String(text);
      if (i === 5) cell.className = 'sent';
      if (i === 6) cell.className = 'received';
      tr.append(cell);
    });
    rows.append(tr);
    // Control carries the protocol itself (joins, heartbeats); apps use the other lanes.
    if (lane.id !== 1) select.append(new Option(`${lane.id} · ${lane.name}`, String(lane.id)));
  }
  if (previous) select.value = previous;
}

function updateCounter(lane, kind) {
  const cell = document.querySelector(`#lane-${lane} .${kind}`);
  if (cell) cell.textContent = String(counters[kind][lane]);
}

function showMembers(client) {
  $('room-name').textContent = client.room ?? room;
  const list = $('members');
  list.replaceChildren();
  for (const id of members) {
    const li = document.createElement('li');
    const code = document.createElement('code');
    code.textContent = shortId(id);
    code.title = id;
    li.append(code);
    if (id === client.sessionId) li.append(' (you)');
    list.append(li);
  }
  $('member-count').textContent = members.size === 1 ? '1 member' : `${members.size} members`;
}

/** A multiplexer event about one lane, in the message log. */
function logLaneEvent(client, laneId, text) {
  const lane = client.handshake.lanes.find((l) => l.id === laneId);
  const li = document.createElement('li');
  const head = document.createElement('span');
  head.className = 'meta';
  head.textContent = `${lane?.name ?? 'lane'} (${laneId}) · lane event`;
  li.append(head, text);
  $('log').prepend(li);
  while ($('log').children.length > LOG_LIMIT) $('log').lastElementChild.remove();
  $('log-empty').hidden = true;
}

function logMessage(client, msg) {
  const lane = client.handshake.lanes.find((l) => l.id === msg.lane);
  const li = document.createElement('li');
  const head = document.createElement('span');
  head.className = 'meta';
  head.textContent = `${lane?.name ?? 'lane'} (${msg.lane}) · from ${shortId(msg.from)} · #${msg.seq}`;
  if (msg.from) head.title = msg.from;
  const body = document.createElement('code');
  body.textContent = JSON.stringify(msg.value);
  li.append(head, body);
  $('log').prepend(li);
  while ($('log').children.length > LOG_LIMIT) $('log').lastElementChild.remove();
  $('log-empty').hidden = true;
}

function onEvent(client, ev) {
  switch (ev.type) {
    case 'room-joined':
      members.clear();
      ev.members.forEach((id) => members.add(id));
      showMembers(client);
      break;
    case 'peer-joined':
      members.add(ev.sessionId);
      showMembers(client);
      break;
    case 'peer-left':
      members.delete(ev.sessionId);
      showMembers(client);
      break;
    case 'room-left':
      members.clear();
      showMembers(client);
      break;
    case 'pong':
      $('rtt').textContent = `${ev.rttMs.toFixed(0)} ms`;
      break;
    case 'session-changed':
      showHandshake(client);
      buildLaneTable(client);
      break;
    case 'error': {
      // `send_failed`: the SDK gave up sending over SSE after its retries (PROTOCOL.md §14.6).
      const who = ev.code === 'send_failed' ? `SDK, SSE send #${ev.seq}` : 'server';
      showError(ev, ev.lane ? `${who}, lane ${ev.lane}` : who);
      break;
    }
    // Lane multiplexer (the SDK's default, PROTOCOL.md §11).
    case 'discontinuity':
      // Messages on this lane were lost (e.g. the server restarted): a real app resyncs here.
      logLaneEvent(client, ev.lane, `discontinuity (${ev.reason}): epoch ${ev.expectedEpoch} #${ev.expectedSeq} → epoch ${ev.epoch} #${ev.seq}`);
      break;
    case 'drain':
      logLaneEvent(client, ev.lane, 'drain: the lane takes messages again after a backpressure refusal');
      break;
    case 'dropped':
      logLaneEvent(client, ev.lane, `dropped ${ev.count} old message(s) (unreliable lane over its queue depth)`);
      break;
    case 'version':
      // The server runs another version (a deploy, or we reconnected after a restart).
      logPwa({ type: 'server-version', version: ev.version });
      if (ev.version !== pageVersion) window.p3pwa?.guard.check().catch(() => {});
      break;
  }
}

// ---- PWA cache protection ----

const PWA_LOG = 'p3demo.pwa-log';
const DRAFT = 'p3demo.draft';
const SHELL_PREFIX = 'p3-shell-';
const pageVersion = document.querySelector('meta[name="app-version"]')?.content ?? null;

/** Appends to this tab's log in sessionStorage (it survives reloads). */
function logPwa(entry) {
  const log = JSON.parse(sessionStorage.getItem(PWA_LOG) ?? '[]');
  log.push({ ...entry, at: Date.now() });
  sessionStorage.setItem(PWA_LOG, JSON.stringify(log));
}

function onGuardEvent(ev) {
  const { type, result, attempt, purged, caches, error } = ev;
  logPwa({ type, status: result?.status, attempt, purged, caches, code: error?.code });
  if (type === 'checked' && result.status === 'up-to-date') {
    $('app-version').textContent = result.afterPurge ? `${result.version} (updated)` : result.version;
  } else if (type === 'purging' || type === 'reloading') {
    $('app-version').textContent = `${pageVersion} → ${ev.serverVersion} (updating)`;
  } else if (type === 'stale-after-purge') {
    $('app-version').textContent = `${pageVersion} (server has ${ev.serverVersion})`;
    showError(error, 'update');
  } else if (type === 'error') {
    showError(error, 'update check');
  }
}

/** The guard: only our shell caches and our scope; keeps the unsent message across a reload. */
function startGuard() {
  const draft = sessionStorage.getItem(DRAFT);
  if (draft) {
    $('send-text').value = draft;
    sessionStorage.removeItem(DRAFT);
  }
  return new CacheGuard({
    cachePrefix: SHELL_PREFIX,
    scope: '/',
    beforePurge: () => {
      if ($('send-text').value) sessionStorage.setItem(DRAFT, $('send-text').value);
    },
    onEvent: onGuardEvent,
  });
}

/** Asks the controlling service worker to run the check; resolves with its reply. */
function askServiceWorker() {
  return new Promise((resolve) => {
    const container = navigator.serviceWorker;
    container.addEventListener('message', function onReply(e) {
      if (e.data?.type !== 'version-checked') return;
      container.removeEventListener('message', onReply);
      resolve(e.data);
    });
    container.controller.postMessage({ type: 'check-version' });
  });
}

async function registerServiceWorker() {
  if (!('serviceWorker' in navigator) || !pageVersion) {
    $('sw-state').textContent = 'unavailable';
    return;
  }
  try {
    await navigator.serviceWorker.register(`/sw.js?v=${encodeURIComponent(pageVersion)}`, { type: 'module', scope: '/' });
    $('sw-state').textContent = 'installing';
    await navigator.serviceWorker.ready;
    $('sw-state').textContent = `cached (${pageVersion})`;
  } catch (err) {
    $('sw-state').textContent = 'failed';
    showError(err, 'service worker');
  }
}

/** Checks the version; `false` when the page is about to reload. */
async function protectFromStaleCache() {
  $('app-version').textContent = pageVersion ?? '–';
  logPwa({ type: 'load', version: pageVersion, controlled: Boolean(navigator.serviceWorker?.controller) });
  const guard = startGuard();
  window.p3pwa = { guard, pageVersion, result: null };
  let result = null;
  if (new URLSearchParams(location.search).get('check') === 'sw' && navigator.serviceWorker?.controller) {
    const reply = await askServiceWorker();
    logPwa({ type: 'worker-replied', status: reply.result?.status, purged: reply.result?.purged, code: reply.error?.code });
    result = reply.result ?? null;
  } else {
    // stale_after_purge and other failures are reported by the guard's events.
    result = await guard.check().catch(() => null);
  }
  window.p3pwa.result = result;
  if (result?.status === 'reloading') return false;
  if (result?.status === 'up-to-date' || result?.status === 'skipped') registerServiceWorker();
  return true;
}

function wireSendForm(client) {
  const form = $('send-form');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const lane = Number($('send-lane').value);
    const input = $('send-text');
    try {
      client.send(lane, { text: input.value, ts: Date.now() });
      counters.sent[lane] += 1;
      updateCounter(lane, 'sent');
      input.value = '';
      input.focus();
    } catch (err) {
      showError(err, 'send');
    }
  });
}

async function main() {
  showState('connecting');
  $('room-name').textContent = room;
  try {
    await initPwa();
  } catch (err) {
    showState('closed');
    showError(err, 'loading the SDK');
    return;
  }
  if (!(await protectFromStaleCache())) return;
  try {
    await initLanes();
  } catch (err) {
    showState('closed');
    showError(err, 'loading the SDK');
    return;
  }
  let client;
  try {
    // The multiplexer is on by default (`mux: false` would keep v1 framing).
    client = await P3Client.connect(location.origin, { lanes: ALL_LANES, transport, deviceInfo: { platform: 'web', app: 'p3-lanes demo' } });
  } catch (err) {
    showState('closed', err.code);
    showError(err, 'connect');
    return;
  }
  window.p3demo = { client, counters, members };
  showState(client.state);
  client.onStateChange((state, reason) => showState(state, reason));
  client.onEvent((ev) => onEvent(client, ev));
  showHandshake(client);
  buildLaneTable(client);
  for (const { id } of client.handshake.lanes) {
    client.onMessage(id, (msg) => {
      counters.received[msg.lane] += 1;
      updateCounter(msg.lane, 'received');
      logMessage(client, msg);
    });
  }
  wireSendForm(client);
  $('send-button').disabled = false;
  try {
    const joined = await client.joinRoom(room);
    members.clear();
    joined.members.forEach((id) => members.add(id));
    showMembers(client);
  } catch (err) {
    showError(err, `joining ${room}`);
  }
  window.addEventListener('pagehide', () => client.close());
}

main();
