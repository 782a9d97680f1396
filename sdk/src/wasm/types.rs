//! TypeScript declarations shared by the signatures of `P3Client` (which name them through
//! `unchecked_param_type` / `unchecked_return_type`), appended to `p3_lanes.d.ts`.
//! Shapes mirror [`crate::core::handshake`] and [`crate::wasm::events`]. Each section is in
//! the builds (sdk/Cargo.toml features) whose exports name it: errors in all of them.

use wasm_bindgen::prelude::*;

#[cfg(feature = "lanes")]
#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** A lane's seed name (seed 000 `LANE_NAMES`). */
export type LaneName = 'Control' | 'Messaging' | 'Voice' | 'Video' | 'Data' | 'Telemetry' | 'Sync' | 'Relay';

/** A lane's wire id: 1 Control, 2 Messaging, 3 Voice, 4 Video, 5 Data, 6 Telemetry, 7 Sync, 8 Relay. */
export type LaneNumber = 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8;

/** A lane argument: its id, or its name in any case (`'Messaging'`, `'messaging'`). */
export type LaneId = LaneNumber | LaneName | Lowercase<LaneName>;

/** A payload encoding (seed 000 `capabilities.encodings`). The server never grants `protobuf`. */
export type Encoding = 'msgpack' | 'json' | 'protobuf';

/** `client.state`. `'closed'` is terminal. */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** Options of `P3Client.connect`; every field is optional. */
export interface ConnectOptions {
  /** The device's stable id, 1..=128 bytes. Default: a random `web-<uuid>`. */
  clientId?: string;
  /** Wallet address, e.g. `'0x..'`. */
  wallet?: string;
  /** Lanes to negotiate; must include 1 (Control). Default: all 8. */
  lanes?: LaneId[];
  /** Encodings offered, preferred first. Default: `['msgpack', 'json']`. */
  encodings?: Encoding[];
  /** Free-form device description. Default: `{platform: 'web'}`. */
  deviceInfo?: Record<string, unknown>;
  /** Reconnect (backoff 1, 2, 4, 8, 16 s with ±20 % jitter) after the connection drops. Default: true. */
  reconnect?: boolean;
  /** Ping period, ms. Default: the server's `heartbeat.intervalMs`. */
  heartbeatIntervalMs?: number;
  /** Silence after which the socket is presumed dead, ms. Default: the server's `heartbeat.timeoutMs`. */
  heartbeatTimeoutMs?: number;
  /** Offer the lane multiplexer (PROTOCOL.md §11: chunking, priorities, resume without loss, discontinuity events). Default: true; `false` keeps v1 framing (§5) for compatibility. */
  mux?: boolean;
  /** Ask for room presence (PROTOCOL.md §6.2): `presence` events with each member's join time and last activity. Default: false. */
  presence?: boolean;
  /** Multiplexer: write while the socket's `bufferedAmount` is at most this, bytes. Default: 262144. */
  transportHighWaterBytes?: number;
  /** Largest message sent or accepted (a few bytes of frame header included), bytes; larger sends throw `frame_too_large`. Keep it at most the server's `--max-frame-bytes`. With the multiplexer, messages over 16 KiB travel as chunks, so multi-megabyte messages never hold up other lanes. Default: 1048576 (the server's default). */
  maxMessageBytes?: number;
  /** `'sse'`: receive lanes over one `EventSource` and send with `fetch` POST (PROTOCOL.md §14); `'websocket'`; `'auto'` (default): WebSocket, or SSE where `WebSocket` is undefined and `EventSource` is not. Messages and events have the same shapes either way. `connect` rejects with `connect_failed` when the chosen transport's API is missing. */
  transport?: 'auto' | Transport;
  /**
   * Prove an identity in the handshake (PROTOCOL.md §3.1): Sign-In with Ethereum (build the message with
   * `P3Client.siweMessage`, sign it with any wallet's `personal_sign`) or an app JWT from your backend.
   * `connect` rejects with `auth_invalid` (`err.reason` says why) when it does not verify. The verified
   * identity is `client.handshake.identity`. Rooms under `--room-access authenticated|token` refuse
   * `joinRoom` without one (`auth_required`) or when it is not admitted (`forbidden`).
   *
   * Either the proof itself, sent as is on every handshake, or a function returning it (or a Promise of it),
   * called before EVERY handshake: the first, and each re-handshake after the session was lost (server
   * restart, TTL). A SIWE signature is single-use (its nonce is consumed), so use the function form for a
   * session that comes back on its own:
   * `auth: async () => { const message = await P3Client.siweMessage(url, {address, chainId: 1});
   *  return {siwe: {message, signature: await wallet.signMessage(message)}}; }`.
   * What the function throws rejects `connect` (kept when it has a `code`, else as `auth_invalid`); on a
   * re-handshake it is an `error` event with code `auth_invalid` (none for `connect_failed`) and the SDK retries later (with backoff),
   * calling the function again. With a static proof, a re-handshake refused with `auth_invalid` (e.g.
   * `nonce_reused`) is reported as an `error` event with code `auth_invalid` and the client closes (state
   * `closed`) instead of retrying: connect again with a fresh sign-in.
   */
  auth?: AuthOptions | (() => AuthOptions | Promise<AuthOptions>);
  /** Without `auth`: sign every handshake (the first and each re-handshake) with this browser profile's device key, an ECDSA P-256 key pair made once and kept in IndexedDB with a non-extractable private key, so the session has a `device` identity: the music room's DJ role and offline changes stay with this device across reconnects and server restarts (PROTOCOL.md §13.15). Needs a secure context (https or localhost); elsewhere the session simply has no identity. Default: true. */
  deviceKey?: boolean;
  /** Who may ring this session's verified identity with `client.call` (PROTOCOL.md §13.16): `'anyone'` (any signed-in identity: SIWE or app token; a device key is not one), `'nobody'` (default), or a list of addresses (any letter case) and app-token `sub`s. */
  acceptCallsFrom?: 'anyone' | 'nobody' | string[];
}

