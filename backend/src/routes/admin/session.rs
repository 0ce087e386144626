//! `POST|GET|DELETE /admin/session`: console login, the current session, logout (SPEC §6).

use std::time::Instant;

use axum::{
    extract::State,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

use crate::routes::extract::JsonBody;
use crate::{
    accounts::{self, login_throttle::Admission, normalize_email},
    auth::{
        gateway::Origin,
        password,
        session::{self, AdminSession, COOKIE},
    },
    error::{ApiError, ApiResult},
    openapi::ErrorBody,
    state::AppState,
};

/// Longest accepted email, in bytes (the SMTP limit of a forward path).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A login body holds two bounded strings; anything larger is refused (413) after reading at
/// most this much, whatever the general body limit (applied by `routes::read_body_first`, before
/// anything is buffered). JSON escapes may triple a string's size.
pub const LOGIN_MAX_BODY_BYTES: usize = 8 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/session", post(login).get(current).delete(logout))
}

#[derive(OpenApi)]
#[openapi(
    paths(login, current, logout),
    components(schemas(LoginBody, SessionView, SessionUser, SessionAccount)),
    tags((name = "admin: session", description = "Console login"))
)]
pub struct ApiDoc;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    email: String,
    password: String,
}

/// The logged-in user, their account, and the token state-changing calls send as
/// `X-CSRF-Token`.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
#[allow(dead_code)] // only its schema is used
pub struct SessionView {
    user: SessionUser,
    account: SessionAccount,
    csrf_token: String,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct SessionUser {
    id: String,
    email: String,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct SessionAccount {
    id: String,
    name: String,
    /// `free`, `wiz_bot` or `wiz_pro`
    plan: String,
}

/// Log in: sets the `wiz_session` cookie (HttpOnly, SameSite=Strict)
#[utoipa::path(
    post, path = "/admin/session", operation_id = "createSession", tag = "admin: session",
    request_body = LoginBody,
    security(()),
    responses(
        (status = 200, body = SessionView),
        (status = 400, description = "`invalid_json`, `invalid_body`", body = ErrorBody),
        (status = 401, description = "`invalid_login`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 8 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_email` (over 254 bytes), `invalid_password` (over 1,024 bytes)", body = ErrorBody),
        (status = 429, description = "`too_many_login_attempts` for this email from this client address, with Retry-After", body = ErrorBody),
        (status = 503, description = "`server_busy`: too many password checks running, with Retry-After", body = ErrorBody),
    )
)]
async fn login(
    State(state): State<AppState>,
    origin: Origin,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult<Response> {
    // Bounds before any work: nothing below (throttle, database, Argon2) sees an oversized value.
    if body.email.len() > MAX_EMAIL_BYTES {
        return Err(ApiError::unprocessable(
            "invalid_email",
            format!("email: at most {MAX_EMAIL_BYTES} bytes"),
        ));
    }
    if body.password.len() > password::MAX_PASSWORD_BYTES {
        return Err(ApiError::unprocessable(
            "invalid_password",
            format!("password: at most {} bytes", password::MAX_PASSWORD_BYTES),
        ));
    }
    let email = normalize_email(&body.email);
    // The IP the gateway proved, never a header the client wrote (the TCP peer without a proof).
    let reservation = match state
        .login_throttle
        .reserve(&email, origin.client_ip, Instant::now())
    {
        Admission::Refused { retry_after } => {
            return Err(ApiError::TooManyRequests {
                code: "too_many_login_attempts",
                message: "too many failed logins for this email from this address; try again later"
                    .into(),
                retry_after_secs: retry_after.as_secs_f64().ceil().max(1.0) as u64,
            });
        }
        Admission::Go { reservation, wait } => {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            reservation
        }
    };

    let user = session::find_login(&state.db, &email).await?;
    // An unknown email costs a check as well, so timing does not tell which emails exist.
    let verified = state
        .passwords
        .verify(
            &body.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await?;

    let user = match user {
        Some(user) if verified => user,
        _ => {
            reservation.failed();
            return Err(ApiError::unauthorized(
                "invalid_login",
                "email or password is wrong",
            ));
        }
    };
    reservation.succeeded();

    let config = &state.config.session;
    let ttl_ms = config.ttl.min(config.absolute_lifetime).as_millis() as i64;
    let mut tx = state.db.begin().await?;
    let opened = session::open(&mut tx, &user.id, &user.account_id, ttl_ms).await?;
    let body = session_body(&mut tx, &user.id, &user.account_id, &opened.csrf_token).await?;
    tx.commit().await?;
    let token = opened.token;

    // No Max-Age: the browser keeps the cookie for its session, the server decides expiry
    // (sliding, `session.ttl` after the last use, and `session.absolute_lifetime` after login).
    let mut cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
    if state.config.session.cookie_secure || origin.https {
        cookie.push_str("; Secure");
    }
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("token is URL-safe base64"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `{"user":{"id","email"},"account":{"id","name","plan"},"csrf_token"}`
async fn session_body(
    conn: &mut sqlx::AnyConnection,
    user_id: &str,
    account_id: &str,
    csrf_token: &str,
) -> ApiResult<Value> {
    let user = accounts::get_user(conn, user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("not_authenticated", "log in first"))?;
    let account = accounts::get(conn, account_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("not_authenticated", "log in first"))?;
    Ok(json!({
        "user": {"id": user.id, "email": user.email},
        "account": {"id": account.id, "name": account.name, "plan": account.plan},
        "csrf_token": csrf_token,
    }))
}

/// The current session
#[utoipa::path(
    get, path = "/admin/session", operation_id = "getSession", tag = "admin: session",
    security(("session" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = ErrorBody))
)]
async fn current(State(state): State<AppState>, session: AdminSession) -> ApiResult<Response> {
    let mut conn = state.db.acquire().await?;
    let body = session_body(
        &mut conn,
        &session.user_id,
        &session.account_id,
        &session.csrf_token,
    )
    .await?;
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Log out
#[utoipa::path(
    delete, path = "/admin/session", operation_id = "deleteSession", tag = "admin: session",
    security(("session" = [])),
    responses((status = 204, description = "Logged out"), (status = 403, description = "`csrf_failed`", body = ErrorBody))
)]
async fn logout(State(state): State<AppState>, session: AdminSession) -> ApiResult<Response> {
    session::close(&state.db, &session.token_hash).await?;
    let mut cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if state.config.session.cookie_secure {
        cookie.push_str("; Secure");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("static cookie"),
    );
    Ok(response)
}

#[cfg(test)]
mod session_tests {
    use std::time::Duration;

    use axum::{body::Body, http::Request, http::StatusCode};
    use serde_json::json;

    use crate::testing::{
        gateway_proof, json_request, Console, ProofFields, TestApp, DEMO_EMAIL, DEMO_PASSWORD,
        INTERNAL_TOKEN,
    };

    #[tokio::test]
    async fn login_current_and_logout() {
        let app = TestApp::new().await;
        let answer = app
            .send(json_request(
                "POST",
                "/admin/session",
                &json!({"email": "Admin@Demo.test ", "password": DEMO_PASSWORD}),
            ))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        let cookie = answer.headers["set-cookie"].to_str().unwrap();
        assert!(cookie.starts_with("wiz_session="));
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(!cookie.contains("Secure"));
        assert_eq!(answer.body["user"]["email"], json!(DEMO_EMAIL));
        assert_eq!(answer.body["account"]["name"], json!("Demo"));
        assert_eq!(answer.body["account"]["plan"], json!("wiz_pro"));
        assert!(answer.body["csrf_token"].as_str().unwrap().len() >= 32);

        // Only the token's hash is stored.
        let token = cookie
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("wiz_session=");
        let stored: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM sessions")
            .fetch_all(&app.state.db)
            .await
            .unwrap();
        assert_eq!(stored, vec![(crate::auth::sha256_hex(token),)]);

        let console = app.demo_console().await;
        let current = app.admin(&console, "GET", "/admin/session", None).await;
        assert_eq!(current.status, StatusCode::OK);
        assert_eq!(current.body["csrf_token"], json!(console.csrf));
        assert_eq!(current.body["account"]["id"], json!(console.account_id));

        let no_csrf = Console {
            csrf: String::new(),
            ..console.clone()
        };
        let refused = app.admin(&no_csrf, "DELETE", "/admin/session", None).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(refused.code(), "csrf_failed");

        let out = app.admin(&console, "DELETE", "/admin/session", None).await;
        assert_eq!(out.status, StatusCode::NO_CONTENT);
        assert!(out.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        let after = app.admin(&console, "GET", "/admin/session", None).await;
        assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn expired_sessions_are_refused() {
        let app = TestApp::new().await;
        let console = app.demo_console().await;
        sqlx::query("UPDATE sessions SET expires_at = 1")
            .execute(&app.state.db)
            .await
            .unwrap();
        let answer = app.admin(&console, "GET", "/admin/keys", None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.code(), "session_expired");
    }

    #[tokio::test]
    async fn wrong_email_and_wrong_password_answer_alike() {
        let app = TestApp::new().await;
        let wrong_password = app
            .send(json_request(
                "POST",
                "/admin/session",
                &json!({"email": DEMO_EMAIL, "password": "nope"}),
            ))
            .await;
        let wrong_email = app
            .send(json_request(
                "POST",
                "/admin/session",
                &json!({"email": "who@demo.test", "password": DEMO_PASSWORD}),
            ))
            .await;
        for answer in [&wrong_password, &wrong_email] {
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
            assert_eq!(answer.code(), "invalid_login");
            assert!(answer.headers.get("set-cookie").is_none());
        }
        assert_eq!(
            wrong_password.body["error"]["message"],
            wrong_email.body["error"]["message"]
        );
        let anonymous = app
            .send(Request::get("/admin/session").body(Body::empty()).unwrap())
            .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }

    /// A login as the gateway forwards it for a client at `ip`.
    fn login_from(ip: &str, email: &str, password: &str) -> Request<Body> {
        let mut request = json_request(
            "POST",
            "/admin/session",
            &json!({"email": email, "password": password}),
        );
        let proof = gateway_proof(
            INTERNAL_TOKEN,
            &ProofFields {
                unix_secs: crate::clock::now_secs(),
                scheme: "http",
                method: "POST",
                path_and_query: "/admin/session",
                client_ip: ip,
                key_id: "",
                account_id: "",
                request_id: "req_login",
            },
        );
        let headers = request.headers_mut();
        headers.insert("x-wiz-client-ip", ip.parse().unwrap());
        headers.insert("x-wiz-scheme", "http".parse().unwrap());
        headers.insert("x-request-id", "req_login".parse().unwrap());
        headers.insert("x-wiz-gateway-proof", proof.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn failed_logins_block_only_their_email_and_ip_pair() {
        let app = TestApp::with_config(|c| {
            c.login_throttle.max_failures = 3;
            c.login_throttle.window = Duration::from_secs(60);
        })
        .await;
        for _ in 0..3 {
            let answer = app
                .send(login_from("198.51.100.1", DEMO_EMAIL, "wrong"))
                .await;
            assert_eq!(answer.code(), "invalid_login");
        }
        // The pair is out of attempts, even with the right password.
        let throttled = app
            .send(login_from("198.51.100.1", DEMO_EMAIL, DEMO_PASSWORD))
            .await;
        assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(throttled.code(), "too_many_login_attempts");
        let retry: u64 = throttled.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry));

        // The same account from another IP, another account from the same IP: both log in.
        let other_ip = app
            .send(login_from("198.51.100.2", DEMO_EMAIL, DEMO_PASSWORD))
            .await;
        assert_eq!(other_ip.status, StatusCode::OK, "{:?}", other_ip.body);
        app.create_account(
            "Other",
            crate::accounts::Plan::WizBot,
            "o@o.test",
            "password-o",
        )
        .await;
        let same_ip = app
            .send(login_from("198.51.100.1", "o@o.test", "password-o"))
            .await;
        assert_eq!(same_ip.status, StatusCode::OK, "{:?}", same_ip.body);

        // A success clears the pair's failures.
        for _ in 0..2 {
            app.send(login_from("198.51.100.3", "o@o.test", "wrong"))
                .await;
        }
        let ok = app
            .send(login_from("198.51.100.3", "o@o.test", "password-o"))
            .await;
        assert_eq!(ok.status, StatusCode::OK);
        for _ in 0..3 {
            let answer = app
                .send(login_from("198.51.100.3", "o@o.test", "wrong"))
                .await;
            assert_eq!(answer.code(), "invalid_login");
        }
    }

    #[tokio::test]
    async fn oversized_fields_and_bodies_are_refused_before_any_work() {
        let app = TestApp::new().await;
        let too_long_email = format!("{}@demo.test", "a".repeat(245));
        assert_eq!(too_long_email.len(), 255);
        let answer = app
            .send(json_request(
                "POST",
                "/admin/session",
                &json!({"email": too_long_email, "password": DEMO_PASSWORD}),
            ))
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.code(), "invalid_email");
        assert!(answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("email:"));
        // 254 bytes is still an email (and a wrong login).
        let longest = format!("{}@demo.test", "a".repeat(244));
        let answer = app
            .send(json_request(
                "POST",
                "/admin/session",
                &json!({"email": longest, "password": DEMO_PASSWORD}),
            ))
            .await;
        assert_eq!(answer.code(), "invalid_login");

        let answer = app
            .send(json_request(
                "POST",
                "/admin/session",
                &json!({"email": DEMO_EMAIL, "password": "é".repeat(513)}),
            ))
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.code(), "invalid_password");
        assert!(answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("password:"));

        // A body over 8 KiB is refused whatever the fields.
        let answer = app
            .send(json_request(
                "POST",
                "/admin/session",
                &json!({"email": "x".repeat(9000), "password": "p"}),
            ))
            .await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(answer.code(), "payload_too_large");
        // None of these counted as a failed login.
        assert_eq!(app.state.login_throttle.entries().1, 1);
    }

    #[tokio::test]
    async fn sessions_end_at_their_absolute_lifetime_even_in_use() {
        let app = TestApp::with_config(|c| {
            c.session.ttl = Duration::from_secs(3600);
            c.session.absolute_lifetime = Duration::from_secs(7200);
        })
        .await;
        let console = app.demo_console().await;
        // Opened almost 2 h ago (a minute left), idle expiry due in 10 s: a use slides the
        // expiry, but only up to the absolute end.
        let now = crate::clock::now_ms();
        let created_at = now - 7_200_000 + 60_000;
        sqlx::query("UPDATE sessions SET created_at = $1, expires_at = $2")
            .bind(created_at)
            .bind(now + 10_000)
            .execute(&app.state.db)
            .await
            .unwrap();
        let answer = app.admin(&console, "GET", "/admin/session", None).await;
        assert_eq!(answer.status, StatusCode::OK);
        let (expires_at,): (i64,) = sqlx::query_as("SELECT expires_at FROM sessions")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
        assert_eq!(expires_at, created_at + 7_200_000);
        sqlx::query("UPDATE sessions SET created_at = $1, expires_at = $2")
            .bind(now - 7_200_000)
            .bind(now + 3_000_000)
            .execute(&app.state.db)
            .await
            .unwrap();
        let answer = app.admin(&console, "GET", "/admin/keys", None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.code(), "session_expired");
    }
}
