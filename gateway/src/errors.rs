//! The SPEC §4 error object and every refusal the gateway can answer with.
//!
//! A refusal is a response, not an `Err`: the proxy renders one of these and stops the request.

use serde::Serialize;

/// Every reason the gateway itself answers a request instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    MissingCredentials,
    MalformedCredentials,
    InvalidCredentials,
    KeyRevoked,
    KeyExpired,
    PlanRequired,
    IpNotAllowed,
    RateLimited,
    DailyLimitExceeded,
    TooManyFailedAttempts,
    NotFound,
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    HeadersTooLarge,
    BackendUnavailable,
    LimiterUnavailable,
    KeyTableUnavailable,
    Internal,
}

impl Refusal {
    pub const ALL: [Refusal; 19] = [
        Refusal::MissingCredentials,
        Refusal::MalformedCredentials,
        Refusal::InvalidCredentials,
        Refusal::KeyRevoked,
        Refusal::KeyExpired,
        Refusal::PlanRequired,
        Refusal::IpNotAllowed,
        Refusal::RateLimited,
        Refusal::DailyLimitExceeded,
        Refusal::TooManyFailedAttempts,
        Refusal::NotFound,
        Refusal::BadRequest,
        Refusal::PayloadTooLarge,
        Refusal::RequestTimeout,
        Refusal::HeadersTooLarge,
        Refusal::BackendUnavailable,
        Refusal::LimiterUnavailable,
        Refusal::KeyTableUnavailable,
        Refusal::Internal,
    ];

    pub fn status(self) -> u16 {
        match self {
            Refusal::MissingCredentials
            | Refusal::MalformedCredentials
            | Refusal::InvalidCredentials
            | Refusal::KeyRevoked
            | Refusal::KeyExpired => 401,
            Refusal::PlanRequired | Refusal::IpNotAllowed => 403,
            Refusal::RateLimited | Refusal::DailyLimitExceeded | Refusal::TooManyFailedAttempts => {
                429
            }
            Refusal::NotFound => 404,
            Refusal::BadRequest => 400,
            Refusal::PayloadTooLarge => 413,
            Refusal::RequestTimeout => 408,
            Refusal::HeadersTooLarge => 431,
            Refusal::BackendUnavailable => 502,
            Refusal::LimiterUnavailable | Refusal::KeyTableUnavailable => 503,
            Refusal::Internal => 500,
        }
    }

    pub fn error_type(self) -> &'static str {
        match self.status() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::MissingCredentials => "missing_credentials",
            Refusal::MalformedCredentials => "malformed_credentials",
            Refusal::InvalidCredentials => "invalid_credentials",
            Refusal::KeyRevoked => "key_revoked",
            Refusal::KeyExpired => "key_expired",
            Refusal::PlanRequired => "plan_required",
            Refusal::IpNotAllowed => "ip_not_allowed",
            Refusal::RateLimited => "rate_limited",
            Refusal::DailyLimitExceeded => "daily_limit_exceeded",
            Refusal::TooManyFailedAttempts => "too_many_failed_attempts",
            Refusal::NotFound => "not_found",
            Refusal::BadRequest => "bad_request",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::RequestTimeout => "request_timeout",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::BackendUnavailable => "backend_unavailable",
            Refusal::LimiterUnavailable => "limiter_unavailable",
            Refusal::KeyTableUnavailable => "key_table_unavailable",
            Refusal::Internal => "internal_error",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::MissingCredentials => {
                "API credentials are required: send `Authorization: Bearer <key>` with \
                 `X-Api-Secret: <secret>`, or `Authorization: Basic base64(<key>:<secret>)`."
            }
            Refusal::MalformedCredentials => {
                "The API key or secret is not well-formed: keys look like `pk_live_` + 32 \
                 characters, secrets like `sk_live_` + 40 characters."
            }
            Refusal::InvalidCredentials => "The API key and secret do not match a known key.",
            Refusal::KeyRevoked => "This API key has been revoked.",
            Refusal::KeyExpired => "This API key has expired.",
            Refusal::PlanRequired => {
                "API access requires the wiz_bot or wiz_pro plan; this account is on free."
            }
            Refusal::IpNotAllowed => "The client IP address is not in this key's IP whitelist.",
            Refusal::RateLimited => {
                "Per-minute rate limit exceeded; retry after Retry-After seconds."
            }
            Refusal::DailyLimitExceeded => {
                "Daily request limit exceeded; it resets at 00:00 UTC (see Retry-After)."
            }
            Refusal::TooManyFailedAttempts => {
                "Too many failed authentication attempts from this IP address; slow down."
            }
            Refusal::NotFound => "No such route.",
            Refusal::BadRequest => "The request could not be read.",
            Refusal::PayloadTooLarge => "The request body is too large.",
            Refusal::RequestTimeout => {
                "The request was not received in time; send it again without pausing."
            }
            Refusal::HeadersTooLarge => "The request line and headers are too large.",
            Refusal::BackendUnavailable => "The API backend is unavailable; please retry shortly.",
            Refusal::LimiterUnavailable => {
                "Rate limits cannot be checked right now; please retry shortly."
            }
            Refusal::KeyTableUnavailable => {
                "The gateway has not loaded its API key table yet; please retry shortly."
            }
            Refusal::Internal => "The gateway failed to handle this request.",
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// Renders `{"error":{"type","code","message","request_id"}}`.
pub fn error_body(refusal: Refusal, request_id: &str) -> Vec<u8> {
    let body = ErrorBody {
        error: ErrorFields {
            kind: refusal.error_type(),
            code: refusal.code(),
            message: refusal.message(),
            request_id,
        },
    };
    // Serializing a struct of plain strings cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_spec_shape() {
        let body = error_body(Refusal::RateLimited, "req-1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limited");
        assert_eq!(v["error"]["request_id"], "req-1");
        assert!(v["error"]["message"].as_str().unwrap().len() > 5);
    }

    #[test]
    fn types_follow_status() {
        assert_eq!(
            Refusal::InvalidCredentials.error_type(),
            "authentication_error"
        );
        assert_eq!(Refusal::IpNotAllowed.error_type(), "permission_error");
        assert_eq!(Refusal::NotFound.error_type(), "invalid_request_error");
        assert_eq!(Refusal::BackendUnavailable.error_type(), "api_error");
        assert_eq!(Refusal::Internal.status(), 500);
        assert_eq!(Refusal::KeyTableUnavailable.status(), 503);
        assert_eq!(Refusal::KeyTableUnavailable.code(), "key_table_unavailable");
    }
}
