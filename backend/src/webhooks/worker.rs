//! The delivery worker: claims due deliveries in batches, sends them concurrently within a global
//! cap (`max_in_flight`) and a per-endpoint cap (`max_in_flight_per_endpoint`), and hands every
//! attempt to a recorder that writes results in batched transactions.
//!
//! Why failing, hanging or unresolvable endpoints cannot hold back healthy ones (SPEC §10):
//! - claims go endpoint by endpoint (`outbox::claimable_endpoints`), healthy endpoints first and
//!   in rotation, never in one global queue order that a backlog of dead deliveries would head;
//! - each endpoint has a circuit breaker in the database, shared by all backends: after a failed
//!   attempt it gets nothing until a doubling backoff has passed, then one probe at a time;
//! - an endpoint that never answered yet, or is failing, has one delivery out at a time, and
//!   probes of failing endpoints use at most half of `max_in_flight`;
//! - every attempt is bounded by the client timeout, DNS included (`ssrf::GuardedResolver`).
//!
//! Nothing here holds a database connection across an HTTP call: claim, send, record are separate
//! steps, and only claim and record touch the database.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, watch},
    task::{Id, JoinSet},
};

use super::{
    metrics::Outcome,
    outbox::{self, AttemptResult, Job, RESPONSE_SNIPPET},
    sign, ssrf, Webhooks, TEST_EVENT_TYPE,
};
use crate::{clock::now_ms, config::WebhooksConfig, ids::new_id, webhooks::SenderContext};

/// Deliveries claimed per round at most.
const CLAIM_BATCH: usize = 100;
/// Endpoints claimed for per round at most: a round is one statement per endpoint, and a short
/// round means new work for a healthy endpoint waits for little (on SQLite every statement
/// queues on the one connection).
const ENDPOINTS_PER_ROUND: usize = 32;
/// Attempts recorded per transaction, at most.
const RECORD_BATCH: usize = 200;
/// The longest the worker sleeps without looking at the outbox (other backends' fan-outs do
/// not ring our doorbell).
const POLL: Duration = Duration::from_millis(500);
/// The shortest sleep before looking again when something seems due already.
const MIN_WAIT_MS: i64 = 25;

/// Sends one attempt and describes its outcome. Used by the worker and, synchronously, by
/// `POST /admin/webhooks/{id}/test`.
#[tracing::instrument(
    name = "webhook_attempt",
    skip_all,
    fields(
        delivery_id = %job.delivery_id,
        event_id = %job.event_id,
        endpoint_id = %job.endpoint_id,
        attempt = job.attempt_count + 1,
    )
)]
pub async fn send(webhooks: &Webhooks, config: &WebhooksConfig, job: &Job) -> AttemptResult {
    let at = now_ms();
    let started = Instant::now();
    let mut result = AttemptResult {
        delivery_id: job.delivery_id.clone(),
        endpoint_id: job.endpoint_id.clone(),
        attempt_count: job.attempt_count,
        is_test: job.event_type == TEST_EVENT_TYPE,
        at,
        outcome: Outcome::ConnectError,
        status_code: None,
        latency_ms: 0,
        error: None,
        response: None,
        retry_after: None,
    };
    let url = match reqwest::Url::parse(&job.url) {
        Ok(url) => url,
        Err(e) => {
            result.error = Some(format!("invalid URL: {e}"));
            return finish(webhooks, result, started);
        }
    };
    if let Err(blocked) = ssrf::check_url(&url, config.allow_private_targets) {
        result.outcome = Outcome::Blocked;
        result.error = Some(blocked.to_string());
        return finish(webhooks, result, started);
    }
    if job.keys.is_empty() {
        result.error = Some(
            "the endpoint's secret cannot be read with this secrets_key; rotate the secret"
                .to_string(),
        );
        return finish(webhooks, result, started);
    }
    // The timestamp is the attempt's (receivers reject old ones); the id is the event's, the same
    // on every attempt, so receivers can de-duplicate.
    let timestamp = at / 1000;
    let signature = sign::signature_header(&job.keys, &job.event_id, timestamp, &job.body);
    let response = webhooks
        .client
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(sign::HEADER_ID, &job.event_id)
        .header(sign::HEADER_TIMESTAMP, timestamp.to_string())
        .header(sign::HEADER_SIGNATURE, signature)
        .body(job.body.clone())
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status();
            result.status_code = Some(status.as_u16());
            if matches!(status.as_u16(), 429 | 503) {
                result.retry_after = response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
            }
            result.response = read_snippet(response).await;
            (result.outcome, result.error) = if status.is_success() {
                (Outcome::Success, None)
            } else if status == http::StatusCode::GONE {
                (
                    Outcome::Gone,
                    Some("410 Gone: the endpoint is disabled".to_string()),
                )
            } else if status.is_redirection() {
                (
                    Outcome::HttpError,
                    Some(format!("HTTP {status}: redirects are not followed")),
                )
            } else {
                (Outcome::HttpError, Some(format!("HTTP {status}")))
            };
        }
        Err(err) => {
            if let Some(blocked) = ssrf::find_blocked(&err) {
                result.outcome = Outcome::Blocked;
                result.error = Some(blocked.to_string());
            } else if err.is_timeout() {
                result.outcome = Outcome::Timeout;
                result.error = Some(format!(
                    "timed out after {}",
                    humantime::format_duration(config.timeout)
                ));
            } else {
                result.outcome = Outcome::ConnectError;
                result.error = Some(describe(err));
            }
        }
    }
    finish(webhooks, result, started)
}

