//! Attacks from issue 9 run against the real binaries, each shown refused or harmless (SPEC §4,
//! §6, §10 "Abuse"). Proofs are computed here from docs/internal-api.md, not from either crate.

use std::{
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use reqwest::Method;
use serde_json::json;

use crate::harness::{
    eventually, gateway_proof, internal_bearer, unix_now, Admin, Api, Auth, Options, ProofFields,
    Reply, Stack, ADMIN_EMAIL, ADMIN_PASSWORD,
};

/// A captured proof is good for its own request only, for at most 30 s; the bearer of
/// `/internal` and the proof key are separate derivations of the token, which never travels.
#[tokio::test]
async fn gateway_proof_is_bound_to_method_path_ip_and_time() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin.create_key(json!({"name": "proof"})).await;
    let account_id = admin.account_id();
    let token = stack.internal_token().to_string();
    let http = reqwest::Client::new();
    let backend = stack.backend_url();

    let fields = ProofFields {
        unix_secs: unix_now(),
        scheme: "http",
        method: "GET",
        path_and_query: "/v1/contacts?limit=5",
        client_ip: "203.0.113.9",
        key_id: &key.id,
        account_id: &account_id,
        request_id: "req-proof-1",
    };
    let send_from = |ip: &str, method: Method, path: &str, proof: String| {
        http.request(method, format!("{backend}{path}"))
            .header("x-wiz-gateway-proof", proof)
            .header("x-wiz-key-id", &key.id)
            .header("x-wiz-account-id", &account_id)
            .header("x-wiz-client-ip", ip)
            .header("x-wiz-scheme", "http")
            .header("x-request-id", "req-proof-1")
            .header("content-type", "application/json")
            .body("{\"phone\":\"+14155550101\"}")
    };
    let send =
        |method: Method, path: &str, proof: String| send_from("203.0.113.9", method, path, proof);
    let proof = gateway_proof(&token, &fields);
    Api::send(send(Method::GET, "/v1/contacts?limit=5", proof.clone()))
        .await
        .expect(200);

    // The same proof replayed on another method, path or query.
    for (method, path) in [
        (Method::POST, "/v1/contacts?limit=5"),
        (Method::GET, "/v1/contacts?limit=6"),
        (Method::GET, "/v1/contacts"),
        (Method::GET, "/v1/messages?limit=5"),
    ] {
        Api::send(send(method.clone(), path, proof.clone()))
            .await
            .expect_error(401, "invalid_gateway_proof");
    }
    // Another client IP than the one proven.
    let replay = send_from(
        "198.51.100.1",
        Method::GET,
        "/v1/contacts?limit=5",
        proof.clone(),
    );
    Api::send(replay)
        .await
        .expect_error(401, "invalid_gateway_proof");
    // 31 s old, and 31 s ahead.
    for skew in [-31, 31] {
        let stale = gateway_proof(
            &token,
            &ProofFields {
                unix_secs: unix_now() + skew,
                ..fields
            },
        );
        Api::send(send(Method::GET, "/v1/contacts?limit=5", stale))
            .await
            .expect_error(401, "invalid_gateway_proof");
    }
    // A proof with no key is valid for key-less routes but never opens /v1.
    let keyless = gateway_proof(
        &token,
        &ProofFields {
            key_id: "",
            account_id: "",
            ..fields
        },
    );
    let reply = Api::send(
        http.get(format!("{backend}/v1/contacts?limit=5"))
            .header("x-wiz-gateway-proof", keyless)
            .header("x-wiz-client-ip", "203.0.113.9")
            .header("x-wiz-scheme", "http")
            .header("x-request-id", "req-proof-1"),
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    // The old format (HMAC keyed by the raw token over time, ids) is dead.
    let old = {
        use hmac::Mac;
        let t = unix_now();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
        mac.update(format!("{t}.req-proof-1.{}.{account_id}", key.id).as_bytes());
        format!("v1,{t},{}", hex::encode(mac.finalize().into_bytes()))
    };
    Api::send(send(Method::GET, "/v1/contacts?limit=5", old))
        .await
        .expect_error(401, "invalid_gateway_proof");

    // /internal takes the derived bearer, not the token itself.
    let internal = |bearer: String| {
        http.get(format!("{backend}/internal/keys"))
            .header("x-wiz-internal-token", bearer)
    };
    Api::send(internal(token.clone()))
        .await
        .expect_error(401, "invalid_internal_token");
    Api::send(internal(internal_bearer(&token)))
        .await
        .expect(200);
}

/// The data directory, the database and the generated secrets key are private from creation;
/// webhook secrets are stored encrypted.
#[tokio::test]
async fn files_are_private_and_webhook_secrets_encrypted_at_rest() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let created = admin
        .post(
            "/admin/webhooks",
            json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
        )
        .await;
    let secret = created.expect(201)["secret"]
        .as_str()
        .expect("secret shown once")
        .to_string();
    let mode = |name: &str| {
        std::fs::metadata(stack.dir().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("wiz.db"), 0o600);
    assert_eq!(mode("data"), 0o700);
    assert_eq!(mode("data/secrets-key"), 0o600);
    let mut stored = Vec::new();
    for file in ["wiz.db", "wiz.db-wal"] {
        if let Ok(bytes) = std::fs::read(stack.dir().join(file)) {
            stored.extend(bytes);
        }
    }
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"enc:v1:"), "no sealed value in the database");
    assert!(
        !contains(secret.as_bytes()),
        "a webhook secret is stored in plain text"
    );
    let key_b64 = secret.trim_start_matches("whsec_");
    assert!(!contains(key_b64.as_bytes()));
}

