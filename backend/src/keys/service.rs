//! What the console does with its account's keys, with the rules that go with it: inputs are
//! checked, a revoked key cannot change, only plans with API access create keys, an account
//! holds at most `max_keys` live keys, and every change takes a new key table version that is
//! published to the gateways' long polls once committed. The HTTP edge turns [`KeyError`] into
//! its answer.

use serde_json::Value;
use tokio::sync::watch;

use super::{
    store::{self, utc_day, KeyRecord, KeySettings},
    Credentials,
};
use crate::{
    accounts::{
        self,
        bounds::{self, Bounded},
        Plan,
    },
    db::Db,
    refusal::Refusal,
};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the account has no such key")]
    NotFound,
    #[error("the key is revoked and cannot be changed")]
    Revoked,
    #[error("API access needs the wiz_bot or wiz_pro plan; this account is on {0}")]
    PlanRequired(Plan),
    /// The session's account no longer exists.
    #[error("no such account")]
    NoAccount,
    /// An input failed its check, or the account is at its key bound: the checks' own answer
    /// (`invalid_name`, `too_many_api_keys`, ...).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A new key's settings as the console sent them; limits are JSON values so that a non-integer
/// gets its own answer (`invalid_limit`).
#[derive(Debug, Default)]
pub struct NewKey {
    pub name: String,
    pub rate_limit_per_minute: Option<Value>,
    pub daily_limit: Option<Value>,
    pub ip_whitelist: Option<Vec<String>>,
    pub expires_at: Option<String>,
}

/// A change to a key's settings; `None` leaves a setting alone, `expires_at: Some(None)`
/// removes the expiry.
#[derive(Debug, Default)]
pub struct KeyChanges {
    pub name: Option<String>,
    pub rate_limit_per_minute: Option<Value>,
    pub daily_limit: Option<Value>,
    pub ip_whitelist: Option<Vec<String>>,
    pub expires_at: Option<Option<String>>,
}

/// A key with the plain credentials it was just given (shown this once).
pub struct Issued {
    pub record: KeyRecord,
    pub credentials: Credentials,
}

/// The account's keys and the version watch gateways long-poll on.
pub struct Keys<'a> {
    pub db: &'a Db,
    pub key_version: &'a watch::Sender<i64>,
}

async fn load(
    conn: &mut sqlx::AnyConnection,
    account_id: &str,
    id: &str,
    now: i64,
) -> Result<KeyRecord, KeyError> {
    store::get(conn, account_id, id, &utc_day(now))
        .await?
        .ok_or(KeyError::NotFound)
}

fn settings(new: NewKey, now: i64) -> Result<KeySettings, Refusal> {
    Ok(KeySettings {
        name: super::validate_name(&new.name)?,
        rate_limit_per_minute: match &new.rate_limit_per_minute {
            Some(v) => {
                super::validate_limit("rate_limit_per_minute", v, super::MAX_RATE_LIMIT_PER_MINUTE)?
            }
            None => super::DEFAULT_RATE_LIMIT_PER_MINUTE,
        },
        daily_limit: match &new.daily_limit {
            Some(v) => super::validate_limit("daily_limit", v, super::MAX_DAILY_LIMIT)?,
            None => super::DEFAULT_DAILY_LIMIT,
        },
        ip_whitelist: super::validate_whitelist(&new.ip_whitelist.unwrap_or_default())?,
        expires_at: new
            .expires_at
            .as_deref()
            .map(|t| super::validate_expires_at(t, now))
            .transpose()?,
    })
}

fn apply(current: &KeyRecord, changes: &KeyChanges, now: i64) -> Result<KeySettings, Refusal> {
    let mut settings = KeySettings {
        name: current.name.clone(),
        rate_limit_per_minute: current.rate_limit_per_minute,
        daily_limit: current.daily_limit,
        ip_whitelist: current.ip_whitelist.clone(),
        expires_at: current.expires_at,
    };
    if let Some(name) = &changes.name {
        settings.name = super::validate_name(name)?;
    }
    if let Some(v) = &changes.rate_limit_per_minute {
        settings.rate_limit_per_minute =
            super::validate_limit("rate_limit_per_minute", v, super::MAX_RATE_LIMIT_PER_MINUTE)?;
    }
    if let Some(v) = &changes.daily_limit {
        settings.daily_limit = super::validate_limit("daily_limit", v, super::MAX_DAILY_LIMIT)?;
    }
    if let Some(list) = &changes.ip_whitelist {
        settings.ip_whitelist = super::validate_whitelist(list)?;
    }
    if let Some(expires_at) = &changes.expires_at {
        settings.expires_at = expires_at
            .as_deref()
            .map(|t| super::validate_expires_at(t, now))
            .transpose()?;
    }
    Ok(settings)
}

