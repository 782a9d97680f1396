// What the README's examples leave to the app (placeholders; the full entry's types), as global declarations, so that
// tests/typescript-strict.spec.mjs can compile every example as written. A block that defines
// one of these names itself shadows it (each block is its own module).

type P3 = typeof import('p3-lanes/full');

declare const P3Client: P3['P3Client'];
declare const MusicRoom: P3['MusicRoom'];
declare const OfflineChangeQueue: P3['OfflineChangeQueue'];
declare const isP3Error: P3['isP3Error'];

declare const client: import('p3-lanes/full').P3Client;
declare const url: string;
declare const options: import('p3-lanes/full').ConnectOptions;
declare const address: string;
declare const audio: HTMLAudioElement;
declare const deviceId: string;
declare const peer: string;
declare const epoch: number;
declare const sharedNowMs: number;
declare const chunk: Uint8Array;
declare const ack: { versionVector: Record<string, number> };
declare const bobAuth: import('p3-lanes/full').AuthOptions;
declare const aliceAuth: import('p3-lanes/full').AuthOptions;

declare function connectWithRetry(): Promise<import('p3-lanes/full').P3Client>;
declare function saveDrafts(): Promise<void>;
declare function showUpdateBanner(error: Error): void;
declare function showTapToPlay(): void;
declare function plot(errorMs: number): void;
declare function show(offsetMs: number, rttMs: number | null): void;
declare function render(state: import('p3-lanes/full').MusicRoomState): void;
declare function showBanner(tier: string): void;
declare function showBadge(pending: number): void;
declare function resync(lane: number): void;
declare function resume(lane: number): void;
declare function retryLater(lane: number | undefined, seq: number | undefined): void;

/** An EIP-1193 wallet, as the SIWE examples use it. */
interface Window {
  ethereum: {
    request(args: { method: 'eth_requestAccounts' }): Promise<string[]>;
    request(args: { method: 'personal_sign'; params: [string, string] }): Promise<string>;
  };
}
