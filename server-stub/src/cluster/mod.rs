//! Several nodes as one server (issue 14; PROTOCOL.md §17, DESIGN.md "Cluster"): sessions
//! and room membership kept in Redis, room traffic carried between nodes by one Redis Stream
//! per room. Only with `--redis-url`; without it this module is never reached.
//!
//! What lives in Redis (keys, for how long):
//! - `p3:session:{sid}` (hash: `rec` the session's JSON [`record::SessionRecord`] with its
//!   token, `node` the node that holds its socket, `room`, `seen` its last activity in ms as
//!   of the holder's last keep-alive: presence `lastSeen`): the session's TTL, refreshed while
//!   a node holds it attached.
//! - `p3:ticket:{sid}:{sha256(ticket)}`: one per ticket, its TTL; redeemed by `DEL` (so once
//!   in the whole cluster).
//! - `p3:nonce:{nonce}`: a sign-in nonce (`0` issued, `1` used), its TTL.
//! - `p3:room:{room}:stream` (entries `n`, `e`, `node`, `kind`, `sid`, `lane`, `to`, `body`,
//!   `q` the writing node's relay token; membership entries also `o`, `since`, `at`), `p3:room:{room}:meta` (`e` epoch, `n` last
//!   entry number, `k` the room key `"<keyId>:<key>"` and `kn` the number of the entry that
//!   set it, module `room_key`, `p:<node>` each node's last publish number) and
//!   `p3:room:{room}:members` (session → `"<node> <order> <since>"`, see [`PUBLISH`]; a
//!   signaling room's: session → node): written only by [`PUBLISH`] (atomic), kept `MAXLEN ~
//!   --room-stream-len`, expiring 2 × max(TTL, 60 s) after the last write or refresh.
//!
//! - `p3:signaling:secret`: the seed 001 signaling server's token secret, one for the
//!   cluster (`Cluster::signaling_secret`); no expiry. Its rooms are rooms here under
//!   `signaling_room`'s names.
//!
//! - `p3:session:{sid}` field `resume` (JSON [`resume::ResumeCursor`]: room, epoch, the
//!   entry up to which the session's client acknowledged every relay for it, the acknowledged
//!   entries above): written by the node holding a multiplexed session in a room, only when
//!   it changed, every [`resume::RESUME_FLUSH`] (one pipeline for all sessions); it lives and
//!   dies with the record. Read by the node that takes the session over, which replays the
//!   room's relays after it ([`resume`]).
//! - `p3:music:{room}:lease`, `:fence`, `:state`: a music room's single authority, its
//!   fencing token and its state ([`lease`]; PROTOCOL.md §17 "Music rooms").
//!
//! Each node reads the streams of the rooms it has members in from its last delivered entry
//! (`XREAD` on its own connection), so a node whose Redis connection drops resumes where it
//! stopped; an entry whose number is not the next one (the stream was trimmed past it, or
//! the room's meta was lost and its epoch changed) is a gap, told to the node's members as a
//! `discontinuity` before delivery goes on.
//!
//! Lock rule: no Redis I/O ever runs under the registry lock (or any other lock of the
//! server); the cursors below sit behind a leaf lock taken for map updates only.

pub mod lease;
pub(crate) mod record;
pub(crate) mod resume;

use crate::room_key::Stamp;
use p3_lanes::core::frame::SessionId;
use record::SessionRecord;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, OnceCell};

/// Entries the publisher may hold before a relay is refused with `backpressure`.
pub const PUBLISH_QUEUE: usize = 16_384;
/// Entries the publisher writes per round trip at most (one pipeline).
pub const PUBLISH_BATCH: usize = 128;
/// How long a stream read blocks waiting for entries, ms.
pub const READ_BLOCK_MS: usize = 100;
/// Entries read per stream and read: a node catching up after a dropped connection hands
/// its members at most this many messages per room at a time (well under a socket's queue,
/// `--queue-frames`), then reads again, giving their sockets time to drain.
pub const READ_COUNT: usize = 64;
/// Relay tokens whose entry a node remembers ([`resume`]): far more than a session's
/// unacknowledged relays between two cursor writes.
pub const RESOLVED_TOKENS: usize = 65_536;
/// Entries a takeover reads back from a room's stream per round trip (newest first, down to
/// the session's resume cursor).
pub const REPLAY_PAGE: usize = 256;
/// A Redis command's answer timeout (a dead Redis turns into an error, not a hang).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a node measures its Redis figures ([`Cluster::probe`]: a `PING`'s round trip,
/// the watched rooms' stream lag).
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// Rooms whose stream lag one probe counts at most (one `HMGET` each, in one pipeline).
pub const PROBE_ROOMS: usize = 1024;
/// The pub/sub channel of the nodes' pulse `metrics` messages (seed 001 "Pulse WebSocket";
/// PROTOCOL.md §18.2). Lossy on purpose: a message missed while a node's subscription is
/// down is replaced by the next one, one interval later.
pub const METRICS_CHANNEL: &str = "p3:metrics";
/// Largest `metrics` message taken from [`METRICS_CHANNEL`], bytes (larger ones are dropped).
pub const MAX_METRICS_BYTES: usize = 64 * 1024;

