//! `GET /api/webrtc/config?deviceType=mobile|desktop`: the ICE server configuration of seed
//! 001 `getWebRTCConfig` (PROTOCOL.md §13.8), shaped by
//! [`p3_lanes::core::p2p::ice::WebRtcConfig`]: an `RTCConfiguration` a page passes to
//! `new RTCPeerConnection()` as is.
//!
//! STUN URLs from `--stun` / `STUN_URLS` (default: the seed's two; empty allowed); a TURN entry
//! only when `TURN_USERNAME` and `TURN_CREDENTIAL` are set, with the URLs of `--turn-url` /
//! `TURN_URLS`. The answer is `Cache-Control: no-store` (it may carry TURN credentials).

use crate::error::AppError;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use p3_lanes::core::error::ErrorCode;
use p3_lanes::core::p2p::ice::DeviceType;
use std::collections::HashMap;
use std::sync::Arc;

/// `GET /api/webrtc/config`. `deviceType` is `mobile` or `desktop` (absent: desktop).
///
/// Errors: 400 `invalid_argument` for another `deviceType`.
pub async fn config(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
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
    let body = state.config().ice_settings().web_rtc_config(device);
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(body),
    ))
}
