//! The messaging API (SPEC §7, issue 3) across the real binaries, through the gateway: single
//! messages and their lifecycle on the simulated channel, bulk sends (and a backend crash in the
//! middle of one), idempotent retries, chatbot flows driven by sandbox inbound messages, and bad
//! input on every messaging route.

use std::{
    cell::Cell,
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{eventually, Api, Auth, Options, Stack};

/// Limits high enough that polling never runs into the gateway's quotas.
fn roomy_key() -> Value {
    json!({"name": "messaging tests", "rate_limit_per_minute": 10000, "daily_limit": 100000})
}

/// A stack with `options` and an API client whose key has room for many calls.
async fn stack_with(options: Options) -> (Stack, Api) {
    let stack = Stack::start_with(options).await;
    let admin = stack.admin().await;
    let key = admin.create_key(roomy_key()).await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    (stack, api)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// Position of a status in the lifecycle; a message's rank never goes down.
fn rank(status: &str) -> u8 {
    match status {
        "queued" | "received" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "failed" => 4,
        other => panic!("unknown message status {other:?}"),
    }
}

/// Asserts a message's `history`: statuses in lifecycle order, each once, times non-decreasing
/// (RFC 3339 with fixed width, so text order is time order), ending at the current status.
/// Returns the statuses.
#[track_caller]
fn check_history(message: &Value) -> Vec<String> {
    let history = message["history"].as_array().expect("history array");
    let statuses: Vec<String> = history.iter().map(|h| text(&h["status"])).collect();
    let times: Vec<String> = history.iter().map(|h| text(&h["at"])).collect();
    assert!(
        statuses.windows(2).all(|w| rank(&w[0]) < rank(&w[1])),
        "history out of lifecycle order: {message}"
    );
    assert!(
        times.iter().all(|t| t.len() == 24 && t.ends_with('Z')),
        "history times are RFC 3339 with milliseconds: {message}"
    );
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "history times go backwards: {message}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        message["status"].as_str(),
        "history ends at the current status: {message}"
    );
    statuses
}

/// Polls `GET /v1/messages/{id}` until its status is `target` (or failed, when `target` is
/// failed), asserting at every poll that the status never moves backwards and the history stays
/// consistent. Returns the message as last seen.
async fn follow(api: &Api, id: &str, target: &str) -> Value {
    let path = format!("/v1/messages/{id}");
    let last = Cell::new(0u8);
    let what = format!("message {id} to reach {target}");
    eventually(&what, Duration::from_secs(10), || {
        let (path, last) = (path.clone(), &last);
        async move {
            let reply = api.get(&path).await;
            let message = reply.expect(200).clone();
            let status = text(&message["status"]);
            let now = rank(&status);
            assert!(
                now >= last.get(),
                "status moved backwards to {status}: {message}"
            );
            last.set(now);
            check_history(&message);
            if status == "failed" && target != "failed" {
                panic!("message failed on its way to {target}: {message}");
            }
            (status == target).then_some(message)
        }
    })
    .await
}

/// Every item of a list, following `next_cursor` (path must already carry a query string).
async fn page_all(api: &Api, path: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_string(),
        };
        let reply = api.get(&url).await;
        let body = reply.expect(200);
        let data = body["data"].as_array().expect("data array");
        items.extend(data.iter().cloned());
        pages += 1;
        assert!(pages < 1000, "pagination does not end");
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert!(!data.is_empty(), "a page with a next_cursor has items");
                cursor = Some(next.to_string());
            }
            None => return items,
        }
    }
}

/// Polls `GET /v1/batches/{id}` until it is no longer running, asserting at EVERY poll that the
/// counts add up to `total` and that the finished share never shrinks. Returns the final batch
/// and the number of polls.
async fn follow_batch(api: &Api, id: &str, timeout: Duration) -> (Value, usize) {
    let path = format!("/v1/batches/{id}");
    let mut polls = 0usize;
    let done_before = Cell::new(0i64);
    let batch = eventually("the batch to finish", timeout, || {
        let (path, done_before) = (path.clone(), &done_before);
        polls += 1;
        async move {
            let reply = api.get(&path).await;
            let batch = reply.expect(200).clone();
            let counts = &batch["counts"];
            let n = |s: &str| counts[s].as_i64().unwrap_or_else(|| panic!("counts.{s}"));
            let sum = n("queued") + n("sent") + n("delivered") + n("read") + n("failed");
            assert_eq!(
                sum,
                batch["total"].as_i64().unwrap(),
                "counts do not add up: {batch}"
            );
            let done = n("delivered") + n("read") + n("failed");
            assert!(
                done >= done_before.get(),
                "finished messages went down: {batch}"
            );
            done_before.set(done);
            (batch["status"] != "running").then_some(batch)
        }
    })
    .await;
    (batch, polls)
}

