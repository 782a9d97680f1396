//! `GET /api/webrtc/config?deviceType=mobile|desktop`: the ICE server configuration of seed
//! 001 `getWebRTCConfig` (PROTOCOL.md §13.8), shaped by
//! [`p3_lanes::core::p2p::ice::WebRtcConfig`]: an `RTCConfiguration` a page passes to
//! `new RTCPeerConnection()` as is.
//!
//! STUN URLs from `--stun` / `STUN_URLS` (default: the seed's two; empty allowed); a TURN entry
//! with the URLs of `--turn-url` / `TURN_URLS` and either
//! - ephemeral TURN REST credentials ([`crate::auth::turn`]) when `--turn-secret` /
//!   `TURN_SECRET` is set: under `--room-access open` to anyone, otherwise only to a session
//!   that is a member of a room it is (still) admitted to, named by `?sessionId=<id>` and
//!   proven by `Authorization: Bearer <secret>` (others get the STUN servers only);
//! - or the fixed `TURN_USERNAME` / `TURN_CREDENTIAL` (seed 001), to anyone.
//!
//! The answer is `Cache-Control: no-store` (it may carry TURN credentials).

use crate::error::AppError;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::frame::SessionId;
use p3_lanes::core::p2p::ice::DeviceType;
use std::collections::HashMap;
use std::sync::Arc;

/// `GET /api/webrtc/config`. `deviceType` is `mobile` or `desktop` (absent: desktop).
///
/// Errors: 400 `invalid_argument` for another `deviceType`.
pub async fn config(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, AppError> {
    let device = match query.get("deviceType").map(String::as_str) {
        None | Some("desktop") => DeviceType::Desktop,
        Some("mobile") => DeviceType::Mobile,
        Some(other) => {
            return Err(AppError::new(
                axum::http::StatusCode::BAD_REQUEST,
                ErrorCode::InvalidArgument,
                format!("deviceType must be mobile or desktop, got {other:?}"),
            ))
        }
    };
    let mut ice = state.config().ice_settings();
    if let Some((secret, ttl_s)) = state.auth().turn() {
        let sid = query
            .get("sessionId")
            .and_then(|s| s.parse::<SessionId>().ok())
            .filter(|&sid| crate::auth::bearer_matches(&state, sid, &headers));
        let now = crate::now_ms();
        ice.turn_credentials = crate::auth::turn_user(&state, sid, now)
            .map(|user| crate::auth::turn::credentials(secret, &user, now / 1000, ttl_s));
    }
    let body = ice.web_rtc_config(device);
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    ))
}
