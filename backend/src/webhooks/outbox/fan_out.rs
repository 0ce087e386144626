//! Fan-out: every event becomes one delivery per subscribed endpoint, exactly once.
//!
//! Fan-out reads unmarked events in `created_at` order from just behind a cursor. For each batch
//! it inserts the events' markers into `webhook_fanout` with `ON CONFLICT DO NOTHING RETURNING`,
//! and creates deliveries only for the markers it actually inserted, in the same transaction: an
//! event is fanned out once, even with several backends racing or after a restart. Because an
//! event's `created_at` is taken before its transaction commits, a slow transaction (PostgreSQL,
//! several connections) can commit an event well behind the cursor; a periodic sweep of the last
//! minute finds those stragglers through the markers. Pruning of markers and old history lives
//! here too: it runs on the fan-out loop.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tokio::sync::watch;

use super::INSERT_CHUNK;
use crate::{
    clock::now_ms,
    db::{Db, QueryBuilder},
    ids::new_id,
    webhooks::endpoints,
    webhooks::SenderContext,
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
        let mut query = QueryBuilder::new("INSERT INTO webhook_fanout (event_id, created_at) ");
        query
            .push_values(chunk, |mut row, event| {
                row.push_bind(&event.id).push_bind(event.created_at);
            })
            .push(" ON CONFLICT (event_id) DO NOTHING RETURNING event_id");
        for (id,) in query
            .build_query_as::<(String,)>()
            .fetch_all(&mut *tx)
            .await?
        {
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
        QueryBuilder::new(
            "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, event_id, event_type, \
             next_attempt_at, created_at, updated_at, status, attempt_count) ",
        )
        .push_values(chunk, |mut row, (id, event, ep)| {
            row.push_bind(id)
                .push_bind(&event.account_id)
                .push_bind(&ep.id)
                .push_bind(&event.id)
                .push_bind(&event.event_type)
                .push_bind(now)
                .push_bind(now)
                .push_bind(now)
                .push("'pending'")
                .push("0");
        })
        .push(" ON CONFLICT (endpoint_id, event_id) DO NOTHING")
        .build()
        .execute(&mut *tx)
        .await?;
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
        let mut query = QueryBuilder::new(
            "SELECT endpoint_id, CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries \
             WHERE status = 'pending' AND endpoint_id IN (",
        );
        let mut list = query.separated(", ");
        for id in chunk {
            list.push_bind(*id);
        }
        list.push_unseparated(") GROUP BY endpoint_id");
        for (id, pending) in query
            .build_query_as::<(String, i64)>()
            .fetch_all(&mut *tx)
            .await?
        {
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
async fn prune(sender: &SenderContext) {
    if let Err(e) = prune_markers(&sender.db).await {
        tracing::warn!(error = %e, "pruning webhook fan-out markers");
    }
    let retention = i64::try_from(sender.config.history_retention.as_millis()).unwrap_or(i64::MAX);
    match prune_history(&sender.db, now_ms().saturating_sub(retention)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deliveries = n, "pruned webhook delivery history"),
        Err(e) => tracing::warn!(error = %e, "pruning webhook delivery history"),
    }
}

/// The fan-out loop: woken by `UnitOfWork::commit` when events were written, polling as a
/// fallback (for events another backend wrote).
pub async fn run_fan_out(sender: SenderContext, mut stop: watch::Receiver<bool>) {
    let max_pending = sender.max_pending_per_endpoint;
    let mut fan_out = loop {
        match FanOut::resume(&sender.db).await {
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
    prune(&sender).await;
    let mut last_prune = Instant::now();
    loop {
        // Registered before the pass, so an event written during the pass still wakes us.
        let notified = sender.events_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match fan_out.pass(&sender.db).await {
            Ok(0) => {}
            Ok(_) => sender.webhooks.wake.notify_one(),
            Err(e) => tracing::warn!(error = %e, "webhook fan-out failed; will retry"),
        }
        let refused = fan_out.take_refused();
        if refused > 0 {
            sender
                .webhooks
                .metrics
                .deliveries_refused
                .with_label_values(&["endpoint_backlog_full"])
                .inc_by(refused);
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            prune(&sender).await;
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = &mut notified => {}
            _ = tokio::time::sleep(FAN_OUT_POLL) => {}
        }
    }
}
