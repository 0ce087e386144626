//! `wiz_webhook_*` metrics (SPEC §9). Labels are the attempt outcome only: never an endpoint,
//! URL, account or secret.

use std::time::Duration;

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts};
use tokio::sync::watch;

use crate::{clock::now_ms, db::Db, metrics::Metrics, webhooks::SenderContext};

/// How an attempt ended; the `outcome` label of `wiz_webhook_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx within the timeout.
    Success,
    /// Any other status (3xx, 4xx except 410, 5xx).
    HttpError,
    Timeout,
    /// Could not connect or the connection broke (DNS, refused, reset, TLS).
    ConnectError,
    /// Refused by the SSRF guard; nothing was sent.
    Blocked,
    /// 410 Gone: the endpoint is disabled at once.
    Gone,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::HttpError,
        Outcome::Timeout,
        Outcome::ConnectError,
        Outcome::Blocked,
        Outcome::Gone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::HttpError => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
            Outcome::Blocked => "blocked",
            Outcome::Gone => "gone",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }
}

#[derive(Clone)]
pub struct WebhookMetrics {
    pub attempts: IntCounterVec,
    pub attempt_duration: Histogram,
    pub outbox_depth: IntGauge,
    pub oldest_pending_age: Gauge,
    pub disabled_endpoints: IntGauge,
    /// Deliveries not created, by reason (`endpoint_backlog_full`: the endpoint had
    /// `account_limits.max_pending_deliveries_per_endpoint` pending).
    pub deliveries_refused: IntCounterVec,
}

impl WebhookMetrics {
    pub fn new(registry: &Metrics) -> Self {
        let attempts = registry.register(
            &IntCounterVec::new(
                Opts::new(
                    "wiz_webhook_attempts_total",
                    "Webhook delivery attempts, by outcome",
                ),
                &["outcome"],
            )
            .expect("metric"),
        );
        // Every outcome exists from the start, so dashboards and alerts see zeros, not gaps.
        for outcome in Outcome::ALL {
            attempts.with_label_values(&[outcome.as_str()]);
        }
        let attempt_duration = registry.register(
            &Histogram::with_opts(
                HistogramOpts::new(
                    "wiz_webhook_attempt_duration_seconds",
                    "Time from sending a webhook to its response (or failure)",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
                ]),
            )
            .expect("metric"),
        );
        let outbox_depth = registry.register(
            &IntGauge::new(
                "wiz_webhook_outbox_depth",
                "Webhook deliveries pending (waiting for an attempt or a retry)",
            )
            .expect("metric"),
        );
        let oldest_pending_age = registry.register(
            &Gauge::new(
                "wiz_webhook_oldest_pending_age_seconds",
                "Age of the oldest pending webhook delivery (0 when none)",
            )
            .expect("metric"),
        );
        let disabled_endpoints = registry.register(
            &IntGauge::new(
                "wiz_webhook_disabled_endpoints",
                "Webhook endpoints currently disabled",
            )
            .expect("metric"),
        );
        let deliveries_refused = registry.register(
            &IntCounterVec::new(
                Opts::new(
                    "wiz_webhook_deliveries_refused_total",
                    "Webhook deliveries not created because their endpoint was at its bound of \
                     pending deliveries, by reason",
                ),
                &["reason"],
            )
            .expect("metric"),
        );
        deliveries_refused.with_label_values(&["endpoint_backlog_full"]);
        Self {
            attempts,
            attempt_duration,
            outbox_depth,
            oldest_pending_age,
            disabled_endpoints,
            deliveries_refused,
        }
    }

    pub fn observe_attempt(&self, outcome: Outcome, elapsed: Duration) {
        self.attempts.with_label_values(&[outcome.as_str()]).inc();
        if outcome != Outcome::Blocked {
            self.attempt_duration.observe(elapsed.as_secs_f64());
        }
    }
}

/// Refreshes the outbox gauges from the database (they describe shared state, which other
/// backends change too, so they are read rather than counted).
pub async fn refresh_gauges(db: &Db, m: &WebhookMetrics) -> Result<(), sqlx::Error> {
    let (depth, oldest): (i64, Option<i64>) = sqlx::query_as(
        // Deliveries of a disabled endpoint wait paused; they are not work the sender is behind on.
        "SELECT CAST(COUNT(*) AS BIGINT), MIN(d.created_at) FROM webhook_deliveries d \
         JOIN webhook_endpoints w ON w.id = d.endpoint_id \
         WHERE d.status = 'pending' AND w.enabled = 1",
    )
    .fetch_one(db)
    .await?;
    let (disabled,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_endpoints WHERE enabled = 0")
            .fetch_one(db)
            .await?;
    m.outbox_depth.set(depth);
    m.oldest_pending_age
        .set(oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0));
    m.disabled_endpoints.set(disabled);
    Ok(())
}

const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

pub async fn run_gauges(sender: SenderContext, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = refresh_gauges(&sender.db, &sender.webhooks.metrics).await {
            tracing::warn!(error = %e, "refreshing webhook gauges");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(GAUGE_INTERVAL) => {}
        }
    }
}
