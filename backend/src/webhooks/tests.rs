//! The sender end to end: events written with `events::emit`, real HTTP receivers on loopback
//! (small axum apps on `127.0.0.1:0` that hand every request to the test over a channel), a
//! temporary SQLite file, and the retry schedule scaled down to milliseconds.

use std::{
    collections::HashSet,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Value};
use tokio::{io::AsyncWriteExt, net::TcpListener, sync::mpsc};

use super::{
    outbox::FanOut,
    sign::{self, Secret},
};
use crate::{
    accounts::Plan,
    config::WebhooksConfig,
    events::{self, EVENT_TYPES},
    testing::{Console, TestApp},
    unit_of_work::UnitOfWork,
};

const WAIT: Duration = Duration::from_secs(15);

fn ms(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|m| Duration::from_millis(*m)).collect()
}

/// A backend whose webhooks may reach loopback, with a millisecond retry schedule.
async fn app_with(adjust: impl FnOnce(&mut WebhooksConfig)) -> TestApp {
    TestApp::with_config(|c| {
        c.webhooks.allow_private_targets = true;
        c.webhooks.retry_schedule = ms(&[10, 20, 30, 40, 50]);
        c.webhooks.timeout = Duration::from_secs(3);
        c.webhooks.connect_timeout = Duration::from_secs(1);
        c.webhooks.lease = Duration::from_secs(5);
        adjust(&mut c.webhooks);
    })
    .await
}

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn event_id(&self) -> String {
        self.header(sign::HEADER_ID).unwrap_or_default().to_string()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    fn verify(&self, secret: &str) -> Result<(), sign::SignError> {
        sign::verify(
            &Secret::parse(secret).unwrap(),
            self.header(sign::HEADER_ID),
            self.header(sign::HEADER_TIMESTAMP),
            self.header(sign::HEADER_SIGNATURE),
            &self.body,
            crate::clock::now_secs(),
        )
    }
}

/// A webhook receiver: answers each request with `handler(call number, 1-based)` and reports
/// what it got on `rx` before answering (so hanging answers are reported too).
struct Receiver {
    url: String,
    rx: mpsc::UnboundedReceiver<Received>,
    calls: Arc<AtomicUsize>,
}

async fn receiver<F, Fut>(handler: F) -> Receiver
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = Arc::new(handler);
    let counter = calls.clone();
    let app = Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let tx = tx.clone();
        let handler = handler.clone();
        let counter = counter.clone();
        async move {
            let call = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = tx.send(Received {
                headers,
                body,
                at: Instant::now(),
            });
            handler(call).await
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{addr}/hook"),
        rx,
        calls,
    }
}

async fn ok_receiver() -> Receiver {
    receiver(|_| async { StatusCode::OK.into_response() }).await
}

