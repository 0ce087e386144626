//! `/v1/messages` and `/v1/sandbox/inbound` through the router, with the workers running.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{
    store,
    testkit::{history, start},
    ErrorInfo, Status,
};

fn text(to: &str, body: &str) -> Value {
    json!({"to": to, "type": "text", "text": {"body": body}})
}

#[tokio::test]
async fn text_template_and_media_reach_read_in_order() {
    let m = start(1000).await;
    let bodies = [
        text("+14155550101", "Hello"),
        json!({"to": "+14155550102", "type": "template",
               "template": {"name": "order_update", "language": "en",
                            "variables": {"name": "Ada", "order": "A-1"}}}),
        json!({"to": "+14155550103", "type": "media", "reference": "crm-9",
               "media": {"kind": "image", "url": "https://cdn.example.com/a.png", "caption": "Look"}}),
    ];
    let mut ids = Vec::new();
    for body in bodies {
        let answer = m.v1("POST", "/v1/messages", Some(body)).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
        assert_eq!(answer.body["status"], "queued");
        assert!(answer.body["id"].as_str().unwrap().starts_with("msg_"));
        assert!(answer.body["contact_id"]
            .as_str()
            .unwrap()
            .starts_with("con_"));
        ids.push(answer.body["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        let done = m
            .poll(&format!("/v1/messages/{id}"), |b| b["status"] == "read")
            .await;
        assert_eq!(history(&done), ["queued", "sent", "delivered", "read"]);
        let times: Vec<time::OffsetDateTime> = done["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                let at = h["at"].as_str().unwrap();
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .unwrap()
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(done["error"], Value::Null);
    }
    let template = m.v1("GET", &format!("/v1/messages/{}", ids[1]), None).await;
    assert_eq!(template.body["type"], "template");
    assert_eq!(
        template.body["template"]["body"],
        "Hi Ada, order A-1 has shipped"
    );
    let media = m.v1("GET", &format!("/v1/messages/{}", ids[2]), None).await;
    assert_eq!(media.body["media"]["kind"], "image");
    assert_eq!(media.body["reference"], "crm-9");
    for event in ["message.sent", "message.delivered", "message.read"] {
        assert_eq!(m.count_events(event).await, 3, "{event}");
    }
    assert_eq!(m.count_events("contact.created").await, 3);

    // The list: newest first, filters, pagination.
    let all = m.v1("GET", "/v1/messages?limit=2", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.body["data"][0]["id"], ids[2].as_str());
    let next = all.body["next_cursor"].as_str().unwrap();
    let rest = m
        .v1("GET", &format!("/v1/messages?limit=2&cursor={next}"), None)
        .await;
    assert_eq!(rest.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["next_cursor"], Value::Null);
    let contact = template.body["contact_id"].as_str().unwrap();
    let by_contact = m
        .v1(
            "GET",
            &format!("/v1/messages?contact_id={contact}&status=read&direction=outbound"),
            None,
        )
        .await;
    assert_eq!(by_contact.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn test_numbers_behave_as_documented() {
    let m = start(1000).await;
    let mut ids = Vec::new();
    for to in ["+15550000001", "+15550000002", "+15550000003"] {
        let answer = m.v1("POST", "/v1/messages", Some(text(to, "hi"))).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        ids.push(answer.body["id"].as_str().unwrap().to_string());
    }
    let unreachable = m
        .poll(&format!("/v1/messages/{}", ids[0]), |b| {
            b["status"] == "failed"
        })
        .await;
    assert_eq!(unreachable["error"]["code"], "recipient_unreachable");
    assert_eq!(history(&unreachable), ["queued", "failed"]);
    let not_on_wa = m
        .poll(&format!("/v1/messages/{}", ids[2]), |b| {
            b["status"] == "failed"
        })
        .await;
    assert_eq!(not_on_wa["error"]["code"], "not_on_whatsapp");
    m.poll(&format!("/v1/messages/{}", ids[1]), |b| {
        b["status"] == "delivered"
    })
    .await;
    // Well past the read delay: still delivered.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let never_read = m.v1("GET", &format!("/v1/messages/{}", ids[1]), None).await;
    assert_eq!(never_read.body["status"], "delivered");
    assert_eq!(m.count_events("message.failed").await, 2);
}

#[tokio::test]
async fn status_never_moves_backwards() {
    let mut m = start(1000).await;
    // Park the workers so this test drives the transitions itself.
    m.workers = None;
    let answer = m
        .app
        .v1(
            &m.account,
            "POST",
            "/v1/messages",
            Some(text("+14155550101", "x")),
        )
        .await;
    let id = answer.body["id"].as_str().unwrap().to_string();
    let mut tx = crate::unit_of_work::UnitOfWork::begin(&m.app.state)
        .await
        .unwrap();
    let mut msg = store::get(&mut tx, &m.account, &id).await.unwrap().unwrap();
    let t = msg.created_at;
    assert!(
        store::transition(&mut tx, &mut msg, Status::Read, t + 2_000, None, None)
            .await
            .unwrap()
    );
    // A late delivery receipt, a late `sent` and a failure after read change nothing.
    assert!(
        !store::transition(&mut tx, &mut msg, Status::Delivered, t + 3_000, None, None)
            .await
            .unwrap()
    );
    assert!(
        !store::transition(&mut tx, &mut msg, Status::Sent, t + 3_000, None, None)
            .await
            .unwrap()
    );
    let error = ErrorInfo {
        code: "x".into(),
        message: "y".into(),
    };
    assert!(!store::transition(
        &mut tx,
        &mut msg,
        Status::Failed,
        t + 3_000,
        Some(&error),
        None
    )
    .await
    .unwrap());
    tx.commit().await.unwrap();
    let read = m
        .app
        .v1(&m.account, "GET", &format!("/v1/messages/{id}"), None)
        .await;
    assert_eq!(read.body["status"], "read");
    assert_eq!(history(&read.body), ["queued", "read"]);
    assert_eq!(m.count_events("message.read").await, 1);
    assert_eq!(m.count_events("message.delivered").await, 0);
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx() {
    let m = start(1000).await;
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"to": "+14155550101", "type": "template", "template": {"name": "nope", "language": "en"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_not_found",
        ),
        (
            json!({"to": "+14155550101", "type": "template",
                "template": {"name": "order_update", "language": "en", "variables": {"name": "Ada"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_variables",
        ),
        (
            json!({"to": "+14155550101", "type": "template",
                "template": {"name": "order_update", "language": "en",
                             "variables": {"name": "Ada", "order": "1", "coupon": "X"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unexpected_variables",
        ),
        (
            json!({"to": "+14155550101", "type": "template", "template": {"name": "order_update"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_language_required",
        ),
        (
            text("4155550101", "x"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone",
        ),
        (
            text("+14155550101", ""),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_text",
        ),
        (
            text("+14155550101", &"x".repeat(4097)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "text_too_long",
        ),
        (
            json!({"to": "+14155550101", "type": "media", "media": {"kind": "image", "url": "ftp://x/y"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_media_url",
        ),
        (
            json!({"to": "+14155550101", "type": "media", "media": {"kind": "gif", "url": "https://x.test/y"}}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"to": 14155550101_i64, "type": "text", "text": {"body": "x"}}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"to": "+14155550101", "type": "text", "text": {"body": 5}}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"to": "+14155550101", "type": "text"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"to": "+14155550101", "type": "text", "text": {"body": "x"}, "media": {"kind": "image", "url": "https://x.test"}}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"type": "text", "text": {"body": "x"}}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"to": "+14155550101", "contact_id": "con_x", "type": "text", "text": {"body": "x"}}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"contact_id": "con_missing", "type": "text", "text": {"body": "x"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "contact_not_found",
        ),
        (
            json!({"to": "+14155550101", "type": "sms", "text": {"body": "x"}}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            json!({"to": "+14155550101", "type": "text", "text": {"body": "x"}, "priority": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let answer = m.v1("POST", "/v1/messages", Some(body.clone())).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{body}");
        assert!(!answer.body["error"]["message"].as_str().unwrap().is_empty());
    }
    let missing = m
        .v1(
            "POST",
            "/v1/messages",
            Some(json!({"to": "+14155550101", "type": "template",
              "template": {"name": "appointment_reminder", "variables": {"name": "A"}}})),
        )
        .await;
    assert_eq!(
        missing.body["error"]["message"],
        "missing variables: date, time"
    );

    // An opted-out contact is not messaged, by number or by id.
    let contact = m
        .v1(
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "+14155550199", "opted_in": false})),
        )
        .await;
    let id = contact.body["id"].as_str().unwrap();
    for body in [
        text("+14155550199", "x"),
        json!({"contact_id": id, "type": "text", "text": {"body": "x"}}),
    ] {
        let answer = m.v1("POST", "/v1/messages", Some(body)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.code(), "contact_opted_out");
    }

    for (path, code) in [
        ("/v1/messages?limit=0", "invalid_limit"),
        ("/v1/messages?limit=201", "invalid_limit"),
        ("/v1/messages?status=lost", "invalid_query"),
        ("/v1/messages?direction=up", "invalid_query"),
        ("/v1/messages?limit=abc", "invalid_query"),
        ("/v1/messages?colour=red", "invalid_query"),
    ] {
        let answer = m.v1("GET", path, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(answer.code(), code, "{path}");
    }
    let missing = m.v1("GET", "/v1/messages/msg_nope", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    for (body, code) in [
        (json!({"from": "nope", "text": "hi"}), "invalid_phone"),
        (json!({"from": "+14155550101"}), "invalid_body"),
        (
            json!({"from": "+14155550101", "text": "hi", "button": {"id": "x"}}),
            "invalid_body",
        ),
        (
            json!({"from": "+14155550101", "button": {}}),
            "invalid_button",
        ),
        (json!({"from": "+14155550101", "text": 3}), "invalid_body"),
    ] {
        let answer = m
            .v1("POST", "/v1/sandbox/inbound", Some(body.clone()))
            .await;
        assert!(answer.status.is_client_error(), "{body}");
        assert_eq!(answer.code(), code, "{body}");
    }
}

#[tokio::test]
async fn inbound_creates_the_contact_and_emits_received() {
    let m = start(1000).await;
    let answer = m
        .v1(
            "POST",
            "/v1/sandbox/inbound",
            Some(json!({"from": "+14155550177", "text": "hello there"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
    assert_eq!(answer.body["direction"], "inbound");
    assert_eq!(answer.body["status"], "received");
    assert_eq!(answer.body["from"], "+14155550177");
    assert_eq!(answer.body["text"]["body"], "hello there");
    assert_eq!(history(&answer.body), ["received"]);
    let contact = answer.body["contact_id"].as_str().unwrap();
    let fetched = m.v1("GET", &format!("/v1/contacts/{contact}"), None).await;
    assert_eq!(fetched.body["phone"], "+14155550177");
    // Same transaction, same millisecond: the two events' ids do not order them.
    let mut types = m.event_types().await;
    types.sort();
    assert_eq!(types, ["contact.created", "message.received"]);
    let inbound = m.v1("GET", "/v1/messages?direction=inbound", None).await;
    assert_eq!(inbound.body["data"].as_array().unwrap().len(), 1);
    let metrics = m.app.state.metrics.render();
    assert!(
        metrics.contains("wiz_backend_messages_total{status=\"received\"} 1"),
        "{metrics}"
    );
}
