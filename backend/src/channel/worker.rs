//! The background workers that move outbound messages, all working from the database so that a
//! restart (or a second backend on the same PostgreSQL) resumes without sending anything twice:
//!
//! - the **dispatcher** claims waiting messages (`dispatch_at` set) under a lease — only one
//!   claimer can win a row — at `channel.rate_per_second` per account (a token bucket
//!   per account, so one account's 10,000-recipient batch does not hold back another's single
//!   message), links bulk recipients to their contact, refuses opted-out contacts, hands each
//!   message to the channel and records the provider's id;
//! - the **report worker** applies the channel's status reports when due (`next_report_at`),
//!   each transition with its event in one transaction, and completes batches;
//! - **housekeeping** re-queues claims whose lease ran out (the claimer crashed; or fails them
//!   when the channel cannot resend safely), sweeps idempotency keys older than 24 h and
//!   refreshes the queue gauge.
//!
//! Any number of backends run these on one PostgreSQL: each claim skips rows another
//! transaction holds (`db::skip_locked`), every conditional update names the claim it acts on,
//! and locks are taken in one order (`unit_of_work::BatchWork`), so no two rounds deadlock or
//! undo each other.
//!
//! `spawn` registers them with the backend's lifecycle (`background`): a graceful stop lets each
//! finish its round; an abort is safe too (a transaction cut short rolls back).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tracing::Instrument;

use super::{cloud, simulated, Outbound, SendOutcome};
use crate::{
    background::{Background, Stop},
    clock::now_ms,
    contacts,
    messages::{store, ErrorInfo, Message, MessagingError, Status},
    state::AppState,
    unit_of_work::{UnitOfWork, WorkContext},
};

/// How often a busy dispatcher looks for more work; the token buckets hold one tick's worth.
const TICK: Duration = Duration::from_millis(50);
/// Messages claimed per account per round at most.
const MAX_PER_ROUND: f64 = 250.0;
/// Status reports applied per transaction.
const REPORT_PAGE: i64 = 500;
/// A dispatcher's claim on a message is a lease of this long, from `dispatched_at`: the claimer
/// hands messages to the channel only in the first half of it (and gives the rest back), and
/// once it has run out without the provider's answer recorded, any backend's housekeeping
/// takes the message back (the claimer died). A channel's send timeout must stay below half.
const CLAIM_LEASE: Duration = Duration::from_secs(10);

/// The claim lease of a message on `channel`: `CLAIM_LEASE` for the simulated channel; for the
/// Cloud API, whose sends are network calls of up to `whatsapp.timeout`, long enough that a send
/// started in the first half always ends before the lease does.
fn claim_lease(ctx: &WorkContext, channel: &str) -> Duration {
    if channel == cloud::NAME {
        CLAIM_LEASE.max(ctx.messaging.config.whatsapp.timeout * 2 + CLAIM_LEASE)
    } else {
        CLAIM_LEASE
    }
}
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);

/// Registers the dispatcher, the report worker and housekeeping with `background`.
pub fn spawn(state: &AppState, background: &mut Background) {
    let ctx = &WorkContext::from(state);
    background.spawn("message dispatcher", {
        let ctx = ctx.clone();
        |stop| dispatcher(ctx, stop)
    });
    background.spawn("status reports", {
        let ctx = ctx.clone();
        |stop| reporter(ctx, stop)
    });
    background.spawn("messaging housekeeping", {
        let ctx = ctx.clone();
        |stop| housekeeping(ctx, stop)
    });
}

