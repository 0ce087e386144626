//! The WhatsApp Business Cloud API channel (`whatsapp_cloud`): sends through Meta's Graph API
//! with each account's own phone number and token, and learns statuses from Meta's webhook
//! callbacks (`callbacks`), so it has no report plan of its own.
//!
//! Safety of retries: a send that may have reached Meta is never repeated. Only answers that say
//! the message was refused before acceptance — HTTP 429 / a throughput code (`graph::is_throttle`)
//! or a connection that never opened — put it back in the queue; a timeout or a garbled answer
//! after the request went out fails it as `send_outcome_unknown`. For the same reason
//! `resend_is_safe` is false: a claim interrupted by a crash fails (`send_interrupted`).
//!
//! Throughput: the dispatcher already paces each account at `channel.rate_per_second` (Meta's
//! default 80 messages/s per number). When Meta still says "too many", the phone number pauses
//! (`throttle_backoff`, doubling per repeated refusal, or Meta's `Retry-After` if longer) and every
//! message for it waits in the queue until the pause ends.

pub mod callbacks;
pub mod graph;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use prometheus::{IntCounterVec, Opts};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    settings::{self, CloudSettings, SettingsError},
    Channel, Outbound, Report, SendOutcome,
};
use crate::{
    config::WhatsAppConfig, db::Db, messages::ErrorInfo, metrics::Metrics, secrets::Secrets,
};

/// Stored on the messages this channel sends.
pub const NAME: &str = "whatsapp_cloud";

/// How long a loaded account's settings are reused before they are read again (another
/// backend's change shows within this; this backend's own changes invalidate at once).
const SETTINGS_TTL: Duration = Duration::from_secs(2);
/// The longest a phone number pauses after repeated throughput refusals.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Bytes of the provider's answer kept for the console's connection test.
const TEST_ANSWER_BYTES: usize = 4096;

/// An account's settings as loaded, and when (`None`: the account has no Cloud API settings).
type CachedSettings = (Instant, Option<Arc<CloudSettings>>);

struct Throttle {
    until: Instant,
    strikes: u32,
}

pub struct CloudChannel {
    config: WhatsAppConfig,
    http: reqwest::Client,
    db: Db,
    secrets: Arc<Secrets>,
    settings: Mutex<HashMap<String, CachedSettings>>,
    /// Paused phone numbers, by phone number id.
    throttles: Mutex<HashMap<String, Throttle>>,
    /// Sends by outcome: `accepted`, `rejected`, `throttled`, `deferred`, `unknown`,
    /// `unreachable`, `not_configured`.
    pub sends: IntCounterVec,
    /// Webhook callbacks by outcome (see `callbacks`).
    pub callbacks: IntCounterVec,
}

/// What the provider said to the console's "test connection".
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionReport {
    /// Meta answered 2xx.
    pub ok: bool,
    /// The HTTP status Meta answered with; `null` if it could not be reached.
    pub http_status: Option<u16>,
    /// Meta's answer: the phone number's `display_phone_number`, `verified_name`,
    /// `quality_rating`, or Graph's error object; `{}` if Meta could not be reached.
    #[schema(value_type = Object)]
    pub provider: Value,
    /// A one-line summary for people.
    pub message: String,
}

