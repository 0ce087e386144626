//! Usage reporting: counts per key and UTC minute, flushed to `POST /internal/usage` every
//! `usage.flush_interval_ms` and on shutdown. A failed flush puts its counts back (merged with
//! whatever arrived meanwhile) for the next attempt, so nothing is lost while the backend is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::errors::Refusal;
use crate::keys::{IdHashBuilder, InlineStr};
use crate::state::GatewayState;
use crate::sync::wire::{
    RefusedCounts, UsageEntry, UsageReport, INTERNAL_TOKEN_HEADER, USAGE_PATH,
};
use crate::usage_journal::UsageJournal;

#[derive(Debug, Default, Clone, Copy)]
struct Pending {
    accepted: u64,
    refused: RefusedCounts,
    last_used_at_ms: i64,
}

impl Pending {
    fn merge(&mut self, other: &Pending) {
        self.accepted += other.accepted;
        self.refused.add(&other.refused);
        self.last_used_at_ms = self.last_used_at_ms.max(other.last_used_at_ms);
    }
}

type PerKey = HashMap<InlineStr, Pending, IdHashBuilder>;

/// Accumulates per-key counts between flushes, by UTC minute then key id (so the hot path finds
/// an existing entry by `&str` without cloning the id). The lock is held only for a map update.
#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<i64, PerKey, IdHashBuilder>>,
    /// With the memory store: the unreported accepted counts, kept where a SIGKILL leaves them.
    journal: OnceLock<UsageJournal>,
    /// Counts a previous process left in the journal are pending and not yet reported.
    replay_pending: AtomicBool,
}

impl std::fmt::Debug for UsageRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageRecorder")
            .field("journal", &self.journal.get().is_some())
            .finish_non_exhaustive()
    }
}

fn minute_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(60_000) * 60
}

impl UsageRecorder {
    pub fn new() -> UsageRecorder {
        UsageRecorder::default()
    }

    fn update(&self, key_id: &str, now_ms: i64, f: impl FnOnce(&mut Pending)) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let per_key = map.entry(minute_of(now_ms)).or_default();
        let entry = match per_key.get_mut(key_id) {
            Some(e) => e,
            None => per_key.entry(InlineStr::from(key_id)).or_default(),
        };
        entry.last_used_at_ms = entry.last_used_at_ms.max(now_ms);
        f(entry);
    }

    /// Journals from now on (memory store): takes over what a previous process left
    /// unreported, as pending counts that the next flush reports.
    pub fn attach_journal(&self, mut journal: UsageJournal) {
        let left = journal.unreported();
        if left.is_empty() {
            if let Err(e) = journal.reset() {
                tracing::warn!(error = %e, "could not reset the usage journal; not using it");
                return;
            }
        } else {
            let requests: u64 = left.iter().map(|e| e.accepted).sum();
            tracing::warn!(
                keys = left.len(),
                requests,
                "the previous gateway left accepted requests unreported; reporting them"
            );
            self.restore(left);
            self.replay_pending.store(true, Ordering::Release);
        }
        let _ = self.journal.set(journal);
    }

    pub fn replay_pending(&self) -> bool {
        self.replay_pending.load(Ordering::Acquire)
    }

    pub fn record_accepted(&self, key_id: &str, now_ms: i64) {
        self.update(key_id, now_ms, |p| p.accepted += 1);
        if let Some(journal) = self.journal.get() {
            journal.add(key_id, minute_of(now_ms), 1);
        }
    }

    /// The backend has these counts: they are no longer only in this process.
    pub fn acknowledge(&self, entries: &[UsageEntry]) {
        if let Some(journal) = self.journal.get() {
            journal.acknowledge(entries);
        }
        self.replay_pending.store(false, Ordering::Release);
    }

    /// Takes back an accepted request that the gateway then answered itself with 502/503/504,
    /// if it has not been reported yet (a report already sent stays: the backend then counts one
    /// request too many, which errs on the side of the cap).
    pub fn unrecord_accepted(&self, key_id: &str, counted_at_ms: i64) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map
            .get_mut(&minute_of(counted_at_ms))
            .and_then(|per_key| per_key.get_mut(key_id))
        {
            if entry.accepted > 0 {
                entry.accepted -= 1;
                if let Some(journal) = self.journal.get() {
                    journal.add(key_id, minute_of(counted_at_ms), -1);
                }
            }
        }
    }

    /// Only refusals attributable to a known key are reported; others are ignored.
    pub fn record_refused(&self, key_id: &str, refusal: Refusal, now_ms: i64) {
        self.update(key_id, now_ms, |p| {
            let r = &mut p.refused;
            match refusal {
                Refusal::KeyRevoked => r.key_revoked += 1,
                Refusal::KeyExpired => r.key_expired += 1,
                Refusal::PlanRequired => r.plan_required += 1,
                Refusal::IpNotAllowed => r.ip_not_allowed += 1,
                Refusal::RateLimited => r.rate_limited += 1,
                Refusal::DailyLimitExceeded => r.daily_limit_exceeded += 1,
                _ => {}
            }
        });
    }

    /// Takes everything accumulated so far.
    pub fn take(&self) -> Vec<UsageEntry> {
        let map = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        map.into_iter()
            .flat_map(|(minute, per_key)| {
                per_key.into_iter().map(move |(key_id, p)| UsageEntry {
                    key_id: key_id.to_string(),
                    minute,
                    accepted: p.accepted,
                    refused: p.refused,
                    last_used_at_ms: p.last_used_at_ms,
                })
            })
            .collect()
    }

    /// Puts back entries whose report failed, merging with newer counts.
    pub fn restore(&self, entries: Vec<UsageEntry>) {
        let mut map = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            let p = Pending {
                accepted: e.accepted,
                refused: e.refused,
                last_used_at_ms: e.last_used_at_ms,
            };
            map.entry(e.minute)
                .or_default()
                .entry(InlineStr::from(e.key_id))
                .or_default()
                .merge(&p);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }
}