/// SSRF (issue 9 point 5), with the allowance the other tests use switched off: every
/// special-purpose URL form is refused when an endpoint is created or changed, with a 422 that
/// names the range; a name resolving to loopback is refused at every attempt (test deliveries
/// and event deliveries alike), and nothing reaches the server listening there.
#[tokio::test]
async fn webhook_urls_reaching_special_purpose_addresses_are_refused() {
    let stack = Stack::start_with(
        Options::default().backend("WIZ_BACKEND__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "false"),
    )
    .await;
    let admin = stack.admin().await;
    for (url, range) in [
        ("http://[64:ff9b:1::a9fe:a9fe]/", "64:ff9b:1::/48"),
        ("http://[64:ff9b::a9fe:a9fe]/", "64:ff9b::/96"),
        ("http://[2002:a9fe:a9fe::1]/", "2002::/16"),
        (
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "2001::/32",
        ),
        ("http://[::ffff:169.254.169.254]/", "::ffff:0.0.0.0/96"),
        ("http://[::127.0.0.1]/", "::/96"),
        ("http://[::1]:8081/", "::1/128"),
        ("http://[fd00:ec2::254]/", "fc00::/7"),
        ("http://[fe80::1]/", "fe80::/10"),
        ("http://[2001:2::1]/", "2001:2::/48"),
        ("http://[2001:db8::1]/", "2001:db8::/32"),
        ("http://[2001:20::1]/", "2001:20::/28"),
        ("http://169.254.169.254/latest/meta-data", "169.254.0.0/16"),
        ("http://2852039166/", "169.254.0.0/16"),
        ("http://127.1:8081/", "127.0.0.0/8"),
        ("http://0x7f000001/", "127.0.0.0/8"),
        ("http://0.0.0.0:8081/", "0.0.0.0/32"),
        ("http://10.0.0.8/", "10.0.0.0/8"),
        ("http://100.64.0.1/", "100.64.0.0/10"),
        ("http://198.18.0.1/", "198.18.0.0/15"),
        ("http://192.0.0.170/", "192.0.0.170/32"),
        ("http://203.0.113.7/", "203.0.113.0/24"),
        ("http://240.0.0.1/", "240.0.0.0/4"),
        ("http://255.255.255.255/", "255.255.255.255/32"),
        ("https://224.0.0.251/", "224.0.0.0/4"),
    ] {
        let reply = admin
            .post("/admin/webhooks", json!({"url": url, "events": ["*"]}))
            .await;
        reply.expect_error(422, "webhook_url_not_allowed");
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(range), "{url}: {message}");
    }
    assert!(admin.get("/admin/webhooks").await.expect(200)["data"]
        .as_array()
        .is_some_and(|hooks| hooks.is_empty()));

    // A name is judged where it is resolved, at every attempt: `localhost` is loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let created = admin
        .post(
            "/admin/webhooks",
            json!({"url": format!("http://localhost:{port}/hook"), "events": ["*"]}),
        )
        .await;
    let hook_id = created.expect(201)["id"].as_str().unwrap().to_string();
    // Changing an endpoint's URL goes through the same guard.
    admin
        .patch(
            &format!("/admin/webhooks/{hook_id}"),
            json!({"url": "http://[64:ff9b:1::a9fe:a9fe]/"}),
        )
        .await
        .expect_error(422, "webhook_url_not_allowed");
    let test = admin
        .post(&format!("/admin/webhooks/{hook_id}/test"), json!({}))
        .await;
    let test = test.expect(200);
    assert_eq!(test["outcome"], "blocked", "{test}");
    let error = test["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("localhost") && error.contains("loopback"),
        "{error}"
    );

    // An event's delivery is refused the same way.
    let key = admin.create_key(json!({})).await;
    stack.wait_synced().await;
    stack
        .api(&key)
        .post("/v1/contacts", json!({"phone": "+14155550177"}))
        .await
        .expect(201);
    let deliveries = format!("/admin/webhooks/{hook_id}/deliveries?event_type=contact.created");
    let attempt = eventually(
        "a blocked delivery attempt",
        Duration::from_secs(20),
        || async {
            let listed = admin.get(&deliveries).await;
            let attempt = listed.body["data"][0]["attempts"][0].clone();
            attempt.is_object().then_some(attempt)
        },
    )
    .await;
    assert_eq!(attempt["outcome"], "blocked", "{attempt}");
    assert_eq!(reached.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// The gateway's failed-auth throttle counts failures per IP exactly and only ever answers
/// failures: an IP that failed 25 times is still served with valid credentials, its neighbours
/// are untouched, and failures sprayed over 2,000 IPs (IPv4 and IPv6 /64s) push no other IP over
/// the budget. Loopback is a trusted proxy here, so `X-Forwarded-For` names the client.
#[tokio::test]
async fn failed_auth_throttle_never_refuses_valid_keys_nor_clients_that_did_not_fail() {
    use futures::stream::{self, StreamExt};

    const BUDGET: u32 = 3;
    let stack = Stack::start_with(
        Options::default()
            .gateway("WIZ_GATEWAY__TRUSTED_PROXIES", "127.0.0.1/32")
            .gateway(
                "WIZ_GATEWAY__AUTH_THROTTLE__MAX_FAILURES",
                &BUDGET.to_string(),
            )
            .gateway("WIZ_GATEWAY__AUTH_THROTTLE__WINDOW_SECONDS", "600"),
    )
    .await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"rate_limit_per_minute": 1000}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    let wrong = Api {
        secret: format!("sk_live_{}", "W".repeat(40)),
        ..api.clone()
    };
    let valid_from = |ip: String| {
        let api = api.clone();
        async move {
            Api::send(
                api.request(Method::GET, "/v1/contacts", Auth::Bearer)
                    .header("x-forwarded-for", ip),
            )
            .await
        }
    };
    let wrong_from = |ip: String| {
        let wrong = wrong.clone();
        async move {
            Api::send(
                wrong
                    .request(Method::GET, "/v1/contacts", Auth::Bearer)
                    .header("x-forwarded-for", ip),
            )
            .await
        }
    };

    // Neighbour lockout: 25 × `Authorization: Bearer x` from A.
    let a = "198.51.100.10".to_string();
    for i in 0..25 {
        let reply = Api::send(
            api.http
                .get(format!("{}/v1/contacts", stack.gateway_url()))
                .header("authorization", "Bearer x")
                .header("x-forwarded-for", &a),
        )
        .await;
        if i < BUDGET {
            reply.expect_error(401, "malformed_credentials");
        } else {
            reply.expect_error(429, "too_many_failed_attempts");
            let retry: u64 = reply
                .header("retry-after")
                .expect("Retry-After on a throttled failure")
                .parse()
                .unwrap();
            assert!((1..=600).contains(&retry), "Retry-After {retry}");
        }
    }
    // A's valid key is served; A's wrong secret stays throttled; B never failed.
    valid_from(a.clone()).await.expect(200);
    wrong_from(a.clone())
        .await
        .expect_error(429, "too_many_failed_attempts");
    let b = "198.51.100.11".to_string();
    valid_from(b.clone()).await.expect(200);
    wrong_from(b.clone())
        .await
        .expect_error(401, "invalid_credentials");

    // IPv6 counts per /64: another address in A6's /64 is throttled, the next /64 is not.
    for _ in 0..BUDGET {
        wrong_from("2001:db8:a:1::1".into())
            .await
            .expect_error(401, "invalid_credentials");
    }
    wrong_from("2001:db8:a:1:ffff::2".into())
        .await
        .expect_error(429, "too_many_failed_attempts");
    valid_from("2001:db8:a:1::3".into()).await.expect(200);
    wrong_from("2001:db8:a:2::1".into())
        .await
        .expect_error(401, "invalid_credentials");

    // The spray: 2,000 IPs each spend exactly their budget. The old 4×1024-slot sketch saw ~6
    // failures in every slot after this and throttled any fresh IP at its first failure.
    let spray: Vec<String> = (0..2_000u32)
        .map(|i| match i % 2 {
            0 => format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff),
            _ => format!("2001:db8:5:{i:x}::1"),
        })
        .collect();
    let answers: Vec<(u16, String)> = stream::iter(
        spray
            .iter()
            .flat_map(|ip| std::iter::repeat_n(ip.clone(), BUDGET as usize)),
    )
    .map(|ip| {
        let wrong_from = &wrong_from;
        async move {
            let r = wrong_from(ip).await;
            (r.status.as_u16(), r.code().to_string())
        }
    })
    .buffer_unordered(16)
    .collect()
    .await;
    assert_eq!(answers.len(), 6_000);
    for (status, code) in &answers {
        assert_eq!((*status, code.as_str()), (401, "invalid_credentials"));
    }
    // Fresh IPs get their whole budget; every sprayed IP is exactly at its own.
    for fresh in ["203.0.113.50", "2001:db8:ffff:1::1"] {
        for _ in 0..BUDGET {
            wrong_from(fresh.into())
                .await
                .expect_error(401, "invalid_credentials");
        }
    }
    wrong_from(spray[0].clone())
        .await
        .expect_error(429, "too_many_failed_attempts");
    wrong_from(spray[1].clone())
        .await
        .expect_error(429, "too_many_failed_attempts");
    // Valid credentials are served from anywhere: sprayed, fresh, throttled.
    for ip in [
        &spray[0],
        &spray[1],
        &spray[1_999],
        &a,
        &"203.0.113.51".to_string(),
    ] {
        valid_from(ip.clone()).await.expect(200);
    }
}

