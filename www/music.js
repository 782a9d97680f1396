// p3-lanes music room demo: connects with the Control and Sync lanes, joins a music room
// (?room=name, default "music"), keeps the <audio> element in sync with it, and lets the DJ
// play tracks from the server's media folder (GET /api/media). Shows the clock offset, the
// RTT and a live plot of this device's drift against the room state.
//
// With peer-to-peer on (default; `?p2p=0` turns it off) the room keeps a DataChannel mesh
// and plays on without the server (PROTOCOL.md §13.11-13.12): the sync tier and the changes
// waiting for the server are shown under the room. If the server is unreachable when the page
// loads (e.g. the installed app reloaded offline), the room opens without it
// (`MusicRoom.openOffline`: this device's last state, the `offline` tier) and the client it
// connects later, with backoff (1, 2, 4, 8, 16 s), is handed to `room.attach`.
//
// For tests: window.p3music = { client, room } once joined.

import init, { MusicRoom, P3Client } from '/pkg/music/p3_lanes.js';

const P2P = new URLSearchParams(location.search).get('p2p') !== '0';

const PLOT_WINDOW_MS = 20_000;
const PLOT_RANGE_MS = 40;

const $ = (id) => document.getElementById(id);
const audio = $('player');
/** @type {import('/pkg/music/p3_lanes.js').P3Client} */
let client;
/** @type {import('/pkg/music/p3_lanes.js').MusicRoom | null} */
let room = null;
let unsubscribe = null;
/** Session ids of the room's members. */
const members = new Set();
/** Tracks of GET /api/media, by id. */
const tracks = new Map();
/** Drift samples for the plot: {localMs, errorMs, correction}. */
const drift = [];

/** Show an error (the SDK's errors carry a machine-readable `code`). */
function showError(err, context) {
  const item = document.createElement('p');
  const code = document.createElement('code');
  code.textContent = err?.code ?? 'error';
  item.append(context ? `${context}: ` : '', code, ` ${err?.message ?? String(err)}`);
  $('errors').prepend(item);
  while ($('errors').children.length > 5) $('errors').lastElementChild.remove();
}

const shortId = (id) => (id ? id.slice(0, 8) : '–');
const seconds = (s) => (s == null ? '–' : `${s.toFixed(2)} s`);
const ms = (x, digits = 1) => (x == null ? '–' : `${x.toFixed(digits)} ms`);

function showState(state, reason) {
  const el = $('state');
  el.textContent = reason && state !== 'open' ? `${state} (${reason})` : state;
  el.dataset.state = state;
}

function showStatus(status) {
  const el = $('sync-status');
  el.textContent = status;
  el.dataset.status = status;
  $('gesture').hidden = status !== 'needs-user-gesture';
}

function showClock(c) {
  // The estimate maps performance.now() to the server's clock; shown against this device's
  // wall clock (Date.now()), which is what a person can compare.
  const wall = room ? room.serverNow() - Date.now() : 0;
  $('offset').textContent = c.synced ? `${wall >= 0 ? '+' : ''}${ms(wall)} (${c.samples} probes)` : 'measuring…';
  $('rtt').textContent = c.rttMs == null ? '–' : `${ms(c.rttMs)} (min ${ms(c.minRttMs)})`;
  $('uncertainty').textContent = c.uncertaintyMs == null ? '–' : `± ${ms(c.uncertaintyMs)}`;
  $('drift-ppm').textContent = `${c.driftPpm.toFixed(1)} ppm`;
}

/** This device's id in the room: its session id, or (opened offline, no client yet) its deviceId. */
const me = () => client?.sessionId ?? room?.deviceId;

function showRoomState(state) {
  const me_ = me();
  const dj = state?.controllerId;
  $('dj').textContent = !dj ? 'nobody (anyone may become DJ)' : dj === me_ ? 'you' : shortId(dj);
  $('version').textContent = state ? `epoch ${state.epoch}, change ${state.sequence}` : '–';
  $('claim').disabled = !room || Boolean(dj);
  const isDj = Boolean(room) && (dj === me_ || room.tier === 'offline');
  for (const b of document.querySelectorAll('button.dj')) b.disabled = !isDj;
  $('dj-hint').textContent = isDj ? 'You are the DJ: every tab in the room follows you.' : 'Only the DJ can change the room. Become DJ first (if nobody is).';
  const t = state?.track;
  $('now-playing').textContent = t ? `${state.isPlaying ? '▶' : '⏸'} ${t.title ?? t.id}` : 'Nothing yet.';
  if (t?.duration) $('seek-range').max = String(t.duration);
  showMembers();
}