/** `ConnectOptions.auth`: exactly one of a SIWE message and signature, an app JWT, or a device key's signature (PROTOCOL.md §13.15). */
export type AuthOptions =
  | { siwe: { message: string; signature: string } }
  | { token: string }
  | { device: { publicKey: string; nonce: string; signature: string } };

/** A verified identity: an EIP-55 address (`siwe`), a JWT `sub` (`token`) or a device key id (`device`). */
export interface Identity {
  kind: 'siwe' | 'token' | 'device';
  id: string;
}

/** Options of `P3Client.siweMessage`. */
export interface SiweMessageOptions {
  /** EIP-55 checksummed address of the signer, `0x` + 40 hex digits. */
  address: string;
  /** EIP-155 chain id the server accepts (its `--siwe-chain-ids`, default 1). */
  chainId: number;
  /** Optional human-readable line shown by the wallet (no newline). */
  statement?: string;
  /** RFC 3986 authority the server expects. Default: the host of `baseUrl`. */
  domain?: string;
  /** URI of the signed-in resource. Default: `baseUrl` origin + `/`. */
  uri?: string;
  /** Validity of the message from now, ms (its `Expiration Time`). Default: none. */
  expiresInMs?: number;
}

/** A message received on a lane; `T`: the lane's payload type (see `TypedP3Client`). */
export interface P3Message<T = unknown> {
  /** The lane it arrived on. */
  lane: LaneNumber;
  /** Sending session id, or `null` when the server itself sent it. */
  from: string | null;
  /** Sequence number assigned by the server for this receiver, per lane. */
  seq: number;
  /** The value as sent (JSON-compatible; objects are plain objects). */
  value: T;
}

/** A room member's presence (`P3Event` `presence`). */
export type PresenceStatus = 'online' | 'offline' | 'unknown';

/** Each lane name's wire id. */
export interface LaneNumbers { Control: 1; Messaging: 2; Voice: 3; Video: 4; Data: 5; Telemetry: 6; Sync: 7; Relay: 8 }

