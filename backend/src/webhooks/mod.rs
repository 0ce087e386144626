//! The webhook sender (SPEC §8): endpoints customers register, a durable outbox of deliveries
//! fanned out from the `events` table, and a worker that POSTs them, signed, with retries.
//!
//! Flow: a module writes its event (`events::emit`) in the change's `UnitOfWork`, whose commit
//! wakes the fan-out (`outbox::run_fan_out`), which turns each event into one delivery row
//! per subscribed endpoint and wakes the worker (`worker::run`), which claims due
//! deliveries under a lease, sends them concurrently and hands each attempt to a recorder that
//! writes results in small batched transactions. Everything lives in the database, so a crash
//! loses nothing: an expired lease makes a delivery due again (at least once).

pub mod endpoints;
pub mod in_flight;
pub mod metrics;
pub mod outbox;
pub mod service;
pub mod sign;
pub mod ssrf;
pub mod worker;

#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use crate::{
    background::Background, config::WebhooksConfig, db::Db, metrics::Metrics, secrets::Secrets,
    state::AppState,
};

pub use metrics::WebhookMetrics;

/// The type of the event `POST /admin/webhooks/{id}/test` sends. Not in `events::EVENT_TYPES`:
/// no endpoint subscribes to it, it only ever goes to the endpoint being tested.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// What the sender shares with the rest of the backend (an `AppState` field): the guarded HTTP
/// client, the metrics and the worker's doorbell. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    pub client: reqwest::Client,
    pub metrics: WebhookMetrics,
    /// Rung when deliveries become due (fan-out, manual retry) so the worker claims at once
    /// instead of at its next poll.
    pub wake: Arc<Notify>,
    /// Attempts in flight, shared by the worker and the test-event route.
    pub in_flight: Arc<in_flight::InFlight>,
}

impl Webhooks {
    pub fn new(config: &WebhooksConfig, registry: &Metrics) -> Self {
        Self {
            client: client(config),
            metrics: WebhookMetrics::new(registry),
            wake: Arc::new(Notify::new()),
            in_flight: Arc::default(),
        }
    }
}

/// The client every attempt uses. Redirects are not followed (a 3xx is a failed attempt: a
/// redirect could lead past the SSRF guard and the customer should fix the URL), proxies from the
/// environment are ignored (the proxy would resolve the name, outside the guard), and DNS goes
/// through the guard.
fn client(config: &WebhooksConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("WizMessage-Webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(ssrf::GuardedResolver {
            allow_private: config.allow_private_targets,
            timeout: config.connect_timeout,
        }))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .expect("building the webhook HTTP client (TLS backend)")
}

/// Registers the sender's tasks (fan-out, worker with its recorder, gauge refresher) with the
/// backend's one lifecycle: a graceful stop lets attempts in flight finish (bounded by the attempt
/// timeout), records them and releases whatever this process still holds.
pub fn spawn(state: &AppState, background: &mut Background) {
    let sender = SenderContext::from(state);
    background.spawn("webhook fan-out", {
        let sender = sender.clone();
        |stop| outbox::run_fan_out(sender, stop.receiver())
    });
    background.spawn("webhook worker", {
        let sender = sender.clone();
        |stop| worker::run(sender, stop.receiver())
    });
    background.spawn("webhook gauges", |stop| {
        metrics::run_gauges(sender, stop.receiver())
    });
}

/// What the sender's tasks use, and nothing of the HTTP side (sessions, key versions, login
/// throttles): the database, the secrets key (endpoint secrets are stored encrypted), the
/// sender's client and doorbells, the events doorbell and its settings.
#[derive(Clone)]
pub struct SenderContext {
    pub db: Db,
    pub secrets: Arc<Secrets>,
    pub webhooks: Webhooks,
    /// Rung by `UnitOfWork::commit` when events were written; the fan-out waits on it.
    pub events_notify: Arc<Notify>,
    pub config: Arc<WebhooksConfig>,
    /// `account_limits.max_pending_deliveries_per_endpoint`: the fan-out's bound.
    pub max_pending_per_endpoint: u32,
}

impl From<&AppState> for SenderContext {
    fn from(state: &AppState) -> Self {
        Self {
            db: state.db.clone(),
            secrets: state.secrets.clone(),
            webhooks: state.webhooks.clone(),
            events_notify: state.events_notify.clone(),
            config: Arc::new(state.config.webhooks.clone()),
            max_pending_per_endpoint: state
                .config
                .account_limits
                .max_pending_deliveries_per_endpoint,
        }
    }
}

/// The sender alone, in its own lifecycle (tests start it beside an app without the rest).
pub fn start(state: &AppState) -> Sender {
    let mut background = Background::new();
    spawn(state, &mut background);
    Sender {
        background,
        grace: stop_grace(&state.config.webhooks),
    }
}

/// How long a graceful stop waits for the sender: an attempt in flight may take the whole
/// attempt timeout, then its result is recorded.
pub fn stop_grace(config: &WebhooksConfig) -> Duration {
    config.timeout + Duration::from_secs(5)
}

/// A sender started on its own: `stop()` is graceful, dropping it aborts (a crash).
pub struct Sender {
    background: Background,
    grace: Duration,
}

impl Sender {
    pub async fn stop(self) {
        self.background.stop(self.grace).await;
    }
}
