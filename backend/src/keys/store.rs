//! API key SQL: the keys themselves, their versions (what gateways sync against), and their
//! usage. Admin functions are scoped by account id; the sync and usage functions serve the
//! gateway and see every account.
//!
//! Versioning: every change to a key row sets `version` to a fresh value of the
//! `counters.key_version` row, taken in the same transaction. Because that row stays locked
//! until commit, versions become visible in increasing order, so "rows with version > v" never
//! misses a row once the counter reads past it.

use sqlx::AnyConnection;

use super::Credentials;
use crate::{auth::sha256_hex, db::JsonText, ids::new_id};

#[derive(Debug, Clone, PartialEq)]
pub struct PreviousPair {
    pub key_hash: String,
    pub secret_hash: String,
    pub valid_until_ms: i64,
}

/// One key row, with its account's plan and today's accepted count.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub secret_hash: String,
    pub previous: Option<PreviousPair>,
    /// As stored: `active` or `revoked`.
    pub status: String,
    pub rate_limit_per_minute: i64,
    pub daily_limit: i64,
    pub ip_whitelist: Vec<String>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub version: i64,
    pub plan: String,
    /// Accepted requests recorded for the UTC day the query asked about.
    pub usage_today: i64,
}

impl KeyRecord {
    /// `revoked`, else `expired` once `expires_at` has passed, else `active`.
    pub fn status_at(&self, now_ms: i64) -> &'static str {
        if self.status == "revoked" {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now_ms) {
            "expired"
        } else {
            "active"
        }
    }
}

/// The settings the console chooses for a key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySettings {
    pub name: String,
    pub rate_limit_per_minute: i64,
    pub daily_limit: i64,
    pub ip_whitelist: Vec<String>,
    pub expires_at: Option<i64>,
}

/// `YYYY-MM-DD` of the UTC day containing `ms`.
pub fn utc_day(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Takes the next key table version (on the caller's transaction).
pub async fn next_version(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE counters SET value = value + 1 WHERE name = 'key_version' RETURNING value",
    )
    .fetch_one(conn)
    .await
}

/// The newest key table version.
pub async fn current_version(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT value FROM counters WHERE name = 'key_version'")
        .fetch_one(conn)
        .await
}

const SELECT: &str = "SELECT k.id, k.account_id, k.name, k.prefix, k.key_hash, k.secret_hash, \
     k.prev_key_hash, k.prev_secret_hash, k.prev_valid_until, k.status, \
     k.rate_limit_per_minute, k.daily_limit, k.ip_whitelist, k.expires_at, k.created_at, \
     k.last_used_at, k.version, a.plan, CAST(COALESCE(u.accepted, 0) AS BIGINT) AS usage_today \
     FROM api_keys k JOIN accounts a ON a.id = k.account_id \
     LEFT JOIN key_usage_day u ON u.key_id = k.id AND u.day = $1";

/// A row of `SELECT`, as stored; `KeyRecord` pairs the grace-period columns.
#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    account_id: String,
    name: String,
    prefix: String,
    key_hash: String,
    secret_hash: String,
    prev_key_hash: Option<String>,
    prev_secret_hash: Option<String>,
    prev_valid_until: Option<i64>,
    status: String,
    rate_limit_per_minute: i64,
    daily_limit: i64,
    ip_whitelist: JsonText<Vec<String>>,
    expires_at: Option<i64>,
    created_at: i64,
    last_used_at: Option<i64>,
    version: i64,
    plan: String,
    usage_today: i64,
}

impl From<KeyRow> for KeyRecord {
    fn from(row: KeyRow) -> Self {
        let previous = match (
            row.prev_key_hash,
            row.prev_secret_hash,
            row.prev_valid_until,
        ) {
            (Some(key_hash), Some(secret_hash), Some(valid_until_ms)) => Some(PreviousPair {
                key_hash,
                secret_hash,
                valid_until_ms,
            }),
            _ => None,
        };
        KeyRecord {
            id: row.id,
            account_id: row.account_id,
            name: row.name,
            prefix: row.prefix,
            key_hash: row.key_hash,
            secret_hash: row.secret_hash,
            previous,
            status: row.status,
            rate_limit_per_minute: row.rate_limit_per_minute,
            daily_limit: row.daily_limit,
            ip_whitelist: row.ip_whitelist.0,
            expires_at: row.expires_at,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            version: row.version,
            plan: row.plan,
            usage_today: row.usage_today,
        }
    }
}

pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    today: &str,
) -> Result<Option<KeyRecord>, sqlx::Error> {
    let sql = format!("{SELECT} WHERE k.account_id = $2 AND k.id = $3");
    Ok(sqlx::query_as::<_, KeyRow>(&sql)
        .bind(today)
        .bind(account_id)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(KeyRecord::from))
}

pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    today: &str,
) -> Result<Vec<KeyRecord>, sqlx::Error> {
    let sql = format!("{SELECT} WHERE k.account_id = $2 ORDER BY k.id");
    Ok(sqlx::query_as::<_, KeyRow>(&sql)
        .bind(today)
        .bind(account_id)
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(KeyRecord::from)
        .collect())
}

/// Every key whose record changed after version `since` (all keys for `since = 0`), of every
/// account: the gateway's sync.
pub async fn changed_since(
    conn: &mut AnyConnection,
    since: i64,
    today: &str,
) -> Result<Vec<KeyRecord>, sqlx::Error> {
    let sql = format!("{SELECT} WHERE k.version > $2 ORDER BY k.version, k.id");
    Ok(sqlx::query_as::<_, KeyRow>(&sql)
        .bind(today)
        .bind(since)
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(KeyRecord::from)
        .collect())
}

/// Stores a new key (hashes only) and returns its id and version.
pub async fn insert(
    conn: &mut AnyConnection,
    account_id: &str,
    settings: &KeySettings,
    credentials: &Credentials,
    now_ms: i64,
) -> Result<(String, i64), sqlx::Error> {
    let id = new_id("key");
    let version = next_version(conn).await?;
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, name, prefix, key_hash, secret_hash, status, \
         rate_limit_per_minute, daily_limit, ip_whitelist, expires_at, created_at, updated_at, \
         version) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $10, $11, $11, $12)",
    )
    .bind(&id)
    .bind(account_id)
    .bind(&settings.name)
    .bind(credentials.prefix())
    .bind(sha256_hex(&credentials.key))
    .bind(sha256_hex(&credentials.secret))
    .bind(settings.rate_limit_per_minute)
    .bind(settings.daily_limit)
    .bind(serde_json::to_string(&settings.ip_whitelist).expect("strings serialize"))
    .bind(settings.expires_at)
    .bind(now_ms)
    .bind(version)
    .execute(conn)
    .await?;
    Ok((id, version))
}

/// Replaces a key's settings; the new version, or `None` if the account has no such key.
pub async fn save_settings(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    settings: &KeySettings,
    now_ms: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let version = next_version(conn).await?;
    let updated = sqlx::query(
        "UPDATE api_keys SET name = $1, rate_limit_per_minute = $2, daily_limit = $3, \
         ip_whitelist = $4, expires_at = $5, updated_at = $6, version = $7 \
         WHERE account_id = $8 AND id = $9",
    )
    .bind(&settings.name)
    .bind(settings.rate_limit_per_minute)
    .bind(settings.daily_limit)
    .bind(serde_json::to_string(&settings.ip_whitelist).expect("strings serialize"))
    .bind(settings.expires_at)
    .bind(now_ms)
    .bind(version)
    .bind(account_id)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok((updated > 0).then_some(version))
}

/// Revokes a key (and any grace-period pair); the new version, or `None` if no such key.
pub async fn revoke(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    now_ms: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let version = next_version(conn).await?;
    let updated = sqlx::query(
        "UPDATE api_keys SET status = 'revoked', revoked_at = $1, updated_at = $1, \
         prev_key_hash = NULL, prev_secret_hash = NULL, prev_valid_until = NULL, version = $2 \
         WHERE account_id = $3 AND id = $4",
    )
    .bind(now_ms)
    .bind(version)
    .bind(account_id)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok((updated > 0).then_some(version))
}

/// Gives a key a new pair. With `grace_ms > 0` the current pair stays valid until
/// `now + grace`, otherwise it stops working at once. Same id, limits and counters.
pub async fn rotate(
    conn: &mut AnyConnection,
    account_id: &str,
    current: &KeyRecord,
    credentials: &Credentials,
    grace_ms: i64,
    now_ms: i64,
) -> Result<i64, sqlx::Error> {
    let version = next_version(conn).await?;
    let (prev_key, prev_secret, prev_until) = if grace_ms > 0 {
        (
            Some(current.key_hash.clone()),
            Some(current.secret_hash.clone()),
            Some(now_ms + grace_ms),
        )
    } else {
        (None, None, None)
    };
    sqlx::query(
        "UPDATE api_keys SET prefix = $1, key_hash = $2, secret_hash = $3, prev_key_hash = $4, \
         prev_secret_hash = $5, prev_valid_until = $6, updated_at = $7, version = $8 \
         WHERE account_id = $9 AND id = $10",
    )
    .bind(credentials.prefix())
    .bind(sha256_hex(&credentials.key))
    .bind(sha256_hex(&credentials.secret))
    .bind(prev_key)
    .bind(prev_secret)
    .bind(prev_until)
    .bind(now_ms)
    .bind(version)
    .bind(account_id)
    .bind(&current.id)
    .execute(conn)
    .await?;
    Ok(version)
}