impl Keys<'_> {
    /// The account's keys, with today's usage.
    pub async fn list(&self, account_id: &str, now: i64) -> Result<Vec<KeyRecord>, KeyError> {
        let mut conn = self.db.acquire().await?;
        Ok(store::list(&mut conn, account_id, &utc_day(now)).await?)
    }

    pub async fn get(&self, account_id: &str, id: &str, now: i64) -> Result<KeyRecord, KeyError> {
        let mut conn = self.db.acquire().await?;
        load(&mut conn, account_id, id, now).await
    }

    /// Checks the settings, then the plan, then the account's key bound, and stores the key.
    pub async fn create(
        &self,
        account_id: &str,
        new: NewKey,
        max_keys: u32,
        now: i64,
    ) -> Result<Issued, KeyError> {
        let settings = settings(new, now)?;
        let credentials = Credentials::generate();
        let mut tx = self.db.begin().await?;
        let account = accounts::get(&mut tx, account_id)
            .await?
            .ok_or(KeyError::NoAccount)?;
        if !account.plan.allows_api() {
            return Err(KeyError::PlanRequired(account.plan));
        }
        bounds::check(&mut tx, account_id, Bounded::ApiKeys, max_keys).await??;
        let (id, version) =
            store::insert(&mut tx, account_id, &settings, &credentials, now).await?;
        let record = load(&mut tx, account_id, &id, now).await?;
        tx.commit().await?;
        self.key_version.send_replace(version);
        tracing::info!(key_id = %id, prefix = %record.prefix, "API key created");
        Ok(Issued {
            record,
            credentials,
        })
    }

    /// Applies `changes` to a key that is not revoked.
    pub async fn update(
        &self,
        account_id: &str,
        id: &str,
        changes: KeyChanges,
        now: i64,
    ) -> Result<KeyRecord, KeyError> {
        let mut tx = self.db.begin().await?;
        let current = load(&mut tx, account_id, id, now).await?;
        if current.status == "revoked" {
            return Err(KeyError::Revoked);
        }
        let settings = apply(&current, &changes, now)?;
        let version = store::save_settings(&mut tx, account_id, id, &settings, now)
            .await?
            .ok_or(KeyError::NotFound)?;
        let record = load(&mut tx, account_id, id, now).await?;
        tx.commit().await?;
        self.key_version.send_replace(version);
        Ok(record)
    }

    /// Revokes a key for good. Revoking twice is harmless: nothing changes, no new version.
    pub async fn revoke(
        &self,
        account_id: &str,
        id: &str,
        now: i64,
    ) -> Result<KeyRecord, KeyError> {
        let mut tx = self.db.begin().await?;
        let current = load(&mut tx, account_id, id, now).await?;
        if current.status == "revoked" {
            tx.commit().await?;
            return Ok(current);
        }
        let version = store::revoke(&mut tx, account_id, id, now)
            .await?
            .ok_or(KeyError::NotFound)?;
        let record = load(&mut tx, account_id, id, now).await?;
        tx.commit().await?;
        self.key_version.send_replace(version);
        tracing::info!(key_id = %id, prefix = %record.prefix, "API key revoked");
        Ok(record)
    }

    /// Gives a key that is not revoked a new pair; the old one keeps working `grace_seconds`.
    pub async fn rotate(
        &self,
        account_id: &str,
        id: &str,
        grace_seconds: i64,
        now: i64,
    ) -> Result<Issued, KeyError> {
        let credentials = Credentials::generate();
        let mut tx = self.db.begin().await?;
        let current = load(&mut tx, account_id, id, now).await?;
        if current.status == "revoked" {
            return Err(KeyError::Revoked);
        }
        let version = store::rotate(
            &mut tx,
            account_id,
            &current,
            &credentials,
            grace_seconds * 1000,
            now,
        )
        .await?;
        let record = load(&mut tx, account_id, id, now).await?;
        tx.commit().await?;
        self.key_version.send_replace(version);
        tracing::info!(key_id = %id, prefix = %record.prefix, grace_seconds, "API key rotated");
        Ok(Issued {
            record,
            credentials,
        })
    }
}
