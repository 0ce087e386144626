//! One operation's transaction together with what happened in it. Domain code writes through a
//! `UnitOfWork` and tells it what it did (an event written, messages queued, a status reached, a
//! batch's message settled); `commit` then finishes the batches it touched and does the
//! after-commit duties exactly once: wake the webhook sender if events were written, wake the
//! dispatcher if messages were queued, the report worker if messages were handed to the channel,
//! and count everything in the metrics. Nothing is announced for a unit of work that is rolled
//! back or dropped.
//!
//! `events::emit` takes a `UnitOfWork`, so an operation that writes an event cannot forget to
//! wake the sender; the sender's poll is only a fallback for events another backend wrote.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::{Deref, DerefMut},
    sync::Arc,
};

use sqlx::{Any, AnyConnection, Transaction};
use tokio::sync::Notify;

use crate::{
    batches::{self, BatchStatus},
    channel::Messaging,
    db::Db,
    messages::{Message, Status},
    state::AppState,
};

pub struct UnitOfWork {
    tx: Transaction<'static, Any>,
    events_notify: Arc<Notify>,
    messaging: Arc<Messaging>,
    happened: Happened,
    batches: BatchWork,
}

/// Batches the unit touched, locked at its end in batch-id order. Every writer takes its locks in
/// one order: message rows (claimed with `SKIP LOCKED`, never waited for), then contact rows (by
/// phone), then batch rows (by id). Two backends' transactions can then wait for each other but
/// never in a circle, which is what made PostgreSQL abort the report rounds before.
#[derive(Default)]
struct BatchWork {
    /// Batches whose messages were handed to the channel, and when first.
    started: BTreeMap<String, i64>,
    /// Batches with a message that reached a final status, and their account.
    settled: BTreeMap<String, String>,
}

/// What the operation did, announced after its commit.
#[derive(Debug, Default)]
struct Happened {
    events: usize,
    /// New outbound messages (counted as `queued`).
    queued: u64,
    /// Messages put back in the queue (the dispatcher is woken, nothing counted).
    requeued: bool,
    /// Messages handed to the channel (the report worker is woken).
    handed_over: bool,
    /// Statuses messages reached, counted in the metrics.
    reached: Vec<(Status, u64)>,
    batches: Vec<BatchStatus>,
    /// Chatbot metric labels.
    chatbot: Vec<&'static str>,
}

/// What a unit of work needs from the process: the database its transaction runs on and the
/// doorbells its commit rings. The messaging workers hold this, not the whole `AppState` with
/// the HTTP side's sessions, key versions and throttles.
#[derive(Clone)]
pub struct WorkContext {
    pub db: Db,
    events_notify: Arc<Notify>,
    pub messaging: Arc<Messaging>,
}

impl From<&AppState> for WorkContext {
    fn from(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
            events_notify: state.events_notify.clone(),
            messaging: state.messaging.clone(),
        }
    }
}

impl From<&WorkContext> for WorkContext {
    fn from(ctx: &WorkContext) -> Self {
        ctx.clone()
    }
}

impl UnitOfWork {
    /// Opens the transaction; `ctx` is an `&AppState` or a worker's `&WorkContext`.
    pub async fn begin(ctx: impl Into<WorkContext>) -> Result<Self, sqlx::Error> {
        let WorkContext {
            db,
            events_notify,
            messaging,
        } = ctx.into();
        Ok(Self {
            tx: db.begin().await?,
            events_notify,
            messaging,
            happened: Happened::default(),
            batches: BatchWork::default(),
        })
    }

    /// An event row was written (only `events::emit` calls this).
    pub(crate) fn event_written(&mut self) {
        self.happened.events += 1;
    }

    /// `n` new outbound messages wait for the dispatcher.
    pub fn messages_queued(&mut self, n: u64) {
        self.happened.queued += n;
    }

    /// Messages went back to the queue (a claim given up or recovered).
    pub fn messages_requeued(&mut self) {
        self.happened.requeued = true;
    }

    /// Messages were handed to the channel, so status reports will come due.
    pub fn messages_handed_over(&mut self) {
        self.happened.handed_over = true;
    }

    /// `n` messages reached `status` (a transition, an inbound message, a cancellation).
    pub fn messages_reached(&mut self, status: Status, n: u64) {
        if n > 0 {
            self.happened.reached.push((status, n));
        }
    }

    /// The message reached a final status: its batch, if any, may be complete (checked at the
    /// end of the unit, see `BatchWork`). The one home of "a message reached a final state".
    pub fn message_settled(&mut self, msg: &Message) {
        if let Some(batch_id) = &msg.batch_id {
            self.batches
                .settled
                .insert(batch_id.clone(), msg.account_id.clone());
        }
    }

    /// A message of the batch was handed to the channel at `at`.
    pub fn batch_started(&mut self, batch_id: &str, at: i64) {
        let first = self
            .batches
            .started
            .entry(batch_id.to_string())
            .or_insert(at);
        *first = (*first).min(at);
    }

    /// A batch was created (`Running`) or finished (`Completed`, `Cancelled`).
    pub fn batch_reached(&mut self, status: BatchStatus) {
        self.happened.batches.push(status);
    }

    /// A chatbot metric label: `started`, `advanced`, `completed`, `handover`, `paused`,
    /// `resumed`.
    pub fn chatbot_happened(&mut self, happening: &'static str) {
        self.happened.chatbot.push(happening);
    }

    /// Finishes the batches it touched, commits, then announces what happened (once: `self` is
    /// consumed).
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.finish_batches().await?;
        let Self {
            tx,
            events_notify,
            messaging,
            happened,
            batches: _,
        } = self;
        tx.commit().await?;
        if happened.events > 0 {
            events_notify.notify_waiters();
        }
        if happened.queued > 0 || happened.requeued {
            messaging.wake_dispatcher();
        }
        if happened.handed_over {
            messaging.reports.notify_one();
        }
        let metrics = &messaging.metrics;
        if happened.queued > 0 {
            metrics.messages_n(Status::Queued, happened.queued);
        }
        for (status, n) in happened.reached {
            metrics.messages_n(status, n);
        }
        for status in happened.batches {
            metrics.batches.with_label_values(&[status.as_str()]).inc();
        }
        for happening in happened.chatbot {
            metrics.chatbot.with_label_values(&[happening]).inc();
        }
        Ok(())
    }

    /// Marks starts and completes batches, in batch-id order.
    async fn finish_batches(&mut self) -> Result<(), sqlx::Error> {
        let BatchWork { started, settled } = std::mem::take(&mut self.batches);
        let ids: BTreeSet<&String> = started.keys().chain(settled.keys()).collect();
        for batch_id in ids {
            if let Some(at) = started.get(batch_id) {
                batches::store::mark_started(self, batch_id, *at).await?;
            }
            if let Some(account_id) = settled.get(batch_id) {
                batches::check_completed(self, account_id, batch_id).await?;
            }
        }
        Ok(())
    }

    /// Undoes the operation; nothing is announced.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// Store functions take `&mut AnyConnection`; a unit of work is passed where they are called.
impl Deref for UnitOfWork {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for UnitOfWork {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}