fn finish(webhooks: &Webhooks, mut result: AttemptResult, started: Instant) -> AttemptResult {
    let elapsed = started.elapsed();
    result.latency_ms = elapsed.as_millis() as i64;
    webhooks.metrics.observe_attempt(result.outcome, elapsed);
    tracing::debug!(
        outcome = result.outcome.as_str(),
        status = result.status_code,
        latency_ms = result.latency_ms,
        "webhook attempt finished"
    );
    result
}

/// The error and its causes, without the URL (it may carry the customer's tokens).
fn describe(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut parts = vec![err.to_string()];
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// Reads at most `RESPONSE_SNIPPET` bytes of the body; the rest is never downloaded.
async fn read_snippet(mut response: reqwest::Response) -> Option<String> {
    let mut buf = Vec::new();
    while buf.len() < RESPONSE_SNIPPET {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    buf.truncate(RESPONSE_SNIPPET);
    if buf.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = date - time::OffsetDateTime::now_utc();
    Some(Duration::from_secs_f64(delta.as_seconds_f64().max(0.0)))
}

/// A claimed delivery waiting here for a slot of its endpoint.
struct Queued {
    job: Job,
    /// After this the lease would run out mid-attempt; the job is given back instead.
    start_by: i64,
}

/// How much of one endpoint this worker takes on: `cap` attempts at once, `hold` claimed here
/// at most (running or queued for a slot).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Share {
    cap: usize,
    hold: usize,
    /// A failing endpoint's probe: counts against the probe budget.
    probe: bool,
}

impl Share {
    /// A healthy endpoint that has answered before: its full cap, plus two rounds queued so the
    /// next attempt starts the moment a slot frees up. Anything else (never answered yet, or
    /// failing) gets one delivery at a time until it succeeds: a dead or hanging endpoint
    /// occupies one slot, not its whole cap.
    fn of(endpoint: &outbox::Claimable, cap: usize) -> Share {
        if endpoint.proven && !endpoint.failing {
            Share {
                cap,
                hold: 3 * cap,
                probe: false,
            }
        } else {
            Share {
                cap: 1,
                hold: 1,
                probe: endpoint.failing,
            }
        }
    }

    /// Refilled only once it holds this many or fewer: a whole round (its cap) at a time, not
    /// one delivery per finished attempt (on SQLite per-delivery claims made the claims, not
    /// the receiver, the limit).
    fn refill_at(self) -> usize {
        self.hold - self.cap
    }
}

/// One claim round, owning what it needs so it can run as its own task: the claimable
/// endpoints, healthy ones first and in rotation, each leased its share of due deliveries.
/// Holdings only shrink while it runs (only rounds add, one at a time), so shares computed
/// against the snapshot never exceed the caps.
struct ClaimRound {
    db: crate::db::Db,
    secrets: std::sync::Arc<crate::secrets::Secrets>,
    worker: String,
    lease: Duration,
    limit: usize,
    cap: usize,
    /// Failing endpoints that may still be probed at once (a share of the global cap, so
    /// probes of dead endpoints can never take every slot).
    probe_room: usize,
    held: HashMap<String, usize>,
    shares: HashMap<String, Share>,
    /// The last healthy endpoint served; the next round starts after it.
    cursor: Option<String>,
}

/// What a claim round leased, and when to look again: `next_due` is `None` when another round
/// may find more right away.
struct Claimed {
    jobs: Vec<Job>,
    lease_until: i64,
    shares: Vec<(String, Share)>,
    cursor: Option<String>,
    next_due: Option<tokio::time::Instant>,
}

impl ClaimRound {
    async fn run(mut self) -> Result<Claimed, sqlx::Error> {
        let now = now_ms();
        let lease_until = now + self.lease.as_millis() as i64;
        let busy_before = busy(&self.held, &self.shares);
        let endpoints = outbox::claimable_endpoints(&self.db, &busy_before, now).await?;
        // Proven healthy endpoints in rotation from after the last one served, so with more of
        // them than one round can take, each gets its turn; then the unproven, then probes.
        // Those cut off by `ENDPOINTS_PER_ROUND` come first next round: what this round claimed
        // is busy then and left out of the list.
        let split = endpoints
            .iter()
            .position(|e| e.failing || !e.proven)
            .unwrap_or(endpoints.len());
        let start = self
            .cursor
            .as_ref()
            .map_or(0, |c| endpoints[..split].partition_point(|e| &e.id <= c));
        let order = (start..split).chain(0..start).chain(split..endpoints.len());
        let mut ids = Vec::new();
        let mut shares = Vec::new();
        let mut more = false;
        let mut visited = 0;
        for i in order {
            let endpoint = &endpoints[i];
            if ids.len() >= self.limit || visited == ENDPOINTS_PER_ROUND {
                more = true;
                break;
            }
            let share = Share::of(endpoint, self.cap);
            let held = self.held.get(&endpoint.id).copied().unwrap_or(0);
            if held >= share.hold {
                continue;
            }
            if share.probe {
                if self.probe_room == 0
                    || !outbox::take_probe(&self.db, &endpoint.id, now, lease_until).await?
                {
                    continue;
                }
                self.probe_room -= 1;
            }
            visited += 1;
            let want = (share.hold - held).min(self.limit - ids.len());
            let got = outbox::claim_endpoint(
                &self.db,
                &self.worker,
                &endpoint.id,
                now,
                lease_until,
                want,
            )
            .await?;
            if got.is_empty() {
                continue;
            }
            if !share.probe {
                self.cursor = Some(endpoint.id.clone());
            }
            *self.held.entry(endpoint.id.clone()).or_default() += got.len();
            self.shares.insert(endpoint.id.clone(), share);
            shares.push((endpoint.id.clone(), share));
            ids.extend(got);
        }
        let jobs = outbox::load_jobs(&self.db, &self.secrets, &ids).await?;
        let next_due = if more {
            None
        } else {
            Some(next_wake(&self.db, &busy(&self.held, &self.shares)).await)
        };
        Ok(Claimed {
            jobs,
            lease_until,
            shares,
            cursor: self.cursor,
            next_due,
        })
    }
}

/// Endpoints not to claim for, given what is held of each: those above their refill mark.
/// Sorted, so two answers compare equal when they mean the same.
fn busy(held: &HashMap<String, usize>, shares: &HashMap<String, Share>) -> Vec<String> {
    let mut busy: Vec<String> = held
        .iter()
        .filter(|(e, n)| shares.get(*e).is_some_and(|s| **n > s.refill_at()))
        .map(|(e, _)| e.clone())
        .collect();
    busy.sort_unstable();
    busy
}

/// When the next delivery (of an endpoint we can take) becomes due, capped by `POLL`.
async fn next_wake(db: &crate::db::Db, busy: &[String]) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    match outbox::next_due(db, busy).await {
        Ok(Some(due)) => {
            // A floor: a row due "now" that the round could not take (another backend holds
            // it under a lease) must not turn this into a busy loop.
            let wait = Duration::from_millis((due - now_ms()).max(MIN_WAIT_MS) as u64);
            now + wait.min(POLL)
        }
        Ok(None) => now + POLL,
        Err(e) => {
            tracing::warn!(error = %e, "reading the next webhook due time");
            now + POLL
        }
    }
}

