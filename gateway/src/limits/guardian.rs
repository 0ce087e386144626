//! The background half of the shared limiter: it probes the store, registers this gateway's
//! heartbeat (so every gateway knows N for its local share), closes the breaker when the store is
//! back, hands over what was admitted locally meanwhile, and re-seeds a store that lost its
//! counters (SPEC §10 "Limits under faults").
//!
//! Re-seeding is exact because nobody admits while it runs. A store without its marker answers
//! every decision "unseeded", so every gateway refuses (`503 limiter_unavailable`, a few seconds).
//! One gateway takes the re-seed lock, waits `reseed_grace` (two usage flush intervals and a
//! margin) so that every running gateway has reported to the backend what it admitted before the
//! store lost it, then reads the backend's usage of today (a full key snapshot), raises each
//! key's counter to it and sets the marker; the gateways admit again on their next request.
//! What a gateway killed with SIGKILL had not reported yet (at most one flush interval of its
//! traffic) is lost only if the store is lost too: that is two faults, not one.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;

use super::limiter::{Shared, StoreState};
use super::{parse_day, utc_day};
use crate::clock::unix_ms;
use crate::state::GatewayState;
use crate::sync::KeySync;

/// Probe interval while the store works: the heartbeat, and a check of the marker.
const PROBE_AVAILABLE: Duration = Duration::from_secs(1);
/// Probe interval while the breaker is open: how soon requests are admitted again.
const PROBE_OPEN: Duration = Duration::from_millis(200);
/// After handing its local admissions over, a gateway keeps to its share this long before it
/// decides on the store again: every other gateway's probe (every `PROBE_OPEN`) has found the
/// store back and handed its own over by then.
const HAND_OVER_SETTLE: Duration = Duration::from_secs(1);
/// A gateway whose heartbeat is older than this no longer counts in N.
const LIVENESS_MS: u64 = 5_000;
/// How long the proxy waits at start for the store to be usable before it opens anyway.
const STARTUP_WAIT_EXTRA: Duration = Duration::from_secs(5);

/// How long a re-seed waits for the other gateways' usage reports.
pub fn reseed_grace(flush_interval: Duration) -> Duration {
    flush_interval * 2 + Duration::from_millis(500)
}

pub struct Guardian {
    state: Arc<GatewayState>,
    sync: KeySync,
    /// The marker of the store this gateway last saw seeded.
    known_epoch: Mutex<Option<String>>,
}

impl Guardian {
    pub fn new(state: Arc<GatewayState>) -> Guardian {
        Guardian {
            sync: KeySync::new(state.clone()),
            state,
            known_epoch: Mutex::new(None),
        }
    }