/** The lane name a `LaneId` argument denotes: `'messaging'` and `2` are both `'Messaging'`. */
export type LaneNameOf<R extends LaneId> =
  R extends LaneName ? R
  : { [K in LaneName]: R extends LaneNumbers[K] | Lowercase<K> ? K : never }[LaneName];

/**
 * Payload types by lane name, declared by the app: e.g. `{ Messaging: ChatMessage; Sync: MusicMessage }`.
 * Lanes it leaves out carry `unknown`.
 */
export type LanePayloads = { [L in LaneName]?: unknown };

/** The payload type of lane `L` under `M` (`unknown` for a lane `M` leaves out). */
export type PayloadOf<M extends LanePayloads, L extends LaneName> = L extends keyof M ? M[L] : unknown;

/**
 * `P3Client` with the app's payload types per lane, a compile-time layer only (in the manner of
 * socket.io-client's `Socket<ServerToClientEvents, ClientToServerEvents>`):
 * `const client = await P3Client.connect(url, options) as TypedP3Client<Incoming, Outgoing>;`.
 * `Incoming` types what `onMessage` delivers, `Outgoing` what `send` accepts (default: the same map).
 * The cast is the app's promise about what members send: nothing is checked at run time, so
 * validate values from untrusted members before relying on their shape.
 */
export interface TypedP3Client<Incoming extends LanePayloads = LanePayloads, Outgoing extends LanePayloads = Incoming>
  extends Omit<P3Client, 'onMessage' | 'send'> {
  /** `P3Client.onMessage`, with `message.value` typed by `Incoming`. Returns a function that unsubscribes. */
  onMessage<R extends LaneId>(lane: R, callback: (message: P3Message<PayloadOf<Incoming, LaneNameOf<R>>>) => void): () => void;
  /** `P3Client.send`, with `value` typed by `Outgoing`. Throws a `P3Error` like `P3Client.send`. */
  send<R extends LaneId>(lane: R, value: PayloadOf<Outgoing, LaneNameOf<R>>, to?: string | null): void;
}

/** A transport a session runs on (`client.handshake.transport`). */
export type Transport = 'websocket' | 'sse';

/** Events other than messages and state changes (`client.onEvent`). */
export type P3Event =
  | { type: 'peer-joined'; room: string; sessionId: string }
  | { type: 'peer-left'; room: string; sessionId: string }
  /**
   * A room member's presence (PROTOCOL.md §6.2), only with the connect option `presence: true`: after every
   * `room-joined`, one `'online'` per member (this client included); then `'online'` when a member joins and
   * `'offline'` when one leaves. `since`: when it joined the room; `lastSeen`: when the server last heard from it
   * (for `'offline'`: when it left); both server wall clock, ms since the Unix epoch. `'unknown'`: a status a newer
   * server sends that this SDK does not know.
   */
  | { type: 'presence'; room: string; sessionId: string; status: PresenceStatus; since: number; lastSeen: number }
  /** Heartbeat answer: round-trip time (ms), the ping's `clientTime` (the client's `performance.now()`, ms) and the server's wall clock (ms since the Unix epoch). */
  | { type: 'pong'; rttMs: number; clientTime: number; serverTime: number }
  /**
   * A frame the server refused (`lane`, `seq`: this client's message), or that this client could not decode.
   * `code: 'rate_limited'` (PROTOCOL.md §15): the server's rate limit refused message `seq` of `lane`; the SDK holds
   * that lane for `retryAfterMs` and paces it from then on, then sends a reliable lane's message again
   * (`dropped: false`; messages sent after it wait behind it); an unreliable lane's message is lost (`dropped: true`).
   * Without `lane`: the server closed the connection for sending past its limit (close code 4429) and the SDK
   * reconnects after `retryAfterMs`. Over SSE, a `POST` answered `429` is reported the same way and sent again.
   * Other limits arrive with their own codes: `room_full` (a `joinRoom` rejects with it too), `too_many_requests`,
   * `payload_too_large`, `payload_too_complex`, `limit_exceeded`, `out_of_range`.
   */
  | { type: 'error'; code: ErrorCode; message: string; lane?: LaneNumber; seq?: number; retryAfterMs?: number; dropped?: boolean }
  /** The session expired (or the server restarted) and was replaced by a new one. */
  | { type: 'session-changed'; old: string; new: string }
  /** The server confirmed a join (also after automatic rejoins when reconnecting). */
  | { type: 'room-joined'; room: string; members: string[] }
  /** The server confirmed `leaveRoom()`. */
  | { type: 'room-left'; room: string }
  /** The server's app version (on every connection, and pushed when it changes): call `checkVersion()` if it is not yours. */
  | { type: 'version'; version: string }
  /** The room's key for sealing music control between peers (PROTOCOL.md §13.4), after every join: `key` is 32 bytes in base64url without padding, `keyId` the envelope's key id (u32). */
  | { type: 'room-key'; room: string; keyId: number; key: string }
  /** Multiplexer or SSE: a reliable lane skipped messages that will never arrive (the server restarted or forgot them); delivery continues in order from `(epoch, seq)`. Resynchronise the lane's state. */
  | { type: 'discontinuity'; lane: LaneNumber; expectedEpoch: number; expectedSeq: number; epoch: number; seq: number; reason: 'history-lost' | 'peer-restarted' | 'joined-mid-stream' }
  /** A lane that refused `send` with `backpressure` has room again. */
  | { type: 'drain'; lane: LaneNumber }
  /** Queued messages of an unreliable lane were dropped for newer ones (its queue was full). */
  | { type: 'dropped'; lane: LaneNumber; count: number }
  | IncomingCallEvent;

