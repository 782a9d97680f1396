// p3-lanes on Node.js: the `WebSocket` the SDK opens (it looks it up on `globalThis`).
//
// Node.js 22 and later have a global `WebSocket`, used as it is. Node.js 20 has none: then the
// `ws` package (an optional peer dependency of p3-lanes) provides it, when the app installed it.
// With neither, nothing is installed and `P3Client.connect` rejects with a `P3Error` whose `code`
// is `connect_failed` and whose message says to install `ws` (SSE needs a global `EventSource`).

/**
 * `ws`'s client WebSocket as the SDK needs it: errors become `close` events (an `error` with no
 * listener would crash the process), no permessage-deflate, and a sent byte view is copied at
 * once (the SDK sends views of WebAssembly memory, which `ws` could otherwise read later).
 * @param {typeof import('ws').WebSocket} WsWebSocket
 */
function adapt(WsWebSocket) {
  return class WebSocket extends WsWebSocket {
    /** @param {string | URL} url @param {string | string[]} [protocols] */
    constructor(url, protocols) {
      super(url, protocols, { perMessageDeflate: false });
      this.on('error', () => {});
    }

    /** @param {unknown} data */
    send(data, ...rest) {
      super.send(ArrayBuffer.isView(data) ? new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)) : data, ...rest);
    }
  };
}

/**
 * Makes sure `globalThis.WebSocket` exists when it can: the runtime's own, else `ws`'s.
 * @returns {Promise<'global' | 'ws' | 'none'>} where the WebSocket comes from
 */
export async function provideWebSocket() {
  if (typeof globalThis.WebSocket === 'function') return 'global';
  let ws;
  try {
    ws = await import('ws');
  } catch {
    return 'none';
  }
  const WsWebSocket = ws.WebSocket ?? ws.default;
  if (typeof WsWebSocket !== 'function') return 'none';
  globalThis.WebSocket = adapt(WsWebSocket);
  return 'ws';
}
