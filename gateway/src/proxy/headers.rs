//! Header names and values the gateway reads and writes: request ids, the identity headers and
//! proof forwarded to the backend (docs/internal-api.md; the proof itself is `backend_auth`), and the limit headers (SPEC §4).

use crate::limits::{LimitState, DAY_SECS, WINDOW_SECS};

pub const REQUEST_ID: &str = "x-request-id";
pub const API_SECRET: &str = "x-api-secret";
pub const INTERNAL_PREFIX: &str = "x-wiz-";
pub const KEY_ID: &str = "x-wiz-key-id";
pub const ACCOUNT_ID: &str = "x-wiz-account-id";
pub const KEY_PREFIX: &str = "x-wiz-key-prefix";
pub const CLIENT_IP: &str = "x-wiz-client-ip";
pub const GATEWAY_PROOF: &str = "x-wiz-gateway-proof";
/// `http` or `https`: how the client reached the gateway (the backend marks cookies `Secure`).
pub const SCHEME: &str = "x-wiz-scheme";
/// Client-supplied forwarding headers; the gateway replaces them with the IP it resolved.
pub const FORWARDED_FOR: &str = "x-forwarded-for";
pub const REAL_IP: &str = "x-real-ip";
pub const FORWARDED: &str = "forwarded";

/// The client's request id if sane (1–64 of `[A-Za-z0-9._:-]`), else a new ULID.
pub fn request_id(client_value: Option<&[u8]>) -> String {
    match client_value {
        Some(v) if is_sane_request_id(v) => String::from_utf8_lossy(v).into_owned(),
        _ => ulid::Ulid::new().to_string(),
    }
}

pub fn is_sane_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The limit headers for a `/v1` response, as (name, value) pairs.
pub fn limit_headers(s: &LimitState) -> [(&'static str, String); 7] {
    [
        ("x-ratelimit-limit", s.minute_limit.to_string()),
        ("x-ratelimit-remaining", s.minute_remaining.to_string()),
        ("x-ratelimit-reset", s.minute_reset_secs.to_string()),
        ("x-dailylimit-limit", s.day_limit.to_string()),
        ("x-dailylimit-remaining", s.day_remaining.to_string()),
        (
            "ratelimit-policy",
            format!(
                "\"minute\";q={};w={WINDOW_SECS}, \"day\";q={};w={DAY_SECS}",
                s.minute_limit, s.day_limit
            ),
        ),
        (
            "ratelimit",
            format!(
                "\"minute\";r={};t={}, \"day\";r={};t={}",
                s.minute_remaining, s.minute_reset_secs, s.day_remaining, s.day_reset_secs
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some(b"abc-123:x.y_z")), "abc-123:x.y_z");
        assert_eq!(request_id(Some(&[b'a'; 64])).len(), 64);
        for bad in [&b""[..], &[b'a'; 65], b"has space", b"semi;colon", b"\xff"] {
            let id = request_id(Some(bad));
            assert_eq!(id.len(), 26, "ULID expected for {bad:?}");
        }
        assert_eq!(request_id(None).len(), 26);
    }

    #[test]
    fn limit_header_values() {
        let s = LimitState {
            minute_limit: 60,
            minute_remaining: 12,
            minute_reset_secs: 34,
            day_limit: 1000,
            day_remaining: 900,
            day_reset_secs: 3600,
        };
        let h = limit_headers(&s);
        assert_eq!(h[5].1, "\"minute\";q=60;w=60, \"day\";q=1000;w=86400");
        assert_eq!(h[6].1, "\"minute\";r=12;t=34, \"day\";r=900;t=3600");
    }
}
