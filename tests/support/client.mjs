// Page-side helpers for end-to-end tests: connect a P3Client inside a page opened with
// openSdkPage (tests/support/browser.mjs), record what it sees, send from it, probe a room, and
// wait for conditions.

import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Connect a P3Client in the page (stored as `window.client`), record its state changes in
 * `window.states` and every message on `lanes` in `window.inbox`, and join `room` if given.
 * @param {import('playwright-core').Page} page
 * @param {string} url server base URL
 * @param {string} clientId
 * @param {number[]} lanes
 * @param {string} [room]
 * @param {object} [options] more `ConnectOptions` (e.g. `{transport: 'sse'}`)
 * @returns {Promise<{sessionId: string, members: string[]}>}
 */
export function connect(page, url, clientId, lanes, room, options = {}) {
  return page.evaluate(
    async ({ url, clientId, lanes, room, options }) => {
      // Messages are copied through JSON so that Maps (which would mean the SDK hands apps
      // Map objects instead of plain ones) show up in assertion diffs instead of vanishing.
      const plain = (value) => JSON.parse(JSON.stringify(value, (_key, v) => (v instanceof Map ? { $Map: [...v] } : v)) ?? 'null');
      window.states = [];
      window.inbox = [];
      const client = await window.sdk.P3Client.connect(url, { ...options, clientId, lanes, reconnect: true });
      window.client = client;
      client.onStateChange((state) => window.states.push(state));
      for (const lane of lanes) {
        client.onMessage(lane, (msg) => window.inbox.push({ lane: msg.lane, from: msg.from, seq: msg.seq, value: plain(msg.value) }));
      }
      const joined = room ? await client.joinRoom(room) : { members: [] };
      return { sessionId: client.sessionId, members: joined.members };
    },
    { url, clientId, lanes, room, options },
  );
}

/**
 * Close the page's client (`window.client`).
 * @param {import('playwright-core').Page} page
 */
export function closeClient(page) {
  return page.evaluate(() => window.client.close());
}

/**
 * Poll `check` every 100 ms until it returns a truthy value, which is returned.
 * @template T
 * @param {() => Promise<T>} check
 * @param {number} timeoutMs
 * @param {() => string | Promise<string>} what describes what was awaited, for the timeout error
 * @returns {Promise<T>}
 */
export async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const result = await check();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${await what()}`);
    await sleep(100);
  }
}

/**
 * Send each message from the page's client; a message's `to` (a session id) is optional.
 * @param {import('playwright-core').Page} page
 * @param {{lane: number | string, value: object, to?: string}[]} messages
 */
export function sendAll(page, messages) {
  return page.evaluate((messages) => {
    for (const { lane, value, to } of messages) {
      if (to === undefined) window.client.send(lane, value);
      else window.client.send(lane, value, to);
    }
  }, messages);
}

/**
 * Check both clients are in the room again by sending probes on Messaging from A until B gets
 * one (the client rejoins on its own, shortly after it is open again).
 * @param {import('playwright-core').Page} pageA
 * @param {import('playwright-core').Page} pageB
 * @param {string} aSessionId A's session id after the restart
 * @param {number} timeoutMs
 */
export async function probeRoom(pageA, pageB, aSessionId, timeoutMs) {
  let attempt = 0;
  await waitFor(
    async () => {
      const id = `probe-${attempt++}`;
      await pageA.evaluate((id) => {
        try {
          window.client.send('Messaging', { id, probe: true });
        } catch {
          // Not rejoined yet: the next attempt sends again.
        }
      }, id);
      await sleep(500);
      return pageB.evaluate(({ id, from }) => window.inbox.some((m) => m.from === from && m.value?.id === id), { id, from: aSessionId });
    },
    timeoutMs,
    () => `a probe from A (${aSessionId}) to reach B after the restart`,
  );
}