/// The background service that flushes the recorder.
pub struct UsageReporter {
    state: Arc<GatewayState>,
    client: reqwest::Client,
}

impl UsageReporter {
    pub fn new(state: Arc<GatewayState>) -> UsageReporter {
        let client = crate::tls::backend_client(&state.config.load())
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client with timeouts builds");
        UsageReporter { state, client }
    }

    /// Sends what has accumulated; on failure keeps it for the next flush.
    pub async fn flush(&self) -> bool {
        let entries = self.state.usage.take();
        if entries.is_empty() {
            return true;
        }
        let config = self.state.config.load_full();
        let report = UsageReport {
            gateway_id: self.state.gateway_id.clone(),
            entries,
        };
        // Each report goes to one backend; the next one is tried only when nothing reached the
        // first (a report that may have arrived is never sent twice: it would count twice).
        let mut result = None;
        for backend in self.state.upstreams.control_order() {
            let sent = self
                .client
                .post(format!("{}{}", backend.base_url, USAGE_PATH))
                .header(
                    INTERNAL_TOKEN_HEADER,
                    crate::backend_auth::internal_bearer(config.internal_token.expose()),
                )
                .json(&report)
                .send()
                .await;
            let unreached = matches!(&sent, Err(e) if e.is_connect());
            result = Some(sent);
            if !unreached {
                break;
            }
        }
        let failure = match result {
            Some(Ok(r)) if r.status().is_success() => None,
            Some(Ok(r)) => Some(format!("backend answered {}", r.status().as_u16())),
            Some(Err(e)) => Some(e.to_string()),
            None => Some("no backend configured".to_owned()),
        };
        match failure {
            None => {
                self.state.usage.acknowledge(&report.entries);
                true
            }
            Some(reason) => {
                self.state.metrics.usage_flush_errors.inc();
                tracing::warn!(
                    error = %reason,
                    entries = report.entries.len(),
                    "usage report failed; keeping the counts for the next flush"
                );
                self.state.usage.restore(report.entries);
                false
            }
        }
    }

    pub async fn run(&self, mut shutdown: ShutdownWatch) {
        loop {
            let interval = self.state.config.load().usage.flush_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => { self.flush().await; }
                changed = shutdown.changed() => {
                    // Flush now, then keep flushing what in-flight requests add until the
                    // server's grace period ends and the runtime stops this task.
                    self.flush().await;
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for UsageReporter {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.run(shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_minute_and_restores_on_failure() {
        let r = UsageRecorder::new();
        let k: Arc<str> = Arc::from("key_1");
        let t = 1_764_028_800_000;
        r.record_accepted(&k, t + 1_000);
        r.record_accepted(&k, t + 2_000);
        r.record_refused(&k, Refusal::RateLimited, t + 3_000);
        r.record_refused(&k, Refusal::InvalidCredentials, t + 3_500);
        r.record_accepted(&k, t + 61_000);
        let mut entries = r.take();
        entries.sort_by_key(|e| e.minute);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].minute, 1_764_028_800);
        assert_eq!(entries[0].accepted, 2);
        assert_eq!(entries[0].refused.rate_limited, 1);
        assert_eq!(entries[0].last_used_at_ms, t + 3_500);
        assert_eq!(entries[1].minute, 1_764_028_860);
        assert!(r.is_empty());

        // Failed flush: new counts arrive, then the old ones are merged back.
        r.record_accepted(&k, t + 4_000);
        r.restore(entries);
        let mut merged = r.take();
        merged.sort_by_key(|e| e.minute);
        assert_eq!(merged[0].accepted, 3);
        assert_eq!(merged[0].last_used_at_ms, t + 4_000);
        assert_eq!(merged[1].accepted, 1);
    }

    #[test]
    fn an_unreported_acceptance_can_be_taken_back() {
        let r = UsageRecorder::new();
        let k: Arc<str> = Arc::from("key_1");
        let t = 1_764_028_800_000;
        r.record_accepted(&k, t + 1_000);
        r.record_accepted(&k, t + 2_000);
        r.unrecord_accepted("key_1", t + 2_000);
        r.unrecord_accepted("key_2", t + 2_000);
        assert_eq!(r.take()[0].accepted, 1);
        r.unrecord_accepted("key_1", t + 2_000);
        assert!(r.take().is_empty(), "nothing pending, nothing to take back");
    }
}