impl Receiver {
    async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a delivery within the deadline")
            .expect("receiver running")
    }

    /// Nothing more arrives within `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("unexpected delivery {}", String::from_utf8_lossy(&r.body));
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn create_endpoint(
    app: &TestApp,
    console: &Console,
    url: &str,
    events: &[&str],
) -> (String, String) {
    let answer = app
        .admin(
            console,
            "POST",
            "/admin/webhooks",
            Some(json!({"url": url, "events": events, "description": "test"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    (
        answer.body["id"].as_str().unwrap().to_string(),
        answer.body["secret"].as_str().unwrap().to_string(),
    )
}

async fn emit(app: &TestApp, account_id: &str, event_type: &str, data: Value) -> String {
    let mut work = UnitOfWork::begin(&app.state).await.unwrap();
    let id = events::emit(&mut work, account_id, event_type, data)
        .await
        .unwrap();
    work.commit().await.unwrap();
    id
}

/// `(status, attempt_count)` of the delivery of `event_id` to `endpoint_id`.
async fn delivery_state(app: &TestApp, endpoint_id: &str, event_id: &str) -> Option<(String, i64)> {
    sqlx::query_as(
        "SELECT status, attempt_count FROM webhook_deliveries WHERE endpoint_id = $1 AND event_id = $2",
    )
    .bind(endpoint_id)
    .bind(event_id)
    .fetch_optional(&app.state.db)
    .await
    .unwrap()
}

/// Waits for the delivery to reach `status`; returns its attempt count.
async fn wait_status(app: &TestApp, endpoint_id: &str, event_id: &str, status: &str) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = delivery_state(app, endpoint_id, event_id).await;
        if let Some((s, n)) = &state {
            if s == status {
                return *n;
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {event_id} to be {status}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn deliveries(app: &TestApp, console: &Console, endpoint_id: &str, query: &str) -> Value {
    let answer = app
        .admin(
            console,
            "GET",
            &format!("/admin/webhooks/{endpoint_id}/deliveries{query}"),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body
}

/// Verifies a captured delivery with the official Python `standardwebhooks` package.
async fn python_verify(secret: &str, received: &Received) -> Result<(), String> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/webhook_verify.py");
    let input = json!({
        "secret": secret,
        "headers": {
            "webhook-id": received.header("webhook-id"),
            "webhook-timestamp": received.header("webhook-timestamp"),
            "webhook-signature": received.header("webhook-signature"),
        },
        "body": String::from_utf8(received.body.to_vec()).unwrap(),
    });
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("python3 is required to verify deliveries with standardwebhooks: {e}")
        });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match output.status.code() {
        Some(0) => Ok(()),
        Some(2) => panic!(
            "the Python package standardwebhooks is required (pip install standardwebhooks): {said}"
        ),
        _ => Err(said),
    }
}

#[tokio::test]
async fn every_event_type_reaches_subscribers_only_with_valid_signatures() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let mut all = ok_receiver().await;
    let mut reads = ok_receiver().await;
    let mut other = ok_receiver().await;
    let (_, all_secret) = create_endpoint(&app, &console, &all.url, &["*"]).await;
    let (_, reads_secret) = create_endpoint(&app, &console, &reads.url, &["message.read"]).await;
    // Another account's endpoint subscribed to everything gets none of this account's events.
    app.create_account(
        "Other",
        Plan::WizPro,
        "other@example.test",
        "other-password-1",
    )
    .await;
    let other_console = app.login("other@example.test", "other-password-1").await;
    create_endpoint(&app, &other_console, &other.url, &["*"]).await;
    let sender = super::start(&app.state);

    let mut emitted = Vec::new();
    for (i, event_type) in EVENT_TYPES.iter().enumerate() {
        let id = emit(&app, &console.account_id, event_type, json!({"n": i})).await;
        emitted.push((id, *event_type));
    }

    let mut seen = HashSet::new();
    for _ in EVENT_TYPES {
        let r = all.next().await;
        r.verify(&all_secret)
            .expect("our verifier accepts the delivery");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{:?}",
            r.headers
        );
        let body = r.json();
        let (id, event_type) = emitted
            .iter()
            .find(|(id, _)| *id == r.event_id())
            .expect("webhook-id is the event id");
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["type"], *event_type);
        assert_eq!(body["account_id"], console.account_id.as_str());
        assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
        assert!(body["data"]["n"].is_number());
        seen.insert(r.event_id());
    }
    assert_eq!(seen.len(), EVENT_TYPES.len());

    let r = reads.next().await;
    assert_eq!(r.json()["type"], "message.read");
    r.verify(&reads_secret).unwrap();
    assert!(
        r.verify(&all_secret).is_err(),
        "each endpoint has its own secret"
    );
    reads.assert_quiet(Duration::from_millis(300)).await;
    all.assert_quiet(Duration::from_millis(50)).await;
    other.assert_quiet(Duration::from_millis(50)).await;
    sender.stop().await;
}

#[tokio::test]
async fn official_standardwebhooks_verifies_deliveries_including_during_rotation() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let mut rx = ok_receiver().await;
    let (endpoint_id, old_secret) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let sender = super::start(&app.state);

    emit(
        &app,
        &console.account_id,
        "message.delivered",
        json!({"message_id": "msg_1"}),
    )
    .await;
    let before = rx.next().await;
    python_verify(&old_secret, &before).await.unwrap();
    assert_eq!(
        before
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );

    let rotated = app
        .admin(
            &console,
            "POST",
            &format!("/admin/webhooks/{endpoint_id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != old_secret);
    assert!(rotated.body["previous_secret_expires_at"].is_string());

    emit(
        &app,
        &console.account_id,
        "message.read",
        json!({"message_id": "msg_1"}),
    )
    .await;
    let during = rx.next().await;
    assert_eq!(
        during
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        2,
        "both signatures go out while the rotation overlaps"
    );
    python_verify(&new_secret, &during).await.unwrap();
    python_verify(&old_secret, &during).await.unwrap();
    during.verify(&new_secret).unwrap();
    during.verify(&old_secret).unwrap();
    // And the library does reject what it should.
    let stranger = Secret::generate();
    assert!(python_verify(stranger.expose(), &during).await.is_err());
    let mut tampered = during.clone();
    tampered.body = Bytes::from(String::from_utf8_lossy(&during.body).replace("msg_1", "msg_2"));
    assert!(python_verify(&new_secret, &tampered).await.is_err());
    sender.stop().await;
}

#[tokio::test]
async fn old_secret_stops_signing_after_the_overlap() {
    let app = app_with(|c| c.rotation_overlap = Duration::ZERO).await;
    let console = app.demo_console().await;
    let mut rx = ok_receiver().await;
    let (endpoint_id, old_secret) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let rotated = app
        .admin(
            &console,
            "POST",
            &format!("/admin/webhooks/{endpoint_id}/rotate-secret"),
            None,
        )
        .await;
    let new_secret = rotated.body["secret"].as_str().unwrap().to_string();
    let sender = super::start(&app.state);
    emit(&app, &console.account_id, "contact.created", json!({})).await;
    let r = rx.next().await;
    assert_eq!(r.header("webhook-signature").unwrap().split(' ').count(), 1);
    r.verify(&new_secret).unwrap();
    assert!(r.verify(&old_secret).is_err());
    sender.stop().await;
}

#[tokio::test]
async fn a_receiver_failing_three_times_gets_the_event_on_attempt_four() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let mut rx = receiver(|call| async move {
        if call <= 3 {
            (StatusCode::INTERNAL_SERVER_ERROR, "not yet").into_response()
        } else {
            StatusCode::NO_CONTENT.into_response()
        }
    })
    .await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["message.sent"]).await;
    let sender = super::start(&app.state);
    let event_id = emit(&app, &console.account_id, "message.sent", json!({})).await;

    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(rx.next().await);
    }
    assert!(
        got.iter().all(|r| r.event_id() == event_id),
        "same webhook-id every time"
    );
    // Each retry waits at least its scheduled delay (jitter only adds).
    for (pair, delay) in got.windows(2).zip([10, 20, 30]) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(delay), "{gap:?} < {delay}ms");
    }
    assert_eq!(
        wait_status(&app, &endpoint_id, &event_id, "succeeded").await,
        4
    );
    rx.assert_quiet(Duration::from_millis(200)).await;

    let log = deliveries(&app, &console, &endpoint_id, "").await;
    let delivery = &log["data"][0];
    assert_eq!(delivery["event_id"], event_id.as_str());
    assert_eq!(delivery["event_type"], "message.sent");
    assert_eq!(delivery["status"], "succeeded");
    assert!(delivery["next_attempt_at"].is_null());
    let codes: Vec<i64> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![500, 500, 500, 204]);
    let first = &delivery["attempts"][0];
    assert_eq!(first["response"], "not yet");
    assert_eq!(first["error"], "HTTP 500 Internal Server Error");
    assert!(first["latency_ms"].is_i64() && first["at"].is_string());
    sender.stop().await;
}

