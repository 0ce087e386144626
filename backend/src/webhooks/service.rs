//! What the console does with its account's webhook endpoints and their deliveries, with the
//! rules that go with it: URL, events and description are checked on every save, an account
//! holds at most `account_limits.max_webhook_endpoints` endpoints, a test attempt counts against
//! the same in-flight caps as the worker's, and a disabled endpoint's delivery is not retried.
//! Changes that make deliveries due ring the worker's doorbell. The HTTP edge turns
//! [`EndpointError`] into its answer.

use super::{
    endpoints::{self, Changes, Endpoint, LogEntry, NewEndpoint},
    outbox::{self, AttemptResult, DeliveryFilter, DeliveryView},
    sign::Secret,
    worker, Webhooks,
};
use crate::{
    accounts::bounds::{self, Bounded},
    config::WebhooksConfig,
    db::Db,
    refusal::Refusal,
    secrets::Secrets,
};

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("the account has no such webhook endpoint")]
    NotFound,
    #[error("the account has no such delivery")]
    DeliveryNotFound,
    /// The test delivery just created could not be read back.
    #[error("test delivery vanished")]
    TestVanished,
    /// An input failed its check, the account is at its bound, the endpoint is busy or disabled:
    /// the rule's own answer (`invalid_url`, `too_many_webhook_endpoints`, `endpoint_busy`, ...).
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A new endpoint as the console sent it.
#[derive(Debug)]
pub struct EndpointInput {
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub enabled: bool,
}

/// A change as the console sent it; only the fields present change.
#[derive(Debug, Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

/// An endpoint's delivery log with a checked filter, to be read a page at a time
/// ([`Endpoints::deliveries`]).
#[derive(Debug)]
pub struct DeliveryLog {
    endpoint_id: String,
    status: Option<String>,
    event_type: Option<String>,
}

/// A test event sent to an endpoint: its delivery, its event and how the attempt went.
pub struct TestAttempt {
    pub delivery_id: String,
    pub event_id: String,
    pub result: AttemptResult,
}

/// The account's webhook endpoints with what the sender shares: the secrets' key, the client,
/// the in-flight caps and the worker's doorbell.
pub struct Endpoints<'a> {
    pub db: &'a Db,
    pub secrets: &'a Secrets,
    pub webhooks: &'a Webhooks,
    pub config: &'a WebhooksConfig,
}

