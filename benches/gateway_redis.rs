//! The `/v1` check path with the Redis limit store beside the memory store (issue 11): the same
//! `wiz_gateway::checks::check_v1` as `gateway_checks`, over 10,000 keys, against a real
//! `redis-server` started on a free loopback port (Debian package `redis-server`).
//!
//! Prints, for both stores, the median cost of one check done alone (one round trip to Redis per
//! request) and with 32 checks in flight at once (what 32 client connections do; the Redis
//! connection multiplexes them), and the ratio redis/memory of the latter's throughput. Then
//! criterion's report for the Redis path.

use std::hint::black_box;
use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/keys.rs"]
mod bench_keys;

use bench_keys::{api_key, api_secret};
use criterion::{criterion_group, criterion_main, Criterion};
use wiz_gateway::checks::check_v1;
use wiz_gateway::clock::unix_ms;
use wiz_gateway::config::{GatewayConfig, LimitsConfig, Secret, StoreKind};
use wiz_gateway::keys::Whitelist;
use wiz_gateway::{GatewayState, RuntimeConfig};

const KEYS: usize = 10_000;
const IN_FLIGHT: usize = 32;

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (Redis, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (Debian package redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Redis(child), format!("redis://127.0.0.1:{port}/0"))
}

fn state_with(limits: LimitsConfig) -> (Arc<GatewayState>, RuntimeConfig) {
    let config = GatewayConfig {
        internal_token: Some(Secret::new("b".repeat(32))),
        limits,
        ..GatewayConfig::default()
    }
    .validate()
    .expect("bench config is valid");
    let state = GatewayState::new(config.clone());
    let (whitelist, _) = Whitelist::compile(&["203.0.113.0/24"]);
    let records = (0..KEYS)
        .map(|i| bench_keys::record(i, &whitelist))
        .collect();
    state.keys.replace_all(records, 1);
    (state, config)
}

struct Bench {
    state: Arc<GatewayState>,
    config: RuntimeConfig,
    requests: Arc<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl Bench {
    async fn check(&self, n: usize) {
        let (auth, secret) = &self.requests[n % KEYS];
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let out = check_v1(
            &self.state,
            &self.config,
            Some(auth),
            Some(secret),
            ip,
            unix_ms(),
        )
        .await;
        assert!(out.refusal().is_none(), "bench request refused: {out:?}");
        black_box(out);
    }

    /// Median ns per check over 50 batches, `in_flight` checks at a time.
    async fn median_ns(&self, in_flight: usize) -> f64 {
        let batch = 2_000;
        let mut per_check: Vec<f64> = Vec::new();
        for b in 0..50 {
            let start = Instant::now();
            for chunk in 0..batch / in_flight {
                let base = b * batch + chunk * in_flight;
                futures::future::join_all((0..in_flight).map(|i| self.check(base + i))).await;
            }
            per_check.push(start.elapsed().as_nanos() as f64 / batch as f64);
        }
        per_check.sort_by(|a, b| a.total_cmp(b));
        per_check[per_check.len() / 2]
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (_redis, url) = start_redis();
    let requests: Arc<Vec<_>> = Arc::new(
        (0..KEYS)
            .map(|i| {
                (
                    format!("Bearer {}", api_key(i)).into_bytes(),
                    api_secret(i).into_bytes(),
                )
            })
            .collect(),
    );
    let bench_for = |limits: LimitsConfig| {
        let (state, config) = state_with(limits);
        Bench {
            state,
            config,
            requests: requests.clone(),
        }
    };
    let memory = bench_for(LimitsConfig::default());
    let redis = bench_for(LimitsConfig {
        store: StoreKind::Redis,
        redis_url: Some(Secret::new(url)),
        ..LimitsConfig::default()
    });
    rt.block_on(async {
        let shared = redis.state.limits.shared_store().expect("the Redis store");
        shared.redis.mark_seeded().await.expect("Redis reachable");
        for n in 0..KEYS {
            memory.check(n).await;
            redis.check(n).await;
        }
    });
    let mut per_in_flight = Vec::new();
    for in_flight in [1, IN_FLIGHT] {
        let m = rt.block_on(memory.median_ns(in_flight));
        let r = rt.block_on(redis.median_ns(in_flight));
        println!(
            "check_v1, {in_flight} in flight: memory store {m:.0} ns/check, Redis store {r:.0} \
             ns/check (median of 50 batches of 2,000)"
        );
        per_in_flight.push((m, r));
    }
    let (m, r) = per_in_flight[1];
    println!(
        "Redis store throughput at {IN_FLIGHT} in flight: {:.2}x the memory store's (check path \
         only; the proxy's own work per request dilutes the gap)",
        m / r
    );

    let mut n = 0usize;
    c.bench_function("check_v1 (Redis store, one at a time)", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(redis.check(n))
        })
    });
    c.bench_function("check_v1 (Redis store, 32 in flight, per batch)", |b| {
        b.iter(|| {
            n += IN_FLIGHT;
            rt.block_on(futures::future::join_all(
                (0..IN_FLIGHT).map(|i| redis.check(n + i)),
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