/// The one script that writes a room: membership change (if any), room key, entry number,
/// `XADD`, expiry, all atomic. KEYS: stream, meta, members, session. ARGV: maxlen, new epoch,
/// node, kind, sid, lane, to, body, ttl ms, room, publish number, the change's time (ms since
/// the epoch, the writing node's clock), two candidate room keys (`"<keyId>:<key>"` with
/// different ids, or empty), relay token (`q`: the writing node's token for a relay it
/// delivered locally before writing it, [`resume`]; 0: none). The room key (module `room_key`): a `joined` / `moved` of a room
/// without one stores the first candidate; a `left` that leaves members stores the candidate
/// whose id differs from the old key's and writes it as the entry's `body`; a `left` that
/// empties the room forgets it. Answers `{id, n, epoch}` (and, for `joined` and `moved`, the
/// members hash, the key and the number of the entry that set it; for `sig-joined` the
/// members hash), or nil for a `left` / `sig-left` that no longer applies (the session was
/// since taken over by another node) and for a publish number (nonzero: the publisher's, in
/// order) this node already wrote: a retry after an answer lost with a dropped connection is
/// written once.
///
/// A member's value in the members hash is `"<node> <order> <since>"`: the node holding it,
/// the entry number of its `joined` (join order) and its join time, ms; a `moved` keeps the
/// last two. A membership entry (`joined`, `moved`, `left`) also carries `o` and `since` of
/// its member (its values in the hash) and `at`, the change's time (presence, PROTOCOL.md
/// §6.2). A signaling room's members hash holds the node alone.
pub const PUBLISH: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[2], 'e', epoch)
end
local kind = ARGV[4]
if ARGV[11] ~= '0' then
  local last = redis.call('HGET', KEYS[2], 'p:' .. ARGV[3])
  if last and tonumber(last) >= tonumber(ARGV[11]) then return false end
  redis.call('HSET', KEYS[2], 'p:' .. ARGV[3], ARGV[11])
end
local member = kind == 'joined' or kind == 'moved' or kind == 'left'
local cur = member and redis.call('HGET', KEYS[3], ARGV[5])
local order, since = '0', '0'
if cur then
  order, since = string.match(cur, '^%S+ (%d+) (%d+)$')
  if not order then order, since = '0', '0' end
end
local rotate = false
if kind == 'left' then
  if not cur or string.match(cur, '^%S+') ~= ARGV[3] then return false end
  redis.call('HDEL', KEYS[3], ARGV[5])
  if redis.call('HGET', KEYS[4], 'room') == ARGV[10] then redis.call('HDEL', KEYS[4], 'room') end
  if redis.call('HLEN', KEYS[3]) == 0 then
    redis.call('HDEL', KEYS[2], 'k', 'kn')
  else
    rotate = true
  end
elseif kind == 'sig-joined' then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[3])
elseif kind == 'sig-left' then
  if redis.call('HGET', KEYS[3], ARGV[5]) ~= ARGV[3] then return false end
  redis.call('HDEL', KEYS[3], ARGV[5])
end
local n = redis.call('HINCRBY', KEYS[2], 'n', 1)
if kind == 'joined' or (kind == 'moved' and order == '0') then
  order, since = tostring(n), ARGV[12]
end
if kind == 'joined' or kind == 'moved' then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[3] .. ' ' .. order .. ' ' .. since)
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'room', ARGV[10]) end
end
local body = ARGV[8]
if rotate then
  local key = ARGV[13]
  local old = redis.call('HGET', KEYS[2], 'k')
  if old and string.match(old, '^[^:]*') == string.match(key, '^[^:]*') then key = ARGV[14] end
  if key == '' then
    redis.call('HDEL', KEYS[2], 'k', 'kn')
  else
    redis.call('HSET', KEYS[2], 'k', key, 'kn', n)
  end
  body = key
elseif (kind == 'joined' or kind == 'moved') and ARGV[13] ~= ''
    and redis.call('HEXISTS', KEYS[2], 'k') == 0 then
  redis.call('HSET', KEYS[2], 'k', ARGV[13], 'kn', n)
end
local fields = {'n', n, 'e', epoch, 'node', ARGV[3], 'kind', kind, 'sid', ARGV[5],
  'lane', ARGV[6], 'to', ARGV[7], 'body', body, 'q', ARGV[15]}
if member then
  for _, v in ipairs({'o', order, 'since', since, 'at', ARGV[12]}) do table.insert(fields, v) end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[9]) end
if kind ~= 'joined' and kind ~= 'moved' and kind ~= 'sig-joined' then return {id, n, epoch} end
return {id, n, epoch, redis.call('HGETALL', KEYS[3]), redis.call('HGET', KEYS[2], 'k'),
  redis.call('HGET', KEYS[2], 'kn')}
";

/// Sets a session record's resume cursor only while the record lives. KEYS: session.
/// ARGV: the cursor's JSON.
pub const SET_RESUME: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'resume', ARGV[1]) end
return 0
";

/// What a room stream entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `sid` joined the room on `node`.
    Joined,
    /// `sid`, already a member, is now held by `node` (its client reconnected there).
    Moved,
    /// `sid` left the room (on `node`); `body`: the room's new key (`"<keyId>:<key>"`) when
    /// members remain, else empty.
    Left,
    /// A Data message from `sid` on `lane` to the room, or to `to` only.
    Relay,
    /// A music message from `sid` (held by `node`) for the room's authority, wherever it is
    /// held (PROTOCOL.md §17 "Music rooms"); `body`: [`MusicInput`] JSON.
    MusicIn,
    /// Server messages of the room's authority (held by `node`) for members on other nodes;
    /// `body`: [`MusicOut`] JSON.
    Music,
    /// The seed 001 signaling server ([`crate::signaling`]; the room is
    /// [`signaling_room`]'s): `sid`'s socket on `node` joined. Membership only: the session's
    /// record and the room key are not touched.
    SigJoined,
    /// `sid`'s signaling socket on `node` left the room; `body`: the `peer_left` reason.
    SigLeft,
    /// A signaling message from `sid` to `to`; `body`: the event as sent (JSON text).
    SigRelay,
}

/// The cluster room (stream, meta, members) of the seed 001 signaling server's room `room`:
/// a name no lane room can have (room names never contain control characters).
pub(crate) fn signaling_room(room: &str) -> String {
    format!("\u{1}sig:{room}")
}

/// The signaling server's room of cluster room `name`, if it is one ([`signaling_room`]).
pub(crate) fn signaling_room_of(name: &str) -> Option<&str> {
    name.strip_prefix("\u{1}sig:")
}

/// A music message forwarded to the room's authority ([`Kind::MusicIn`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct MusicInput {
    /// The payload.
    pub(crate) value: serde_json::Value,
    /// The sender's verified identity key, if any.
    pub(crate) identity: Option<String>,
    /// The sender's socket and frame seq (for its refusal).
    pub(crate) conn: u64,
    pub(crate) seq: u64,
}

