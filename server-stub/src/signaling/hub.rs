//! The seed 001 signaling server's state (see [`super`]): the token secret, authenticated
//! sockets and their rooms, behind one lock held for map updates and queue pushes only. A leaf:
//! the app state owns it, the handler in [`super`] uses it.

use crate::close;
use crate::cluster::{signaling_room, Cluster, Kind, Publish};
use axum::extract::ws::Utf8Bytes;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::p2p::signaling_server::SignalingEvent;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// Domain separation of the token HMAC (v2: with an expiry).
const TOKEN_CONTEXT: &[u8] = b"p3-signaling-v2";

pub(super) type Close = watch::Sender<Option<(u16, &'static str)>>;

/// A socket's outbound queue: at most `--queue-frames` messages and
/// `--signaling-queue-bytes` bytes of text (see [`super`]).
#[derive(Clone, Debug)]
pub(super) struct OutQueue {
    pub(super) tx: mpsc::Sender<Utf8Bytes>,
    /// Bytes queued and not yet taken by the send task.
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) budget: usize,
}

impl OutQueue {
    /// Queues `text`; false (and nothing queued) when either budget is full.
    pub(super) fn try_send(&self, text: Utf8Bytes) -> bool {
        let len = text.len();
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                q.checked_add(len).filter(|&n| n <= self.budget)
            })
            .is_ok();
        if !reserved {
            return false;
        }
        if self.tx.try_send(text).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// One authenticated socket.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) conn: u64,
    pub(super) tx: OutQueue,
    pub(super) close: Arc<Close>,
    pub(super) room: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Rooms {
    pub(super) members: HashMap<SessionId, Member>,
    pub(super) rooms: HashMap<String, Vec<SessionId>>,
    /// With `--redis-url` ([`crate::cluster`]): the other nodes.
    pub(super) cluster: Option<Arc<Cluster>>,
    /// Cluster only: per room with members here, its members held by other nodes (session →
    /// node), kept from the room stream's `sig-joined` / `sig-left` entries.
    pub(super) remote: HashMap<String, HashMap<SessionId, String>>,
}

/// The signaling server's state: the token secret, authenticated sockets and rooms.
#[derive(Debug)]
pub(crate) struct Hub {
    /// This process's secret: used until a cluster-wide one is known.
    secret: [u8; 32],
    /// With `--redis-url`: the secret every node uses, from Redis ([`Hub::set_shared`]).
    shared: std::sync::OnceLock<[u8; 32]>,
    /// How long a token is valid after it is issued, ms (`--signaling-token-ttl-s`).
    token_ttl_ms: u64,
    pub(super) next_conn: AtomicU64,
    inner: Mutex<Rooms>,
}

impl Hub {
    /// A hub with a fresh secret from the OS CSPRNG, issuing tokens valid `token_ttl_ms`;
    /// rooms span the nodes of `cluster`, if any.
    pub(crate) fn new(token_ttl_ms: u64, cluster: Option<Arc<Cluster>>) -> Hub {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random number generator is available");
        Hub {
            secret,
            shared: std::sync::OnceLock::new(),
            token_ttl_ms,
            next_conn: AtomicU64::new(1),
            inner: Mutex::new(Rooms {
                cluster,
                ..Rooms::default()
            }),
        }
    }

    /// Whether the cluster-wide secret is known.
    pub(crate) fn has_shared(&self) -> bool {
        self.shared.get().is_some()
    }

    /// Uses `secret`, the cluster's (PROTOCOL.md §17), from now on: tokens issued with this
    /// process's own secret before are no longer accepted. Set once; later calls do nothing.
    pub(crate) fn set_shared(&self, secret: [u8; 32]) {
        let _ = self.shared.set(secret);
    }

    /// The secret in use: the cluster's once known, else this process's.
    pub(crate) fn secret(&self) -> &[u8; 32] {
        self.shared.get().unwrap_or(&self.secret)
    }

    fn mac(&self, sid: SessionId, expires_ms: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret())
            .expect("HMAC takes keys of any length");
        mac.update(TOKEN_CONTEXT);
        mac.update(sid.to_string().as_bytes());
        mac.update(&expires_ms.to_be_bytes());
        mac
    }

    /// The `signalingToken` of session `sid` issued at `now_ms` (see the module docs):
    /// `base64url(expiry ms, 8 bytes big-endian ‖ HMAC-SHA256)`.
    pub(crate) fn token(&self, sid: SessionId, now_ms: u64) -> String {
        let expires = now_ms.saturating_add(self.token_ttl_ms);
        let mut bytes = expires.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.mac(sid, expires).finalize().into_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Whether `token` is `sid`'s and unexpired at `now_ms`; the MAC is compared in constant
    /// time.
    pub(super) fn verify(&self, sid: SessionId, token: &str, now_ms: u64) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
            return false;
        };
        let Some((expires, tag)) = bytes.split_first_chunk::<8>() else {
            return false;
        };
        let expires = u64::from_be_bytes(*expires);
        now_ms < expires && self.mac(sid, expires).verify_slice(tag).is_ok()
    }

    /// Authenticated sockets now (the metrics' signaling peers).
    pub(crate) fn peers(&self) -> usize {
        self.lock().members.len()
    }

    /// Locks the hub (also for the cluster's reader); a lock poisoned by a panic brings the server down loudly (see
    /// [`crate::lock`]: server-wide state is never reused half-updated).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Rooms> {
        crate::lock::lock_or_abort(&self.inner, "signaling hub")
    }
}

