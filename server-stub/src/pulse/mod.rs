//! Pulse: node metrics and the operators' stream (seed 001 "Pulse WebSocket", seed 002 "Node
//! Metrics"; issue 14; PROTOCOL.md §18).
//!
//! | module | implements |
//! | --- | --- |
//! | [`metrics`] | what this node measures, as one [`Snapshot`]; `GET /metrics` in Prometheus text |
//! | [`stream`] | `/pulse/stream`: node registration, the periodic `metrics` broadcast, per-connection rate limit |
//!
//! Both are admin surfaces: they answer loopback clients with the admin token only
//! ([`crate::pwa::admin_allowed`]), except `/metrics` with `--metrics-public`. In a cluster
//! (`--redis-url`, PROTOCOL.md §18.2) [`spawn_ticker`] also publishes this node's `metrics`
//! message on [`crate::cluster::METRICS_CHANNEL`], and the ones heard from other nodes are fed
//! into [`Pulse::broadcast`] (`state::cluster`); `/metrics` adds the node's Redis figures.

pub mod metrics;
pub mod stream;

pub use metrics::{LaneFigures, NodeMetrics, Snapshot};

use crate::error::AppError;
use crate::pwa::admin_allowed;
use crate::state::AppState;
use axum::extract::rejection::ExtensionRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The Prometheus text format's content type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A node's pulse side: its metrics and the stream's connections.
#[derive(Debug)]
pub struct Pulse {
    metrics: NodeMetrics,
    hub: stream::Hub,
    node_id: String,
}

impl Pulse {
    /// Pulse of a node starting now, with a random node id (`node-` and 16 hex digits).
    pub fn new() -> Pulse {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the OS random number generator is available");
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Pulse {
            metrics: NodeMetrics::new(),
            hub: stream::Hub::new(),
            node_id: format!("node-{hex}"),
        }
    }

    /// Pulse of a node starting now with node id `node_id` (a cluster node's name).
    pub fn with_node_id(node_id: String) -> Pulse {
        Pulse {
            node_id,
            ..Pulse::new()
        }
    }

    /// This node's metrics.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// This server's own node id (the `serverNodeId` of `registered`, `nodeId` of `metrics`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Queues `text` (one `metrics` message) for every registered pulse connection; returns
    /// how many connections listen. A connection that has not read the previous ones skips to
    /// the newest it can hold ([`stream::BROADCAST_BACKLOG`]).
    pub fn broadcast(&self, text: Arc<str>) -> usize {
        self.hub.broadcast(text)
    }

    /// The pulse stream's connections.
    pub(crate) fn hub(&self) -> &stream::Hub {
        &self.hub
    }

    /// This node's `metrics` message now (PROTOCOL.md §18.2).
    pub fn metrics_message(&self, state: &AppState) -> String {
        stream::metrics_message(state, &self.snapshot(state))
    }

    /// Everything this node measures now. Takes the registry lock for an O(rooms) count.
    pub fn snapshot(&self, state: &AppState) -> Snapshot {
        let census = state.registry().census();
        Snapshot {
            uptime_s: self.metrics.uptime_s(),
            sessions: census.sessions as u64,
            rooms: census.rooms as u64,
            members: census.members as u64,
            websockets: state.open_sockets() as u64,
            signaling_peers: state.signaling().peers() as u64,
            pulse_connections: self.hub.connections() as u64,
            lanes: self.metrics.lane_figures(),
            redis: state.cluster().map(|c| c.figures()),
        }
    }
}

impl Default for Pulse {
    fn default() -> Self {
        Pulse::new()
    }
}

/// `GET /metrics`: this node's figures in the Prometheus text format, `Cache-Control:
/// no-store`. An admin route (loopback client and `Authorization: Bearer <admin token>`)
/// unless `--metrics-public`.
///
/// Errors: 403 `forbidden`, 401 `unauthorized` ([`admin_allowed`]).
pub async fn metrics_handler(
    State(state): State<Arc<AppState>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if !state.config().metrics_public {
        let peer = peer.ok().map(|ConnectInfo(addr)| addr);
        admin_allowed(&state, peer, &headers)?;
    }
    let pulse = state.pulse();
    let body = pulse.metrics().render(&pulse.snapshot(&state));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

/// Broadcasts this node's `metrics` message to the registered pulse connections every
/// `--pulse-interval-ms` (nothing is built while none listens). In a cluster it is also
/// published to the other nodes every interval ([`crate::cluster::METRICS_CHANNEL`]; their
/// operators may listen), with no lock held. Aborted by [`crate::serve`].
pub fn spawn_ticker(state: Arc<AppState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = Duration::from_millis(state.config().pulse_interval_ms);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let pulse = state.pulse();
            let cluster = state.cluster();
            if pulse.hub().listeners() == 0 && cluster.is_none() {
                continue;
            }
            let text: Arc<str> = pulse.metrics_message(&state).into();
            if pulse.hub().listeners() > 0 {
                pulse.broadcast(text.clone());
            }
            if let Some(c) = cluster {
                if let Err(e) = c.publish_metrics(&text).await {
                    tracing::debug!(error = %e, "pulse metrics not published to the cluster");
                }
            }
        }
    })
}
