//! API keys (SPEC §3, §6): generation, validation of what the console sends, and the shape the
//! console sees. SQL lives in `store`; the gateway's view of keys is `internal::wire`.
//!
//! A key and its secret exist in plain text only in the response that creates (or rotates)
//! them; the database keeps the key's first 12 characters and SHA-256 hashes of both.

pub mod playground;
pub mod service;
pub mod store;

use std::net::IpAddr;

use ipnet::IpNet;
use rand::{distributions::Alphanumeric, rngs::OsRng, Rng};
use serde::Serialize;
use serde_json::Value;

use crate::{clock::rfc3339, refusal::Refusal};

pub const KEY_PREFIX: &str = "pk_live_";
pub const SECRET_PREFIX: &str = "sk_live_";
const KEY_RANDOM_CHARS: usize = 32;
const SECRET_RANDOM_CHARS: usize = 40;
/// Characters of the key kept in plain text (`pk_live_abcd`).
pub const PREFIX_CHARS: usize = 12;

pub const DEFAULT_RATE_LIMIT_PER_MINUTE: i64 = 60;
pub const DEFAULT_DAILY_LIMIT: i64 = 1000;
pub const MAX_RATE_LIMIT_PER_MINUTE: i64 = 100_000;
pub const MAX_DAILY_LIMIT: i64 = 100_000_000;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_WHITELIST_ENTRIES: usize = 100;
/// Longest grace period a rotation may give the old pair.
pub const MAX_GRACE_SECONDS: i64 = 7 * 24 * 3600;

/// A freshly generated key + secret, in plain text; shown once, then dropped.
pub struct Credentials {
    pub key: String,
    pub secret: String,
}

impl Credentials {
    /// Both from the OS CSPRNG; base62 via `Alphanumeric`, which samples without bias.
    pub fn generate() -> Self {
        Self {
            key: format!("{KEY_PREFIX}{}", random_base62(KEY_RANDOM_CHARS)),
            secret: format!("{SECRET_PREFIX}{}", random_base62(SECRET_RANDOM_CHARS)),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.key[..PREFIX_CHARS]
    }
}

fn random_base62(len: usize) -> String {
    OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A key as the console sees it: never a hash, never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = Key)]
pub struct KeyView {
    /// `key_...`
    pub id: String,
    pub name: String,
    pub prefix: String,
    /// `active`, `revoked` or `expired`.
    #[schema(value_type = String)]
    pub status: &'static str,
    pub rate_limit_per_minute: i64,
    pub daily_limit: i64,
    pub ip_whitelist: Vec<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub usage_today: i64,
    pub expires_at: Option<String>,
    /// Until when the pair replaced by the last rotation still works, if it does.
    pub previous_valid_until: Option<String>,
}

impl KeyView {
    pub fn from_record(record: &store::KeyRecord, now_ms: i64) -> Self {
        Self {
            id: record.id.clone(),
            name: record.name.clone(),
            prefix: record.prefix.clone(),
            status: record.status_at(now_ms),
            rate_limit_per_minute: record.rate_limit_per_minute,
            daily_limit: record.daily_limit,
            ip_whitelist: record.ip_whitelist.clone(),
            created_at: rfc3339(record.created_at),
            last_used_at: record.last_used_at.map(rfc3339),
            usage_today: record.usage_today,
            expires_at: record.expires_at.map(rfc3339),
            previous_valid_until: record
                .previous
                .as_ref()
                .filter(|p| p.valid_until_ms > now_ms)
                .map(|p| rfc3339(p.valid_until_ms)),
        }
    }
}

