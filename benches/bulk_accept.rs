//! Accepting a 10,000-recipient bulk request: JSON parsing, validation and rendering of every
//! recipient, the opted-out lookup, and storing the batch with its 10,000 messages in one
//! transaction (multi-row INSERTs) on a real SQLite file. This is `POST /v1/messages/bulk`
//! minus the HTTP framing. Target: under 1 s on this machine.
//! Run: `cargo bench --bench bulk_accept`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use wiz_backend::{
    batches::{self, BulkAccepted, BulkRequest},
    config::{AdminConfig, Config},
    state::AppState,
    unit_of_work::UnitOfWork,
};

/// What the handler does with a bulk request, without an idempotency key.
async fn accept(state: &AppState, account_id: &str, request: BulkRequest) -> BulkAccepted {
    let prepared = batches::service::prepare(&state.db, account_id, request)
        .await
        .unwrap();
    let mut work = UnitOfWork::begin(state).await.unwrap();
    let answer = batches::service::accept(&mut work, &state.messaging, account_id, prepared)
        .await
        .unwrap();
    if answer.dry_run {
        work.rollback().await.unwrap();
    } else {
        work.commit().await.unwrap();
    }
    answer
}

fn body() -> Vec<u8> {
    let recipients: Vec<_> = (0..10_000)
        .map(|i| {
            json!({"to": format!("+1415{i:07}"),
                   "variables": {"name": format!("Customer {i}"), "order": format!("A-{i}")},
                   "reference": format!("crm-{i}")})
        })
        .collect();
    serde_json::to_vec(&json!({"type": "template",
        "template": {"name": "order_update", "language": "en"},
        "recipients": recipients}))
    .unwrap()
}

fn bulk_accept(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        database_url: format!("sqlite://{}", dir.path().join("bench.db").display()),
        internal_token: "bench-internal-token-0123456789abcdef".into(),
        admin: AdminConfig {
            password: "bench-password".into(),
            ..AdminConfig::default()
        },
        ..Config::default()
    };
    let (state, account_id) = runtime.block_on(async {
        let state = wiz_backend::open(config).await.unwrap();
        let mut conn = state.db.acquire().await.unwrap();
        let account = wiz_backend::accounts::list(&mut conn)
            .await
            .unwrap()
            .remove(0);
        (state, account.id)
    });
    let bytes = body();

    let mut group = c.benchmark_group("bulk");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("accept_10000_recipients", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request: batches::BulkRequest = serde_json::from_slice(&bytes).unwrap();
                let answer = accept(&state, &account_id, request).await;
                assert_eq!(answer.accepted, 10_000);
            })
        })
    });
    // The same request with `dry_run`: parsing, validation, rendering and the opted-out lookup
    // without the INSERTs, to show where the time goes.
    let mut dry: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    dry["dry_run"] = json!(true);
    let dry = serde_json::to_vec(&dry).unwrap();
    group.bench_function("validate_only_10000_recipients", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request: batches::BulkRequest = serde_json::from_slice(&dry).unwrap();
                let answer = accept(&state, &account_id, request).await;
                assert_eq!(answer.accepted, 10_000);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bulk_accept);
criterion_main!(benches);