struct Worker {
    sender: SenderContext,
    id: String,
    results: mpsc::Sender<AttemptResult>,
    tasks: JoinSet<()>,
    task_endpoint: HashMap<Id, String>,
    in_flight: HashMap<String, usize>,
    running: usize,
    queued: HashMap<String, VecDeque<Queued>>,
    queued_total: usize,
    expired: Vec<String>,
    /// The last claim round found no room under the global cap.
    globally_full: bool,
    /// The share of each endpoint held here (see `Share`).
    shares: HashMap<String, Share>,
    cursor: Option<String>,
}

/// The worker loop, until `stop` turns true. Then it stops claiming, waits for the attempts in
/// flight (each bounded by the client timeout), records them and releases its leases.
pub async fn run(sender: SenderContext, mut stop: watch::Receiver<bool>) {
    let (results, receiver) = mpsc::channel(RECORD_BATCH * 4);
    let recorder = AbortOnDrop(Some(tokio::spawn(record_loop(sender.clone(), receiver))));
    let mut worker = Worker {
        id: new_id("wrk"),
        sender,
        results,
        tasks: JoinSet::new(),
        task_endpoint: HashMap::new(),
        in_flight: HashMap::new(),
        running: 0,
        queued: HashMap::new(),
        queued_total: 0,
        expired: Vec::new(),
        globally_full: false,
        shares: HashMap::new(),
        cursor: None,
    };
    worker.main_loop(&mut stop).await;
    worker.drain().await;
    let Worker { sender, id, .. } = worker;
    if let Some(handle) = recorder.take() {
        let _ = handle.await;
    }
    if let Err(e) = outbox::release(&sender.db, &id, None).await {
        tracing::warn!(error = %e, "releasing webhook leases at shutdown");
    }
}

