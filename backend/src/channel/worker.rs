//! The background workers that move outbound messages, all working from the database so that a
//! restart (or a second backend on the same PostgreSQL) resumes without sending anything twice:
//!
//! - the **dispatcher** claims waiting messages (`dispatch_at` set) with a conditional UPDATE —
//!   only one claimer can win a row — at `channel.rate_per_second` per account (a token bucket
//!   per account, so one account's 10,000-recipient batch does not hold back another's single
//!   message), links bulk recipients to their contact, refuses opted-out contacts, hands each
//!   message to the channel and records the provider's id;
//! - the **report worker** applies the channel's status reports when due (`next_report_at`),
//!   each transition with its event in one transaction, and completes batches;
//! - **housekeeping** re-queues claims interrupted by a crash (or fails them when the channel
//!   cannot resend safely), sweeps idempotency keys older than 24 h and refreshes the queue gauge.
//!
//! `start` spawns them; dropping the returned `Workers` stops them (a transaction cut short
//! rolls back, so stopping at any point is safe).

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use tokio::task::JoinHandle;

use super::{Outbound, SendOutcome};
use crate::{
    batches, contacts,
    error::ApiError,
    ids::now_ms,
    messages::{store, ErrorInfo, Message, Status},
    state::AppState,
};

/// How often a busy dispatcher looks for more work; the token buckets hold one tick's worth.
const TICK: Duration = Duration::from_millis(50);
/// Messages claimed per account per round at most.
const MAX_PER_ROUND: f64 = 250.0;
/// Status reports applied per transaction.
const REPORT_PAGE: i64 = 500;
/// A claim without the provider's answer after this long was interrupted (claim → answer takes
/// milliseconds; a live backend's claim is never this old).
const STALE_CLAIM: Duration = Duration::from_secs(5);
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);

/// Handles of the running workers; dropping it stops them.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.abort();
        }
    }
}

/// Starts the messaging workers (called by `lib.rs` `serve`).
pub fn start(state: &AppState) -> Workers {
    Workers {
        handles: vec![
            tokio::spawn(dispatcher(state.clone())),
            tokio::spawn(reporter(state.clone())),
            tokio::spawn(housekeeping(state.clone())),
        ],
    }
}

pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, capacity: f64) -> f64 {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * rate).min(capacity);
        self.last = now;
        self.tokens
    }
}

