//! The WhatsApp Business Cloud API channel end to end, against a fake Graph API: an axum app on
//! `127.0.0.1:0` implementing the documented shapes (send: `POST /{version}/{phone-number-id}/
//! messages` → `{"messaging_product","contacts":[{"input","wa_id"}],"messages":[{"id":"wamid.."}]}`;
//! errors: Graph's `{"error":{"message","type","code","error_data":{"messaging_product",
//! "details"},"fbtrace_id"}}`; the phone number record `GET /{version}/{phone-number-id}`), which
//! checks the bearer token and each request body, and calls the product's webhook route back
//! through the gateway with `X-Hub-Signature-256`-signed `messages` webhooks (statuses and
//! inbound messages in the `whatsapp_business_account` envelope). Meta's servers are never called.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{eventually, metric_value, Admin, Api, Options, Stack};

pub(crate) const VERSION: &str = "v23.0";
pub(crate) const PHONE_NUMBER_ID: &str = "106540352242922";
pub(crate) const WABA_ID: &str = "102290129340398";
pub(crate) const TOKEN: &str = "EAAGtestTokenDoNotLeak0123456789abcdefZx9Q";
pub(crate) const APP_SECRET: &str = "appsecret-do-not-leak-7f3a9c";

/// Recipients (digits, as Meta sees them) the fake answers specially.
const UNDELIVERABLE: &str = "15550001026";
const WINDOW_CLOSED: &str = "15550001047";
const TOKEN_EXPIRED: &str = "15550000190";
const THROTTLED_TWICE: &str = "15550000429";
const ALWAYS_THROTTLED: &str = "15550130429";
const HANGS: &str = "15550009999";

#[derive(Default)]
pub(crate) struct Fake {
    /// Every send request body, in arrival order, with its arrival time.
    sends: Vec<(Instant, Value)>,
    /// Bearer tokens seen on any request.
    tokens: Vec<String>,
    wamids: u64,
    /// Where to call back: the gateway's webhook URL for the account.
    callback_url: Option<String>,
}

pub(crate) type Shared = Arc<Mutex<Fake>>;