/// Aborts a helper task (the recorder, a claim round) if the worker's task is aborted (a crash
/// in tests), so nothing of a dead worker goes on leasing or writing.
struct AbortOnDrop<T>(Option<tokio::task::JoinHandle<T>>);

impl<T> AbortOnDrop<T> {
    fn take(mut self) -> Option<tokio::task::JoinHandle<T>> {
        self.0.take()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

impl Worker {
    fn config(&self) -> &WebhooksConfig {
        &self.sender.config
    }

    /// Deliveries held here per endpoint: running or queued for one of its slots.
    fn holdings(&self) -> HashMap<String, usize> {
        let mut held = self.in_flight.clone();
        for (endpoint, queue) in &self.queued {
            *held.entry(endpoint.clone()).or_default() += queue.len();
        }
        held
    }

    /// Endpoints not to claim for now.
    fn busy(&self) -> Vec<String> {
        busy(&self.holdings(), &self.shares)
    }

    /// The next claim round, planned from what this worker holds now; `None` when the global
    /// cap leaves no room.
    fn plan_round(&self) -> Option<ClaimRound> {
        let max = self.config().max_in_flight;
        // Running plus queued stays within twice the global cap (one round of prefetch).
        let limit = CLAIM_BATCH.min((2 * max).saturating_sub(self.running + self.queued_total));
        if limit == 0 {
            return None;
        }
        let held = self.holdings();
        let probing = self
            .shares
            .iter()
            .filter(|(e, s)| s.probe && held.get(*e).is_some_and(|n| *n > 0))
            .count();
        Some(ClaimRound {
            db: self.sender.db.clone(),
            secrets: self.sender.secrets.clone(),
            worker: self.id.clone(),
            lease: self.config().lease,
            limit,
            cap: self.config().max_in_flight_per_endpoint,
            probe_room: (max / 2).max(1).saturating_sub(probing),
            held,
            shares: self.shares.clone(),
            cursor: self.cursor.clone(),
        })
    }

    /// Claim rounds run beside the attempts, not in this loop's way: on SQLite a round waits
    /// for the recorder on the one connection, and while it waited no freed slot was refilled
    /// (1 endpoint, 8 slots: the loop spent 80% of its time in rounds and the slots sat idle).
    async fn main_loop(&mut self, stop: &mut watch::Receiver<bool>) {
        let mut wake_at = tokio::time::Instant::now();
        let mut look = true;
        let mut round: Option<AbortOnDrop<Result<Claimed, sqlx::Error>>> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            self.start_queued();
            self.give_back_expired().await;
            // New work, a due time, or room that opened up is a reason to look in the outbox.
            // A finished attempt that opened no room is not: nothing claimable changed, and
            // `wake_at` still holds the next due time of the endpoints we can take.
            if look && round.is_none() {
                look = false;
                self.globally_full = false;
                match self.plan_round() {
                    Some(plan) => {
                        round = Some(AbortOnDrop(Some(tokio::spawn(plan.run()))));
                        // The round sets the next wake-up; until then this is only a backstop.
                        wake_at = tokio::time::Instant::now() + POLL;
                    }
                    None => self.globally_full = true,
                }
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(done) = self.tasks.join_next_with_id() => {
                    let busy_before = self.busy();
                    self.finished(done);
                    while let Some(done) = self.tasks.try_join_next_with_id() {
                        self.finished(done);
                    }
                    look |= self.globally_full || self.busy() != busy_before;
                }
                done = async {
                    let task = round.as_mut().and_then(|r| r.0.as_mut());
                    task.expect("guarded by the branch condition").await
                },
                    if round.is_some() =>
                {
                    round = None;
                    match done {
                        Ok(Ok(claimed)) => {
                            self.shares.extend(claimed.shares);
                            self.cursor = claimed.cursor;
                            self.enqueue(claimed.jobs, claimed.lease_until);
                            self.start_queued();
                            match claimed.next_due {
                                None => look = true,
                                Some(at) => wake_at = at,
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "claiming webhook deliveries");
                            wake_at = tokio::time::Instant::now() + Duration::from_secs(1);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a webhook claim round failed");
                            wake_at = tokio::time::Instant::now() + Duration::from_secs(1);
                        }
                    }
                }
                _ = self.sender.webhooks.wake.notified() => look = true,
                _ = tokio::time::sleep_until(wake_at) => look = true,
            }
        }
        // A round still running may lease more; let it finish so the shutdown release sees
        // its leases. Its jobs are not started.
        if let Some(handle) = round.and_then(AbortOnDrop::take) {
            let _ = handle.await;
        }
    }

    fn enqueue(&mut self, jobs: Vec<Job>, lease_until: i64) {
        // Leave time for the attempt itself (the client timeout) and for recording it.
        let timeout = self.config().timeout.as_millis() as i64;
        let margin = ((self.config().lease.as_millis() as i64 - timeout) / 2).min(2000);
        let start_by = lease_until - timeout - margin;
        for job in jobs {
            self.queued
                .entry(job.endpoint_id.clone())
                .or_default()
                .push_back(Queued { job, start_by });
            self.queued_total += 1;
        }
    }

    /// Starts queued jobs, round-robin across endpoints, while both caps allow. The caps are
    /// counted in the process-wide registry, which test events sent meanwhile are part of.
    fn start_queued(&mut self) {
        let max = self.config().max_in_flight;
        let default_cap = self.config().max_in_flight_per_endpoint;
        let registry = self.sender.webhooks.in_flight.clone();
        let endpoints: Vec<String> = self.queued.keys().cloned().collect();
        let now = now_ms();
        loop {
            let mut progressed = false;
            for endpoint in &endpoints {
                let cap = self.shares.get(endpoint).map_or(default_cap, |s| s.cap);
                if self.queued.get(endpoint).is_none_or(VecDeque::is_empty) {
                    continue;
                }
                let Some(slot) = registry.try_take(endpoint, cap, max) else {
                    continue;
                };
                let Some(item) = self.queued.get_mut(endpoint).and_then(VecDeque::pop_front) else {
                    continue;
                };
                self.queued_total -= 1;
                progressed = true;
                if item.start_by < now {
                    self.expired.push(item.job.delivery_id);
                } else {
                    self.spawn(item.job, slot);
                }
            }
            if !progressed || registry.total() >= max {
                break;
            }
        }
        self.queued.retain(|_, q| !q.is_empty());
    }

    fn spawn(&mut self, job: Job, slot: super::in_flight::Slot) {
        let webhooks = self.sender.webhooks.clone();
        let config = self.sender.config.clone();
        let results = self.results.clone();
        let endpoint = job.endpoint_id.clone();
        let handle = self.tasks.spawn(async move {
            let result = send(&webhooks, &config, &job).await;
            drop(slot);
            // Closed only at shutdown after an abort; the lease then makes it due again.
            let _ = results.send(result).await;
        });
        self.task_endpoint.insert(handle.id(), endpoint.clone());
        *self.in_flight.entry(endpoint).or_default() += 1;
        self.running += 1;
    }

    fn finished(&mut self, done: Result<(Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!("a webhook attempt panicked; its lease will expire");
                }
                e.id()
            }
        };
        if let Some(endpoint) = self.task_endpoint.remove(&id) {
            if let Some(n) = self.in_flight.get_mut(&endpoint) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(&endpoint);
                    // Nothing of it held here any more: its next claim re-reads its circuit.
                    if !self.queued.contains_key(&endpoint) {
                        self.shares.remove(&endpoint);
                    }
                }
            }
        }
        self.running = self.running.saturating_sub(1);
    }

    async fn give_back_expired(&mut self) {
        if self.expired.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.expired);
        if let Err(e) = outbox::release(&self.sender.db, &self.id, Some(&ids)).await {
            // Harmless: their leases expire on their own.
            tracing::warn!(error = %e, "giving back webhook deliveries");
        }
    }

    /// Shutdown: no new attempts; the running ones finish (or are cut off after the timeout).
    async fn drain(&mut self) {
        self.queued.clear();
        self.queued_total = 0;
        let deadline = tokio::time::Instant::now() + self.config().timeout + Duration::from_secs(1);
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Dropping our sender lets the recorder finish once it has written what it was given.
        let (closed, _) = mpsc::channel(1);
        self.results = closed;
    }
}

