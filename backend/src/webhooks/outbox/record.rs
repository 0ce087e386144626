//! Recording attempts: the attempt rows, each delivery's next state and each endpoint's health
//! (its circuit and, after long failure, disabling it).

use std::time::Duration;

use rand::Rng;
use sqlx::AnyConnection;

use super::INSERT_CHUNK;
use crate::{
    clock::{now_ms, rfc3339},
    config::WebhooksConfig,
    db::{Db, QueryBuilder},
    ids::new_id,
    webhooks::{endpoints, metrics::Outcome},
};

/// Retry-After is honoured up to this, so a receiver cannot park a delivery for years.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `circuit_backoff` plus up to a quarter of it at random: endpoints that failed together (a
/// burst of timeouts at one moment) are probed again spread out, not as one burst whose results
/// all land in one recording transaction.
fn circuit_open_for(failures: i64, schedule: &[Duration]) -> Duration {
    let base = circuit_backoff(failures, schedule);
    let spread = (base.as_millis() as u64) / 4;
    base + Duration::from_millis(rand::thread_rng().gen_range(0..=spread))
}

/// How long a failing endpoint's circuit stays open after its `failures`-th consecutive failed
/// attempt: the retry schedule's first delay, doubling, at most 5 minutes and never longer than
/// the schedule's longest delay (the circuit must not hold a delivery back beyond its own
/// retry plan).
pub fn circuit_backoff(failures: i64, schedule: &[Duration]) -> Duration {
    let first = schedule.first().copied().unwrap_or(Duration::from_secs(1));
    let longest = schedule.iter().max().copied().unwrap_or(first);
    let exp = (failures.clamp(1, 20) - 1) as u32;
    first
        .saturating_mul(1u32 << exp)
        .min(Duration::from_secs(300))
        .min(longest)
}

/// One attempt's result, as the worker (or the test route) hands it to `record`.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub delivery_id: String,
    pub endpoint_id: String,
    /// Attempts before this one.
    pub attempt_count: i64,
    pub is_test: bool,
    /// When the attempt started (unix ms).
    pub at: i64,
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub response: Option<String>,
    /// From a 429/503's `Retry-After`.
    pub retry_after: Option<Duration>,
}

/// The delay before retry number `retry` (1-based): the schedule's entry plus up to 10% jitter,
/// which only adds time, so a burst of failures does not come back as a burst; a later
/// `Retry-After` wins.
pub fn retry_delay(schedule: &[Duration], retry: usize, retry_after: Option<Duration>) -> Duration {
    let base = schedule
        .get(retry.saturating_sub(1))
        .copied()
        .unwrap_or_default();
    let jitter_ms = (base.as_millis() as u64) / 10;
    let jitter = if jitter_ms > 0 {
        Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
    } else {
        Duration::ZERO
    };
    let delay = base + jitter;
    match retry_after {
        Some(after) => delay.max(after.min(MAX_RETRY_AFTER)),
        None => delay,
    }
}

/// What `record` did to the endpoint, for the caller's log line.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Endpoints this batch disabled.
    pub disabled: Vec<String>,
    /// Deliveries given a retry time (the worker re-reads when the next one is due).
    pub rescheduled: usize,
}

/// Writes a batch of attempts in one transaction: the attempt rows, each delivery's new state
/// (succeeded, failed, or pending with its next time), and each endpoint's health (failing
/// since when; disabled on 410 or after `disable_after` of failures).
#[tracing::instrument(name = "webhook_record", skip_all, fields(attempts = results.len()))]
pub async fn record(
    db: &Db,
    config: &WebhooksConfig,
    results: &[AttemptResult],
) -> Result<Recorded, sqlx::Error> {
    if results.is_empty() {
        return Ok(Recorded::default());
    }
    let now = now_ms();
    let mut tx = db.begin().await?;
    let gone = lock_endpoints(&mut tx, results).await?;
    let results: Vec<&AttemptResult> = results
        .iter()
        .filter(|r| !gone.contains(&r.endpoint_id.as_str()))
        .collect();
    if results.is_empty() {
        tx.commit().await?;
        return Ok(Recorded::default());
    }
    insert_attempts(&mut tx, &results).await?;
    let settled = settle_deliveries(&mut tx, config, &results, now).await?;
    let mut recorded = Recorded {
        disabled: Vec::new(),
        rescheduled: settled.retries.len(),
    };
    // Endpoint health, judged by each endpoint's latest attempt in this batch.
    let mut latest: Vec<&AttemptResult> = Vec::new();
    for r in results.iter().rev() {
        if !latest.iter().any(|l| l.endpoint_id == r.endpoint_id) {
            latest.push(r);
        }
    }
    for r in latest {
        if let Some(reason) = judge_endpoint(&mut tx, config, r, now).await? {
            if disable_endpoint(&mut tx, r, &reason, now).await? {
                recorded.disabled.push(r.endpoint_id.clone());
            }
        }
    }
    tx.commit().await?;
    settled.log();
    Ok(recorded)
}

