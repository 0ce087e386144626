//! The backend side of the gateway wire contract (docs/internal-api.md), defined once here.
//! The gateway defines the same names in `gateway/src/sync/wire.rs`; the end-to-end suite pins
//! the two together. Change both sides and the document together.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const KEYS_PATH: &str = "/internal/keys";
pub const USAGE_PATH: &str = "/internal/usage";
/// Longest a `/internal/keys` long poll is held.
pub const MAX_WAIT_MS: u64 = 30_000;

/// `GET /internal/keys?since=<version>&wait_ms=<ms>`
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeysQuery {
    #[serde(default)]
    pub since: Option<i64>,
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysResponse {
    pub version: i64,
    pub full: bool,
    pub server_time_ms: i64,
    pub keys: Vec<WireKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireKey {
    pub id: String,
    pub account_id: String,
    pub prefix: String,
    /// 64 lowercase hex: SHA-256 of the full key.
    pub key_hash: String,
    /// 64 lowercase hex: SHA-256 of the full secret.
    pub secret_hash: String,
    pub previous: Option<WirePrevious>,
    /// `active` or `revoked`; expiry is `expires_at_ms`.
    pub status: String,
    pub expires_at_ms: Option<i64>,
    pub plan: String,
    pub rate_limit_per_minute: i64,
    pub daily_limit: i64,
    pub ip_whitelist: Vec<String>,
    pub usage_today: WireUsageToday,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WirePrevious {
    pub key_hash: String,
    pub secret_hash: String,
    pub valid_until_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireUsageToday {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub count: i64,
}

/// `POST /internal/usage`, answered 204.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    pub gateway_id: String,
    pub entries: Vec<UsageEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub key_id: String,
    /// Unix seconds at the start of the UTC minute the requests fell in.
    pub minute: i64,
    #[serde(default)]
    pub accepted: u64,
    /// Refusals by `error.code`; codes other than the documented six are ignored.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
    #[serde(default)]
    pub last_used_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_usage_report() {
        let text = r#"{
          "gateway_id": "hostname:pid",
          "entries": [{
            "key_id": "key_01JD", "minute": 1764028800, "accepted": 12,
            "refused": { "rate_limited": 3, "daily_limit_exceeded": 0, "ip_not_allowed": 1 },
            "last_used_at_ms": 1764028834123
          }]
        }"#;
        let report: UsageReport = serde_json::from_str(text).unwrap();
        assert_eq!(report.entries[0].refused["rate_limited"], 3);
        assert_eq!(report.entries[0].last_used_at_ms, Some(1764028834123));
    }

    #[test]
    fn keys_response_has_the_documented_fields() {
        let response = KeysResponse {
            version: 42,
            full: true,
            server_time_ms: 1,
            keys: vec![WireKey {
                id: "key_1".into(),
                account_id: "acc_1".into(),
                prefix: "pk_live_abcd".into(),
                key_hash: "00".into(),
                secret_hash: "11".into(),
                previous: None,
                status: "active".into(),
                expires_at_ms: None,
                plan: "wiz_pro".into(),
                rate_limit_per_minute: 60,
                daily_limit: 1000,
                ip_whitelist: vec!["10.0.0.0/8".into()],
                usage_today: WireUsageToday {
                    day: "2026-11-24".into(),
                    count: 17,
                },
            }],
        };
        let v = serde_json::to_value(&response).unwrap();
        let key = &v["keys"][0];
        for field in [
            "id",
            "account_id",
            "prefix",
            "key_hash",
            "secret_hash",
            "previous",
            "status",
            "expires_at_ms",
            "plan",
            "rate_limit_per_minute",
            "daily_limit",
            "ip_whitelist",
            "usage_today",
        ] {
            assert!(key.get(field).is_some(), "{field}");
        }
        assert_eq!(key["usage_today"]["count"], 17);
        assert_eq!(v["server_time_ms"], 1);
    }
}