/// Refusal codes the gateway may report per key (docs/internal-api.md); others are ignored.
pub const REFUSAL_CODES: &[&str] = &[
    "key_revoked",
    "key_expired",
    "plan_required",
    "ip_not_allowed",
    "rate_limited",
    "daily_limit_exceeded",
];

/// Adds one gateway report entry: accepted requests to the minute and day rows (the day of
/// `minute`), refusals to the day's counts by code, and moves `last_used_at` forward.
/// Unknown keys are skipped (`false`): a report can outlive nothing but a typo.
pub async fn record_usage(
    conn: &mut AnyConnection,
    key_id: &str,
    minute_secs: i64,
    accepted: i64,
    refused: &[(&str, i64)],
    last_used_at_ms: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let known: Option<(String,)> = sqlx::query_as("SELECT id FROM api_keys WHERE id = $1")
        .bind(key_id)
        .fetch_optional(&mut *conn)
        .await?;
    if known.is_none() {
        return Ok(false);
    }
    let minute = minute_secs - minute_secs.rem_euclid(60);
    let day = utc_day(minute * 1000);
    if accepted > 0 {
        sqlx::query(
            "INSERT INTO key_usage_minute (key_id, minute, accepted) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, minute) DO UPDATE \
             SET accepted = key_usage_minute.accepted + excluded.accepted",
        )
        .bind(key_id)
        .bind(minute)
        .bind(accepted)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO key_usage_day (key_id, day, accepted) VALUES ($1, $2, $3) \
             ON CONFLICT (key_id, day) DO UPDATE \
             SET accepted = key_usage_day.accepted + excluded.accepted",
        )
        .bind(key_id)
        .bind(&day)
        .bind(accepted)
        .execute(&mut *conn)
        .await?;
    }
    for (code, count) in refused {
        if *count <= 0 || !REFUSAL_CODES.contains(code) {
            continue;
        }
        sqlx::query(
            "INSERT INTO key_refusals_day (key_id, day, code, count) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key_id, day, code) DO UPDATE \
             SET count = key_refusals_day.count + excluded.count",
        )
        .bind(key_id)
        .bind(&day)
        .bind(*code)
        .bind(*count)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(at) = last_used_at_ms.filter(|at| *at > 0) {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 \
             WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at)
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// Drops per-minute rows older than `before_secs` (they are kept two days).
pub async fn prune_minutes(conn: &mut AnyConnection, before_secs: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM key_usage_minute WHERE minute < $1")
            .bind(before_secs)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// Accepted counts per day from `first_day` on (inclusive, `YYYY-MM-DD` sorts as text).
pub async fn daily_usage(
    conn: &mut AnyConnection,
    key_id: &str,
    first_day: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT day, accepted FROM key_usage_day WHERE key_id = $1 AND day >= $2 ORDER BY day",
    )
    .bind(key_id)
    .bind(first_day)
    .fetch_all(conn)
    .await
}

/// Accepted counts per minute from `first_minute` (unix seconds) on.
pub async fn minute_usage(
    conn: &mut AnyConnection,
    key_id: &str,
    first_minute: i64,
) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT minute, accepted FROM key_usage_minute WHERE key_id = $1 AND minute >= $2 \
         ORDER BY minute",
    )
    .bind(key_id)
    .bind(first_minute)
    .fetch_all(conn)
    .await
}

/// Refusals on one day by code.
pub async fn refusals_on(
    conn: &mut AnyConnection,
    key_id: &str,
    day: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT code, count FROM key_refusals_day WHERE key_id = $1 AND day = $2 ORDER BY code",
    )
    .bind(key_id)
    .bind(day)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_764_028_800_000), "2025-11-25");
        assert_eq!(utc_day(1_764_028_799_999), "2025-11-24");
    }
}
