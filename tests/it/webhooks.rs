//! Webhooks across the real binaries: events caused through the gateway arrive signed, verify
//! with the official `standardwebhooks` package (also across a secret rotation), and survive a
//! backend that is killed with deliveries in flight and pending.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{body::Bytes, extract::State, http::HeaderMap, routing::post, Router};
use serde_json::{json, Value};

use crate::harness::{eventually, Admin, ApiKey, Options, Stack};

/// One request as the receiver got it.
#[derive(Clone, Debug)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: String,
    /// When the receiver got it (after any hang), for latency checks.
    at: std::time::Instant,
}

impl Delivery {
    fn event(&self) -> Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

#[derive(Default)]
struct Inbox {
    /// Answer nothing for a long time (a hanging server) while set.
    hang: AtomicBool,
    /// Requests that reached the receiver, answered or not.
    arrived: AtomicUsize,
    delivered: Mutex<Vec<Delivery>>,
}

/// A webhook receiver on 127.0.0.1:0 that records every request it answers with 200.
async fn receiver() -> (String, Arc<Inbox>) {
    async fn receive(
        State(inbox): State<Arc<Inbox>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        inbox.arrived.fetch_add(1, Ordering::SeqCst);
        if inbox.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = String::from_utf8_lossy(&body).into_owned();
        inbox.delivered.lock().unwrap().push(Delivery {
            headers,
            body,
            at: std::time::Instant::now(),
        });
        "ok"
    }
    let inbox = Arc::new(Inbox::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), inbox)
}

/// Runs tests/webhook_verify.py (the official Standard Webhooks library) on one delivery.
fn verify_with_standardwebhooks(secret: &str, delivery: &Delivery) -> Result<(), String> {
    use std::io::Write;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_verify.py");
    let input = json!({"secret": secret, "headers": delivery.headers, "body": delivery.body});
    let mut child = std::process::Command::new("python3")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed to verify webhooks (scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => Ok(()),
        Some(2) => panic!("standardwebhooks is not installed: {said}"),
        _ => Err(said),
    }
}

/// A receiver subscribed to `event` through the console, and a synced key to cause it with.
async fn subscribed(stack: &Stack, event: &str) -> (ApiKey, Arc<Inbox>) {
    let admin = stack.admin().await;
    let (url, inbox) = receiver().await;
    admin
        .post("/admin/webhooks", json!({"url": url, "events": [event]}))
        .await
        .expect(201);
    let key = admin.create_key(json!({})).await;
    stack.wait_synced().await;
    (key, inbox)
}

