//! One authority per music room in the cluster (PROTOCOL.md §17 "Music rooms", DESIGN.md
//! "Music rooms across nodes: a lease per room"): a lease in Redis names the node that holds
//! the room's authority, a fencing token counts the acquisitions, and the room's authority
//! state is kept in Redis by the holder, written only under the current token.
//!
//! Keys (all with the room as hash tag):
//! - `p3:music:{room}:lease`: the holder's node name, `PX` [`LEASE_TTL_MS`]; set with `NX`,
//!   renewed by the holder only ([`RENEW`]), deleted by it on a clean shutdown ([`RELEASE`]).
//! - `p3:music:{room}:fence`: the fencing token, `INCR`ed on each acquisition; the holder's
//!   token is the value it read when it acquired.
//! - `p3:music:{room}:state`: JSON [`Stored`] (token, authority snapshot, last input read),
//!   written by [`WRITE`] only while the writer's node holds the lease under its token.
//!
//! The fence and state keys expire like the room's stream (2 × max(session TTL, 60 s)),
//! restarted by every renewal and write.

use super::Cluster;
use p3_lanes::core::music::authority::Snapshot;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a lease lasts without renewal, ms. A holder that dies (SIGKILL) loses its rooms
/// after at most this long; with [`LEASE_TICK`] the takeover stays under 2 s.
pub const LEASE_TTL_MS: u64 = 1500;
/// How often a node renews the leases it holds and probes the free leases of music rooms it
/// has members in. Three renewals fit in one TTL: a single slow round trip never loses a
/// lease.
pub const LEASE_TICK: Duration = Duration::from_millis(250);

/// Acquires or probes a lease. KEYS: lease, fence, state. ARGV: node, lease TTL ms, create
/// (`1`: take a free lease even if the room has no state yet; `0`: only a music room's, one
/// with a state), key TTL ms. Answers `{1, token, state}` (this node held it: renewed),
/// `{2, token, state}` (acquired now: the token is new), `{0, holder}` (another node holds
/// it) or `{-1}` (free, and no music room: nothing taken).
pub const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, redis.call('GET', KEYS[2]) or '0', redis.call('GET', KEYS[3])}
end
if holder then return {0, holder} end
if ARGV[3] == '0' and redis.call('EXISTS', KEYS[3]) == 0 then return {-1} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local token = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {2, token, redis.call('GET', KEYS[3])}
";

/// Compare-and-renew. KEYS: lease, fence, state. ARGV: node, token, lease TTL ms, key TTL
/// ms. `1` renewed; `0` the lease is not this node's under this token any more.
pub const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1
";

/// Compare-and-delete. KEYS: lease, fence. ARGV: node, token. `1` released.
pub const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
";

/// The fenced state write. KEYS: lease, fence, state. ARGV: node, token, state JSON, key TTL
/// ms. `1` written; `0` refused: the lease is not this node's, or the fence moved past the
/// token (another node acquired it since).
pub const WRITE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
";

/// A music room's state as kept in Redis.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stored {
    /// The fencing token of the holder that wrote it.
    pub token: u64,
    /// The authority's durable part.
    pub snapshot: Snapshot,
}

/// What [`Cluster::music_acquire`] found.
#[derive(Debug)]
pub enum Acquired {
    /// This node holds the lease.
    Held {
        /// The fencing token.
        token: u64,
        /// Acquired just now (a new token).
        fresh: bool,
        /// The room's state in Redis (boxed: a snapshot with its change log is large).
        stored: Option<Box<Stored>>,
    },
    /// Another node holds it.
    Other(String),
    /// Free, and not a music room (a probe takes nothing).
    NotMusic,
}

fn key(room: &str, part: &str) -> String {
    format!("p3:music:{{{room}}}:{part}")
}

fn bad(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::TypeError, what))
}

impl Cluster {
    /// Takes `room`'s lease if it is free (`create`: even for a room with no state yet, the
    /// first music message; otherwise only a music room's: a takeover probe), or renews it if
    /// this node holds it.
    pub async fn music_acquire(&self, room: &str, create: bool) -> redis::RedisResult<Acquired> {
        let mut conn = self.conn().await?;
        let answer: redis::Value = redis::Script::new(ACQUIRE)
            .key(key(room, "lease"))
            .key(key(room, "fence"))
            .key(key(room, "state"))
            .arg(&self.node)
            .arg(LEASE_TTL_MS)
            .arg(if create { "1" } else { "0" })
            .arg(self.key_ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        let redis::Value::Array(items) = answer else {
            return Err(bad("lease answer"));
        };
        let field = |i: usize| items.get(i).and_then(super::text);
        let kind: i64 = field(0)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("lease answer"))?;
        Ok(match kind {
            0 => Acquired::Other(field(1).unwrap_or_default()),
            1 | 2 => {
                let token = field(1)
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| bad("fencing token"))?;
                let stored = field(2).and_then(|json| match serde_json::from_str(&json) {
                    Ok(s) => Some(Box::new(s)),
                    Err(e) => {
                        tracing::warn!(room, error = %e, "music room state in Redis unreadable; starting fresh");
                        None
                    }
                });
                Acquired::Held {
                    token,
                    fresh: kind == 2,
                    stored,
                }
            }
            _ => Acquired::NotMusic,
        })
    }

    /// Renews `room`'s lease held under `token`: `false` if it is not this node's any more.
    pub async fn music_renew(&self, room: &str, token: u64) -> redis::RedisResult<bool> {
        let mut conn = self.conn().await?;
        redis::Script::new(RENEW)
            .key(key(room, "lease"))
            .key(key(room, "fence"))
            .key(key(room, "state"))
            .arg(&self.node)
            .arg(token)
            .arg(LEASE_TTL_MS)
            .arg(self.key_ttl_ms)
            .invoke_async(&mut conn)
            .await
    }

    /// Releases `room`'s lease held under `token` (clean shutdown, or no member left here).
    pub async fn music_release(&self, room: &str, token: u64) -> redis::RedisResult<bool> {
        let mut conn = self.conn().await?;
        redis::Script::new(RELEASE)
            .key(key(room, "lease"))
            .key(key(room, "fence"))
            .arg(&self.node)
            .arg(token)
            .invoke_async(&mut conn)
            .await
    }

    /// Writes `room`'s state under `token`: `false` if refused by the fencing check (this
    /// node is not the holder under that token any more).
    pub async fn music_write(
        &self,
        room: &str,
        token: u64,
        snapshot: &Snapshot,
    ) -> redis::RedisResult<bool> {
        let json = serde_json::to_string(&Stored {
            token,
            snapshot: snapshot.clone(),
        })
        .map_err(|_| bad("state JSON"))?;
        let mut conn = self.conn().await?;
        redis::Script::new(WRITE)
            .key(key(room, "lease"))
            .key(key(room, "fence"))
            .key(key(room, "state"))
            .arg(&self.node)
            .arg(token)
            .arg(json)
            .arg(self.key_ttl_ms)
            .invoke_async(&mut conn)
            .await
    }
}
