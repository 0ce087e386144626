//! The webhook sender end to end, on this machine: a real backend state on a temporary SQLite
//! file, real HTTP to a fast local receiver (an axum app on 127.0.0.1:0), signing included.
//!
//! - throughput: events are written and fanned out into the outbox first; then the sender starts
//!   and the clock runs until the receiver has every delivery and the outbox is empty (every
//!   attempt recorded). With 1 endpoint and with 50.
//! - latency: with the sender running, one event every 10 ms (light load); the time from just
//!   before `events::emit` to the receiver getting the POST, p50/p99/max.
//!
//! Targets: ≥ 2,000 deliveries/s; p99 under 100 ms at light load.
//! Run: `cargo bench --bench webhook_throughput` (plain `main`, `harness = false`); add
//! `-- throughput` or `-- latency` for one part, `BENCH_VERBOSE=1` to list slow deliveries.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    Router,
};
use tokio::{net::TcpListener, sync::mpsc};
use wiz_backend::{config::Config, events, state::AppState, unit_of_work::UnitOfWork, webhooks};

struct Receiver {
    url: String,
    count: Arc<AtomicUsize>,
    arrivals: mpsc::UnboundedReceiver<(String, Instant)>,
}

async fn receiver() -> Receiver {
    let count = Arc::new(AtomicUsize::new(0));
    let (tx, arrivals) = mpsc::unbounded_channel();
    let counter = count.clone();
    let app = Router::new().fallback(move |headers: HeaderMap, _body: Bytes| {
        let at = Instant::now();
        counter.fetch_add(1, Ordering::Relaxed);
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let _ = tx.send((id, at));
        async { StatusCode::NO_CONTENT }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hook"),
        count,
        arrivals,
    }
}

async fn backend(dir: &std::path::Path) -> (AppState, String) {
    let mut config = Config {
        database_url: format!("sqlite://{}", dir.join("wiz.db").display()),
        internal_token: "bench-internal-token-0123456789abcdef".into(),
        ..Config::default()
    };
    config.admin.email = "admin@bench.test".into();
    config.admin.password = "bench-password-1".into();
    config.webhooks.allow_private_targets = true;
    let state = wiz_backend::open(config).await.expect("backend state");
    let mut conn = state.db.acquire().await.unwrap();
    let account = wiz_backend::accounts::list(&mut conn).await.unwrap()[0]
        .id
        .clone();
    drop(conn);
    (state, account)
}

async fn add_endpoints(state: &AppState, account: &str, url: &str, n: usize) {
    let endpoints = webhooks::service::Endpoints {
        db: &state.db,
        secrets: &state.secrets,
        webhooks: &state.webhooks,
        config: &state.config.webhooks,
    };
    for _ in 0..n {
        endpoints
            .create(
                account,
                webhooks::service::EndpointInput {
                    url: url.to_string(),
                    events: vec!["*".into()],
                    description: "bench".into(),
                    enabled: true,
                },
                u32::MAX,
            )
            .await
            .unwrap();
    }
}

async fn outbox_depth(state: &AppState) -> i64 {
    webhooks::metrics::refresh_gauges(&state.db, &state.webhooks.metrics)
        .await
        .unwrap();
    state.webhooks.metrics.outbox_depth.get()
}

async fn throughput(endpoints: usize, events_count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (state, account) = backend(dir.path()).await;
    let rx = receiver().await;
    add_endpoints(&state, &account, &rx.url, endpoints).await;

    // Fill the outbox: events in a few transactions, then one fan-out run.
    for chunk in (0..events_count).collect::<Vec<_>>().chunks(1000) {
        let mut work = UnitOfWork::begin(&state).await.unwrap();
        for i in chunk {
            events::emit(
                &mut work,
                &account,
                "message.delivered",
                serde_json::json!({"message_id": format!("msg_{i}"), "status": "delivered"}),
            )
            .await
            .unwrap();
        }
        work.commit().await.unwrap();
    }
    let mut fan_out = webhooks::outbox::FanOut::resume(&state.db).await.unwrap();
    let fanned = Instant::now();
    let total = fan_out.pass(&state.db).await.unwrap();
    let fan_out_time = fanned.elapsed();
    assert_eq!(total, endpoints * events_count);

    let started = Instant::now();
    let sender = webhooks::start(&state);
    while rx.count.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(started.elapsed() < Duration::from_secs(300), "stalled");
    }
    let received = started.elapsed();
    while outbox_depth(&state).await > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let recorded = started.elapsed();
    sender.stop().await;
    println!(
        "throughput, {endpoints:>2} endpoint(s): {total} deliveries received in {:.2} s = {:.0}/s; \
         all recorded in {:.2} s = {:.0}/s (fan-out of the outbox beforehand: {:.0} deliveries/s)",
        received.as_secs_f64(),
        total as f64 / received.as_secs_f64(),
        recorded.as_secs_f64(),
        total as f64 / recorded.as_secs_f64(),
        total as f64 / fan_out_time.as_secs_f64(),
    );
}

async fn latency(events_count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (state, account) = backend(dir.path()).await;
    let mut rx = receiver().await;
    add_endpoints(&state, &account, &rx.url, 1).await;
    let sender = webhooks::start(&state);

    let mut emitted: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..events_count {
        tick.tick().await;
        let at = Instant::now();
        let mut work = UnitOfWork::begin(&state).await.unwrap();
        let id = events::emit(
            &mut work,
            &account,
            "message.read",
            serde_json::json!({"message_id": format!("msg_{i}")}),
        )
        .await
        .unwrap();
        work.commit().await.unwrap();
        emitted.insert(id, at);
    }
    let mut latencies = Vec::with_capacity(events_count);
    while latencies.len() < events_count {
        let (id, arrived) = tokio::time::timeout(Duration::from_secs(30), rx.arrivals.recv())
            .await
            .expect("deliveries keep coming")
            .unwrap();
        if let Some(at) = emitted.remove(&id) {
            latencies.push(arrived - at);
        }
    }
    sender.stop().await;
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        // In arrival order: a stall shows as a run of late arrivals.
        for (i, l) in latencies.iter().enumerate() {
            if *l > Duration::from_millis(50) {
                eprintln!("slow delivery, arrival #{i}: {l:?}");
            }
        }
    }
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).min(latencies.len()) - 1];
    println!(
        "latency, 1 endpoint, 100 events/s: event → delivery p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} events)",
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
        latencies.len(),
    );
}

fn main() {
    // `cargo bench --bench webhook_throughput -- latency` runs only the parts named.
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        if run("throughput") {
            throughput(1, 10_000).await;
            throughput(50, 400).await;
        }
        if run("latency") {
            latency(500).await;
        }
    });
}