/// Writes attempt results in batches: whatever has arrived, up to `RECORD_BATCH`, in one
/// transaction. A result that cannot be written is not lost either: its delivery's lease expires
/// and it is attempted again (at least once).
async fn record_loop(sender: SenderContext, mut receiver: mpsc::Receiver<AttemptResult>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < RECORD_BATCH {
            match receiver.try_recv() {
                Ok(result) => batch.push(result),
                Err(_) => break,
            }
        }
        let mut tries = 0;
        loop {
            match outbox::record(&sender.db, &sender.config, &batch).await {
                Ok(recorded) => {
                    for endpoint_id in &recorded.disabled {
                        tracing::warn!(endpoint_id = %endpoint_id, "webhook endpoint disabled");
                    }
                    if recorded.rescheduled > 0 {
                        // The worker re-reads when the next retry is due.
                        sender.webhooks.wake.notify_one();
                    }
                    break;
                }
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!(error = %e, "recording webhook attempts; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        attempts = batch.len(),
                        "could not record webhook attempts; they will be retried when their leases expire"
                    );
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let in_a_minute = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let http_date = in_a_minute
            .format(&time::macros::format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            ))
            .unwrap();
        let parsed = parse_retry_after(&http_date).expect(&http_date);
        assert!(parsed > Duration::from_secs(80) && parsed <= Duration::from_secs(90));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
