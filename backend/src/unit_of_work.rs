//! One operation's transaction together with what happened in it. Domain code writes through a
//! `UnitOfWork` and tells it what it did (an event written, messages queued, a status reached, a
//! batch finished); `commit` then does the after-commit duties exactly once: wake the webhook
//! sender if events were written, wake the dispatcher if messages were queued, the report worker
//! if messages were handed to the channel, and count everything in the metrics. Nothing is
//! announced for a unit of work that is rolled back or dropped.
//!
//! `events::emit` takes a `UnitOfWork`, so an operation that writes an event cannot forget to
//! wake the sender; the sender's poll is only a fallback for events another backend wrote.

use std::{
    ops::{Deref, DerefMut},
    sync::Arc,
};

use sqlx::{Any, AnyConnection, Transaction};
use tokio::sync::Notify;

use crate::{batches::BatchStatus, channel::Messaging, messages::Status, state::AppState};

pub struct UnitOfWork {
    tx: Transaction<'static, Any>,
    events_notify: Arc<Notify>,
    messaging: Arc<Messaging>,
    happened: Happened,
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

impl UnitOfWork {
    pub async fn begin(state: &AppState) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: state.db.begin().await?,
            events_notify: state.events_notify.clone(),
            messaging: state.messaging.clone(),
            happened: Happened::default(),
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

    /// A batch was created (`Running`) or finished (`Completed`, `Cancelled`).
    pub fn batch_reached(&mut self, status: BatchStatus) {
        self.happened.batches.push(status);
    }

    /// A chatbot metric label: `started`, `advanced`, `completed`, `handover`, `paused`,
    /// `resumed`.
    pub fn chatbot_happened(&mut self, happening: &'static str) {
        self.happened.chatbot.push(happening);
    }

    /// Commits, then announces what happened (once: `self` is consumed).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Self {
            tx,
            events_notify,
            messaging,
            happened,
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