#[tokio::test]
async fn text_template_and_media_reach_read_and_test_numbers_fail_as_documented() {
    let (_stack, api) = stack_with(Options::default()).await;

    let sends = [
        (
            "+14155550101",
            json!({"type": "text", "text": {"body": "Hello from the e2e test"}}),
        ),
        (
            "+14155550102",
            json!({"type": "template", "template": {"name": "order_update", "language": "en",
                   "variables": {"name": "Ada", "order": "A-1"}}}),
        ),
        (
            "+14155550103",
            json!({"type": "media", "media": {"kind": "image",
                   "url": "https://cdn.example.com/a.png", "caption": "your receipt"}}),
        ),
        (
            "+15550000001",
            json!({"type": "text", "text": {"body": "unreachable"}}),
        ),
        (
            "+15550000003",
            json!({"type": "text", "text": {"body": "not on whatsapp"}}),
        ),
        (
            "+15550000002",
            json!({"type": "text", "text": {"body": "never read"}}),
        ),
    ];
    let mut ids = Vec::new();
    for (to, body) in sends {
        let mut body = body;
        body["to"] = json!(to);
        let reply = api.post("/v1/messages", body).await;
        let accepted = reply.expect(202);
        assert_eq!(accepted["status"], "queued", "{accepted}");
        assert_eq!(accepted["to"], to);
        assert_eq!(accepted["direction"], "outbound");
        assert!(text(&accepted["id"]).starts_with("msg_"), "{accepted}");
        assert!(
            text(&accepted["contact_id"]).starts_with("con_"),
            "{accepted}"
        );
        assert_eq!(check_history(accepted), ["queued"]);
        ids.push(text(&accepted["id"]));
    }

    // Text, template and media all go queued → sent → delivered → read.
    for id in &ids[..3] {
        let message = follow(&api, id, "read").await;
        assert_eq!(
            check_history(&message),
            ["queued", "sent", "delivered", "read"],
            "{message}"
        );
        assert_eq!(message["error"], Value::Null);
    }
    let template = api.get(&format!("/v1/messages/{}", ids[1])).await;
    let template = template.expect(200);
    assert_eq!(template["type"], "template");
    assert_eq!(
        template["template"]["body"], "Hi Ada, order A-1 has shipped",
        "{template}"
    );
    let media = api.get(&format!("/v1/messages/{}", ids[2])).await;
    let media = media.expect(200);
    assert_eq!(media["type"], "media");
    assert_eq!(media["media"]["kind"], "image");
    assert_eq!(media["media"]["caption"], "your receipt");

    // The failing test numbers fail with their documented reasons.
    for (id, code) in [
        (&ids[3], "recipient_unreachable"),
        (&ids[4], "not_on_whatsapp"),
    ] {
        let message = follow(&api, id, "failed").await;
        assert_eq!(message["error"]["code"], code, "{message}");
        assert!(
            message["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{message}"
        );
        assert_eq!(check_history(&message), ["queued", "failed"]);
    }
    let failed = api.get("/v1/messages?status=failed").await;
    let failed: HashSet<String> = failed.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| text(&m["id"]))
        .collect();
    assert_eq!(failed, HashSet::from([ids[3].clone(), ids[4].clone()]));

    // +15550000002 is delivered and then stays there. A message sent after it reached
    // `delivered` goes all the way to `read`; by then any read report for the first one (due
    // earlier on the same timeline) would have been applied too.
    let never_read = follow(&api, &ids[5], "delivered").await;
    assert_eq!(check_history(&never_read), ["queued", "sent", "delivered"]);
    let sentinel = api
        .post(
            "/v1/messages",
            json!({"to": "+14155550104", "type": "text", "text": {"body": "sentinel"}}),
        )
        .await;
    let sentinel = text(&sentinel.expect(202)["id"]);
    follow(&api, &sentinel, "read").await;
    let still = api.get(&format!("/v1/messages/{}", ids[5])).await;
    let still = still.expect(200);
    assert_eq!(still["status"], "delivered", "{still}");
    assert_eq!(check_history(still), ["queued", "sent", "delivered"]);
}

/// One bulk recipient with the `order_update` variables.
fn recipient(phone: &str, i: usize) -> Value {
    json!({"to": phone, "variables": {"name": format!("N{i}"), "order": format!("O-{i}")},
           "reference": format!("crm-{i}")})
}

fn phone(i: usize) -> String {
    format!("+1202555{i:04}")
}

