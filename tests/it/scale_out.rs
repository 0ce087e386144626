//! Scale-out (SPEC §2, §5): several gateways share their quota counters through one Redis, so a
//! key's limits hold across all of them, and survive a gateway restart.

use futures::future::join_all;
use serde_json::json;

use crate::harness::{metric_value, Api, ExtraGateway, Options, RedisServer, Reply, Stack};

/// A stack whose gateway uses `redis`, plus a second gateway on the same Redis and backend.
async fn two_gateways_on_redis(redis: &RedisServer) -> (Stack, ExtraGateway) {
    let options = Options::default()
        .gateway("WIZ_GATEWAY__LIMITS__STORE", "redis")
        .gateway("WIZ_GATEWAY__LIMITS__REDIS_URL", &redis.url);
    let stack = Stack::start_with(options).await;
    let second = stack.start_extra_gateway(&[]).await;
    (stack, second)
}

/// `n` concurrent `GET /v1/contacts`, alternating between the two clients.
async fn burst(a: &Api, b: &Api, n: usize) -> Vec<Reply> {
    join_all((0..n).map(|i| {
        let api = if i % 2 == 0 { a } else { b };
        async move { api.get("/v1/contacts").await }
    }))
    .await
}

fn count(replies: &[Reply], status: u16, code: &str) -> usize {
    replies
        .iter()
        .filter(|r| r.status.as_u16() == status && r.code() == code)
        .count()
}

#[tokio::test]
async fn redis_limits_daily_limit_is_exact_across_two_gateways() {
    let redis = RedisServer::start().await;
    let (stack, second) = two_gateways_on_redis(&redis).await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"rate_limit_per_minute": 1000, "daily_limit": 20}))
        .await;
    stack.wait_synced().await;
    stack.wait_synced_at(&second.metrics_url()).await;
    let (a, b) = (stack.api(&key), second.api(&stack, &key));

    let replies = burst(&a, &b, 60).await;
    let accepted = count(&replies, 200, "");
    let refused = count(&replies, 429, "daily_limit_exceeded");
    assert_eq!(
        (accepted, refused),
        (20, 40),
        "statuses: {:?}\n{}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>(),
        stack.logs()
    );
    // One shared counter: each accepted request saw a different remaining count, 19 down to 0,
    // whichever gateway served it.
    let mut remaining: Vec<u32> = replies
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.header("x-dailylimit-remaining").unwrap().parse().unwrap())
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..20).collect::<Vec<_>>());
    let last = b.get("/v1/contacts").await;
    last.expect_error(429, "daily_limit_exceeded");
    assert_eq!(last.header("x-dailylimit-remaining"), Some("0"));

    for metrics in [stack.gateway_metrics().await, metrics_of(&second).await] {
        assert_eq!(
            metric_value(&metrics, "wiz_gateway_limiter_store_errors_total"),
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn redis_limits_minute_window_is_shared_and_survives_a_restart() {
    let redis = RedisServer::start().await;
    let (mut stack, mut second) = two_gateways_on_redis(&redis).await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"rate_limit_per_minute": 10, "daily_limit": 1000}))
        .await;
    stack.wait_synced().await;
    stack.wait_synced_at(&second.metrics_url()).await;
    let (a, b) = (stack.api(&key), second.api(&stack, &key));

    let replies = burst(&a, &b, 30).await;
    assert_eq!(count(&replies, 200, ""), 10, "{}", stack.logs());
    assert_eq!(count(&replies, 429, "rate_limited"), 20);
    for r in replies.iter().filter(|r| r.status == 429) {
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }

    // Restart both gateways: the minute window is not seeded from the backend, so only the
    // shared Redis counters can keep refusing this key (the test runs well within a minute).
    second.stop().await;
    stack.restart_gateway().await;
    stack.wait_synced().await;
    let r = a.get("/v1/contacts").await;
    r.expect_error(429, "rate_limited");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-dailylimit-remaining"), Some("990"));
}

async fn metrics_of(gateway: &ExtraGateway) -> String {
    reqwest::get(format!("{}/metrics", gateway.metrics_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

#[tokio::test]
async fn redis_limits_unreachable_store_fails_closed_without_logging_the_password() {
    // Nothing listens on this port: every decision is a store error.
    let port = crate::harness::free_port();
    let url = format!("redis://:pw-never-logged@127.0.0.1:{port}/0");
    let options = Options::default()
        .gateway("WIZ_GATEWAY__LIMITS__STORE", "redis")
        .gateway("WIZ_GATEWAY__LIMITS__REDIS_URL", &url);
    let stack = Stack::start_with(options).await;
    let admin = stack.admin().await;
    let key = admin.create_key(json!({})).await;
    stack.wait_synced().await;

    let r = stack.api(&key).get("/v1/contacts").await;
    r.expect_error(503, "limiter_unavailable");
    let metrics = stack.gateway_metrics().await;
    assert!(metric_value(&metrics, "wiz_gateway_limiter_store_errors_total").unwrap() >= 1.0);
    let logs = stack.logs();
    assert!(logs.contains("limit store: redis"), "{logs}");
    assert!(!logs.contains("pw-never-logged"), "{logs}");
}