fn graph_error(status: StatusCode, code: i64, title: &str, details: &str) -> Response {
    (
        status,
        Json(json!({"error": {
            "message": format!("({code}) {title}"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": details},
            "fbtrace_id": "AbCdEfGhIjK"
        }})),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

/// Meta's documented shape of a send request: the envelope and the object its `type` names.
fn body_problem(body: &Value) -> Option<String> {
    if body["messaging_product"] != "whatsapp" || body["recipient_type"] != "individual" {
        return Some("messaging_product must be whatsapp".into());
    }
    let to = body["to"].as_str().unwrap_or_default();
    if to.is_empty() || !to.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("to: {to:?}"));
    }
    let kind = body["type"].as_str().unwrap_or_default();
    let object = &body[kind];
    let ok = match kind {
        "text" => object["body"].is_string(),
        "template" => {
            object["name"].is_string()
                && object["language"]["code"].is_string()
                && object["components"].as_array().is_none_or(|c| {
                    c.iter().all(|c| {
                        c["type"] == "body"
                            && c["parameters"].as_array().is_some_and(|p| {
                                p.iter()
                                    .all(|p| p["type"] == "text" && p["text"].is_string())
                            })
                    })
                })
        }
        "image" | "video" | "document" => object["link"].is_string(),
        "audio" => object["link"].is_string() && object.get("caption").is_none(),
        "interactive" => {
            object["type"] == "button"
                && object["body"]["text"].is_string()
                && object["action"]["buttons"].as_array().is_some_and(|b| {
                    !b.is_empty()
                        && b.len() <= 3
                        && b.iter().all(|b| {
                            b["type"] == "reply"
                                && b["reply"]["id"].is_string()
                                && b["reply"]["title"]
                                    .as_str()
                                    .is_some_and(|t| t.chars().count() <= 20)
                        })
                })
        }
        _ => false,
    };
    (!ok).then(|| format!("bad {kind} object: {object}"))
}

async fn send(
    State(fake): State<Shared>,
    Path((version, phone)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let token = bearer(&headers);
    let (wamid, callback, count_to) = {
        let mut f = fake.lock().unwrap();
        f.tokens.push(token.clone());
        f.sends.push((Instant::now(), body.clone()));
        let to = body["to"].as_str().unwrap_or_default().to_string();
        let count_to = f
            .sends
            .iter()
            .filter(|(_, b)| b["to"] == to.as_str())
            .count();
        f.wamids += 1;
        (
            format!("wamid.HBgLFAKE{:06}", f.wamids),
            f.callback_url.clone(),
            count_to,
        )
    };
    if version != VERSION || phone != PHONE_NUMBER_ID {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "unknown phone number id",
        );
    }
    if token != TOKEN {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Access token has expired",
            "Error validating access token",
        );
    }
    if let Some(problem) = body_problem(&body) {
        return graph_error(StatusCode::BAD_REQUEST, 100, "Invalid parameter", &problem);
    }
    let to = body["to"].as_str().unwrap_or_default();
    match to {
        UNDELIVERABLE => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                131026,
                "Message undeliverable",
                "Unable to deliver message",
            )
        }
        WINDOW_CLOSED => return graph_error(
            StatusCode::BAD_REQUEST,
            131047,
            "Re-engagement message",
            "More than 24 hours have passed since the recipient last replied to the sender number.",
        ),
        TOKEN_EXPIRED => {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                190,
                "Access token has expired",
                "Session has expired",
            )
        }
        THROTTLED_TWICE if count_to <= 2 => {
            return graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                130429,
                "Rate limit hit",
                "Cloud API message throughput has been reached.",
            )
        }
        ALWAYS_THROTTLED => {
            return graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                130429,
                "Rate limit hit",
                "Cloud API message throughput has been reached.",
            )
        }
        HANGS => tokio::time::sleep(Duration::from_secs(5)).await,
        _ => {}
    }
    // Meta reports `sent` right away, often before the sender has recorded the answer.
    if let Some(url) = callback {
        let payload = status_payload(&[(&wamid, "sent", to, None)]);
        tokio::spawn(async move {
            let _ = post_signed(&url, &payload, APP_SECRET).await;
        });
    }
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": wamid, "message_status": "accepted"}]
    }))
    .into_response()
}

async fn phone_number(
    State(fake): State<Shared>,
    Path((version, phone)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let token = bearer(&headers);
    fake.lock().unwrap().tokens.push(token.clone());
    if version != VERSION || phone != PHONE_NUMBER_ID {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "Invalid parameter",
            "unknown phone number id",
        );
    }
    if token != TOKEN {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Access token has expired",
            "Error validating access token",
        );
    }
    Json(json!({
        "display_phone_number": "+1 555-010-0999",
        "verified_name": "Wiz Test Store",
        "quality_rating": "GREEN",
        "code_verification_status": "VERIFIED",
        "id": PHONE_NUMBER_ID
    }))
    .into_response()
}

pub(crate) async fn start_fake() -> (String, Shared) {
    let fake: Shared = Arc::default();
    let app = Router::new()
        .route("/{version}/{phone}/messages", post(send))
        .route("/{version}/{phone}", get(phone_number))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

/// One status report: wamid, status, recipient, and for `failed` Meta's error (code, title).
type StatusReport<'a> = (&'a str, &'a str, &'a str, Option<(i64, &'a str)>);

/// A `messages` webhook with statuses, in Meta's envelope.
fn status_payload(statuses: &[StatusReport]) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let statuses: Vec<Value> = statuses
        .iter()
        .map(|(wamid, status, to, error)| {
            let mut s = json!({
                "id": wamid, "status": status, "timestamp": now.to_string(), "recipient_id": to,
            });
            if let Some((code, title)) = error {
                s["errors"] = json!([{
                    "code": code, "title": title, "message": title,
                    "error_data": {"details": "Message failed to send"}
                }]);
            } else {
                s["conversation"] = json!({"id": "c1", "origin": {"type": "service"}});
                s["pricing"] =
                    json!({"billable": true, "pricing_model": "CBP", "category": "service"});
            }
            s
        })
        .collect();
    envelope(json!({"statuses": statuses}))
}

fn envelope(mut value: Value) -> Value {
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] =
        json!({"display_phone_number": "15550100999", "phone_number_id": PHONE_NUMBER_ID});
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}]
    })
}

