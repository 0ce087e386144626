//! Leasing: which endpoints have claimable deliveries, the probe of an endpoint whose circuit is
//! half open, claiming deliveries under a lease, and giving them back.

use super::{event_body, Job, INSERT_CHUNK};
use crate::{
    clock::now_ms,
    db::{Db, QueryBuilder},
    webhooks::endpoints,
};

/// ` AND column NOT IN (...)` for the endpoints a worker is busy with; nothing when none.
fn exclude<'args>(query: &mut QueryBuilder<'args>, column: &str, busy: &'args [String]) {
    if busy.is_empty() {
        return;
    }
    query.push(format_args!(" AND {column} NOT IN ("));
    let mut list = query.separated(", ");
    for id in busy {
        list.push_bind(id);
    }
    list.push_unseparated(")");
}

/// An endpoint with deliveries the worker may claim now, and what its circuit says.
#[derive(Debug, Clone)]
pub struct Claimable {
    pub id: String,
    /// Its last attempt failed: only a probe (one delivery) may go out, and only once the
    /// circuit's backoff has passed.
    pub failing: bool,
    /// It answered successfully at least once; until then it gets one delivery at a time.
    pub proven: bool,
}

/// Enabled endpoints not in `busy` whose circuit is closed (or half open: backoff over) and that
/// have due, unleased deliveries. Healthy ones that answered before first, then those that never
/// answered yet, then failing ones; each group by id.
/// Claims go per endpoint from here, never in one global queue order: a pile of due deliveries
/// for dead endpoints cannot push a healthy endpoint's delivery back.
pub async fn claimable_endpoints(
    db: &Db,
    busy: &[String],
    now: i64,
) -> Result<Vec<Claimable>, sqlx::Error> {
    let mut query = QueryBuilder::new(
        "SELECT w.id, w.consecutive_failures, w.last_success_at FROM webhook_endpoints w \
         WHERE w.enabled = 1 AND (w.circuit_until IS NULL OR w.circuit_until <= ",
    );
    // `now` is $1, which the rest of the statement uses again.
    query.push_bind(now).push(")");
    exclude(&mut query, "w.id", busy);
    query.push(
        " AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = w.id \
             AND d.status = 'pending' AND d.next_attempt_at <= $1 \
             AND (d.locked_until IS NULL OR d.locked_until <= $1)) \
         ORDER BY CASE WHEN w.consecutive_failures > 0 THEN 2 \
                       WHEN w.last_success_at IS NULL THEN 1 ELSE 0 END, w.id",
    );
    Ok(query
        .build_query_as::<(String, i64, Option<i64>)>()
        .fetch_all(db)
        .await?
        .into_iter()
        .map(|(id, failures, success)| Claimable {
            id,
            failing: failures > 0,
            proven: success.is_some(),
        })
        .collect())
}

/// Takes a failing endpoint's probe: holds its circuit until `lease_until`, so no other worker
/// (of any backend) probes it meanwhile; the attempt's result sets the circuit anew. `false`
/// if someone else took it first.
pub async fn take_probe(
    db: &Db,
    endpoint_id: &str,
    now: i64,
    lease_until: i64,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE webhook_endpoints SET circuit_until = $1 WHERE id = $2 \
         AND consecutive_failures > 0 AND (circuit_until IS NULL OR circuit_until <= $3)",
    )
    .bind(lease_until)
    .bind(endpoint_id)
    .bind(now)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// Leases up to `limit` of one endpoint's due deliveries, oldest due first, to `worker` until
/// `lease_until`. Rows another backend is claiming are skipped, not waited for; the UPDATE
/// re-checks, so two backends never both get one.
pub async fn claim_endpoint(
    db: &Db,
    worker: &str,
    endpoint_id: &str,
    now: i64,
    lease_until: i64,
    limit: usize,
) -> Result<Vec<String>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let sql = format!(
        "UPDATE webhook_deliveries SET locked_until = $1, locked_by = $2 \
         WHERE id IN (SELECT id FROM webhook_deliveries WHERE endpoint_id = $3 \
             AND status = 'pending' AND next_attempt_at <= $4 \
             AND (locked_until IS NULL OR locked_until <= $4) \
             ORDER BY next_attempt_at, id LIMIT {limit}{lock}) \
           AND status = 'pending' AND (locked_until IS NULL OR locked_until <= $4) \
         RETURNING id",
        lock = crate::db::skip_locked(&conn),
    );
    let rows = sqlx::query_as::<_, (String,)>(&sql)
        .bind(lease_until)
        .bind(worker)
        .bind(endpoint_id)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// A delivery row of `load_jobs` with its endpoint's and event's columns.
