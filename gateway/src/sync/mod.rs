//! Keeping the key table fresh from the backend (SPEC §5: changes land within 1 second).
//!
//! A full snapshot first (`since=0`), then long polls (`since=<version>&wait_ms=…`) that the
//! backend answers as soon as a key changes. If the backend is unreachable the last table keeps
//! serving, and polling resumes with capped exponential backoff; the first answer after an outage
//! carries everything that changed meanwhile.

pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;

use crate::clock::unix_ms;
use crate::keys::{Digest, KeyRecord, KeyStatus, Plan, PreviousPair, Whitelist};
use crate::limits::parse_day;
use crate::state::GatewayState;
use wire::{KeysResponse, WireKey, INTERNAL_TOKEN_HEADER, KEYS_PATH};

/// How long the proxy waits for the first snapshot before it starts serving anyway.
pub const STARTUP_SYNC_WAIT: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("backend unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("backend answered {status} to the key sync")]
    Status { status: u16 },
    #[error("no backend configured")]
    NoBackend,
}

pub struct KeySync {
    state: Arc<GatewayState>,
    client: reqwest::Client,
}

impl KeySync {
    pub fn new(state: Arc<GatewayState>) -> KeySync {
        let client = crate::tls::backend_client(&state.config.load())
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .expect("a client with a connect timeout builds");
        KeySync { state, client }
    }

    /// One call to `GET /internal/keys`, to the first healthy backend that accepts a connection
    /// (they all share one database, so any of them answers for all).
    pub async fn fetch(&self, since: u64, wait: Duration) -> Result<KeysResponse, SyncError> {
        let config = self.state.config.load_full();
        let wait_ms = if since == 0 {
            0
        } else {
            wait.as_millis() as u64
        };
        let mut last_error = None;
        for backend in self.state.upstreams.control_order() {
            let url = format!("{}{}", backend.base_url, KEYS_PATH);
            let sent = self
                .client
                .get(url)
                .query(&[("since", since), ("wait_ms", wait_ms)])
                .header(
                    INTERNAL_TOKEN_HEADER,
                    crate::backend_auth::internal_bearer(config.internal_token.expose()),
                )
                .timeout(Duration::from_millis(wait_ms) + Duration::from_secs(10))
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                // Nothing reached this backend: ask the next one now.
                Err(e) if e.is_connect() => {
                    last_error = Some(SyncError::Http(e));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let status = response.status();
            if !status.is_success() {
                return Err(SyncError::Status {
                    status: status.as_u16(),
                });
            }
            return Ok(response.json::<KeysResponse>().await?);
        }
        Err(last_error.unwrap_or(SyncError::NoBackend))
    }

    /// Applies one answer to the table (and, for a full snapshot, seeds today's counters).
    pub async fn apply(&self, response: KeysResponse) {
        let now_ms = unix_ms();
        if let Some(server_ms) = response.server_time_ms {
            if (server_ms - now_ms).abs() > 5_000 {
                tracing::warn!(
                    skew_ms = server_ms - now_ms,
                    "clock skew between gateway and backend; key expiry and daily limits use the \
                     gateway's clock"
                );
            }
        }
        let mut seeds = Vec::new();
        let mut records = Vec::with_capacity(response.keys.len());
        let mut whitelists = WhitelistCache::default();
        for key in response.keys {
            if response.full {
                if let Some(u) = &key.usage_today {
                    if let Some(day) = parse_day(&u.day) {
                        seeds.push((key.id.clone(), day, u.count));
                    }
                }
            }
            if let Some(r) = compile_key(key, &mut whitelists) {
                records.push(r);
            }
        }
        let changed = records.len();
        if response.full {
            self.state.keys.replace_all(records, response.version);
            for (id, day, count) in seeds {
                if let Err(e) = self.state.limits.seed_daily(&id, day, count, now_ms).await {
                    self.state.metrics.limiter_store_errors.inc();
                    tracing::warn!(error = %e, "could not seed a daily counter");
                }
            }
        } else {
            self.state.keys.upsert(records, response.version);
        }
        self.state.keys.mark_synced(now_ms);
        if response.full || changed > 0 {
            tracing::info!(
                full = response.full,
                changed,
                version = response.version,
                table_size = self.state.keys.len(),
                "key table updated"
            );
        }
    }

    /// Polls until shutdown. `ready` is signalled after the first snapshot (or after
    /// `STARTUP_SYNC_WAIT` if the backend does not answer), so the proxy does not start by
    /// refusing every key.
    pub async fn run(&self, mut shutdown: ShutdownWatch, ready: Option<ServiceReadyNotifier>) {
        let ready = Arc::new(Mutex::new(ready));
        let notify_ready = |ready: &Mutex<Option<ServiceReadyNotifier>>| {
            if let Some(r) = ready.lock().unwrap_or_else(|p| p.into_inner()).take() {
                r.notify_ready();
            }
        };
        let deadline = tokio::spawn({
            let ready = ready.clone();
            async move {
                tokio::time::sleep(STARTUP_SYNC_WAIT).await;
                if ready.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                    tracing::warn!("no key snapshot yet; serving with an empty key table");
                }
                notify_ready(&ready);
            }
        });
        self.poll_loop(&mut shutdown, &ready, notify_ready).await;
        deadline.abort();
    }

