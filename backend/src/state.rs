//! Shared application state: cheap, cloneable handles only (no outer lock).

use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::{accounts::login_throttle::LoginThrottle, config::Config, db::Db, metrics::Metrics};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// The newest key table version; gateways long-polling `/internal/keys` wait on it.
    pub key_version: watch::Sender<i64>,
    /// Signalled by `UnitOfWork::commit` when events were written, to wake the webhook sender.
    pub events_notify: Arc<Notify>,
    /// The `/internal` bearer and the gateway-proof key, derived from `config.internal_token`.
    pub token_keys: Arc<crate::auth::token_keys::TokenKeys>,
    /// Encrypts and decrypts secrets stored in the database (`config.secrets_key`).
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Failed console logins per (email, client IP), email and IP (`config.login_throttle`).
    pub login_throttle: Arc<LoginThrottle>,
    /// Every password hash and check, with bounded concurrency (`config.password_hashing`).
    pub passwords: crate::auth::password::Hasher,
    /// The webhook sender's client, metrics and doorbell.
    pub webhooks: crate::webhooks::Webhooks,
    /// The messaging channel, its workers' doorbells and metrics.
    pub messaging: Arc<crate::channel::Messaging>,
    /// Becomes `true` when a graceful shutdown begins, so long polls answer at once instead of
    /// holding the shutdown up for their whole wait.
    pub shutting_down: watch::Sender<bool>,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> Self {
        let (key_version, _) = watch::channel(0);
        let (shutting_down, _) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let secrets = Arc::new(crate::secrets::Secrets::new(&config.secrets_key));
        Self {
            webhooks: crate::webhooks::Webhooks::new(&config.webhooks, &metrics),
            messaging: Arc::new(crate::channel::Messaging::new(
                &config.channel,
                db.clone(),
                secrets.clone(),
                &metrics,
            )),
            db,
            secrets,
            metrics,
            key_version,
            shutting_down,
            events_notify: Arc::new(Notify::new()),
            token_keys: Arc::new(crate::auth::token_keys::TokenKeys::derive(
                &config.internal_token,
            )),
            login_throttle: LoginThrottle::new(&config.login_throttle),
            passwords: crate::auth::password::Hasher::new(&config.password_hashing),
            config: Arc::new(config),
        }
    }
}