/** What `joinRoom` resolves with. */
export interface JoinResult {
  /** Room name. */
  room: string;
  /** Member session ids, this client's included. */
  members: string[];
}

/** One granted lane of the handshake response, with its registry entry. */
export interface LaneGrant {
  id: LaneNumber;
  name: LaneName;
  encoding: Encoding;
  /** SSE stream URL of the lane, relative to the server origin. */
  url: string;
  /** Scheduling priority; higher first. */
  priority: number;
  /** Messages queued before backpressure (reliable) or dropping the oldest (unreliable). */
  queueDepth: number;
  /** Guaranteed, ordered delivery. */
  reliable: boolean;
}

/** The handshake v2 response (`client.handshake`). */
export interface HandshakeResponse {
  /** Session id (UUID). */
  sessionId: string;
  /** Chosen transport. */
  transport: Transport;
  /** Granted lanes, ascending id. */
  lanes: LaneGrant[];
  /** The negotiated key dictionary: `tokens[i]` has index `i + 1`. */
  dictionary: { version: string; tokens: string[]; indexMap: Record<string, number>; shapes?: number[][] };
  /** Server wall clock at handshake, ms since the Unix epoch. */
  serverTime: number;
  /** Session lifetime after its last activity, s. */
  ttlSeconds: number;
  protocol: { version: string; features: string[] };
  /** Path of the session's WebSocket, relative to the server base URL. */
  websocketUrl: string;
  /** Ping period and silence timeout, ms. */
  heartbeat: { intervalMs: number; timeoutMs: number };
  /** The `signature` of `auth` on the seed 001 signaling server (`/api/signaling`, PROTOCOL.md §13.7); a secret of this session. */
  signalingToken?: string;
  /** The session's secret (PROTOCOL.md "Security: session credentials"): `Authorization: Bearer <sessionToken>` on the session's HTTP routes; the SDK also mints the single-use tickets of its WebSocket and SSE streams with it. Never share it: whoever holds it acts as this session. The session id alone grants nothing. */
  sessionToken?: string;
  /** A first single-use ticket for the session's first WebSocket or SSE stream (`?ticket=`), valid 30 s; the SDK uses it. */
  ticket?: string;
  /** The server's per-session quotas (PROTOCOL.md §15); the SDK paces each lane below them so it is never refused. `control`: lane 1, `sync`: lane 7, `bulk`: each other lane separately. Absent: none advertised. */
  limits?: { rates?: { control?: RateQuota; sync?: RateQuota; bulk?: RateQuota } };
  /** The identity the server verified from `ConnectOptions.auth`; absent without `auth`. */
  identity?: Identity;
  /** With transport `'sse'`: the streams' reconnect delay (`retry:`), ms; the SDK reopens a stream that ended after it (PROTOCOL.md §14.1). */
  sseRetryMs?: number;
}

