//! Test support for handler tests: a backend on a temporary SQLite file, driven with
//! `tower::ServiceExt::oneshot`, plus ways to call it as the console (session cookie + CSRF),
//! as the gateway on behalf of a key (`/v1` with a valid proof) and as the gateway itself
//! (`/internal` with the token).

use axum::{
    body::{to_bytes, Body},
    http::{Request, StatusCode},
    Router,
};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde_json::Value;
use sha2::Sha256;
use tower::ServiceExt;

use crate::{
    accounts::{self, Plan},
    config::{AdminConfig, Config},
    state::AppState,
};

pub const INTERNAL_TOKEN: &str = "test-internal-token-0123456789abcdef";
pub const DEMO_EMAIL: &str = "admin@demo.test";
pub const DEMO_PASSWORD: &str = "demo-password-1";

pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    _dir: tempfile::TempDir,
}

/// What a call answered: status, headers and the body parsed as JSON (`Null` if empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// A logged-in console user.
#[derive(Debug, Clone)]
pub struct Console {
    pub cookie: String,
    pub csrf: String,
    pub account_id: String,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    Config {
        database_url: format!("sqlite://{}", dir.join("wiz.db").display()),
        internal_token: INTERNAL_TOKEN.into(),
        secrets_key_file: dir.join("secrets-key"),
        admin: AdminConfig {
            email: DEMO_EMAIL.into(),
            password: DEMO_PASSWORD.into(),
        },
        ..Config::default()
    }
}

/// Opt-in: with `WIZ_TEST_POSTGRES_URL=postgres://user@host:port/db` set, every `TestApp` runs on
/// its own new PostgreSQL database created on that server (left behind; the server is a throwaway
/// one), so the handler tests can be pointed at PostgreSQL without changing them.
async fn fresh_postgres_database(server: &str) -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let name = crate::ids::new_id("wiz_test");
    let mut conn = sqlx::AnyConnection::connect(server)
        .await
        .expect("connecting to WIZ_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    let base = server.rsplit_once('/').map_or(server, |(base, _)| base);
    format!("{base}/{name}")
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_config(|_| {}).await
    }

    /// A fresh backend whose config `adjust` may change first (e.g. login throttle settings).
    pub async fn with_config(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        if let Ok(server) = std::env::var("WIZ_TEST_POSTGRES_URL") {
            config.database_url = fresh_postgres_database(&server).await;
        }
        adjust(&mut config);
        let state = crate::open(config).await.expect("open backend");
        let router = crate::routes::router(state.clone());
        Self {
            state,
            router,
            _dir: dir,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// An account with its admin user; returns the account id.
    pub async fn create_account(
        &self,
        name: &str,
        plan: Plan,
        email: &str,
        password: &str,
    ) -> String {
        let mut tx = self.state.db.begin().await.unwrap();
        let (account, _) =
            accounts::create(&mut tx, &self.state.passwords, name, plan, email, password)
                .await
                .unwrap();
        tx.commit().await.unwrap();
        account.id
    }

    pub async fn login(&self, email: &str, password: &str) -> Console {
        let answer = self
            .send(json_request(
                "POST",
                "/admin/session",
                &serde_json::json!({"email": email, "password": password}),
            ))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "login: {:?}", answer.body);
        let cookie = answer.headers["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        Console {
            cookie,
            csrf: answer.body["csrf_token"].as_str().unwrap().to_string(),
            account_id: answer.body["account"]["id"].as_str().unwrap().to_string(),
        }
    }

    /// The demo account's console, logged in.
    pub async fn demo_console(&self) -> Console {
        self.login(DEMO_EMAIL, DEMO_PASSWORD).await
    }

    /// An admin call with cookie and CSRF token; `body` `None` sends no body.
    pub async fn admin(
        &self,
        console: &Console,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", &console.cookie)
            .header("x-csrf-token", &console.csrf);
        let body = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    /// A `/v1` call as the gateway forwards it for `key_id` of `account_id`.
    pub async fn v1(
        &self,
        account_id: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let request_id = "req_test";
        let key_id = "key_test";
        let proof = gateway_proof(
            INTERNAL_TOKEN,
            &ProofFields {
                unix_secs: crate::clock::now_secs(),
                scheme: "http",
                method,
                path_and_query: path,
                client_ip: "127.0.0.1",
                key_id,
                account_id,
                request_id,
            },
        );
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("x-request-id", request_id)
            .header("x-wiz-key-id", key_id)
            .header("x-wiz-account-id", account_id)
            .header("x-wiz-key-prefix", "pk_live_test")
            .header("x-wiz-client-ip", "127.0.0.1")
            .header("x-wiz-scheme", "http")
            .header("x-wiz-gateway-proof", proof);
        let body = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    /// An `/internal` call with the token.
    pub async fn internal(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(crate::auth::internal::TOKEN_HEADER, internal_bearer());
        let body = match body {
            Some(body) => {
                builder = builder.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }
}

/// What the gateway presents on `/internal` calls.
pub fn internal_bearer() -> String {
    crate::auth::token_keys::TokenKeys::derive(INTERNAL_TOKEN).bearer
}

/// The fields of a gateway proof (docs/internal-api.md), for signing requests in tests.
#[derive(Debug, Clone, Copy)]
pub struct ProofFields<'a> {
    pub unix_secs: i64,
    pub scheme: &'a str,
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub client_ip: &'a str,
    pub key_id: &'a str,
    pub account_id: &'a str,
    pub request_id: &'a str,
}

/// `v2,<t>,<hex>`, computed from the documented derivation rather than the verifier's code.
pub fn gateway_proof(token: &str, f: &ProofFields<'_>) -> String {
    let key = crate::auth::token_keys::derive(token, "wiz gateway-proof v2");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let message = format!(
        "v2\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        f.unix_secs,
        f.scheme,
        f.method,
        f.path_and_query,
        f.client_ip,
        f.key_id,
        f.account_id,
        f.request_id
    );
    mac.update(message.as_bytes());
    format!(
        "v2,{},{}",
        f.unix_secs,
        hex::encode(mac.finalize().into_bytes())
    )
}

pub fn json_request(method: &str, path: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}