#[tokio::test]
async fn bulk_of_1000_rejects_bad_recipients_by_index_and_delivers_the_rest_exactly_once() {
    let (_stack, api) =
        stack_with(Options::default().backend("WIZ_BACKEND__CHANNEL__RATE_PER_SECOND", "1000"))
            .await;

    // 1,000 valid recipients, and four invalid ones slipped in at known places.
    let mut recipients: Vec<Value> = (0..1000).map(|i| recipient(&phone(i), i)).collect();
    let bad: [(usize, Value, &str); 4] = [
        (
            10,
            json!({"to": "12345", "variables": {"name": "x", "order": "y"}}),
            "invalid_phone",
        ),
        (
            400,
            json!({"to": "+13035550001", "variables": {"name": "only a name"}}),
            "missing_variables",
        ),
        (700, recipient(&phone(3), 3), "duplicate_recipient"),
        (
            900,
            json!({"to": "+13035550002", "variables": {"name": "a", "order": "b", "extra": "c"}}),
            "unexpected_variables",
        ),
    ];
    for (index, value, _) in &bad {
        recipients.insert(*index, value.clone());
    }
    assert_eq!(recipients.len(), 1004);
    // Where each valid recipient ended up in the request.
    let position: HashMap<String, usize> = recipients
        .iter()
        .enumerate()
        .filter(|(i, _)| !bad.iter().any(|(b, _, _)| b == i))
        .map(|(i, r)| (text(&r["to"]), i))
        .collect();
    assert_eq!(position.len(), 1000);

    let reply = api
        .post(
            "/v1/messages/bulk",
            json!({"type": "template", "template": {"name": "order_update", "language": "en"},
                   "recipients": recipients}),
        )
        .await;
    let accepted = reply.expect(202).clone();
    assert_eq!(accepted["accepted"], 1000, "{accepted}");
    let batch_id = text(&accepted["batch_id"]);
    assert!(batch_id.starts_with("bat_"), "{accepted}");
    let rejected = accepted["rejected"].as_array().unwrap();
    let got: Vec<(u64, String)> = rejected
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), text(&r["code"])))
        .collect();
    let want: Vec<(u64, String)> = bad
        .iter()
        .map(|(i, _, code)| (*i as u64, code.to_string()))
        .collect();
    assert_eq!(got, want, "{accepted}");
    assert!(
        rejected
            .iter()
            .all(|r| r["message"].as_str().is_some_and(|m| !m.is_empty())),
        "{accepted}"
    );
    assert!(
        text(&rejected[1]["message"]).contains("order"),
        "the missing variable is named: {}",
        rejected[1]
    );
    assert!(
        text(&rejected[3]["message"]).contains("extra"),
        "the extra variable is named: {}",
        rejected[3]
    );

    let (batch, polls) = follow_batch(&api, &batch_id, Duration::from_secs(25)).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["total"], 1000);
    assert_eq!(batch["type"], "template");
    assert_eq!(batch["counts"]["queued"], 0, "{batch}");
    assert_eq!(batch["counts"]["sent"], 0, "{batch}");
    assert_eq!(batch["counts"]["failed"], 0, "{batch}");
    assert_eq!(batch["progress"], 1.0, "{batch}");
    assert!(batch["started_at"].is_string() && batch["finished_at"].is_string());
    assert!(polls > 1, "the batch was watched while running");

    // The batch's message list pages through every recipient, in request order, once each.
    let listed = page_all(&api, &format!("/v1/batches/{batch_id}/messages?limit=200")).await;
    assert_eq!(listed.len(), 1000);
    let mut seen = HashSet::new();
    let mut last_index = -1i64;
    for message in &listed {
        let to = text(&message["to"]);
        assert!(seen.insert(to.clone()), "{to} got two messages");
        let index = message["index"].as_i64().unwrap();
        assert!(index > last_index, "batch messages in request order");
        last_index = index;
        assert_eq!(position[&to] as i64, index, "{message}");
        let i: usize = to[8..].parse().unwrap();
        assert_eq!(
            message["template"]["body"],
            format!("Hi N{i}, order O-{i} has shipped"),
            "{message}"
        );
        assert_eq!(message["reference"], format!("crm-{i}"));
        assert_eq!(message["batch_id"], batch_id.as_str());
        assert!(
            matches!(message["status"].as_str(), Some("delivered" | "read")),
            "{message}"
        );
        assert!(
            text(&message["contact_id"]).starts_with("con_"),
            "{message}"
        );
        check_history(message);
    }

    // The account's message list filtered by batch agrees: 1,000 messages, one per recipient.
    let by_filter = page_all(&api, &format!("/v1/messages?batch_id={batch_id}&limit=200")).await;
    assert_eq!(by_filter.len(), 1000);
    let phones: HashSet<String> = by_filter.iter().map(|m| text(&m["to"])).collect();
    assert_eq!(phones, seen);
}