/// 1 to 100 characters, trimmed.
pub fn validate_name(name: &str) -> Result<String, Refusal> {
    let name = name.trim();
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME_CHARS {
        return Err(Refusal::unacceptable(
            "invalid_name",
            format!("name: 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(name.to_string())
}

/// A positive integer up to `max`. Taken as a JSON value so that `0`, `-1`, `1.5` and `"60"`
/// all get the same precise answer naming the field.
pub fn validate_limit(field: &'static str, value: &Value, max: i64) -> Result<i64, Refusal> {
    match integral(value) {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(Refusal::unacceptable(
            "invalid_limit",
            format!("{field}: must be an integer from 1 to {max}"),
        )),
    }
}

/// An integer as JSON Schema counts them: `60` and `60.0` are the same integer (clients that
/// only have floating-point numbers send the latter); `60.5` and `"60"` are not integers.
pub fn integral(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// Addresses and CIDRs, IPv4 or IPv6. A CIDR is stored as its network (`10.1.2.3/8` →
/// `10.0.0.0/8`), an address in canonical form; duplicates are dropped. Every stored entry
/// parses as `ipnet::IpNet` or `std::net::IpAddr`, as the gateway expects.
pub fn validate_whitelist(entries: &[String]) -> Result<Vec<String>, Refusal> {
    if entries.len() > MAX_WHITELIST_ENTRIES {
        return Err(Refusal::unacceptable(
            "invalid_ip_whitelist",
            format!("ip_whitelist: at most {MAX_WHITELIST_ENTRIES} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let text = entry.trim();
        let normalized = if text.contains('/') {
            text.parse::<IpNet>()
                .map(|net| net.trunc().to_string())
                .ok()
        } else {
            text.parse::<IpAddr>().map(|ip| ip.to_string()).ok()
        };
        let Some(normalized) = normalized else {
            let shown: String = entry.chars().take(60).collect();
            return Err(Refusal::unacceptable(
                "invalid_ip_whitelist",
                format!("ip_whitelist[{i}]: {shown:?} is not an IP address or CIDR"),
            ));
        };
        if !out.contains(&normalized) {
            out.push(normalized);
        }
    }
    Ok(out)
}

/// An RFC 3339 time in the future, as unix milliseconds.
pub fn validate_expires_at(text: &str, now_ms: i64) -> Result<i64, Refusal> {
    let invalid =
        |why: &str| Refusal::unacceptable("invalid_expires_at", format!("expires_at: {why}"));
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| invalid("must be an RFC 3339 time, e.g. 2030-01-31T00:00:00Z"))?;
    let ms = (at.unix_timestamp_nanos() / 1_000_000) as i64;
    if ms <= now_ms {
        return Err(invalid("must be in the future"));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_have_the_documented_form() {
        let a = Credentials::generate();
        assert!(a.key.starts_with("pk_live_") && a.key.len() == 40);
        assert!(a.secret.starts_with("sk_live_") && a.secret.len() == 48);
        assert!(a.key[8..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert!(a.secret[8..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a.prefix().len(), 12);
        let b = Credentials::generate();
        assert_ne!(a.key, b.key);
        assert_ne!(a.secret, b.secret);
    }

    #[test]
    fn limits() {
        assert_eq!(validate_limit("daily_limit", &json!(5), 10).unwrap(), 5);
        assert_eq!(validate_limit("daily_limit", &json!(5.0), 10).unwrap(), 5);
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("60"),
            json!(11),
            json!(null),
        ] {
            let err = validate_limit("daily_limit", &bad, 10).unwrap_err();
            assert_eq!(err.code, "invalid_limit");
            assert!(err.to_string().starts_with("daily_limit:"));
        }
    }

    #[test]
    fn whitelist_entries_are_parsed_and_normalised() {
        let out = validate_whitelist(&[
            "203.0.113.7".into(),
            "10.1.2.3/8".into(),
            "2001:DB8::/32".into(),
            "::1".into(),
            "203.0.113.7".into(),
        ])
        .unwrap();
        assert_eq!(
            out,
            vec!["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "::1"]
        );
        for entry in &out {
            assert!(entry.parse::<IpNet>().is_ok() || entry.parse::<IpAddr>().is_ok());
        }
        let err = validate_whitelist(&["10.0.0.0/33".into()]).unwrap_err();
        assert_eq!(err.code, "invalid_ip_whitelist");
        assert!(err.to_string().contains("10.0.0.0/33"));
        assert!(validate_whitelist(&["example.com".into()]).is_err());
    }

    #[test]
    fn names_and_expiry() {
        assert!(validate_name("").is_err());
        assert!(validate_name(&"n".repeat(101)).is_err());
        assert_eq!(validate_name(" prod ").unwrap(), "prod");
        assert_eq!(
            validate_expires_at("2030-01-01T00:00:00Z", 0).unwrap(),
            1_893_456_000_000
        );
        assert!(validate_expires_at("2020-01-01T00:00:00Z", 1_893_456_000_000).is_err());
        assert!(validate_expires_at("tomorrow", 0).is_err());
    }
}
