//! A whole gateway (Pingora and all) in front of the fake backend: the SPEC §4 checks, the
//! headers in both directions, the metrics listener and the 502 when the backend is gone.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use support::fake_backend::{key_json, proof_key, FakeBackend, TOKEN};
use wiz_gateway::config::{AuthThrottleConfig, GatewayConfig, Secret, UsageConfig};

const KEY: &str = "pk_live_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const SECRET: &str = "sk_live_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const REVOKED: &str = "pk_live_RRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR";
const FREE: &str = "pk_live_FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF";
const LISTED: &str = "pk_live_WWWWWWWWWWWWWWWWWWWWWWWWWWWWWWWW";

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn wait_ready(client: &reqwest::Client, url: &str) {
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{url} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn json_of(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_end_to_end_against_a_fake_backend() {
    let fake = FakeBackend::start();
    let mut k = key_json("key_main", KEY, SECRET);
    k["rate_limit_per_minute"] = json!(3);
    fake.state.upsert_key(k);
    let mut r = key_json("key_revoked", REVOKED, SECRET);
    r["status"] = json!("revoked");
    fake.state.upsert_key(r);
    let mut f = key_json("key_free", FREE, SECRET);
    f["plan"] = json!("free");
    fake.state.upsert_key(f);
    let mut w = key_json("key_listed", LISTED, SECRET);
    w["ip_whitelist"] = json!(["203.0.113.0/24", "2001:db8::/32"]);
    fake.state.upsert_key(w);

    let listen = free_addr();
    let metrics_listen = free_addr();
    // The usage journal goes where the test can throw it away, not into the crate's directory.
    let data = tempfile::tempdir().unwrap();
    let config = GatewayConfig {
        listen: listen.to_string(),
        metrics_listen: metrics_listen.to_string(),
        backend_url: fake.url(),
        internal_token: Some(Secret::new(TOKEN)),
        auth_throttle: AuthThrottleConfig {
            max_failures: 5,
            window_seconds: 60,
            tracked_ips: 1_000,
        },
        trusted_proxies: vec!["127.0.0.1/32".into()],
        shutdown_grace_seconds: 0,
        usage: UsageConfig {
            journal: Some(data.path().join("usage.journal").display().to_string()),
            ..UsageConfig::default()
        },
        ..GatewayConfig::default()
    }
    .validate()
    .unwrap();
    let gateway = wiz_gateway::spawn(config);
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    wait_ready(&client, &format!("{base}/healthz")).await;

    // Health, 404s, and the request id on every answer.
    let (s, h, b) = json_of(client.get(format!("{base}/healthz")).send().await.unwrap()).await;
    assert_eq!((s, b), (200, json!({"status": "ok"})));
    assert_eq!(header(&h, "x-request-id").len(), 26);
    for path in ["/internal/keys", "/nope", "/v1/../internal/keys"] {
        let (s, h, b) = json_of(client.get(format!("{base}{path}")).send().await.unwrap()).await;
        assert_eq!(s, 404, "{path}");
        assert_eq!(b["error"]["code"], "not_found");
        assert_eq!(b["error"]["request_id"], header(&h, "x-request-id"));
    }

    // Missing and malformed credentials.
    let (s, h, b) = json_of(
        client
            .get(format!("{base}/v1/contacts"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("missing_credentials"))
    );
    assert_eq!(b["error"]["type"], "authentication_error");
    assert!(!header(&h, "x-request-id").is_empty());
    let (s, _, b) = json_of(
        client
            .get(format!("{base}/v1/contacts"))
            .bearer_auth("pk_live_short")
            .header("x-api-secret", SECRET)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (401, Some("malformed_credentials"))
    );

    // Accepted: credentials stripped, identity + proof added, spoofed internal headers dropped.
    let resp = client
        .get(format!("{base}/v1/contacts?limit=5"))
        .bearer_auth(KEY)
        .header("x-api-secret", SECRET)
        .header("x-request-id", "client-req-1")
        .header("x-wiz-key-id", "key_spoofed")
        .header("x-wiz-anything", "spoofed")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .send()
        .await
        .unwrap();
    let (s, h, b) = json_of(resp).await;
    assert_eq!(s, 200, "{b}");
    let fwd = &b["headers"];
    assert!(fwd.get("authorization").is_none());
    assert!(fwd.get("x-api-secret").is_none());
    assert!(fwd.get("x-wiz-anything").is_none());
    assert_eq!(fwd["x-wiz-key-id"], "key_main");
    assert_eq!(fwd["x-wiz-account-id"], "acc_key_main");
    assert_eq!(fwd["x-wiz-key-prefix"], &KEY[..12]);
    assert_eq!(fwd["x-wiz-client-ip"], "127.0.0.1");
    assert_eq!(fwd["x-request-id"], "client-req-1");
    let proof = fwd["x-wiz-gateway-proof"].as_str().unwrap();
    let parts: Vec<&str> = proof.split(',').collect();
    assert_eq!(parts[0], "v2");
    let mut mac = Hmac::<Sha256>::new_from_slice(&proof_key()).unwrap();
    mac.update(
        format!(
            "v2\n{}\nhttp\nGET\n/v1/contacts?limit=5\n127.0.0.1\nkey_main\nacc_key_main\nclient-req-1",
            parts[1]
        )
        .as_bytes(),
    );
    assert_eq!(parts[2], hex::encode(mac.finalize().into_bytes()));
    assert_eq!(fwd["x-wiz-scheme"], "http");
    assert_eq!(fwd["x-forwarded-for"], "127.0.0.1");
    assert_eq!(fwd["x-real-ip"], "127.0.0.1");
    assert!(fwd.get("forwarded").is_none());
    assert_eq!(header(&h, "x-request-id"), "client-req-1");
    assert_eq!(header(&h, "x-ratelimit-limit"), "3");
    assert_eq!(header(&h, "x-ratelimit-remaining"), "2");
    assert_eq!(header(&h, "x-dailylimit-limit"), "1000");
    assert_eq!(header(&h, "x-dailylimit-remaining"), "999");
    assert_eq!(
        header(&h, "ratelimit-policy"),
        "\"minute\";q=3;w=60, \"day\";q=1000;w=86400"
    );
    assert!(header(&h, "ratelimit").starts_with("\"minute\";r=2;t="));

    // Basic auth works too; then the minute limit bites, with Retry-After.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"));
    for expected_remaining in ["1", "0"] {
        let (s, h, _) = json_of(
            client
                .post(format!("{base}/v1/messages"))
                .header("authorization", format!("Basic {basic}"))
                .json(&json!({"to": "+14155550101"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(header(&h, "x-ratelimit-remaining"), expected_remaining);
    }
    let (s, h, b) = json_of(
        client
            .post(format!("{base}/v1/messages"))
            .header("authorization", format!("Basic {basic}"))
            .json(&json!({"to": "+14155550101"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(b["error"]["type"], "rate_limit_error");
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
    assert_eq!(
        header(&h, "x-dailylimit-remaining"),
        "997",
        "refusals do not count"
    );

    // Revoked, free plan, whitelist.
    for (key, status, code) in [
        (REVOKED, 401, "key_revoked"),
        (FREE, 403, "plan_required"),
        (LISTED, 403, "ip_not_allowed"),
    ] {
        let (s, _, b) = json_of(
            client
                .get(format!("{base}/v1/contacts"))
                .bearer_auth(key)
                .header("x-api-secret", SECRET)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((s, b["error"]["code"].as_str()), (status, Some(code)));
    }

    // Routes without a key; internal headers never pass through.
    let (s, _, b) = json_of(
        client
            .get(format!("{base}/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, b["path"].as_str()), (200, Some("/v1/openapi.json")));
    let (s, _, b) = json_of(
        client
            .post(format!("{base}/admin/session"))
            .header("x-wiz-key-id", "key_spoofed")
            .header("x-wiz-client-ip", "6.6.6.6")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert!(b["headers"].get("x-wiz-key-id").is_none());
    assert_eq!(b["headers"]["x-wiz-client-ip"], "127.0.0.1");
    let (s, _, _) = json_of(client.get(format!("{base}/console")).send().await.unwrap()).await;
    assert_eq!(s, 200);

    // Behind a trusted proxy (127.0.0.1 here) the right-most untrusted X-Forwarded-For hop is the
    // client: the whitelist now admits it, and a 429 from the backend gets a Retry-After too.
    let (s, h, b) = json_of(
        client
            .get(format!("{base}/v1/too-many"))
            .bearer_auth(LISTED)
            .header("x-api-secret", SECRET)
            .header("x-forwarded-for", "6.6.6.6, 203.0.113.9")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["headers"]["x-wiz-client-ip"], "203.0.113.9");
    // The client's chain is replaced by the one address the gateway resolved.
    assert_eq!(b["headers"]["x-forwarded-for"], "203.0.113.9");
    assert_eq!(header(&h, "retry-after"), "1");
    let (s, _, _) = json_of(
        client
            .get(format!("{base}/v1/contacts"))
            .bearer_auth(LISTED)
            .header("x-api-secret", SECRET)
            .header("x-forwarded-for", "203.0.113.9, 6.6.6.6")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        s, 403,
        "a spoofed left-most hop does not pass the whitelist"
    );

    // Usage reaches the backend within a couple of flushes.
    let start = Instant::now();
    while fake.state.accepted_for("key_main") < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "usage never reported"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Metrics listener.
    let text = client
        .get(format!("http://{metrics_listen}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("wiz_gateway_requests_total{route_class=\"v1\",status_class=\"2xx\"} 3"),
        "{text}"
    );
    assert!(text.contains("wiz_gateway_refusals_total{code=\"rate_limited\"} 1"));
    assert!(text.contains("wiz_gateway_key_table_size 4"));
    assert!(!text.contains(KEY) && !text.contains(SECRET));
    let (s, _, _) = json_of(
        client
            .get(format!("http://{metrics_listen}/healthz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);

    // Guessing: past 5 failures (the malformed attempt above was one) this IP's wrong
    // credentials get 429 with Retry-After; its right ones are still served.
    let guess = |secret: &'static str| {
        client
            .get(format!("{base}/v1/contacts"))
            .bearer_auth(KEY)
            .header("x-api-secret", secret)
            .send()
    };
    const WRONG: &str = "sk_live_wrongwrongwrongwrongwrongwrongwrongwrong";
    for _ in 0..4 {
        let (s, _, _) = json_of(guess(WRONG).await.unwrap()).await;
        assert_eq!(s, 401);
    }
    let (s, h, b) = json_of(guess(WRONG).await.unwrap()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (429, Some("too_many_failed_attempts"))
    );
    assert!(!header(&h, "retry-after").is_empty());
    // The right secret passes the throttle and reaches the next check: this key spent its
    // minute budget above, so the limiter answers.
    let (s, _, b) = json_of(guess(SECRET).await.unwrap()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{b}"
    );

    // Backend gone: the proxy answers 502 with the error object.
    let _ = fake.stop();
    let (s, h, b) = json_of(
        client
            .get(format!("{base}/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 502);
    assert_eq!(b["error"]["code"], "backend_unavailable");
    assert_eq!(b["error"]["type"], "api_error");
    assert_eq!(b["error"]["request_id"], header(&h, "x-request-id"));

    gateway.shutdown();
}