#[tokio::test]
async fn a_batch_survives_a_backend_crash_and_sends_nobody_twice() {
    let (mut stack, api) =
        stack_with(Options::default().backend("WIZ_BACKEND__CHANNEL__RATE_PER_SECOND", "50")).await;
    let recipients: Vec<Value> = (0..300)
        .map(|i| json!({"to": phone(i), "variables": {"n": i}}))
        .collect();
    let reply = api
        .post(
            "/v1/messages/bulk",
            json!({"type": "text", "text": {"body": "Message {{n}}"}, "recipients": recipients}),
        )
        .await;
    let accepted = reply.expect(202).clone();
    assert_eq!(accepted["accepted"], 300, "{accepted}");
    let batch_id = text(&accepted["batch_id"]);
    let path = format!("/v1/batches/{batch_id}");

    // Crash once some, but far from all, were handed to the channel.
    let before = eventually(
        "a part of the batch to be sent",
        Duration::from_secs(10),
        || async {
            let batch = api.get(&path).await.expect(200).clone();
            let queued = batch["counts"]["queued"].as_i64().unwrap();
            (queued <= 250).then_some(batch)
        },
    )
    .await;
    // What had already left, just before the crash.
    let listed = page_all(&api, &format!("/v1/batches/{batch_id}/messages?limit=200")).await;
    let gone_before: HashMap<String, Value> = listed
        .into_iter()
        .filter(|m| m["status"] != "queued")
        .map(|m| (text(&m["id"]), m["history"].clone()))
        .collect();
    stack.kill_backend();
    assert!(!gone_before.is_empty());
    assert_eq!(before["status"], "running", "killed mid-batch: {before}");
    assert!(
        before["counts"]["queued"].as_i64().unwrap() > 50,
        "killed mid-batch: {before}"
    );

    stack.start_backend().await;
    let (batch, _) = follow_batch(&api, &batch_id, Duration::from_secs(25)).await;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["total"], 300);
    assert_eq!(batch["counts"]["failed"], 0, "{batch}");

    // Exactly one message per recipient, each sent once (one `sent` in its history).
    let messages = page_all(&api, &format!("/v1/messages?batch_id={batch_id}&limit=200")).await;
    assert_eq!(messages.len(), 300);
    let mut per_phone: HashMap<String, usize> = HashMap::new();
    for message in &messages {
        *per_phone.entry(text(&message["to"])).or_default() += 1;
        let history = check_history(message);
        assert_eq!(
            history.iter().filter(|s| *s == "sent").count(),
            1,
            "{message}"
        );
        let i: usize = text(&message["to"])[8..].parse().unwrap();
        assert_eq!(message["text"]["body"], format!("Message {i}"));
    }
    assert_eq!(per_phone.len(), 300);
    // Resumed where it was: what had left before the crash kept its history (it was not sent
    // again), and only moved on from there.
    for message in &messages {
        if let Some(history) = gone_before.get(&text(&message["id"])) {
            let now = message["history"].as_array().unwrap();
            let then = history.as_array().unwrap();
            assert_eq!(&now[..then.len()], &then[..], "{message}");
        }
    }
    assert!(per_phone.values().all(|&n| n == 1), "{per_phone:?}");
    let listed = page_all(&api, &format!("/v1/batches/{batch_id}/messages?limit=200")).await;
    assert_eq!(listed.len(), 300);
    // And nothing outside the batch went to those numbers.
    let all = page_all(&api, "/v1/messages?limit=200").await;
    assert_eq!(all.len(), 300, "no stray messages");
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_send_one_message() {
    let (mut stack, api) = stack_with(Options::default()).await;
    let body = json!({"to": "+14155550160", "type": "text", "text": {"body": "exactly once"}});
    let post = |body: Value, key: &'static str| {
        let api = api.clone();
        async move {
            Api::send(
                api.request(Method::POST, "/v1/messages", Auth::Bearer)
                    .header("idempotency-key", key)
                    .json(&body),
            )
            .await
        }
    };
    let replies = join_all((0..20).map(|_| post(body.clone(), "order-42-confirmation"))).await;
    let mut ids = HashSet::new();
    let mut replayed = 0;
    for reply in &replies {
        let message = reply.expect(202);
        assert_eq!(message["status"], "queued", "{message}");
        ids.insert(text(&message["id"]));
        if reply.header("idempotent-replayed") == Some("true") {
            replayed += 1;
        }
    }
    assert_eq!(ids.len(), 1, "every retry got the first answer: {ids:?}");
    assert_eq!(replayed, 19, "one request ran, nineteen were replayed");
    let id = ids.into_iter().next().unwrap();
    let contact_id = text(&replies[0].body["contact_id"]);

    // A later retry gets the same answer too, even after a backend restart (the answers are
    // stored with the data, not in memory).
    let restarting = Instant::now();
    stack.restart_backend().await;
    // SIGTERM is prompt: the gateway's key-sync long poll (up to 30 s) does not hold it up.
    assert!(
        restarting.elapsed() < Duration::from_secs(5),
        "graceful restart took {:?}",
        restarting.elapsed()
    );
    let again = post(body.clone(), "order-42-confirmation").await;
    assert_eq!(again.expect(202)["id"], id.as_str());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let messages = page_all(
        &api,
        &format!("/v1/messages?contact_id={contact_id}&limit=200"),
    )
    .await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["id"], id.as_str());
    let contacts = api.get("/v1/contacts?q=%2B14155550160").await;
    assert_eq!(contacts.expect(200)["data"].as_array().unwrap().len(), 1);

    // Same key, another body: refused, nothing sent.
    let other = json!({"to": "+14155550160", "type": "text", "text": {"body": "something else"}});
    post(other, "order-42-confirmation")
        .await
        .expect_error(422, "idempotency_key_reused");
    let messages = page_all(
        &api,
        &format!("/v1/messages?contact_id={contact_id}&limit=200"),
    )
    .await;
    assert_eq!(messages.len(), 1);

    // The one message goes through the channel like any other.
    follow(&api, &id, "read").await;
}

/// The contact's outbound messages, newest first.
async fn outbound(api: &Api, contact_id: &str) -> Vec<Value> {
    page_all(
        api,
        &format!("/v1/messages?contact_id={contact_id}&direction=outbound&limit=200"),
    )
    .await
}

async fn chatbot_state(api: &Api, contact_id: &str) -> Value {
    let contact = api.get(&format!("/v1/contacts/{contact_id}")).await;
    contact.expect(200)["chatbot"].clone()
}

/// The text a bot message carries (plain text or the body of a message with buttons).
fn bot_text(message: &Value) -> String {
    match message["type"].as_str() {
        Some("interactive") => text(&message["interactive"]["body"]),
        _ => text(&message["text"]["body"]),
    }
}