/// Takes each endpoint's row lock first, in id order, and returns the endpoints that are gone.
/// An endpoint deleted while its request was in flight is seen as gone here and its results
/// are dropped, and a deletion racing this transaction waits for it and then removes what it
/// wrote. Locking endpoints before deliveries, as `endpoints::delete` does, keeps the two from
/// deadlocking on PostgreSQL.
async fn lock_endpoints<'r>(
    conn: &mut AnyConnection,
    results: &'r [AttemptResult],
) -> Result<Vec<&'r str>, sqlx::Error> {
    let mut endpoint_ids: Vec<&str> = results.iter().map(|r| r.endpoint_id.as_str()).collect();
    endpoint_ids.sort_unstable();
    endpoint_ids.dedup();
    let mut gone = Vec::new();
    for id in endpoint_ids {
        let found =
            sqlx::query("UPDATE webhook_endpoints SET updated_at = updated_at WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?
                .rows_affected();
        if found == 0 {
            gone.push(id);
        }
    }
    Ok(gone)
}

async fn insert_attempts(
    conn: &mut AnyConnection,
    results: &[&AttemptResult],
) -> Result<(), sqlx::Error> {
    for chunk in results.chunks(INSERT_CHUNK) {
        QueryBuilder::new(
            "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, at, outcome, status_code, \
             latency_ms, error, response) ",
        )
        .push_values(chunk, |mut row, r| {
            row.push_bind(new_id("att"))
                .push_bind(&r.delivery_id)
                .push_bind(&r.endpoint_id)
                .push_bind(r.at)
                .push_bind(r.outcome.as_str())
                .push_bind(r.status_code.map(i64::from))
                .push_bind(r.latency_ms)
                .push_bind(r.error.as_deref())
                .push_bind(r.response.as_deref());
        })
        .build()
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Which deliveries a batch settled and which it rescheduled, for the debug lines written once
/// the transaction has committed.
struct Settled<'r> {
    succeeded: Vec<&'r str>,
    failed: Vec<&'r str>,
    retries: Vec<(&'r str, Duration)>,
}

impl Settled<'_> {
    fn log(&self) {
        for (status, ids) in [("succeeded", &self.succeeded), ("failed", &self.failed)] {
            for id in ids {
                tracing::debug!(delivery_id = %id, status, "webhook delivery recorded");
            }
        }
        for (id, delay) in &self.retries {
            tracing::debug!(delivery_id = %id, retry_in_ms = delay.as_millis() as u64, "webhook delivery rescheduled");
        }
    }
}

/// Each delivery's next state. Settled deliveries are updated in one statement per status (per
/// chunk): in the common case of a healthy receiver that is one statement per batch instead of
/// one per delivery. `status = 'pending'` keeps a late result from reopening a delivery that
/// another attempt (an expired lease re-claimed elsewhere) already settled.
async fn settle_deliveries<'r>(
    conn: &mut AnyConnection,
    config: &WebhooksConfig,
    results: &[&'r AttemptResult],
    now: i64,
) -> Result<Settled<'r>, sqlx::Error> {
    let mut settled = Settled {
        succeeded: Vec::new(),
        failed: Vec::new(),
        retries: Vec::new(),
    };
    for r in results {
        let attempts = r.attempt_count + 1;
        let into = match r.outcome {
            Outcome::Success => &mut settled.succeeded,
            Outcome::Gone => &mut settled.failed,
            _ if r.is_test || attempts > config.retry_schedule.len() as i64 => &mut settled.failed,
            _ => {
                let delay = retry_delay(&config.retry_schedule, attempts as usize, r.retry_after);
                settled.retries.push((r.delivery_id.as_str(), delay));
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempt_count = attempt_count + 1, \
                     next_attempt_at = $1, locked_until = NULL, locked_by = NULL, updated_at = $2 \
                     WHERE id = $3 AND status = 'pending'",
                )
                .bind(now + delay.as_millis() as i64)
                .bind(now)
                .bind(&r.delivery_id)
                .execute(&mut *conn)
                .await?;
                continue;
            }
        };
        into.push(r.delivery_id.as_str());
    }
    for (status, ids) in [
        ("succeeded", &settled.succeeded),
        ("failed", &settled.failed),
    ] {
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut query = QueryBuilder::new("UPDATE webhook_deliveries SET status = ");
            query
                .push_bind(status)
                .push(
                    ", attempt_count = attempt_count + 1, next_attempt_at = NULL, \
                       locked_until = NULL, locked_by = NULL, updated_at = ",
                )
                .push_bind(now)
                .push(" WHERE status = 'pending' AND id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(*id);
            }
            list.push_unseparated(")");
            query.build().execute(&mut *conn).await?;
        }
    }
    Ok(settled)
}

