//! What this node measures (seed 002 "Node Metrics": bytes served, uptime, peers connected;
//! issue 14 "Pulse"): per-lane message and byte counters kept in atomics where the traffic
//! passes, gauges read from the registry, the signaling hub and the pulse hub when asked, one
//! [`Snapshot`] that both `GET /metrics` (Prometheus text, through a render-only
//! `metrics-exporter-prometheus` recorder) and the pulse stream's `metrics` message show.
//!
//! The recorder is this node's own (not the process-global one of the `metrics` macros): every
//! [`crate::AppState`] has its own figures, so several servers in one process (tests, a
//! cluster's in-process nodes) never mix them. Handles are registered once; a render copies
//! the snapshot into them and formats the text.

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use p3_lanes::core::lane::Lane;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One lane's traffic counters.
#[derive(Debug, Default)]
struct LaneCounters {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
}

/// One lane's figures in a [`Snapshot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LaneFigures {
    /// Lane id, 1..=8.
    pub lane: u8,
    /// Lane name as in the lane registry (`Control`, `Messaging`, ...; PROTOCOL.md §4).
    pub name: &'static str,
    /// Frames received from clients on this lane that passed its rate limit (WebSocket frames,
    /// Control messages included, and `POST`s).
    pub messages_in: u64,
    /// Their bytes: whole frames (WebSocket) or bodies (`POST`).
    pub bytes_in: u64,
    /// Relayed messages queued for a receiver on this lane (one per receiver).
    pub messages_out: u64,
    /// Their payload bytes in each receiver's encoding.
    pub bytes_out: u64,
}

/// Everything this node measures at one instant: the body of the pulse stream's `metrics`
/// message and the source of `GET /metrics`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Time since this server started, s.
    pub uptime_s: u64,
    /// Sessions held (expired ones not yet swept included).
    pub sessions: u64,
    /// Lane rooms with at least one member.
    pub rooms: u64,
    /// Members of all lane rooms.
    pub members: u64,
    /// Open WebSockets: sessions', the signaling server's and the pulse stream's.
    pub websockets: u64,
    /// Peers connected to the seed 001 signaling server (authenticated sockets).
    pub signaling_peers: u64,
    /// Open pulse stream connections.
    pub pulse_connections: u64,
    /// Per lane, lanes 1..=8 in order.
    pub lanes: Vec<LaneFigures>,
    /// With `--redis-url` only: the node's Redis figures (PROTOCOL.md §18.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<crate::cluster::RedisFigures>,
}

/// The Prometheus side: the recorder, its handle and the registered series.
struct Exporter {
    handle: PrometheusHandle,
    uptime: Gauge,
    sessions: Gauge,
    rooms: Gauge,
    members: Gauge,
    websockets: Gauge,
    signaling_peers: Gauge,
    pulse_connections: Gauge,
    /// Per lane: messages in, bytes in, messages out, bytes out.
    lanes: Vec<[Counter; 4]>,
    /// Registers the Redis series on the first snapshot that has them.
    recorder: PrometheusRecorder,
    /// `p3_room_stream_lag_entries`, `p3_room_stream_lag_seconds` (with Redis).
    stream_lag: Option<[Gauge; 2]>,
    /// `p3_redis_rtt_seconds` (once a `PING` was answered).
    redis_rtt: Option<Gauge>,
}

