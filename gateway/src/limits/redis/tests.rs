//! Against a real `redis-server`, started per test on a free loopback port.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::limits::{decide, MemoryStore, DAY_SECS};

/// A throwaway `redis-server` without persistence; killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) url: String,
}

impl RedisServer {
    pub(crate) async fn start() -> RedisServer {
        RedisServer::start_on(free_port()).await
    }

    async fn start_on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "these tests need `redis-server` on PATH (Debian package redis-server; \
                     scripts/test installs it): {e}"
                )
            });
        let server = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
        };
        let client = redis::Client::open(server.url.as_str()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
                {
                    // A seeded store, as the guardian leaves it; `unseeded_*` tests remove it.
                    server.store().mark_seeded().await.unwrap();
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {} within 10 s",
                server.url
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn store(&self) -> RedisStore {
        RedisStore::open(&self.url).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

// 2026-11-24T01:00:00Z, as in the memory store's tests.
const T0: i64 = 1_795_478_400_000 + 3_600_000;

async fn allowed(store: &RedisStore, quota: Quota, t_ms: i64) -> bool {
    decide(store, "key_1", quota, t_ms)
        .await
        .unwrap()
        .is_allowed()
}

#[tokio::test]
async fn rolling_window_matches_the_memory_store() {
    let redis = RedisServer::start().await;
    let s = redis.store();
    let q = Quota {
        per_minute: 5,
        per_day: 1000,
    };
    for _ in 0..3 {
        assert!(allowed(&s, q, T0 + 50_000).await);
    }
    for _ in 0..2 {
        assert!(allowed(&s, q, T0 + 59_000).await);
    }
    assert!(!allowed(&s, q, T0 + 59_500).await);
    match decide(&s, "key_1", q, T0 + 61_000).await.unwrap() {
        Decision::RateLimited {
            retry_after_secs,
            state,
        } => {
            assert_eq!(retry_after_secs, 49);
            assert_eq!(state.minute_remaining, 0);
            assert_eq!(state.day_remaining, 995);
        }
        d => panic!("expected rate limited, got {d:?}"),
    }
    assert!(!allowed(&s, q, T0 + 109_999).await);
    for _ in 0..3 {
        assert!(allowed(&s, q, T0 + 110_000).await);
    }
    assert!(!allowed(&s, q, T0 + 110_000).await);
    assert!(allowed(&s, q, T0 + 119_000).await);
    assert!(allowed(&s, q, T0 + 119_000).await);
    assert!(!allowed(&s, q, T0 + 119_000).await);
}

#[tokio::test]
async fn decisions_and_headers_equal_the_memory_store_step_by_step() {
    let redis = RedisServer::start().await;
    let r = redis.store();
    let m = MemoryStore::new();
    let q = Quota {
        per_minute: 4,
        per_day: 9,
    };
    // An irregular schedule that crosses the window edge and exhausts the day.
    let offsets = [
        0, 0, 1, 5, 5, 30, 59, 60, 61, 61, 65, 90, 121, 125, 200, 260, 261,
    ];
    for (i, s) in offsets.iter().enumerate() {
        let t = T0 + s * 1000 + 250;
        let expected = decide(&m, "key_1", q, t).await.unwrap();
        let got = decide(&r, "key_1", q, t).await.unwrap();
        assert_eq!(got, expected, "step {i} at +{s}s");
        assert_eq!(
            r.peek("key_1", q, t).await.unwrap(),
            m.peek("key_1", q, t).await.unwrap(),
            "peek after step {i}"
        );
    }
}

#[tokio::test]
async fn refused_requests_do_not_count() {
    let redis = RedisServer::start().await;
    let s = redis.store();
    let q = Quota {
        per_minute: 2,
        per_day: 3,
    };
    assert!(allowed(&s, q, T0).await);
    assert!(allowed(&s, q, T0).await);
    for _ in 0..50 {
        assert!(!allowed(&s, q, T0 + 1000).await);
    }
    assert!(allowed(&s, q, T0 + 60_000).await);
    match decide(&s, "key_1", q, T0 + 60_000).await.unwrap() {
        Decision::DailyLimitExceeded {
            state,
            retry_after_secs,
        } => {
            assert_eq!(state.day_remaining, 0);
            assert_eq!(retry_after_secs, secs_until_utc_midnight(T0 + 60_000));
        }
        d => panic!("expected daily limit, got {d:?}"),
    }
}

#[tokio::test]
async fn daily_counter_is_per_utc_day() {
    let redis = RedisServer::start().await;
    let s = redis.store();
    let q = Quota {
        per_minute: 1000,
        per_day: 2,
    };
    let midnight = T0 - 3_600_000 + DAY_SECS as i64 * 1000;
    assert!(allowed(&s, q, midnight - 5_000).await);
    assert!(allowed(&s, q, midnight - 4_000).await);
    match decide(&s, "key_1", q, midnight - 1_000).await.unwrap() {
        Decision::DailyLimitExceeded {
            retry_after_secs, ..
        } => assert_eq!(retry_after_secs, 1),
        d => panic!("expected daily limit, got {d:?}"),
    }
    assert!(allowed(&s, q, midnight).await);
    assert!(allowed(&s, q, midnight + 1).await);
    assert!(!allowed(&s, q, midnight + 2).await);
}

#[tokio::test]
async fn seeding_takes_the_max_and_ignores_other_days() {
    let redis = RedisServer::start().await;
    let s = redis.store();
    let q = Quota {
        per_minute: 1000,
        per_day: 10,
    };
    let today = utc_day(T0);
    assert!(allowed(&s, q, T0).await);
    assert!(allowed(&s, q, T0).await);
    s.seed_daily("key_1", today, 1, T0).await.unwrap();
    assert_eq!(s.peek("key_1", q, T0).await.unwrap().day_remaining, 8);
    s.seed_daily("key_1", today, 7, T0).await.unwrap();
    assert_eq!(s.peek("key_1", q, T0).await.unwrap().day_remaining, 3);
    s.seed_daily("key_1", today - 1, 10, T0).await.unwrap();
    assert_eq!(s.peek("key_1", q, T0).await.unwrap().day_remaining, 3);
    s.seed_daily("key_2", today, 10, T0).await.unwrap();
    assert!(!decide(&s, "key_2", q, T0).await.unwrap().is_allowed());
}

#[tokio::test]
async fn counters_are_shared_and_outlive_a_store() {
    let redis = RedisServer::start().await;
    let q = Quota {
        per_minute: 3,
        per_day: 1000,
    };
    let a = redis.store();
    let b = redis.store();
    assert!(allowed(&a, q, T0).await);
    assert!(allowed(&b, q, T0).await);
    drop(a);
    // A "restarted gateway": a fresh store sees the same counters.
    let c = redis.store();
    assert!(allowed(&c, q, T0 + 1000).await);
    assert!(!allowed(&b, q, T0 + 1000).await);
    assert_eq!(
        c.peek("key_1", q, T0 + 1000).await.unwrap().day_remaining,
        997
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_from_several_stores_never_over_admit() {
    let redis = RedisServer::start().await;
    let q = Quota {
        per_minute: 150,
        per_day: 200,
    };
    // Three "gateways" (separate stores, separate connections), 8 tasks each, one key: first
    // all within one second (the minute limit binds), then a minute later (the day limit binds).
    let stores: Vec<Arc<RedisStore>> = (0..3).map(|_| Arc::new(redis.store())).collect();
    let burst = |at: i64| {
        let tasks: Vec<_> = stores
            .iter()
            .flat_map(|store| (0..8).map(move |_| store.clone()))
            .map(|store| {
                tokio::spawn(async move {
                    let mut admitted = 0u32;
                    for _ in 0..25 {
                        admitted += u32::from(allowed(&store, q, at).await);
                    }
                    admitted
                })
            })
            .collect();
        async move {
            let mut sum = 0;
            for t in tasks {
                sum += t.await.unwrap();
            }
            sum
        }
    };
    assert_eq!(burst(T0).await, 150, "the minute limit is exact");
    assert_eq!(burst(T0 + 60_000).await, 50, "the day limit is exact");
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_then_recovers() {
    let port = free_port();
    let q = Quota {
        per_minute: 1,
        per_day: 1,
    };
    let with_password =
        RedisStore::open(&format!("redis://:secret-pw@127.0.0.1:{port}/0")).unwrap();
    let e = decide(&with_password, "key_1", q, T0).await.unwrap_err();
    assert!(!e.to_string().contains("secret-pw"), "{e}");

    let s = RedisStore::open(&format!("redis://127.0.0.1:{port}/0")).unwrap();
    let started = Instant::now();
    assert!(decide(&s, "key_1", q, T0).await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a dead Redis must fail fast"
    );
    // A failed first connect is not remembered: once Redis is up the same store works.
    let _redis = RedisServer::start_on(port).await;
    assert!(decide(&s, "key_1", q, T0).await.unwrap().is_allowed());
}

#[tokio::test]
async fn an_unseeded_store_admits_nothing_until_reseeded() {
    let redis = RedisServer::start().await;
    let s = redis.store();
    let q = Quota {
        per_minute: 1000,
        per_day: 10,
    };
    assert!(allowed(&s, q, T0).await);
    // What a Redis restarted without persistence looks like: no marker, no counters.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    assert_eq!(
        decide(&s, "key_1", q, T0).await.unwrap_err(),
        StoreError::Unseeded
    );
    assert_eq!(
        s.peek("key_1", q, T0).await.unwrap_err(),
        StoreError::Unseeded
    );

    // One gateway takes the lock; a second cannot.
    let probe = s.probe("gw-a", T0, 5_000).await.unwrap();
    assert_eq!((probe.gateways, probe.epoch), (1, None));
    assert!(!probe.run_id.is_empty());
    assert!(s
        .lock_reseed("gw-a", Duration::from_secs(10))
        .await
        .unwrap());
    assert!(!s
        .lock_reseed("gw-b", Duration::from_secs(10))
        .await
        .unwrap());
    s.reseed(&[("key_1".to_owned(), 7), ("key_2".to_owned(), 0)], T0)
        .await
        .unwrap();
    let probe = s.probe("gw-b", T0 + 1, 5_000).await.unwrap();
    assert_eq!(probe.gateways, 2);
    assert_eq!(probe.epoch.as_deref(), Some(probe.run_id.as_str()));
    assert_eq!(s.peek("key_1", q, T0).await.unwrap().day_remaining, 3);
    let admitted = {
        let mut n = 0;
        for _ in 0..10 {
            n += u32::from(allowed(&s, q, T0 + 2_000).await);
        }
        n
    };
    assert_eq!(admitted, 3, "exactly what the backend's usage left");
    // The lock was released with the marker: the next re-seed can take it.
    assert!(s
        .lock_reseed("gw-b", Duration::from_secs(10))
        .await
        .unwrap());
    // A marker of another server (data from a promoted replica or a snapshot) is removed only
    // if it still says what was seen.
    redis::cmd("SET")
        .arg(EPOCH_KEY)
        .arg("another-server")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    s.forget_marker("something-else").await.unwrap();
    assert!(decide(&s, "key_1", q, T0 + 3_000).await.is_ok());
    s.forget_marker("another-server").await.unwrap();
    assert_eq!(
        decide(&s, "key_1", q, T0 + 3_000).await.unwrap_err(),
        StoreError::Unseeded
    );
}

#[tokio::test]
async fn heartbeats_age_out_and_refunds_and_handovers_adjust_the_day() {
    let redis = RedisServer::start().await;
    let s = redis.store();
    assert_eq!(s.probe("gw-a", T0, 5_000).await.unwrap().gateways, 1);
    assert_eq!(
        s.probe("gw-b", T0 + 1_000, 5_000).await.unwrap().gateways,
        2
    );
    assert_eq!(
        s.probe("gw-c", T0 + 5_500, 5_000).await.unwrap().gateways,
        2,
        "gw-a is silent"
    );
    let q = Quota {
        per_minute: 2,
        per_day: 10,
    };
    assert!(allowed(&s, q, T0).await);
    assert!(allowed(&s, q, T0).await);
    assert!(!allowed(&s, q, T0).await);
    s.refund("key_1", T0).await.unwrap();
    let state = s.peek("key_1", q, T0).await.unwrap();
    assert_eq!((state.minute_remaining, state.day_remaining), (1, 9));
    s.add_daily("key_1", utc_day(T0), 5).await.unwrap();
    assert_eq!(s.peek("key_1", q, T0).await.unwrap().day_remaining, 4);
}

#[test]
fn urls_are_redacted_for_logs() {
    assert_eq!(
        redact_url("redis://user:pw@10.0.0.1:6379/0"),
        "redis://user:***@10.0.0.1:6379/0"
    );
    assert_eq!(redact_url("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
    assert!(!redact_url("not a url :pw@").contains("pw"));
}
