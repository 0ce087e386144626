//! The gateway's checks (SPEC §4) and limits (SPEC §5), across the real binaries.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::Method;
use serde_json::json;

use crate::harness::{eventually, Api, Auth, Options, Reply, Stack};

async fn contacts(api: &Api, auth: Auth) -> Reply {
    Api::send(api.request(Method::GET, "/v1/contacts", auth)).await
}

#[tokio::test]
async fn both_auth_styles_are_accepted_and_credentials_never_reach_the_backend() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin.create_key(json!({})).await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    let created = Api::send(
        api.request(Method::POST, "/v1/contacts", Auth::Basic)
            .json(&json!({"phone": "+14155550101", "name": "Ada"})),
    )
    .await;
    created.expect(201);
    let listed = contacts(&api, Auth::Bearer).await;
    let data = listed.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["name"], "Ada");

    // Limit headers on every /v1 answer.
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-dailylimit-limit",
        "x-dailylimit-remaining",
        "ratelimit-policy",
        "ratelimit",
        "x-request-id",
    ] {
        assert!(listed.header(name).is_some(), "missing {name}");
    }
    assert_eq!(listed.header("x-ratelimit-limit"), Some("60"));
    assert_eq!(listed.header("x-dailylimit-limit"), Some("1000"));
    assert_eq!(listed.header("x-dailylimit-remaining"), Some("998"));
    assert!(listed
        .header("ratelimit-policy")
        .unwrap()
        .contains("\"minute\";q=60;w=60"));

    // A sane client request id is kept; an insane one replaced.
    let reply = Api::send(
        api.request(Method::GET, "/v1/contacts", Auth::Bearer)
            .header("x-request-id", "trace-abc_123"),
    )
    .await;
    assert_eq!(reply.header("x-request-id"), Some("trace-abc_123"));
    let reply = Api::send(
        api.request(Method::GET, "/v1/contacts", Auth::Bearer)
            .header("x-request-id", "bad id with spaces"),
    )
    .await;
    assert_ne!(reply.header("x-request-id"), Some("bad id with spaces"));

    // Neither the key nor the secret ever shows in logs or metrics.
    let logs = stack.logs();
    let metrics = stack.gateway_metrics().await + &stack.backend_metrics().await;
    for secret in [
        key.key.as_str(),
        key.secret.as_str(),
        crate::harness::ADMIN_PASSWORD,
    ] {
        assert!(!logs.contains(secret), "a credential leaked into logs");
        assert!(
            !metrics.contains(secret),
            "a credential leaked into metrics"
        );
    }
    assert!(
        logs.contains(&key.key[..12]),
        "access log names the key prefix"
    );
}

#[tokio::test]
async fn every_refusal_has_its_status_and_code() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let good = admin.create_key(json!({})).await;
    let walled = admin
        .create_key(json!({"ip_whitelist": ["203.0.113.7", "10.0.0.0/8"]}))
        .await;
    let revoked = admin.create_key(json!({})).await;
    admin
        .post(&format!("/admin/keys/{}/revoke", revoked.id), json!({}))
        .await
        .expect(200);
    stack.wait_synced().await;
    let base = stack.api(&good);

    let reply = contacts(&base, Auth::None).await;
    reply.expect_error(401, "missing_credentials");
    let reply = Api::send(
        base.request(Method::GET, "/v1/contacts", Auth::None)
            .header("authorization", "Bearer not-a-key")
            .header("x-api-secret", &good.secret),
    )
    .await;
    reply.expect_error(401, "malformed_credentials");
    let reply = Api::send(
        base.request(Method::GET, "/v1/contacts", Auth::None)
            .header("authorization", format!("Bearer {}", good.key)),
    )
    .await;
    assert!(
        matches!(
            reply.code(),
            "missing_credentials" | "malformed_credentials"
        ),
        "{}",
        reply.body
    );
    assert_eq!(reply.status, 401);

    // Unknown key and wrong secret: the same answer, byte for byte but the request id.
    let unknown = Api {
        key: format!("pk_live_{}", "A".repeat(32)),
        ..base.clone()
    };
    let wrong_secret = Api {
        secret: format!("sk_live_{}", "B".repeat(40)),
        ..base.clone()
    };
    let a = contacts(&unknown, Auth::Bearer).await;
    let b = contacts(&wrong_secret, Auth::Bearer).await;
    a.expect_error(401, "invalid_credentials");
    b.expect_error(401, "invalid_credentials");
    let strip = |r: &Reply| {
        let mut body = r.body.clone();
        body["error"]["request_id"] = json!(null);
        body
    };
    assert_eq!(strip(&a), strip(&b));

    contacts(&stack.api(&revoked), Auth::Bearer)
        .await
        .expect_error(401, "key_revoked");
    contacts(&stack.api(&walled), Auth::Bearer)
        .await
        .expect_error(403, "ip_not_allowed");

    // /internal is never reachable through the gateway.
    let reply = Api::send(base.request(Method::GET, "/internal/keys", Auth::Bearer)).await;
    assert_eq!(reply.status, 404, "{}", reply.body);

    // The backend refuses /v1 requests that did not come through the gateway.
    let direct = Api {
        base: stack.backend_url(),
        ..base.clone()
    };
    let reply = contacts(&direct, Auth::Bearer).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    assert!(reply.code().contains("gateway_proof"), "{}", reply.body);
}