/// Server messages of a room's authority for members held by other nodes ([`Kind::Music`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct MusicOut {
    /// Who gets `message` (members held by other nodes than the authority's).
    pub(crate) to: Vec<SessionId>,
    /// A Sync-lane message, or `None` with `refusal`.
    pub(crate) message: Option<serde_json::Value>,
    /// A refusal for `to[0]`'s socket `conn`, frame `seq`: `(code, text)`.
    pub(crate) refusal: Option<(p3_lanes::core::error::ErrorCode, String)>,
    pub(crate) conn: u64,
    pub(crate) seq: u64,
}

/// Runs `f` to completion from synchronous code on a multi-threaded runtime (a cluster join
/// or a music room's fenced write waits for its Redis answer); `None` on a current-thread
/// runtime, where it cannot wait.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> Option<F::Output> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread {
        return None;
    }
    Some(tokio::task::block_in_place(|| handle.block_on(f)))
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Joined => "joined",
            Kind::Moved => "moved",
            Kind::Left => "left",
            Kind::Relay => "relay",
            Kind::MusicIn => "music-in",
            Kind::Music => "music",
            Kind::SigJoined => "sig-joined",
            Kind::SigLeft => "sig-left",
            Kind::SigRelay => "sig-relay",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "joined" => Kind::Joined,
            "moved" => Kind::Moved,
            "left" => Kind::Left,
            "relay" => Kind::Relay,
            "music-in" => Kind::MusicIn,
            "music" => Kind::Music,
            "sig-joined" => Kind::SigJoined,
            "sig-left" => Kind::SigLeft,
            "sig-relay" => Kind::SigRelay,
            _ => return None,
        })
    }
}

/// One entry to write to a room's stream.
#[derive(Clone, Debug)]
pub(crate) struct Publish {
    pub(crate) room: String,
    pub(crate) kind: Kind,
    pub(crate) sid: SessionId,
    /// Lane id of a relay (0 otherwise).
    pub(crate) lane: u8,
    pub(crate) to: Option<SessionId>,
    /// A relay's payload as JSON text (empty otherwise).
    pub(crate) body: String,
    /// When the change happened, ms since the epoch (this node's clock): a joiner's join
    /// time, a leaver's last presence (PROTOCOL.md §6.2). Membership entries only (0
    /// otherwise).
    pub(crate) at_ms: u64,
    /// A relay's token on the writing node ([`Cluster::next_token`]; 0: none).
    pub(crate) token: u64,
}

/// A member of a room as the members hash keeps it ([`PUBLISH`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) sid: SessionId,
    /// The node holding it.
    pub(crate) node: String,
    /// The entry number of its `joined`: members sort by it in join order.
    pub(crate) order: u64,
    /// When it joined, ms since the epoch (presence `since`).
    pub(crate) since: u64,
}

impl Member {
    /// A members hash field and value (`"<node> <order> <since>"`; a bare node name, as
    /// older nodes wrote it, has order and since 0).
    fn parse(sid: &str, value: &str) -> Option<Member> {
        let mut parts = value.split(' ');
        let node = parts.next().filter(|n| !n.is_empty())?.to_owned();
        let mut num = || {
            parts
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (order, since) = (num(), num());
        Some(Member {
            sid: sid.parse().ok()?,
            node,
            order,
            since,
        })
    }
}

/// Where a node is in a room's stream: the last entry it handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) id: String,
    pub(crate) n: u64,
    pub(crate) epoch: String,
}

/// What [`PUBLISH`] answered.
#[derive(Debug)]
pub(crate) struct Published {
    pub(crate) cursor: Cursor,
    /// `joined` / `moved` / `sig-joined`: every member of the room (this one included).
    pub(crate) members: Vec<Member>,
    /// `joined` / `moved`: the room's key (`"<keyId>:<key>"`) and where it was set.
    pub(crate) key: Option<(Stamp, String)>,
}

/// A room stream entry read by [`Cluster::read`].
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) room: String,
    pub(crate) id: String,
    pub(crate) n: u64,
    pub(crate) epoch: String,
    pub(crate) node: String,
    pub(crate) kind: Kind,
    pub(crate) sid: SessionId,
    pub(crate) lane: u8,
    pub(crate) to: Option<SessionId>,
    pub(crate) body: String,
    /// Membership entries: the member's join order and join time (its [`Member`] values)
    /// and when the change happened, ms (0 if absent).
    pub(crate) order: u64,
    pub(crate) since: u64,
    pub(crate) at: u64,
    /// The writing node's relay token (0: none).
    pub(crate) token: u64,
}

/// What to do with an entry ([`Cluster::advance`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Deliver it.
    Deliver,
    /// Deliver it after telling the room's members that entries before it are gone:
    /// `expected` was the next number of epoch `expected_epoch`.
    Gap {
        expected_epoch: String,
        expected: u64,
    },
    /// Written by this node (already delivered here), or for a room no longer read.
    Skip,
}

/// A session as stored in Redis ([`Cluster::load_session`]).
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) rec: SessionRecord,
    /// The node that holds it.
    pub(crate) node: String,
    /// Its room.
    pub(crate) room: Option<String>,
    /// Its resume cursor ([`resume`]), if a node wrote one.
    pub(crate) resume: Option<resume::ResumeCursor>,
}

/// The cluster side of one node.
pub struct Cluster {
    client: redis::Client,
    node: String,
    cmd: OnceCell<ConnectionManager>,
    publish_tx: mpsc::Sender<Publish>,
    publish_rx: Mutex<Option<mpsc::Receiver<Publish>>>,
    /// Rooms this node reads, and where it is in each (a leaf lock).
    watched: Mutex<HashMap<String, Cursor>>,
    /// Per room read, the last entry (epoch, number) whose delivery to this node's members is
    /// done ([`Cluster::handled`]; a leaf lock).
    handled: Mutex<HashMap<String, (String, u64)>>,
    stream_len: u64,
    /// The last relay token handed out ([`Cluster::next_token`]).
    tokens: AtomicU64,
    /// Relay tokens of this node read back from the streams: token → (epoch, entry number),
    /// the newest [`RESOLVED_TOKENS`] (a leaf lock).
    resolved: Mutex<BTreeMap<u64, (String, u64)>>,
    key_ttl_ms: u64,
    session_ttl_ms: u64,
    ticket_ttl_ms: u64,
    script: redis::Script,
    /// The last probe's `PING` round trip, µs (0: not measured yet).
    rtt_us: AtomicU64,
    /// Entries of watched rooms not yet read here, at the last probe.
    lag_entries: AtomicU64,
    /// Age of the oldest entry of the last read, ms (0: the last read found nothing).
    lag_ms: AtomicU64,
    resume_script: redis::Script,
}