impl CloudChannel {
    pub fn new(config: &WhatsAppConfig, db: Db, secrets: Arc<Secrets>, metrics: &Metrics) -> Self {
        let counter = |name: &str, help: &str| {
            metrics
                .register(&IntCounterVec::new(Opts::new(name, help), &["outcome"]).expect("metric"))
        };
        Self {
            http: reqwest::Client::builder()
                .timeout(config.timeout)
                .connect_timeout(config.connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("WizMessage/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("HTTP client"),
            config: config.clone(),
            db,
            secrets,
            settings: Mutex::new(HashMap::new()),
            throttles: Mutex::new(HashMap::new()),
            sends: counter(
                "wiz_backend_whatsapp_sends_total",
                "Sends to the WhatsApp Cloud API, by outcome",
            ),
            callbacks: counter(
                "wiz_backend_whatsapp_callbacks_total",
                "WhatsApp Cloud API webhook callbacks, by outcome",
            ),
        }
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn config(&self) -> &WhatsAppConfig {
        &self.config
    }

    /// Forgets the cached settings of an account (after the admin API changed them).
    pub fn invalidate(&self, account_id: &str) {
        self.settings
            .lock()
            .expect("settings cache")
            .remove(account_id);
    }

    /// The account's Cloud API settings, from the cache or the database.
    pub async fn settings(
        &self,
        account_id: &str,
    ) -> Result<Option<Arc<CloudSettings>>, SettingsError> {
        if let Some((at, cached)) = self
            .settings
            .lock()
            .expect("settings cache")
            .get(account_id)
        {
            if at.elapsed() < SETTINGS_TTL {
                return Ok(cached.clone());
            }
        }
        let mut conn = self.db.acquire().await?;
        let loaded = match settings::get(&mut conn, account_id).await? {
            Some(stored) => stored.cloud(account_id, &self.secrets)?.map(Arc::new),
            None => None,
        };
        let mut cache = self.settings.lock().expect("settings cache");
        cache.retain(|_, (at, _)| at.elapsed() < SETTINGS_TTL);
        cache.insert(account_id.to_string(), (Instant::now(), loaded.clone()));
        Ok(loaded)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/{}/{}",
            self.config.graph_base_url, self.config.api_version, path
        )
    }

    /// The media endpoint for a media id received in a callback (`GET /{version}/{media-id}`
    /// answers the download URL, with the account's token).
    pub fn media_url(&self, media_id: &str) -> String {
        self.url(media_id)
    }

    /// The remaining pause of a phone number, if any.
    fn paused(&self, phone_number_id: &str) -> Option<Duration> {
        let throttles = self.throttles.lock().expect("throttles");
        let t = throttles.get(phone_number_id)?;
        t.until.checked_duration_since(Instant::now())
    }

    /// Records a throughput refusal: the number pauses, longer on each repeat.
    fn throttled(&self, phone_number_id: &str, retry_after: Option<Duration>) -> Duration {
        let mut throttles = self.throttles.lock().expect("throttles");
        let t = throttles
            .entry(phone_number_id.to_string())
            .or_insert(Throttle {
                until: Instant::now(),
                strikes: 0,
            });
        t.strikes = t.strikes.saturating_add(1);
        let backoff = self
            .config
            .throttle_backoff
            .saturating_mul(1 << (t.strikes - 1).min(16))
            .min(MAX_BACKOFF);
        let pause = retry_after
            .map_or(backoff, |r| r.max(backoff))
            .min(MAX_BACKOFF);
        t.until = Instant::now() + pause;
        pause
    }

    fn recovered(&self, phone_number_id: &str) {
        let mut throttles = self.throttles.lock().expect("throttles");
        if throttles
            .get(phone_number_id)
            .is_some_and(|t| t.until <= Instant::now())
        {
            throttles.remove(phone_number_id);
        }
    }

    fn count(&self, outcome: &str) {
        self.sends.with_label_values(&[outcome]).inc();
    }

    async fn send_one(&self, message: Outbound<'_>) -> SendOutcome {
        let settings = match self.settings(message.account_id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.count("not_configured");
                return SendOutcome::Rejected(ErrorInfo {
                    code: "channel_not_configured".into(),
                    message: "the account's WhatsApp Cloud API settings are incomplete".into(),
                });
            }
            Err(err) => {
                // Nothing went out: try again shortly.
                tracing::warn!(error = %err, "loading channel settings failed");
                return SendOutcome::Retry {
                    after: Duration::from_secs(1),
                    refusal: None,
                };
            }
        };
        if let Some(after) = self.paused(&settings.phone_number_id) {
            self.count("deferred");
            return SendOutcome::Retry {
                after,
                refusal: None,
            };
        }
        let content: crate::messages::Content =
            match serde_json::from_value(message.content.clone()) {
                Ok(c) => c,
                Err(e) => {
                    return SendOutcome::Rejected(ErrorInfo {
                        code: "unsupported_content".into(),
                        message: format!("stored content does not decode: {e}"),
                    })
                }
            };
        let body = match graph::message_body(message.to, &content) {
            Ok(body) => body,
            Err(error) => {
                self.count("rejected");
                return SendOutcome::Rejected(error);
            }
        };
        let url = self.url(&format!("{}/messages", settings.phone_number_id));
        let sent = self
            .http
            .post(url)
            .bearer_auth(&settings.access_token)
            .json(&body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(err) if err.is_connect() => {
                // The connection never opened, so Meta has not seen this request.
                self.count("unreachable");
                tracing::warn!(error = %without_url(&err), "WhatsApp Cloud API unreachable");
                let after = self.throttled(&settings.phone_number_id, None);
                return SendOutcome::Retry {
                    after,
                    refusal: Some(ErrorInfo {
                        code: "provider_unreachable".into(),
                        message: "the WhatsApp Cloud API could not be reached".into(),
                    }),
                };
            }
            Err(err) => {
                self.count("unknown");
                tracing::warn!(error = %without_url(&err), "WhatsApp send without an answer");
                return SendOutcome::Rejected(outcome_unknown(if err.is_timeout() {
                    "no answer from the WhatsApp Cloud API in time"
                } else {
                    "the answer of the WhatsApp Cloud API was cut off"
                }));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(_) => {
                self.count("unknown");
                return SendOutcome::Rejected(outcome_unknown(
                    "the answer of the WhatsApp Cloud API was cut off",
                ));
            }
        };
        if status.is_success() {
            let id = serde_json::from_slice::<graph::SendResponse>(&bytes)
                .ok()
                .and_then(|r| r.messages.into_iter().next())
                .map(|m| m.id)
                .filter(|id| !id.is_empty() && id.len() <= 512);
            return match id {
                Some(provider_message_id) => {
                    self.count("accepted");
                    self.recovered(&settings.phone_number_id);
                    SendOutcome::Accepted {
                        provider_message_id,
                    }
                }
                None => {
                    self.count("unknown");
                    SendOutcome::Rejected(outcome_unknown(
                        "the WhatsApp Cloud API answered success without a message id",
                    ))
                }
            };
        }
        let error = serde_json::from_slice::<graph::ErrorResponse>(&bytes)
            .ok()
            .map(|r| r.error);
        if status == http::StatusCode::TOO_MANY_REQUESTS
            || error.as_ref().is_some_and(|e| graph::is_throttle(e.code))
        {
            self.count("throttled");
            let after = self.throttled(&settings.phone_number_id, retry_after);
            let refusal = error.as_ref().map(graph::error_info).unwrap_or(ErrorInfo {
                code: "throughput_limited".into(),
                message: format!("the WhatsApp Cloud API answered HTTP {}", status.as_u16()),
            });
            return SendOutcome::Retry {
                after,
                refusal: Some(refusal),
            };
        }
        self.count("rejected");
        match error {
            Some(error) => SendOutcome::Rejected(graph::error_info(&error)),
            // A 5xx without Graph's error object says nothing about whether the send happened.
            None if status.is_server_error() => SendOutcome::Rejected(outcome_unknown(&format!(
                "the WhatsApp Cloud API answered HTTP {}",
                status.as_u16()
            ))),
            None => SendOutcome::Rejected(ErrorInfo {
                code: "provider_error".into(),
                message: format!("the WhatsApp Cloud API answered HTTP {}", status.as_u16()),
            }),
        }
    }

    /// The console's "test connection": reads the phone number's record from Meta with the
    /// stored token (`GET /{version}/{phone-number-id}?fields=...`) and reports what Meta said.
    pub async fn test_connection(&self, settings: &CloudSettings) -> ConnectionReport {
        let url = self.url(&settings.phone_number_id);
        let answer = self
            .http
            .get(url)
            .query(&[(
                "fields",
                "display_phone_number,verified_name,quality_rating,code_verification_status",
            )])
            .bearer_auth(&settings.access_token)
            .send()
            .await;
        let response = match answer {
            Ok(r) => r,
            Err(err) => {
                return ConnectionReport {
                    ok: false,
                    http_status: None,
                    provider: Value::Object(Default::default()),
                    message: format!(
                        "the WhatsApp Cloud API could not be reached: {}",
                        without_url(&err)
                    ),
                }
            }
        };
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let provider = serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|_| {
            Value::String(
                String::from_utf8_lossy(&bytes[..bytes.len().min(TEST_ANSWER_BYTES)]).into_owned(),
            )
        });
        let message = if status.is_success() {
            format!(
                "connected: {} ({})",
                provider["display_phone_number"].as_str().unwrap_or("?"),
                provider["verified_name"]
                    .as_str()
                    .unwrap_or("no verified name"),
            )
        } else {
            let error = provider
                .get("error")
                .and_then(|e| serde_json::from_value::<graph::GraphError>(e.clone()).ok());
            match error {
                Some(e) => {
                    let info = graph::error_info(&e);
                    format!("refused ({}): {}", info.code, info.message)
                }
                None => format!("refused with HTTP {}", status.as_u16()),
            }
        };
        ConnectionReport {
            ok: status.is_success(),
            http_status: Some(status.as_u16()),
            provider,
            message,
        }
    }
}

/// reqwest's error text with the URL left out (it names the phone number id, which is fine, but
/// the rule is simpler: nothing request-specific in logs).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&e.to_string());
        source = e.source();
    }
    match err.url() {
        Some(url) => text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "<url>"),
        None => text,
    }
}

fn outcome_unknown(why: &str) -> ErrorInfo {
    ErrorInfo {
        code: "send_outcome_unknown".into(),
        message: format!("{why}; WhatsApp may have accepted the message, so it was not sent again"),
    }
}

impl Channel for CloudChannel {
    fn name(&self) -> &'static str {
        NAME
    }

    fn send<'a>(&'a self, message: Outbound<'a>) -> BoxFuture<'a, SendOutcome> {
        Box::pin(self.send_one(message))
    }

    fn report_plan(&self, _to: &str) -> Vec<(Duration, Report)> {
        Vec::new()
    }

    fn resend_is_safe(&self) -> bool {
        false
    }
}
