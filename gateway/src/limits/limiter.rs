//! The limiter as the proxy sees it: the configured store, and for the shared (Redis) store a
//! circuit breaker in front of it (SPEC §10 "Limits under faults").
//!
//! While the breaker is closed every decision goes to the store. The first error opens it; from
//! then on no request waits for the store: `refuse` answers `503 limiter_unavailable` at once,
//! `local` decides on this gateway's share (`shares`). Only the guardian's background probe
//! (`guardian`) closes it again, once the store answers and holds its counters, so the first
//! request after a recovery already finds a working connection. A store that answers but lost its
//! counters ("unseeded") opens the breaker as `Reseeding`: every gateway refuses until one of
//! them has re-seeded it from the backend.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;

use super::shares::LocalShares;
use super::{Decision, LimitState, LimitStore, Quota, RedisStore, StoreError};
use crate::config::OnStoreError;

/// The breaker's states; the numbers are the `wiz_gateway_limiter_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StoreState {
    Available = 0,
    /// Unreachable, `on_store_error: refuse`.
    Refusing = 1,
    /// Unreachable, `on_store_error: local`.
    Local = 2,
    /// Reachable but without counters, until re-seeded.
    Reseeding = 3,
}

impl StoreState {
    fn from_u8(v: u8) -> StoreState {
        match v {
            0 => StoreState::Available,
            1 => StoreState::Refusing,
            2 => StoreState::Local,
            _ => StoreState::Reseeding,
        }
    }
}

/// The breaker itself: a state anyone can read without a lock, and a bell for the guardian.
#[derive(Debug)]
pub struct Breaker {
    state: AtomicU8,
    mode: OnStoreError,
    /// Rung when a request opens the breaker, so the guardian probes at once.
    pub wake: Notify,
}

impl Breaker {
    pub fn new(mode: OnStoreError) -> Breaker {
        Breaker {
            state: AtomicU8::new(StoreState::Available as u8),
            mode,
            wake: Notify::new(),
        }
    }

