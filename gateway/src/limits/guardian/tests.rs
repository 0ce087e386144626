//! The guardian against a real `redis-server` and a fake backend: a store that lost its counters
//! is re-seeded from the backend's usage before it admits anything.

use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::config::{GatewayConfig, LimitsConfig, Secret, StoreKind, UsageConfig};
use crate::limits::limiter::StoreState;
use crate::limits::redis::tests::RedisServer;
use crate::limits::{Admission, Quota};
use crate::sync::tests::fake_backend::{key_json, FakeBackend, TOKEN};

const K1: &str = "pk_live_111111111111111111111111111111aa";
const S: &str = "sk_live_ssssssssssssssssssssssssssssssssssssssss";

fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_its_counters_is_reseeded_from_the_backend_before_admitting() {
    let redis = RedisServer::start().await;
    let fake = FakeBackend::start();
    let mut k1 = key_json("key_1", K1, S);
    k1["usage_today"] = json!({"day": today(), "count": 7});
    fake.state.upsert_key(k1);
    let config = GatewayConfig {
        backend_url: fake.url(),
        internal_token: Some(Secret::new(TOKEN)),
        limits: LimitsConfig {
            store: StoreKind::Redis,
            redis_url: Some(Secret::new(redis.url.clone())),
            ..LimitsConfig::default()
        },
        usage: UsageConfig {
            flush_interval_ms: 50,
            ..UsageConfig::default()
        },
        ..GatewayConfig::default()
    }
    .validate()
    .unwrap();
    let state = GatewayState::new(config);
    let guardian = Guardian::new(state.clone());
    let shared = state.limits.shared_store().unwrap();
    let q = Quota {
        per_minute: 1000,
        per_day: 10,
    };

    // A seeded store: the probe registers the heartbeat and learns the marker.
    guardian.tick(shared).await;
    assert_eq!(shared.breaker.state(), StoreState::Available);
    assert_eq!(shared.gateways.load(Ordering::Acquire), 1);

    // Redis restarted without persistence.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    assert_eq!(
        state.limits.decide("key_1", q, unix_ms()).await,
        Admission::Unavailable,
        "an empty store never counts from zero"
    );
    assert_eq!(shared.breaker.state(), StoreState::Reseeding);

    // This gateway takes the lock, waits the grace, seeds from the backend's usage.
    let started = Instant::now();
    guardian.tick(shared).await;
    assert!(started.elapsed() >= reseed_grace(Duration::from_millis(50)));
    assert_eq!(state.metrics.limiter_reseeds.get(), 1);
    // The next probe finds the marker and closes the breaker.
    guardian.tick(shared).await;
    assert_eq!(shared.breaker.state(), StoreState::Available);
    let mut admitted = 0;
    for _ in 0..10 {
        if let Admission::Decided { decision, local } =
            state.limits.decide("key_1", q, unix_ms()).await
        {
            assert!(!local);
            admitted += usize::from(decision.is_allowed());
        }
    }
    assert_eq!(admitted, 3, "10 a day, 7 used according to the backend");

    // A failover: the data is now a replica's, whose marker names the server it came from.
    redis::cmd("SET")
        .arg(crate::limits::redis::EPOCH_KEY)
        .arg("run-id-of-the-lost-primary")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    guardian.tick(shared).await;
    assert_eq!(state.metrics.limiter_reseeds.get(), 2, "re-seeded again");
    guardian.tick(shared).await;
    assert_eq!(shared.breaker.state(), StoreState::Available);
    // Re-seeding only raises counters: the 10 counted here stay.
    match state.limits.decide("key_1", q, unix_ms()).await {
        Admission::Decided { decision, .. } => assert!(!decision.is_allowed()),
        Admission::Unavailable => panic!("the store is usable again"),
    }
}
