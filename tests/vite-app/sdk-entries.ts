// What the app takes from p3-lanes when the package has per-feature entries: the client and
// the music room from `p3-lanes/music/auto`, the version check from `p3-lanes/pwa/auto` (each
// its own wasm, initialised on import). tests/vite-app.spec.mjs copies this over src/sdk.ts.

export { P3Client, isP3Error } from 'p3-lanes/music/auto';
export type { MusicRoomState, MusicTrack, TypedP3Client } from 'p3-lanes/music/auto';
export { checkVersion } from 'p3-lanes/pwa/auto';
export type { VersionCheckResult } from 'p3-lanes/pwa/auto';
