//! The webhook sender (SPEC §8): endpoints customers register, a durable outbox of deliveries
//! fanned out from the `events` table, and a worker that POSTs them, signed, with retries.
//!
//! Flow: a module commits a change with its event (`events::emit`) and calls
//! `AppState::events_written()`; the fan-out (`outbox::run_fan_out`) turns each event into one
//! delivery row per subscribed endpoint and wakes the worker (`worker::run`), which claims due
//! deliveries under a lease, sends them concurrently and hands each attempt to a recorder that
//! writes results in small batched transactions. Everything lives in the database, so a crash
//! loses nothing: an expired lease makes a delivery due again (at least once).

pub mod endpoints;
pub mod in_flight;
pub mod metrics;
pub mod outbox;
pub mod sign;
pub mod ssrf;
pub mod worker;

#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{watch, Notify},
    task::JoinHandle,
};

use crate::{config::WebhooksConfig, metrics::Metrics, state::AppState};

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

/// The running sender: fan-out, worker (with its recorder) and the gauge refresher.
/// `stop()` shuts it down gracefully; dropping it aborts everything at once, which is what a
/// crash looks like to the database (leases are left to expire).
pub struct Sender {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the sender on the state's database. `serve` calls it; tests call it directly.
pub fn start(state: &AppState) -> Sender {
    let (shutdown, stop) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(outbox::run_fan_out(state.clone(), stop.clone())),
        tokio::spawn(worker::run(state.clone(), stop.clone())),
        tokio::spawn(metrics::run_gauges(state.clone(), stop)),
    ];
    Sender { shutdown, tasks }
}

impl Sender {
    /// Stops claiming, lets attempts in flight finish (bounded by the attempt timeout), records
    /// them and releases whatever this process still holds.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