    async fn poll_loop(
        &self,
        shutdown: &mut ShutdownWatch,
        ready: &Mutex<Option<ServiceReadyNotifier>>,
        notify_ready: impl Fn(&Mutex<Option<ServiceReadyNotifier>>),
    ) {
        let mut have_snapshot = false;
        let mut backoff = FIRST_RETRY;
        loop {
            if *shutdown.borrow() {
                return;
            }
            if !have_snapshot && self.state.usage.replay_pending() {
                // What a killed predecessor admitted but never reported must be in the
                // backend's usage before the snapshot's counts seed the daily limits.
                crate::usage::UsageReporter::new(self.state.clone())
                    .flush()
                    .await;
            }
            let since = if have_snapshot {
                self.state.keys.version()
            } else {
                0
            };
            let long_poll = self.state.config.load().sync.long_poll;
            let result = tokio::select! {
                r = self.fetch(since, long_poll) => r,
                _ = shutdown.changed() => return,
            };
            match result {
                Ok(response) if have_snapshot && !response.full && response.version < since => {
                    // The backend's versions went backwards (its database was replaced): the
                    // only safe table is a fresh full one.
                    tracing::warn!(
                        held = since,
                        backend = response.version,
                        "backend key version went backwards; taking a full snapshot"
                    );
                    have_snapshot = false;
                }
                Ok(response) => {
                    have_snapshot |= response.full;
                    if !have_snapshot {
                        // An incremental answer to `since=0` would be a backend bug; ask again.
                        tracing::warn!("backend answered since=0 without a full snapshot");
                    }
                    self.apply(response).await;
                    backoff = FIRST_RETRY;
                }
                Err(e) => {
                    self.state.metrics.key_sync_errors.inc();
                    let table_age_ms = self.state.keys.last_sync_ms().map(|t| unix_ms() - t);
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        table_age_ms,
                        "key sync failed; serving the last key table"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    let cap = self.state.config.load().sync.retry_max;
                    backoff = (backoff * 2).min(cap);
                }
            }
            if have_snapshot {
                notify_ready(ready);
            }
        }
    }
}

#[async_trait]
impl BackgroundService for KeySync {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready_notifier: ServiceReadyNotifier,
    ) {
        self.run(shutdown, Some(ready_notifier)).await;
    }
}

/// Whitelists compiled during one sync answer, by their entries: keys of one account often
/// share a whitelist, and then share one compiled copy instead of one each.
#[derive(Default)]
pub struct WhitelistCache(HashMap<Vec<String>, Whitelist>);

impl WhitelistCache {
    fn compile(&mut self, key_id: &str, entries: Vec<String>) -> Whitelist {
        if entries.is_empty() {
            return Whitelist::any();
        }
        if let Some(w) = self.0.get(&entries) {
            return w.clone();
        }
        let (whitelist, rejected) = Whitelist::compile(&entries);
        if !rejected.is_empty() {
            tracing::warn!(key_id, ?rejected, "key sync: whitelist entries ignored");
        }
        self.0.insert(entries, whitelist.clone());
        whitelist
    }
}

/// Turns a wire key into a table record; `None` (logged) if its hashes are unusable.
pub fn compile_key(key: WireKey, whitelists: &mut WhitelistCache) -> Option<KeyRecord> {
    let (Some(key_hash), Some(secret_hash)) = (
        Digest::from_hex(&key.key_hash),
        Digest::from_hex(&key.secret_hash),
    ) else {
        tracing::error!(key_id = %key.id, "key sync: bad key or secret hash; key skipped");
        return None;
    };
    let previous = key.previous.and_then(|p| {
        match (
            Digest::from_hex(&p.key_hash),
            Digest::from_hex(&p.secret_hash),
        ) {
            (Some(key_hash), Some(secret_hash)) => Some(Box::new(PreviousPair {
                key_hash,
                secret_hash,
                valid_until_ms: p.valid_until_ms,
            })),
            _ => {
                tracing::error!(key_id = %key.id, "key sync: bad previous hashes; ignored");
                None
            }
        }
    });
    // Anything unexpected fails closed: an unknown status counts as revoked, an unknown plan
    // as one without API access.
    let status = match key.status.as_str() {
        "active" => KeyStatus::Active,
        "revoked" => KeyStatus::Revoked,
        other => {
            tracing::error!(key_id = %key.id, status = other, "key sync: unknown status; treated as revoked");
            KeyStatus::Revoked
        }
    };
    let plan = Plan::parse(&key.plan).unwrap_or_else(|| {
        tracing::error!(key_id = %key.id, plan = %key.plan, "key sync: unknown plan; treated as free");
        Plan::Free
    });
    let whitelist = whitelists.compile(&key.id, key.ip_whitelist);
    let prefix: String = key
        .prefix
        .chars()
        .take(crate::credentials::DISPLAY_PREFIX_LEN)
        .collect();
    Some(KeyRecord {
        id: key.id.as_str().into(),
        account_id: key.account_id.as_str().into(),
        prefix: prefix.as_str().into(),
        key_hash,
        secret_hash,
        previous,
        status,
        expires_at_ms: key.expires_at_ms,
        plan,
        rate_limit_per_minute: key.rate_limit_per_minute,
        daily_limit: key.daily_limit,
        whitelist,
    })
}

#[cfg(test)]
pub(crate) mod tests;