/// This node's measurements (see the module docs).
pub struct NodeMetrics {
    started: Instant,
    lanes: [LaneCounters; 8],
    /// Held while a render copies a snapshot in and formats it (two renders at once would
    /// interleave their copies).
    exporter: Mutex<Exporter>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

const META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

fn gauge(
    r: &PrometheusRecorder,
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
) -> Gauge {
    r.describe_gauge(name.into(), unit, SharedString::const_str(help));
    r.register_gauge(&Key::from_static_name(name), &META)
}

impl NodeMetrics {
    /// Figures starting now, all counters at 0.
    pub fn new() -> NodeMetrics {
        let r = PrometheusBuilder::new().build_recorder();
        let counters: [(&'static str, Unit, &'static str); 4] = [
            (
                "p3_lane_messages_in_total",
                Unit::Count,
                "Frames received from clients on the lane (WebSocket frames and POSTs) that passed its rate limit.",
            ),
            (
                "p3_lane_bytes_in_total",
                Unit::Bytes,
                "Bytes of those frames (WebSocket) or bodies (POST).",
            ),
            (
                "p3_lane_messages_out_total",
                Unit::Count,
                "Relayed messages queued for a receiver on the lane, one per receiver.",
            ),
            (
                "p3_lane_bytes_out_total",
                Unit::Bytes,
                "Payload bytes of those messages in each receiver's encoding.",
            ),
        ];
        for (name, unit, help) in counters {
            r.describe_counter(name.into(), Some(unit), SharedString::const_str(help));
        }
        let lanes = Lane::ALL
            .iter()
            .map(|l| {
                counters.map(|(name, _, _)| {
                    let key = Key::from_parts(name, vec![Label::new("lane", l.name())]);
                    r.register_counter(&key, &META)
                })
            })
            .collect();
        let exporter = Exporter {
            uptime: gauge(
                &r,
                "p3_uptime_seconds",
                Some(Unit::Seconds),
                "Time since the server started.",
            ),
            sessions: gauge(&r, "p3_sessions", None, "Sessions held."),
            rooms: gauge(&r, "p3_rooms", None, "Lane rooms with at least one member."),
            members: gauge(&r, "p3_room_members", None, "Members of all lane rooms."),
            websockets: gauge(
                &r,
                "p3_websockets",
                None,
                "Open WebSockets: sessions', the signaling server's and the pulse stream's.",
            ),
            signaling_peers: gauge(
                &r,
                "p3_signaling_peers",
                None,
                "Peers connected to the signaling server (authenticated sockets).",
            ),
            pulse_connections: gauge(
                &r,
                "p3_pulse_connections",
                None,
                "Open pulse stream connections.",
            ),
            lanes,
            handle: r.handle(),
            recorder: r,
            stream_lag: None,
            redis_rtt: None,
        };
        NodeMetrics {
            started: Instant::now(),
            lanes: Default::default(),
            exporter: Mutex::new(exporter),
        }
    }

    fn lane(&self, lane: Lane) -> &LaneCounters {
        &self.lanes[usize::from(lane.id() - 1)]
    }

    /// A frame of `bytes` received from a client on `lane` (after its rate limit).
    pub fn received(&self, lane: Lane, bytes: usize) {
        let c = self.lane(lane);
        c.messages_in.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `messages` relayed messages of `bytes` in all queued for receivers on `lane`.
    pub fn sent(&self, lane: Lane, messages: u64, bytes: u64) {
        if messages == 0 {
            return;
        }
        let c = self.lane(lane);
        c.messages_out.fetch_add(messages, Ordering::Relaxed);
        c.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Time since start, s.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The per-lane figures now.
    pub fn lane_figures(&self) -> Vec<LaneFigures> {
        Lane::ALL
            .iter()
            .map(|&l| {
                let c = self.lane(l);
                LaneFigures {
                    lane: l.id(),
                    name: l.name(),
                    messages_in: c.messages_in.load(Ordering::Relaxed),
                    bytes_in: c.bytes_in.load(Ordering::Relaxed),
                    messages_out: c.messages_out.load(Ordering::Relaxed),
                    bytes_out: c.bytes_out.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// `snap` in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut guard = self.exporter.lock().unwrap_or_else(|p| p.into_inner());
        let e = &mut *guard;
        e.uptime.set(snap.uptime_s as f64);
        e.sessions.set(snap.sessions as f64);
        e.rooms.set(snap.rooms as f64);
        e.members.set(snap.members as f64);
        e.websockets.set(snap.websockets as f64);
        e.signaling_peers.set(snap.signaling_peers as f64);
        e.pulse_connections.set(snap.pulse_connections as f64);
        for (f, [mi, bi, mo, bo]) in snap.lanes.iter().zip(&e.lanes) {
            mi.absolute(f.messages_in);
            bi.absolute(f.bytes_in);
            mo.absolute(f.messages_out);
            bo.absolute(f.bytes_out);
        }
        if let Some(redis) = snap.redis {
            let r = &e.recorder;
            let lag = e.stream_lag.get_or_insert_with(|| {
                [
                    gauge(
                        r,
                        "p3_room_stream_lag_entries",
                        Some(Unit::Count),
                        "Entries written to the streams of the rooms this node reads that it has not read yet (at most 1024 rooms, probed every second).",
                    ),
                    gauge(
                        r,
                        "p3_room_stream_lag_seconds",
                        Some(Unit::Seconds),
                        "Age of the oldest entry of the node's last room stream read, when read (0: nothing new).",
                    ),
                ]
            });
            lag[0].set(redis.stream_lag_entries as f64);
            lag[1].set(redis.stream_lag_ms as f64 / 1000.0);
            if let Some(us) = redis.rtt_us {
                let r = &e.recorder;
                let rtt = e.redis_rtt.get_or_insert_with(|| {
                    gauge(
                        r,
                        "p3_redis_rtt_seconds",
                        Some(Unit::Seconds),
                        "Round trip of the last PING to Redis on the node's command connection (every second).",
                    )
                });
                rtt.set(us as f64 / 1e6);
            }
        }
        e.handle.render()
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}
