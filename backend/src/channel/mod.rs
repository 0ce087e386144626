//! The channels messages leave through, chosen per account (`settings`): the simulated WhatsApp
//! channel (`simulated`, the default) or Meta's WhatsApp Business Cloud API (`cloud`). Each
//! message records the channel it was accepted for, and the workers hand it to that one:
//!
//! - `send` hands one rendered message to the provider and answers with the provider's message
//!   id, a failure, or "refused for now, try later" (Cloud API: `POST /{phone-number-id}/messages`
//!   → `wamid...`, or 429);
//! - status reports (`sent`, `delivered`, `read`, `failed`) come afterwards. A provider that calls
//!   back (Cloud API webhooks) feeds them to `messages::store::apply_provider_report`; a channel
//!   that knows them in advance (the simulation) returns them from `report_plan`, and the report
//!   worker applies them when due.
//!
//! The workers (`worker`) drive everything from the database, so a restart resumes where it was.

pub mod cloud;
pub mod settings;
pub mod simulated;
pub mod window;
pub mod worker;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use prometheus::{IntCounterVec, IntGauge, Opts};
use serde_json::Value;
use tokio::sync::Notify;

use crate::{
    config::ChannelConfig,
    db::Db,
    messages::{ErrorInfo, Status},
    metrics::Metrics,
    secrets::Secrets,
};

/// One rendered message, as the channel needs it.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub message_id: &'a str,
    pub account_id: &'a str,
    pub to: &'a str,
    /// `Content` as JSON: `{"text":{"body":..}}`, `{"template":{..}}`, ...
    pub content: &'a Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    Accepted {
        provider_message_id: String,
    },
    Rejected(ErrorInfo),
    /// Not handed over (the provider refused it for throughput, or the channel held it back
    /// because the sender is paused): queue it again for `after`. `refusal` is the provider's
    /// answer when it refused, which counts towards the message's `max_throttle_retries`;
    /// `None` when the provider was not asked.
    Retry {
        after: Duration,
        refusal: Option<ErrorInfo>,
    },
}

/// A status the provider reports for a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub status: Status,
    pub error: Option<ErrorInfo>,
}

pub trait Channel: Send + Sync + 'static {
    /// Stored on each message (`messages.channel`).
    fn name(&self) -> &'static str;

    /// Hands one message to the provider. Called once per claimed message.
    fn send<'a>(&'a self, message: Outbound<'a>) -> BoxFuture<'a, SendOutcome>;

    /// The reports this channel will make for a message to `to`, as delays after the send, in
    /// order. Empty for a provider that reports by calling back.
    fn report_plan(&self, to: &str) -> Vec<(Duration, Report)>;

    /// Whether a message claimed but never recorded as accepted (the process died in between)
    /// may be handed to the provider again. True only when `send` has no effect outside this
    /// database; otherwise such a message fails (`send_interrupted`) rather than risk a double.
    fn resend_is_safe(&self) -> bool;
}

/// Messaging counters (SPEC §9: messages by status), in the backend's registry.
pub struct MessagingMetrics {
    /// Status transitions, including `queued` (accepted) and `received` (inbound).
    pub messages: IntCounterVec,
    /// Batches by status: `running` (accepted), `completed`, `cancelled`.
    pub batches: IntCounterVec,
    /// Outbound messages waiting for the dispatcher.
    pub queue_depth: IntGauge,
    /// `Idempotency-Key` outcomes: `stored`, `replayed`, `reused`, `in_progress`.
    pub idempotency: IntCounterVec,
    /// Chatbot happenings: `started`, `advanced`, `completed`, `handover`, `paused`, `resumed`.
    pub chatbot: IntCounterVec,
}

impl MessagingMetrics {
    fn new(metrics: &Metrics) -> Self {
        let counter = |name: &str, help: &str, label: &str| {
            metrics.register(&IntCounterVec::new(Opts::new(name, help), &[label]).expect("metric"))
        };
        Self {
            messages: counter(
                "wiz_backend_messages_total",
                "Message status transitions, by the status reached",
                "status",
            ),
            batches: counter(
                "wiz_backend_batches_total",
                "Bulk batches, by the status reached",
                "status",
            ),
            queue_depth: metrics.register(
                &IntGauge::new(
                    "wiz_backend_messages_queued",
                    "Outbound messages waiting to be handed to the channel",
                )
                .expect("metric"),
            ),
            idempotency: counter(
                "wiz_backend_idempotency_requests_total",
                "Requests carrying an Idempotency-Key, by outcome",
                "outcome",
            ),
            chatbot: counter(
                "wiz_backend_chatbot_events_total",
                "Chatbot flow events, by kind",
                "event",
            ),
        }
    }

    pub fn message(&self, status: Status) {
        self.messages.with_label_values(&[status.as_str()]).inc();
    }

    pub fn messages_n(&self, status: Status, n: u64) {
        self.messages
            .with_label_values(&[status.as_str()])
            .inc_by(n);
    }
}

/// The messaging runtime in `AppState`: the channels, the workers' wake-up calls, the metrics.
pub struct Messaging {
    pub simulated: Arc<simulated::SimulatedWhatsApp>,
    pub cloud: Arc<cloud::CloudChannel>,
    pub config: ChannelConfig,
    /// Wakes the dispatcher: messages were queued.
    pub queued: Notify,
    /// Wakes the report worker: messages were handed to the channel.
    pub reports: Notify,
    pub metrics: MessagingMetrics,
}

impl Messaging {
    pub fn new(config: &ChannelConfig, db: Db, secrets: Arc<Secrets>, metrics: &Metrics) -> Self {
        Self {
            simulated: Arc::new(simulated::SimulatedWhatsApp::new(config.timeline.clone())),
            cloud: Arc::new(cloud::CloudChannel::new(
                &config.whatsapp,
                db,
                secrets,
                metrics,
            )),
            config: config.clone(),
            queued: Notify::new(),
            reports: Notify::new(),
            metrics: MessagingMetrics::new(metrics),
        }
    }

    /// The channel a message records (`messages.channel`) sends through.
    pub fn channel(&self, name: &str) -> Arc<dyn Channel> {
        if name == cloud::NAME {
            self.cloud.clone()
        } else {
            self.simulated.clone()
        }
    }

    /// The channel an account's new messages go through (its settings), by stored name.
    pub async fn channel_for(
        &self,
        conn: &mut sqlx::AnyConnection,
        account_id: &str,
    ) -> Result<&'static str, sqlx::Error> {
        Ok(settings::kind(conn, account_id).await?.message_channel())
    }

    /// Call after committing a transaction that queued outbound messages.
    pub fn wake_dispatcher(&self) {
        self.queued.notify_one();
    }
}