function showMembers() {
  $('member-count').textContent = room ? String(members.size) : '–';
  const select = $('handover-select');
  const previous = select.value;
  select.replaceChildren();
  for (const id of members) {
    if (id === client?.sessionId) continue;
    const option = document.createElement('option');
    option.value = id;
    option.textContent = shortId(id);
    select.append(option);
  }
  if ([...members].includes(previous)) select.value = previous;
}

async function loadTracks() {
  try {
    const res = await fetch('/api/media', { cache: 'no-store' });
    const { tracks: list } = await res.json();
    tracks.clear();
    const select = $('track-select');
    select.replaceChildren();
    for (const t of list) {
      tracks.set(t.id, t);
      const option = document.createElement('option');
      option.value = t.id;
      option.textContent = t.duration ? `${t.title} (${Math.round(t.duration)} s)` : t.title;
      select.append(option);
    }
    if (list.length === 0) {
      const option = document.createElement('option');
      option.textContent = 'media/ is empty: run `npm start`, or drop audio files there';
      select.append(option);
    }
  } catch (err) {
    showError(err, 'GET /api/media');
  }
}

/** A track's duration, from the list or by loading its metadata (non-WAV files). */
async function withDuration(track) {
  if (track.duration) return track;
  const probe = new Audio();
  probe.preload = 'metadata';
  probe.src = track.url;
  const duration = await new Promise((resolve) => {
    probe.onloadedmetadata = () => resolve(probe.duration);
    probe.onerror = () => resolve(undefined);
  });
  return Number.isFinite(duration) ? { ...track, duration } : track;
}

/** Runs a DJ action, showing a refusal (e.g. `not_controller`) with its code. */
async function act(name, fn) {
  try {
    await fn();
  } catch (err) {
    showError(err, name);
  }
}

async function joinRoom(name) {
  if (room) {
    unsubscribe?.();
    room.close();
    room = null;
  }
  drift.length = 0;
  members.clear();
  const url = new URL(location.href);
  url.searchParams.set('room', name);
  history.replaceState(null, '', url);
  $('room-link').textContent = `?room=${name}`;
  $('room-name').textContent = name;
  try {
    room = client
      ? await client.musicRoom(name, P2P ? { media: audio, peerToPeer: true } : { media: audio })
      : await MusicRoom.openOffline(location.origin, name, { media: audio, peerToPeer: true });
  } catch (err) {
    showError(err, client ? 'musicRoom' : 'openOffline');
    return;
  }
  window.p3music = { client, room };
  unsubscribe = room.onEvent((ev) => {
    switch (ev.type) {
      case 'state':
        showRoomState(ev.state);
        break;
      case 'status':
        showStatus(ev.status);
        break;
      case 'clock':
        showClock(ev);
        break;
      case 'drift':
        drift.push({ localMs: performance.now(), errorMs: ev.errorMs, correction: ev.correction });
        break;
      case 'error':
        showError(ev, 'room');
        break;
      case 'closed':
        showStatus('waiting');
        break;
      case 'tier':
        showTier();
        showRoomState(room.state);
        break;
      case 'pending':
      case 'reconciled':
        showTier();
        break;
      default:
        break;
    }
  });
  showRoomState(room.state);
  showStatus(room.status);
  showTier();
}

/** Sync tier (socket / webrtc / offline, PROTOCOL.md §13.1) and changes waiting for the server (§13.12). */
function showTier() {
  const pending = room?.pendingChanges;
  $('tier').textContent = room?.tier ?? (P2P ? '–' : 'socket (peer-to-peer off)');
  $('pending').textContent = pending == null ? '–' : pending === 0 ? 'none' : `${pending} waiting for the server`;
}

function tick() {
  if (room) {
    const state = room.state;
    const target = room.targetPosition();
    $('room-position').textContent = seconds(target);
    $('media-position').textContent = `${seconds(audio.currentTime)} at rate ${audio.playbackRate.toFixed(3)}`;
    const last = drift.at(-1);
    $('drift-now').textContent = last && performance.now() - last.localMs < 1000 ? ms(last.errorMs) : '–';
    const duration = state?.track?.duration;
    $('progress-bar').style.width = duration && target != null ? `${Math.min(100, (100 * target) / duration)}%` : '0';
    const l = room.latencies;
    $('latencies').textContent = `start ${ms(l.startMs, 0)}, seek ${ms(l.seekMs, 0)}, rate excursion ${ms(l.excursionCostMs, 0)}`;
  }
  drawPlot();
  requestAnimationFrame(tick);
}

