//! Test support for the messaging tests: a backend with a fast simulated channel and its
//! workers running, `/v1` requests with extra headers, and polling with a deadline.

use std::{future::Future, time::Duration};

use axum::{body::Body, http::Request};
use serde_json::Value;

use crate::{
    accounts::Plan,
    background::Background,
    channel::worker,
    testing::{gateway_proof, Answer, ProofFields, TestApp, INTERNAL_TOKEN},
};

pub struct Messaging {
    pub app: TestApp,
    pub account: String,
    pub workers: Option<Background>,
}

/// Timeline 10 ms / 30 ms / 60 ms, `rate_per_second` as given, workers running.
pub async fn start(rate_per_second: u32) -> Messaging {
    let app = TestApp::with_config(|c| {
        c.channel.timeline = vec![
            Duration::from_millis(10),
            Duration::from_millis(30),
            Duration::from_millis(60),
        ];
        c.channel.rate_per_second = rate_per_second;
    })
    .await;
    let account = app
        .create_account("Shop", Plan::WizPro, "ops@shop.test", "password-shop")
        .await;
    let workers = Some(worker::start(&app.state));
    Messaging {
        app,
        account,
        workers,
    }
}

impl Messaging {
    pub async fn v1(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.app.v1(&self.account, method, path, body).await
    }

    /// A `/v1` POST with an `Idempotency-Key`.
    pub async fn post_with_key(&self, path: &str, body: &Value, key: &str) -> Answer {
        self.app
            .send(signed(
                &self.account,
                "POST",
                path,
                Some(body),
                &[("idempotency-key", key)],
            ))
            .await
    }

    /// Event types of the account, oldest first.
    pub async fn event_types(&self) -> Vec<String> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT type FROM events WHERE account_id = $1 ORDER BY id")
                .bind(&self.account)
                .fetch_all(&self.app.state.db)
                .await
                .unwrap();
        rows.into_iter().map(|(t,)| t).collect()
    }

    pub async fn count_events(&self, event_type: &str) -> usize {
        self.event_types()
            .await
            .iter()
            .filter(|t| *t == event_type)
            .count()
    }

    /// Polls `GET path` until `done` holds for the body.
    pub async fn poll(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_for(path, || async {
            let answer = self.v1("GET", path, None).await;
            done(&answer.body).then_some(answer.body)
        })
        .await
    }
}

/// A `/v1` request as the gateway forwards it, with extra headers.
pub fn signed(
    account_id: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Request<Body> {
    let (request_id, key_id) = ("req_test", "key_test");
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
        .header("x-wiz-client-ip", "127.0.0.1")
        .header("x-wiz-scheme", "http")
        .header("x-wiz-gateway-proof", proof);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    match body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

/// Polls until `check` answers `Some`, for at most 20 seconds.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The statuses of a message's history, in order.
pub fn history(message: &Value) -> Vec<String> {
    message["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_string())
        .collect()
}