#[tokio::test]
async fn expired_keys_are_refused() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let soon = time_in(Duration::from_secs(2));
    let key = admin.create_key(json!({"expires_at": soon})).await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    contacts(&api, Auth::Bearer).await.expect(200);
    eventually("key to expire", Duration::from_secs(10), || async {
        let r = contacts(&api, Auth::Bearer).await;
        (r.status == 401).then_some(r)
    })
    .await
    .expect_error(401, "key_expired");
}

fn time_in(delta: Duration) -> String {
    let t = std::time::SystemTime::now() + delta;
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // RFC 3339 in UTC without pulling a date crate into the test binary.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[tokio::test]
async fn per_minute_and_daily_limits_refuse_with_retry_after_and_do_not_count_refusals() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"rate_limit_per_minute": 3, "daily_limit": 10}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    // Failed authentications with this key's id do not count against its limits.
    let wrong = Api {
        secret: format!("sk_live_{}", "C".repeat(40)),
        ..api.clone()
    };
    for _ in 0..3 {
        contacts(&wrong, Auth::Bearer)
            .await
            .expect_error(401, "invalid_credentials");
    }
    for i in 0..3 {
        let r = contacts(&api, Auth::Bearer).await;
        r.expect(200);
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            Some(&*(2 - i).to_string())
        );
    }
    for _ in 0..3 {
        let r = contacts(&api, Auth::Bearer).await;
        r.expect_error(429, "rate_limited");
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    // Refusals were not counted against the day: 10 - 3 accepted.
    let r = contacts(&api, Auth::Bearer).await;
    assert_eq!(r.header("x-dailylimit-remaining"), Some("7"));

    // Daily cap, exactly, under concurrency.
    let daily = admin
        .create_key(json!({"rate_limit_per_minute": 1000, "daily_limit": 20}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&daily);
    let replies = join_all((0..35).map(|_| contacts(&api, Auth::Bearer))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let capped: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok, 20, "exactly the daily limit is accepted");
    assert_eq!(capped.len(), 15);
    for r in capped {
        r.expect_error(429, "daily_limit_exceeded");
        assert!(r.header("retry-after").is_some());
    }
}

#[tokio::test]
async fn the_minute_window_rolls_instead_of_resetting_on_the_minute() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin.create_key(json!({"rate_limit_per_minute": 5})).await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    // Spend the whole budget late in one calendar minute ...
    wait_for_second_of_minute(50).await;
    for _ in 0..5 {
        contacts(&api, Auth::Bearer).await.expect(200);
    }
    // ... and the start of the next minute is still inside the rolling 60 s window.
    wait_for_second_of_minute(2).await;
    let r = contacts(&api, Auth::Bearer).await;
    r.expect_error(429, "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        retry >= 30,
        "the burst is only ~12 s old; Retry-After {retry}"
    );
}

