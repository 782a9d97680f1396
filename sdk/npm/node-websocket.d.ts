/**
 * Makes sure `globalThis.WebSocket` exists for the SDK on Node.js: the runtime's own (Node.js
 * ≥ 22), else the `ws` package's when it is installed. The Node.js entry calls it on import.
 * Resolves with where the WebSocket comes from (`'none'`: `P3Client.connect` will reject with
 * `connect_failed`).
 */
export declare function provideWebSocket(): Promise<'global' | 'ws' | 'none'>;
