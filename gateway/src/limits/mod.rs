//! Per-key quotas (SPEC §5): a rolling 60-second window and a daily counter reset at 00:00 UTC.
//!
//! `decide` checks both and counts the request only if both pass, so refused requests never
//! count. The store is a trait because the Redis store (shared counters across gateways) needs
//! I/O; the in-process `memory` store answers without awaiting anything.

pub mod guardian;
pub mod limiter;
pub mod memory;
pub mod redis;
pub mod shares;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::redis::RedisStore;
use crate::config::{RuntimeConfig, StoreKind};
pub use limiter::{Admission, Limiter, LimiterMetrics};
pub use memory::MemoryStore;

pub const WINDOW_SECS: u64 = 60;
pub const DAY_SECS: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_minute: u32,
    pub per_day: u32,
}

/// What the limit headers report after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub minute_limit: u32,
    pub minute_remaining: u32,
    /// Seconds until the oldest request in the window leaves it (0 when the window is empty).
    pub minute_reset_secs: u64,
    pub day_limit: u32,
    pub day_remaining: u32,
    /// Seconds until 00:00 UTC.
    pub day_reset_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed(LimitState),
    RateLimited {
        state: LimitState,
        retry_after_secs: u64,
    },
    DailyLimitExceeded {
        state: LimitState,
        retry_after_secs: u64,
    },
}

impl Decision {
    pub fn state(&self) -> &LimitState {
        match self {
            Decision::Allowed(s) => s,
            Decision::RateLimited { state, .. } | Decision::DailyLimitExceeded { state, .. } => {
                state
            }
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer (or answered nonsense).
    #[error("limit store error: {0}")]
    Unreachable(String),
    /// The store answers but lost its counters (a Redis restarted without persistence): it
    /// must be re-seeded before it admits anything.
    #[error("limit store has no counters (not seeded)")]
    Unseeded,
}

/// Where the counters live. Implementations must make `check_and_count` atomic per key:
/// concurrent calls for one key never admit more than the quota.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// The same decision without a future, for stores that need no I/O. It spares the hot path
    /// the boxed future of an async trait call; stores that do I/O return `None`.
    fn check_and_count_sync(
        &self,
        _key_id: &str,
        _quota: Quota,
        _now_ms: i64,
    ) -> Option<Result<Decision, StoreError>> {
        None
    }

    /// Checks the minute window, then the day; counts the request only if both pass.
    async fn check_and_count(
        &self,
        key_id: &str,
        quota: Quota,
        now_ms: i64,
    ) -> Result<Decision, StoreError>;

    /// The current state without counting anything (for headers on refused requests).
    async fn peek(&self, key_id: &str, quota: Quota, now_ms: i64)
        -> Result<LimitState, StoreError>;

    /// Raises the key's count for `day` (days since the Unix epoch) to at least `count`; how daily
    /// usage recorded by the backend survives a gateway restart.
    async fn seed_daily(
        &self,
        key_id: &str,
        day: u32,
        count: u32,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Takes back one request accepted at `counted_at_ms`: the gateway answered it itself with
    /// 502/503/504, which counts against no limit (SPEC §10).
    async fn refund(&self, key_id: &str, counted_at_ms: i64) -> Result<(), StoreError>;

    /// Forgets idle counters to bound memory; stores that expire entries themselves ignore it.
    fn sweep(&self, _now_ms: i64) {}
}

/// The limiter `limits.store` asks for. Restart-only: a reload keeps the store it started with.
pub fn limiter_for(config: &RuntimeConfig, metrics: LimiterMetrics) -> Result<Limiter, StoreError> {
    let config = &config.limits;
    match (config.store, &config.redis_url) {
        (StoreKind::Memory, _) => Ok(Limiter::local_only(Arc::new(MemoryStore::new()), metrics)),
        (StoreKind::Redis, Some(url)) => {
            let store = RedisStore::open(url.expose())?;
            tracing::info!(
                url = %self::redis::redact_url(url.expose()),
                on_store_error = ?config.on_store_error,
                "limit store: redis"
            );
            Ok(Limiter::shared(
                Arc::new(store),
                config.on_store_error,
                metrics,
            ))
        }
        (StoreKind::Redis, None) => Err(StoreError::Unreachable(
            "limits.redis_url is not set".into(),
        )),
    }
}

/// Periodic housekeeping of the limit store.
pub struct LimitsMaintenance {
    limiter: Arc<Limiter>,
}

impl LimitsMaintenance {
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn new(limiter: Arc<Limiter>) -> LimitsMaintenance {
        LimitsMaintenance { limiter }
    }
}

#[async_trait]
impl pingora::services::background::BackgroundService for LimitsMaintenance {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Self::INTERVAL) => self.limiter.sweep(crate::clock::unix_ms()),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The limit decision for one request (SPEC §4 steps 6–7).
pub async fn decide(
    store: &dyn LimitStore,
    key_id: &str,
    quota: Quota,
    now_ms: i64,
) -> Result<Decision, StoreError> {
    if let Some(decision) = store.check_and_count_sync(key_id, quota, now_ms) {
        return decision;
    }
    store.check_and_count(key_id, quota, now_ms).await
}

/// Days since the Unix epoch of a Unix-ms instant (UTC).
pub fn utc_day(now_ms: i64) -> u32 {
    (now_ms.max(0) as u64 / 1000 / DAY_SECS) as u32
}

pub fn secs_until_utc_midnight(now_ms: i64) -> u64 {
    let secs = now_ms.max(0) as u64 / 1000;
    DAY_SECS - secs % DAY_SECS
}

/// Formats days since the epoch as `YYYY-MM-DD` (UTC), the inverse of `parse_day`.
pub fn format_day(day: u32) -> String {
    let epoch = time::Date::from_calendar_date(1970, time::Month::January, 1)
        .map(|d| d.to_julian_day())
        .unwrap_or(2_440_588);
    match time::Date::from_julian_day(epoch + day as i32) {
        Ok(d) => format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        // Beyond the year 9999: unreachable from a Unix-ms clock, but never panic on it.
        Err(_) => format!("day-{day}"),
    }
}

/// Parses the `YYYY-MM-DD` day of the sync wire into days since the epoch.
pub fn parse_day(s: &str) -> Option<u32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, format).ok()?;
    let days = date.to_julian_day()
        - time::Date::from_calendar_date(1970, time::Month::January, 1)
            .ok()?
            .to_julian_day();
    u32::try_from(days).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(parse_day("2026-11-24"), Some(utc_day(1_795_478_400_000)));
        assert_eq!(parse_day("nope"), None);
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(format_day(utc_day(1_795_478_400_000)), "2026-11-24");
        assert_eq!(parse_day(&format_day(20_000)), Some(20_000));
        assert_eq!(secs_until_utc_midnight(86_399_000), 1);
        assert_eq!(secs_until_utc_midnight(86_400_000), 86_400);
    }
}
