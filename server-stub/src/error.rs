//! The one place that decides what an HTTP error looks like on the wire:
//! `{"error": "<human text>", "code": "<ErrorCode>"}` with a 4xx (or, for our own bugs, 500)
//! status. Rejections of axum's extractors are mapped into the same shape, and internal
//! details are logged, never sent.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use p3_lanes::core::auth::AuthReason;
use p3_lanes::core::error::{ErrorCode, WireError};
use p3_lanes::core::frame::SessionId;
use serde::de::DeserializeOwned;

/// An HTTP error answer: a status and a [`WireError`] body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    status: StatusCode,
    body: WireError,
    /// `auth_invalid`'s `reason`, sent next to `error` and `code`.
    reason: Option<AuthReason>,
}

/// The status for a coded error raised by our own logic ([`ErrorCode::http_status`]) (extractor rejections keep axum's
/// status, e.g. 415 for a wrong content type).
pub fn status_for(code: ErrorCode) -> StatusCode {
    // The one mapping lives in the core ([`ErrorCode::http_status`]); its numbers are valid.
    StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_REQUEST)
}

impl AppError {
    /// An error with an explicit status.
    pub fn new(status: StatusCode, code: ErrorCode, error: impl Into<String>) -> AppError {
        AppError {
            status,
            body: WireError::new(code, error),
            reason: None,
        }
    }

    /// 401 `auth_invalid` with its `reason` (a handshake `auth` that did not verify).
    pub fn auth_invalid(reason: AuthReason, error: impl Into<String>) -> AppError {
        AppError {
            reason: Some(reason),
            ..AppError::new(StatusCode::UNAUTHORIZED, ErrorCode::AuthInvalid, error)
        }
    }

    /// The `reason` of an `auth_invalid` error.
    pub fn reason(&self) -> Option<AuthReason> {
        self.reason
    }

    /// 400 `bad_request`.
    pub fn bad_request(error: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, error)
    }

    /// 404 `session_not_found` for `sid` (unknown, expired or deleted).
    pub fn session_not_found(sid: SessionId) -> AppError {
        AppError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::SessionNotFound,
            format!("session {sid} not found (unknown, expired or deleted)"),
        )
    }

    /// 500 `internal`: `detail` is logged, the client only learns that something failed.
    pub fn internal(detail: impl std::fmt::Display) -> AppError {
        tracing::error!(%detail, "internal error");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body.
    pub fn body(&self) -> &WireError {
        &self.body
    }
}

impl From<WireError> for AppError {
    fn from(body: WireError) -> AppError {
        AppError {
            status: status_for(body.code),
            body,
            reason: None,
        }
    }
}

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> AppError {
        // A body that parses but has the wrong shape is as much a bad request as one that does
        // not parse: both are 400 (axum would say 422 for the first).
        let status = match r {
            JsonRejection::JsonDataError(_) => StatusCode::BAD_REQUEST,
            _ => r.status(),
        };
        AppError::new(status, ErrorCode::BadRequest, r.body_text())
    }
}

impl From<PathRejection> for AppError {
    fn from(r: PathRejection) -> AppError {
        if r.status().is_server_error() {
            return AppError::internal(r.body_text());
        }
        AppError::new(r.status(), ErrorCode::BadRequest, r.body_text())
    }
}

impl From<WebSocketUpgradeRejection> for AppError {
    fn from(r: WebSocketUpgradeRejection) -> AppError {
        AppError::new(r.status(), ErrorCode::BadRequest, r.body_text())
    }
}

impl IntoResponse for AppError {
    /// The status and JSON body; a 401 also says which credentials it wants
    /// (`WWW-Authenticate: Bearer`, RFC 6750 §3).
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = match self.reason {
            Some(reason) => (
                self.status,
                Json(serde_json::json!({
                    "error": self.body.error,
                    "code": self.body.code,
                    "reason": reason,
                })),
            )
                .into_response(),
            None => (self.status, Json(self.body)).into_response(),
        };
        if unauthorized {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// `axum::Json` whose rejection is an [`AppError`] (`bad_request`, status 400, 413 or 415).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

/// The `{sid}` path parameter as a [`SessionId`]; a malformed id is 400 `bad_request`.
#[derive(Debug, Clone, Copy)]
pub struct SessionPath(pub SessionId);

impl<S: Send + Sync> FromRequestParts<S> for SessionPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state).await?;
        text.parse::<SessionId>()
            .map(SessionPath)
            .map_err(|e| AppError::bad_request(e.to_string()))
    }
}