    fn known_epoch(&self) -> Option<String> {
        self.known_epoch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_known_epoch(&self, epoch: String) {
        *self.known_epoch.lock().unwrap_or_else(|p| p.into_inner()) = Some(epoch);
    }

    /// One probe and whatever it calls for.
    pub async fn tick(&self, shared: &Shared) {
        let probe = shared
            .redis
            .probe(&self.state.gateway_id, unix_ms(), LIVENESS_MS)
            .await;
        let probe = match probe {
            Ok(p) => p,
            Err(e) => {
                self.state.metrics.limiter_store_errors.inc();
                if shared.breaker.unreachable() {
                    shared.set_state_gauge();
                    tracing::warn!(error = %e, "limit store unreachable; breaker open");
                }
                return;
            }
        };
        shared.gateways.store(probe.gateways, Ordering::Release);
        self.state
            .metrics
            .limiter_gateways
            .set(i64::from(probe.gateways));
        let mut epoch = probe.epoch;
        if let Some(stale) = epoch.as_deref().filter(|e| *e != probe.run_id) {
            // Seeded on another server: this data may miss what the seeded one had counted.
            tracing::warn!(
                "limit store is not the server that was seeded (failover or restart from a \
                 snapshot); re-seeding"
            );
            if let Err(e) = shared.redis.forget_marker(stale).await {
                tracing::warn!(error = %e, "could not clear the stale marker");
                return;
            }
            epoch = None;
        }
        match epoch {
            Some(epoch) => {
                if shared.breaker.state() != StoreState::Available
                    && !self.recover(shared, &epoch, probe.gateways).await
                {
                    return;
                }
                self.set_known_epoch(epoch);
            }
            None => {
                if shared.breaker.unseeded() {
                    shared.set_state_gauge();
                    tracing::warn!("limit store has lost its counters; refusing until re-seeded");
                }
                self.reseed(shared).await;
            }
        }
    }

    /// Closes the breaker on a store that answers with its counters. What this gateway admitted
    /// on its share is added to a store that kept its counters; a store re-seeded meanwhile
    /// already holds it (re-seeding reads the backend's usage, which these requests were
    /// reported to), so then it is dropped. The local shares stay in force until the breaker is
    /// closed, so the hand-over window cannot open a fresh share. `false`: the hand-over failed,
    /// the breaker stays open.
    async fn recover(&self, shared: &Shared, epoch: &str, gateways: u32) -> bool {
        let same_store = self.known_epoch().as_deref() == Some(epoch);
        if same_store {
            if !self.hand_over(shared, shared.shares.take_pending()).await {
                return false;
            }
            if shared.breaker.state() == StoreState::Local {
                // The other gateways see the store back within a probe or two and hand theirs
                // over too; deciding on the store before they have would admit again what
                // their shares already admitted.
                tokio::time::sleep(HAND_OVER_SETTLE).await;
                if !self.hand_over(shared, shared.shares.take_pending()).await {
                    return false;
                }
            }
        }
        shared.breaker.close();
        shared.set_state_gauge();
        // Admitted between the hand-over and the close.
        let late = shared.shares.end_outage();
        if same_store && !late.is_empty() && !self.hand_over(shared, late).await {
            tracing::warn!("local admissions of the last moment were not handed over");
            shared.shares.end_outage();
        }
        tracing::info!(gateways, "limit store available again");
        true
    }

    /// Adds local admissions to the store's day counters; on failure puts back what is left.
    async fn hand_over(&self, shared: &Shared, admitted: Vec<(String, u32, u32)>) -> bool {
        for (i, (key_id, day, count)) in admitted.iter().enumerate() {
            if let Err(e) = shared.redis.add_daily(key_id, *day, *count).await {
                tracing::warn!(error = %e, "could not hand over local admissions; retrying");
                shared.shares.hand_back(admitted[i..].to_vec());
                return false;
            }
        }
        if !admitted.is_empty() {
            tracing::info!(
                keys = admitted.len(),
                "handed local admissions over to the store"
            );
        }
        true
    }

    async fn reseed(&self, shared: &Shared) {
        let flush_interval = self.state.config.load().usage.flush_interval;
        let grace = reseed_grace(flush_interval);
        let gateway_id = &self.state.gateway_id;
        match shared
            .redis
            .lock_reseed(gateway_id, grace + Duration::from_secs(20))
            .await
        {
            Ok(true) => {}
            // Another gateway re-seeds; its marker ends the wait.
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "re-seed lock failed");
                return;
            }
        }
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "re-seeding the limit store: waiting for every gateway's usage report"
        );
        tokio::time::sleep(grace).await;
        let snapshot = match self.sync.fetch(0, Duration::ZERO).await {
            Ok(s) => s,
            Err(e) => {
                // The lock expires and a later probe (here or elsewhere) tries again.
                tracing::warn!(error = %e, "re-seed: no backend answered; retrying");
                return;
            }
        };
        let now_ms = unix_ms();
        let today = utc_day(now_ms);
        let seeds: Vec<(String, u32)> = snapshot
            .keys
            .into_iter()
            .filter_map(|k| {
                let usage = k.usage_today?;
                (parse_day(&usage.day)? == today).then_some((k.id, usage.count))
            })
            .collect();
        match shared.redis.reseed(&seeds, now_ms).await {
            Ok(()) => {
                for (key_id, count) in &seeds {
                    shared.shares.observe_count(key_id, today, *count);
                }
                self.state.metrics.limiter_reseeds.inc();
                tracing::info!(keys = seeds.len(), "limit store re-seeded from the backend");
            }
            Err(e) => tracing::warn!(error = %e, "re-seed failed; retrying"),
        }
    }

    pub async fn run(&self, mut shutdown: ShutdownWatch, ready: Option<ServiceReadyNotifier>) {
        let ready = Arc::new(Mutex::new(ready));
        let notify = |ready: &Mutex<Option<ServiceReadyNotifier>>| {
            if let Some(r) = ready.lock().unwrap_or_else(|p| p.into_inner()).take() {
                r.notify_ready();
            }
        };
        let Some(shared) = self.state.limits.shared_store() else {
            notify(&ready);
            return;
        };
        // Never hold the proxy back for long: without a usable store it answers 503s, which
        // is still better than a closed port.
        let flush_interval = self.state.config.load().usage.flush_interval;
        let deadline = tokio::spawn({
            let ready = ready.clone();
            async move {
                tokio::time::sleep(reseed_grace(flush_interval) + STARTUP_WAIT_EXTRA).await;
                notify(&ready);
            }
        });
        loop {
            self.tick(shared).await;
            let state = shared.breaker.state();
            if state != StoreState::Reseeding {
                notify(&ready);
            }
            let interval = if state == StoreState::Available {
                PROBE_AVAILABLE
            } else {
                PROBE_OPEN
            };
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shared.breaker.wake.notified() => {}
                _ = shutdown.changed() => break,
            }
        }
        deadline.abort();
        if let Err(e) = shared.redis.deregister(&self.state.gateway_id).await {
            tracing::debug!(error = %e, "could not leave the set of live gateways");
        }
    }
}

#[async_trait]
impl BackgroundService for Guardian {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready_notifier: ServiceReadyNotifier,
    ) {
        self.run(shutdown, Some(ready_notifier)).await;
    }
}

#[cfg(test)]
mod tests;
