//! The one error type of every handler. It renders SPEC §4's error object
//! `{"error":{"type","code","message","request_id"}}` and logs server faults without leaking them.

use axum::{
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;

use crate::{
    refusal::{Refusal, RefusalKind},
    request_id::RequestId,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is unreadable or a field is wrong; `code` names the problem.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 422: well-formed, but the content cannot be acted on (unknown template, opted-out contact).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 415: a body that is not declared `application/json` (or none where one is required).
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// 503: the server is at capacity for this kind of work; retry after `retry_after_secs`.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// Displays the database's own message (a deadlock, a lost connection) for the log; the
    /// client's body never carries it (see `body`).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthorized {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str) -> Self {
        Self::NotFound { what }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::Conflict { code, .. }
            | Self::TooManyRequests { code, .. }
            | Self::Unavailable { code, .. } => code,
            Self::NotFound { .. } | Self::NoRoute(_) => "not_found",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Database(_) | Self::Internal(_) => "internal_error",
        }
    }

    pub fn kind(&self) -> &'static str {
        match self.status().as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The body as SPEC §4 shows it; `request_id` is filled in by the request-id layer.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        json!({"error": {
            "type": self.kind(),
            "code": self.code(),
            "message": match self {
                // The cause is for the log only; the client gets a generic message.
                Self::Database(_) => "database error".to_string(),
                Self::Internal(_) => "internal error".to_string(),
                _ => self.to_string(),
            },
            "request_id": request_id,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            match &self {
                ApiError::Database(e) => tracing::error!(error = %e, "database error"),
                ApiError::Internal(e) => {
                    tracing::error!(error = format!("{e:#}"), "internal error")
                }
                _ => {}
            }
        }
        let request_id = RequestId::current();
        let mut response = (self.status(), Json(self.body(&request_id))).into_response();
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        }
        | ApiError::Unavailable {
            retry_after_secs, ..
        } = self
        {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_body", e.body_text()),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge
            }
            other => ApiError::bad_request("invalid_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", rejection.body_text())
    }
}

/// The HTTP edge's reading of a domain refusal: the kind picks the status, the code and message
/// pass through unchanged.
impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let Refusal {
            kind,
            code,
            message,
        } = refusal;
        match kind {
            RefusalKind::Invalid => ApiError::BadRequest { code, message },
            RefusalKind::Unacceptable => ApiError::Unprocessable { code, message },
            RefusalKind::Conflict => ApiError::Conflict { code, message },
            RefusalKind::NotAllowed => ApiError::Forbidden { code, message },
            RefusalKind::Busy { retry_after_secs } => ApiError::TooManyRequests {
                code,
                message,
                retry_after_secs,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_their_code_and_message_and_get_their_status() {
        let cases = [
            (Refusal::invalid("invalid_phone", "bad"), 400),
            (Refusal::unacceptable("unknown_template", "no"), 422),
            (Refusal::conflict("duplicate", "twice"), 409),
            (Refusal::not_allowed("plan_required", "plan"), 403),
            (Refusal::busy("endpoint_busy", "later", 7), 429),
        ];
        for (refusal, status) in cases {
            let code = refusal.code;
            let error = ApiError::from(refusal);
            assert_eq!(error.status().as_u16(), status);
            assert_eq!(error.code(), code);
        }
        let response = ApiError::from(Refusal::busy("endpoint_busy", "later", 7)).into_response();
        assert_eq!(response.headers()["retry-after"], "7");
    }
}