/// Waits until the wall clock's second-of-minute is `second` (0..59).
async fn wait_for_second_of_minute(second: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let in_minute = now.as_millis() as u64 % 60_000;
    let target = second * 1000 + 200;
    let wait = (target + 60_000 - in_minute) % 60_000;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[tokio::test]
async fn key_changes_reach_the_gateway_within_a_second() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    stack.wait_synced().await;

    let within_a_second = |api: Api, want: u16, what: &'static str| async move {
        let started = Instant::now();
        loop {
            let r = contacts(&api, Auth::Bearer).await;
            if r.status.as_u16() == want {
                return r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{what}: still {} after 1 s: {}",
                r.status,
                r.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // New key.
    let key = admin.create_key(json!({})).await;
    within_a_second(stack.api(&key), 200, "new key").await;

    // Changed limits.
    admin
        .patch(
            &format!("/admin/keys/{}", key.id),
            json!({"rate_limit_per_minute": 1}),
        )
        .await
        .expect(200);
    within_a_second(stack.api(&key), 429, "lowered limit")
        .await
        .expect_error(429, "rate_limited");

    // Changed whitelist.
    let walled = admin.create_key(json!({})).await;
    within_a_second(stack.api(&walled), 200, "second key").await;
    admin
        .patch(
            &format!("/admin/keys/{}", walled.id),
            json!({"ip_whitelist": ["192.0.2.1"]}),
        )
        .await
        .expect(200);
    within_a_second(stack.api(&walled), 403, "whitelist")
        .await
        .expect_error(403, "ip_not_allowed");

    // Rotation without grace: the old pair stops, the new one works.
    let rotating = admin.create_key(json!({})).await;
    within_a_second(stack.api(&rotating), 200, "third key").await;
    let body = admin
        .post(
            &format!("/admin/keys/{}/rotate", rotating.id),
            json!({"grace_seconds": 0}),
        )
        .await;
    let body = body.expect(200).clone();
    let new = crate::harness::ApiKey {
        id: rotating.id.clone(),
        key: body["key"].as_str().unwrap().into(),
        secret: body["secret"].as_str().unwrap().into(),
    };
    assert_ne!(new.key, rotating.key);
    within_a_second(stack.api(&rotating), 401, "old pair after rotation")
        .await
        .expect_error(401, "invalid_credentials");
    within_a_second(stack.api(&new), 200, "new pair after rotation").await;

    // Rotation with grace: both pairs work for a while.
    let body = admin
        .post(
            &format!("/admin/keys/{}/rotate", new.id),
            json!({"grace_seconds": 60}),
        )
        .await;
    let body = body.expect(200).clone();
    let newer = crate::harness::ApiKey {
        id: new.id.clone(),
        key: body["key"].as_str().unwrap().into(),
        secret: body["secret"].as_str().unwrap().into(),
    };
    within_a_second(stack.api(&newer), 200, "rotated pair").await;
    contacts(&stack.api(&new), Auth::Bearer).await.expect(200);

    // Revocation.
    admin
        .post(&format!("/admin/keys/{}/revoke", newer.id), json!({}))
        .await
        .expect(200);
    within_a_second(stack.api(&newer), 401, "revoked key")
        .await
        .expect_error(401, "key_revoked");
}

#[tokio::test]
async fn a_gateway_restart_keeps_daily_usage() {
    let mut stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"daily_limit": 5, "rate_limit_per_minute": 100}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    for _ in 0..3 {
        contacts(&api, Auth::Bearer).await.expect(200);
    }
    stack.restart_gateway().await;
    stack.wait_synced().await;
    for _ in 0..2 {
        contacts(&api, Auth::Bearer).await.expect(200);
    }
    contacts(&api, Auth::Bearer)
        .await
        .expect_error(429, "daily_limit_exceeded");
}

/// SPEC §10: the daily cap stays exact across a gateway SIGKILL with the default memory store.
/// Usage reports are made rare here, so without the usage journal every request of the first
/// half would be forgotten and admitted again (measured: 40 admitted after the kill, not 15).
#[tokio::test]
async fn a_gateway_killed_with_sigkill_keeps_the_daily_cap_exact() {
    let mut stack = Stack::start_with(
        Options::default().gateway("WIZ_GATEWAY__USAGE__FLUSH_INTERVAL_MS", "60000"),
    )
    .await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"daily_limit": 40, "rate_limit_per_minute": 1000}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    for _ in 0..25 {
        contacts(&api, Auth::Bearer).await.expect(200);
    }
    stack.kill_gateway();
    stack.start_gateway().await;
    stack.wait_synced().await;
    let mut accepted = 0;
    loop {
        let r = contacts(&api, Auth::Bearer).await;
        if r.status == 429 {
            r.expect_error(429, "daily_limit_exceeded");
            break;
        }
        r.expect(200);
        accepted += 1;
        assert!(
            accepted <= 40,
            "the restarted gateway forgot the killed one's usage"
        );
    }
    assert_eq!(
        accepted, 15,
        "25 before the kill, 15 after: exactly the daily limit of 40"
    );
    assert!(
        stack.logs().contains("left accepted requests unreported"),
        "{}",
        stack.logs()
    );
}

