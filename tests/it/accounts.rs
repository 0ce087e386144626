//! Accounts, console sessions, plans, tenant isolation and bad input, across the real binaries.

use serde_json::json;

use crate::harness::{Admin, Api, Auth, Stack, ADMIN_EMAIL};

/// Creates an account with the ops CLI and returns its id (the CLI's last line).
fn create_account(stack: &Stack, name: &str, plan: &str, email: &str, password: &str) -> String {
    let out = stack.backend_cli(&[
        "accounts",
        "create",
        "--name",
        name,
        "--plan",
        plan,
        "--admin-email",
        email,
        "--admin-password",
        password,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "accounts create failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(
        id.starts_with("acc_"),
        "last line is the account id: {stdout:?}"
    );
    id
}

#[tokio::test]
async fn plan_gating_from_the_cli_reaches_admin_api_and_gateway() {
    let stack = Stack::start().await;
    let id = create_account(
        &stack,
        "Free Co",
        "free",
        "free@example.test",
        "free-password-1",
    );
    let free = Admin::login(&stack.gateway_url(), "free@example.test", "free-password-1").await;
    assert_eq!(free.session["account"]["plan"], "free");
    free.post("/admin/keys", json!({"name": "k"}))
        .await
        .expect_error(403, "plan_required");

    let out = stack.backend_cli(&["accounts", "set-plan", &id, "wiz_bot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = free.create_key(json!({})).await;
    stack.wait_synced().await;
    let api = stack.api(&key);
    api.get("/v1/contacts").await.expect(200);

    // Back to free: the gateway refuses the existing key within a second.
    let out = stack.backend_cli(&["accounts", "set-plan", &id, "free"]);
    assert!(out.status.success());
    let started = std::time::Instant::now();
    loop {
        let r = api.get("/v1/contacts").await;
        if r.status == 403 {
            r.expect_error(403, "plan_required");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "plan change not applied after 1 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let out = stack.backend_cli(&["accounts", "list"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&id) && listing.contains("Free Co"),
        "{listing}"
    );
    let bad = stack.backend_cli(&["accounts", "set-plan", &id, "platinum"]);
    assert!(!bad.status.success(), "an unknown plan is refused");
}

#[tokio::test]
async fn accounts_never_see_each_others_keys_or_contacts() {
    let stack = Stack::start().await;
    let a = stack.admin().await;
    create_account(
        &stack,
        "B Co",
        "wiz_pro",
        "b@example.test",
        "b-password-123",
    );
    let b = Admin::login(&stack.gateway_url(), "b@example.test", "b-password-123").await;
    assert_ne!(a.account_id(), b.account_id());

    let a_key = a.create_key(json!({"name": "a key"})).await;
    let b_key = b.create_key(json!({"name": "b key"})).await;
    stack.wait_synced().await;

    let listed = b.get("/admin/keys").await;
    let ids: Vec<_> = listed.expect(200)["data"]
        .as_array()
        .or(listed.body.as_array())
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|k| k["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!ids.contains(&a_key.id) && ids.contains(&b_key.id));
    let path = format!("/admin/keys/{}", a_key.id);
    b.get(&path).await.expect_error(404, "not_found");
    b.patch(&path, json!({"name": "mine"}))
        .await
        .expect_error(404, "not_found");
    b.post(&format!("{path}/revoke"), json!({}))
        .await
        .expect_error(404, "not_found");
    b.get(&format!("{path}/usage"))
        .await
        .expect_error(404, "not_found");

    let a_api = stack.api(&a_key);
    let b_api = stack.api(&b_key);
    let contact = a_api
        .post("/v1/contacts", json!({"phone": "+14155550111"}))
        .await;
    let contact_id = contact.expect(201)["id"].as_str().unwrap().to_string();
    b_api
        .get(&format!("/v1/contacts/{contact_id}"))
        .await
        .expect_error(404, "not_found");
    b_api
        .patch(&format!("/v1/contacts/{contact_id}"), json!({"name": "x"}))
        .await
        .expect_error(404, "not_found");
    b_api
        .delete(&format!("/v1/contacts/{contact_id}"))
        .await
        .expect_error(404, "not_found");
    let listed = b_api.get("/v1/contacts").await;
    assert_eq!(listed.expect(200)["data"].as_array().unwrap().len(), 0);
    // The same phone is free to use in another account.
    b_api
        .post("/v1/contacts", json!({"phone": "+14155550111"}))
        .await
        .expect(201);
}

#[tokio::test]
async fn sessions_need_csrf_and_throttle_guessing() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;
    let live = admin.get("/admin/session").await;
    assert_eq!(live.expect(200)["user"]["email"], ADMIN_EMAIL);
    assert!(live.body["csrf_token"].as_str().is_some());

    // A state change without the token is refused; with it, accepted.
    let r = admin
        .http
        .post(format!("{}/admin/keys", admin.base))
        .json(&json!({"name": "no csrf"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf_failed");

    // Cookie flags.
    let login = reqwest::Client::new()
        .post(format!("{}/admin/session", stack.gateway_url()))
        .json(&json!({"email": ADMIN_EMAIL, "password": crate::harness::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );

    // Wrong email and wrong password answer alike; guessing is throttled.
    let wrong_pw = Admin::try_login(&stack.gateway_url(), ADMIN_EMAIL, "nope")
        .await
        .err()
        .unwrap();
    let wrong_user = Admin::try_login(&stack.gateway_url(), "who@example.test", "nope")
        .await
        .err()
        .unwrap();
    assert_eq!(wrong_pw.status, 401);
    assert_eq!(wrong_pw.code(), wrong_user.code());
    let mut throttled = false;
    for _ in 0..20 {
        let r = Admin::try_login(&stack.gateway_url(), ADMIN_EMAIL, "still wrong")
            .await
            .err()
            .unwrap();
        if r.status == 429 {
            assert!(r.header("retry-after").is_some());
            throttled = true;
            break;
        }
    }
    assert!(throttled, "login guessing is throttled");

    // Logout ends the session.
    admin.delete("/admin/session").await;
    admin
        .get("/admin/keys")
        .await
        .expect_error(401, "not_authenticated");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let stack = Stack::start().await;
    let admin = stack.admin().await;

    for (body, code) in [
        (
            json!({"name": "k", "ip_whitelist": ["10.0.0.0/33"]}),
            "invalid_ip_whitelist",
        ),
        (
            json!({"name": "k", "ip_whitelist": ["not-an-ip"]}),
            "invalid_ip_whitelist",
        ),
        (
            json!({"name": "k", "rate_limit_per_minute": 0}),
            "invalid_limit",
        ),
        (json!({"name": "k", "daily_limit": -5}), "invalid_limit"),
    ] {
        let r = admin.post("/admin/keys", body.clone()).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 422),
            "{body}: {} {}",
            r.status,
            r.body
        );
        assert_eq!(r.code(), code, "{body}: {}", r.body);
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .len()
                > 5,
            "the message names the problem"
        );
    }
    let r = admin
        .post("/admin/keys", json!({"name": "x".repeat(500)}))
        .await;
    assert!(matches!(r.status.as_u16(), 400 | 422), "{}", r.body);

    let key = admin.create_key(json!({})).await;
    stack.wait_synced().await;
    let api = stack.api(&key);

    let r = Api::send(
        api.request(reqwest::Method::POST, "/v1/contacts", Auth::Bearer)
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    r.expect_error(400, "invalid_json");
    for phone in ["12345", "+0123456789", "+1 415 555", "+1234567890123456"] {
        let r = api.post("/v1/contacts", json!({"phone": phone})).await;
        assert!(
            matches!(r.status.as_u16(), 400 | 422),
            "{phone}: {}",
            r.body
        );
        assert_eq!(r.code(), "invalid_phone", "{phone}");
    }
    api.post("/v1/contacts", json!({"phone": "+14155550199"}))
        .await
        .expect(201);
    api.post("/v1/contacts", json!({"phone": "+14155550199"}))
        .await
        .expect_error(409, "contact_exists");
    let big = "x".repeat(5 * 1024 * 1024);
    let r = api
        .post(
            "/v1/contacts",
            json!({"phone": "+14155550198", "name": big}),
        )
        .await;
    r.expect_error(413, "payload_too_large");
    api.get("/v1/contacts?cursor=junk")
        .await
        .expect_error(400, "invalid_cursor");
    api.get("/v1/contacts?limit=500")
        .await
        .expect_error(400, "invalid_limit");
    let r = api.get("/v1/no-such-thing").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
}