function drawPlot() {
  const canvas = $('plot');
  const ctx = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  const now = performance.now();
  while (drift.length > 0 && now - drift[0].localMs > PLOT_WINDOW_MS) drift.shift();
  const style = getComputedStyle(document.documentElement);
  const y = (e) => h / 2 - (Math.max(-PLOT_RANGE_MS, Math.min(PLOT_RANGE_MS, e)) / PLOT_RANGE_MS) * (h / 2 - 4);
  const x = (t) => w - ((now - t) / PLOT_WINDOW_MS) * w;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = 'rgba(26, 127, 55, 0.18)';
  ctx.fillRect(0, y(5), w, y(-5) - y(5));
  ctx.strokeStyle = style.getPropertyValue('--border');
  ctx.fillStyle = style.getPropertyValue('--muted');
  ctx.font = '12px system-ui, sans-serif';
  for (const e of [-PLOT_RANGE_MS, -20, -10, 0, 10, 20, PLOT_RANGE_MS]) {
    ctx.beginPath();
    ctx.moveTo(0, y(e));
    ctx.lineTo(w, y(e));
    ctx.stroke();
    ctx.fillText(`${e > 0 ? '+' : ''}${e} ms`, 4, y(e) + (e === PLOT_RANGE_MS ? 12 : -2));
  }
  const colors = { none: style.getPropertyValue('--accent'), nudge: style.getPropertyValue('--warn'), seek: style.getPropertyValue('--bad') };
  for (const d of drift) {
    ctx.fillStyle = colors[d.correction] ?? colors.none;
    ctx.fillRect(x(d.localMs) - 1.5, y(d.errorMs) - 1.5, 3, 3);
  }
}

const CONNECT_OPTIONS = { lanes: P2P ? ['Control', 'Messaging', 'Sync'] : ['Control', 'Sync'] };

/** P3Client.connect until it succeeds, with backoff (1, 2, 4, 8, 16 s) while unreachable. */
async function connectWithBackoff() {
  for (let attempt = 0; ; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, 1000 * 2 ** Math.min(attempt, 4)));
    try {
      return await P3Client.connect(location.origin, CONNECT_OPTIONS);
    } catch (err) {
      if (err.code !== 'connect_failed') throw err;
    }
  }
}

async function main() {
  await init();
  const name = new URLSearchParams(location.search).get('room') || 'music';
  let offline = false;
  try {
    client = await P3Client.connect(location.origin, CONNECT_OPTIONS);
  } catch (err) {
    showState('closed', err.message);
    if (!P2P || err.code !== 'connect_failed') {
      showError(err, 'connect');
      return;
    }
    // Tier 3 start: play this device's last state while the server is away (PROTOCOL.md §13.12).
    offline = true;
    showState('offline', 'server unreachable, playing the last state; retrying');
  }
  wireControls(name);
  if (offline) {
    await joinRoom(name);
    requestAnimationFrame(tick);
    if (!room) return;
    client = await connectWithBackoff();
    wireClient();
    window.p3music = { client, room };
    await room.attach(client);
    await loadTracks();
    showRoomState(room.state);
    return;
  }
  wireClient();
  await loadTracks();
  await joinRoom(name);
  requestAnimationFrame(tick);
}

function wireClient() {
  showState(client.state);
  client.onStateChange(showState);
  client.onEvent((ev) => {
    if (ev.type === 'room-joined') {
      members.clear();
      for (const m of ev.members) members.add(m);
      showMembers();
    } else if (ev.type === 'peer-joined') {
      members.add(ev.sessionId);
      showMembers();
    } else if (ev.type === 'peer-left') {
      members.delete(ev.sessionId);
      showMembers();
    }
  });
  $('room-button').disabled = false;
}

function wireControls(name) {
  $('room-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (client) joinRoom($('room-input').value.trim() || 'music');
  });
  $('gesture-button').addEventListener('click', () => room?.userGesture());
  $('claim').addEventListener('click', () => act('claimController', () => room.claimController()));
  $('refresh-tracks').addEventListener('click', loadTracks);
  $('change-track').addEventListener('click', () =>
    act('changeTrack', async () => {
      const t = tracks.get($('track-select').value);
      if (!t) throw Object.assign(new Error('no track selected'), { code: 'invalid_argument' });
      await room.changeTrack(await withDuration(t));
    }),
  );
  $('play').addEventListener('click', () => act('play', () => room.play()));
  $('pause').addEventListener('click', () => act('pause', () => room.pause()));
  $('seek-range').addEventListener('input', () => {
    $('seek-value').textContent = `${Number($('seek-range').value).toFixed(1)} s`;
  });
  $('seek').addEventListener('click', () => act('seek', () => room.seek(Number($('seek-range').value))));
  $('handover').addEventListener('click', () =>
    act('handover', async () => {
      const to = $('handover-select').value;
      if (!to) throw Object.assign(new Error('nobody else is in the room'), { code: 'invalid_argument' });
      await room.handover(to);
    }),
  );

  $('room-input').value = name;
}

main().catch((err) => showError(err, 'demo'));