    pub fn state(&self) -> StoreState {
        StoreState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The store did not answer. Returns whether this opened a closed breaker. An unseeded store
    /// that stops answering stays `Reseeding`: it must still be re-seeded once back.
    pub fn unreachable(&self) -> bool {
        let open = match self.mode {
            OnStoreError::Refuse => StoreState::Refusing,
            OnStoreError::Local => StoreState::Local,
        } as u8;
        self.state
            .compare_exchange(
                StoreState::Available as u8,
                open,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The store answered without its counters. Returns whether the state changed.
    pub fn unseeded(&self) -> bool {
        self.state
            .swap(StoreState::Reseeding as u8, Ordering::AcqRel)
            != StoreState::Reseeding as u8
    }

    /// The store answers and holds its counters. Returns whether the state changed.
    pub fn close(&self) -> bool {
        self.state
            .swap(StoreState::Available as u8, Ordering::AcqRel)
            != StoreState::Available as u8
    }
}

/// The outcome of asking the limiter about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// `local`: decided on this gateway's share while the store is unreachable.
    Decided { decision: Decision, local: bool },
    /// No decision can be made now: `503 limiter_unavailable`.
    Unavailable,
}

/// The shared store's extras: breaker, local shares, what the gateways heartbeat says.
pub struct Shared {
    pub redis: Arc<RedisStore>,
    pub breaker: Breaker,
    pub shares: LocalShares,
    /// Live gateways as of the last heartbeat; 0 until this gateway's first one went through,
    /// and without knowing N no share can be computed, so `local` refuses until then.
    pub gateways: AtomicU32,
    state_gauge: IntGauge,
}

impl Shared {
    pub fn set_state_gauge(&self) {
        self.state_gauge.set(self.breaker.state() as i64);
    }
}

pub struct Limiter {
    store: Arc<dyn LimitStore>,
    shared: Option<Shared>,
    errors: IntCounter,
    local_admits: IntCounter,
}

pub struct LimiterMetrics {
    pub errors: IntCounter,
    pub local_admits: IntCounter,
    pub state: IntGauge,
}

impl Limiter {
    /// A limiter on the in-process store: no breaker, it cannot fail.
    pub fn local_only(store: Arc<dyn LimitStore>, metrics: LimiterMetrics) -> Limiter {
        Limiter {
            store,
            shared: None,
            errors: metrics.errors,
            local_admits: metrics.local_admits,
        }
    }

    /// A limiter on the shared store, behind the breaker.
    pub fn shared(redis: Arc<RedisStore>, mode: OnStoreError, metrics: LimiterMetrics) -> Limiter {
        metrics.state.set(StoreState::Available as i64);
        Limiter {
            store: redis.clone(),
            shared: Some(Shared {
                redis,
                breaker: Breaker::new(mode),
                shares: LocalShares::new(),
                gateways: AtomicU32::new(0),
                state_gauge: metrics.state,
            }),
            errors: metrics.errors,
            local_admits: metrics.local_admits,
        }
    }

    pub fn shared_store(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    pub fn store(&self) -> &Arc<dyn LimitStore> {
        &self.store
    }

    fn store_failed(&self, shared: &Shared, e: &StoreError) {
        self.errors.inc();
        let changed = match e {
            StoreError::Unseeded => shared.breaker.unseeded(),
            StoreError::Unreachable(_) => shared.breaker.unreachable(),
        };
        if changed {
            shared.set_state_gauge();
            tracing::warn!(error = %e, state = ?shared.breaker.state(), "limit store failed; breaker open");
            shared.breaker.wake.notify_one();
        }
    }

    /// Decides one request (SPEC §4 steps 6–7) and counts it if admitted.
    pub async fn decide(&self, key_id: &str, quota: Quota, now_ms: i64) -> Admission {
        let Some(shared) = &self.shared else {
            return match super::decide(self.store.as_ref(), key_id, quota, now_ms).await {
                Ok(decision) => Admission::Decided {
                    decision,
                    local: false,
                },
                Err(e) => {
                    self.errors.inc();
                    tracing::error!(error = %e, "limit store failed; refusing the request");
                    Admission::Unavailable
                }
            };
        };
        match shared.breaker.state() {
            StoreState::Available => {}
            StoreState::Local => return self.decide_locally(shared, key_id, quota, now_ms),
            StoreState::Refusing | StoreState::Reseeding => return Admission::Unavailable,
        }
        match self.store.check_and_count(key_id, quota, now_ms).await {
            Ok(decision) => {
                shared.shares.observe(key_id, decision.state(), now_ms);
                Admission::Decided {
                    decision,
                    local: false,
                }
            }
            Err(e) => {
                self.store_failed(shared, &e);
                match shared.breaker.state() {
                    StoreState::Local => self.decide_locally(shared, key_id, quota, now_ms),
                    _ => Admission::Unavailable,
                }
            }
        }
    }

    fn decide_locally(
        &self,
        shared: &Shared,
        key_id: &str,
        quota: Quota,
        now_ms: i64,
    ) -> Admission {
        let gateways = shared.gateways.load(Ordering::Acquire);
        if gateways == 0 {
            return Admission::Unavailable;
        }
        let decision = shared.shares.decide(key_id, quota, gateways, now_ms);
        if decision.is_allowed() {
            self.local_admits.inc();
        }
        Admission::Decided {
            decision,
            local: true,
        }
    }

    /// The state without counting (headers of refused requests); `None` when unknown.
    pub async fn peek(&self, key_id: &str, quota: Quota, now_ms: i64) -> Option<LimitState> {
        if let Some(shared) = &self.shared {
            if shared.breaker.state() != StoreState::Available {
                return None;
            }
        }
        match self.store.peek(key_id, quota, now_ms).await {
            Ok(s) => Some(s),
            Err(e) => {
                match &self.shared {
                    Some(shared) => self.store_failed(shared, &e),
                    None => self.errors.inc(),
                }
                None
            }
        }
    }

    /// Raises a key's count for `day` to at least `count` (the backend's recorded usage).
    pub async fn seed_daily(
        &self,
        key_id: &str,
        day: u32,
        count: u32,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if let Some(shared) = &self.shared {
            shared.shares.observe_count(key_id, day, count);
        }
        self.store.seed_daily(key_id, day, count, now_ms).await
    }

    /// Takes back a request counted at `counted_at_ms` that the gateway then answered itself
    /// with 502/503/504. A refund that cannot reach the store is dropped: the key is charged one
    /// request too many, which errs on the side of the cap.
    pub async fn refund(&self, key_id: &str, counted_at_ms: i64, local: bool) {
        if let (Some(shared), true) = (&self.shared, local) {
            shared.shares.refund(key_id, counted_at_ms);
            return;
        }
        if let Err(e) = self.store.refund(key_id, counted_at_ms).await {
            self.errors.inc();
            tracing::warn!(error = %e, "could not refund a request the gateway answered itself");
        }
    }

    pub fn sweep(&self, now_ms: i64) {
        self.store.sweep(now_ms);
        if let Some(shared) = &self.shared {
            shared.shares.sweep(now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn metrics() -> LimiterMetrics {
        LimiterMetrics {
            errors: IntCounter::new("e", "e").unwrap(),
            local_admits: IntCounter::new("l", "l").unwrap(),
            state: IntGauge::new("s", "s").unwrap(),
        }
    }

    #[test]
    fn breaker_opens_once_and_only_the_probe_closes_it() {
        let b = Breaker::new(OnStoreError::Refuse);
        assert_eq!(b.state(), StoreState::Available);
        assert!(b.unreachable());
        assert!(!b.unreachable(), "already open");
        assert_eq!(b.state(), StoreState::Refusing);
        assert!(b.close());
        assert!(!b.close());
        let b = Breaker::new(OnStoreError::Local);
        assert!(b.unreachable());
        assert_eq!(b.state(), StoreState::Local);
        // A store that lost its counters must be re-seeded even if it also stops answering.
        assert!(b.unseeded());
        assert!(!b.unreachable());
        assert_eq!(b.state(), StoreState::Reseeding);
    }

    const Q: Quota = Quota {
        per_minute: 100,
        per_day: 100,
    };
    const T0: i64 = 1_795_478_400_000 + 3_600_000;

    fn dead_redis() -> Arc<RedisStore> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Arc::new(RedisStore::open(&format!("redis://127.0.0.1:{port}/0")).unwrap())
    }

    #[tokio::test]
    async fn refuse_answers_without_waiting_once_the_breaker_is_open() {
        let limiter = Limiter::shared(dead_redis(), OnStoreError::Refuse, metrics());
        assert_eq!(limiter.decide("key_1", Q, T0).await, Admission::Unavailable);
        let shared = limiter.shared_store().unwrap();
        assert_eq!(shared.breaker.state(), StoreState::Refusing);
        let started = Instant::now();
        for _ in 0..1000 {
            assert_eq!(limiter.decide("key_1", Q, T0).await, Admission::Unavailable);
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "1000 refusals took {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn local_serves_the_share_once_n_is_known() {
        let limiter = Limiter::shared(dead_redis(), OnStoreError::Local, metrics());
        let shared = limiter.shared_store().unwrap();
        // N unknown (no heartbeat ever went through): no share can be computed.
        assert_eq!(limiter.decide("key_1", Q, T0).await, Admission::Unavailable);
        assert_eq!(shared.breaker.state(), StoreState::Local);
        shared.gateways.store(4, Ordering::Release);
        limiter
            .seed_daily("key_1", super::super::utc_day(T0), 20, T0)
            .await
            .ok();
        let admitted = {
            let mut n = 0;
            for i in 0..50 {
                if let Admission::Decided { decision, local } =
                    limiter.decide("key_1", Q, T0 + i).await
                {
                    assert!(local);
                    n += usize::from(decision.is_allowed());
                }
            }
            n
        };
        assert_eq!(admitted, 20, "(100 - 20) / 4");
    }
}