#[tokio::test]
async fn backend_down_answers_json_for_good_keys_and_401_for_bad_ones_then_recovers() {
    let mut stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin.create_key(json!({})).await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    contacts(&api, Auth::Bearer).await.expect(200);

    stack.stop_backend().await;
    let r = contacts(&api, Auth::Bearer).await;
    assert!(
        matches!(r.status.as_u16(), 502 | 503),
        "status {} {}",
        r.status,
        r.body
    );
    assert_eq!(r.body["error"]["type"], "api_error", "{}", r.body);
    let bad = Api {
        secret: format!("sk_live_{}", "D".repeat(40)),
        ..api.clone()
    };
    contacts(&bad, Auth::Bearer)
        .await
        .expect_error(401, "invalid_credentials");
    // The gateway keeps answering health checks with its last key table.
    assert_eq!(
        reqwest::get(format!("{}/healthz", stack.gateway_url()))
            .await
            .unwrap()
            .status(),
        200
    );

    stack.start_backend().await;
    eventually("recovery", Duration::from_secs(10), || async {
        (contacts(&api, Auth::Bearer).await.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn forwarded_for_is_only_believed_from_trusted_proxies() {
    // Untrusted peer: a spoofed X-Forwarded-For changes nothing.
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"ip_whitelist": ["203.0.113.7"]}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    Api::send(
        api.request(Method::GET, "/v1/contacts", Auth::Bearer)
            .header("x-forwarded-for", "203.0.113.7"),
    )
    .await
    .expect_error(403, "ip_not_allowed");
    drop(stack);

    // Loopback is a trusted proxy: the right-most untrusted hop is the client.
    let stack = Stack::start_with(
        Options::default().gateway("WIZ_GATEWAY__TRUSTED_PROXIES", "127.0.0.1/32,10.0.0.0/8"),
    )
    .await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"ip_whitelist": ["203.0.113.7"]}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    let via = |xff: &'static str| {
        let api = api.clone();
        async move {
            Api::send(
                api.request(Method::GET, "/v1/contacts", Auth::Bearer)
                    .header("x-forwarded-for", xff),
            )
            .await
        }
    };
    via("203.0.113.7").await.expect(200);
    via("198.51.100.9, 203.0.113.7, 10.1.1.1").await.expect(200);
    via("203.0.113.7, 198.51.100.9")
        .await
        .expect_error(403, "ip_not_allowed");
    contacts(&api, Auth::Bearer)
        .await
        .expect_error(403, "ip_not_allowed");
}

#[tokio::test]
async fn repeated_failed_authentications_are_slowed() {
    let stack = Stack::start().await;
    let api = Api {
        base: stack.gateway_url(),
        key: format!("pk_live_{}", "E".repeat(32)),
        secret: format!("sk_live_{}", "F".repeat(40)),
        http: reqwest::Client::new(),
    };
    let mut throttled = None;
    for _ in 0..200 {
        let r = contacts(&api, Auth::Bearer).await;
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
        r.expect_error(401, "invalid_credentials");
    }
    let r = throttled.expect("guessing keys at line rate is throttled");
    r.expect_error(429, "too_many_failed_attempts");
    assert!(r.header("retry-after").is_some());
}

/// `n` concurrent POSTs of `body` to `/v1/contacts`: each one's status and error code, or the
/// transport error that took its answer away.
async fn post_bodies(api: &Api, n: usize, body: &str) -> Vec<Result<(u16, String), String>> {
    join_all((0..n).map(|_| async {
        let request = api
            .request(Method::POST, "/v1/contacts", Auth::Bearer)
            .header("content-type", "application/json")
            .body(body.to_owned());
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
                Ok((
                    status,
                    body["error"]["code"].as_str().unwrap_or("").to_owned(),
                ))
            }
            Err(e) => Err(format!("{e:?}")),
        }
    }))
    .await
}