/// A node's Redis figures (PROTOCOL.md §18.1): `/metrics` and the pulse `metrics` message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisFigures {
    /// Round trip of the last `PING` on the command connection, µs (`None`: none answered
    /// yet). Measured every [`PROBE_PERIOD`].
    pub rtt_us: Option<u64>,
    /// Entries written to the streams of the rooms this node reads (at most [`PROBE_ROOMS`]
    /// of them) that it has not read yet, summed; as of the last probe.
    pub stream_lag_entries: u64,
    /// Age of the oldest entry in the node's last stream read when it was read (now minus
    /// the ms of its stream id), ms; 0 when that read found nothing new.
    pub stream_lag_ms: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).finish()
    }
}

/// A random node name: 8 hex digits.
fn random_node() -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the OS random number generator is available");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn stream_key(room: &str) -> String {
    format!("p3:room:{{{room}}}:stream")
}

/// The sessions `remote` (room → members held by other nodes) lists for `room`, sorted by
/// their ids' text (a stable order across calls).
pub(crate) fn remote_sids<V>(
    remote: &HashMap<String, HashMap<SessionId, V>>,
    room: &str,
) -> Vec<SessionId> {
    let mut v: Vec<SessionId> = remote
        .get(room)
        .map(|m| m.keys().copied().collect())
        .unwrap_or_default();
    v.sort_by_key(ToString::to_string);
    v
}

fn meta_key(room: &str) -> String {
    format!("p3:room:{{{room}}}:meta")
}

fn session_key(sid: SessionId) -> String {
    format!("p3:session:{sid}")
}

fn nonce_key(nonce: &str) -> String {
    format!("p3:nonce:{nonce}")
}

