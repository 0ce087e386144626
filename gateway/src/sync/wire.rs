//! The gateway side of the `/internal/*` wire contract (docs/internal-api.md). The backend defines
//! the same names in `backend/src/internal/wire.rs`; the end-to-end suite pins the two together.

use serde::{Deserialize, Serialize};

pub const INTERNAL_TOKEN_HEADER: &str = "x-wiz-internal-token";
pub const KEYS_PATH: &str = "/internal/keys";
pub const USAGE_PATH: &str = "/internal/usage";

/// `GET /internal/keys?since=<version>&wait_ms=<ms>`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysResponse {
    pub version: u64,
    pub full: bool,
    #[serde(default)]
    pub server_time_ms: Option<i64>,
    #[serde(default)]
    pub keys: Vec<WireKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireKey {
    pub id: String,
    pub account_id: String,
    pub prefix: String,
    pub key_hash: String,
    pub secret_hash: String,
    #[serde(default)]
    pub previous: Option<WirePrevious>,
    pub status: String,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    pub plan: String,
    pub rate_limit_per_minute: u32,
    pub daily_limit: u32,
    #[serde(default)]
    pub ip_whitelist: Vec<String>,
    #[serde(default)]
    pub usage_today: Option<WireUsageToday>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePrevious {
    pub key_hash: String,
    pub secret_hash: String,
    pub valid_until_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireUsageToday {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub count: u32,
}

/// `POST /internal/usage`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub gateway_id: String,
    pub entries: Vec<UsageEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub key_id: String,
    /// Unix seconds at the start of the UTC minute.
    pub minute: i64,
    pub accepted: u64,
    pub refused: RefusedCounts,
    pub last_used_at_ms: i64,
}

/// Refusals attributable to a known key, by `error.code`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedCounts {
    #[serde(default)]
    pub key_revoked: u64,
    #[serde(default)]
    pub key_expired: u64,
    #[serde(default)]
    pub plan_required: u64,
    #[serde(default)]
    pub ip_not_allowed: u64,
    #[serde(default)]
    pub rate_limited: u64,
    #[serde(default)]
    pub daily_limit_exceeded: u64,
}

impl RefusedCounts {
    pub fn add(&mut self, other: &RefusedCounts) {
        self.key_revoked += other.key_revoked;
        self.key_expired += other.key_expired;
        self.plan_required += other.plan_required;
        self.ip_not_allowed += other.ip_not_allowed;
        self.rate_limited += other.rate_limited;
        self.daily_limit_exceeded += other.daily_limit_exceeded;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = r#"{
          "version": 42, "full": true, "server_time_ms": 1764028800000,
          "keys": [{
            "id": "key_01JD", "account_id": "acc_01JD", "prefix": "pk_live_abcd",
            "key_hash": "00", "secret_hash": "11",
            "previous": { "key_hash": "22", "secret_hash": "33", "valid_until_ms": 1764028860000 },
            "status": "active", "expires_at_ms": null, "plan": "wiz_pro",
            "rate_limit_per_minute": 60, "daily_limit": 1000,
            "ip_whitelist": ["203.0.113.7", "10.0.0.0/8", "2001:db8::/32"],
            "usage_today": { "day": "2026-11-24", "count": 17 }
          }]
        }"#;
        let r: KeysResponse = serde_json::from_str(text).unwrap();
        assert_eq!(r.version, 42);
        assert_eq!(
            r.keys[0].previous.as_ref().unwrap().valid_until_ms,
            1764028860000
        );
        assert_eq!(r.keys[0].usage_today.as_ref().unwrap().count, 17);
    }

    #[test]
    fn usage_report_shape() {
        let report = UsageReport {
            gateway_id: "host:1".into(),
            entries: vec![UsageEntry {
                key_id: "key_1".into(),
                minute: 1764028800,
                accepted: 12,
                refused: RefusedCounts {
                    rate_limited: 3,
                    ip_not_allowed: 1,
                    ..Default::default()
                },
                last_used_at_ms: 1764028834123,
            }],
        };
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["entries"][0]["refused"]["rate_limited"], 3);
        assert_eq!(v["entries"][0]["refused"]["daily_limit_exceeded"], 0);
        assert_eq!(v["entries"][0]["minute"], 1764028800);
    }
}
