//! Shared application state: cheap, cloneable handles only (no outer lock).

use std::sync::Arc;

use tokio::sync::{watch, Notify};

use crate::{config::Config, db::Db, metrics::Metrics};

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// The newest key table version; gateways long-polling `/internal/keys` wait on it.
    pub key_version: watch::Sender<i64>,
    /// Signalled after a transaction that wrote events commits, to wake the webhook sender.
    pub events_notify: Arc<Notify>,
}

impl AppState {
    pub fn new(db: Db, config: Config) -> Self {
        let (key_version, _) = watch::channel(0);
        Self {
            db,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::new()),
            key_version,
            events_notify: Arc::new(Notify::new()),
        }
    }

    /// Call after committing a transaction that emitted events.
    pub fn events_written(&self) {
        self.events_notify.notify_waiters();
    }
}