#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    endpoint_id: String,
    event_id: String,
    event_type: String,
    attempt_count: i64,
    /// A test delivery carries its own body; the others' is built from their event.
    payload: Option<String>,
    account_id: String,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<i64>,
    /// The event's columns; absent for a delivery without a stored event.
    data: Option<String>,
    created_at: Option<i64>,
}

/// Loads deliveries (claimed ones, or the one a test sends) with their endpoint and event.
pub async fn load_jobs(
    db: &Db,
    secrets: &crate::secrets::Secrets,
    ids: &[String],
) -> Result<Vec<Job>, sqlx::Error> {
    let mut jobs = Vec::with_capacity(ids.len());
    let now = now_ms();
    for chunk in ids.chunks(INSERT_CHUNK) {
        let mut query = QueryBuilder::new(
            "SELECT d.id, d.endpoint_id, d.event_id, d.event_type, d.attempt_count, d.payload, \
                    d.account_id, w.url, w.secret, w.previous_secret, w.previous_secret_until, \
                    e.data, e.created_at \
             FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             LEFT JOIN events e ON e.id = d.event_id \
             WHERE d.id IN (",
        );
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(id);
        }
        list.push_unseparated(") ORDER BY d.next_attempt_at, d.id");
        for row in query.build_query_as::<JobRow>().fetch_all(db).await? {
            let body = match row.payload {
                Some(payload) => payload,
                None => event_body(
                    &row.event_id,
                    &row.event_type,
                    row.created_at.unwrap_or(now),
                    &row.account_id,
                    &row.data.unwrap_or_default(),
                ),
            };
            jobs.push(Job {
                keys: endpoints::signing_keys(
                    secrets,
                    &row.secret,
                    row.previous_secret.as_deref(),
                    row.previous_secret_until,
                    now,
                ),
                delivery_id: row.id,
                endpoint_id: row.endpoint_id,
                event_id: row.event_id,
                event_type: row.event_type,
                attempt_count: row.attempt_count,
                url: row.url,
                body: bytes::Bytes::from(body),
            });
        }
    }
    Ok(jobs)
}

/// Gives claimed deliveries back (shutdown, or a queued one whose lease would run out before it
/// could be sent), so they are due again at once rather than when the lease expires.
pub async fn release(db: &Db, worker: &str, ids: Option<&[String]>) -> Result<(), sqlx::Error> {
    match ids {
        None => {
            sqlx::query(
                "UPDATE webhook_deliveries SET locked_until = NULL, locked_by = NULL \
                 WHERE locked_by = $1 AND status = 'pending'",
            )
            .bind(worker)
            .execute(db)
            .await?;
        }
        Some(ids) => {
            for id in ids {
                sqlx::query(
                    "UPDATE webhook_deliveries SET locked_until = NULL, locked_by = NULL \
                     WHERE id = $1 AND locked_by = $2 AND status = 'pending'",
                )
                .bind(id)
                .bind(worker)
                .execute(db)
                .await?;
            }
        }
    }
    Ok(())
}

/// The earliest time a delivery of an endpoint not in `busy` becomes due (its endpoint's circuit
/// permitting), for the worker's sleep. Read per endpoint from the `(endpoint_id,
/// next_attempt_at)` index: one lookup per endpoint, however many deliveries are pending (a
/// scan of every pending delivery, done after each claim round, was what a backlog of hundreds
/// of thousands made slow). Leases are not looked at: the worker's poll covers their expiry.
pub async fn next_due(db: &Db, busy: &[String]) -> Result<Option<i64>, sqlx::Error> {
    let mut query = QueryBuilder::new(
        "SELECT MIN(CASE WHEN circuit_until IS NOT NULL AND circuit_until > due \
                    THEN circuit_until ELSE due END) \
         FROM (SELECT w.circuit_until, \
                 (SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d \
                  WHERE d.endpoint_id = w.id AND d.status = 'pending') AS due \
               FROM webhook_endpoints w WHERE w.enabled = 1",
    );
    exclude(&mut query, "w.id", busy);
    query.push(") due_by_endpoint WHERE due IS NOT NULL");
    Ok(query
        .build_query_as::<(Option<i64>,)>()
        .fetch_one(db)
        .await?
        .0)
}