#[tokio::test]
async fn always_failing_gets_six_attempts_then_fails_and_manual_retry_recovers() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let mut rx = receiver(move |_| {
        let ok = flag.load(Ordering::SeqCst);
        async move {
            if ok {
                StatusCode::OK.into_response()
            } else {
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        }
    })
    .await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let sender = super::start(&app.state);
    let event_id = emit(&app, &console.account_id, "batch.completed", json!({})).await;

    assert_eq!(
        wait_status(&app, &endpoint_id, &event_id, "failed").await,
        6
    );
    for _ in 0..6 {
        assert_eq!(rx.next().await.event_id(), event_id);
    }
    rx.assert_quiet(Duration::from_millis(100)).await;
    assert_eq!(rx.calls(), 6, "1 attempt + 5 retries");

    healthy.store(true, Ordering::SeqCst);
    let log = deliveries(&app, &console, &endpoint_id, "?status=failed").await;
    let delivery_id = log["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(log["data"][0]["attempts"].as_array().unwrap().len(), 6);
    let retried = app
        .admin(
            &console,
            "POST",
            &format!("/admin/deliveries/{delivery_id}/retry"),
            None,
        )
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{:?}", retried.body);
    assert_eq!(retried.body["status"], "pending");
    assert_eq!(
        wait_status(&app, &endpoint_id, &event_id, "succeeded").await,
        7
    );
    assert_eq!(rx.calls(), 7);
    sender.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_when_later_than_the_schedule() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let mut rx = receiver(|call| async move {
        if call == 1 {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let sender = super::start(&app.state);
    let event_id = emit(&app, &console.account_id, "message.failed", json!({})).await;
    let first = rx.next().await;
    let second = rx.next().await;
    let gap = second.at - first.at;
    assert!(
        gap >= Duration::from_millis(990),
        "Retry-After: 1 must beat the 10 ms schedule, got {gap:?}"
    );
    assert_eq!(
        wait_status(&app, &endpoint_id, &event_id, "succeeded").await,
        2
    );
    sender.stop().await;
}

#[tokio::test]
async fn gone_disables_the_endpoint_at_once() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let mut rx = receiver(|_| async { StatusCode::GONE.into_response() }).await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let sender = super::start(&app.state);
    let event_id = emit(&app, &console.account_id, "contact.updated", json!({})).await;
    rx.next().await;
    assert_eq!(
        wait_status(&app, &endpoint_id, &event_id, "failed").await,
        1
    );

    let endpoint = app
        .admin(
            &console,
            "GET",
            &format!("/admin/webhooks/{endpoint_id}"),
            None,
        )
        .await;
    assert_eq!(endpoint.body["enabled"], false);
    assert!(endpoint.body["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));
    assert!(endpoint.body["log"][0]["message"]
        .as_str()
        .unwrap()
        .contains("410 Gone"));
    let attempt = &deliveries(&app, &console, &endpoint_id, "").await["data"][0]["attempts"][0];
    assert_eq!(attempt["status_code"], 410);
    assert!(attempt["error"].as_str().unwrap().contains("disabled"));

    // A disabled endpoint gets no new deliveries, and manual retries are refused.
    emit(&app, &console.account_id, "contact.updated", json!({})).await;
    rx.assert_quiet(Duration::from_millis(300)).await;
    let delivery_id = deliveries(&app, &console, &endpoint_id, "").await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let retry = app
        .admin(
            &console,
            "POST",
            &format!("/admin/deliveries/{delivery_id}/retry"),
            None,
        )
        .await;
    assert_eq!(retry.status, StatusCode::CONFLICT);
    assert_eq!(retry.code(), "endpoint_disabled");
    sender.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_disable_after_is_disabled() {
    let app = app_with(|c| {
        c.retry_schedule = ms(&[100, 100, 100, 100, 100]);
        c.disable_after = Duration::from_millis(250);
    })
    .await;
    let console = app.demo_console().await;
    let rx = receiver(|_| async { StatusCode::BAD_GATEWAY.into_response() }).await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let sender = super::start(&app.state);
    let event_id = emit(&app, &console.account_id, "message.received", json!({})).await;
    let attempts = wait_status(&app, &endpoint_id, &event_id, "failed").await;
    assert!(
        (3..6).contains(&attempts),
        "disabled before the schedule ran out: {attempts}"
    );
    let endpoint = app
        .admin(
            &console,
            "GET",
            &format!("/admin/webhooks/{endpoint_id}"),
            None,
        )
        .await;
    assert_eq!(endpoint.body["enabled"], false);
    assert!(endpoint.body["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("every attempt failed"));
    assert!(endpoint.body["log"][0]["message"]
        .as_str()
        .unwrap()
        .starts_with("disabled"));

    // Enabling it again clears the verdict.
    let enabled = app
        .admin(
            &console,
            "PATCH",
            &format!("/admin/webhooks/{endpoint_id}"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(enabled.body["enabled"], true);
    assert!(enabled.body["disabled_reason"].is_null());
    sender.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_times_out_without_delaying_a_healthy_one() {
    // The healthy endpoint must be done before the hanging attempts time out; 6 s leaves room
    // for a loaded CI machine (3 s flaked there), and the hanging side still times out.
    let timeout = Duration::from_secs(6);
    let app = app_with(|c| {
        c.timeout = timeout;
        c.lease = Duration::from_secs(10);
        c.retry_schedule = ms(&[60_000]);
        c.max_in_flight = 4;
        c.max_in_flight_per_endpoint = 2;
    })
    .await;
    let console = app.demo_console().await;
    let mut hanging = receiver(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let mut healthy = ok_receiver().await;
    let (hanging_id, _) = create_endpoint(&app, &console, &hanging.url, &["*"]).await;
    create_endpoint(&app, &console, &healthy.url, &["*"]).await;
    let sender = super::start(&app.state);

    let started = Instant::now();
    let mut events = Vec::new();
    for i in 0..20 {
        events.push(emit(&app, &console.account_id, "message.sent", json!({"i": i})).await);
    }
    let mut got = HashSet::new();
    while got.len() < events.len() {
        got.insert(healthy.next().await.event_id());
    }
    let healthy_done = started.elapsed();
    eprintln!("healthy done in {healthy_done:?}");
    assert!(
        healthy_done < timeout,
        "the healthy endpoint waited for the hanging one: {healthy_done:?}"
    );
    // An endpoint that never answered gets one attempt at a time (its share), so the hanging
    // one holds one slot, not its whole cap. A second attempt can start when the first ends,
    // before the recorder has opened the circuit; whether it does is a race, so the count is
    // one or two, never more than the cap.
    hanging.next().await;
    let first = &events[0];
    eventually("the hanging attempt to time out", || async {
        matches!(delivery_state(&app, &hanging_id, first).await, Some((s, 1)) if s == "pending")
    })
    .await;
    assert!(
        (1..=2).contains(&hanging.calls()),
        "{} calls",
        hanging.calls()
    );
    let log = deliveries(&app, &console, &hanging_id, "").await;
    let timed_out: Vec<&Value> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["attempts"].as_array().unwrap())
        .collect();
    assert!(!timed_out.is_empty());
    for attempt in timed_out {
        assert!(attempt["status_code"].is_null());
        assert!(attempt["error"].as_str().unwrap().contains("timed out"));
        assert!(attempt["latency_ms"].as_i64().unwrap() >= timeout.as_millis() as i64 - 50);
    }
    drop(sender);
}

#[tokio::test]
async fn private_targets_are_refused_when_the_guard_is_on() {
    let app = app_with(|c| c.allow_private_targets = false).await;
    let console = app.demo_console().await;
    let mut rx = ok_receiver().await;
    let port = rx
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();

    for url in [
        rx.url.clone(),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://[::1]/hook".to_string(),
        "http://10.0.0.8/hook".to_string(),
    ] {
        let answer = app
            .admin(
                &console,
                "POST",
                "/admin/webhooks",
                Some(json!({"url": url})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert_eq!(answer.code(), "webhook_url_not_allowed");
    }

    // A name is judged when it is resolved, at delivery time.
    let (endpoint_id, _) = create_endpoint(
        &app,
        &console,
        &format!("http://localhost:{port}/hook"),
        &["*"],
    )
    .await;
    let test = app
        .admin(
            &console,
            "POST",
            &format!("/admin/webhooks/{endpoint_id}/test"),
            None,
        )
        .await;
    assert_eq!(test.status, StatusCode::OK, "{:?}", test.body);
    assert_eq!(test.body["success"], false);
    assert_eq!(test.body["outcome"], "blocked");
    assert!(test.body["error"].as_str().unwrap().contains("localhost"));

    let sender = super::start(&app.state);
    let event_id = emit(&app, &console.account_id, "message.read", json!({})).await;
    eventually("a blocked attempt", || async {
        matches!(delivery_state(&app, &endpoint_id, &event_id).await, Some((_, n)) if n >= 1)
    })
    .await;
    rx.assert_quiet(Duration::from_millis(100)).await;
    assert_eq!(rx.calls(), 0, "nothing reached the loopback receiver");
    let attempt = &deliveries(&app, &console, &endpoint_id, "?event_type=message.read").await
        ["data"][0]["attempts"][0];
    assert_eq!(attempt["outcome"], "blocked");
    assert!(app
        .state
        .metrics
        .render()
        .contains("wiz_webhook_attempts_total{outcome=\"blocked\"}"));
    sender.stop().await;
}

#[tokio::test]
async fn private_targets_are_reached_when_allowed() {
    let app = app_with(|c| c.allow_private_targets = true).await;
    let console = app.demo_console().await;
    let mut rx = ok_receiver().await;
    let port = rx
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (endpoint_id, _) = create_endpoint(
        &app,
        &console,
        &format!("http://localhost:{port}/hook"),
        &["*"],
    )
    .await;
    let test = app
        .admin(
            &console,
            "POST",
            &format!("/admin/webhooks/{endpoint_id}/test"),
            None,
        )
        .await;
    assert_eq!(test.body["success"], true, "{:?}", test.body);
    assert_eq!(rx.next().await.json()["type"], "webhook.test");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let mut target = ok_receiver().await;
    let location = target.url.clone();
    let mut rx = receiver(move |_| {
        let location = location.clone();
        async move { (StatusCode::FOUND, [("location", location)]).into_response() }
    })
    .await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let test = app
        .admin(
            &console,
            "POST",
            &format!("/admin/webhooks/{endpoint_id}/test"),
            None,
        )
        .await;
    assert_eq!(test.body["success"], false, "{:?}", test.body);
    assert_eq!(test.body["status_code"], 302);
    assert!(test.body["error"].as_str().unwrap().contains("redirect"));

    let sender = super::start(&app.state);
    let event_id = emit(&app, &console.account_id, "message.read", json!({})).await;
    rx.next().await; // the test
    rx.next().await; // the event's first attempt
    eventually("the 302 to be a failed attempt", || async {
        matches!(delivery_state(&app, &endpoint_id, &event_id).await, Some((_, n)) if n >= 2)
    })
    .await;
    target.assert_quiet(Duration::from_millis(100)).await;
    sender.stop().await;
}

#[tokio::test]
async fn the_test_route_sends_at_once_and_reports_the_outcome() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let mut rx = receiver(|_| async { (StatusCode::OK, "x".repeat(5000)).into_response() }).await;
    let (endpoint_id, secret) = create_endpoint(&app, &console, &rx.url, &["message.read"]).await;
    // No sender running: the test goes out synchronously from the route.
    let test = app
        .admin(
            &console,
            "POST",
            &format!("/admin/webhooks/{endpoint_id}/test"),
            None,
        )
        .await;
    assert_eq!(test.status, StatusCode::OK, "{:?}", test.body);
    assert_eq!(test.body["success"], true);
    assert_eq!(test.body["outcome"], "success");
    assert_eq!(test.body["status_code"], 200);
    assert!(test.body["latency_ms"].as_i64().unwrap() >= 0);
    assert_eq!(test.body["response"].as_str().unwrap().len(), 1024);
    assert!(test.body["error"].is_null());

    let r = rx.next().await;
    r.verify(&secret).unwrap();
    assert_eq!(r.event_id(), test.body["event_id"].as_str().unwrap());
    assert_eq!(r.json()["type"], "webhook.test");
    assert_eq!(r.json()["data"]["endpoint_id"], endpoint_id.as_str());

    let log = deliveries(&app, &console, &endpoint_id, "?event_type=webhook.test").await;
    assert_eq!(log["data"][0]["status"], "succeeded");
    assert_eq!(log["data"][0]["id"], test.body["delivery_id"]);
}

#[tokio::test]
async fn a_crash_with_deliveries_pending_and_in_flight_loses_nothing() {
    let app = app_with(|c| {
        c.timeout = Duration::from_secs(1);
        c.lease = Duration::from_millis(1500);
        c.max_in_flight = 3;
        c.max_in_flight_per_endpoint = 3;
    })
    .await;
    let console = app.demo_console().await;
    let slow = Arc::new(AtomicBool::new(true));
    let flag = slow.clone();
    let mut rx = receiver(move |_| {
        let slow = flag.load(Ordering::SeqCst);
        async move {
            if slow {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    // An endpoint that answered before gets its whole cap at once (a new one starts at one).
    sqlx::query("UPDATE webhook_endpoints SET last_success_at = 0 WHERE id = $1")
        .bind(&endpoint_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let sender = super::start(&app.state);
    let mut events = HashSet::new();
    for i in 0..10 {
        events.insert(
            emit(
                &app,
                &console.account_id,
                "message.delivered",
                json!({"i": i}),
            )
            .await,
        );
    }
    for _ in 0..3 {
        rx.next().await;
    }
    let (leased,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries \
         WHERE locked_until IS NOT NULL AND status = 'pending'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert!(
        (3..10).contains(&leased),
        "three attempts in flight under a lease (and maybe a round queued), the rest waiting: {leased}"
    );
    // The crash: every task of the sender is aborted mid-request; nothing is recorded.
    drop(sender);

    // The restart: a new process state on the same database file.
    slow.store(false, Ordering::SeqCst);
    let restarted = crate::open((*app.state.config).clone()).await.unwrap();
    let sender = super::start(&restarted);
    let mut delivered = HashSet::new();
    while !events.is_subset(&delivered) {
        delivered.insert(rx.next().await.event_id());
    }
    for event_id in &events {
        wait_status(&app, &endpoint_id, event_id, "succeeded").await;
    }
    let (total,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries WHERE status = 'succeeded'",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(total, 10);

    // A graceful stop leaves no lease behind.
    sender.stop().await;
    let (held,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries WHERE locked_by IS NOT NULL",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(held, 0);
}

#[tokio::test]
async fn events_are_fanned_out_once_across_restarts_and_racing_fan_outs() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let rx = ok_receiver().await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    for _ in 0..7 {
        emit(&app, &console.account_id, "contact.created", json!({})).await;
    }
    let mut a = FanOut::resume(&app.state.db).await.unwrap();
    let mut b = FanOut::resume(&app.state.db).await.unwrap();
    assert_eq!(a.pass(&app.state.db).await.unwrap(), 7);
    assert_eq!(b.pass(&app.state.db).await.unwrap(), 0);
    let mut restarted = FanOut::resume(&app.state.db).await.unwrap();
    assert_eq!(restarted.pass(&app.state.db).await.unwrap(), 0);
    emit(&app, &console.account_id, "contact.created", json!({})).await;
    assert_eq!(b.pass(&app.state.db).await.unwrap(), 1);
    assert_eq!(a.pass(&app.state.db).await.unwrap(), 0);
    let (n,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM webhook_deliveries WHERE endpoint_id = $1",
    )
    .bind(&endpoint_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(n, 8);
}

#[tokio::test]
async fn admin_api_manages_endpoints_within_the_account() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let created = app
        .admin(
            &console,
            "POST",
            "/admin/webhooks",
            Some(
                json!({"url": "https://crm.example.com/hooks", "events": ["message.read"],
                        "description": "CRM", "enabled": true}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("whk_"));
    let secret = created.body["secret"].as_str().unwrap();
    assert!(Secret::parse(secret).unwrap().key().unwrap().len() >= 24);
    assert_eq!(created.body["events"], json!(["message.read"]));

    let fetched = app
        .admin(&console, "GET", &format!("/admin/webhooks/{id}"), None)
        .await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert!(
        fetched.body.get("secret").is_none(),
        "the secret is shown once"
    );
    assert!(!fetched.body.to_string().contains(secret));
    let listed = app.admin(&console, "GET", "/admin/webhooks", None).await;
    assert_eq!(listed.body["data"][0]["id"], id.as_str());
    assert!(listed.body["next_cursor"].is_null());
    assert!(!listed.body.to_string().contains(secret));

    let patched = app
        .admin(
            &console,
            "PATCH",
            &format!("/admin/webhooks/{id}"),
            Some(json!({"events": ["*"], "description": "all of it", "enabled": false})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{:?}", patched.body);
    assert_eq!(patched.body["events"], json!(["*"]));
    assert_eq!(patched.body["description"], "all of it");
    assert_eq!(patched.body["enabled"], false);

    for (body, code) in [
        (json!({"url": "ftp://example.com"}), "invalid_url"),
        (
            json!({"url": "https://example.com", "events": ["message.exploded"]}),
            "invalid_events",
        ),
        (
            json!({"url": "https://example.com", "description": "d".repeat(501)}),
            "invalid_description",
        ),
        (
            json!({"url": "https://example.com", "colour": "red"}),
            "invalid_body",
        ),
    ] {
        let answer = app
            .admin(&console, "POST", "/admin/webhooks", Some(body))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.code(), code, "{:?}", answer.body);
    }

    // Another account sees none of it.
    app.create_account(
        "Other",
        Plan::WizPro,
        "other@example.test",
        "other-password-1",
    )
    .await;
    let other = app.login("other@example.test", "other-password-1").await;
    for (method, path) in [
        ("GET", format!("/admin/webhooks/{id}")),
        ("PATCH", format!("/admin/webhooks/{id}")),
        ("DELETE", format!("/admin/webhooks/{id}")),
        ("POST", format!("/admin/webhooks/{id}/rotate-secret")),
        ("POST", format!("/admin/webhooks/{id}/test")),
        ("GET", format!("/admin/webhooks/{id}/deliveries")),
    ] {
        let body = (method == "PATCH").then(|| json!({"enabled": true}));
        let answer = app.admin(&other, method, &path, body).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
    let others = app.admin(&other, "GET", "/admin/webhooks", None).await;
    assert_eq!(others.body["data"], json!([]));

    // State changes need the CSRF token.
    let mut no_csrf = console.clone();
    no_csrf.csrf = "wrong".into();
    let answer = app
        .admin(&no_csrf, "DELETE", &format!("/admin/webhooks/{id}"), None)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    let deleted = app
        .admin(&console, "DELETE", &format!("/admin/webhooks/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = app
        .admin(&console, "GET", &format!("/admin/webhooks/{id}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_delivery_log_filters_and_pages() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let mut rx = ok_receiver().await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let sender = super::start(&app.state);
    let mut ids = Vec::new();
    for event_type in [
        "message.sent",
        "message.read",
        "message.sent",
        "message.read",
        "message.read",
    ] {
        ids.push(emit(&app, &console.account_id, event_type, json!({})).await);
    }
    for _ in 0..5 {
        rx.next().await;
    }
    for id in &ids {
        wait_status(&app, &endpoint_id, id, "succeeded").await;
    }

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = deliveries(&app, &console, &endpoint_id, &query).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(
            data.iter()
                .map(|d| d["event_id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    // Newest first by delivery id; deliveries created in the same millisecond have no order
    // among themselves (ULIDs), so compare as sets, each once.
    assert_eq!(seen.len(), ids.len());
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );

    let reads = deliveries(&app, &console, &endpoint_id, "?event_type=message.read").await;
    assert_eq!(reads["data"].as_array().unwrap().len(), 3);
    let pending = deliveries(&app, &console, &endpoint_id, "?status=pending").await;
    assert_eq!(pending["data"], json!([]));
    let bad = app
        .admin(
            &console,
            "GET",
            &format!("/admin/webhooks/{endpoint_id}/deliveries?status=lost"),
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Another account can neither read nor retry these deliveries.
    app.create_account(
        "Other",
        Plan::WizPro,
        "other@example.test",
        "other-password-1",
    )
    .await;
    let other = app.login("other@example.test", "other-password-1").await;
    let delivery_id = reads["data"][0]["id"].as_str().unwrap();
    let retry = app
        .admin(
            &other,
            "POST",
            &format!("/admin/deliveries/{delivery_id}/retry"),
            None,
        )
        .await;
    assert_eq!(retry.status, StatusCode::NOT_FOUND);
    sender.stop().await;
}

#[tokio::test]
async fn metrics_count_attempts_and_describe_the_outbox() {
    let app = app_with(|c| c.retry_schedule = ms(&[60_000])).await;
    let console = app.demo_console().await;
    let mut ok = ok_receiver().await;
    let mut failing = receiver(|_| async { StatusCode::BAD_REQUEST.into_response() }).await;
    let (_, _) = create_endpoint(&app, &console, &ok.url, &["*"]).await;
    let (failing_id, _) = create_endpoint(&app, &console, &failing.url, &["*"]).await;
    let sender = super::start(&app.state);
    let event_id = emit(&app, &console.account_id, "message.sent", json!({})).await;
    ok.next().await;
    failing.next().await;
    eventually("the failure to be recorded", || async {
        matches!(
            delivery_state(&app, &failing_id, &event_id).await,
            Some((_, 1))
        )
    })
    .await;
    super::metrics::refresh_gauges(&app.state.db, &app.state.webhooks.metrics)
        .await
        .unwrap();
    let text = app.state.metrics.render();
    for line in [
        "wiz_webhook_attempts_total{outcome=\"success\"} 1",
        "wiz_webhook_attempts_total{outcome=\"http_error\"} 1",
        "wiz_webhook_attempts_total{outcome=\"timeout\"} 0",
        "wiz_webhook_attempt_duration_seconds_count 2",
        "wiz_webhook_outbox_depth 1",
        "wiz_webhook_disabled_endpoints 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("wiz_webhook_oldest_pending_age_seconds"));
    assert!(!text.contains("whsec_"));
    sender.stop().await;
}

#[tokio::test]
async fn fan_out_catches_events_of_the_same_millisecond_and_late_commits() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let rx = ok_receiver().await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let insert = |id: &'static str, created_at: i64| {
        let db = app.state.db.clone();
        let account = console.account_id.clone();
        async move {
            sqlx::query(
                "INSERT INTO events (id, account_id, type, data, created_at) \
                 VALUES ($1, $2, 'message.sent', '{}', $3)",
            )
            .bind(id)
            .bind(account)
            .bind(created_at)
            .execute(&db)
            .await
            .unwrap();
        }
    };
    // An endpoint gets only the events created after it: make it older than the test's events.
    sqlx::query("UPDATE webhook_endpoints SET created_at = created_at - 60000")
        .execute(&app.state.db)
        .await
        .unwrap();
    let now = crate::clock::now_ms();
    let mut fan_out = FanOut::resume(&app.state.db).await.unwrap();
    insert("evt_zzzzzzzzzzzzzzzzzzzzzzzzzz", now).await;
    assert_eq!(fan_out.pass(&app.state.db).await.unwrap(), 1);
    // Same millisecond, an id that sorts before the one already fanned out (ULIDs are random
    // within a millisecond): the next pass must still see it.
    insert("evt_00000000000000000000000000", now).await;
    assert_eq!(fan_out.pass(&app.state.db).await.unwrap(), 1);
    // Committed 20 s after its created_at: beyond the tail's overlap, found by the sweep (which
    // a fresh fan-out runs at once, and a running one every few seconds).
    insert("evt_11111111111111111111111111", now - 20_000).await;
    let mut restarted = FanOut::resume(&app.state.db).await.unwrap();
    assert_eq!(restarted.pass(&app.state.db).await.unwrap(), 1);
    assert_eq!(fan_out.pass(&app.state.db).await.unwrap(), 0);
    let (n,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(DISTINCT event_id) AS BIGINT) FROM webhook_deliveries WHERE endpoint_id = $1",
    )
    .bind(&endpoint_id)
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(n, 3);
}

#[tokio::test]
async fn history_past_retention_is_pruned_but_pending_work_is_kept() {
    // Retries an hour apart, so the failing endpoint's delivery stays pending.
    let app = app_with(|w| w.retry_schedule = vec![Duration::from_secs(3600)]).await;
    let console = app.demo_console().await;
    let mut ok = ok_receiver().await;
    let failing = receiver(|_| async { StatusCode::SERVICE_UNAVAILABLE.into_response() }).await;
    let (ok_id, _) = create_endpoint(&app, &console, &ok.url, &["*"]).await;
    let (failing_id, _) = create_endpoint(&app, &console, &failing.url, &["*"]).await;
    let sender = super::start(&app.state);
    let old = emit(&app, &console.account_id, "batch.completed", json!({})).await;
    let recent = emit(&app, &console.account_id, "batch.completed", json!({})).await;
    for event in [&old, &recent] {
        wait_status(&app, &ok_id, event, "succeeded").await;
    }
    for _ in 0..2 {
        ok.next().await;
    }
    // One attempt: its failure opens the endpoint's circuit, which holds the other delivery
    // back (pending) instead of failing it too.
    eventually("the first attempt on the failing endpoint", || async {
        failing.calls() == 1
    })
    .await;
    sender.stop().await;

    // Age the first event's deliveries and every endpoint log line by 31 days.
    let month = 31 * 24 * 3600 * 1000_i64;
    sqlx::query("UPDATE webhook_deliveries SET updated_at = updated_at - $1 WHERE event_id = $2")
        .bind(month)
        .bind(&old)
        .execute(&app.state.db)
        .await
        .unwrap();
    sqlx::query("INSERT INTO webhook_endpoint_log (id, endpoint_id, at, message) VALUES ('log_old', $1, $2, 'old')")
        .bind(&ok_id)
        .bind(crate::clock::now_ms() - month)
        .execute(&app.state.db)
        .await
        .unwrap();

    let retention = app.state.config.webhooks.history_retention;
    let cutoff = crate::clock::now_ms() - retention.as_millis() as i64;
    let pruned = super::outbox::prune_history(&app.state.db, cutoff)
        .await
        .unwrap();
    assert_eq!(pruned, 1, "only the old finished delivery");

    assert_eq!(delivery_state(&app, &ok_id, &old).await, None);
    assert!(delivery_state(&app, &ok_id, &recent).await.is_some());
    let pending = delivery_state(&app, &failing_id, &old).await;
    assert!(
        pending
            .as_ref()
            .is_some_and(|(status, _)| status == "pending"),
        "work is never pruned: {pending:?}"
    );
    let (orphans,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM webhook_attempts a \
         WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = a.delivery_id)",
    )
    .fetch_one(&app.state.db)
    .await
    .unwrap();
    assert_eq!(orphans, 0, "attempts go with their delivery");
    let (old_logs,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM webhook_endpoint_log WHERE id = 'log_old'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(old_logs, 0);

    let log = deliveries(&app, &console, &ok_id, "").await;
    let events: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(events, [recent.as_str()]);
}

#[tokio::test]
async fn deleting_an_endpoint_mid_request_leaves_no_attempt_behind() {
    let app = app_with(|_| {}).await;
    let console = app.demo_console().await;
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let mut rx = receiver(move |_| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            StatusCode::OK.into_response()
        }
    })
    .await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &rx.url, &["*"]).await;
    let sender = super::start(&app.state);
    emit(&app, &console.account_id, "batch.completed", json!({})).await;
    rx.next().await;

    let deleted = app
        .admin(
            &console,
            "DELETE",
            &format!("/admin/webhooks/{endpoint_id}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    release.notify_one();
    // Stopping waits for the attempt in flight and records its result.
    sender.stop().await;

    for table in ["webhook_attempts", "webhook_deliveries"] {
        let (n,): (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM {table} WHERE endpoint_id = $1"
        ))
        .bind(&endpoint_id)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
        assert_eq!(n, 0, "{table} rows of the deleted endpoint");
    }
}

/// Rows written before secrets were encrypted at rest are sealed on start, previous secrets
/// included, and still sign.
#[tokio::test]
async fn plaintext_secrets_are_sealed_on_start() {
    let app = TestApp::new().await;
    let account = app.demo_console().await.account_id;
    let mut conn = app.state.db.acquire().await.unwrap();
    let (endpoint_id, secret) = super::endpoints::insert(
        &mut conn,
        &app.state.secrets,
        &account,
        &super::endpoints::NewEndpoint {
            url: "http://127.0.0.1:9/hook".into(),
            events: vec!["*".into()],
            description: String::new(),
            enabled: true,
        },
    )
    .await
    .unwrap();
    drop(conn);
    let old = Secret::generate();
    sqlx::query("UPDATE webhook_endpoints SET secret = $1, previous_secret = $2 WHERE id = $3")
        .bind(secret.expose())
        .bind(old.expose())
        .bind(&endpoint_id)
        .execute(&app.state.db)
        .await
        .unwrap();
    let sealed = super::endpoints::seal_plaintext_secrets(&app.state.db, &app.state.secrets)
        .await
        .unwrap();
    assert_eq!(sealed, 1);
    let (stored, previous): (String, String) =
        sqlx::query_as("SELECT secret, previous_secret FROM webhook_endpoints WHERE id = $1")
            .bind(&endpoint_id)
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert!(stored.starts_with("enc:v1:") && previous.starts_with("enc:v1:"));
    assert_eq!(
        app.state.secrets.decrypt_str(&stored).unwrap(),
        secret.expose()
    );
    assert_eq!(
        app.state.secrets.decrypt_str(&previous).unwrap(),
        old.expose()
    );
    // A second start has nothing left to do.
    assert_eq!(
        super::endpoints::seal_plaintext_secrets(&app.state.db, &app.state.secrets)
            .await
            .unwrap(),
        0
    );
}

/// The synchronous test call counts against the same per-endpoint cap as the worker: test calls
/// to a hanging endpoint cannot pile up connections to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_calls_to_a_hanging_endpoint_respect_the_in_flight_cap() {
    let app = std::sync::Arc::new(
        app_with(|c| {
            c.timeout = Duration::from_secs(5);
            c.max_in_flight_per_endpoint = 2;
        })
        .await,
    );
    let console = std::sync::Arc::new(app.demo_console().await);
    let hanging = receiver(|_| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        StatusCode::OK.into_response()
    })
    .await;
    let (endpoint_id, _) = create_endpoint(&app, &console, &hanging.url, &["*"]).await;
    let path = format!("/admin/webhooks/{endpoint_id}/test");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (app, console, path) = (app.clone(), console.clone(), path.clone());
            tokio::spawn(async move { app.admin(&console, "POST", &path, None).await })
        })
        .collect();
    eventually("both test calls to reach the endpoint", || async {
        hanging.calls() == 2
    })
    .await;
    let refused = app.admin(&console, "POST", &path, None).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["error"]["code"], "endpoint_busy");
    assert!(refused.headers.get("retry-after").is_some());
    assert_eq!(hanging.calls(), 2);
    // The held calls end at the timeout as failed attempts, and free their places.
    for call in held {
        let answer = call.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["success"], false);
        assert_eq!(answer.body["outcome"], "timeout");
    }
    assert_eq!(app.state.webhooks.in_flight.endpoint(&endpoint_id), 0);
}