impl Rooms {
    /// Queues a protocol message for `sid`; a full queue closes its socket with 1013.
    pub(super) fn send(&self, sid: SessionId, ev: &SignalingEvent) {
        if let Some(m) = self.members.get(&sid) {
            if !m.tx.try_send(encode(ev)) {
                m.close
                    .send_replace(Some((close::TRY_AGAIN_LATER, "outbound queue full")));
            }
        }
    }

    /// Takes `sid` out of its room; the others hear `peer_left` with `reason` (on other
    /// nodes too: a `sig-left` queued for the room's stream, a channel push, no Redis I/O
    /// here).
    pub(super) fn leave(&mut self, sid: SessionId, reason: &str) {
        let Some(room) = self.members.get_mut(&sid).and_then(|m| m.room.take()) else {
            return;
        };
        let mut others = Vec::new();
        if let Some(list) = self.rooms.get_mut(&room) {
            list.retain(|m| *m != sid);
            others.clone_from(list);
            if list.is_empty() {
                self.rooms.remove(&room);
                self.remote.remove(&room);
            }
        }
        if let Some(c) = &self.cluster {
            let name = signaling_room(&room);
            if others.is_empty() {
                c.unwatch(&name);
            }
            let left = Publish {
                room: name,
                kind: Kind::SigLeft,
                sid,
                lane: 0,
                to: None,
                body: reason.to_owned(),
                at_ms: 0,
                token: 0,
            };
            if !c.publish(left) {
                tracing::error!(session = %sid, room, "cluster publisher full: a signaling leave is not told to other nodes");
            }
        }
        let ev = SignalingEvent::PeerLeft {
            room_id: room,
            from: sid.to_string(),
            reason: reason.to_owned(),
        };
        for o in others {
            self.send(o, &ev);
        }
    }

    /// The members of `room` held by other nodes (cluster).
    pub(super) fn remote_members(&self, room: &str) -> Vec<SessionId> {
        crate::cluster::remote_sids(&self.remote, room)
    }

    /// Another node says `sid`'s socket there joined `room`: the members here hear
    /// `peer_joined` (once), if the room has members here.
    pub(crate) fn remote_joined(&mut self, room: &str, sid: SessionId, node: &str) {
        let Some(locals) = self.rooms.get(room).cloned() else {
            return;
        };
        let known = self
            .remote
            .entry(room.to_owned())
            .or_default()
            .insert(sid, node.to_owned())
            .is_some();
        if !known {
            let ev = SignalingEvent::PeerJoined {
                room_id: room.to_owned(),
                from: sid.to_string(),
            };
            for o in locals {
                self.send(o, &ev);
            }
        }
    }

    /// Another node says `sid`'s socket there left `room` (`reason`): the members here hear
    /// `peer_left`, if it was a member there.
    pub(crate) fn remote_left(&mut self, room: &str, sid: SessionId, node: &str, reason: &str) {
        let Some(mirror) = self.remote.get_mut(room) else {
            return;
        };
        if mirror.get(&sid).map(String::as_str) != Some(node) {
            return;
        }
        mirror.remove(&sid);
        let ev = SignalingEvent::PeerLeft {
            room_id: room.to_owned(),
            from: sid.to_string(),
            reason: reason.to_owned(),
        };
        for o in self.rooms.get(room).cloned().unwrap_or_default() {
            self.send(o, &ev);
        }
    }

    /// A message another node relayed to `to`, a member of `room` here (`text`: the event as
    /// sent); a full queue closes its socket with 1013 (the sender, on another node, cannot be
    /// answered `backpressure`).
    pub(crate) fn remote_relay(&self, room: &str, to: SessionId, text: &str) {
        if !self.rooms.get(room).is_some_and(|l| l.contains(&to)) {
            return;
        }
        if let Some(m) = self.members.get(&to) {
            if !m.tx.try_send(text.to_owned().into()) {
                m.close
                    .send_replace(Some((close::TRY_AGAIN_LATER, "outbound queue full")));
            }
        }
    }

    /// Socket `conn` of `sid` ended (`reason` for its room), if it still is the session's.
    pub(super) fn remove(&mut self, sid: SessionId, conn: u64, reason: &str) {
        if self.members.get(&sid).is_some_and(|m| m.conn == conn) {
            self.leave(sid, reason);
            self.members.remove(&sid);
        }
    }
}

/// A signaling event as a text message.
pub(super) fn encode(ev: &SignalingEvent) -> Utf8Bytes {
    serde_json::to_string(ev)
        .unwrap_or_else(|_| r#"{"type":"error","code":"internal","error":"encoding"}"#.into())
        .into()
}
