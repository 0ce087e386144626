//! Chatbot flows through the router: trigger, replies, pause/resume, handover, admin CRUD.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::messages::testkit::{start, Messaging};

async fn demo_flow_id(m: &Messaging) -> String {
    let flows = m.v1("GET", "/v1/chatbot/flows", None).await;
    assert_eq!(flows.status, StatusCode::OK);
    flows.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Support demo")
        .expect("demo flow seeded")["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn inbound(m: &Messaging, body: Value) {
    let answer = m.v1("POST", "/v1/sandbox/inbound", Some(body)).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.body);
}

async fn contact(m: &Messaging, id: &str) -> Value {
    m.v1("GET", &format!("/v1/contacts/{id}"), None).await.body
}

/// The bot's messages to a contact, oldest first.
async fn bot_texts(m: &Messaging, contact_id: &str) -> Vec<String> {
    let page = m
        .v1(
            "GET",
            &format!("/v1/messages?contact_id={contact_id}&direction=outbound"),
            None,
        )
        .await;
    let mut texts: Vec<String> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|msg| {
            let content = if msg["type"] == "interactive" {
                &msg["interactive"]
            } else {
                &msg["text"]
            };
            content["body"].as_str().unwrap().to_string()
        })
        .collect();
    texts.reverse();
    texts
}

#[tokio::test]
async fn trigger_reply_pause_resume_complete() {
    let m = start(1000).await;
    let flow = demo_flow_id(&m).await;
    let phone = "+14155550101";
    let triggered = m
        .v1(
            "POST",
            &format!("/v1/chatbot/flows/{flow}/trigger"),
            Some(json!({"to": phone, "variables": {"name": "Ada"}})),
        )
        .await;
    assert_eq!(
        triggered.status,
        StatusCode::ACCEPTED,
        "{:?}",
        triggered.body
    );
    assert_eq!(
        triggered.body["chatbot"],
        json!({"flow_id": flow, "step": "menu", "paused": false})
    );
    let contact_id = triggered.body["contact_id"].as_str().unwrap().to_string();
    let first = triggered.body["messages"][0].as_str().unwrap();
    let message = m
        .v1("GET", &format!("/v1/messages/{first}"), None)
        .await
        .body;
    assert_eq!(message["type"], "interactive");
    assert_eq!(message["interactive"]["body"], "Hi Ada! How can we help?");
    assert_eq!(message["interactive"]["buttons"][0]["id"], "track");
    assert_eq!(message["flow_id"], flow.as_str());
    m.poll(&format!("/v1/messages/{first}"), |b| b["status"] == "read")
        .await;

    let c = contact(&m, &contact_id).await;
    assert_eq!(c["chatbot"]["step"], "menu");
    assert_eq!(c["tags"], json!(["chatbot"]));

    // A tap on "Track my order".
    inbound(
        &m,
        json!({"from": phone, "button": {"id": "track", "text": "Track my order"}}),
    )
    .await;
    assert_eq!(
        contact(&m, &contact_id).await["chatbot"]["step"],
        "ask_order"
    );

    // A human takes over: the bot stays silent.
    let paused = m
        .v1(
            "POST",
            &format!("/v1/contacts/{contact_id}/chatbot/pause"),
            None,
        )
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{:?}", paused.body);
    assert_eq!(paused.body["chatbot"]["paused"], true);
    assert_eq!(m.count_events("chatbot.handover").await, 1);
    inbound(&m, json!({"from": phone, "text": "hello? A-1"})).await;
    assert_eq!(bot_texts(&m, &contact_id).await.len(), 2);
    assert_eq!(
        contact(&m, &contact_id).await["chatbot"]["step"],
        "ask_order"
    );
    let busy = m
        .v1(
            "POST",
            &format!("/v1/chatbot/flows/{flow}/trigger"),
            Some(json!({"contact_id": contact_id})),
        )
        .await;
    assert_eq!(busy.status, StatusCode::CONFLICT);
    assert_eq!(busy.code(), "chatbot_paused");

    let resumed = m
        .v1(
            "POST",
            &format!("/v1/contacts/{contact_id}/chatbot/resume"),
            None,
        )
        .await;
    assert_eq!(resumed.status, StatusCode::OK);
    assert_eq!(
        resumed.body["chatbot"],
        json!({"flow_id": flow, "step": "ask_order", "paused": false})
    );

    // The order number completes the flow.
    inbound(&m, json!({"from": phone, "text": "A-77"})).await;
    let c = contact(&m, &contact_id).await;
    assert_eq!(c["chatbot"], Value::Null);
    assert_eq!(c["attributes"]["last_order"], "A-77");
    assert_eq!(
        bot_texts(&m, &contact_id).await,
        [
            "Hi Ada! How can we help?",
            "Please send your order number.",
            "Thanks! Order A-77 is on its way. Anything else? Reply HELP."
        ]
    );
    // Not in a flow any more.
    let not_active = m
        .v1(
            "POST",
            &format!("/v1/contacts/{contact_id}/chatbot/pause"),
            None,
        )
        .await;
    assert_eq!(not_active.status, StatusCode::CONFLICT);
    assert_eq!(not_active.code(), "chatbot_not_active");
}

