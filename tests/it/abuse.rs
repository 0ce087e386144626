//! Attacks from issue 9 run against the real binaries, each shown refused or harmless (SPEC §4,
//! §6, §10 "Abuse"). Proofs are computed here from docs/internal-api.md, not from either crate.

use std::os::unix::fs::PermissionsExt;

use reqwest::Method;
use serde_json::json;

use crate::harness::{gateway_proof, internal_bearer, unix_now, Api, ProofFields, Stack};

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
