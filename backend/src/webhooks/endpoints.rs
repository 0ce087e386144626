//! Webhook endpoints: field checks and storage. Every function takes the caller's `account_id`
//! and matches it in SQL, so another account's endpoint is simply "not found". What the console
//! does with them, with its rules, is `webhooks::service`.

use std::time::Duration;

use serde::Serialize;
use sqlx::AnyConnection;

use super::sign::Secret;
use crate::secrets::Secrets;
use crate::{
    clock::{now_ms, rfc3339},
    db::Db,
    events::EVENT_TYPES,
    ids::new_id,
    refusal::Refusal,
};

pub const MAX_DESCRIPTION: usize = 500;
pub const MAX_URL: usize = 2048;
/// Subscribes to every event type, present and future.
pub const ALL_EVENTS: &str = "*";

/// An endpoint as the admin API shows it. Never carries a secret.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    #[schema(example = "whk_01jd8zq4y1v2k3m4n5p6q7r8s9")]
    pub id: String,
    #[serde(skip)]
    pub account_id: String,
    pub url: String,
    pub description: String,
    /// Subscribed event types, or `["*"]` for all.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why the sender disabled it (410 Gone, failing for too long); null when enabled.
    pub disabled_reason: Option<String>,
    /// RFC 3339; null when enabled.
    pub disabled_at: Option<String>,
    /// While a rotation overlaps, the previous secret signs too, until this time (RFC 3339).
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A line of an endpoint's log (disabled, re-enabled, secret rotated).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LogEntry {
    pub at: String,
    pub message: String,
}

