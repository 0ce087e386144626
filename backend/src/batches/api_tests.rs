//! Bulk sends through the router, with the workers running.

use std::collections::HashSet;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::{
    channel::worker,
    messages::testkit::{start, wait_for, Messaging},
};

fn recipients(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"to": format!("+1415600{i:04}"), "variables": {"name": format!("P{i}")},
                   "reference": format!("crm-{i}")})
        })
        .collect()
}

fn counts_add_up(batch: &Value) -> bool {
    let c = &batch["counts"];
    let sum: i64 = ["queued", "sent", "delivered", "read", "failed"]
        .iter()
        .map(|k| c[k].as_i64().unwrap())
        .sum();
    sum == batch["total"].as_i64().unwrap()
}

/// Polls the batch until `done`, checking at every poll that the counts add up.
async fn follow(m: &Messaging, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/v1/batches/{id}");
    wait_for(&path, || async {
        let batch = m.v1("GET", &path, None).await.body;
        assert!(counts_add_up(&batch), "{batch}");
        done(&batch).then_some(batch)
    })
    .await
}

#[tokio::test]
async fn bulk_validates_each_recipient_and_completes_once() {
    let m = start(2000).await;
    let mut list = recipients(60);
    list[3] = json!({"to": "12345", "variables": {"name": "x"}});
    list[7] = json!({"to": "+14156000001", "variables": {"name": "dup"}}); // same as [1]
    list[9] = json!({"to": "+14156009999", "variables": {}});
    list[11] = json!({"to": "+14156009998", "variables": {"name": "x", "extra": 1}});
    list[13] = json!({"to": 5});
    list[15] = json!({"to": "+15550000001", "variables": {"name": "fails"}, "reference": "crm-15"});
    let body = json!({"type": "text", "text": {"body": "Hi {{name}}"}, "recipients": list});

    let dry = m
        .v1(
            "POST",
            "/v1/messages/bulk",
            Some(json!({"dry_run": true, "type": "text",
            "text": {"body": "Hi {{name}}"}, "recipients": body["recipients"]})),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{:?}", dry.body);
    assert_eq!(dry.body["batch_id"], Value::Null);
    assert_eq!(dry.body["accepted"], 55);
    let stored: (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM messages")
        .fetch_one(&m.app.state.db)
        .await
        .unwrap();
    assert_eq!(stored.0, 0, "a dry run stores nothing");

    let answer = m.v1("POST", "/v1/messages/bulk", Some(body)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.body["accepted"], 55);
    let rejected: Vec<(u64, String)> = answer.body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (3, "invalid_phone".to_string()),
            (7, "duplicate_recipient".into()),
            (9, "missing_variables".into()),
            (11, "unexpected_variables".into()),
            (13, "invalid_recipient".into())
        ]
    );
    assert_eq!(answer.body["rejected"], dry.body["rejected"]);
    let id = answer.body["batch_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("bat_"));

    let done = follow(&m, &id, |b| b["status"] == "completed").await;
    assert_eq!(done["total"], 55);
    assert_eq!(done["counts"]["failed"], 1);
    assert_eq!(done["counts"]["queued"], 0);
    assert_eq!(done["counts"]["sent"], 0);
    assert_eq!(done["progress"], 1.0);
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert_eq!(m.count_events("batch.completed").await, 1);

    // Recipient order, with index and reference, across pages.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = m
            .v1(
                "GET",
                &format!("/v1/batches/{id}/messages?limit=20&cursor={cursor}"),
                None,
            )
            .await;
        assert_eq!(page.status, StatusCode::OK);
        for msg in page.body["data"].as_array().unwrap() {
            seen.push(msg["index"].as_u64().unwrap());
            assert_eq!(msg["reference"], json!(format!("crm-{}", msg["index"])));
            assert_eq!(msg["batch_id"], id.as_str());
            assert!(msg["contact_id"].is_string(), "linked when sent");
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 55);
    let first = m
        .v1("GET", &format!("/v1/batches/{id}/messages?limit=1"), None)
        .await;
    assert_eq!(first.body["data"][0]["text"]["body"], "Hi P0");
    let failed = m
        .v1(
            "GET",
            &format!("/v1/batches/{id}/messages?status=failed"),
            None,
        )
        .await;
    assert_eq!(
        failed.body["data"][0]["error"]["code"],
        "recipient_unreachable"
    );
    let filtered = m
        .v1(
            "GET",
            &format!("/v1/messages?batch_id={id}&limit=200"),
            None,
        )
        .await;
    assert_eq!(filtered.body["data"].as_array().unwrap().len(), 55);
}

#[tokio::test]
async fn bulk_template_and_request_level_errors() {
    let m = start(2000).await;
    let ok = m
        .v1(
            "POST",
            "/v1/messages/bulk",
            Some(json!({"type": "template",
            "template": {"name": "order_update", "language": "es"},
            "recipients": [{"to": "+14155550101", "variables": {"name": "Ana", "order": 7}}]})),
        )
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{:?}", ok.body);
    let id = ok.body["batch_id"].as_str().unwrap();
    let page = m
        .v1("GET", &format!("/v1/batches/{id}/messages"), None)
        .await;
    assert_eq!(
        page.body["data"][0]["template"]["body"],
        "Hola Ana, tu pedido 7 ha sido enviado"
    );
    assert_eq!(page.body["data"][0]["template"]["variables"]["order"], "7");

    let one = |to: &str| json!([{"to": to}]);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"type": "text", "text": {"body": "x"}, "recipients": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_recipients",
        ),
        (
            json!({"type": "text", "text": {"body": "x"}, "recipients": recipients(10_001)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_recipients",
        ),
        (
            json!({"type": "template", "template": {"name": "nope", "language": "en"}, "recipients": one("+14155550101")}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_not_found",
        ),
        (
            json!({"type": "text", "recipients": one("+14155550101")}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"type": "text", "text": {"body": "x"}, "recipients": "all"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"type": "media", "recipients": one("+14155550101")}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"type": "text", "text": {"body": "Hi {{name"}, "recipients": one("+14155550101")}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_text",
        ),
        (
            json!({"type": "text", "text": {"body": "x"}, "recipients": one("bad")}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_valid_recipients",
        ),
        (
            json!({"type": "text", "text": {"body": "x"}, "recipients": one("+14155550101"), "dry_run": "yes"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let answer = m.v1("POST", "/v1/messages/bulk", Some(body)).await;
        assert_eq!(answer.status, status, "{code}: {:?}", answer.body);
        assert_eq!(answer.code(), code);
    }
    for path in ["/v1/batches/bat_nope", "/v1/batches/bat_nope/messages"] {
        assert_eq!(m.v1("GET", path, None).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        m.v1("POST", "/v1/batches/bat_nope/cancel", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let bad_status = m
        .v1(
            "GET",
            &format!("/v1/batches/{id}/messages?status=nope"),
            None,
        )
        .await;
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);

    // An opted-out contact is rejected by index.
    m.v1(
        "POST",
        "/v1/contacts",
        Some(json!({"phone": "+14155550111", "opted_in": false})),
    )
    .await;
    let answer = m
        .v1(
            "POST",
            "/v1/messages/bulk",
            Some(json!({"type": "text", "text": {"body": "x"},
            "recipients": [{"to": "+14155550112"}, {"to": "+14155550111"}]})),
        )
        .await;
    assert_eq!(
        answer.body["rejected"],
        json!([{"index": 1, "code": "contact_opted_out",
        "message": "to: this contact opted out of messages"}])
    );
}

#[tokio::test]
async fn cancel_fails_what_was_not_sent() {
    // 50 messages per second: a 200-recipient batch takes 4 s, plenty of time to cancel.
    let m = start(50).await;
    let answer = m
        .v1(
            "POST",
            "/v1/messages/bulk",
            Some(json!({"type": "text", "text": {"body": "Hi {{name}}"},
            "recipients": recipients(200)})),
        )
        .await;
    let id = answer.body["batch_id"].as_str().unwrap().to_string();
    follow(&m, &id, |b| b["counts"]["read"].as_i64().unwrap() > 0).await;
    let cancelled = m
        .v1("POST", &format!("/v1/batches/{id}/cancel"), None)
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    assert!(counts_add_up(&cancelled.body));
    let failed_now = cancelled.body["counts"]["failed"].as_i64().unwrap();
    assert!(failed_now > 100, "{}", cancelled.body);
    // In-flight ones finish; nothing stays queued; no cancelled message is ever sent.
    let settled = follow(&m, &id, |b| {
        b["counts"]["queued"] == 0 && b["counts"]["sent"] == 0 && b["counts"]["delivered"] == 0
    })
    .await;
    assert_eq!(settled["status"], "cancelled");
    assert_eq!(settled["counts"]["failed"], failed_now);
    let page = m
        .v1(
            "GET",
            &format!("/v1/batches/{id}/messages?status=failed&limit=1"),
            None,
        )
        .await;
    assert_eq!(page.body["data"][0]["error"]["code"], "batch_cancelled");
    let sent: (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM messages WHERE batch_id = $1 AND error_code = 'batch_cancelled' \
         AND (provider_message_id IS NOT NULL OR sent_at IS NOT NULL)",
    )
    .bind(&id)
    .fetch_one(&m.app.state.db)
    .await
    .unwrap();
    assert_eq!(sent.0, 0);
    assert_eq!(m.count_events("batch.completed").await, 1);
    // Again: nothing changes.
    let again = m
        .v1("POST", &format!("/v1/batches/{id}/cancel"), None)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(m.count_events("batch.completed").await, 1);
}

#[tokio::test]
async fn a_restart_resumes_without_sending_twice() {
    let mut m = start(100).await;
    let answer = m
        .v1(
            "POST",
            "/v1/messages/bulk",
            Some(json!({"type": "text", "text": {"body": "Hi {{name}}"},
            "recipients": recipients(150)})),
        )
        .await;
    let id = answer.body["batch_id"].as_str().unwrap().to_string();
    follow(&m, &id, |b| b["counts"]["read"].as_i64().unwrap() >= 20).await;
    // "Crash": stop the workers mid-batch, and leave one claim without the provider's answer,
    // as if the process died between claiming and recording.
    m.workers = None;
    let interrupted: (String,) = sqlx::query_as(
        "SELECT id FROM messages WHERE batch_id = $1 AND dispatch_at IS NOT NULL ORDER BY id LIMIT 1",
    )
    .bind(&id)
    .fetch_one(&m.app.state.db)
    .await
    .unwrap();
    sqlx::query("UPDATE messages SET dispatch_at = NULL, dispatched_at = $1 WHERE id = $2")
        .bind(crate::clock::now_ms() - 60_000)
        .bind(&interrupted.0)
        .execute(&m.app.state.db)
        .await
        .unwrap();
    let paused = m.v1("GET", &format!("/v1/batches/{id}"), None).await.body;
    assert_eq!(paused["status"], "running");

    // "Restart": new workers on the same database.
    m.workers = Some(worker::start(&m.app.state));
    follow(&m, &id, |b| b["status"] == "completed").await;
    // Completed once every message is delivered (or failed); read receipts may still follow.
    follow(&m, &id, |b| b["counts"]["read"] == 150).await;
    let per_message: Vec<(String, i64)> =
        sqlx::query_as("SELECT data, CAST(1 AS BIGINT) FROM events WHERE type = 'message.sent'")
            .fetch_all(&m.app.state.db)
            .await
            .unwrap();
    let mut ids = HashSet::new();
    for (data, _) in &per_message {
        let data: Value = serde_json::from_str(data).unwrap();
        assert!(
            ids.insert(data["id"].as_str().unwrap().to_string()),
            "sent twice: {data}"
        );
    }
    let odd: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, status FROM messages WHERE sent_at IS NULL OR delivered_at IS NULL",
    )
    .fetch_all(&m.app.state.db)
    .await
    .unwrap();
    assert!(odd.is_empty(), "{odd:?}");
    assert_eq!(ids.len(), 150);
    let phones: (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(DISTINCT phone) AS BIGINT) FROM messages WHERE batch_id = $1",
    )
    .bind(&id)
    .fetch_one(&m.app.state.db)
    .await
    .unwrap();
    assert_eq!(phones.0, 150);
}