/// Records the endpoint's health after its latest attempt and says why it must be disabled, if
/// it must: on 410 Gone, or when every attempt failed for `disable_after`. A failure opens the
/// circuit: nothing more goes to this endpoint until the backoff has passed, then one probe at a
/// time (`claimable_endpoints`, `take_probe`).
async fn judge_endpoint(
    conn: &mut AnyConnection,
    config: &WebhooksConfig,
    r: &AttemptResult,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    match r.outcome {
        Outcome::Success => {
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = NULL, consecutive_failures = 0, \
                 circuit_until = NULL, last_success_at = $1 WHERE id = $2",
            )
            .bind(r.at)
            .bind(&r.endpoint_id)
            .execute(&mut *conn)
            .await?;
            Ok(None)
        }
        Outcome::Gone => Ok(Some("the endpoint answered 410 Gone".to_string())),
        _ => {
            let (failing_since, failures): (Option<i64>, i64) = sqlx::query_as(
                "SELECT failing_since, consecutive_failures FROM webhook_endpoints WHERE id = $1",
            )
            .bind(&r.endpoint_id)
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or((None, 0));
            let failures = failures + 1;
            let failing_since = failing_since.unwrap_or(r.at);
            sqlx::query(
                "UPDATE webhook_endpoints SET failing_since = $1, consecutive_failures = $2, \
                 circuit_until = $3 WHERE id = $4",
            )
            .bind(failing_since)
            .bind(failures)
            .bind(now + circuit_open_for(failures, &config.retry_schedule).as_millis() as i64)
            .bind(&r.endpoint_id)
            .execute(&mut *conn)
            .await?;
            let disable_before = now - config.disable_after.as_millis() as i64;
            if failing_since > disable_before {
                return Ok(None);
            }
            Ok(Some(format!(
                "every attempt failed for {} (since {})",
                humantime::format_duration(config.disable_after),
                rfc3339(failing_since)
            )))
        }
    }
}

/// Disables the endpoint (once: false if it already was) and ends its waiting deliveries; each
/// can be retried by hand once the endpoint is fixed.
async fn disable_endpoint(
    conn: &mut AnyConnection,
    r: &AttemptResult,
    reason: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let disabled = sqlx::query(
        "UPDATE webhook_endpoints SET enabled = 0, disabled_at = $1, disabled_reason = $2, \
         updated_at = $1 WHERE id = $3 AND enabled = 1",
    )
    .bind(now)
    .bind(reason)
    .bind(&r.endpoint_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if disabled == 0 {
        return Ok(false);
    }
    let abandoned = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, \
         locked_until = NULL, locked_by = NULL, updated_at = $1 \
         WHERE endpoint_id = $2 AND status = 'pending'",
    )
    .bind(now)
    .bind(&r.endpoint_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    endpoints::add_log(
        conn,
        &r.endpoint_id,
        now,
        &format!(
            "disabled: {reason} (delivery {}); {abandoned} pending deliveries marked failed",
            r.delivery_id
        ),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_only_adds_up_to_a_tenth_and_retry_after_wins_when_later() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(100)];
        for _ in 0..200 {
            let d = retry_delay(&schedule, 1, None);
            assert!(
                d >= Duration::from_secs(10) && d <= Duration::from_secs(11),
                "{d:?}"
            );
            let d = retry_delay(&schedule, 2, None);
            assert!(
                d >= Duration::from_secs(100) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        let d = retry_delay(&schedule, 1, Some(Duration::from_secs(1)));
        assert!(d >= Duration::from_secs(10));
        assert_eq!(
            retry_delay(&schedule, 1, Some(Duration::from_secs(10 * 24 * 3600))),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn the_circuit_backs_off_doubling_within_the_retry_schedule() {
        let schedule: Vec<Duration> = [5, 300, 1800, 7200]
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect();
        let secs = |n| circuit_backoff(n, &schedule).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(7)], [5, 10, 20, 300]);
        assert_eq!(secs(1000), 300);
        let short = [Duration::from_millis(10), Duration::from_millis(40)];
        assert_eq!(circuit_backoff(9, &short), Duration::from_millis(40));
    }
}
