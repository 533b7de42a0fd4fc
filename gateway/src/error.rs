//! The one error type of the HTTP API: OpenAI's envelope
//! `{"error":{"message","type","param","code"}}` with the right status, plus
//! `Retry-After` and `WWW-Authenticate` where they apply.
//!
//! Client-facing text is always safe to show; internal detail goes to the log, not the body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shared::event::JobError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// A 400 naming the offending field and a stable code.
    pub fn invalid(param: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
            .with_param(param)
            .with_code(code)
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message).with_code("invalid_api_key")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message).with_code("not_found")
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e =
            Self::new(StatusCode::SERVICE_UNAVAILABLE, message).with_code("service_unavailable");
        e.retry_after = Some(retry_after);
        e
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            .with_code("internal_error")
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// OpenAI's `type` for a status.
    pub fn error_type(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 405 | 413 | 415 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.error_type(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<&JobError> for ApiError {
    fn from(e: &JobError) -> Self {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_GATEWAY);
        ApiError {
            status,
            message: e.message.clone(),
            param: None,
            code: Some(e.code.clone()),
            retry_after: e.retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
