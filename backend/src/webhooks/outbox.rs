//! The outbox: deliveries fanned out from `events`, claimed under a lease, and the record of
//! every attempt.
//!
//! Fan-out reads unmarked events in `created_at` order from just behind a cursor. For each batch
//! it inserts the events' markers into `webhook_fanout` with `ON CONFLICT DO NOTHING RETURNING`,
//! and creates deliveries only for the markers it actually inserted, in the same transaction: an
//! event is fanned out once, even with several backends racing or after a restart. Because an
//! event's `created_at` is taken before its transaction commits, a slow transaction (PostgreSQL,
//! several connections) can commit an event well behind the cursor; a periodic sweep of the last
//! minute finds those stragglers through the markers.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rand::Rng;
use serde::Serialize;
use sqlx::Row;
use tokio::sync::watch;

use super::{endpoints, metrics::Outcome, TEST_EVENT_TYPE};
use crate::{
    config::WebhooksConfig,
    db::Db,
    ids::{new_id, now_ms, rfc3339},
    state::AppState,
};

/// Events read per fan-out statement.
const FAN_OUT_BATCH: i64 = 500;
/// How far behind the cursor the sweep looks for events committed late.
const LOOKBACK_MS: i64 = 60_000;
/// How far behind the cursor every pass looks (see `FanOut::pass`).
const TAIL_OVERLAP_MS: i64 = 250;
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// The fan-out's fallback poll, for wake-ups that were missed (another backend wrote the event).
const FAN_OUT_POLL: Duration = Duration::from_millis(500);
/// Markers older than this behind the newest are deleted; the newest one is the resume point.
const MARKER_RETENTION_MS: i64 = 24 * 3600 * 1000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Rows per multi-row INSERT: far below SQLite's and PostgreSQL's bind-parameter limits.
const INSERT_CHUNK: usize = 400;
/// Retry-After is honoured up to this, so a receiver cannot park a delivery for years.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Snippet of the response body kept per attempt.
pub const RESPONSE_SNIPPET: usize = 1024;

#[derive(Debug, Clone)]
struct EventRow {
    id: String,
    account_id: String,
    event_type: String,
    created_at: i64,
}

struct EndpointRow {
    id: String,
    account_id: String,
    events: Vec<String>,
    created_at: i64,
}

/// Fan-out state: how far the tail read got, and when the sweep last ran.
pub struct FanOut {
    /// The newest `created_at` fanned out by this process.
    cursor: i64,
    last_sweep: Option<Instant>,
    /// `account_limits.max_pending_deliveries_per_endpoint` (unbounded until `bounded` sets it).
    max_pending: u32,
    /// Deliveries not created because their endpoint was at `max_pending`, since the last `take`.
    refused: u64,
}

/// Events not yet marked as fanned out, oldest first.
const UNMARKED: &str = "NOT EXISTS (SELECT 1 FROM webhook_fanout f WHERE f.event_id = events.id)";

impl FanOut {
    /// Resumes after the newest event already fanned out, less the lookback (the first pass
    /// sweeps, so nothing committed late before a restart is missed either).
    pub async fn resume(db: &Db) -> Result<Self, sqlx::Error> {
        let (newest,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(created_at) FROM webhook_fanout")
                .fetch_one(db)
                .await?;
        Ok(Self {
            cursor: newest.map_or(0, |t| t - LOOKBACK_MS),
            last_sweep: None,
            max_pending: u32::MAX,
            refused: 0,
        })
    }

    /// Bounds the pending deliveries of each endpoint.
    pub fn bounded(mut self, max_pending_per_endpoint: u32) -> Self {
        self.max_pending = max_pending_per_endpoint;
        self
    }

    /// Deliveries refused at the bound since the last call.
    pub fn take_refused(&mut self) -> u64 {
        std::mem::take(&mut self.refused)
    }

    /// Fans out everything new; returns how many deliveries were created.
    pub async fn pass(&mut self, db: &Db) -> Result<usize, sqlx::Error> {
        let mut created = 0;
        // The tail: unmarked events from a little before the cursor. Ids order events only
        // between milliseconds (ULIDs are random within one), and `created_at` is taken before
        // commit, so a strict "after the cursor" would skip an event written in the cursor's
        // millisecond, or committed a moment late; the overlap and the marker check cover both.
        loop {
            let rows = read_events(
                db,
                &format!("WHERE created_at >= $1 AND {UNMARKED} ORDER BY created_at, id"),
                self.cursor - TAIL_OVERLAP_MS,
            )
            .await?;
            if let Some(newest) = rows.iter().map(|e| e.created_at).max() {
                self.cursor = self.cursor.max(newest);
            }
            let full = rows.len() as i64 == FAN_OUT_BATCH;
            created += self.fan_out(db, &rows).await?;
            if !full {
                break;
            }
        }
        // The sweep: the last minute, for events committed long after they were created.
        if self.last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            self.last_sweep = Some(Instant::now());
            loop {
                let rows = read_events(
                    db,
                    &format!("WHERE created_at >= $1 AND {UNMARKED} ORDER BY created_at, id"),
                    self.cursor - LOOKBACK_MS,
                )
                .await?;
                let full = rows.len() as i64 == FAN_OUT_BATCH;
                created += self.fan_out(db, &rows).await?;
                if !full {
                    break;
                }
            }
        }
        Ok(created)
    }
}