impl Endpoints<'_> {
    async fn load(&self, account_id: &str, id: &str) -> Result<Endpoint, EndpointError> {
        endpoints::get(self.db, account_id, id)
            .await?
            .ok_or(EndpointError::NotFound)
    }

    /// One page in creation order, and the cursor of the next.
    pub async fn list(
        &self,
        account_id: &str,
        cursor: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<Endpoint>, Option<String>), EndpointError> {
        Ok(endpoints::list(self.db, account_id, cursor, limit).await?)
    }

    /// The endpoint and its newest `log_lines` log entries.
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn get(
        &self,
        account_id: &str,
        id: &str,
        log_lines: i64,
    ) -> Result<(Endpoint, Vec<LogEntry>), EndpointError> {
        let endpoint = self.load(account_id, id).await?;
        let log = endpoints::log(self.db, &endpoint.id, log_lines).await?;
        Ok((endpoint, log))
    }

    /// Checks URL, events and description, then the account's bound, and stores the endpoint;
    /// the secret is returned here and never again.
    #[tracing::instrument(skip_all, fields(endpoint_id = tracing::field::Empty))]
    pub async fn create(
        &self,
        account_id: &str,
        input: EndpointInput,
        max_endpoints: u32,
    ) -> Result<(Endpoint, Secret), EndpointError> {
        let new = NewEndpoint {
            url: endpoints::validate_url(&input.url, self.config.allow_private_targets)?,
            events: endpoints::validate_events(&input.events)?,
            description: endpoints::validate_description(&input.description)?,
            enabled: input.enabled,
        };
        let mut tx = self.db.begin().await?;
        bounds::check(
            &mut tx,
            account_id,
            Bounded::WebhookEndpoints,
            max_endpoints,
        )
        .await??;
        let (id, secret) = endpoints::insert(&mut tx, self.secrets, account_id, &new).await?;
        tx.commit().await?;
        tracing::Span::current().record("endpoint_id", id.as_str());
        let endpoint = endpoints::get(self.db, account_id, &id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok((endpoint, secret))
    }

    /// Checks and applies the changes. Re-enabling clears the sender's verdict and wakes the
    /// worker: the endpoint's paused deliveries are due.
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn update(
        &self,
        account_id: &str,
        id: &str,
        changes: EndpointChanges,
    ) -> Result<Endpoint, EndpointError> {
        let allow_private = self.config.allow_private_targets;
        let changes = Changes {
            url: changes
                .url
                .map(|u| endpoints::validate_url(&u, allow_private))
                .transpose()?,
            events: changes
                .events
                .map(|e| endpoints::validate_events(&e))
                .transpose()?,
            description: changes
                .description
                .map(|d| endpoints::validate_description(&d))
                .transpose()?,
            enabled: changes.enabled,
        };
        let endpoint = endpoints::update(self.db, account_id, id, changes)
            .await?
            .ok_or(EndpointError::NotFound)?;
        if endpoint.enabled {
            self.webhooks.wake.notify_one();
        }
        Ok(endpoint)
    }

    /// Deletes the endpoint with its deliveries, attempts and log.
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn delete(&self, account_id: &str, id: &str) -> Result<(), EndpointError> {
        if endpoints::delete(self.db, account_id, id).await? {
            Ok(())
        } else {
            Err(EndpointError::NotFound)
        }
    }

    /// A new secret (shown once); the previous one keeps signing for `webhooks.rotation_overlap`,
    /// until the returned time (unix ms).
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn rotate_secret(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<(Secret, i64), EndpointError> {
        endpoints::rotate_secret(
            self.db,
            self.secrets,
            account_id,
            id,
            self.config.rotation_overlap,
        )
        .await?
        .ok_or(EndpointError::NotFound)
    }

    /// Sends a `webhook.test` event to the endpoint now and records the attempt.
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn test(&self, account_id: &str, id: &str) -> Result<TestAttempt, EndpointError> {
        let endpoint = self.load(account_id, id).await?;
        let config = self.config;
        // The same caps as the worker's attempts, counted together with them: a test is one more
        // connection to the endpoint, and a hanging endpoint must not collect any number of them.
        let _slot = self
            .webhooks
            .in_flight
            .try_take(
                &endpoint.id,
                config.max_in_flight_per_endpoint,
                config.max_in_flight,
            )
            .ok_or_else(|| {
                Refusal::busy(
                    "endpoint_busy",
                    format!(
                        "{} attempts to this endpoint are already in flight (webhooks.\
                         max_in_flight_per_endpoint), or the backend's webhooks.max_in_flight is \
                         reached; try again when they finish",
                        config.max_in_flight_per_endpoint
                    ),
                    1,
                )
            })?;
        let delivery_id =
            outbox::create_test_delivery(self.db, account_id, &endpoint.id, config.lease).await?;
        let job = outbox::load_jobs(self.db, self.secrets, std::slice::from_ref(&delivery_id))
            .await?
            .pop()
            .ok_or(EndpointError::TestVanished)?;
        // No connection is held while the request is out.
        let result = worker::send(self.webhooks, config, &job).await;
        outbox::record(self.db, config, std::slice::from_ref(&result)).await?;
        Ok(TestAttempt {
            delivery_id,
            event_id: job.event_id,
            result,
        })
    }

    /// The endpoint's delivery log, filtered by `status` (`pending`, `succeeded` or `failed`)
    /// and `event_type`; an empty text is no filter.
    #[tracing::instrument(skip_all, fields(endpoint_id = %id))]
    pub async fn delivery_log(
        &self,
        account_id: &str,
        id: &str,
        status: Option<String>,
        event_type: Option<String>,
    ) -> Result<DeliveryLog, EndpointError> {
        let endpoint = self.load(account_id, id).await?;
        let status = status.filter(|s| !s.is_empty());
        if let Some(status) = &status {
            if !matches!(status.as_str(), "pending" | "succeeded" | "failed") {
                return Err(Refusal::invalid(
                    "invalid_status",
                    "status: pending, succeeded or failed",
                )
                .into());
            }
        }
        Ok(DeliveryLog {
            endpoint_id: endpoint.id,
            status,
            event_type: event_type.filter(|s| !s.is_empty()),
        })
    }

    /// A page of the log, newest first, and the cursor of the next.
    #[tracing::instrument(skip_all, fields(endpoint_id = %log.endpoint_id))]
    pub async fn deliveries(
        &self,
        log: DeliveryLog,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<(Vec<DeliveryView>, Option<String>), EndpointError> {
        let filter = DeliveryFilter {
            status: log.status,
            event_type: log.event_type,
            cursor,
            limit,
        };
        Ok(outbox::list_deliveries(self.db, &log.endpoint_id, &filter).await?)
    }

    /// Makes a delivery of an enabled endpoint due now and wakes the worker.
    #[tracing::instrument(skip_all, fields(delivery_id = %id))]
    pub async fn retry(&self, account_id: &str, id: &str) -> Result<DeliveryView, EndpointError> {
        let endpoint_id = outbox::delivery_endpoint(self.db, account_id, id)
            .await?
            .ok_or(EndpointError::DeliveryNotFound)?;
        let endpoint = endpoints::get(self.db, account_id, &endpoint_id)
            .await?
            .ok_or(EndpointError::DeliveryNotFound)?;
        if !endpoint.enabled {
            return Err(Refusal::conflict(
                "endpoint_disabled",
                "the webhook endpoint is disabled; enable it first (PATCH /admin/webhooks/{id})",
            )
            .into());
        }
        outbox::retry_now(self.db, account_id, id)
            .await?
            .ok_or(EndpointError::DeliveryNotFound)?;
        self.webhooks.wake.notify_one();
        outbox::get_delivery(self.db, account_id, id)
            .await?
            .ok_or(EndpointError::DeliveryNotFound)
    }
}