/// The backend's JSON log lines so far.
fn backend_log(stack: &Stack) -> Vec<Value> {
    let text = std::fs::read_to_string(stack.dir().join("wiz-backend.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn events_caused_through_the_gateway_arrive_signed_and_verify_across_a_rotation() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let (url, inbox) = receiver().await;
    let created = admin
        .post(
            "/admin/webhooks",
            json!({"url": url, "events": ["*"], "description": "e2e"}),
        )
        .await;
    let created = created.expect(201).clone();
    let hook_id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let listed = admin.get(&format!("/admin/webhooks/{hook_id}")).await;
    assert!(
        listed.expect(200).get("secret").is_none(),
        "secret shown once"
    );

    let key = admin.create_key(json!({})).await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    let sent = api
        .post(
            "/v1/messages",
            json!({"to": "+14155550142", "type": "text", "text": {"body": "hello"}}),
        )
        .await;
    let message_id = sent.expect(202)["id"].as_str().unwrap().to_string();

    let wanted: BTreeSet<&str> = [
        "contact.created",
        "message.sent",
        "message.delivered",
        "message.read",
    ]
    .into();
    let first = eventually("the message's events", Duration::from_secs(20), || async {
        let got = inbox.delivered.lock().unwrap().clone();
        let types: BTreeSet<String> = got
            .iter()
            .map(|d| d.event()["type"].as_str().unwrap_or_default().to_string())
            .collect();
        wanted.iter().all(|t| types.contains(*t)).then_some(got)
    })
    .await;
    for delivery in &first {
        let event = delivery.event();
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(
            delivery.headers["webhook-id"],
            event["id"].as_str().unwrap()
        );
        assert_eq!(event["account_id"], admin.account_id());
        if event["type"].as_str().unwrap().starts_with("message.") {
            assert_eq!(event["data"]["id"], message_id.as_str(), "{event}");
        }
        verify_with_standardwebhooks(&secret, delivery)
            .unwrap_or_else(|e| panic!("standardwebhooks rejected {}: {e}", delivery.body));
    }
    assert!(
        verify_with_standardwebhooks("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &first[0]).is_err()
    );

    // Rotate: during the overlap both secrets sign, and either verifies.
    let rotated = admin
        .post(
            &format!("/admin/webhooks/{hook_id}/rotate-secret"),
            json!({}),
        )
        .await;
    let new_secret = rotated.expect(200)["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let before = inbox.delivered.lock().unwrap().len();
    api.post("/v1/contacts", json!({"phone": "+14155550143"}))
        .await
        .expect(201);
    let after = eventually(
        "a delivery after rotation",
        Duration::from_secs(10),
        || async {
            let got = inbox.delivered.lock().unwrap();
            got[before..]
                .iter()
                .find(|d| d.event()["type"] == "contact.created")
                .cloned()
        },
    )
    .await;
    let signatures = &after.headers["webhook-signature"];
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    verify_with_standardwebhooks(&new_secret, &after).expect("new secret verifies");
    verify_with_standardwebhooks(&secret, &after).expect("old secret still verifies");
}

#[tokio::test]
async fn a_killed_backend_loses_no_webhook_deliveries() {
    let mut stack = Stack::start_with(
        Options::default()
            .backend("WIZ_BACKEND__WEBHOOKS__TIMEOUT", "2s")
            .backend("WIZ_BACKEND__WEBHOOKS__LEASE", "3s")
            .backend(
                "WIZ_BACKEND__WEBHOOKS__RETRY_SCHEDULE",
                "200ms,200ms,200ms,200ms,200ms",
            ),
    )
    .await;
    let (key, inbox) = subscribed(&stack, "contact.created").await;
    let api = stack.api(&key);

    // The receiver hangs, so the first deliveries are in flight and the rest wait behind the
    // per-endpoint cap when the backend dies.
    inbox.hang.store(true, Ordering::SeqCst);
    let mut contact_ids = BTreeSet::new();
    for i in 0..20 {
        let r = api
            .post(
                "/v1/contacts",
                json!({"phone": format!("+1415555{:04}", 2000 + i)}),
            )
            .await;
        contact_ids.insert(r.expect(201)["id"].as_str().unwrap().to_string());
    }
    eventually("deliveries in flight", Duration::from_secs(10), || async {
        (inbox.arrived.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    assert!(inbox.delivered.lock().unwrap().is_empty());
    stack.kill_backend();
    inbox.hang.store(false, Ordering::SeqCst);
    stack.start_backend().await;

    let delivered = eventually(
        "every event after the crash",
        Duration::from_secs(30),
        || async {
            let got = inbox.delivered.lock().unwrap().clone();
            let ids: BTreeSet<String> = got
                .iter()
                .map(|d| {
                    d.event()["data"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            (ids == contact_ids).then_some(got)
        },
    )
    .await;
    // At least once; a delivery repeated after the crash keeps its webhook-id.
    let mut by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in &delivered {
        by_id
            .entry(d.event()["data"]["id"].as_str().unwrap().to_string())
            .or_default()
            .insert(d.headers["webhook-id"].clone());
    }
    assert!(by_id.values().all(|ids| ids.len() == 1), "{by_id:?}");
}

/// SPEC §10 "Fair delivery": 199 endpoints that hang or do not resolve, spread over ten accounts
/// (19 of them in the healthy endpoint's own account), each with a backlog, and one healthy
/// endpoint. Events for the healthy endpoint still arrive within a second of being caused.
#[tokio::test]
async fn dead_and_hanging_endpoints_do_not_delay_a_healthy_one() {
    let stack = Stack::start().await;
    healthy_endpoint_beside_dead_ones(&stack, "SQLite").await;
}

/// The fair-delivery scenario on `stack` (shared with the PostgreSQL suite, where several
/// backends claim from one outbox).
pub async fn healthy_endpoint_beside_dead_ones(stack: &Stack, label: &str) {
    use std::time::Instant;

    // Accepts connections and never answers: every attempt runs into the delivery timeout.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_addr = hanging.local_addr().unwrap();
    let hung = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let hung = hung.clone();
        async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = hanging.accept().await {
                hung.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        }
    });
    // The healthy receiver notes when each event arrived.
    let (healthy, inbox) = receiver().await;

    // Ten accounts with 20 endpoints each: the main one has the healthy endpoint.
    let mut apis = Vec::new();
    for n in 0..10 {
        let admin = if n == 0 {
            stack.admin().await
        } else {
            let email = format!("fair{n}@example.com");
            let out = stack.backend_cli(&[
                "accounts",
                "create",
                "--name",
                &format!("Fair {n}"),
                "--plan",
                "wiz_pro",
                "--admin-email",
                &email,
                "--admin-password",
                "fair-password-1",
            ]);
            assert!(out.status.success(), "{out:?}");
            Admin::login(&stack.gateway_url(), &email, "fair-password-1").await
        };
        let first_dead = if n == 0 {
            admin
                .post(
                    "/admin/webhooks",
                    json!({"url": healthy, "events": ["contact.created"]}),
                )
                .await
                .expect(201);
            1
        } else {
            0
        };
        for i in first_dead..20 {
            let url = if i % 2 == 0 {
                format!("http://{hanging_addr}/hang/{n}/{i}")
            } else {
                format!("http://dead-{n}-{i}.invalid/hook")
            };
            admin
                .post(
                    "/admin/webhooks",
                    json!({"url": url, "events": ["contact.created"]}),
                )
                .await
                .expect(201);
        }
        apis.push(
            stack.api(
                &admin
                    .create_key(json!({"rate_limit_per_minute": 10000, "daily_limit": 100000}))
                    .await,
            ),
        );
    }
    stack.wait_synced().await;

    // A backlog for every dead endpoint: 20 events per account.
    for (n, api) in apis.iter().enumerate() {
        for i in 0..20 {
            api.post(
                "/v1/contacts",
                json!({"phone": format!("+1415556{n:02}{i:02}")}),
            )
            .await
            .expect(201);
        }
    }
    // Events caused now, one every 100 ms, each timed from its answer to its arrival.
    let mut caused = BTreeMap::new();
    for i in 0..40 {
        let r = apis[0]
            .post("/v1/contacts", json!({"phone": format!("+14155570{i:03}")}))
            .await;
        let id = r.expect(201)["id"].as_str().unwrap().to_string();
        caused.insert(id, Instant::now());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrived = eventually(
        "every event at the healthy endpoint",
        Duration::from_secs(60),
        || {
            let delivered = inbox.delivered.lock().unwrap().clone();
            let caused = caused.clone();
            async move {
                // The first arrival of each contact's event (a retry could come again).
                let mut first: BTreeMap<String, Instant> = BTreeMap::new();
                for d in &delivered {
                    if let Some(id) = d.event()["data"]["id"].as_str() {
                        first.entry(id.to_string()).or_insert(d.at);
                    }
                }
                caused
                    .iter()
                    .map(|(id, at)| Some(first.get(id)?.saturating_duration_since(*at)))
                    .collect::<Option<Vec<_>>>()
            }
        },
    )
    .await;
    let mut latencies = arrived;
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];
    eprintln!(
        "{label}: healthy endpoint beside 199 dead ones: event→delivery p50 {p50:?}, p99 {p99:?}, \
         max {:?}; connections held by the hanging server: {}",
        latencies.last().unwrap(),
        hung.load(Ordering::SeqCst)
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}: {latencies:?}");
    // The dead endpoints were being tried all along, not skipped.
    assert!(
        hung.load(Ordering::SeqCst) >= 10,
        "{}",
        hung.load(Ordering::SeqCst)
    );
}

/// One event can be followed through the backend's JSON log: fan-out names the event and its
/// delivery, the attempt's span carries both ids, and the record names the delivery's outcome.
#[tokio::test]
async fn one_event_is_followed_from_fan_out_to_record_in_the_logs() {
    let stack = Stack::start_with(
        Options::default()
            .backend("WIZ_BACKEND__LOG__FORMAT", "json")
            .backend(
                "WIZ_BACKEND__LOG__LEVEL",
                "info,wiz_backend::webhooks=debug",
            ),
    )
    .await;
    let (key, inbox) = subscribed(&stack, "contact.created").await;
    stack
        .api(&key)
        .post("/v1/contacts", json!({"phone": "+14155550177"}))
        .await
        .expect(201);
    let delivery = eventually("the delivery", Duration::from_secs(20), || async {
        inbox.delivered.lock().unwrap().first().cloned()
    })
    .await;
    let event_id = delivery.event()["id"].as_str().unwrap().to_string();

    let lines = || backend_log(&stack);
    let said = |line: &Value, message: &str| line["message"] == message;
    let recorded = eventually("the record in the log", Duration::from_secs(10), || async {
        let lines = lines();
        let created = lines
            .iter()
            .find(|l| said(l, "webhook delivery created") && l["event_id"] == event_id.as_str())?
            .clone();
        let delivery_id = created["delivery_id"].as_str()?.to_string();
        let attempt = lines
            .iter()
            .find(|l| {
                said(l, "webhook attempt finished")
                    && l["span"]["delivery_id"] == delivery_id.as_str()
            })?
            .clone();
        let record = lines
            .iter()
            .find(|l| {
                said(l, "webhook delivery recorded") && l["delivery_id"] == delivery_id.as_str()
            })?
            .clone();
        Some((attempt, record))
    })
    .await;
    let (attempt, record) = recorded;
    assert_eq!(attempt["span"]["event_id"], event_id.as_str(), "{attempt}");
    assert_eq!(attempt["outcome"], "success", "{attempt}");
    assert_eq!(record["status"], "succeeded", "{record}");
}

/// One message can be followed through the backend's JSON log to the events it caused and on
/// to their deliveries: each event is written inside a span that names the message.
#[tokio::test]
async fn a_message_is_followed_to_its_events_and_their_deliveries_in_the_logs() {
    let stack = Stack::start_with(
        Options::default()
            .backend("WIZ_BACKEND__LOG__FORMAT", "json")
            .backend(
                "WIZ_BACKEND__LOG__LEVEL",
                "info,wiz_backend::events=debug,wiz_backend::webhooks=debug",
            ),
    )
    .await;
    let (key, inbox) = subscribed(&stack, "message.sent").await;
    let sent = stack
        .api(&key)
        .post(
            "/v1/messages",
            json!({"to": "+14155550178", "type": "text", "text": {"body": "hi"}}),
        )
        .await;
    let message_id = sent.expect(202)["id"].as_str().unwrap().to_string();
    let delivery = eventually("the delivery", Duration::from_secs(20), || async {
        inbox.delivered.lock().unwrap().first().cloned()
    })
    .await;
    let event_id = delivery.event()["id"].as_str().unwrap().to_string();

    let lines = || backend_log(&stack);
    let (written, created) =
        eventually("the trail in the log", Duration::from_secs(10), || async {
            let lines = lines();
            let written = lines
                .iter()
                .find(|l| l["message"] == "event written" && l["event_id"] == event_id.as_str())?
                .clone();
            let created = lines
                .iter()
                .find(|l| {
                    l["message"] == "webhook delivery created" && l["event_id"] == event_id.as_str()
                })?
                .clone();
            Some((written, created))
        })
        .await;
    assert_eq!(
        written["span"]["message_id"],
        message_id.as_str(),
        "{written}"
    );
    assert_eq!(written["event_type"], "message.sent", "{written}");
    assert!(created["delivery_id"].as_str().is_some(), "{created}");
}
