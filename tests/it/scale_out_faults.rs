//! The scale-out topology under faults (SPEC §10), run once with several checks on it: one
//! PostgreSQL, two backends on it, three gateways on one Redis. Each check has its own API key,
//! so one fault's traces (a killed gateway's unreported usage) cannot blur another's figures.
//!
//! The figures each check measured are printed (`cargo test --test it scale_out_faults --
//! --nocapture`) for the README.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{
    eventually, free_port, metric_value, Api, ApiKey, Auth, ExtraGateway, Options, RedisServer,
    Stack,
};
use crate::postgres::{ExtraBackend, Postgres};

/// One answer as the checks count it; status 0 is a transport failure.
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    code: String,
    retry_after: Option<String>,
    latency: Duration,
}

async fn call(api: &Api) -> Outcome {
    let started = Instant::now();
    match api
        .request(Method::GET, "/v1/contacts", Auth::Bearer)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body: Value = r.json().await.unwrap_or(Value::Null);
            Outcome {
                status,
                code: body["error"]["code"].as_str().unwrap_or("").to_owned(),
                retry_after,
                latency: started.elapsed(),
            }
        }
        Err(_) => Outcome {
            status: 0,
            code: "transport".into(),
            retry_after: None,
            latency: started.elapsed(),
        },
    }
}

/// `workers` clients, each round robin over `apis` with `pause` between its requests, until
/// `stop` is set.
fn load(
    apis: Vec<Api>,
    workers: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Outcome>> {
    let apis = Arc::new(apis);
    tokio::spawn(async move {
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let apis = apis.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        out.push(call(&apis[i % apis.len()]).await);
                        i += 1;
                        tokio::time::sleep(pause).await;
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("load worker"));
        }
        all
    })
}

fn count(outcomes: &[Outcome], status: u16, code: &str) -> usize {
    outcomes
        .iter()
        .filter(|o| o.status == status && o.code == code)
        .count()
}

