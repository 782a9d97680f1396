// What the app takes from p3-lanes: here the self-initialising main entry, which has it all.
// A package built as per-feature entries has no single entry with the music room and the
// version check: tests/vite-app.spec.mjs then puts ../sdk-entries.ts in this file's place.

export { P3Client, checkVersion, isP3Error } from 'p3-lanes/auto';
export type { MusicRoomState, MusicTrack, TypedP3Client, VersionCheckResult } from 'p3-lanes/auto';
