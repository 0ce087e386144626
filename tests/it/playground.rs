//! Playground credentials (issue 13) through the real gateway: a credential minted for a key acts
//! as that key, with its checks and limits applied and counted, and is refused after its lifetime,
//! after the key is revoked and after it is rotated. Nothing of it reaches a log.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{eventually, Api, Auth, Options, Reply, Stack};

const TEXT: &str = r#"{"to":"+14155550123","type":"text","text":{"body":"hi"}}"#;

async fn with_credential(stack: &Stack, credential: &str, method: Method, path: &str) -> Reply {
    let mut request = reqwest::Client::new()
        .request(method.clone(), format!("{}{path}", stack.gateway_url()))
        .header("authorization", format!("Bearer {credential}"));
    if method == Method::POST {
        request = request
            .header("content-type", "application/json")
            .body(TEXT);
    }
    Api::send(request).await
}

fn credential_of(reply: &Reply) -> String {
    let body: &Value = reply.expect(201);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    body["credential"].as_str().expect("credential").to_string()
}

#[tokio::test]
async fn playground_credential_acts_as_its_key_until_expiry_revocation_or_rotation() {
    // A short lifetime, so expiry is observable in the test.
    let stack = Stack::start_with(
        Options::default().backend("WIZ_BACKEND__PLAYGROUND__CREDENTIAL_TTL", "3s"),
    )
    .await;
    let admin = stack.admin().await;
    let key = admin
        .create_key(json!({"name": "pg", "rate_limit_per_minute": 4}))
        .await;
    let other = admin.create_key(json!({"name": "other"})).await;
    stack.wait_synced().await;

    // Minting needs the session's CSRF token.
    let no_csrf = admin
        .http
        .post(format!(
            "{}/admin/keys/{}/playground-credential",
            stack.gateway_url(),
            key.id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status().as_u16(), 403);
    admin
        .post(
            "/admin/keys/key_doesnotexist/playground-credential",
            json!({}),
        )
        .await
        .expect_error(404, "not_found");

    let reply = admin
        .post(
            &format!("/admin/keys/{}/playground-credential", key.id),
            json!({}),
        )
        .await;
    let credential = credential_of(&reply);
    assert_eq!(reply.body["key_id"], json!(key.id));
    assert!(credential.starts_with("wpg_"));

    // It acts as the key: 202, the key's limit headers, counted in the key's window.
    let sent = with_credential(&stack, &credential, Method::POST, "/v1/messages").await;
    sent.expect(202);
    assert_eq!(sent.header("x-ratelimit-limit"), Some("4"));
    assert_eq!(sent.header("x-ratelimit-remaining"), Some("3"));
    assert!(
        sent.header("ratelimit-policy").is_some()
            && sent.header("x-dailylimit-remaining").is_some()
    );
    let own = stack.api(&key).get("/v1/contacts").await;
    own.expect(200);
    assert_eq!(own.header("x-ratelimit-remaining"), Some("2"));
    for _ in 0..2 {
        with_credential(&stack, &credential, Method::GET, "/v1/contacts")
            .await
            .expect(200);
    }
    let limited = with_credential(&stack, &credential, Method::GET, "/v1/contacts").await;
    limited.expect_error(429, "rate_limited");
    assert!(limited.header("retry-after").is_some());

    // It cannot be turned into another key's credential, and a secret header changes nothing.
    let forged = credential.replacen(&key.id, &other.id, 1);
    with_credential(&stack, &forged, Method::GET, "/v1/contacts")
        .await
        .expect_error(401, "invalid_credentials");

    // Refused after its lifetime.
    eventually(
        "the credential expires",
        Duration::from_secs(10),
        || async {
            let reply = with_credential(&stack, &credential, Method::GET, "/v1/contacts").await;
            (reply.status.as_u16() == 401).then_some(reply)
        },
    )
    .await
    .expect_error(401, "invalid_credentials");

    // Refused once its key is rotated (the old pair has a grace period; the credential does not).
    let fresh = credential_of(
        &admin
            .post(
                &format!("/admin/keys/{}/playground-credential", other.id),
                json!({}),
            )
            .await,
    );
    with_credential(&stack, &fresh, Method::GET, "/v1/contacts")
        .await
        .expect(200);
    admin
        .post(
            &format!("/admin/keys/{}/rotate", other.id),
            json!({"grace_seconds": 60}),
        )
        .await
        .expect(200);
    eventually(
        "rotation reaches the gateway",
        Duration::from_secs(10),
        || async {
            let reply = with_credential(&stack, &fresh, Method::GET, "/v1/contacts").await;
            (reply.status.as_u16() == 401).then_some(reply)
        },
    )
    .await
    .expect_error(401, "invalid_credentials");
    // The old pair itself still works in its grace period.
    stack.api(&other).get("/v1/contacts").await.expect(200);

    // Refused once its key is revoked, and no new one is minted for a revoked key.
    let third = admin.create_key(json!({"name": "third"})).await;
    stack.wait_synced().await;
    let fresh = credential_of(
        &admin
            .post(
                &format!("/admin/keys/{}/playground-credential", third.id),
                json!({}),
            )
            .await,
    );
    with_credential(&stack, &fresh, Method::GET, "/v1/contacts")
        .await
        .expect(200);
    admin
        .post(&format!("/admin/keys/{}/revoke", third.id), json!({}))
        .await
        .expect(200);
    eventually(
        "revocation reaches the gateway",
        Duration::from_secs(10),
        || async {
            let reply = with_credential(&stack, &fresh, Method::GET, "/v1/contacts").await;
            (reply.status.as_u16() == 401).then_some(reply)
        },
    )
    .await
    .expect_error(401, "key_revoked");
    admin
        .post(
            &format!("/admin/keys/{}/playground-credential", third.id),
            json!({}),
        )
        .await
        .expect_error(409, "key_revoked");

    // The whitelist applies as well.
    let fenced = admin
        .create_key(json!({"name": "fenced", "ip_whitelist": ["203.0.113.7"]}))
        .await;
    stack.wait_synced().await;
    let fenced_credential = credential_of(
        &admin
            .post(
                &format!("/admin/keys/{}/playground-credential", fenced.id),
                json!({}),
            )
            .await,
    );
    with_credential(&stack, &fenced_credential, Method::GET, "/v1/contacts")
        .await
        .expect_error(403, "ip_not_allowed");

    // Bearer + X-Api-Secret and Basic keep working beside it.
    Api::send(
        stack
            .api(&fenced)
            .request(Method::GET, "/v1/contacts", Auth::Basic),
    )
    .await
    .expect_error(403, "ip_not_allowed");

    let logs = stack.logs();
    assert!(
        !logs.contains("wpg_"),
        "a log line holds a Playground credential"
    );
    for c in [&credential, &fresh, &fenced_credential] {
        let mac = c.rsplit('.').next().unwrap();
        assert!(!logs.contains(mac));
    }
}