#[tokio::test]
async fn the_demo_flow_is_triggered_answered_paused_resumed_and_completed() {
    let (_stack, api) = stack_with(Options::default()).await;
    let flows = api.get("/v1/chatbot/flows").await;
    let flows = flows.expect(200)["data"].as_array().unwrap().clone();
    let demo = flows
        .iter()
        .find(|f| f["name"] == "Support demo")
        .unwrap_or_else(|| panic!("the demo flow is seeded: {flows:?}"));
    let flow_id = text(&demo["id"]);
    assert!(flow_id.starts_with("flw_"));
    assert_eq!(demo["start"], "menu");

    let phone = "+14155550150";
    let contact = api
        .post("/v1/contacts", json!({"phone": phone, "name": "Grace"}))
        .await;
    let contact_id = text(&contact.expect(201)["id"]);
    assert_eq!(chatbot_state(&api, &contact_id).await, Value::Null);

    // Trigger: the contact enters the menu and gets its buttons.
    let trigger = api
        .post(
            &format!("/v1/chatbot/flows/{flow_id}/trigger"),
            json!({"contact_id": contact_id, "variables": {}}),
        )
        .await;
    let trigger = trigger.expect(202).clone();
    let menu = json!({"flow_id": flow_id, "step": "menu", "paused": false});
    assert_eq!(trigger["chatbot"], menu, "{trigger}");
    assert_eq!(trigger["messages"].as_array().unwrap().len(), 1);
    let contact = api.get(&format!("/v1/contacts/{contact_id}")).await;
    let contact = contact.expect(200);
    assert_eq!(contact["chatbot"], menu);
    assert!(
        contact["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("chatbot")),
        "the menu step tags the contact: {contact}"
    );
    let sent = outbound(&api, &contact_id).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["type"], "interactive");
    assert_eq!(sent[0]["flow_id"], flow_id.as_str());
    assert_eq!(bot_text(&sent[0]), "Hi Grace! How can we help?");
    let buttons: Vec<String> = sent[0]["interactive"]["buttons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| text(&b["id"]))
        .collect();
    assert_eq!(buttons, ["track", "human"]);

    // Tapping "Track my order" moves the contact to the order question.
    let tap = api
        .post(
            "/v1/sandbox/inbound",
            json!({"from": phone, "button": {"id": "track"}}),
        )
        .await;
    let tap = tap.expect(202);
    assert_eq!(tap["direction"], "inbound");
    assert_eq!(tap["type"], "button");
    assert_eq!(
        chatbot_state(&api, &contact_id).await,
        json!({"flow_id": flow_id, "step": "ask_order", "paused": false})
    );
    let sent = outbound(&api, &contact_id).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(bot_text(&sent[0]), "Please send your order number.");

    // A human takes over: the bot stays silent on a reply.
    let paused = api
        .post(
            &format!("/v1/contacts/{contact_id}/chatbot/pause"),
            json!({}),
        )
        .await;
    assert_eq!(
        paused.expect(200)["chatbot"],
        json!({"flow_id": flow_id, "step": "ask_order", "paused": true})
    );
    api.post(
        "/v1/sandbox/inbound",
        json!({"from": phone, "text": "A-123"}),
    )
    .await
    .expect(202);
    assert_eq!(
        outbound(&api, &contact_id).await.len(),
        2,
        "paused: no reply"
    );
    assert_eq!(
        chatbot_state(&api, &contact_id).await,
        json!({"flow_id": flow_id, "step": "ask_order", "paused": true})
    );
    // Triggering a flow over a human's conversation is refused.
    api.post(
        &format!("/v1/chatbot/flows/{flow_id}/trigger"),
        json!({"contact_id": contact_id}),
    )
    .await
    .expect_error(409, "chatbot_paused");

    // Resume: the bot waits at the same step; the next reply completes the flow.
    let resumed = api
        .post(
            &format!("/v1/contacts/{contact_id}/chatbot/resume"),
            json!({}),
        )
        .await;
    assert_eq!(
        resumed.expect(200)["chatbot"],
        json!({"flow_id": flow_id, "step": "ask_order", "paused": false})
    );
    api.post(
        "/v1/sandbox/inbound",
        json!({"from": phone, "text": "A-777"}),
    )
    .await
    .expect(202);
    let contact = api.get(&format!("/v1/contacts/{contact_id}")).await;
    let contact = contact.expect(200);
    assert_eq!(contact["chatbot"], Value::Null, "flow completed: {contact}");
    assert_eq!(contact["attributes"]["last_order"], "A-777", "{contact}");
    let sent = outbound(&api, &contact_id).await;
    assert_eq!(sent.len(), 3);
    assert_eq!(
        bot_text(&sent[0]),
        "Thanks! Order A-777 is on its way. Anything else? Reply HELP."
    );

    // The flow's keyword starts it again; asking for a human hands over (paused by the flow),
    // the bot is silent, and resuming after the handover step ends the flow.
    api.post(
        "/v1/sandbox/inbound",
        json!({"from": phone, "text": "help"}),
    )
    .await
    .expect(202);
    assert_eq!(chatbot_state(&api, &contact_id).await, menu);
    api.post(
        "/v1/sandbox/inbound",
        json!({"from": phone, "text": "Talk to a human"}),
    )
    .await
    .expect(202);
    assert_eq!(
        chatbot_state(&api, &contact_id).await,
        json!({"flow_id": flow_id, "step": "handover", "paused": true})
    );
    let sent = outbound(&api, &contact_id).await;
    assert_eq!(sent.len(), 5);
    assert_eq!(
        bot_text(&sent[0]),
        "Connecting you with a teammate. They will reply here shortly."
    );
    api.post(
        "/v1/sandbox/inbound",
        json!({"from": phone, "text": "hello?"}),
    )
    .await
    .expect(202);
    assert_eq!(
        outbound(&api, &contact_id).await.len(),
        5,
        "handed over: silent"
    );
    let resumed = api
        .post(
            &format!("/v1/contacts/{contact_id}/chatbot/resume"),
            json!({}),
        )
        .await;
    assert_eq!(resumed.expect(200)["chatbot"], Value::Null);
    api.post(
        &format!("/v1/contacts/{contact_id}/chatbot/pause"),
        json!({}),
    )
    .await
    .expect_error(409, "chatbot_not_active");

    // The bot's messages went through the channel like any other.
    for message in outbound(&api, &contact_id).await {
        follow(&api, &text(&message["id"]), "read").await;
    }
    let inbound = page_all(
        &api,
        &format!("/v1/messages?contact_id={contact_id}&direction=inbound&limit=200"),
    )
    .await;
    assert_eq!(inbound.len(), 6);
    assert!(inbound.iter().all(|m| m["status"] == "received"));
}

#[tokio::test]
async fn sandbox_inbound_from_a_new_number_creates_the_contact_and_an_inbound_message() {
    let (_stack, api) = stack_with(Options::default()).await;
    let phone = "+14155550177";
    let before = api.get("/v1/contacts?q=%2B14155550177").await;
    assert_eq!(before.expect(200)["data"], json!([]));

    let reply = api
        .post(
            "/v1/sandbox/inbound",
            json!({"from": phone, "text": "Hello there"}),
        )
        .await;
    let message = reply.expect(202).clone();
    assert_eq!(message["direction"], "inbound");
    assert_eq!(message["status"], "received");
    assert_eq!(message["from"], phone);
    assert_eq!(message["type"], "text");
    assert_eq!(message["text"]["body"], "Hello there");
    assert!(message.get("to").is_none(), "{message}");
    assert_eq!(check_history(&message), ["received"]);
    let contact_id = text(&message["contact_id"]);
    assert!(contact_id.starts_with("con_"), "{message}");

    let contact = api.get(&format!("/v1/contacts/{contact_id}")).await;
    let contact = contact.expect(200);
    assert_eq!(contact["phone"], phone);
    assert_eq!(contact["chatbot"], Value::Null, "no keyword, no flow");
    let listed = api.get("/v1/contacts?q=%2B14155550177").await;
    assert_eq!(listed.expect(200)["data"].as_array().unwrap().len(), 1);

    let fetched = api
        .get(&format!("/v1/messages/{}", message["id"].as_str().unwrap()))
        .await;
    assert_eq!(fetched.expect(200)["direction"], "inbound");
    let inbound = page_all(
        &api,
        &format!("/v1/messages?direction=inbound&contact_id={contact_id}&limit=50"),
    )
    .await;
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0]["id"], message["id"]);
    let outbound = api.get("/v1/messages?direction=outbound").await;
    assert_eq!(outbound.expect(200)["data"], json!([]), "nothing was sent");

    // A second message from the same number reuses the contact.
    let again = api
        .post(
            "/v1/sandbox/inbound",
            json!({"from": phone, "text": "Still there?"}),
        )
        .await;
    assert_eq!(again.expect(202)["contact_id"], contact_id.as_str());
    let listed = api.get("/v1/contacts?q=%2B14155550177").await;
    assert_eq!(listed.expect(200)["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn bad_input_on_every_messaging_route_is_a_clear_error() {
    let (_stack, api) = stack_with(Options::default()).await;
    let to = "+14155550190";
    let send = |body: Value| {
        let api = api.clone();
        async move { api.post("/v1/messages", body).await }
    };
    let template = |name: &str, variables: Value| {
        json!({"to": to, "type": "template",
               "template": {"name": name, "language": "en", "variables": variables}})
    };

    // --- POST /v1/messages
    send(template("no_such_template", json!({})))
        .await
        .expect_error(422, "template_not_found");
    let missing = send(template("order_update", json!({"name": "Ada"}))).await;
    missing.expect_error(422, "missing_variables");
    assert!(missing.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("order"));
    let extra = send(template(
        "order_update",
        json!({"name": "Ada", "order": "1", "coupon": "X"}),
    ))
    .await;
    extra.expect_error(422, "unexpected_variables");
    assert!(extra.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("coupon"));
    send(template(
        "order_update",
        json!({"name": {"first": "Ada"}, "order": "1"}),
    ))
    .await
    .expect_error(422, "invalid_variables");
    for bad in ["12345", "+0123456789", "4155550101", "+1 415 555 0101", ""] {
        let reply = send(json!({"to": bad, "type": "text", "text": {"body": "x"}})).await;
        reply.expect_error(422, "invalid_phone");
        assert!(reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("to"));
    }
    send(json!({"type": "text", "text": {"body": "x"}}))
        .await
        .expect_error(400, "invalid_body");
    send(json!({"contact_id": "con_nobody", "type": "text", "text": {"body": "x"}}))
        .await
        .expect_error(422, "contact_not_found");
    send(json!({"to": to, "type": "text", "text": {"body": "   "}}))
        .await
        .expect_error(422, "invalid_text");
    send(json!({"to": to, "type": "text", "text": {"body": "x".repeat(4097)}}))
        .await
        .expect_error(422, "text_too_long");
    // Wrong JSON types and shapes.
    for body in [
        json!({"to": 14155550190u64, "type": "text", "text": {"body": "x"}}),
        json!({"to": to, "type": "sms", "text": {"body": "x"}}),
        json!({"to": to, "type": "text", "text": {"body": 42}}),
        json!({"to": to, "type": "text", "text": "hello"}),
        json!({"to": to, "type": "text"}),
        json!({"to": to, "type": "text", "text": {"body": "x"}, "template": {"name": "t"}}),
        json!({"to": to, "type": "text", "text": {"body": "x"}, "priority": "high"}),
        json!(["not", "an", "object"]),
    ] {
        send(body.clone()).await.expect_error(400, "invalid_body");
    }
    let not_json = Api::send(
        api.request(Method::POST, "/v1/messages", Auth::Bearer)
            .header("content-type", "application/json")
            .body("{\"to\": "),
    )
    .await;
    not_json.expect_error(400, "invalid_json");
    // Media: unknown kind, bad URLs, a caption on audio.
    send(json!({"to": to, "type": "media",
                "media": {"kind": "sticker", "url": "https://cdn.example.com/a.webp"}}))
    .await
    .expect_error(400, "invalid_body");
    for url in [
        "ftp://cdn.example.com/a.png",
        "https://",
        "cdn.example.com/a.png",
        "not a url",
    ] {
        send(json!({"to": to, "type": "media", "media": {"kind": "image", "url": url}}))
            .await
            .expect_error(422, "invalid_media_url");
    }
    send(json!({"to": to, "type": "media",
                "media": {"kind": "audio", "url": "https://x.example/a.ogg", "caption": "c"}}))
    .await
    .expect_error(422, "invalid_caption");

    // Opted-out contact: refused for single and bulk sends.
    let contact = api
        .post(
            "/v1/contacts",
            json!({"phone": "+14155550191", "name": "Out"}),
        )
        .await;
    let contact_id = text(&contact.expect(201)["id"]);
    api.patch(
        &format!("/v1/contacts/{contact_id}"),
        json!({"opted_in": false}),
    )
    .await
    .expect(200);
    send(json!({"contact_id": contact_id, "type": "text", "text": {"body": "x"}}))
        .await
        .expect_error(422, "contact_opted_out");
    send(json!({"to": "+14155550191", "type": "text", "text": {"body": "x"}}))
        .await
        .expect_error(422, "contact_opted_out");
    let bulk = api
        .post(
            "/v1/messages/bulk",
            json!({"type": "text", "text": {"body": "hi"}, "dry_run": true,
                   "recipients": [{"to": "+14155550192"}, {"to": "+14155550191"}]}),
        )
        .await;
    let bulk = bulk.expect(200);
    assert_eq!(bulk["accepted"], 1, "{bulk}");
    assert_eq!(bulk["batch_id"], Value::Null);
    assert_eq!(bulk["rejected"][0]["index"], 1);
    assert_eq!(bulk["rejected"][0]["code"], "contact_opted_out");

    // Invalid Idempotency-Key.
    Api::send(
        api.request(Method::POST, "/v1/messages", Auth::Bearer)
            .header("idempotency-key", "k".repeat(256))
            .json(&json!({"to": to, "type": "text", "text": {"body": "x"}})),
    )
    .await
    .expect_error(400, "invalid_idempotency_key");

    // --- GET /v1/messages, /v1/messages/{id}
    api.get("/v1/messages/msg_01jd7k2v8m3q4r5s6t7u8v9w0x")
        .await
        .expect_error(404, "not_found");
    api.get("/v1/messages/whatever")
        .await
        .expect_error(404, "not_found");
    for query in ["limit=0", "limit=201", "limit=-5"] {
        api.get(&format!("/v1/messages?{query}"))
            .await
            .expect_error(400, "invalid_limit");
    }
    for query in [
        "limit=ten",
        "status=lost",
        "direction=sideways",
        "colour=blue",
    ] {
        api.get(&format!("/v1/messages?{query}"))
            .await
            .expect_error(400, "invalid_query");
    }
    // A cursor is a `next_cursor` given back unchanged; a mangled one is refused instead of
    // answering a silently empty page.
    for cursor in [
        "not-a-cursor",
        "msg_",
        "flw_01jd7k2v8m3q4r5s6t7u8v9w0x",
        "msg_01JD7K2V8M3Q4R5S6T7U8V9W0X",
        "msg_01jd7k2v8m3q4r5s6t7u8v9w0x'--",
    ] {
        api.get(&format!("/v1/messages?cursor={cursor}"))
            .await
            .expect_error(400, "invalid_cursor");
    }
    let past_everything = api
        .get("/v1/messages?cursor=msg_00000000000000000000000000")
        .await;
    assert_eq!(past_everything.expect(200)["data"], json!([]));
    // The templates list pages with the same cursors (five seeded examples, two per page).
    let templates = page_all(&api, "/v1/templates?limit=2").await;
    assert_eq!(templates.len(), 5, "{templates:?}");
    assert!(templates
        .iter()
        .any(|t| t["name"] == "order_update" && t["language"] == "en"));
    api.get("/v1/templates?cursor=zzz")
        .await
        .expect_error(400, "invalid_cursor");
    api.get("/v1/templates?limit=0")
        .await
        .expect_error(400, "invalid_limit");

    // --- POST /v1/messages/bulk
    let bulk = |body: Value| {
        let api = api.clone();
        async move { api.post("/v1/messages/bulk", body).await }
    };
    bulk(json!({"type": "text", "text": {"body": "hi"}, "recipients": []}))
        .await
        .expect_error(422, "no_recipients");
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"to": phone(i % 10_000)}))
        .collect();
    let too_many = bulk(json!({"type": "text", "text": {"body": "hi"}, "recipients": many})).await;
    too_many.expect_error(422, "too_many_recipients");
    assert!(too_many.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("10000"));
    bulk(
        json!({"type": "template", "template": {"name": "nope", "language": "en"},
                "recipients": [{"to": to}]}),
    )
    .await
    .expect_error(422, "template_not_found");
    let all_bad = bulk(json!({"type": "text", "text": {"body": "Hi {{name}}"},
                              "recipients": [{"to": "123"}, {"to": to}]}))
    .await;
    all_bad.expect_error(422, "no_valid_recipients");
    let message = all_bad.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("recipients[0]") && message.contains("recipients[1]"),
        "{message}"
    );
    for body in [
        json!({"type": "text", "text": {"body": "hi"}, "recipients": "+14155550190"}),
        json!({"type": "text", "text": {"body": "hi"}}),
        json!({"type": "media", "recipients": [{"to": to}]}),
        json!({"type": "text", "recipients": [{"to": to}]}),
        json!({"type": "text", "text": {"body": "hi"}, "recipients": [{"to": to}], "dry_run": "yes"}),
    ] {
        bulk(body).await.expect_error(400, "invalid_body");
    }
    // Wrongly typed recipients are rejected one by one, by index.
    let mixed = bulk(
        json!({"type": "text", "text": {"body": "hi"}, "dry_run": true,
                            "recipients": [{"to": to}, {"to": 5}, "x", {"to": to}, {"phone": to}]}),
    )
    .await;
    let mixed = mixed.expect(200);
    let codes: Vec<(u64, String)> = mixed["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), text(&r["code"])))
        .collect();
    assert_eq!(
        codes,
        [
            (1, "invalid_recipient".to_string()),
            (2, "invalid_recipient".to_string()),
            (3, "duplicate_recipient".to_string()),
            (4, "invalid_recipient".to_string()),
        ],
        "{mixed}"
    );

    // --- /v1/batches/...
    let unknown = "bat_01jd7k2v8m3q4r5s6t7u8v9w0x";
    api.get(&format!("/v1/batches/{unknown}"))
        .await
        .expect_error(404, "not_found");
    api.get(&format!("/v1/batches/{unknown}/messages"))
        .await
        .expect_error(404, "not_found");
    api.post(&format!("/v1/batches/{unknown}/cancel"), json!({}))
        .await
        .expect_error(404, "not_found");
    let batch =
        bulk(json!({"type": "text", "text": {"body": "hi"}, "recipients": [{"to": to}]})).await;
    let batch_id = text(&batch.expect(202)["batch_id"]);
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=500", "invalid_limit"),
        ("limit=x", "invalid_query"),
        ("status=lost", "invalid_query"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("page=2", "invalid_query"),
    ] {
        api.get(&format!("/v1/batches/{batch_id}/messages?{query}"))
            .await
            .expect_error(400, code);
    }

    // --- Chatbot
    let unknown_flow = "flw_01jd7k2v8m3q4r5s6t7u8v9w0x";
    api.post(
        &format!("/v1/chatbot/flows/{unknown_flow}/trigger"),
        json!({"to": to}),
    )
    .await
    .expect_error(404, "not_found");
    let flows = api.get("/v1/chatbot/flows").await;
    let flow_id = text(&flows.expect(200)["data"][0]["id"]);
    let trigger = format!("/v1/chatbot/flows/{flow_id}/trigger");
    api.post(&trigger, json!({"to": "555"}))
        .await
        .expect_error(422, "invalid_phone");
    api.post(&trigger, json!({}))
        .await
        .expect_error(400, "invalid_body");
    api.post(&trigger, json!({"contact_id": "con_nobody"}))
        .await
        .expect_error(422, "contact_not_found");
    api.post(&trigger, json!({"to": to, "variables": {"x": [1]}}))
        .await
        .expect_error(422, "invalid_variables");
    api.post(&trigger, json!({"to": to, "variables": "x"}))
        .await
        .expect_error(400, "invalid_body");
    api.post(&trigger, json!({"contact_id": contact_id}))
        .await
        .expect_error(422, "contact_opted_out");
    for query in ["limit=0", "limit=1000"] {
        api.get(&format!("/v1/chatbot/flows?{query}"))
            .await
            .expect_error(400, "invalid_limit");
    }
    api.get("/v1/chatbot/flows?cursor=not-a-cursor")
        .await
        .expect_error(400, "invalid_cursor");
    for action in ["pause", "resume"] {
        api.post(
            &format!("/v1/contacts/con_nobody/chatbot/{action}"),
            json!({}),
        )
        .await
        .expect_error(404, "not_found");
        api.post(
            &format!("/v1/contacts/{contact_id}/chatbot/{action}"),
            json!({}),
        )
        .await
        .expect_error(409, "chatbot_not_active");
    }

    // --- POST /v1/sandbox/inbound
    let inbound = |body: Value| {
        let api = api.clone();
        async move { api.post("/v1/sandbox/inbound", body).await }
    };
    inbound(json!({"from": "hello", "text": "hi"}))
        .await
        .expect_error(422, "invalid_phone");
    inbound(json!({"from": to}))
        .await
        .expect_error(400, "invalid_body");
    inbound(json!({"from": to, "text": "hi", "button": {"id": "track"}}))
        .await
        .expect_error(400, "invalid_body");
    inbound(json!({"from": to, "button": {}}))
        .await
        .expect_error(422, "invalid_button");
    inbound(json!({"from": to, "text": ""}))
        .await
        .expect_error(422, "invalid_text");
    inbound(json!({"from": 14155550190u64, "text": "hi"}))
        .await
        .expect_error(400, "invalid_body");

    // None of the refusals sent anything: only the one-recipient batch's message exists.
    let all = page_all(&api, "/v1/messages?limit=200").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["batch_id"], batch_id.as_str());
}