#[tokio::test]
async fn refused_requests_with_large_bodies_get_their_answer_not_a_reset() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"daily_limit": 1, "rate_limit_per_minute": 100}))
        .await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    // Over the gateway's 4 MiB: 413 at the edge, before any check, never counted.
    let oversized = format!(
        r#"{{"phone":"+14155550198","name":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    for _ in 0..3 {
        for answer in post_bodies(&api, 4, &oversized).await {
            assert_eq!(answer, Ok((413, "payload_too_large".to_string())));
        }
    }
    // A large body under the limit refused by a check (wrong secret, then the throttle).
    let bad = Api {
        secret: format!("sk_live_{}", "C".repeat(40)),
        ..api.clone()
    };
    let large = format!(
        r#"{{"phone":"+14155550198","name":"{}"}}"#,
        "x".repeat(2 * 1024 * 1024)
    );
    for answer in post_bodies(&bad, 6, &large).await {
        let (status, code) = answer.expect("an answer, not a broken connection");
        assert!(
            (status, code.as_str()) == (401, "invalid_credentials")
                || (status, code.as_str()) == (429, "too_many_failed_attempts"),
            "{status} {code}"
        );
    }
    // The daily limit of 1 is still unspent: none of the 413s counted.
    contacts(&api, Auth::Bearer).await.expect(200);
    contacts(&api, Auth::Bearer)
        .await
        .expect_error(429, "daily_limit_exceeded");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_a_413_not_a_reset() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let key = admin.create_key(json!({})).await;
    stack.wait_synced().await;

    // No Content-Length, so the gateway cannot refuse it upfront; the backend refuses it when
    // its read passes 4 MiB, and the client must get that answer, not a reset. 5 MiB in 64 KiB
    // chunks.
    let mut conn =
        tokio::net::TcpStream::connect(stack.gateway_url().trim_start_matches("http://"))
            .await
            .unwrap();
    let head = format!(
        "POST /v1/contacts HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\n\
         X-Api-Secret: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        key.key, key.secret
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent_all = true;
    for _ in 0..80 {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if conn.write_all(&framed).await.is_err() {
            sent_all = false;
            break;
        }
    }
    if sent_all {
        conn.write_all(b"0\r\n\r\n").await.unwrap();
    }
    // The whole answer: headers, then Content-Length bytes. The connection may stay open.
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        let l = l.to_ascii_lowercase();
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .expect("a Content-Length");
                if answer.len() >= end + 4 + length {
                    return;
                }
            }
            let n = conn.read(&mut buf).await.expect("the answer, not a reset");
            assert!(n > 0, "closed before the whole answer: {text}");
            answer.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "{answer}");
    assert!(
        sent_all,
        "the gateway drained the body instead of cutting it off"
    );

    // The connection was closed, the gateway is fine, and the contact was never created.
    let api = stack.api(&key);
    let listed = contacts(&api, Auth::Bearer).await;
    assert_eq!(listed.expect(200)["data"], json!([]));
}

/// An answer the backend gives before reading the body (no session, no route) must leave the
/// gateway's pooled connection reusable: the request sent next on it gets its own answer, never
/// a 502 for a connection the backend was quietly closing.
#[tokio::test]
async fn early_answers_leave_the_backend_connection_reusable() {
    let stack = Stack::start().await;
    let http = reqwest::Client::new();
    let gateway = stack.gateway_url();
    let large = format!(r#"{{"name":"{}"}}"#, "x".repeat(200 * 1024));
    let mut statuses = std::collections::BTreeMap::<(&str, u16), usize>::new();
    // One request at a time, so each one goes out on the connection the previous one used.
    for _ in 0..100 {
        for (name, path, body) in [
            ("no session", "/admin/keys", large.clone()),
            ("no route", "/admin/no-such-route", large.clone()),
            (
                "login",
                "/admin/session",
                r#"{"email":"a@example.com","password":"wrong"}"#.to_owned(),
            ),
        ] {
            let response = http
                .post(format!("{gateway}{path}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("an answer");
            *statuses
                .entry((name, response.status().as_u16()))
                .or_default() += 1;
        }
    }
    assert!(
        statuses.keys().all(|(_, status)| *status < 500),
        "answers by request: {statuses:?}"
    );
}