fn ticket_key(sid: SessionId, ticket: &str) -> String {
    let digest = Sha256::digest(ticket.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("p3:ticket:{sid}:{hex}")
}

/// A room stream entry as read, `None` (logged) if malformed.
fn entry_of(room: &str, id: &redis::streams::StreamId) -> Option<Entry> {
    let field = |f: &str| id.map.get(f).and_then(text).unwrap_or_default();
    let (Some(kind), Ok(sid), Ok(n)) = (
        Kind::parse(&field("kind")),
        field("sid").parse::<SessionId>(),
        field("n").parse::<u64>(),
    ) else {
        tracing::warn!(room, id = %id.id, "malformed room stream entry skipped");
        return None;
    };
    Some(Entry {
        room: room.to_owned(),
        id: id.id.clone(),
        n,
        epoch: field("e"),
        node: field("node"),
        kind,
        sid,
        lane: field("lane").parse().unwrap_or(0),
        to: field("to").parse().ok(),
        body: field("body"),
        order: field("o").parse().unwrap_or(0),
        since: field("since").parse().unwrap_or(0),
        at: field("at").parse().unwrap_or(0),
        token: field("q").parse().unwrap_or(0),
    })
}

/// A Redis bulk or integer value as text.
fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl Cluster {
    /// The cluster of `config` (`--redis-url` set; the URL is only parsed here, the
    /// connection is made on first use and remade whenever it drops).
    ///
    /// Errors: a malformed URL.
    pub fn new(config: &crate::Config) -> redis::RedisResult<Option<Cluster>> {
        let Some(url) = config.redis_url.as_deref() else {
            return Ok(None);
        };
        let (publish_tx, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        Ok(Some(Cluster {
            client: redis::Client::open(url)?,
            node: config.node_id.clone().unwrap_or_else(random_node),
            cmd: OnceCell::new(),
            publish_tx,
            publish_rx: Mutex::new(Some(publish_rx)),
            watched: Mutex::new(HashMap::new()),
            handled: Mutex::new(HashMap::new()),
            stream_len: config.room_stream_len,
            tokens: AtomicU64::new(0),
            resolved: Mutex::new(BTreeMap::new()),
            key_ttl_ms: config.session_ttl_s.max(60).saturating_mul(2000),
            session_ttl_ms: config.session_ttl_s.saturating_mul(1000),
            ticket_ttl_ms: config.ticket_ttl_ms,
            script: redis::Script::new(PUBLISH),
            rtt_us: AtomicU64::new(0),
            lag_entries: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            resume_script: redis::Script::new(SET_RESUME),
        }))
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's Redis figures now.
    pub fn figures(&self) -> RedisFigures {
        let rtt = self.rtt_us.load(Ordering::Relaxed);
        RedisFigures {
            rtt_us: (rtt > 0).then_some(rtt),
            stream_lag_entries: self.lag_entries.load(Ordering::Relaxed),
            stream_lag_ms: self.lag_ms.load(Ordering::Relaxed),
        }
    }

    /// Measures the Redis figures: a `PING`'s round trip on the command connection, then the
    /// stream lag of the watched rooms (at most [`PROBE_ROOMS`]): per room, the meta's last
    /// entry number minus this node's cursor (all of them when the epoch changed). One round
    /// trip each; no lock held across them.
    pub(crate) async fn probe(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let start = std::time::Instant::now();
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        let rtt = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.rtt_us.store(rtt.max(1), Ordering::Relaxed);
        let rooms: Vec<(String, Cursor)> = match self.watched.lock() {
            Ok(w) => w
                .iter()
                .take(PROBE_ROOMS)
                .map(|(r, c)| (r.clone(), c.clone()))
                .collect(),
            Err(_) => Vec::new(),
        };
        if rooms.is_empty() {
            self.lag_entries.store(0, Ordering::Relaxed);
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (room, _) in &rooms {
            pipe.cmd("HMGET").arg(meta_key(room)).arg("e").arg("n");
        }
        let metas: Vec<(Option<String>, Option<u64>)> = pipe.query_async(&mut conn).await?;
        let lag = rooms
            .iter()
            .zip(metas)
            .map(|((_, c), (epoch, n))| match (epoch, n) {
                (Some(e), Some(n)) if e == c.epoch => n.saturating_sub(c.n),
                (Some(_), Some(n)) => n,
                _ => 0,
            })
            .fold(0u64, u64::saturating_add);
        self.lag_entries.store(lag, Ordering::Relaxed);
        Ok(())
    }

    /// A new auto-reconnecting connection.
    async fn connect(&self, response_timeout: Duration) -> redis::RedisResult<ConnectionManager> {
        let cfg = ConnectionManagerConfig::new()
            .set_response_timeout(response_timeout)
            .set_connection_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(2)
            .set_max_delay(500);
        ConnectionManager::new_with_config(self.client.clone(), cfg).await
    }

    /// The command connection (shared, multiplexed; never used for blocking reads).
    async fn conn(&self) -> redis::RedisResult<ConnectionManager> {
        self.cmd
            .get_or_try_init(|| self.connect(RESPONSE_TIMEOUT))
            .await
            .cloned()
    }

    /// Runs [`PUBLISH`] for `p`; `None` for a `left` that no longer applies.
    pub(crate) async fn publish_now(&self, p: &Publish) -> redis::RedisResult<Option<Published>> {
        self.publish_numbered(p, 0).await
    }

    /// The [`PUBLISH`] call for `p` with publish number `number` (0: none).
    fn invocation(&self, p: &Publish, number: u64) -> redis::ScriptInvocation<'_> {
        let room = &p.room;
        let (key1, key2) = match p.kind {
            Kind::Joined | Kind::Moved | Kind::Left => {
                crate::room_key::candidates().unwrap_or_default()
            }
            _ => Default::default(),
        };
        let mut inv = self.script.prepare_invoke();
        inv.key(stream_key(room))
            .key(meta_key(room))
            .key(format!("p3:room:{{{room}}}:members"))
            .key(session_key(p.sid))
            .arg(self.stream_len)
            .arg(random_node())
            .arg(&self.node)
            .arg(p.kind.as_str())
            .arg(p.sid.to_string())
            .arg(p.lane)
            .arg(p.to.map(|t| t.to_string()).unwrap_or_default())
            .arg(&p.body)
            .arg(self.key_ttl_ms)
            .arg(room)
            .arg(number)
            .arg(p.at_ms)
            .arg(key1)
            .arg(key2)
            .arg(p.token);
        inv
    }

    /// Writes `batch` (entries with their publish numbers, in order) in one pipeline: one
    /// round trip for all of them. The script is loaded first in the same pipeline (a Redis
    /// that restarted has forgotten it).
    async fn publish_batch(&self, batch: &[(u64, Publish)]) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.load_script(&self.script).ignore();
        let calls: Vec<_> = batch.iter().map(|(n, p)| self.invocation(p, *n)).collect();
        for inv in &calls {
            pipe.invoke_script(inv).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// [`Cluster::publish_now`] with publish number `number` (0: none).
    async fn publish_numbered(
        &self,
        p: &Publish,
        number: u64,
    ) -> redis::RedisResult<Option<Published>> {
        let mut conn = self.conn().await?;
        let answer: redis::Value = self.invocation(p, number).invoke_async(&mut conn).await?;
        let redis::Value::Array(items) = answer else {
            return Ok(None);
        };
        let bad = || redis::RedisError::from((redis::ErrorKind::TypeError, "publish answer"));
        let id = items.first().and_then(text).ok_or_else(bad)?;
        let n = items
            .get(1)
            .and_then(text)
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)?;
        let epoch = items.get(2).and_then(text).ok_or_else(bad)?;
        let mut members = Vec::new();
        if let Some(redis::Value::Array(flat)) = items.get(3) {
            for pair in flat.chunks(2) {
                let (Some(sid), Some(value)) =
                    (pair.first().and_then(text), pair.get(1).and_then(text))
                else {
                    continue;
                };
                members.extend(Member::parse(&sid, &value));
            }
        }
        let key = match (items.get(4).and_then(text), items.get(5).and_then(text)) {
            (Some(k), Some(kn)) => kn.parse().ok().map(|n| {
                let stamp = Stamp {
                    epoch: epoch.clone(),
                    n,
                };
                (stamp, k)
            }),
            _ => None,
        };
        Ok(Some(Published {
            cursor: Cursor { id, n, epoch },
            members,
            key,
        }))
    }

    /// Queues `p` for the publisher (in order with everything queued before). `false`: the
    /// queue is full (the caller refuses with `backpressure`).
    pub(crate) fn publish(&self, p: Publish) -> bool {
        self.publish_tx.try_send(p).is_ok()
    }

    /// The publisher: writes queued entries in order, up to [`PUBLISH_BATCH`] per round trip,
    /// retrying a batch until Redis takes it (a dropped connection delays entries, never
    /// loses them; an entry written before the error is not written again, by its publish
    /// number). Runs until the queue closes.
    pub(crate) async fn run_publisher(&self) {
        let Some(mut rx) = self.publish_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        // Numbers start above any this node name used before (a restarted node keeps its
        // name): ms since the epoch, times 1000.
        let mut number = crate::now_ms().saturating_mul(1000);
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < PUBLISH_BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let batch: Vec<(u64, Publish)> = batch
                .into_iter()
                .map(|p| {
                    number += 1;
                    (number, p)
                })
                .collect();
            let mut delay = Duration::from_millis(20);
            while let Err(e) = self.publish_batch(&batch).await {
                tracing::warn!(error = %e, entries = batch.len(), "cluster publish failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Starts reading `room` after `cursor`, unless it is read already.
    pub(crate) fn watch(&self, room: &str, cursor: Cursor) {
        if let Ok(mut w) = self.watched.lock() {
            let c = w.entry(room.to_owned()).or_insert(cursor);
            if let Ok(mut h) = self.handled.lock() {
                h.entry(room.to_owned())
                    .or_insert_with(|| (c.epoch.clone(), c.n));
            }
        }
    }

    /// The rooms this node reads (it has members there).
    pub(crate) fn watched_rooms(&self) -> Vec<String> {
        match self.watched.lock() {
            Ok(w) => w.keys().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Stops reading `room` (its last member on this node left).
    pub(crate) fn unwatch(&self, room: &str) {
        if let Ok(mut w) = self.watched.lock() {
            w.remove(room);
            if let Ok(mut h) = self.handled.lock() {
                h.remove(room);
            }
        }
    }

    /// Records that `e` was handled (delivered to this node's members, after
    /// [`Cluster::advance`]): resume cursors may pass it ([`Cluster::read_position`]).
    pub(crate) fn handled(&self, e: &Entry) {
        let Ok(w) = self.watched.lock() else {
            return;
        };
        if w.contains_key(&e.room) {
            if let Ok(mut h) = self.handled.lock() {
                h.insert(e.room.clone(), (e.epoch.clone(), e.n));
            }
        }
    }

    /// Records that `e` was read: the room's cursor moves to it; says what to do with it.
    pub(crate) fn advance(&self, e: &Entry) -> Step {
        let Ok(mut w) = self.watched.lock() else {
            return Step::Skip;
        };
        let Some(c) = w.get_mut(&e.room) else {
            return Step::Skip;
        };
        if e.node == self.node && e.token != 0 {
            if let Ok(mut r) = self.resolved.lock() {
                r.insert(e.token, (e.epoch.clone(), e.n));
                while r.len() > RESOLVED_TOKENS {
                    r.pop_first();
                }
            }
        }
        let gap = (c.epoch != e.epoch || e.n != c.n.saturating_add(1)).then(|| Step::Gap {
            expected_epoch: c.epoch.clone(),
            expected: c.n.saturating_add(1),
        });
        *c = Cursor {
            id: e.id.clone(),
            n: e.n,
            epoch: e.epoch.clone(),
        };
        match gap {
            Some(g) => g,
            None if e.node == self.node => Step::Skip,
            None => Step::Deliver,
        }
    }

    /// A reading connection (blocking reads: never the command connection).
    pub(crate) async fn reader(&self) -> redis::RedisResult<ConnectionManager> {
        self.connect(RESPONSE_TIMEOUT + Duration::from_millis(READ_BLOCK_MS as u64))
            .await
    }

    /// Reads what follows each watched room's cursor (waiting up to [`READ_BLOCK_MS`]);
    /// empty when nothing is watched (after a pause) or nothing came.
    pub(crate) async fn read(
        &self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<Vec<Entry>> {
        let rooms: Vec<(String, String)> = match self.watched.lock() {
            Ok(w) => w.iter().map(|(r, c)| (r.clone(), c.id.clone())).collect(),
            Err(_) => Vec::new(),
        };
        if rooms.is_empty() {
            self.lag_ms.store(0, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(READ_BLOCK_MS as u64)).await;
            return Ok(Vec::new());
        }
        let keys: Vec<String> = rooms.iter().map(|(r, _)| stream_key(r)).collect();
        let ids: Vec<&str> = rooms.iter().map(|(_, id)| id.as_str()).collect();
        let by_key: HashMap<&str, &str> = keys
            .iter()
            .map(String::as_str)
            .zip(rooms.iter().map(|(r, _)| r.as_str()))
            .collect();
        let opts = redis::streams::StreamReadOptions::default()
            .block(READ_BLOCK_MS)
            .count(READ_COUNT);
        let reply: Option<redis::streams::StreamReadReply> =
            conn.xread_options(&keys, &ids, &opts).await?;
        let mut out = Vec::new();
        let now = crate::now_ms();
        let mut oldest = 0u64;
        for key in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(room) = by_key.get(key.key.as_str()) else {
                continue;
            };
            for id in key.ids {
                if let Some(ms) = id.id.split('-').next().and_then(|t| t.parse::<u64>().ok()) {
                    oldest = oldest.max(now.saturating_sub(ms));
                }
                out.extend(entry_of(room, &id));
            }
        }
        self.lag_ms.store(oldest, Ordering::Relaxed);
        Ok(out)
    }

    /// A new relay token (never 0): a relay this node delivers locally and writes to its
    /// room's stream carries it, so that the node learns the entry's number when it reads
    /// the entry back ([`Cluster::resolve`]).
    pub(crate) fn next_token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The entry (epoch, number) of this node's relay `token`, once read back.
    pub(crate) fn resolve(&self, token: u64) -> Option<(String, u64)> {
        self.resolved.lock().ok()?.get(&token).cloned()
    }

    /// Where this node is in `room`'s stream: (epoch, number) of the last entry whose
    /// delivery here is done (every entry up to it that was for a member of this node is in
    /// the member's multiplexer).
    pub(crate) fn read_position(&self, room: &str) -> Option<(String, u64)> {
        self.handled.lock().ok()?.get(room).cloned()
    }

    /// Writes resume cursors (session, JSON) into the sessions' records, one pipeline
    /// ([`SET_RESUME`]: a record that expired is not recreated, and no TTL is touched).
    pub(crate) async fn write_resume(
        &self,
        cursors: &[(SessionId, String)],
    ) -> redis::RedisResult<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.load_script(&self.resume_script).ignore();
        let calls: Vec<_> = cursors
            .iter()
            .map(|(sid, json)| {
                let mut inv = self.resume_script.prepare_invoke();
                inv.key(session_key(*sid)).arg(json);
                inv
            })
            .collect();
        for inv in &calls {
            pipe.invoke_script(inv).ignore();
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// `room`'s stream entries after entry `after` of epoch `epoch`, up to `end` (an entry
    /// id, included), oldest first: read newest first in pages of [`REPLAY_PAGE`] until an
    /// entry at or before the cursor (or the stream's start), at most `--room-stream-len` +
    /// [`REPLAY_PAGE`] entries.
    pub(crate) async fn entries_since(
        &self,
        room: &str,
        epoch: &str,
        after: u64,
        end: &str,
    ) -> redis::RedisResult<Vec<Entry>> {
        let mut conn = self.conn().await?;
        let limit = usize::try_from(self.stream_len)
            .unwrap_or(usize::MAX)
            .saturating_add(REPLAY_PAGE);
        let mut out: Vec<Entry> = Vec::new();
        let mut upper = end.to_owned();
        loop {
            let page: redis::streams::StreamRangeReply = conn
                .xrevrange_count(stream_key(room), &upper, "-", REPLAY_PAGE)
                .await?;
            let full = page.ids.len() == REPLAY_PAGE;
            let mut reached = false;
            for id in &page.ids {
                if id.id == upper && !out.is_empty() {
                    continue;
                }
                let Some(e) = entry_of(room, id) else {
                    continue;
                };
                if e.epoch == epoch && e.n <= after {
                    reached = true;
                    break;
                }
                out.push(e);
            }
            match out.last() {
                Some(last) if full && !reached && out.len() < limit => {
                    upper = last.id.clone();
                }
                _ => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    /// `room`'s key in the cluster's store and where it was set (`None`: the room has none),
    /// read after a gap in its stream, which may have hidden a rotation.
    pub(crate) async fn room_key(&self, room: &str) -> redis::RedisResult<Option<(Stamp, String)>> {
        let mut conn = self.conn().await?;
        let (epoch, key, kn): (Option<String>, Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(meta_key(room))
            .arg("e")
            .arg("k")
            .arg("kn")
            .query_async(&mut conn)
            .await?;
        Ok(match (epoch, key, kn) {
            (Some(epoch), Some(key), Some(n)) => Some((Stamp { epoch, n }, key)),
            _ => None,
        })
    }

    /// The seed 001 signaling server's token secret shared by every node
    /// (`p3:signaling:secret`, 64 hex digits, no expiry): `candidate` is stored if there is
    /// none (`SET NX`, so racing nodes agree), and the stored one is returned. Also run
    /// periodically with the node's secret, so a Redis that restarted empty gets it back
    /// before a new node makes another.
    pub(crate) async fn signaling_secret(
        &self,
        candidate: &[u8; 32],
    ) -> redis::RedisResult<[u8; 32]> {
        let hex: String = candidate.iter().map(|b| format!("{b:02x}")).collect();
        let mut conn = self.conn().await?;
        let (stored,): (String,) = redis::pipe()
            .cmd("SET")
            .arg("p3:signaling:secret")
            .arg(&hex)
            .arg("NX")
            .ignore()
            .get("p3:signaling:secret")
            .query_async(&mut conn)
            .await?;
        let bad = || redis::RedisError::from((redis::ErrorKind::TypeError, "signaling secret"));
        if stored.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(stored.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(out)
    }

    /// Stores a new session's record (held by this node) and its first ticket.
    pub(crate) async fn store_session(
        &self,
        sid: SessionId,
        rec: &SessionRecord,
        ticket: &str,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let json = serde_json::to_string(rec).unwrap_or_default();
        redis::pipe()
            .atomic()
            .hset_multiple(
                session_key(sid),
                &[("rec", json.as_str()), ("node", &self.node)],
            )
            .pexpire(session_key(sid), self.session_ttl_ms as i64)
            .set_options(
                ticket_key(sid, ticket),
                1,
                redis::SetOptions::default()
                    .with_expiration(redis::SetExpiry::PX(self.ticket_ttl_ms)),
            )
            .query_async::<()>(&mut conn)
            .await
    }

    /// Stores a ticket minted on this node.
    pub(crate) async fn store_ticket(
        &self,
        sid: SessionId,
        ticket: &str,
    ) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let opts =
            redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(self.ticket_ttl_ms));
        conn.set_options(ticket_key(sid, ticket), 1, opts).await
    }

    /// Uses a ticket: true if it was live (then it is gone for every node).
    pub(crate) async fn redeem_ticket(
        &self,
        sid: SessionId,
        ticket: &str,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn().await?;
        let n: u64 = conn.del(ticket_key(sid, ticket)).await?;
        Ok(n == 1)
    }

    /// A session's record, the node holding it, its room and its resume cursor (`None`:
    /// unknown or expired).
    pub(crate) async fn load_session(&self, sid: SessionId) -> redis::RedisResult<Option<Stored>> {
        let mut conn = self.conn().await?;
        type Fields = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let (rec, node, room, resume): Fields = redis::cmd("HMGET")
            .arg(session_key(sid))
            .arg("rec")
            .arg("node")
            .arg("room")
            .arg("resume")
            .query_async(&mut conn)
            .await?;
        let Some(rec) = rec.and_then(|r| serde_json::from_str(&r).ok()) else {
            return Ok(None);
        };
        Ok(Some(Stored {
            rec,
            node: node.unwrap_or_default(),
            room,
            resume: resume.and_then(|r| serde_json::from_str(&r).ok()),
        }))
    }

    /// Marks the session held by this node and restarts its TTL.
    pub(crate) async fn hold_session(&self, sid: SessionId) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        redis::pipe()
            .hset(session_key(sid), "node", &self.node)
            .pexpire(session_key(sid), self.session_ttl_ms as i64)
            .query_async::<()>(&mut conn)
            .await
    }

    /// Restarts the TTL of sessions held here (storing each one's last activity, ms since
    /// the epoch, as `seen` in its record: presence `lastSeen` for other nodes) and of the
    /// watched rooms' keys.
    pub(crate) async fn refresh(&self, sids: &[(SessionId, u64)]) -> redis::RedisResult<()> {
        let rooms: Vec<String> = match self.watched.lock() {
            Ok(w) => w.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        if sids.is_empty() && rooms.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for &(sid, seen) in sids {
            pipe.hset(session_key(sid), "seen", seen)
                .ignore()
                .pexpire(session_key(sid), self.session_ttl_ms as i64)
                .ignore();
        }
        for room in &rooms {
            for part in ["stream", "meta", "members"] {
                pipe.pexpire(format!("p3:room:{{{room}}}:{part}"), self.key_ttl_ms as i64)
                    .ignore();
            }
        }
        pipe.query_async::<()>(&mut conn).await
    }

    /// The last activity (`seen`, ms since the epoch) the holders of `sids` stored, in that
    /// order (`None`: unknown): one round trip.
    pub(crate) async fn last_seen(
        &self,
        sids: &[SessionId],
    ) -> redis::RedisResult<Vec<Option<u64>>> {
        if sids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        for &sid in sids {
            pipe.hget(session_key(sid), "seen");
        }
        let seen: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(seen
            .into_iter()
            .map(|s| s.and_then(|s| s.parse().ok()))
            .collect())
    }

    /// Stores a sign-in nonce issued by this node (unused), for the nonce's TTL.
    pub(crate) async fn store_nonce(&self, nonce: &str, ttl_ms: u64) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let opts = redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ttl_ms));
        conn.set_options(nonce_key(nonce), 0, opts).await
    }

    /// Whether a nonce some node issued is live and unused (`Some(false)`), used
    /// (`Some(true)`) or unknown (`None`).
    pub(crate) async fn peek_nonce(&self, nonce: &str) -> redis::RedisResult<Option<bool>> {
        let mut conn = self.conn().await?;
        let v: Option<String> = conn.get(nonce_key(nonce)).await?;
        Ok(v.map(|v| v != "0"))
    }

    /// Marks a nonce used: `Some(false)` if it was live and unused (this sign-in is its one
    /// use in the cluster), `Some(true)` if another sign-in used it, `None` if unknown.
    pub(crate) async fn use_nonce(&self, nonce: &str) -> redis::RedisResult<Option<bool>> {
        let mut conn = self.conn().await?;
        let old: Option<String> = redis::cmd("SET")
            .arg(nonce_key(nonce))
            .arg(1)
            .arg("XX")
            .arg("KEEPTTL")
            .arg("GET")
            .query_async(&mut conn)
            .await?;
        Ok(old.map(|v| v != "0"))
    }

    /// Publishes this node's pulse `metrics` message on [`METRICS_CHANNEL`] (to every node
    /// subscribed now; none is kept).
    pub(crate) async fn publish_metrics(&self, text: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        conn.publish(METRICS_CHANNEL, text).await
    }

    /// Subscribes to [`METRICS_CHANNEL`] and hands `on_message` every other node's `metrics`
    /// message (a JSON object of `type` `metrics` whose `nodeId`, 1..=64 bytes, is not this
    /// node's), at most [`MAX_METRICS_BYTES`] each; returns when the subscription drops
    /// (the caller subscribes again).
    pub(crate) async fn metrics_subscription(
        &self,
        mut on_message: impl FnMut(String),
    ) -> redis::RedisResult<()> {
        use futures::StreamExt;
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(METRICS_CHANNEL).await?;
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let bytes = msg.get_payload_bytes();
            if bytes.len() > MAX_METRICS_BYTES {
                continue;
            }
            let Ok(text) = std::str::from_utf8(bytes) else {
                continue;
            };
            let Ok(serde_json::Value::Object(v)) = serde_json::from_str(text) else {
                continue;
            };
            let node = v.get("nodeId").and_then(|n| n.as_str()).unwrap_or_default();
            let ok = v.get("type").and_then(|t| t.as_str()) == Some("metrics")
                && !node.is_empty()
                && node.len() <= 64
                && node != self.node;
            if ok {
                on_message(text.to_owned());
            }
        }
        Ok(())
    }

    /// Forgets a deleted session.
    pub(crate) async fn delete_session(&self, sid: SessionId) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        conn.del(session_key(sid)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        let config = crate::Config {
            redis_url: Some("redis://127.0.0.1:1/".into()),
            node_id: Some("me".into()),
            ..crate::Config::default()
        };
        Cluster::new(&config).unwrap().unwrap()
    }

    fn entry(n: u64, epoch: &str, node: &str) -> Entry {
        Entry {
            room: "r".into(),
            id: format!("{n}-0"),
            n,
            epoch: epoch.into(),
            node: node.into(),
            kind: Kind::Relay,
            sid: SessionId::from_random_bytes([1; 16]),
            lane: 2,
            to: None,
            body: "{}".into(),
            order: 0,
            since: 0,
            at: 0,
            token: 0,
        }
    }

    /// The cursor decides: the next number of the same epoch is delivered (own entries
    /// skipped but counted), a skipped number or a new epoch is a gap, a room not read is
    /// skipped.
    #[test]
    fn entries_are_delivered_skipped_or_a_gap() {
        let c = cluster();
        assert_eq!(c.advance(&entry(1, "aa", "other")), Step::Skip, "not read");
        c.watch(
            "r",
            Cursor {
                id: "1-0".into(),
                n: 1,
                epoch: "aa".into(),
            },
        );
        assert_eq!(c.advance(&entry(2, "aa", "other")), Step::Deliver);
        assert_eq!(c.advance(&entry(3, "aa", "me")), Step::Skip);
        assert_eq!(c.advance(&entry(4, "aa", "other")), Step::Deliver);
        assert_eq!(
            c.advance(&entry(7, "aa", "other")),
            Step::Gap {
                expected_epoch: "aa".into(),
                expected: 5
            }
        );
        assert_eq!(c.advance(&entry(8, "aa", "other")), Step::Deliver);
        // A new epoch is a gap even when its number happens to be the next one.
        assert_eq!(
            c.advance(&entry(9, "bb", "other")),
            Step::Gap {
                expected_epoch: "aa".into(),
                expected: 9
            }
        );
        assert_eq!(c.advance(&entry(10, "bb", "other")), Step::Deliver);
        c.unwatch("r");
        assert_eq!(c.advance(&entry(11, "bb", "other")), Step::Skip);
    }
}
