//! The ICE server configuration a server hands out (seed 001 "ICE/TURN Configuration",
//! `getWebRTCConfig`), served by server-stub at `GET /api/webrtc/config?deviceType=mobile|desktop`
//! (PROTOCOL.md §13.8). The JSON is an `RTCConfiguration` a page can pass to
//! `new RTCPeerConnection(config)` as is, plus `codecPreferences` (not an `RTCConfiguration`
//! member: browsers ignore it there; apply it with `RTCRtpTransceiver.setCodecPreferences`).
//!
//! Dropped from the seed: `sdpSemantics: 'unified-plan'`, a Chrome-only legacy member (Plan B
//! was removed in Chrome 96; unified plan is the only behaviour of every current browser).

use serde::{Deserialize, Serialize};

/// The seed's default STUN servers.
pub const DEFAULT_STUN_URLS: [&str; 2] = [
    "stun:stun.l.google.com:19302",
    "stun:stun1.l.google.com:19302",
];

/// The seed's TURN URLs (used when TURN credentials are configured and no other URLs are).
pub const DEFAULT_TURN_URLS: [&str; 2] = [
    "turn:turn.replit.dev:3478?transport=udp",
    "turn:turn.replit.dev:3478?transport=tcp",
];

/// Which device asks: mobile gets a lower Opus sample rate (seed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceType {
    /// `opus/24000/2`.
    Mobile,
    /// `opus/48000/2` (the default).
    Desktop,
}

/// `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// One URL (STUN entries, as in the seed) or several (TURN).
    pub urls: IceUrls,
    /// TURN user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential (password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `RTCIceServer.urls`: a string or a list of strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IceUrls {
    /// One URL.
    One(String),
    /// Several URLs.
    Many(Vec<String>),
}

/// Preferred codecs, e.g. `{"audio": "opus/48000/2"}` (`name/clockRate/channels`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodecPreferences {
    /// Audio codec.
    pub audio: String,
}

/// The `GET /api/webrtc/config` body: `{iceServers, codecPreferences, bundlePolicy:
/// "max-bundle", rtcpMuxPolicy: "require", iceTransportPolicy: "all"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebRtcConfig {
    /// STUN entries (one per URL), then the TURN entry if configured.
    pub ice_servers: Vec<IceServer>,
    /// Codec preferences by device type.
    pub codec_preferences: CodecPreferences,
    /// `"max-bundle"`.
    pub bundle_policy: String,
    /// `"require"`.
    pub rtcp_mux_policy: String,
    /// `"all"`.
    pub ice_transport_policy: String,
}

/// What the server is configured with: STUN URLs, and TURN URLs with credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceSettings {
    /// STUN URLs; may be empty (loopback tests need none).
    pub stun_urls: Vec<String>,
    /// TURN URLs.
    pub turn_urls: Vec<String>,
    /// TURN user name and credential; the TURN entry is sent only when both are set and
    /// `turn_urls` is not empty.
    pub turn_credentials: Option<(String, String)>,
}

impl IceSettings {
    /// seed 001 `getWebRTCConfig(deviceType, turnEnabled)`, with TURN enabled exactly when
    /// credentials (and URLs) are configured.
    pub fn web_rtc_config(&self, device: DeviceType) -> WebRtcConfig {
        let mut ice_servers: Vec<IceServer> = self
            .stun_urls
            .iter()
            .map(|u| IceServer {
                urls: IceUrls::One(u.clone()),
                username: None,
                credential: None,
            })
            .collect();
        if let Some((user, credential)) = &self.turn_credentials {
            if !self.turn_urls.is_empty() {
                ice_servers.push(IceServer {
                    urls: IceUrls::Many(self.turn_urls.clone()),
                    username: Some(user.clone()),
                    credential: Some(credential.clone()),
                });
            }
        }
        WebRtcConfig {
            ice_servers,
            codec_preferences: CodecPreferences {
                audio: match device {
                    DeviceType::Mobile => "opus/24000/2",
                    DeviceType::Desktop => "opus/48000/2",
                }
                .to_owned(),
            },
            bundle_policy: "max-bundle".to_owned(),
            rtcp_mux_policy: "require".to_owned(),
            ice_transport_policy: "all".to_owned(),
        }
    }
}

/// Splits a comma-separated URL list (flags and environment), trimming blanks; `""` is the
/// empty list.
pub fn parse_url_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seed_shape_with_and_without_turn() {
        let mut s = IceSettings {
            stun_urls: DEFAULT_STUN_URLS.map(String::from).to_vec(),
            turn_urls: DEFAULT_TURN_URLS.map(String::from).to_vec(),
            turn_credentials: None,
        };
        let c = serde_json::to_value(s.web_rtc_config(DeviceType::Desktop)).unwrap();
        assert_eq!(
            c,
            json!({"iceServers": [{"urls": "stun:stun.l.google.com:19302"}, {"urls": "stun:stun1.l.google.com:19302"}],
                   "codecPreferences": {"audio": "opus/48000/2"}, "bundlePolicy": "max-bundle",
                   "rtcpMuxPolicy": "require", "iceTransportPolicy": "all"})
        );
        s.turn_credentials = Some(("u".into(), "p".into()));
        let c = s.web_rtc_config(DeviceType::Mobile);
        assert_eq!(c.codec_preferences.audio, "opus/24000/2");
        assert_eq!(
            serde_json::to_value(&c.ice_servers[2]).unwrap(),
            json!({"urls": DEFAULT_TURN_URLS, "username": "u", "credential": "p"})
        );
        let back: WebRtcConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(parse_url_list(" a, ,b "), vec!["a", "b"]);
        assert!(parse_url_list("").is_empty());
    }
}