#[tokio::test]
async fn keywords_start_flows_and_handover_pauses() {
    let m = start(1000).await;
    let phone = "+14155550102";
    inbound(&m, json!({"from": phone, "text": "Help please"})).await;
    let page = m.v1("GET", "/v1/messages?direction=inbound", None).await;
    let contact_id = page.body["data"][0]["contact_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(contact(&m, &contact_id).await["chatbot"]["step"], "menu");
    // A reply matching nothing: the menu again.
    inbound(&m, json!({"from": phone, "text": "banana"})).await;
    assert_eq!(bot_texts(&m, &contact_id).await.len(), 2);
    // "talk to a human" typed as the button's title.
    inbound(&m, json!({"from": phone, "text": "Talk to a human"})).await;
    let c = contact(&m, &contact_id).await;
    assert_eq!(c["chatbot"]["step"], "handover");
    assert_eq!(c["chatbot"]["paused"], true);
    let handover: Vec<(String,)> =
        sqlx::query_as("SELECT data FROM events WHERE type = 'chatbot.handover'")
            .fetch_all(&m.app.state.db)
            .await
            .unwrap();
    assert_eq!(handover.len(), 1);
    let data: Value = serde_json::from_str(&handover[0].0).unwrap();
    assert_eq!(data["reason"], "flow");
    assert_eq!(data["contact"]["id"], contact_id.as_str());
    inbound(&m, json!({"from": phone, "text": "anyone?"})).await;
    assert_eq!(bot_texts(&m, &contact_id).await.len(), 3);
    // Resuming after the handover step ends the flow.
    let resumed = m
        .v1(
            "POST",
            &format!("/v1/contacts/{contact_id}/chatbot/resume"),
            None,
        )
        .await;
    assert_eq!(resumed.body["chatbot"], Value::Null);
}

#[tokio::test]
async fn trigger_errors() {
    let m = start(1000).await;
    let flow = demo_flow_id(&m).await;
    let path = format!("/v1/chatbot/flows/{flow}/trigger");
    let opted_out = m
        .v1(
            "POST",
            "/v1/contacts",
            Some(json!({"phone": "+14155550120", "opted_in": false})),
        )
        .await;
    let cases: Vec<(String, Value, StatusCode, &str)> = vec![
        (
            "/v1/chatbot/flows/flw_nope/trigger".into(),
            json!({"to": "+14155550101"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            path.clone(),
            json!({}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            path.clone(),
            json!({"to": "+1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone",
        ),
        (
            path.clone(),
            json!({"to": "+14155550101", "variables": {"a": [1]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_variables",
        ),
        (
            path.clone(),
            json!({"to": "+14155550101", "variables": "x"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            path.clone(),
            json!({"contact_id": opted_out.body["id"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "contact_opted_out",
        ),
        (
            path.clone(),
            json!({"contact_id": "con_nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "contact_not_found",
        ),
    ];
    for (path, body, status, code) in cases {
        let answer = m.v1("POST", &path, Some(body.clone())).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{body}");
    }
    for action in ["pause", "resume"] {
        let answer = m
            .v1(
                "POST",
                &format!("/v1/contacts/con_nope/chatbot/{action}"),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
    }
    let bad_limit = m.v1("GET", "/v1/chatbot/flows?limit=500", None).await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn admin_flows_crud_and_validation() {
    let m = start(1000).await;
    let console = m.app.demo_console().await;
    let listed = m.app.admin(&console, "GET", "/admin/flows", None).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);

    let flow = json!({"name": "Survey", "keywords": ["survey"], "start": "q1", "steps": [
        {"id": "q1", "message": {"text": "Rate us?", "buttons": [{"id": "good", "title": "Good"}, {"id": "bad", "title": "Bad"}]},
         "transitions": [{"button": "good", "next": "thanks"}, {"button": "bad", "next": "sorry"}]},
        {"id": "thanks", "message": {"text": "Thanks!"}, "actions": [{"type": "set_attribute", "key": "rating", "value": "good"}], "end": "complete"},
        {"id": "sorry", "message": {"text": "Sorry, a human will call."}, "actions": [{"type": "set_tag", "tag": "unhappy"}], "end": "handover"}
    ]});
    let created = m
        .app
        .admin(&console, "POST", "/admin/flows", Some(flow.clone()))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("flw_"));
    assert_eq!(created.body["steps"][1]["end"], "complete");

    let fetched = m
        .app
        .admin(&console, "GET", &format!("/admin/flows/{id}"), None)
        .await;
    assert_eq!(fetched.body, created.body);
    let renamed = m
        .app
        .admin(
            &console,
            "PATCH",
            &format!("/admin/flows/{id}"),
            Some(json!({"name": "Survey 2"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK);
    assert_eq!(renamed.body["name"], "Survey 2");
    let broken = m
        .app
        .admin(
            &console,
            "PATCH",
            &format!("/admin/flows/{id}"),
            Some(json!({"start": "nowhere"})),
        )
        .await;
    assert_eq!(broken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(broken.code(), "invalid_flow");

    let mut bad = flow.clone();
    bad["steps"][0]["transitions"][1]["next"] = json!("missing");
    let answer = m
        .app
        .admin(&console, "POST", "/admin/flows", Some(bad))
        .await;
    assert_eq!(answer.code(), "invalid_flow");
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing"));
    let mut bad = flow.clone();
    bad["steps"][0]["message"]["buttons"] = json!([{"id": "a", "title": "A"}, {"id": "b", "title": "B"},
        {"id": "c", "title": "C"}, {"id": "d", "title": "D"}]);
    assert_eq!(
        m.app
            .admin(&console, "POST", "/admin/flows", Some(bad))
            .await
            .code(),
        "invalid_flow"
    );
    let mut bad = flow.clone();
    bad["steps"][1]["actions"][0]["type"] = json!("launch_rockets");
    assert_eq!(
        m.app
            .admin(&console, "POST", "/admin/flows", Some(bad))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    // Another account's flow is invisible.
    let other = m.app.login("ops@shop.test", "password-shop").await;
    for method in ["GET", "DELETE"] {
        let answer = m
            .app
            .admin(&other, method, &format!("/admin/flows/{id}"), None)
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method}");
    }
    let deleted = m
        .app
        .admin(&console, "DELETE", &format!("/admin/flows/{id}"), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = m
        .app
        .admin(&console, "GET", &format!("/admin/flows/{id}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}