/// A page of events; the marker check in `condition` makes the next page start where this one
/// ended, since `fan_out` marks every event it is given.
async fn read_events(db: &Db, condition: &str, since: i64) -> Result<Vec<EventRow>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(&format!(
        "SELECT id, account_id, type, created_at FROM events {condition} LIMIT $2"
    ))
    .bind(since)
    .bind(FAN_OUT_BATCH)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, account_id, event_type, created_at)| EventRow {
            id,
            account_id,
            event_type,
            created_at,
        })
        .collect())
}

/// `($1, $2), ($3, $4), ...` for a multi-row INSERT.
fn placeholders(rows: usize, columns: usize) -> String {
    placeholders_with(rows, columns, "")
}

/// The same, each row ending with constant SQL (`'pending', 0`) that need not be bound.
fn placeholders_with(rows: usize, columns: usize, constants: &str) -> String {
    (0..rows)
        .map(|r| {
            let mut cols = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect::<Vec<_>>();
            if !constants.is_empty() {
                cols.push(constants.to_string());
            }
            format!("({})", cols.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl FanOut {
    /// `fan_out` under this fan-out's bound, counting what the bound refused.
    async fn fan_out(&mut self, db: &Db, events: &[EventRow]) -> Result<usize, sqlx::Error> {
        let (created, refused) = fan_out(db, events, self.max_pending).await?;
        self.refused += refused;
        Ok(created)
    }
}

/// Marks the events and creates their deliveries in one transaction, except deliveries to an
/// endpoint that has `max_pending` pending already (returned as the second count).
#[tracing::instrument(name = "webhook_fan_out", skip_all, fields(events = events.len()))]
async fn fan_out(
    db: &Db,
    events: &[EventRow],
    max_pending: u32,
) -> Result<(usize, u64), sqlx::Error> {
    // Read outside the transaction: the endpoint table is small, and the SQLite connection
    // should be held by the transaction as briefly as possible.
    let endpoints: Vec<EndpointRow> = sqlx::query_as::<_, (String, String, String, i64)>(
        "SELECT id, account_id, events, created_at FROM webhook_endpoints WHERE enabled = 1",
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|(id, account_id, events, created_at)| EndpointRow {
        id,
        account_id,
        events: endpoints::parse_events(&events),
        created_at,
    })
    .collect();

    let mut tx = db.begin().await?;
    let mut marked = std::collections::HashSet::new();
    for chunk in events.chunks(INSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO webhook_fanout (event_id, created_at) VALUES {} \
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query_as::<_, (String,)>(&sql);
        for event in chunk {
            query = query.bind(&event.id).bind(event.created_at);
        }
        for (id,) in query.fetch_all(&mut *tx).await? {
            marked.insert(id);
        }
    }
    let now = now_ms();
    let mut deliveries: Vec<(String, &EventRow, &EndpointRow)> = events
        .iter()
        .filter(|e| marked.contains(&e.id))
        .flat_map(|event| {
            endpoints
                .iter()
                .filter(move |ep| {
                    ep.account_id == event.account_id
                        // An endpoint gets the events that happen after it exists.
                        && ep.created_at <= event.created_at
                        && endpoints::subscribes(&ep.events, &event.event_type)
                })
                .map(move |ep| (new_id("dlv"), event, ep))
        })
        .collect();
    let refused = apply_pending_bound(&mut tx, &mut deliveries, max_pending, now).await?;
    for chunk in deliveries.chunks(INSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, event_id, event_type, \
             next_attempt_at, created_at, updated_at, status, attempt_count) VALUES {} \
             ON CONFLICT (endpoint_id, event_id) DO NOTHING",
            placeholders_with(chunk.len(), 8, "'pending', 0")
        );
        let mut query = sqlx::query(&sql);
        for (id, event, ep) in chunk {
            query = query
                .bind(id)
                .bind(&event.account_id)
                .bind(&ep.id)
                .bind(&event.id)
                .bind(&event.event_type)
                .bind(now)
                .bind(now)
                .bind(now);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    // The link from an event to its deliveries, for following one event through the logs.
    for (id, event, ep) in &deliveries {
        tracing::debug!(
            event_id = %event.id,
            event_type = %event.event_type,
            delivery_id = %id,
            endpoint_id = %ep.id,
            "webhook delivery created"
        );
    }
    Ok((deliveries.len(), refused))
}

/// Drops the deliveries that would take an endpoint past `max_pending` pending deliveries
/// (issue 9 point 8: a tenant whose endpoint is down cannot fill the outbox). Only that endpoint
/// misses those events; the refusal is noted in its log (once per pass) and returned for the
/// metric and the warning. Counting costs at most `max_pending` index entries per endpoint (the
/// partial index of pending deliveries). With several backends fanning out at once, each counts
/// before the others commit: the bound can be passed by at most one pass of each.
async fn apply_pending_bound(
    tx: &mut sqlx::AnyConnection,
    deliveries: &mut Vec<(String, &EventRow, &EndpointRow)>,
    max_pending: u32,
    now: i64,
) -> Result<u64, sqlx::Error> {
    if max_pending == u32::MAX || deliveries.is_empty() {
        return Ok(0);
    }
    let mut wanted: HashMap<&str, i64> = HashMap::new();
    for (_, _, ep) in deliveries.iter() {
        *wanted.entry(ep.id.as_str()).or_default() += 1;
    }
    let ids: Vec<&str> = wanted.keys().copied().collect();
    let mut room: HashMap<String, i64> = ids
        .iter()
        .map(|id| (id.to_string(), i64::from(max_pending)))
        .collect();
    for chunk in ids.chunks(INSERT_CHUNK) {
        let sql = format!(
            "SELECT endpoint_id, CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries \
             WHERE status = 'pending' AND endpoint_id IN ({}) GROUP BY endpoint_id",
            (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for (id, pending) in query.fetch_all(&mut *tx).await? {
            if let Some(left) = room.get_mut(&id) {
                *left -= pending;
            }
        }
    }
    let mut refused: HashMap<String, u64> = HashMap::new();
    deliveries.retain(|(_, _, ep)| match room.get_mut(&ep.id) {
        Some(left) if *left > 0 => {
            *left -= 1;
            true
        }
        _ => {
            *refused.entry(ep.id.clone()).or_default() += 1;
            false
        }
    });
    let mut total = 0;
    for (endpoint_id, count) in refused {
        total += count;
        tracing::warn!(
            endpoint_id = %endpoint_id,
            events = count,
            max_pending,
            "webhook endpoint at its bound of pending deliveries; events not queued for it"
        );
        let note = format!(
            "{count} event(s) not queued: {max_pending} deliveries already pending \
             (account_limits.max_pending_deliveries_per_endpoint); fix the endpoint, \
             its backlog is retried"
        );
        endpoints::add_log(tx, &endpoint_id, now, &note).await?;
    }
    Ok(total)
}

/// Keeps `webhook_fanout` from growing forever; the newest markers stay as the resume point.
async fn prune_markers(db: &Db) -> Result<(), sqlx::Error> {
    let (newest,): (Option<i64>,) = sqlx::query_as("SELECT MAX(created_at) FROM webhook_fanout")
        .fetch_one(db)
        .await?;
    if let Some(newest) = newest {
        sqlx::query("DELETE FROM webhook_fanout WHERE created_at < $1")
            .bind(newest - MARKER_RETENTION_MS)
            .execute(db)
            .await?;
    }
    Ok(())
}

/// Finished deliveries deleted per transaction, so pruning never holds SQLite's one writer long.
const PRUNE_BATCH: i64 = 1000;

/// Deletes succeeded and failed deliveries last touched before `cutoff_ms`, with their attempts,
/// and endpoint log lines older than it. Pending deliveries stay whatever their age: they are
/// work, not history. Returns the number of deliveries deleted.
pub async fn prune_history(db: &Db, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
    let old = "SELECT id FROM webhook_deliveries \
               WHERE status <> 'pending' AND updated_at < $1 ORDER BY id LIMIT $2";
    let mut deleted = 0;
    loop {
        let mut tx = db.begin().await?;
        sqlx::query(&format!(
            "DELETE FROM webhook_attempts WHERE delivery_id IN ({old})"
        ))
        .bind(cutoff_ms)
        .bind(PRUNE_BATCH)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(&format!(
            "DELETE FROM webhook_deliveries WHERE id IN ({old})"
        ))
        .bind(cutoff_ms)
        .bind(PRUNE_BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        deleted += n;
        if n < PRUNE_BATCH as u64 {
            break;
        }
    }
    sqlx::query("DELETE FROM webhook_endpoint_log WHERE at < $1")
        .bind(cutoff_ms)
        .execute(db)
        .await?;
    Ok(deleted)
}

/// Both kinds of pruning; run by the fan-out loop at start and then every `PRUNE_EVERY`.
async fn prune(state: &AppState) {
    if let Err(e) = prune_markers(&state.db).await {
        tracing::warn!(error = %e, "pruning webhook fan-out markers");
    }
    let retention =
        i64::try_from(state.config.webhooks.history_retention.as_millis()).unwrap_or(i64::MAX);
    match prune_history(&state.db, now_ms().saturating_sub(retention)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deliveries = n, "pruned webhook delivery history"),
        Err(e) => tracing::warn!(error = %e, "pruning webhook delivery history"),
    }
}

/// The fan-out loop: woken by `events_written()`, polling as a fallback.
pub async fn run_fan_out(state: AppState, mut stop: watch::Receiver<bool>) {
    let max_pending = state
        .config
        .account_limits
        .max_pending_deliveries_per_endpoint;
    let mut fan_out = loop {
        match FanOut::resume(&state.db).await {
            Ok(f) => break f.bounded(max_pending),
            Err(e) => {
                tracing::error!(error = %e, "webhook fan-out cannot start; retrying");
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    prune(&state).await;
    let mut last_prune = Instant::now();
    loop {
        // Registered before the pass, so an event written during the pass still wakes us.
        let notified = state.events_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match fan_out.pass(&state.db).await {
            Ok(0) => {}
            Ok(_) => state.webhooks.wake.notify_one(),
            Err(e) => tracing::warn!(error = %e, "webhook fan-out failed; will retry"),
        }
        let refused = fan_out.take_refused();
        if refused > 0 {
            state
                .webhooks
                .metrics
                .deliveries_refused
                .with_label_values(&["endpoint_backlog_full"])
                .inc_by(refused);
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            prune(&state).await;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = &mut notified => {}
            _ = tokio::time::sleep(FAN_OUT_POLL) => {}
        }
    }
}

/// A claimed delivery with everything needed to send it. Its `Debug` leaves the keys out.
#[derive(Clone)]
pub struct Job {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// Attempts before this one.
    pub attempt_count: i64,
    pub url: String,
    pub keys: Vec<Vec<u8>>,
    pub body: bytes::Bytes,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("delivery_id", &self.delivery_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("attempt_count", &self.attempt_count)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The SPEC §8 body. `data` is stored as JSON text by `events::emit` and goes in verbatim.
pub fn event_body(
    id: &str,
    event_type: &str,
    created_at: i64,
    account_id: &str,
    data: &str,
) -> String {
    let s = |v: &str| serde_json::Value::from(v).to_string();
    format!(
        r#"{{"id":{},"type":{},"created_at":{},"account_id":{},"data":{}}}"#,
        s(id),
        s(event_type),
        s(&rfc3339(created_at)),
        s(account_id),
        if data.trim().is_empty() { "null" } else { data }
    )
}

fn exclusion(column: &str, busy: &[String], first: usize) -> String {
    if busy.is_empty() {
        return String::new();
    }
    let list = (0..busy.len())
        .map(|i| format!("${}", i + first))
        .collect::<Vec<_>>()
        .join(", ");
    format!("AND {column} NOT IN ({list})")
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
    let sql = format!(
        "SELECT w.id, w.consecutive_failures, w.last_success_at FROM webhook_endpoints w \
         WHERE w.enabled = 1 AND (w.circuit_until IS NULL OR w.circuit_until <= $1) {} \
           AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.endpoint_id = w.id \
             AND d.status = 'pending' AND d.next_attempt_at <= $1 \
             AND (d.locked_until IS NULL OR d.locked_until <= $1)) \
         ORDER BY CASE WHEN w.consecutive_failures > 0 THEN 2 \
                       WHEN w.last_success_at IS NULL THEN 1 ELSE 0 END, w.id",
        exclusion("w.id", busy, 2)
    );
    let mut query = sqlx::query_as::<_, (String, i64, Option<i64>)>(&sql).bind(now);
    for id in busy {
        query = query.bind(id);
    }
    Ok(query
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

/// Loads deliveries (claimed ones, or the one a test sends) with their endpoint and event.
pub async fn load_jobs(
    db: &Db,
    secrets: &crate::secrets::Secrets,
    ids: &[String],
) -> Result<Vec<Job>, sqlx::Error> {
    let mut jobs = Vec::with_capacity(ids.len());
    let now = now_ms();
    for chunk in ids.chunks(INSERT_CHUNK) {
        let list = (1..=chunk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT d.id, d.endpoint_id, d.event_id, d.event_type, d.attempt_count, d.payload, \
                    d.account_id, w.url, w.secret, w.previous_secret, w.previous_secret_until, \
                    e.data, e.created_at \
             FROM webhook_deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
             LEFT JOIN events e ON e.id = d.event_id \
             WHERE d.id IN ({list}) ORDER BY d.next_attempt_at, d.id"
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        for row in query.fetch_all(db).await? {
            let event_id: String = row.try_get("event_id")?;
            let event_type: String = row.try_get("event_type")?;
            let body = match row.try_get::<Option<String>, _>("payload")? {
                Some(payload) => payload,
                None => event_body(
                    &event_id,
                    &event_type,
                    row.try_get::<Option<i64>, _>("created_at")?.unwrap_or(now),
                    &row.try_get::<String, _>("account_id")?,
                    &row.try_get::<Option<String>, _>("data")?
                        .unwrap_or_default(),
                ),
            };
            let secret: String = row.try_get("secret")?;
            let previous: Option<String> = row.try_get("previous_secret")?;
            jobs.push(Job {
                delivery_id: row.try_get("id")?,
                endpoint_id: row.try_get("endpoint_id")?,
                event_id,
                event_type,
                attempt_count: row.try_get("attempt_count")?,
                url: row.try_get("url")?,
                keys: endpoints::signing_keys(
                    secrets,
                    &secret,
                    previous.as_deref(),
                    row.try_get("previous_secret_until")?,
                    now,
                ),
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
    let exclude = exclusion("w.id", busy, 1);
    let sql = format!(
        "SELECT MIN(CASE WHEN circuit_until IS NOT NULL AND circuit_until > due \
                    THEN circuit_until ELSE due END) \
         FROM (SELECT w.circuit_until, \
                 (SELECT MIN(d.next_attempt_at) FROM webhook_deliveries d \
                  WHERE d.endpoint_id = w.id AND d.status = 'pending') AS due \
               FROM webhook_endpoints w WHERE w.enabled = 1 {exclude}) due_by_endpoint \
         WHERE due IS NOT NULL"
    );
    let mut query = sqlx::query_as::<_, (Option<i64>,)>(&sql);
    for id in busy {
        query = query.bind(id);
    }
    Ok(query.fetch_one(db).await?.0)
}

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
    let mut recorded = Recorded::default();
    let mut tx = db.begin().await?;
    // Take each endpoint's row lock first, in id order: an endpoint deleted while its request
    // was in flight is seen as gone here and its results are dropped, and a deletion racing
    // this transaction waits for it and then removes what it wrote. Locking endpoints before
    // deliveries, as `endpoints::delete` does, keeps the two from deadlocking on PostgreSQL.
    let mut endpoint_ids: Vec<&str> = results.iter().map(|r| r.endpoint_id.as_str()).collect();
    endpoint_ids.sort_unstable();
    endpoint_ids.dedup();
    let mut gone = Vec::new();
    for id in endpoint_ids {
        let found =
            sqlx::query("UPDATE webhook_endpoints SET updated_at = updated_at WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if found == 0 {
            gone.push(id);
        }
    }
    let results: Vec<&AttemptResult> = results
        .iter()
        .filter(|r| !gone.contains(&r.endpoint_id.as_str()))
        .collect();
    if results.is_empty() {
        tx.commit().await?;
        return Ok(recorded);
    }
    for chunk in results.chunks(INSERT_CHUNK) {
        let sql = format!(
            "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, at, outcome, status_code, \
             latency_ms, error, response) VALUES {}",
            placeholders(chunk.len(), 9)
        );
        let mut query = sqlx::query(&sql);
        for r in chunk {
            query = query
                .bind(new_id("att"))
                .bind(&r.delivery_id)
                .bind(&r.endpoint_id)
                .bind(r.at)
                .bind(r.outcome.as_str())
                .bind(r.status_code.map(i64::from))
                .bind(r.latency_ms)
                .bind(r.error.as_deref())
                .bind(r.response.as_deref());
        }
        query.execute(&mut *tx).await?;
    }
    // Settled deliveries are updated in one statement per status (per chunk): in the common
    // case of a healthy receiver that is one statement per batch instead of one per delivery.
    // `status = 'pending'` keeps a late result from reopening a delivery that another attempt
    // (an expired lease re-claimed elsewhere) already settled.
    let mut succeeded = Vec::new();
    let mut failed = Vec::new();
    let mut retries = Vec::new();
    for r in &results {
        let attempts = r.attempt_count + 1;
        let settled = match r.outcome {
            Outcome::Success => &mut succeeded,
            Outcome::Gone => &mut failed,
            _ if r.is_test || attempts > config.retry_schedule.len() as i64 => &mut failed,
            _ => {
                let delay = retry_delay(&config.retry_schedule, attempts as usize, r.retry_after);
                recorded.rescheduled += 1;
                retries.push((r.delivery_id.as_str(), delay));
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempt_count = attempt_count + 1, \
                     next_attempt_at = $1, locked_until = NULL, locked_by = NULL, updated_at = $2 \
                     WHERE id = $3 AND status = 'pending'",
                )
                .bind(now + delay.as_millis() as i64)
                .bind(now)
                .bind(&r.delivery_id)
                .execute(&mut *tx)
                .await?;
                continue;
            }
        };
        settled.push(r.delivery_id.as_str());
    }
    for (status, ids) in [("succeeded", &succeeded), ("failed", &failed)] {
        for chunk in ids.chunks(INSERT_CHUNK) {
            let list = (3..3 + chunk.len()).map(|i| format!("${i}"));
            let sql = format!(
                "UPDATE webhook_deliveries SET status = $1, attempt_count = attempt_count + 1, \
                 next_attempt_at = NULL, locked_until = NULL, locked_by = NULL, updated_at = $2 \
                 WHERE status = 'pending' AND id IN ({})",
                list.collect::<Vec<_>>().join(", ")
            );
            let mut query = sqlx::query(&sql).bind(status).bind(now);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }
    }

    // Endpoint health, judged by each endpoint's latest attempt in this batch.
    let mut latest: Vec<&AttemptResult> = Vec::new();
    for r in results.iter().rev() {
        if !latest.iter().any(|l| l.endpoint_id == r.endpoint_id) {
            latest.push(r);
        }
    }
    let disable_before = now - config.disable_after.as_millis() as i64;
    for r in latest {
        let reason = match r.outcome {
            Outcome::Success => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET failing_since = NULL, consecutive_failures = 0, \
                     circuit_until = NULL, last_success_at = $1 WHERE id = $2",
                )
                .bind(r.at)
                .bind(&r.endpoint_id)
                .execute(&mut *tx)
                .await?;
                continue;
            }
            Outcome::Gone => "the endpoint answered 410 Gone".to_string(),
            _ => {
                // Open the circuit: nothing more goes to this endpoint until the backoff has
                // passed, then one probe at a time (`claimable_endpoints`, `take_probe`).
                let (failing_since, failures): (Option<i64>, i64) = sqlx::query_as(
                    "SELECT failing_since, consecutive_failures FROM webhook_endpoints \
                     WHERE id = $1",
                )
                .bind(&r.endpoint_id)
                .fetch_optional(&mut *tx)
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
                .execute(&mut *tx)
                .await?;
                if failing_since > disable_before {
                    continue;
                }
                format!(
                    "every attempt failed for {} (since {})",
                    humantime::format_duration(config.disable_after),
                    rfc3339(failing_since)
                )
            }
        };
        let disabled = sqlx::query(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_at = $1, disabled_reason = $2, \
             updated_at = $1 WHERE id = $3 AND enabled = 1",
        )
        .bind(now)
        .bind(&reason)
        .bind(&r.endpoint_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if disabled == 0 {
            continue;
        }
        // Its waiting deliveries end here; each can be retried by hand once it is fixed.
        let abandoned = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, \
             locked_until = NULL, locked_by = NULL, updated_at = $1 \
             WHERE endpoint_id = $2 AND status = 'pending'",
        )
        .bind(now)
        .bind(&r.endpoint_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        endpoints::add_log(
            &mut tx,
            &r.endpoint_id,
            now,
            &format!(
                "disabled: {reason} (delivery {}); {abandoned} pending deliveries marked failed",
                r.delivery_id
            ),
        )
        .await?;
        recorded.disabled.push(r.endpoint_id.clone());
    }
    tx.commit().await?;
    for (status, ids) in [("succeeded", &succeeded), ("failed", &failed)] {
        for id in ids {
            tracing::debug!(delivery_id = %id, status, "webhook delivery recorded");
        }
    }
    for (id, delay) in retries {
        tracing::debug!(delivery_id = %id, retry_in_ms = delay.as_millis() as u64, "webhook delivery rescheduled");
    }
    Ok(recorded)
}

/// Creates the delivery row of a test event for one endpoint, leased so that the worker leaves
/// it alone while the test route sends it (and picks it up if this process dies meanwhile).
pub async fn create_test_delivery(
    db: &Db,
    account_id: &str,
    endpoint_id: &str,
    lease: Duration,
) -> Result<String, sqlx::Error> {
    let now = now_ms();
    let event_id = new_id("evt");
    let delivery_id = new_id("dlv");
    let body = event_body(
        &event_id,
        TEST_EVENT_TYPE,
        now,
        account_id,
        &serde_json::json!({
            "endpoint_id": endpoint_id,
            "message": "A test event from WizMessage Edge",
        })
        .to_string(),
    );
    let until = now + lease.as_millis() as i64;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, event_id, event_type, \
         payload, status, attempt_count, next_attempt_at, locked_until, locked_by, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, 'test', $8, $8)",
    )
    .bind(&delivery_id)
    .bind(account_id)
    .bind(endpoint_id)
    .bind(&event_id)
    .bind(TEST_EVENT_TYPE)
    .bind(body)
    .bind(until)
    .bind(now)
    .execute(db)
    .await?;
    Ok(delivery_id)
}

/// Makes a delivery due now, whatever its state (SPEC §6 manual retry). `None` if it is not the
/// account's.
pub async fn retry_now(
    db: &Db,
    account_id: &str,
    delivery_id: &str,
) -> Result<Option<()>, sqlx::Error> {
    let now = now_ms();
    let updated = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1 \
         WHERE id = $2 AND account_id = $3",
    )
    .bind(now)
    .bind(delivery_id)
    .bind(account_id)
    .execute(db)
    .await?
    .rows_affected();
    Ok((updated > 0).then_some(()))
}

/// One attempt as the delivery log shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// RFC 3339.
    pub at: String,
    /// `success`, `http_error`, `timeout`, `connect_error`, `blocked` or `gone`.
    pub outcome: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// The first 1 KiB of the response body.
    pub response: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    #[schema(example = "dlv_01jd8zq4y1v2k3m4n5p6q7r8s9")]
    pub id: String,
    pub endpoint_id: String,
    /// Also the `webhook-id` header of every attempt.
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub attempts: Vec<AttemptView>,
    /// RFC 3339, while pending.
    pub next_attempt_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub cursor: Option<String>,
    pub limit: i64,
}

/// One of the account's deliveries with its attempts.
pub async fn get_delivery(
    db: &Db,
    account_id: &str,
    delivery_id: &str,
) -> Result<Option<DeliveryView>, sqlx::Error> {
    let row: Option<DeliveryRow> = sqlx::query_as(
        "SELECT id, endpoint_id, event_id, event_type, status, next_attempt_at, created_at \
         FROM webhook_deliveries WHERE id = $1 AND account_id = $2",
    )
    .bind(delivery_id)
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut attempts = attempts_of(db, std::slice::from_ref(&row.0)).await?;
    Ok(Some(delivery_view(row, &mut attempts)))
}

type DeliveryRow = (String, String, String, String, String, Option<i64>, i64);

fn delivery_view(
    (id, endpoint_id, event_id, event_type, status, next, created_at): DeliveryRow,
    attempts: &mut std::collections::HashMap<String, Vec<AttemptView>>,
) -> DeliveryView {
    DeliveryView {
        attempts: attempts.remove(&id).unwrap_or_default(),
        next_attempt_at: next.filter(|_| status == "pending").map(rfc3339),
        id,
        endpoint_id,
        event_id,
        event_type,
        status,
        created_at: rfc3339(created_at),
    }
}

/// A page of an endpoint's deliveries, newest first; the cursor is the last id shown.
pub async fn list_deliveries(
    db: &Db,
    endpoint_id: &str,
    filter: &DeliveryFilter,
) -> Result<(Vec<DeliveryView>, Option<String>), sqlx::Error> {
    let mut sql = String::from(
        "SELECT id, endpoint_id, event_id, event_type, status, next_attempt_at, created_at \
         FROM webhook_deliveries WHERE endpoint_id = $1",
    );
    let mut binds: Vec<String> = vec![endpoint_id.to_string()];
    for (column, value) in [
        ("status", &filter.status),
        ("event_type", &filter.event_type),
    ] {
        if let Some(value) = value {
            binds.push(value.clone());
            sql.push_str(&format!(" AND {column} = ${}", binds.len()));
        }
    }
    if let Some(cursor) = &filter.cursor {
        binds.push(cursor.clone());
        sql.push_str(&format!(" AND id < ${}", binds.len()));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", binds.len() + 1));
    let mut query = sqlx::query_as::<_, DeliveryRow>(&sql);
    for b in &binds {
        query = query.bind(b);
    }
    let mut rows = query.bind(filter.limit + 1).fetch_all(db).await?;
    let next_cursor = if rows.len() as i64 > filter.limit {
        rows.truncate(filter.limit as usize);
        rows.last().map(|r| r.0.clone())
    } else {
        None
    };
    let ids: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut attempts = attempts_of(db, &ids).await?;
    let data = rows
        .into_iter()
        .map(|row| delivery_view(row, &mut attempts))
        .collect();
    Ok((data, next_cursor))
}

async fn attempts_of(
    db: &Db,
    delivery_ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<AttemptView>>, sqlx::Error> {
    let mut out: std::collections::HashMap<String, Vec<AttemptView>> = Default::default();
    for chunk in delivery_ids.chunks(INSERT_CHUNK) {
        let list = (1..=chunk.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT delivery_id, at, outcome, status_code, latency_ms, error, response \
             FROM webhook_attempts WHERE delivery_id IN ({list}) ORDER BY id"
        );
        let mut query = sqlx::query_as::<
            _,
            (
                String,
                i64,
                String,
                Option<i64>,
                i64,
                Option<String>,
                Option<String>,
            ),
        >(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        for (delivery_id, at, outcome, status_code, latency_ms, error, response) in
            query.fetch_all(db).await?
        {
            out.entry(delivery_id).or_default().push(AttemptView {
                at: rfc3339(at),
                outcome,
                status_code,
                latency_ms,
                error,
                response,
            });
        }
    }
    Ok(out)
}

/// The endpoint of one of the account's deliveries (the retry route's check).
pub async fn delivery_endpoint(
    db: &Db,
    account_id: &str,
    delivery_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT endpoint_id FROM webhook_deliveries WHERE id = $1 AND account_id = $2",
    )
    .bind(delivery_id)
    .bind(account_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(endpoint_id,)| endpoint_id))
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
    fn body_embeds_the_event_data_verbatim() {
        let body = event_body(
            "evt_1",
            "message.read",
            0,
            "acc_1",
            r#"{"message_id":"msg_1"}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], "evt_1");
        assert_eq!(v["type"], "message.read");
        assert_eq!(v["created_at"], rfc3339(0));
        assert_eq!(v["account_id"], "acc_1");
        assert_eq!(v["data"]["message_id"], "msg_1");
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

    #[test]
    fn placeholders_number_rows_then_columns() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders_with(2, 1, "0"), "($1, 0), ($2, 0)");
    }
}