/** A message quota (GCRA): `burst` messages at once, then `perSecond` per second. */
export interface RateQuota {
  perSecond: number;
  burst: number;
}

"#;

/// Errors, in every build (the PWA entry's too).
#[wasm_bindgen(typescript_custom_section)]
const TS_ERROR_TYPES: &'static str = r#"
/** Why `auth_invalid` was answered (`err.reason`). */
export type AuthReason =
  | 'bad_signature' | 'wrong_domain' | 'wrong_uri' | 'wrong_chain' | 'expired' | 'not_yet_valid'
  | 'nonce_unknown' | 'nonce_reused' | 'malformed' | 'bad_token';

/** Machine-readable error codes (`err.code`, `event.code`). */
export type ErrorCode =
  | 'bad_request' | 'bad_frame' | 'bad_payload' | 'bad_control' | 'unknown_dictionary'
  | 'frame_too_large' | 'unknown_lane' | 'control_lane_required' | 'no_common_transport'
  | 'no_common_encoding' | 'session_not_found' | 'lane_not_negotiated' | 'unknown_target'
  | 'not_in_room' | 'invalid_argument' | 'backpressure' | 'closed' | 'connect_failed' | 'internal'
  | 'stale_after_purge' | 'forbidden' | 'unauthorized' | 'not_controller' | 'epoch_mismatch'
  | 'reassembly_limit' | 'protocol_violation' | 'webrtc_failed'
  | 'storage_unavailable' | 'quota_exceeded' | 'storage_corrupt'
  | 'seq_gap' | 'seq_in_progress' | 'seq_reused' | 'send_failed'
  | 'rate_limited' | 'room_full' | 'too_many_requests' | 'payload_too_large'
  | 'payload_too_complex' | 'limit_exceeded' | 'out_of_range' | 'crypto_unavailable'
  | 'auth_required' | 'auth_invalid'
  | 'callee_unavailable' | 'call_declined' | 'call_ended' | 'call_unknown' | 'shape_unknown';

/**
 * Every error the SDK throws or rejects with: a real `Error` (`instanceof Error`) named `P3Error`
 * with a `code`. A `catch` variable is `unknown`: narrow it with `isP3Error(err)`, then
 * `switch (err.code)`.
 */
export interface P3Error extends Error {
  name: 'P3Error';
  code: ErrorCode;
  /** With `auth_invalid`: why the sign-in was refused. */
  reason?: AuthReason;
}
"#;

/// Calls ring a client built with the `music` feature (they open a `PeerMesh`).
#[cfg(feature = "music")]
#[wasm_bindgen(typescript_custom_section)]
const TS_CALL_TYPES: &'static str = r#"
/** The `incoming-call` event (`client.onEvent`): a signed-in identity rings this session. Answer before `expiresInMs`. */
export interface IncomingCallEvent {
  type: 'incoming-call';
  callId: string;
  /** The caller's verified identity (`kind` `'siwe'` or `'token'`: a device key cannot call). */
  from: Identity;
  /** The caller's member id. */
  fromMember: string;
  /** How long it rings, ms. */
  expiresInMs: number;
  /** Accepts: resolves with the `Call` (its `mesh` links the two parties); rejects with `call_unknown` if it ended meanwhile. `options` as `PeerMeshOptions`. */
  accept(options?: PeerMeshOptions): Promise<Call>;
  /** Declines: the caller's `call()` rejects with `call_declined`. */
  decline(): Promise<void>;
}
"#;

/// A client without the `music` feature has no calls: `P3Event` names this type all the same.
#[cfg(all(feature = "lanes", not(feature = "music")))]
#[wasm_bindgen(typescript_custom_section)]
const TS_NO_CALL_TYPES: &'static str = r#"
/** Calls are in the `p3-lanes/music` entry: this build never emits `incoming-call`. */
export type IncomingCallEvent = never;
"#;
