//! API errors: every response is built from the one public table (`drover_types::ErrorCode`:
//! code, HTTP status, CLI exit code). The message shown to the caller is kept apart from the
//! cause, which is logged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drover_types::{ApiError as WireError, ApiErrorBody, ErrorCode};

/// Seconds a caller should wait before retrying after `unavailable`.
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "authentication required")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn unavailable() -> Self {
        Self::new(ErrorCode::Unavailable, "the orchestrator cannot reach its database; try again")
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the orchestrator log")
    }
}

impl From<drover_core::Error> for ApiError {
    fn from(e: drover_core::Error) -> Self {
        use drover_core::Error as E;
        let code = match &e {
            E::NotFound(_) => ErrorCode::NotFound,
            E::Conflict(_) => ErrorCode::Conflict,
            E::InvalidState(_) => ErrorCode::InvalidState,
            E::Invalid(_) => ErrorCode::InvalidSpec,
            E::BadRequest(_) => ErrorCode::InvalidRequest,
            E::Forbidden(_) => ErrorCode::Forbidden,
            E::TooLarge(_) => ErrorCode::TooLarge,
            E::Quota(_) => ErrorCode::QuotaExceeded,
            E::Unavailable(cause) => {
                tracing::error!(error = %cause, "the database is unreachable");
                return ApiError::unavailable();
            }
            E::Store(_) => return ApiError::internal(e),
        };
        ApiError::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code;
        let body = ApiErrorBody { error: WireError { code: code.as_str().to_string(), message: self.message } };
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        match code {
            ErrorCode::Unauthorized => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"drover\", charset=\"UTF-8\""),
                );
            }
            ErrorCode::InvalidToken => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"drover\", error=\"invalid_token\""),
                );
            }
            ErrorCode::Unavailable => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        resp
    }
}

/// JSON body extractor whose rejections are API errors.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}