fn p99_ms(mut latencies: Vec<Duration>) -> f64 {
    latencies.sort_unstable();
    let i = ((latencies.len() as f64 * 0.99).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[i].as_secs_f64() * 1000.0
}

fn summary(outcomes: &[Outcome]) -> String {
    let mut by: std::collections::BTreeMap<(u16, &str), usize> = Default::default();
    for o in outcomes {
        *by.entry((o.status, o.code.as_str())).or_default() += 1;
    }
    format!("{by:?}")
}

async fn metrics_at(url: &str) -> String {
    match reqwest::get(format!("{url}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until every gateway's gauge `series` reads `value`.
async fn all_read(gateways: &[ExtraGateway], series: &str, value: f64) {
    for g in gateways {
        let url = g.metrics_url();
        eventually(
            &format!("{series} = {value} at {url}"),
            Duration::from_secs(20),
            || {
                let url = url.clone();
                async move {
                    let m = metrics_at(&url).await;
                    (metric_value(&m, series) == Some(value)).then_some(())
                }
            },
        )
        .await;
    }
}

struct Topology {
    stack: Stack,
    _backend_b: ExtraBackend,
    redis: RedisServer,
    backends: String,
    gateways: Vec<ExtraGateway>,
}

impl Topology {
    async fn start_gateway(&self, on_store_error: &str) -> ExtraGateway {
        self.stack
            .start_extra_gateway(&[
                ("WIZ_GATEWAY__BACKENDS", &self.backends),
                ("WIZ_GATEWAY__LIMITS__STORE", "redis"),
                ("WIZ_GATEWAY__LIMITS__REDIS_URL", &self.redis.url),
                ("WIZ_GATEWAY__LIMITS__ON_STORE_ERROR", on_store_error),
                ("WIZ_GATEWAY__USAGE__FLUSH_INTERVAL_MS", "200"),
            ])
            .await
    }

    fn apis(&self, key: &ApiKey) -> Vec<Api> {
        self.gateways
            .iter()
            .map(|g| g.api(&self.stack, key))
            .collect()
    }

    async fn synced(&self) {
        for g in &self.gateways {
            self.stack.wait_synced_at(&g.metrics_url()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_out_faults_two_backends_three_gateways_one_redis() {
    let pg = Postgres::start().await;
    let redis = RedisServer::start().await;
    // The stack's own gateway (in-process memory limits, first backend only) serves the console.
    let stack =
        Stack::start_with(Options::default().backend("WIZ_BACKEND__DATABASE_URL", &pg.url)).await;
    let backend_b = stack.start_extra_backend().await;
    let backends = format!("{},{}", stack.backend_url(), backend_b.url());
    let mut t = Topology {
        stack,
        _backend_b: backend_b,
        redis,
        backends,
        gateways: Vec::new(),
    };
    for _ in 0..3 {
        let g = t.start_gateway("refuse").await;
        t.gateways.push(g);
    }
    let admin = t.stack.admin().await;
    let limits = |per_day: u32| json!({"rate_limit_per_minute": 100000, "daily_limit": per_day});
    let k_backend = admin.create_key(limits(1_000_000)).await;
    let k_gateway = admin.create_key(limits(300)).await;
    let k_redis = admin.create_key(limits(100)).await;
    let k_refuse = admin.create_key(limits(1_000_000)).await;
    let k_local = admin.create_key(limits(100)).await;
    t.synced().await;

    // -- No false 401: a gateway whose every backend is down has no key table.
    let dead = format!(
        "http://127.0.0.1:{},http://127.0.0.1:{}",
        free_port(),
        free_port()
    );
    let lonely = t
        .stack
        .start_extra_gateway(&[("WIZ_GATEWAY__BACKENDS", &dead)])
        .await;
    let o = call(&lonely.api(&t.stack, &k_backend)).await;
    assert_eq!(
        (o.status, o.code.as_str()),
        (503, "key_table_unavailable"),
        "{o:?}"
    );
    assert!(o.retry_after.is_some(), "503 without Retry-After");
    drop(lonely);

    // -- A backend SIGKILLed under load: no request that had not reached it fails.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(
        t.apis(&k_backend),
        6,
        Duration::from_millis(5),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    t.stack.kill_backend();
    all_read(
        &t.gateways,
        "wiz_gateway_backend_healthy{backend=\"0\"}",
        0.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = running.await.unwrap();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 200).collect();
    eprintln!(
        "FIGURE backend SIGKILL under load: {} requests, {} failed ({})",
        outcomes.len(),
        failed.len(),
        summary(&outcomes)
    );
    assert!(
        failed.is_empty(),
        "{} of {} failed: {}\n{}",
        failed.len(),
        outcomes.len(),
        summary(&outcomes),
        t.stack.logs()
    );
    let m = metrics_at(&t.gateways[0].metrics_url()).await;
    for backend in ["0", "1"] {
        let sent = metric_value(
            &m,
            &format!("wiz_gateway_backend_requests_total{{backend=\"{backend}\"}}"),
        );
        assert!(sent.is_some_and(|n| n > 0.0), "backend {backend}: {sent:?}");
    }
    assert!(!m.contains("127.0.0.1"), "a metric label carries a URL");
    t.stack.start_backend().await;
    all_read(
        &t.gateways,
        "wiz_gateway_backend_healthy{backend=\"0\"}",
        1.0,
    )
    .await;

    // -- A gateway SIGKILLed under load: accepted requests never exceed the daily cap.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(
        t.apis(&k_gateway),
        6,
        Duration::from_millis(20),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(t.gateways.remove(1)); // SIGKILL
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = running.await.unwrap();
    let g = t.start_gateway("refuse").await;
    t.gateways.insert(1, g);
    t.synced().await;
    // Then until every gateway refuses, the restarted one included.
    let apis = t.apis(&k_gateway);
    let mut refusals_in_a_row = 0;
    for i in 0..600 {
        let o = call(&apis[i % 3]).await;
        refusals_in_a_row = if o.status == 429 && o.code == "daily_limit_exceeded" {
            refusals_in_a_row + 1
        } else {
            0
        };
        outcomes.push(o);
        if refusals_in_a_row == 6 {
            break;
        }
    }
    assert_eq!(refusals_in_a_row, 6, "{}", summary(&outcomes));
    let accepted = count(&outcomes, 200, "");
    eprintln!(
        "FIGURE gateway SIGKILL under load: daily limit 300, {} requests, {accepted} accepted ({})",
        outcomes.len(),
        summary(&outcomes)
    );
    assert!(accepted <= 300, "{accepted} accepted of a cap of 300");
    // Requests in flight at the killed gateway may have been counted without an answer.
    assert!(accepted >= 300 - 6, "only {accepted} accepted");

    // -- Redis SIGKILLed and restarted empty: the cap still holds exactly.
    let apis = t.apis(&k_redis);
    let mut before = Vec::new();
    for i in 0..60 {
        before.push(call(&apis[i % 3]).await);
    }
    assert_eq!(count(&before, 200, ""), 60, "{}", summary(&before));
    t.redis.kill();
    t.redis.restart().await;
    let mut after = Vec::new();
    for i in 0..200 {
        let o = call(&apis[i % 3]).await;
        if o.status == 503 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        after.push(o);
    }
    let accepted = count(&before, 200, "") + count(&after, 200, "");
    eprintln!(
        "FIGURE Redis SIGKILL + empty restart: daily limit 100, 260 requests, {accepted} accepted \
         (after the restart: {})",
        summary(&after)
    );
    assert_eq!(accepted, 100, "{}\n{}", summary(&after), t.stack.logs());
    assert!(count(&after, 429, "daily_limit_exceeded") > 0);

    // -- `refuse` during a 5 s Redis outage: fast 503s with Retry-After, then service again.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(
        t.apis(&k_refuse),
        3,
        Duration::from_millis(10),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.redis.kill();
    let outage = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    t.redis.restart().await;
    all_read(&t.gateways, "wiz_gateway_limiter_state", 0.0).await;
    let back_after = outage.elapsed();
    stop.store(true, Ordering::Relaxed);
    let outcomes = running.await.unwrap();
    let refused: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status == 503 && o.code == "limiter_unavailable")
        .collect();
    let p99 = p99_ms(refused.iter().map(|o| o.latency).collect());
    let p50 = {
        let mut l: Vec<Duration> = refused.iter().map(|o| o.latency).collect();
        l.sort_unstable();
        l.get(l.len() / 2)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    };
    let max = refused.iter().map(|o| o.latency).max().unwrap_or_default();
    eprintln!(
        "FIGURE refuse, Redis down 5 s (then restarted empty, re-seeded, usable again after {:.1} s): \
         {} requests ({}), 503 limiter_unavailable p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        back_after.as_secs_f64(),
        outcomes.len(),
        summary(&outcomes),
        max.as_secs_f64() * 1000.0
    );
    assert!(refused.len() > 50, "{}", summary(&outcomes));
    assert_eq!(
        refused.len() + count(&outcomes, 200, ""),
        outcomes.len(),
        "{}",
        summary(&outcomes)
    );
    assert!(refused.iter().all(|o| o.retry_after.is_some()));
    assert!(p99 < 250.0, "p99 of the 503s: {p99} ms");
    // The first request after the store is back (and re-seeded) succeeds at every gateway.
    for api in t.apis(&k_refuse) {
        let o = call(&api).await;
        assert_eq!(o.status, 200, "{o:?}");
    }

    // -- `local` during a 5 s Redis outage: each gateway serves its share; the overshoot stays
    // within the README's bound.
    for mut g in std::mem::take(&mut t.gateways) {
        g.stop().await; // SIGTERM: it leaves the set of live gateways
    }
    for _ in 0..3 {
        let g = t.start_gateway("local").await;
        t.gateways.push(g);
    }
    t.synced().await;
    // Every gateway knows N = 3 (heartbeats, once a second) before the outage.
    all_read(&t.gateways, "wiz_gateway_limiter_gateways", 3.0).await;
    let apis = t.apis(&k_local);
    let mut before = Vec::new();
    for i in 0..40 {
        before.push(call(&apis[i % 3]).await);
    }
    assert_eq!(count(&before, 200, ""), 40, "{}", summary(&before));
    // Gateway i last saw the count after request 37 + i: c = 38, 39, 40. The bound of
    // LocalShares: Σ (C − c_i) / N = (2 + 1 + 0) / 3 = 1.
    let bound = 1;
    t.redis.pause();
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(apis.clone(), 3, Duration::from_millis(10), stop.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    t.redis.resume();
    all_read(&t.gateways, "wiz_gateway_limiter_state", 0.0).await;
    stop.store(true, Ordering::Relaxed);
    let during = running.await.unwrap();
    let total = 40 + count(&during, 200, "");
    let overshoot = total.saturating_sub(100);
    let local_503 = count(&during, 503, "limiter_unavailable");
    eprintln!(
        "FIGURE local, Redis paused 5 s: daily limit 100, 40 before, {} during ({}), {total} \
         accepted in all, overshoot {overshoot} (bound {bound}), 503s {local_503}, p99 of all \
         answers {:.1} ms",
        during.len(),
        summary(&during),
        p99_ms(during.iter().map(|o| o.latency).collect())
    );
    assert!(
        overshoot <= bound,
        "overshoot {overshoot} > {bound}: {}",
        summary(&during)
    );
    assert!(total >= 100 - 3, "local served only {total}");
    // Handed over: the store knows what the gateways admitted on their own.
    for api in &apis {
        let o = call(api).await;
        assert_eq!((o.status, o.code.as_str()), (429, "daily_limit_exceeded"));
    }
}