/// What a create or update asks for, already validated.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// An http(s) URL with a host, no longer than `MAX_URL`. With the SSRF guard on, an IP literal of
/// a special-purpose address (`ssrf::SPECIAL`) is refused here already (names are judged at delivery time, where their
/// addresses are known).
pub fn validate_url(url: &str, allow_private: bool) -> Result<String, Refusal> {
    let invalid = |why: &str| Refusal::invalid("invalid_url", format!("url: {why}"));
    let url = url.trim();
    if url.len() > MAX_URL {
        return Err(invalid(&format!("at most {MAX_URL} characters")));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("must be http or https"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must have a host"));
    }
    if let Err(blocked) = super::ssrf::check_url(&parsed, allow_private) {
        return Err(Refusal::unacceptable(
            "webhook_url_not_allowed",
            format!("url: {blocked}"),
        ));
    }
    Ok(parsed.to_string())
}

/// Known event types (SPEC §8), de-duplicated, or `["*"]` alone.
pub fn validate_events(events: &[String]) -> Result<Vec<String>, Refusal> {
    if events.is_empty() {
        return Err(Refusal::invalid(
            "invalid_events",
            "events: subscribe to at least one event type, or [\"*\"] for all",
        ));
    }
    if events.iter().any(|e| e == ALL_EVENTS) {
        if events.len() > 1 {
            return Err(Refusal::invalid(
                "invalid_events",
                "events: \"*\" already means all event types; list it alone",
            ));
        }
        return Ok(vec![ALL_EVENTS.to_string()]);
    }
    let mut out: Vec<String> = Vec::new();
    for event in events {
        if !EVENT_TYPES.contains(&event.as_str()) {
            return Err(Refusal::invalid(
                "invalid_events",
                format!(
                    "events: unknown event type {event:?}; known: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !out.contains(event) {
            out.push(event.clone());
        }
    }
    Ok(out)
}

pub fn validate_description(description: &str) -> Result<String, Refusal> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(Refusal::invalid(
            "invalid_description",
            format!("description: at most {MAX_DESCRIPTION} characters"),
        ));
    }
    Ok(description.to_string())
}

/// Whether an endpoint with these subscriptions gets events of this type. Only the SPEC's types
/// fan out; `webhook.test` goes to the tested endpoint alone.
pub fn subscribes(events: &[String], event_type: &str) -> bool {
    EVENT_TYPES.contains(&event_type) && events.iter().any(|e| e == ALL_EVENTS || e == event_type)
}

pub fn parse_events(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

const COLUMNS: &str = "id, account_id, url, description, events, enabled, disabled_reason, \
     disabled_at, previous_secret_until, created_at, updated_at";

/// A row of `COLUMNS`, as stored; `Endpoint` is its API form.
#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: String,
    account_id: String,
    url: String,
    description: String,
    events: String,
    enabled: i64,
    disabled_reason: Option<String>,
    disabled_at: Option<i64>,
    previous_secret_until: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl From<EndpointRow> for Endpoint {
    fn from(row: EndpointRow) -> Self {
        Endpoint {
            id: row.id,
            account_id: row.account_id,
            url: row.url,
            description: row.description,
            events: parse_events(&row.events),
            enabled: row.enabled != 0,
            disabled_reason: row.disabled_reason,
            disabled_at: row.disabled_at.map(rfc3339),
            previous_secret_expires_at: row
                .previous_secret_until
                .filter(|t| *t > now_ms())
                .map(rfc3339),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

/// A validated endpoint to create.
pub struct NewEndpoint {
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
}

/// Stores a new endpoint with a fresh secret (sealed at rest) on the caller's transaction;
/// returns its id and the plain secret, which is shown once and never again.
pub async fn insert(
    conn: &mut AnyConnection,
    secrets: &Secrets,
    account_id: &str,
    new: &NewEndpoint,
) -> Result<(String, Secret), sqlx::Error> {
    let id = new_id("whk");
    let secret = Secret::generate();
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, account_id, url, description, events, enabled, secret, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(&id)
    .bind(account_id)
    .bind(&new.url)
    .bind(&new.description)
    .bind(serde_json::to_string(&new.events).expect("strings serialize"))
    .bind(i64::from(new.enabled))
    .bind(secrets.encrypt_str(secret.expose()))
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok((id, secret))
}

pub async fn get(db: &Db, account_id: &str, id: &str) -> Result<Option<Endpoint>, sqlx::Error> {
    let row = sqlx::query_as::<_, EndpointRow>(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND account_id = $2"
    ))
    .bind(id)
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Endpoint::from))
}

/// A page in creation order; the cursor is the last id of the previous page.
pub async fn list(
    db: &Db,
    account_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<(Vec<Endpoint>, Option<String>), sqlx::Error> {
    let rows = sqlx::query_as::<_, EndpointRow>(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE account_id = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    ))
    .bind(account_id)
    .bind(cursor.unwrap_or(""))
    .bind(crate::db::page_rows(limit))
    .fetch_all(db)
    .await?;
    let data = rows.into_iter().map(Endpoint::from).collect();
    Ok(crate::db::into_page(data, limit, |e| &e.id))
}

/// Applies validated changes. Re-enabling clears the sender's verdict (failing_since, reason) so
/// the endpoint starts with a clean slate; its paused deliveries resume.
pub async fn update(
    db: &Db,
    account_id: &str,
    id: &str,
    changes: Changes,
) -> Result<Option<Endpoint>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let current: Option<i64> = sqlx::query_scalar(
        "SELECT enabled FROM webhook_endpoints WHERE id = $1 AND account_id = $2",
    )
    .bind(id)
    .bind(account_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(was_enabled) = current else {
        return Ok(None);
    };
    let now = now_ms();
    sqlx::query(
        "UPDATE webhook_endpoints SET url = COALESCE($1, url), events = COALESCE($2, events), \
         description = COALESCE($3, description), updated_at = $4 WHERE id = $5",
    )
    .bind(changes.url)
    .bind(
        changes
            .events
            .map(|e| serde_json::to_string(&e).expect("strings serialize")),
    )
    .bind(changes.description)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    match (was_enabled != 0, changes.enabled) {
        (false, Some(true)) => {
            sqlx::query(
                "UPDATE webhook_endpoints SET enabled = 1, failing_since = NULL, \
                 disabled_at = NULL, disabled_reason = NULL WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            add_log(&mut tx, id, now, "enabled by a user").await?;
        }
        (true, Some(false)) => {
            sqlx::query(
                "UPDATE webhook_endpoints SET enabled = 0, disabled_at = $1, \
                 disabled_reason = 'disabled by a user' WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            add_log(
                &mut tx,
                id,
                now,
                "disabled by a user; pending deliveries wait until it is enabled again",
            )
            .await?;
        }
        _ => {}
    }
    tx.commit().await?;
    get(db, account_id, id).await
}

/// Deletes an endpoint with its deliveries, attempts and log.
pub async fn delete(db: &Db, account_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND account_id = $2")
        .bind(id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Ok(false);
    }
    for table in [
        "webhook_attempts",
        "webhook_deliveries",
        "webhook_endpoint_log",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE endpoint_id = $1"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Replaces the secret; the old one keeps signing for `overlap` so receivers can switch without
/// dropping deliveries. Returns the new secret (shown once) and when the old one stops.
pub async fn rotate_secret(
    db: &Db,
    secrets: &Secrets,
    account_id: &str,
    id: &str,
    overlap: Duration,
) -> Result<Option<(Secret, i64)>, sqlx::Error> {
    let secret = Secret::generate();
    let now = now_ms();
    let until = now + overlap.as_millis() as i64;
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = $1, \
         secret = $2, updated_at = $3 WHERE id = $4 AND account_id = $5",
    )
    .bind(until)
    .bind(secrets.encrypt_str(secret.expose()))
    .bind(now)
    .bind(id)
    .bind(account_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(None);
    }
    add_log(
        &mut tx,
        id,
        now,
        &format!(
            "secret rotated; the previous secret also signs until {}",
            rfc3339(until)
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(Some((secret, until)))
}

/// The HMAC keys to sign with now: the current secret, then the previous one while it overlaps.
/// A stored secret that does not open with our key or does not decode is skipped (it cannot have
/// been produced with this `secrets_key`); with none left, the attempt fails and says so.
pub fn signing_keys(
    secrets: &Secrets,
    secret: &str,
    previous: Option<&str>,
    previous_until: Option<i64>,
    now: i64,
) -> Vec<Vec<u8>> {
    let previous = previous.filter(|_| previous_until.is_some_and(|t| t > now));
    [Some(secret), previous]
        .into_iter()
        .flatten()
        .filter_map(|stored| {
            let plain = secrets.decrypt_str(stored).ok()?;
            Secret::parse(&plain).ok()?.key().ok()
        })
        .collect()
}

/// An endpoint's secrets as stored: sealed (`enc:...`) or, from before sealing, plain.
#[derive(sqlx::FromRow)]
struct StoredSecrets {
    id: String,
    secret: String,
    previous_secret: Option<String>,
}

/// Seals the secrets of rows written before secrets were encrypted at rest. Run at start-up;
/// each row is rewritten only if it still holds what was read, so concurrent backends agree.
pub async fn seal_plaintext_secrets(db: &Db, secrets: &Secrets) -> Result<u64, sqlx::Error> {
    let rows: Vec<StoredSecrets> = sqlx::query_as(
        "SELECT id, secret, previous_secret FROM webhook_endpoints \
         WHERE secret NOT LIKE 'enc:%' OR previous_secret NOT LIKE 'enc:%'",
    )
    .fetch_all(db)
    .await?;
    let seal = |value: &str| {
        if Secrets::is_sealed(value) {
            value.to_string()
        } else {
            secrets.encrypt_str(value)
        }
    };
    let mut sealed = 0;
    for StoredSecrets {
        id,
        secret,
        previous_secret: previous,
    } in rows
    {
        sealed += sqlx::query(
            "UPDATE webhook_endpoints SET secret = $1, previous_secret = $2 \
             WHERE id = $3 AND secret = $4",
        )
        .bind(seal(&secret))
        .bind(previous.as_deref().map(seal))
        .bind(&id)
        .bind(&secret)
        .execute(db)
        .await?
        .rows_affected();
    }
    if sealed > 0 {
        tracing::info!(
            endpoints = sealed,
            "encrypted webhook secrets stored in plain text"
        );
    }
    Ok(sealed)
}

pub async fn add_log(
    conn: &mut AnyConnection,
    endpoint_id: &str,
    at: i64,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_endpoint_log (id, endpoint_id, at, message) VALUES ($1, $2, $3, $4)",
    )
    .bind(new_id("wlg"))
    .bind(endpoint_id)
    .bind(at)
    .bind(message)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct LogRow {
    at: i64,
    message: String,
}

/// The newest log entries first.
pub async fn log(db: &Db, endpoint_id: &str, limit: i64) -> Result<Vec<LogEntry>, sqlx::Error> {
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT at, message FROM webhook_endpoint_log WHERE endpoint_id = $1 \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(endpoint_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| LogEntry {
            at: rfc3339(row.at),
            message: row.message,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(validate_url("https://hooks.example.com/wiz", false).is_ok());
        assert!(validate_url("http://hooks.example.com:8080/x?y=1", false).is_ok());
        assert_eq!(
            validate_url("ftp://example.com/", false).unwrap_err().code,
            "invalid_url"
        );
        assert_eq!(
            validate_url("not a url", false).unwrap_err().code,
            "invalid_url"
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        assert_eq!(validate_url(&long, false).unwrap_err().code, "invalid_url");
        assert_eq!(
            validate_url("http://169.254.169.254/latest/meta-data", false)
                .unwrap_err()
                .code,
            "webhook_url_not_allowed"
        );
        assert!(validate_url("http://127.0.0.1:9000/hook", true).is_ok());
    }

    #[test]
    fn events_are_known_types_or_all() {
        let v = |list: &[&str]| {
            validate_events(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(v(&["*"]).unwrap(), vec!["*"]);
        assert_eq!(
            v(&["message.read", "message.read", "contact.created"]).unwrap(),
            vec!["message.read", "contact.created"]
        );
        assert!(v(&[]).is_err());
        assert!(v(&["message.exploded"]).is_err());
        assert!(v(&["*", "message.read"]).is_err());
        assert!(v(&["webhook.test"]).is_err());
    }

    #[test]
    fn subscriptions_match_types_and_the_wildcard() {
        let all = vec!["*".to_string()];
        let read = vec!["message.read".to_string()];
        for t in EVENT_TYPES {
            assert!(subscribes(&all, t));
        }
        assert!(subscribes(&read, "message.read"));
        assert!(!subscribes(&read, "message.sent"));
        assert!(!subscribes(&all, "webhook.test"));
    }

    #[test]
    fn previous_secret_signs_only_during_the_overlap() {
        let secrets = Secrets::new(&"k".repeat(32));
        let current = Secret::generate();
        let old = Secret::generate();
        let (sealed, sealed_old) = (
            secrets.encrypt_str(current.expose()),
            secrets.encrypt_str(old.expose()),
        );
        let keys = |until| signing_keys(&secrets, &sealed, Some(&sealed_old), until, 1000);
        assert_eq!(keys(Some(2000)).len(), 2);
        assert_eq!(keys(Some(1000)).len(), 1);
        assert_eq!(keys(None).len(), 1);
        assert_eq!(keys(Some(2000))[0], current.key().unwrap());
        // Plain text (never sealed) or another key's seal: nothing to sign with.
        assert!(signing_keys(&secrets, current.expose(), None, None, 1000).is_empty());
        let other = Secrets::new(&"o".repeat(32));
        assert!(signing_keys(&other, &sealed, None, None, 1000).is_empty());
    }

    #[test]
    fn descriptions_are_bounded() {
        assert!(validate_description(&"é".repeat(500)).is_ok());
        assert!(validate_description(&"a".repeat(501)).is_err());
    }
}