/// An inbound message webhook from `from` (digits).
fn inbound_payload(from: &str, wamid: &str, message: Value) -> Value {
    let mut m = message;
    m["from"] = json!(from);
    m["id"] = json!(wamid);
    m["timestamp"] = json!("1764480000");
    envelope(json!({
        "contacts": [{"profile": {"name": "Customer"}, "wa_id": from}],
        "messages": [m],
    }))
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_signed(url: &str, payload: &Value, secret: &str) -> (u16, String) {
    let body = serde_json::to_vec(payload).unwrap();
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(secret, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

async fn message(api: &Api, id: &str) -> Value {
    api.get(&format!("/v1/messages/{id}"))
        .await
        .expect(200)
        .clone()
}

async fn wait_status(api: &Api, id: &str, status: &str) -> Value {
    eventually(
        &format!("{id} {status}"),
        Duration::from_secs(15),
        || async {
            let m = message(api, id).await;
            (m["status"] == status).then_some(m)
        },
    )
    .await
}

fn statuses(m: &Value) -> Vec<String> {
    m["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_string())
        .collect()
}

fn sends_to(fake: &Shared, to: &str) -> Vec<(Instant, Value)> {
    fake.lock()
        .unwrap()
        .sends
        .iter()
        .filter(|(_, b)| b["to"] == to)
        .cloned()
        .collect()
}

async fn send_message(api: &Api, body: Value) -> String {
    api.post("/v1/messages", body).await.expect(202)["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn template(to: &str) -> Value {
    json!({"to": to, "type": "template", "template": {
        "name": "order_update", "language": "en", "variables": {"name": "Ada", "order": "A-1"}}})
}

/// One stack for every check: settings, sending (each type, template parameters, each mapped
/// error, 429 backoff, the timeout that is never resent), the window, callbacks (statuses out of
/// order and repeated, signatures), inbound messages driving the demo flow, and that no secret
/// shows in responses, logs or metrics.
#[tokio::test]
async fn whatsapp_cloud_channel() {
    let (graph_url, fake) = start_fake().await;
    let stack = Stack::start_with(
        Options::default()
            .backend("WIZ_BACKEND__CHANNEL__WHATSAPP__GRAPH_BASE_URL", &graph_url)
            .backend("WIZ_BACKEND__CHANNEL__WHATSAPP__API_VERSION", VERSION)
            .backend("WIZ_BACKEND__CHANNEL__WHATSAPP__TIMEOUT", "1s")
            .backend("WIZ_BACKEND__CHANNEL__WHATSAPP__THROTTLE_BACKOFF", "200ms")
            .backend("WIZ_BACKEND__CHANNEL__WHATSAPP__MAX_THROTTLE_RETRIES", "2")
            .backend(
                "WIZ_BACKEND__LOG__LEVEL",
                "debug,hyper=info,h2=info,sqlx=info",
            ),
    )
    .await;
    let admin = Admin::login(
        &stack.gateway_url(),
        crate::harness::ADMIN_EMAIL,
        crate::harness::ADMIN_PASSWORD,
    )
    .await;
    let account = admin.account_id();
    let webhook_url = format!(
        "{}/channels/whatsapp/webhook/{account}",
        stack.gateway_url()
    );
    let mut answers: Vec<String> = Vec::new();

    // --- settings: simulated by default; cloud needs all four fields; secrets write-only.
    let view = admin.get("/admin/channel").await.expect(200).clone();
    assert_eq!(view["kind"], "simulated");
    admin
        .call(
            Method::PUT,
            "/admin/channel",
            Some(json!({"kind": "whatsapp_cloud", "phone_number_id": PHONE_NUMBER_ID})),
        )
        .await
        .expect_error(422, "invalid_channel_settings");
    admin
        .call(
            Method::PUT,
            "/admin/channel",
            Some(json!({"kind": "whatsapp_cloud", "phone_number_id": "12ab",
            "waba_id": WABA_ID, "access_token": TOKEN, "app_secret": APP_SECRET})),
        )
        .await
        .expect_error(422, "invalid_channel_settings");
    // Without the CSRF token the change is refused.
    let no_csrf = admin
        .http
        .put(format!("{}/admin/channel", stack.gateway_url()))
        .json(&json!({"kind": "simulated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status().as_u16(), 403);
    let saved = admin
        .call(
            Method::PUT,
            "/admin/channel",
            Some(
                json!({"kind": "whatsapp_cloud", "phone_number_id": PHONE_NUMBER_ID,
            "waba_id": WABA_ID, "access_token": TOKEN, "app_secret": APP_SECRET}),
            ),
        )
        .await;
    let saved = saved.expect(200).clone();
    assert_eq!(saved["kind"], "whatsapp_cloud");
    assert_eq!(saved["access_token"], "••••Zx9Q");
    assert_eq!(saved["app_secret"], "••••••••");
    assert_eq!(
        saved["webhook_path"],
        format!("/channels/whatsapp/webhook/{account}")
    );
    let verify_token = saved["verify_token"].as_str().unwrap().to_string();
    answers.push(saved.to_string());
    let view = admin.get("/admin/channel").await.expect(200).clone();
    assert_eq!(view["access_token"], "••••Zx9Q");
    answers.push(view.to_string());
    // A save without the secrets keeps them.
    let resaved = admin
        .call(
            Method::PUT,
            "/admin/channel",
            Some(json!({"kind": "whatsapp_cloud"})),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(resaved["app_secret"], "••••••••");
    answers.push(resaved.to_string());
    // Sealed at rest: the database file holds neither credential.
    let db = std::fs::read(stack.dir.path().join("wiz.db")).unwrap();
    let wal = std::fs::read(stack.dir.path().join("wiz.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(TOKEN) && !text.contains(APP_SECRET),
            "a credential is stored in the clear"
        );
    }

    // --- test connection: Meta's answer, reported.
    let tested = admin
        .post("/admin/channel/test", json!({}))
        .await
        .expect(200)
        .clone();
    assert_eq!(tested["ok"], true, "{tested}");
    assert_eq!(tested["provider"]["verified_name"], "Wiz Test Store");
    answers.push(tested.to_string());

    // --- the webhook handshake, through the gateway without a key.
    let http = reqwest::Client::new();
    let hs = http
        .get(format!("{webhook_url}?hub.mode=subscribe&hub.verify_token={verify_token}&hub.challenge=1158201444"))
        .send()
        .await
        .unwrap();
    assert_eq!(hs.status().as_u16(), 200);
    assert!(hs.headers().get("x-ratelimit-limit").is_none());
    assert_eq!(hs.text().await.unwrap(), "1158201444");
    let hs = http
        .get(format!(
            "{webhook_url}?hub.mode=subscribe&hub.verify_token=wrong-token-123&hub.challenge=1"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(hs.status().as_u16(), 403);
    fake.lock().unwrap().callback_url = Some(webhook_url.clone());

    let key = admin
        .create_key(json!({"name": "wa", "rate_limit_per_minute": 1000, "daily_limit": 10000}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    // --- the 24-hour window: free-form to a number that never wrote is refused up front.
    let refused = api
        .post(
            "/v1/messages",
            json!({"to": "+14155550188", "type": "text", "text": {"body": "hello"}}),
        )
        .await;
    refused.expect_error(422, "outside_customer_service_window");
    api.post(
        "/v1/messages",
        json!({"to": "+14155550188", "type": "media",
        "media": {"kind": "image", "url": "https://cdn.example.com/a.png"}}),
    )
    .await
    .expect_error(422, "outside_customer_service_window");
    assert!(sends_to(&fake, "14155550188").is_empty());

    // --- a template goes out, with its parameters; Meta's `sent` may outrun the send's commit.
    let tpl = send_message(&api, template("+14155550188")).await;
    let m = wait_status(&api, &tpl, "sent").await;
    assert_eq!(m["type"], "template");
    let sent = sends_to(&fake, "14155550188");
    assert_eq!(sent.len(), 1);
    let body = &sent[0].1;
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "order_update");
    assert_eq!(body["template"]["language"]["code"], "en");
    let mut params: Vec<(String, String)> = body["template"]["components"][0]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["parameter_name"].as_str().unwrap().into(),
                p["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    params.sort();
    assert_eq!(
        params,
        [
            ("name".into(), "Ada".into()),
            ("order".into(), "A-1".into())
        ]
    );
    let tpl_wamid = format!("wamid.HBgLFAKE{:06}", fake.lock().unwrap().wamids);

    // --- statuses out of order and repeated: read before delivered, then delivered, then read again.
    let to = "14155550188";
    assert_eq!(
        post_signed(
            &webhook_url,
            &status_payload(&[(&tpl_wamid, "read", to, None)]),
            APP_SECRET
        )
        .await
        .0,
        200
    );
    wait_status(&api, &tpl, "read").await;
    let late = status_payload(&[
        (&tpl_wamid, "delivered", to, None),
        (&tpl_wamid, "read", to, None),
        (&tpl_wamid, "sent", to, None),
    ]);
    assert_eq!(post_signed(&webhook_url, &late, APP_SECRET).await.0, 200);
    assert_eq!(post_signed(&webhook_url, &late, APP_SECRET).await.0, 200);
    let m = message(&api, &tpl).await;
    assert_eq!(m["status"], "read");
    assert_eq!(statuses(&m), ["queued", "sent", "read"]);

    // --- a mis-signed or unsigned callback is refused and changes nothing.
    let tpl2 = send_message(&api, template("+14155550177")).await;
    wait_status(&api, &tpl2, "sent").await;
    let wamid2 = format!("wamid.HBgLFAKE{:06}", fake.lock().unwrap().wamids);
    let read2 = status_payload(&[(&wamid2, "read", "14155550177", None)]);
    let (status, text) = post_signed(&webhook_url, &read2, "not-the-app-secret").await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("invalid_signature"));
    let unsigned = http.post(&webhook_url).json(&read2).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    // The same bytes with a signature of other bytes.
    let other =
        serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": []})).unwrap();
    let spliced = http
        .post(&webhook_url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(APP_SECRET, &other))
        .body(serde_json::to_vec(&read2).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(spliced.status().as_u16(), 401);
    let forged_inbound = inbound_payload(
        "14155550166",
        "wamid.forged1",
        json!({"type": "text", "text": {"body": "help"}}),
    );
    assert_eq!(
        post_signed(&webhook_url, &forged_inbound, "wrong").await.0,
        401
    );
    assert_eq!(message(&api, &tpl2).await["status"], "sent");
    let inbound_list = api
        .get("/v1/messages?direction=inbound")
        .await
        .expect(200)
        .clone();
    assert_eq!(
        inbound_list["data"].as_array().unwrap().len(),
        0,
        "a forged callback stored a message"
    );
    // A body over the callback limit is refused before anything else.
    let huge = vec![b' '; 2 * 1024 * 1024];
    let too_big = http
        .post(&webhook_url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(APP_SECRET, &huge))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status().as_u16(), 413);
    // A failed status with Meta's error, after `sent`.
    let failed = status_payload(&[(
        &wamid2,
        "failed",
        "14155550177",
        Some((131026, "Message undeliverable")),
    )]);
    assert_eq!(post_signed(&webhook_url, &failed, APP_SECRET).await.0, 200);
    let m = wait_status(&api, &tpl2, "failed").await;
    assert_eq!(m["error"]["code"], "recipient_unreachable");
    assert!(m["error"]["message"].as_str().unwrap().contains("131026"));

    // --- inbound: a customer writes "help", which opens the window and starts the demo flow.
    let customer = "14155550199";
    let hello = inbound_payload(
        customer,
        "wamid.IN000001",
        json!({"type": "text", "text": {"body": "help"}}),
    );
    assert_eq!(post_signed(&webhook_url, &hello, APP_SECRET).await.0, 200);
    // Meta repeats callbacks: the same wamid is one message.
    assert_eq!(post_signed(&webhook_url, &hello, APP_SECRET).await.0, 200);
    let menu = eventually("the bot's menu", Duration::from_secs(15), || async {
        let sent = sends_to(&fake, customer);
        sent.iter()
            .find(|(_, b)| b["type"] == "interactive")
            .map(|(_, b)| b.clone())
    })
    .await;
    let buttons = menu["interactive"]["action"]["buttons"].as_array().unwrap();
    assert_eq!(buttons[0]["reply"]["id"], "track");
    let received = api
        .get("/v1/messages?direction=inbound")
        .await
        .expect(200)
        .clone();
    let received = received["data"].as_array().unwrap();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["from"], "+14155550199");
    assert_eq!(received[0]["text"]["body"], "help");
    let contact_id = received[0]["contact_id"].as_str().unwrap().to_string();
    // The customer taps "Track my order": the flow moves on and asks for the order number.
    let tap = inbound_payload(
        customer,
        "wamid.IN000002",
        json!({"type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": "track", "title": "Track my order"}}}),
    );
    assert_eq!(post_signed(&webhook_url, &tap, APP_SECRET).await.0, 200);
    eventually("the flow advances", Duration::from_secs(15), || async {
        let c = api
            .get(&format!("/v1/contacts/{contact_id}"))
            .await
            .expect(200)
            .clone();
        (c["chatbot"]["step"] == "ask_order").then_some(())
    })
    .await;
    eventually(
        "the bot asks for the order",
        Duration::from_secs(15),
        || async {
            sends_to(&fake, customer)
                .iter()
                .any(|(_, b)| b["text"]["body"] == "Please send your order number.")
                .then_some(())
        },
    )
    .await;
    // A picture is kept as a media reference.
    let photo = inbound_payload(
        customer,
        "wamid.IN000003",
        json!({"type": "image",
        "image": {"id": "1479537139650973", "mime_type": "image/jpeg", "sha256": "abc", "caption": "A-77"}}),
    );
    assert_eq!(post_signed(&webhook_url, &photo, APP_SECRET).await.0, 200);
    let got = eventually("the picture", Duration::from_secs(15), || async {
        let list = api
            .get("/v1/messages?direction=inbound")
            .await
            .expect(200)
            .clone();
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["type"] == "media")
            .cloned()
    })
    .await;
    assert_eq!(got["media"]["kind"], "image");
    assert_eq!(
        got["media"]["url"],
        format!("{graph_url}/{VERSION}/1479537139650973")
    );

    // --- within the window, free-form goes out: text and media by link.
    let text = send_message(
        &api,
        json!({"to": "+14155550199", "type": "text", "text": {"body": "Your order ships today"}}),
    )
    .await;
    let image = send_message(&api, json!({"to": "+14155550199", "type": "media",
        "media": {"kind": "document", "url": "https://cdn.example.com/invoice.pdf", "caption": "Invoice"}})).await;
    wait_status(&api, &text, "sent").await;
    wait_status(&api, &image, "sent").await;
    let sent = sends_to(&fake, customer);
    assert!(sent
        .iter()
        .any(|(_, b)| b["type"] == "text" && b["text"]["body"] == "Your order ships today"));
    assert!(sent.iter().any(|(_, b)| b["type"] == "document"
        && b["document"]["link"] == "https://cdn.example.com/invoice.pdf"
        && b["document"]["caption"] == "Invoice"));

    // A bulk text goes to the numbers inside the window; the others are rejected by index.
    let bulk = api
        .post(
            "/v1/messages/bulk",
            json!({"type": "text", "text": {"body": "Sale today"},
            "recipients": [{"to": "+14155550199"}, {"to": "+14155550188"}]}),
        )
        .await;
    let bulk = bulk.expect(202);
    assert_eq!(bulk["accepted"], 1, "{bulk}");
    assert_eq!(bulk["rejected"][0]["index"], 1);
    assert_eq!(
        bulk["rejected"][0]["code"],
        "outside_customer_service_window"
    );
    // Starting a flow (free-form bot messages) for a number outside the window is refused too.
    let flows = api.get("/v1/chatbot/flows").await.expect(200).clone();
    let flow_id = flows["data"][0]["id"].as_str().unwrap().to_string();
    api.post(
        &format!("/v1/chatbot/flows/{flow_id}/trigger"),
        json!({"to": "+14155550188"}),
    )
    .await
    .expect_error(422, "outside_customer_service_window");

    // --- Graph errors mapped onto the message's error.
    for (number, code) in [
        (UNDELIVERABLE, "recipient_unreachable"),
        (WINDOW_CLOSED, "reengagement_window_closed"),
        (TOKEN_EXPIRED, "access_token_expired"),
    ] {
        let id = send_message(&api, template(&format!("+{number}"))).await;
        let m = wait_status(&api, &id, "failed").await;
        assert_eq!(m["error"]["code"], code, "{m}");
        assert!(
            m["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("WhatsApp error "),
            "{m}"
        );
    }

    // --- 429: refused twice, then accepted; the number paused 200 ms, then 400 ms.
    let throttled = send_message(&api, template(&format!("+{THROTTLED_TWICE}"))).await;
    wait_status(&api, &throttled, "sent").await;
    let tries = sends_to(&fake, THROTTLED_TWICE);
    assert_eq!(tries.len(), 3);
    assert!(
        tries[1].0 - tries[0].0 >= Duration::from_millis(200),
        "no backoff: {:?}",
        tries[1].0 - tries[0].0
    );
    assert!(
        tries[2].0 - tries[1].0 >= Duration::from_millis(400),
        "no growing backoff: {:?}",
        tries[2].0 - tries[1].0
    );
    // Always refused: fails after max_throttle_retries with Meta's code.
    let hopeless = send_message(&api, template(&format!("+{ALWAYS_THROTTLED}"))).await;
    let m = wait_status(&api, &hopeless, "failed").await;
    assert_eq!(m["error"]["code"], "throughput_limited");
    assert_eq!(sends_to(&fake, ALWAYS_THROTTLED).len(), 3);

    // --- a send that may have reached Meta (timeout after the request went out) is never resent.
    let hung = send_message(&api, template(&format!("+{HANGS}"))).await;
    let m = wait_status(&api, &hung, "failed").await;
    assert_eq!(m["error"]["code"], "send_outcome_unknown");
    // Housekeeping runs every 2 s: give it two rounds to (wrongly) resend.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        sends_to(&fake, HANGS).len(),
        1,
        "a send that may have reached Meta was repeated"
    );

    // --- every request to Meta carried the account's token.
    assert!(fake.lock().unwrap().tokens.iter().all(|t| t == TOKEN));

    // --- secrets: in no response, log line or metric.
    let metrics = stack.backend_metrics().await;
    assert!(
        metric_value(
            &metrics,
            "wiz_backend_whatsapp_callbacks_total{outcome=\"invalid_signature\"}"
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    assert!(
        metric_value(
            &metrics,
            "wiz_backend_whatsapp_sends_total{outcome=\"throttled\"}"
        )
        .unwrap_or(0.0)
            >= 4.0
    );
    let logs = stack.logs();
    for (name, text) in [("logs", logs.as_str()), ("metrics", metrics.as_str())] {
        assert!(!text.contains(TOKEN), "the access token is in the {name}");
        assert!(
            !text.contains(APP_SECRET),
            "the app secret is in the {name}"
        );
    }
    for answer in &answers {
        assert!(
            !answer.contains(TOKEN) && !answer.contains(APP_SECRET),
            "a credential in {answer}"
        );
    }
}