/// Runs one SQL statement on the stack's database from outside the backend (SQLite file or
/// PostgreSQL), as an operator or a fault would.
async fn sql(database_url: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {database_url}: {e}"));
    sqlx::raw_sql(statement)
        .execute(&pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
    pool.close().await;
}

/// Idempotency (issue 9 point 6): identical retries racing each other run once and all get the
/// same answer; a request that fails validation, or fails after part of its work was written,
/// leaves no record and nothing of its work, and the retries that follow run once; the same key
/// with another body is 422 `idempotency_key_reused`.
pub async fn idempotent_retries_race_each_other_and_a_failure(stack: &Stack, database_url: &str) {
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"rate_limit_per_minute": 1000, "daily_limit": 100000}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    let post = |idempotency_key: &str, body: serde_json::Value| {
        api.request(Method::POST, "/v1/messages", Auth::Bearer)
            .header("idempotency-key", idempotency_key)
            .json(&body)
    };
    let race = |idempotency_key: &str, body: serde_json::Value, n: usize| {
        let requests: Vec<_> = (0..n)
            .map(|_| post(idempotency_key, body.clone()))
            .collect();
        futures::future::join_all(requests.into_iter().map(Api::send))
    };
    let messages_to = |contact_id: String| {
        let api = api.clone();
        async move {
            let listed = api
                .get(&format!("/v1/messages?contact_id={contact_id}"))
                .await;
            listed.expect(200)["data"].as_array().map_or(0, Vec::len)
        }
    };
    let contacts_with = |phone: &'static str| {
        let api = api.clone();
        async move {
            let listed = api.get("/v1/contacts?limit=200").await;
            listed.expect(200)["data"]
                .as_array()
                .map_or(0, |all| all.iter().filter(|c| c["phone"] == phone).count())
        }
    };

    // Ten identical requests at once: one message, ten equal answers, nine of them replays.
    let body = json!({"to": "+14155550181", "type": "text", "text": {"body": "once"}});
    let answers = race("order-1", body.clone(), 10).await;
    let first = answers[0].expect(202).clone();
    for answer in &answers {
        assert_eq!((answer.status, &answer.body), (answers[0].status, &first));
    }
    let replayed = |answers: &[crate::harness::Reply]| {
        answers
            .iter()
            .filter(|a| a.header("idempotent-replayed") == Some("true"))
            .count()
    };
    assert_eq!(replayed(&answers), 9);
    let contact_id = first["contact_id"].as_str().unwrap().to_string();
    assert_eq!(messages_to(contact_id.clone()).await, 1);
    // Later repeats too.
    let again = Api::send(post("order-1", body)).await;
    assert_eq!(again.body, first);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // The same key with another body.
    let other = json!({"to": "+14155550181", "type": "text", "text": {"body": "twice"}});
    Api::send(post("order-1", other))
        .await
        .expect_error(422, "idempotency_key_reused");
    assert_eq!(messages_to(contact_id).await, 1);

    // A validation failure leaves no record: the key then serves a corrected request, once.
    let invalid = json!({"to": "+14155550182", "type": "template", "template": {"name": "nope"}});
    Api::send(post("order-2", invalid))
        .await
        .expect_error(422, "template_not_found");
    let fixed = json!({"to": "+14155550182", "type": "text", "text": {"body": "fixed"}});
    let answers = race("order-2", fixed, 5).await;
    for answer in &answers {
        assert_eq!(answer.body, answers[0].body);
    }
    assert_eq!(replayed(&answers), 4);
    let contact_id = answers[0].expect(202)["contact_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(messages_to(contact_id).await, 1);

    // A failure after partial work: the contact is created, then storing the message fails.
    let is_sqlite = database_url.starts_with("sqlite:");
    let (inject, remove) = if is_sqlite {
        (
            "CREATE TRIGGER injected_failure BEFORE INSERT ON messages \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            "DROP TRIGGER injected_failure",
        )
    } else {
        (
            "CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
             CREATE TRIGGER injected_failure BEFORE INSERT ON messages \
             FOR EACH ROW EXECUTE FUNCTION injected_failure()",
            "DROP TRIGGER injected_failure ON messages; DROP FUNCTION injected_failure()",
        )
    };
    sql(database_url, inject).await;
    let flaky = json!({"to": "+14155550183", "type": "text", "text": {"body": "flaky"}});
    let failed = race("order-3", flaky.clone(), 4).await;
    for answer in &failed {
        answer.expect_error(500, "internal_error");
    }
    assert_eq!(contacts_with("+14155550183").await, 0, "partial work kept");
    sql(database_url, remove).await;
    let answers = race("order-3", flaky, 10).await;
    for answer in &answers {
        assert_eq!(
            (answer.status, &answer.body),
            (answers[0].status, &answers[0].body)
        );
    }
    assert_eq!(replayed(&answers), 9);
    let contact_id = answers[0].expect(202)["contact_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(messages_to(contact_id).await, 1);
    assert_eq!(contacts_with("+14155550183").await, 1);

    // The same for a contact (its own unique phone racing) and a bulk batch.
    let contact = json!({"phone": "+14155550184", "name": "Ada"});
    let answers = futures::future::join_all((0..6).map(|_| {
        Api::send(
            api.request(Method::POST, "/v1/contacts", Auth::Bearer)
                .header("idempotency-key", "contact-1")
                .json(&contact),
        )
    }))
    .await;
    for answer in &answers {
        assert_eq!(
            (answer.status.as_u16(), &answer.body),
            (201, &answers[0].body)
        );
    }
    let bulk = json!({"type": "text", "text": {"body": "hi"},
        "recipients": [{"to": "+14155550185"}, {"to": "+14155550186"}]});
    let answers = futures::future::join_all((0..6).map(|_| {
        Api::send(
            api.request(Method::POST, "/v1/messages/bulk", Auth::Bearer)
                .header("idempotency-key", "bulk-1")
                .json(&bulk),
        )
    }))
    .await;
    for answer in &answers {
        assert_eq!(
            (answer.status.as_u16(), &answer.body),
            (202, &answers[0].body)
        );
    }
    let batch_id = answers[0].body["batch_id"].as_str().unwrap();
    let batch = api.get(&format!("/v1/batches/{batch_id}")).await;
    assert_eq!(batch.expect(200)["total"], 2);
}

/// API keys of the session's account that are not revoked.
async fn live_keys(admin: &crate::harness::Admin) -> usize {
    admin.get("/admin/keys?limit=200").await.expect(200)["data"]
        .as_array()
        .map_or(0, |keys| {
            keys.iter().filter(|k| k["status"] != "revoked").count()
        })
}

/// Small per-account bounds, so the bound tests reach them quickly.
fn small_bounds() -> Options {
    Options::default()
        .backend("WIZ_BACKEND__ACCOUNT_LIMITS__MAX_API_KEYS", "3")
        .backend("WIZ_BACKEND__ACCOUNT_LIMITS__MAX_WEBHOOK_ENDPOINTS", "2")
        .backend(
            "WIZ_BACKEND__ACCOUNT_LIMITS__MAX_PENDING_DELIVERIES_PER_ENDPOINT",
            "5",
        )
}

/// Per-account bounds (issue 9 point 8), configured to 3 keys, 2 endpoints and 5 pending
/// deliveries per endpoint: parallel creates at the bound never overshoot it, the refusals are
/// 422s naming the bound, a revoked key frees its place, and an endpoint at its delivery bound
/// misses events (counted, logged) while the healthy endpoint beside it gets every one.
pub async fn per_account_bounds_hold_under_parallel_creates(stack: &Stack) {
    let admin = stack.admin().await;
    let before = live_keys(&admin).await;
    assert!(before < 3, "{before} keys before the test");
    let creates = futures::future::join_all(
        (0..10).map(|i| admin.post("/admin/keys", json!({"name": format!("burst {i}")}))),
    )
    .await;
    let created: Vec<_> = creates.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 3 - before, "keys created in the burst");
    for refused in creates.iter().filter(|r| r.status != 201) {
        refused.expect_error(422, "too_many_api_keys");
    }
    assert_eq!(live_keys(&admin).await, 3);
    let first_id = created[0].body["id"].as_str().unwrap().to_string();
    admin
        .post(&format!("/admin/keys/{first_id}/revoke"), json!({}))
        .await
        .expect(200);
    let key = admin.create_key(json!({})).await;
    admin
        .post("/admin/keys", json!({"name": "one too many"}))
        .await
        .expect_error(422, "too_many_api_keys");

    // Endpoints: one healthy receiver, one that never answers (connection refused).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let healthy_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let inbox = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let inbox = inbox.clone();
            async move {
                inbox.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dead_url = format!("http://127.0.0.1:{}/hook", crate::harness::free_port());
    let creates = futures::future::join_all((0..6).map(|i| {
        let url = if i % 2 == 0 { &healthy_url } else { &dead_url };
        admin.post(
            "/admin/webhooks",
            json!({"url": url, "events": ["contact.created"], "description": format!("burst {i}")}),
        )
    }))
    .await;
    let created: Vec<_> = creates.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 2, "endpoints created in the burst");
    for refused in creates.iter().filter(|r| r.status != 201) {
        refused.expect_error(422, "too_many_webhook_endpoints");
    }
    // Make it one healthy and one dead endpoint, whichever two won.
    let ids: Vec<String> = created
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    for (id, url) in ids.iter().zip([&healthy_url, &dead_url]) {
        admin
            .patch(&format!("/admin/webhooks/{id}"), json!({"url": url}))
            .await
            .expect(200);
    }
    let (healthy, dead) = (&ids[0], &ids[1]);

    stack.wait_synced().await;
    let api = stack.api(&key);
    // One event at a time, each delivered to the healthy endpoint before the next, so only the
    // dead endpoint's deliveries pile up (a burst of more than 5 events in one fan-out pass
    // would meet the healthy endpoint's bound too).
    for i in 0..12 {
        api.post(
            "/v1/contacts",
            json!({"phone": format!("+1415555030{i:02}")}),
        )
        .await
        .expect(201);
        eventually(
            "the healthy endpoint's delivery",
            Duration::from_secs(20),
            || async { (received.lock().unwrap().len() > i).then_some(()) },
        )
        .await;
    }
    let refused = eventually("the refusals counted", Duration::from_secs(20), || async {
        let metrics = stack.backend_metrics().await;
        crate::harness::metric_value(
            &metrics,
            "wiz_webhook_deliveries_refused_total{reason=\"endpoint_backlog_full\"}",
        )
        .filter(|n| *n >= 7.0)
    })
    .await;
    assert_eq!(refused, 7.0);
    let deliveries = admin
        .get(&format!("/admin/webhooks/{dead}/deliveries?limit=200"))
        .await;
    let deliveries = deliveries.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(
        deliveries.len(),
        5,
        "pending deliveries of the dead endpoint"
    );
    let detail = admin.get(&format!("/admin/webhooks/{dead}")).await;
    assert!(
        detail
            .body
            .to_string()
            .contains("max_pending_deliveries_per_endpoint"),
        "the endpoint's log tells why: {}",
        detail.body
    );
    let healthy_deliveries = admin
        .get(&format!("/admin/webhooks/{healthy}/deliveries?limit=200"))
        .await;
    assert_eq!(
        healthy_deliveries.expect(200)["data"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
}

#[tokio::test]
async fn idempotency_and_per_account_bounds_hold_on_sqlite() {
    let stack = Stack::start_with(small_bounds()).await;
    let url = stack.database_url();
    idempotent_retries_race_each_other_and_a_failure(&stack, &url).await;
    per_account_bounds_hold_under_parallel_creates(&stack).await;
}

#[tokio::test]
async fn idempotency_and_per_account_bounds_hold_on_postgresql() {
    let pg = crate::postgres::Postgres::start().await;
    let stack = crate::postgres::stack_on(&pg, small_bounds()).await;
    idempotent_retries_race_each_other_and_a_failure(&stack, &pg.url).await;
    per_account_bounds_hold_under_parallel_creates(&stack).await;
}

/// `POST /admin/session` through `base` with `headers` added.
async fn login(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
    headers: &[(&str, String)],
) -> Reply {
    let mut request = http
        .post(format!("{base}/admin/session"))
        .json(&json!({"email": email, "password": password}));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    Api::send(request).await
}

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// Issue 9's lockout: failed logins with made-up emails and with the real admin's email, all from
/// one client address, leave the admin free to log in from any other address (and the address's
/// other users free to log in). The gateway trusts the test as a proxy, so X-Forwarded-For sets
/// the client address it proves to the backend.
#[tokio::test]
async fn login_failures_never_lock_an_account_out_from_another_address() {
    let stack = Stack::start_with(
        Options::default()
            .gateway("WIZ_GATEWAY__TRUSTED_PROXIES", "127.0.0.1/32")
            .backend("WIZ_BACKEND__LOGIN_THROTTLE__EMAIL_SLOWDOWN_AFTER", "8"),
    )
    .await;
    let http = reqwest::Client::new();
    let base = stack.gateway_url();
    let from = |ip: &str| vec![("x-forwarded-for", ip.to_string())];
    let attacker = from("203.0.113.5");

    // Made-up emails from the attacker's address: each a plain wrong login.
    for i in 0..6 {
        login(
            &http,
            &base,
            &format!("nobody{i}@example.test"),
            "guess",
            &attacker,
        )
        .await
        .expect_error(401, "invalid_login");
    }
    // They do not block the real admin, even from that address.
    login(&http, &base, ADMIN_EMAIL, ADMIN_PASSWORD, &attacker)
        .await
        .expect(200);
    // Five wrong passwords for the admin from there: the sixth attempt is refused, even with the
    // right password, with Retry-After.
    for _ in 0..5 {
        login(&http, &base, ADMIN_EMAIL, "guess", &attacker)
            .await
            .expect_error(401, "invalid_login");
    }
    for password in ["guess", ADMIN_PASSWORD] {
        let refused = login(&http, &base, ADMIN_EMAIL, password, &attacker).await;
        refused.expect_error(429, "too_many_login_attempts");
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=300).contains(&retry), "Retry-After {retry}");
    }
    // The admin from another address logs in; another user from the attacker's address too.
    login(
        &http,
        &base,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        &from("198.51.100.7"),
    )
    .await
    .expect(200);
    let created = stack.backend_cli(&[
        "accounts",
        "create",
        "--name",
        "Neighbour",
        "--plan",
        "wiz_bot",
        "--admin-email",
        "neighbour@example.test",
        "--admin-password",
        "neighbour-password",
    ]);
    assert!(created.status.success(), "{created:?}");
    login(
        &http,
        &base,
        "neighbour@example.test",
        "neighbour-password",
        &attacker,
    )
    .await
    .expect(200);

    // Failures sprayed over many addresses only slow the email down (beyond 8 here): the owner
    // still logs in from a fresh address.
    for i in 0..10 {
        login(
            &http,
            &base,
            ADMIN_EMAIL,
            "guess",
            &from(&format!("192.0.2.{}", 10 + i)),
        )
        .await
        .expect_error(401, "invalid_login");
    }
    login(
        &http,
        &base,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        &from("198.51.100.8"),
    )
    .await
    .expect(200);
    // An IPv6 client is one /64: a new address inside it does not get a fresh budget.
    for _ in 0..5 {
        login(&http, &base, ADMIN_EMAIL, "guess", &from("2001:db8:7:7::1"))
            .await
            .expect_error(401, "invalid_login");
    }
    login(
        &http,
        &base,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        &from("2001:db8:7:7::2"),
    )
    .await
    .expect_error(429, "too_many_login_attempts");
    login(
        &http,
        &base,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        &from("2001:db8:7:8::1"),
    )
    .await
    .expect(200);
}

