//! RFC 6749 §5.2 error responses: one type every grant and endpoint returns, turned into a
//! response in one place.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    /// The RFC 6749 / RFC 8628 error code (`invalid_grant`, `slow_down`, ...).
    pub error: &'static str,
    pub description: String,
    /// Answer with `WWW-Authenticate: Basic` (client authentication by Basic failed).
    pub basic_challenge: bool,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError { status, error, description: description.into(), basic_challenge: false }
    }
    /// 400 with `error` (most grant errors).
    pub fn bad(error: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, description)
    }
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::bad("invalid_request", description)
    }
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::bad("invalid_grant", description)
    }
    pub fn invalid_client(basic_challenge: bool) -> Self {
        OAuthError {
            basic_challenge,
            ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed")
        }
    }
    /// The store failed: the client should try again, and keep what it holds.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "authorization server: store error");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again")
    }
    pub fn server_error(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "authorization server: internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "try again later")
    }
}

impl From<drover_core::Error> for OAuthError {
    fn from(e: drover_core::Error) -> Self {
        OAuthError::unavailable(e)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
            Json(serde_json::json!({"error": self.error, "error_description": self.description})),
        )
            .into_response();
        if self.basic_challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"drover\""));
        }
        resp
    }
}
