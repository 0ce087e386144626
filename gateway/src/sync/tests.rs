//! Sync against a fake backend on 127.0.0.1:0: full snapshot, long-poll updates, and keeping the
//! last table while the backend is down.

#[path = "../../tests/support/fake_backend.rs"]
pub(crate) mod fake_backend;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::KeySync;
use crate::auth::{self, AuthOutcome};
use crate::clock::unix_ms;
use crate::config::{GatewayConfig, Secret, SyncConfig};
use crate::credentials::Credentials;
use crate::limits::Quota;
use crate::state::GatewayState;
use fake_backend::{key_json, FakeBackend, TOKEN};

const K1: &str = "pk_live_111111111111111111111111111111aa";
const K2: &str = "pk_live_222222222222222222222222222222bb";
const K3: &str = "pk_live_333333333333333333333333333333cc";
const S: &str = "sk_live_ssssssssssssssssssssssssssssssssssssssss";

fn config(backend_url: String) -> crate::config::RuntimeConfig {
    GatewayConfig {
        backend_url,
        internal_token: Some(Secret::new(TOKEN)),
        sync: SyncConfig {
            long_poll_seconds: 25,
            retry_max_seconds: 1,
        },
        ..GatewayConfig::default()
    }
    .validate()
    .unwrap()
}

async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_long_poll_and_backend_outage() {
    let fake = FakeBackend::start();
    let mut k1 = key_json("key_1", K1, S);
    k1["usage_today"] = json!({"day": today(), "count": 7});
    fake.state.upsert_key(k1.clone());

    let state = GatewayState::new(config(fake.url()));
    let sync = Arc::new(KeySync::new(state.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let sync = sync.clone();
        async move { sync.run(stop_rx, None).await }
    });

    // Full snapshot, with today's usage seeded into the daily counter.
    wait_until(Duration::from_secs(5), "snapshot", || {
        state.keys.get_by_id("key_1").is_some()
    })
    .await;
    let quota = Quota {
        per_minute: 60,
        per_day: 1000,
    };
    let peek = state.limits.peek("key_1", quota, unix_ms()).await.unwrap();
    assert_eq!(peek.day_remaining, 993);
    assert!(state.keys.last_sync_ms().is_some());

    // A new key arrives through the pending long poll, well within a second.
    let took = {
        fake.state.upsert_key(key_json("key_2", K2, S));
        wait_until(Duration::from_secs(1), "long-poll add", || {
            state.keys.get_by_id("key_2").is_some()
        })
        .await
    };
    assert!(took < Duration::from_millis(500), "change took {took:?}");

    // A revocation lands the same way.
    k1["status"] = json!("revoked");
    fake.state.upsert_key(k1);
    wait_until(Duration::from_secs(1), "revocation", || {
        state
            .keys
            .get_by_id("key_1")
            .is_some_and(|k| k.status == crate::keys::KeyStatus::Revoked)
    })
    .await;

    // Backend down: errors are counted, the last table keeps authenticating.
    let errors_before = state.metrics.key_sync_errors.get();
    let (addr, fake_state) = fake.stop();
    wait_until(Duration::from_secs(5), "sync errors", || {
        state.metrics.key_sync_errors.get() >= errors_before + 2
    })
    .await;
    assert_eq!(state.keys.len(), 2);
    let creds = Credentials::new(K2.as_bytes(), S.as_bytes()).unwrap();
    assert!(matches!(
        auth::check(&state.keys, &creds, "127.0.0.1".parse().unwrap(), unix_ms()),
        AuthOutcome::Granted(_)
    ));

    // A change made while the gateway could not see it arrives once the backend is back.
    fake_state.upsert_key(key_json("key_3", K3, S));
    let fake = FakeBackend::start_on(addr, fake_state);
    wait_until(Duration::from_secs(5), "catch-up", || {
        state.keys.get_by_id("key_3").is_some()
    })
    .await;
    assert_eq!(state.keys.len(), 3);

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("sync stops on shutdown")
        .unwrap();
    drop(fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_internal_token_is_an_error_and_keeps_the_table() {
    let fake = FakeBackend::start();
    fake.state.upsert_key(key_json("key_1", K1, S));
    let mut cfg = config(fake.url());
    let state = GatewayState::new(cfg.clone());
    let sync = KeySync::new(state.clone());
    let full = sync.fetch(0, Duration::ZERO).await.unwrap();
    assert!(full.full);
    sync.apply(full).await;
    assert_eq!(state.keys.len(), 1);

    cfg.internal_token = Secret::new("x".repeat(40));
    state.apply_config(cfg);
    match sync.fetch(0, Duration::ZERO).await {
        Err(super::SyncError::Status { status: 401 }) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    assert_eq!(state.keys.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reports_flush_and_survive_an_outage() {
    let fake = FakeBackend::start();
    let state = GatewayState::new(config(fake.url()));
    let reporter = crate::usage::UsageReporter::new(state.clone());
    let key: Arc<str> = Arc::from("key_1");
    state.usage.record_accepted(&key, unix_ms());
    state.usage.record_accepted(&key, unix_ms());
    assert!(reporter.flush().await);
    assert_eq!(fake.state.accepted_for("key_1"), 2);

    let (addr, fake_state) = fake.stop();
    state.usage.record_accepted(&key, unix_ms());
    assert!(!reporter.flush().await);
    assert_eq!(state.metrics.usage_flush_errors.get(), 1);
    state.usage.record_accepted(&key, unix_ms());

    let _fake = FakeBackend::start_on(addr, fake_state.clone());
    assert!(reporter.flush().await);
    assert_eq!(fake_state.accepted_for("key_1"), 4);
    assert!(state.usage.is_empty());
}