/// The gateway replaces X-Forwarded-For / X-Real-IP from an untrusted client, so a new value on
/// each attempt gets no new budget (nor does a forged x-wiz-client-ip sent straight to the
/// backend); and 20 parallel wrong passwords for one (email, address) get
/// exactly the budget of password checks: 5 answers 401, 15 answers 429.
#[tokio::test]
async fn forwarded_for_and_parallel_guesses_do_not_escape_the_login_throttle() {
    // A long wait for an Argon2 turn, so a loaded machine cannot turn a check into a 503.
    let stack = Stack::start_with(
        Options::default().backend("WIZ_BACKEND__PASSWORD_HASHING__MAX_WAIT", "60s"),
    )
    .await;
    let http = reqwest::Client::new();
    let base = stack.gateway_url();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let spoofed = vec![
            ("x-forwarded-for", format!("198.51.100.{i}")),
            ("x-real-ip", format!("198.51.100.{i}")),
        ];
        let reply = login(&http, &base, ADMIN_EMAIL, "guess", &spoofed).await;
        statuses.push((reply.status.as_u16(), reply.code().to_string()));
    }
    let expected: Vec<(u16, String)> = (0..12)
        .map(|i| match i {
            0..5 => (401, "invalid_login".to_string()),
            _ => (429, "too_many_login_attempts".to_string()),
        })
        .collect();
    assert_eq!(statuses, expected);

    // Straight to the backend, an unproven (or forged) x-wiz-client-ip is ignored: the TCP peer
    // is the address, so a new value on each attempt gets no new budget either.
    let backend = stack.backend_url();
    let mut statuses = Vec::new();
    for i in 0..7 {
        let mut headers = vec![("x-wiz-client-ip", format!("192.0.2.{i}"))];
        if i % 2 == 1 {
            headers.push((
                "x-wiz-gateway-proof",
                format!("v2,{},{}", unix_now(), "00".repeat(32)),
            ));
        }
        let reply = login(&http, &backend, "direct@example.test", "guess", &headers).await;
        statuses.push((reply.status.as_u16(), reply.code().to_string()));
    }
    assert_eq!(statuses, expected[..7].to_vec());

    // The race: 20 wrong passwords at once for one email from one address.
    let attempts = (0..20).map(|_| {
        let http = http.clone();
        let base = base.clone();
        tokio::spawn(async move { login(&http, &base, "race@example.test", "guess", &[]).await })
    });
    let mut checked = 0;
    let mut refused = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        let reply = attempt.await.unwrap();
        match reply.status.as_u16() {
            401 => {
                reply.expect_error(401, "invalid_login");
                checked += 1;
            }
            429 => {
                reply.expect_error(429, "too_many_login_attempts");
                assert!(reply.header("retry-after").is_some());
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert_eq!((checked, refused), (5, 15));
}

/// Issue 9's memory exhaustion: 60 logins with a ~3.9 MB email from 8 concurrent tasks (a new
/// X-Forwarded-For each) are all refused with an error object, and the backend's peak resident
/// memory stays within 32 MiB of what it was before. Then a flood of real password checks on a
/// backend allowed one at a time: the excess waits briefly and gets 503 `server_busy`.
#[tokio::test]
async fn oversized_logins_and_hash_floods_keep_backend_memory_bounded() {
    let stack = Stack::start_with(
        Options::default()
            .backend("WIZ_BACKEND__PASSWORD_HASHING__MAX_CONCURRENT", "1")
            .backend("WIZ_BACKEND__PASSWORD_HASHING__MAX_WAIT", "100ms"),
    )
    .await;
    let http = reqwest::Client::new();
    let base = stack.gateway_url();
    let pid = stack.backend_pid();
    // One real login first, so Argon2's and the database's working memory count as baseline.
    Admin::login(&base, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let before_kib = proc_status_kib(pid, "VmRSS");

    let email = format!("{}@example.test", "a".repeat(3_900_000));
    let body = std::sync::Arc::new(
        serde_json::to_vec(&json!({"email": email, "password": "guess"})).unwrap(),
    );
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..8).map(|_| {
        let (http, base, body, next) = (http.clone(), base.clone(), body.clone(), next.clone());
        tokio::spawn(async move {
            let mut replies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 60 {
                let n = replies.len();
                let request = http
                    .post(format!("{base}/admin/session"))
                    .header("content-type", "application/json")
                    .header("x-forwarded-for", format!("10.{n}.{}.1", body.len() % 250))
                    .body(body.as_ref().clone());
                replies.push(Api::send(request).await);
            }
            replies
        })
    });
    let mut replies = Vec::new();
    for worker in workers.collect::<Vec<_>>() {
        replies.extend(worker.await.unwrap());
    }
    assert_eq!(replies.len(), 60);
    for reply in &replies {
        assert!(
            reply.status.is_client_error(),
            "{} {}",
            reply.status,
            reply.body
        );
        reply.expect_error(413, "payload_too_large");
    }
    let peak_kib = proc_status_kib(pid, "VmHWM");
    let growth_mib = peak_kib.saturating_sub(before_kib) / 1024;
    eprintln!(
        "backend RSS before {} MiB, peak after 60 oversized logins {} MiB (+{growth_mib} MiB)",
        before_kib / 1024,
        peak_kib / 1024
    );
    assert!(
        growth_mib <= 32,
        "backend peak RSS grew by {growth_mib} MiB"
    );

    // 12 wrong passwords at once for 12 emails: one check at a time, 100 ms of waiting for a
    // turn, so some are refused with 503 and Retry-After; none of them is held indefinitely.
    let attempts = (0..12).map(|i| {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            login(
                &http,
                &base,
                &format!("flood{i}@example.test"),
                "guess",
                &[],
            )
            .await
        })
    });
    let mut busy = 0;
    for attempt in attempts.collect::<Vec<_>>() {
        let reply = attempt.await.unwrap();
        match reply.status.as_u16() {
            401 => reply.expect_error(401, "invalid_login"),
            503 => {
                reply.expect_error(503, "server_busy");
                assert_eq!(reply.header("retry-after"), Some("1"));
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
    assert!(busy > 0, "no attempt was refused for capacity");
    let peak_kib = proc_status_kib(pid, "VmHWM");
    eprintln!(
        "backend peak RSS after the hash flood {} MiB, now {} MiB",
        peak_kib / 1024,
        proc_status_kib(pid, "VmRSS") / 1024
    );
    assert!(
        peak_kib.saturating_sub(before_kib) / 1024 <= 32,
        "backend peak RSS {} MiB over {} MiB",
        peak_kib / 1024,
        before_kib / 1024
    );
    // A refusal for capacity is not a failed login: the same emails are not throttled for it.
    Admin::login(&base, ADMIN_EMAIL, ADMIN_PASSWORD).await;
}

/// A session ends at `session.absolute_lifetime` after the login (3 s here) even when it is used
/// every 200 ms; until then it works.
#[tokio::test]
async fn sessions_end_at_their_absolute_lifetime_despite_constant_use() {
    let stack = Stack::start_with(
        Options::default()
            .backend("WIZ_BACKEND__SESSION__TTL", "1h")
            .backend("WIZ_BACKEND__SESSION__ABSOLUTE_LIFETIME", "3s"),
    )
    .await;
    let started = Instant::now();
    let admin = Admin::login(&stack.gateway_url(), ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let deadline = started + Duration::from_secs(30);
    let ended_after = loop {
        let reply = admin.get("/admin/session").await;
        let elapsed = started.elapsed();
        if reply.status == 401 {
            reply.expect_error(401, "session_expired");
            break elapsed;
        }
        reply.expect(200);
        assert!(Instant::now() < deadline, "the session never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        ended_after >= Duration::from_secs(3),
        "ended after {ended_after:?}"
    );
    // It stays ended.
    admin
        .get("/admin/keys")
        .await
        .expect_error(401, "session_expired");
}