/// The messaging workers alone, in their own lifecycle (tests); dropping it aborts them.
pub fn start(state: &AppState) -> Background {
    let mut background = Background::new();
    spawn(state, &mut background);
    background
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

async fn dispatcher(ctx: WorkContext, mut stop: Stop) {
    let mut buckets: HashMap<String, Bucket> = HashMap::new();
    while !stop.requested() {
        match dispatch_round(&ctx, &mut buckets).await {
            // Work left (or throttled): come back after one tick.
            Ok(true) => {
                stop.sleep(TICK).await;
            }
            // Nothing waiting: sleep until something is queued (or another backend queued
            // something we were not told about).
            Ok(false) => {
                buckets.retain(|_, b| b.last.elapsed() < Duration::from_secs(60));
                tokio::select! {
                    _ = ctx.messaging.queued.notified() => {}
                    _ = stop.sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "dispatcher round failed");
                stop.sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One round: claim what each account's bucket allows, send, record. `true` if messages are
/// still waiting.
pub(crate) async fn dispatch_round(
    ctx: &WorkContext,
    buckets: &mut HashMap<String, Bucket>,
) -> Result<bool, MessagingError> {
    // The claim's time: stored as `dispatched_at`, it is the lease's start (see `CLAIM_LEASE`).
    let now = now_ms();
    let claimed_at = Instant::now();
    // Claim in one unit of work: after commit, these messages are ours alone.
    let mut work = UnitOfWork::begin(ctx).await?;
    let (picked, waiting) = claim_allowed(ctx, &mut work, buckets, now).await?;
    if picked.is_empty() {
        work.commit().await?;
        return Ok(waiting);
    }
    let claimed = refuse_opted_out(&mut work, picked, now).await?;
    work.commit().await?;
    let outcomes = hand_over(ctx, &claimed, claimed_at).await;
    record_outcomes(ctx, claimed.into_iter().zip(outcomes).collect(), now).await?;
    Ok(true)
}

/// Claims, per account with waiting messages, as many as its token bucket allows. Returns them
/// in phone order (the contact lock order, see `unit_of_work::BatchWork`) and whether messages are still
/// waiting.
async fn claim_allowed(
    ctx: &WorkContext,
    work: &mut UnitOfWork,
    buckets: &mut HashMap<String, Bucket>,
    now: i64,
) -> Result<(Vec<Message>, bool), MessagingError> {
    let rate = f64::from(ctx.messaging.config.rate_per_second);
    let capacity = (rate * TICK.as_secs_f64()).clamp(1.0, MAX_PER_ROUND);
    let mut waiting = false;
    let mut picked: Vec<Message> = Vec::new();
    for (account_id, count) in store::due_accounts(work, now).await? {
        let bucket = buckets.entry(account_id.clone()).or_insert(Bucket {
            tokens: capacity,
            last: Instant::now(),
        });
        let allowed = bucket.refill(rate, capacity).floor().min(count as f64);
        if allowed >= 1.0 {
            let claimed = store::claim_due(work, &account_id, now, allowed as i64).await?;
            bucket.tokens -= claimed.len() as f64;
            // Fewer than waiting: the rest is another backend's, or next round's.
            waiting |= (claimed.len() as i64) < count;
            picked.extend(claimed);
        } else {
            waiting = true;
        }
    }
    picked.sort_by(|a, b| a.phone.cmp(&b.phone));
    Ok((picked, waiting))
}

/// Links each claimed message to its contact and fails the ones whose contact opted out since
/// acceptance; marks their batches started. Returns the messages to hand to the channel.
async fn refuse_opted_out(
    work: &mut UnitOfWork,
    picked: Vec<Message>,
    now: i64,
) -> Result<Vec<Message>, MessagingError> {
    let mut claimed: Vec<Message> = Vec::with_capacity(picked.len());
    for mut msg in picked {
        if let Some(batch_id) = &msg.batch_id {
            work.batch_started(batch_id, now);
        }
        if link_contact(work, &mut msg).await? {
            claimed.push(msg);
        } else {
            let error = ErrorInfo {
                code: "contact_opted_out".into(),
                message: "the contact opted out of messages before this one was sent".into(),
            };
            store::transition(work, &mut msg, Status::Failed, now, Some(&error), None).await?;
        }
    }
    Ok(claimed)
}

/// Hands the claimed messages to the channel, outside any transaction (a real provider call
/// takes time), and only while the claim is well within its lease: the rest is given back
/// (`None`), not sent late (after the lease another backend may already be sending it).
async fn hand_over(
    ctx: &WorkContext,
    claimed: &[Message],
    claimed_at: Instant,
) -> Vec<Option<SendOutcome>> {
    let mut outcomes = Vec::with_capacity(claimed.len());
    for msg in claimed {
        let channel = ctx.messaging.channel(&msg.channel);
        if Instant::now() >= claimed_at + claim_lease(ctx, &msg.channel) / 2 {
            outcomes.push(None);
            continue;
        }
        let content = serde_json::to_value(&msg.content).expect("content serializes");
        let span = tracing::info_span!(
            "message_send",
            message_id = %msg.id,
            account_id = %msg.account_id,
            channel = %msg.channel,
        );
        let outcome = channel
            .send(Outbound {
                message_id: &msg.id,
                account_id: &msg.account_id,
                to: &msg.phone,
                content: &content,
            })
            .instrument(span)
            .await;
        outcomes.push(Some(outcome));
    }
    outcomes
}

/// What recording a round's send outcomes found that the log should hear about.
#[derive(Default)]
struct Recorded {
    /// Claims given back unsent (the lease was running out).
    given_back: usize,
    /// Provider answers that came after housekeeping took the claim back.
    lost: usize,
}

/// Records every send outcome of the round (claimed at `now`) in one unit of work.
async fn record_outcomes(
    ctx: &WorkContext,
    outcomes: Vec<(Message, Option<SendOutcome>)>,
    now: i64,
) -> Result<(), MessagingError> {
    let mut work = UnitOfWork::begin(ctx).await?;
    let mut recorded = Recorded::default();
    for (msg, outcome) in outcomes {
        record_outcome(ctx, &mut work, &mut recorded, msg, outcome, now).await?;
    }
    work.commit().await?;
    if recorded.given_back > 0 {
        tracing::warn!(
            count = recorded.given_back,
            "the channel was too slow to hand over a whole round within its claim lease; \
             the rest went back to the queue"
        );
    }
    if recorded.lost > 0 {
        tracing::warn!(
            count = recorded.lost,
            "messages were handed to the channel after their claim lease ran out; \
             housekeeping had already requeued or failed them"
        );
    }
    Ok(())
}

/// One message's send outcome: accepted (the provider's id and first report recorded), given
/// back, requeued after a throttle, or failed.
#[tracing::instrument(name = "message_outcome", skip_all, fields(message_id = %msg.id))]
async fn record_outcome(
    ctx: &WorkContext,
    work: &mut UnitOfWork,
    recorded: &mut Recorded,
    mut msg: Message,
    outcome: Option<SendOutcome>,
    now: i64,
) -> Result<(), MessagingError> {
    let error = match outcome {
        None => {
            store::unclaim(work, &msg.id, now, now_ms()).await?;
            recorded.given_back += 1;
            return Ok(());
        }
        Some(SendOutcome::Accepted {
            provider_message_id,
        }) => {
            let first = ctx
                .messaging
                .channel(&msg.channel)
                .report_plan(&msg.phone)
                .first()
                .map(|(delay, _)| now + delay.as_millis() as i64);
            if !store::record_accepted(work, &msg.id, now, &provider_message_id, first).await? {
                recorded.lost += 1;
                return Ok(());
            }
            work.messages_handed_over();
            // Cloud API callbacks that arrived before this commit waited for the wamid.
            cloud::callbacks::apply_pending(work, &msg.account_id, &provider_message_id).await?;
            return Ok(());
        }
        Some(SendOutcome::Retry { after, refusal }) => {
            let counted = refusal.is_some();
            let retries = store::throttle_retries(work, &msg.id).await?;
            let max = i64::from(ctx.messaging.config.whatsapp.max_throttle_retries);
            match refusal {
                Some(error) if retries >= max => error,
                _ => {
                    let at = now_ms() + after.as_millis() as i64;
                    store::requeue_throttled(work, &msg.id, now, at, counted).await?;
                    return Ok(());
                }
            }
        }
        Some(SendOutcome::Rejected(error)) => error,
    };
    store::transition(work, &mut msg, Status::Failed, now_ms(), Some(&error), None).await?;
    Ok(())
}

/// Makes sure the message has its contact (bulk recipients get theirs now, created if new) and
/// that the contact still accepts messages. `false`: opted out.
async fn link_contact(conn: &mut UnitOfWork, msg: &mut Message) -> Result<bool, MessagingError> {
    let contact = match &msg.contact_id {
        Some(id) => contacts::get(conn, &msg.account_id, id).await?,
        None => {
            let (contact, _) = contacts::find_or_create(conn, &msg.account_id, &msg.phone)
                .await
                .map_err(|e| MessagingError::contact(&msg.id, e))?;
            store::set_contact(conn, &msg.id, &contact.id).await?;
            msg.contact_id = Some(contact.id.clone());
            Some(contact)
        }
    };
    // A contact deleted since the message was accepted is no opt-out: the number stays valid.
    Ok(contact.is_none_or(|c| c.opted_in))
}

async fn reporter(ctx: WorkContext, mut stop: Stop) {
    while !stop.requested() {
        match report_round(&ctx).await {
            Ok(true) => continue,
            Ok(false) => {
                let next = match ctx.db.acquire().await {
                    Ok(mut conn) => store::next_report_due(&mut conn).await.ok().flatten(),
                    Err(_) => None,
                };
                let wait = next
                    .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1));
                tokio::select! {
                    _ = ctx.messaging.reports.notified() => {}
                    _ = stop.sleep(wait) => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "status report round failed");
                stop.sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Applies the due status reports, one transaction for the page, on rows this round alone holds
/// (`store::due_reports`). `true` if the page was full.
pub(crate) async fn report_round(ctx: &WorkContext) -> Result<bool, MessagingError> {
    let now = now_ms();
    let mut work = UnitOfWork::begin(ctx).await?;
    let due = store::due_reports(&mut work, now, REPORT_PAGE).await?;
    let full = due.len() as i64 == REPORT_PAGE;
    for store::DueReport {
        message: mut msg,
        dispatched_at,
        due_at,
    } in due
    {
        let plan = ctx.messaging.channel(&msg.channel).report_plan(&msg.phone);
        let Some(i) = plan
            .iter()
            .position(|(_, r)| r.status.may_follow(msg.status))
        else {
            store::clear_next_report(&mut work, &msg.id, due_at).await?;
            continue;
        };
        let (delay, report) = &plan[i];
        let at = dispatched_at + delay.as_millis() as i64;
        let next = plan
            .get(i + 1)
            .map(|(delay, _)| dispatched_at + delay.as_millis() as i64);
        let span = tracing::info_span!(
            "message_report",
            message_id = %msg.id,
            status = report.status.as_str(),
        );
        let moved = store::transition(
            &mut work,
            &mut msg,
            report.status,
            at,
            report.error.as_ref(),
            next,
        )
        .instrument(span)
        .await?;
        if !moved {
            // Something else moved it (a provider callback); stop reporting on it, unless that
            // set a report of its own.
            store::clear_next_report(&mut work, &msg.id, due_at).await?;
        }
    }
    work.commit().await?;
    Ok(full)
}

async fn housekeeping(ctx: WorkContext, mut stop: Stop) {
    // Idempotency keys are swept every 30th round (once a minute).
    let mut until_sweep = 0u32;
    while !stop.requested() {
        let sweep = until_sweep == 0;
        until_sweep = if sweep { 29 } else { until_sweep - 1 };
        if let Err(err) = housekeeping_round(&ctx, sweep).await {
            tracing::warn!(error = %err, "messaging housekeeping failed");
        }
        stop.sleep(HOUSEKEEPING_EVERY).await;
    }
}

pub(crate) async fn housekeeping_round(
    ctx: &WorkContext,
    sweep_keys: bool,
) -> Result<(), MessagingError> {
    let now = now_ms();
    let mut work = UnitOfWork::begin(ctx).await?;
    let recovered = recover_stale_claims(ctx, &mut work, now).await?;
    // Cloud API callbacks whose wamid became known since they arrived (a race with the send's
    // commit on another connection or backend), and ones that never will (older than a day).
    cloud::callbacks::sweep_pending(&mut work, now).await?;
    work.commit().await?;
    // Outside the claim transaction: the sweep's row locks have nothing to do with the messages'.
    let mut conn = ctx.db.acquire().await?;
    if sweep_keys {
        crate::idempotency::sweep(&mut conn, now).await?;
    }
    let depth = store::queue_depth(&mut conn).await?;
    drop(conn);
    if recovered > 0 {
        tracing::info!(count = recovered, "recovered interrupted message claims");
    }
    ctx.messaging.metrics.queue_depth.set(depth);
    Ok(())
}

/// Takes back the claims whose lease ran out: requeued where the channel can resend safely,
/// failed (`send_interrupted`) where a resend could duplicate. Returns how many.
async fn recover_stale_claims(
    ctx: &WorkContext,
    work: &mut UnitOfWork,
    now: i64,
) -> Result<usize, MessagingError> {
    let mut stale = Vec::new();
    for name in [simulated::NAME, cloud::NAME] {
        let lease = claim_lease(ctx, name).as_millis() as i64;
        stale.extend(store::stale_claims(work, name, now - lease).await?);
    }
    for id in &stale {
        let Some(mut msg) = store::get_any(work, id).await? else {
            continue;
        };
        if ctx.messaging.channel(&msg.channel).resend_is_safe() {
            store::requeue(work, id, now).await?;
            work.messages_requeued();
        } else {
            let error = ErrorInfo {
                code: "send_interrupted".into(),
                message: "the backend stopped while handing this message to the channel; \
                          it was not resent to avoid a duplicate"
                    .into(),
            };
            store::transition(work, &mut msg, Status::Failed, now, Some(&error), None).await?;
        }
    }
    Ok(stale.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::messages::testkit;

    /// A claim is a lease that names its claimer (by its time): a second claimer gets nothing,
    /// housekeeping takes an expired claim back, and the old claimer can then neither record
    /// the provider's answer nor give the message back over the new state.
    #[tokio::test]
    async fn a_claim_is_a_lease_the_old_claimer_cannot_act_on_once_taken_back() {
        let mut m = testkit::start(100).await;
        m.workers = None;
        let sent = m
            .v1(
                "POST",
                "/v1/messages",
                Some(json!({"to": "+14155550111", "type": "text", "text": {"body": "x"}})),
            )
            .await;
        assert_eq!(sent.status, 202, "{:?}", sent.body);
        let id = sent.body["id"].as_str().unwrap().to_string();
        let db = &m.app.state.db;

        let mut conn = db.acquire().await.unwrap();
        let first = now_ms();
        let claimed = store::claim_due(&mut conn, &m.account, first, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(store::claim_due(&mut conn, &m.account, now_ms(), 10)
            .await
            .unwrap()
            .is_empty());
        // As if claimed long enough ago that the lease has run out (the claimer died).
        let old = first - CLAIM_LEASE.as_millis() as i64 - 1_000;
        sqlx::query("UPDATE messages SET dispatched_at = $1 WHERE id = $2")
            .bind(old)
            .bind(&id)
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);

        housekeeping_round(&WorkContext::from(&m.app.state), false)
            .await
            .unwrap();
        let mut conn = db.acquire().await.unwrap();
        assert!(
            !store::record_accepted(&mut conn, &id, old, "wamid.late", None)
                .await
                .unwrap()
        );
        assert!(!store::unclaim(&mut conn, &id, old, now_ms()).await.unwrap());

        // The new claim is the one that counts.
        let now = now_ms();
        let claimed = store::claim_due(&mut conn, &m.account, now, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        assert!(
            store::record_accepted(&mut conn, &id, now, "wamid.x", Some(now))
                .await
                .unwrap()
        );
        // A report worker that read an older due time does not clear the current one.
        assert!(!store::clear_next_report(&mut conn, &id, now - 1)
            .await
            .unwrap());
        assert!(store::clear_next_report(&mut conn, &id, now).await.unwrap());
    }

    /// Dispatch and report rounds run to the end from the database alone, one round at a time,
    /// as any backend would run them: the message is read and each event is written once.
    #[tokio::test]
    async fn rounds_settle_a_message_with_each_event_once() {
        let mut m = testkit::start(100).await;
        m.workers = None;
        let sent = m
            .v1(
                "POST",
                "/v1/messages",
                Some(json!({"to": "+14155550112", "type": "text", "text": {"body": "x"}})),
            )
            .await;
        let path = format!("/v1/messages/{}", sent.body["id"].as_str().unwrap());
        let mut buckets = HashMap::new();
        dispatch_round(&WorkContext::from(&m.app.state), &mut buckets)
            .await
            .unwrap();
        testkit::wait_for("the message read", || async {
            report_round(&WorkContext::from(&m.app.state))
                .await
                .unwrap();
            let answer = m.v1("GET", &path, None).await;
            (answer.body["status"] == "read").then_some(())
        })
        .await;
        for event in ["message.sent", "message.delivered", "message.read"] {
            assert_eq!(m.count_events(event).await, 1, "{event}");
        }
    }
}