async fn dispatcher(state: AppState) {
    let mut buckets: HashMap<String, Bucket> = HashMap::new();
    loop {
        match dispatch_round(&state, &mut buckets).await {
            // Work left (or throttled): come back after one tick.
            Ok(true) => tokio::time::sleep(TICK).await,
            // Nothing waiting: sleep until something is queued (or another backend queued
            // something we were not told about).
            Ok(false) => {
                buckets.retain(|_, b| b.last.elapsed() < Duration::from_secs(60));
                tokio::select! {
                    _ = state.messaging.queued.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "dispatcher round failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One round: pick what each account's bucket allows, claim, send, record. `true` if messages
/// are still waiting.
pub(crate) async fn dispatch_round(
    state: &AppState,
    buckets: &mut HashMap<String, Bucket>,
) -> Result<bool, ApiError> {
    let rate = f64::from(state.messaging.config.rate_per_second);
    let capacity = (rate * TICK.as_secs_f64()).clamp(1.0, MAX_PER_ROUND);
    let now = now_ms();
    let mut picked: Vec<String> = Vec::new();
    let mut waiting = false;
    {
        let mut conn = state.db.acquire().await?;
        let due = store::due_accounts(&mut conn, now).await?;
        for (account_id, count) in due {
            let bucket = buckets.entry(account_id.clone()).or_insert(Bucket {
                tokens: capacity,
                last: Instant::now(),
            });
            let allowed = bucket.refill(rate, capacity).floor().min(count as f64);
            if allowed >= 1.0 {
                let ids = store::due_ids(&mut conn, &account_id, now, allowed as i64).await?;
                bucket.tokens -= ids.len() as f64;
                waiting |= (ids.len() as i64) < count;
                picked.extend(ids);
            } else {
                waiting = true;
            }
        }
    }
    if picked.is_empty() {
        return Ok(waiting);
    }

    // Claim in one transaction: after commit, these messages are ours alone.
    let mut claimed: Vec<Message> = Vec::new();
    let mut failed: Vec<Message> = Vec::new();
    let mut finished_batches: BTreeSet<(String, String)> = BTreeSet::new();
    let mut started_batches: BTreeSet<String> = BTreeSet::new();
    let mut completed = 0u64;
    let mut tx = state.db.begin().await?;
    for id in &picked {
        let Some(mut msg) = store::claim(&mut tx, id, now).await? else {
            continue;
        };
        if let Some(batch_id) = &msg.batch_id {
            started_batches.insert(batch_id.clone());
        }
        if link_contact(&mut tx, &mut msg).await? {
            claimed.push(msg);
        } else {
            let error = ErrorInfo {
                code: "contact_opted_out".into(),
                message: "the contact opted out of messages before this one was sent".into(),
            };
            if store::transition(&mut tx, &mut msg, Status::Failed, now, Some(&error), None).await?
            {
                if let Some(batch_id) = &msg.batch_id {
                    finished_batches.insert((msg.account_id.clone(), batch_id.clone()));
                }
                failed.push(msg);
            }
        }
    }
    for batch_id in &started_batches {
        batches::store::mark_started(&mut tx, batch_id, now).await?;
    }
    for (account_id, batch_id) in &finished_batches {
        completed += u64::from(batches::check_completed(&mut tx, account_id, batch_id).await?);
    }
    tx.commit().await?;
    if !failed.is_empty() {
        state.events_written();
    }

    // Hand over to the channel outside any transaction: a real provider call takes time.
    let channel = state.messaging.channel.clone();
    let mut outcomes = Vec::with_capacity(claimed.len());
    for msg in &claimed {
        let content = serde_json::to_value(&msg.content).expect("content serializes");
        let outcome = channel
            .send(Outbound {
                message_id: &msg.id,
                account_id: &msg.account_id,
                to: &msg.phone,
                content: &content,
            })
            .await;
        outcomes.push(outcome);
    }

    let mut tx = state.db.begin().await?;
    finished_batches.clear();
    for (mut msg, outcome) in claimed.into_iter().zip(outcomes) {
        match outcome {
            SendOutcome::Accepted {
                provider_message_id,
            } => {
                let first = channel
                    .report_plan(&msg.phone)
                    .first()
                    .map(|(delay, _)| now + delay.as_millis() as i64);
                store::record_accepted(&mut tx, &msg.id, &provider_message_id, first).await?;
            }
            SendOutcome::Rejected(error) => {
                let at = now_ms();
                if store::transition(&mut tx, &mut msg, Status::Failed, at, Some(&error), None)
                    .await?
                {
                    if let Some(batch_id) = &msg.batch_id {
                        finished_batches.insert((msg.account_id.clone(), batch_id.clone()));
                    }
                    failed.push(msg);
                }
            }
        }
    }
    for (account_id, batch_id) in &finished_batches {
        completed += u64::from(batches::check_completed(&mut tx, account_id, batch_id).await?);
    }
    tx.commit().await?;
    state.events_written();
    let metrics = &state.messaging.metrics;
    metrics.messages_n(Status::Failed, failed.len() as u64);
    metrics
        .batches
        .with_label_values(&["completed"])
        .inc_by(completed);
    state.messaging.reports.notify_one();
    Ok(true)
}

/// Makes sure the message has its contact (bulk recipients get theirs now, created if new) and
/// that the contact still accepts messages. `false`: opted out.
async fn link_contact(conn: &mut sqlx::AnyConnection, msg: &mut Message) -> Result<bool, ApiError> {
    let contact = match &msg.contact_id {
        Some(id) => contacts::get(conn, &msg.account_id, id).await?,
        None => {
            let (contact, _) = contacts::find_or_create(conn, &msg.account_id, &msg.phone).await?;
            store::set_contact(conn, &msg.id, &contact.id).await?;
            msg.contact_id = Some(contact.id.clone());
            Some(contact)
        }
    };
    // A contact deleted since the message was accepted is no opt-out: the number stays valid.
    Ok(contact.is_none_or(|c| c.opted_in))
}

async fn reporter(state: AppState) {
    loop {
        match report_round(&state).await {
            Ok(true) => continue,
            Ok(false) => {
                let next = match state.db.acquire().await {
                    Ok(mut conn) => store::next_report_due(&mut conn).await.ok().flatten(),
                    Err(_) => None,
                };
                let wait = next
                    .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                tokio::select! {
                    _ = state.messaging.reports.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "status report round failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Applies the due status reports, one transaction for the page. `true` if the page was full.
pub(crate) async fn report_round(state: &AppState) -> Result<bool, ApiError> {
    let now = now_ms();
    let channel = state.messaging.channel.clone();
    let mut tx = state.db.begin().await?;
    let due = store::due_reports(&mut tx, now, REPORT_PAGE).await?;
    let full = due.len() as i64 == REPORT_PAGE;
    let mut reached: Vec<Status> = Vec::new();
    let mut finished_batches: BTreeSet<(String, String)> = BTreeSet::new();
    let mut completed = 0u64;
    for (mut msg, dispatched_at) in due {
        let plan = channel.report_plan(&msg.phone);
        let Some(i) = plan
            .iter()
            .position(|(_, r)| r.status.may_follow(msg.status))
        else {
            store::clear_next_report(&mut tx, &msg.id).await?;
            continue;
        };
        let (delay, report) = &plan[i];
        let at = dispatched_at + delay.as_millis() as i64;
        let next = plan
            .get(i + 1)
            .map(|(delay, _)| dispatched_at + delay.as_millis() as i64);
        let moved = store::transition(
            &mut tx,
            &mut msg,
            report.status,
            at,
            report.error.as_ref(),
            next,
        )
        .await?;
        if !moved {
            // Something else moved it (nothing does today); stop reporting on it.
            store::clear_next_report(&mut tx, &msg.id).await?;
            continue;
        }
        reached.push(report.status);
        if !report.status.in_flight() {
            if let Some(batch_id) = &msg.batch_id {
                finished_batches.insert((msg.account_id.clone(), batch_id.clone()));
            }
        }
    }
    for (account_id, batch_id) in &finished_batches {
        completed += u64::from(batches::check_completed(&mut tx, account_id, batch_id).await?);
    }
    tx.commit().await?;
    if !reached.is_empty() {
        state.events_written();
        let metrics = &state.messaging.metrics;
        for status in reached {
            metrics.message(status);
        }
        metrics
            .batches
            .with_label_values(&["completed"])
            .inc_by(completed);
    }
    Ok(full)
}

async fn housekeeping(state: AppState) {
    // Idempotency keys are swept every 30th round (once a minute).
    let mut until_sweep = 0u32;
    loop {
        let sweep = until_sweep == 0;
        until_sweep = if sweep { 29 } else { until_sweep - 1 };
        if let Err(err) = housekeeping_round(&state, sweep).await {
            tracing::warn!(error = %err, "messaging housekeeping failed");
        }
        tokio::time::sleep(HOUSEKEEPING_EVERY).await;
    }
}

pub(crate) async fn housekeeping_round(state: &AppState, sweep_keys: bool) -> Result<(), ApiError> {
    let now = now_ms();
    let channel = state.messaging.channel.clone();
    let mut tx = state.db.begin().await?;
    let stale = store::stale_claims(&mut tx, now - STALE_CLAIM.as_millis() as i64).await?;
    let mut failed = 0;
    let mut completed = 0u64;
    for id in &stale {
        if channel.resend_is_safe() {
            store::requeue(&mut tx, id, now).await?;
        } else if let Some(mut msg) = store::get_any(&mut tx, id).await? {
            let error = ErrorInfo {
                code: "send_interrupted".into(),
                message: "the backend stopped while handing this message to the channel; \
                          it was not resent to avoid a duplicate"
                    .into(),
            };
            if store::transition(&mut tx, &mut msg, Status::Failed, now, Some(&error), None).await?
            {
                failed += 1;
                if let Some(batch_id) = &msg.batch_id {
                    completed += u64::from(
                        batches::check_completed(&mut tx, &msg.account_id, batch_id).await?,
                    );
                }
            }
        }
    }
    if sweep_keys {
        crate::idempotency::sweep(&mut tx, now).await?;
    }
    let depth = store::queue_depth(&mut tx).await?;
    tx.commit().await?;
    if !stale.is_empty() {
        tracing::info!(count = stale.len(), "recovered interrupted message claims");
        state.messaging.wake_dispatcher();
    }
    if failed > 0 {
        state.events_written();
        let metrics = &state.messaging.metrics;
        metrics.messages_n(Status::Failed, failed);
        metrics
            .batches
            .with_label_values(&["completed"])
            .inc_by(completed);
    }
    state.messaging.metrics.queue_depth.set(depth);
    Ok(())
}
