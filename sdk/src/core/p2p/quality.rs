//! Call-quality classes of seed 001 "Call Quality Monitoring" (`assessNetworkQuality`) and the
//! `StatsData` shape the driver builds from `RTCPeerConnection.getStats()`.
//!
//! Classes (RTT in ms, packet loss in %), first match wins, as in the seed:
//! - `excellent`: rtt < 100 and loss < 1
//! - `good`: rtt < [`RTT_THRESHOLD_MS`] (300) and loss < [`PACKET_LOSS_THRESHOLD_PCT`] (5)
//! - `poor`: rtt < 500 and loss < 10
//! - `critical`: otherwise (also for NaN inputs)
//!
//! [`crate::core::p2p::tier`] counts a peer link as usable unless it is `critical`.

use serde::{Deserialize, Serialize};

/// Seed 001 `RTT_THRESHOLD` (ms).
pub const RTT_THRESHOLD_MS: f64 = 300.0;
/// Seed 001 `PACKET_LOSS_THRESHOLD` (%).
pub const PACKET_LOSS_THRESHOLD_PCT: f64 = 5.0;

/// Seed 001 quality class. Serialized lowercase (`"excellent"`, ...). Ordered best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkQuality {
    /// rtt < 100 ms and loss < 1 %.
    Excellent,
    /// rtt < 300 ms and loss < 5 %.
    Good,
    /// rtt < 500 ms and loss < 10 %.
    Poor,
    /// Anything worse; the link is not counted as usable.
    Critical,
}

impl NetworkQuality {
    /// Whether a link of this class counts for the webrtc tier (not `critical`).
    pub fn usable(self) -> bool {
        self != NetworkQuality::Critical
    }
}

/// Seed 001 `assessNetworkQuality` on raw numbers: `rtt_ms` (ms), `packet_loss_pct` (%).
/// NaN compares false everywhere, so it lands in `critical`.
pub fn assess_network_quality(rtt_ms: f64, packet_loss_pct: f64) -> NetworkQuality {
    if rtt_ms < 100.0 && packet_loss_pct < 1.0 {
        NetworkQuality::Excellent
    } else if rtt_ms < RTT_THRESHOLD_MS && packet_loss_pct < PACKET_LOSS_THRESHOLD_PCT {
        NetworkQuality::Good
    } else if rtt_ms < 500.0 && packet_loss_pct < 10.0 {
        NetworkQuality::Poor
    } else {
        NetworkQuality::Critical
    }
}

/// Seed 001 `StatsData`, JSON in camelCase:
/// `{rtt, jitter, packetLoss, bitrate, codec, iceState, timestamp}`. Published on the
/// Telemetry lane by the driver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsData {
    /// Round-trip time (ms).
    pub rtt: f64,
    /// Packet jitter (ms).
    pub jitter: f64,
    /// Packet loss (%).
    pub packet_loss: f64,
    /// Current bitrate (bits/s).
    pub bitrate: f64,
    /// Active codec (empty for data-only connections).
    #[serde(default)]
    pub codec: String,
    /// ICE connection state (`"new"`, `"checking"`, `"connected"`, ...).
    pub ice_state: String,
    /// When the stats were sampled (ms, driver clock).
    pub timestamp: f64,
}

impl StatsData {
    /// [`assess_network_quality`] of these stats; an ICE state other than `connected` or
    /// `completed` is `critical` whatever the numbers say.
    pub fn quality(&self) -> NetworkQuality {
        match self.ice_state.as_str() {
            "connected" | "completed" => assess_network_quality(self.rtt, self.packet_loss),
            _ => NetworkQuality::Critical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_thresholds() {
        use NetworkQuality::*;
        assert_eq!(assess_network_quality(50.0, 0.5), Excellent);
        assert_eq!(assess_network_quality(100.0, 0.5), Good);
        assert_eq!(assess_network_quality(50.0, 1.0), Good);
        assert_eq!(assess_network_quality(299.0, 4.9), Good);
        assert_eq!(assess_network_quality(300.0, 0.0), Poor);
        assert_eq!(assess_network_quality(10.0, 5.0), Poor);
        assert_eq!(assess_network_quality(499.0, 9.9), Poor);
        assert_eq!(assess_network_quality(500.0, 0.0), Critical);
        assert_eq!(assess_network_quality(10.0, 10.0), Critical);
        assert_eq!(assess_network_quality(f64::NAN, 0.0), Critical);
        assert!(Poor.usable() && !Critical.usable());
    }

    #[test]
    fn stats_json_is_camel_case() {
        let s = StatsData {
            rtt: 42.0,
            jitter: 3.0,
            packet_loss: 0.2,
            bitrate: 64000.0,
            codec: "opus".into(),
            ice_state: "connected".into(),
            timestamp: 1000.0,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["packetLoss"], 0.2);
        assert_eq!(v["iceState"], "connected");
        let back: StatsData = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        assert_eq!(s.quality(), NetworkQuality::Excellent);
        let failed = StatsData {
            ice_state: "failed".into(),
            ..s
        };
        assert_eq!(failed.quality(), NetworkQuality::Critical);
        assert_eq!(
            serde_json::to_string(&NetworkQuality::Good).unwrap(),
            "\"good\""
        );
    }
}
