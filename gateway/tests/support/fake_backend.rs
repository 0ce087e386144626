//! A tiny stand-in for the backend's side of docs/internal-api.md, on 127.0.0.1:0: key sync with
//! long polling, usage reports, and an echo of everything else (so tests can see exactly what the
//! gateway forwarded). Keys are plain JSON here, independent of the gateway's wire types.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

pub const TOKEN: &str = "test-internal-token-0123456789abcdef";

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A key record as the backend would send it; tweak fields with `obj["field"] = ...`.
pub fn key_json(id: &str, key: &str, secret: &str) -> Value {
    json!({
        "id": id,
        "account_id": format!("acc_{id}"),
        "prefix": &key[..12],
        "key_hash": sha256_hex(key),
        "secret_hash": sha256_hex(secret),
        "previous": null,
        "status": "active",
        "expires_at_ms": null,
        "plan": "wiz_pro",
        "rate_limit_per_minute": 60,
        "daily_limit": 1000,
        "ip_whitelist": [],
        "usage_today": null
    })
}

#[derive(Default)]
struct Keys {
    version: u64,
    /// (version at which the key last changed, key JSON)
    keys: Vec<(u64, Value)>,
}

pub struct FakeState {
    keys: Mutex<Keys>,
    changed: Notify,
    pub usage_reports: Mutex<Vec<Value>>,
    pub key_requests: Mutex<u64>,
}

impl FakeState {
    pub fn new() -> Arc<FakeState> {
        Arc::new(FakeState {
            keys: Mutex::new(Keys::default()),
            changed: Notify::new(),
            usage_reports: Mutex::new(Vec::new()),
            key_requests: Mutex::new(0),
        })
    }

    /// Adds or replaces a key (by id), bumping the version and waking long polls.
    pub fn upsert_key(&self, key: Value) {
        {
            let mut k = self.keys.lock().unwrap();
            k.version += 1;
            let v = k.version;
            let id = key["id"].clone();
            k.keys.retain(|(_, existing)| existing["id"] != id);
            k.keys.push((v, key));
        }
        self.changed.notify_waiters();
    }

    /// Sum of `accepted` over all usage reports received for `key_id`.
    pub fn accepted_for(&self, key_id: &str) -> u64 {
        self.usage_reports
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r["entries"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["key_id"] == key_id)
            .map(|e| e["accepted"].as_u64().unwrap_or(0))
            .sum()
    }
}

/// The fake runs on its own runtime so `stop` can really take it down: shutting the runtime down
/// drops every connection task, so kept-alive and long-polling connections die too.
pub struct FakeBackend {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeBackend {
    pub fn start() -> FakeBackend {
        FakeBackend::start_on("127.0.0.1:0".parse().unwrap(), FakeState::new())
    }

    pub fn start_on(addr: SocketAddr, state: Arc<FakeState>) -> FakeBackend {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let app = Router::new()
            .route("/internal/keys", get(keys))
            .route("/internal/usage", post(usage))
            .fallback(echo)
            .with_state(state.clone());
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeBackend {
            addr,
            state,
            runtime: Some(runtime),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes the backend down: new connections are refused and open ones are closed. The state
    /// survives for `start_on(addr, state)`.
    pub fn stop(mut self) -> (SocketAddr, Arc<FakeState>) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        (self.addr, self.state.clone())
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The `/internal` bearer derived from `TOKEN` as docs/internal-api.md describes it.
pub fn bearer() -> String {
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(None, TOKEN.as_bytes())
        .expand(b"wiz internal-api bearer v1", &mut okm)
        .unwrap();
    hex::encode(okm)
}

/// The key of the proofs the gateway adds to forwarded requests.
pub fn proof_key() -> [u8; 32] {
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(None, TOKEN.as_bytes())
        .expand(b"wiz gateway-proof v2", &mut okm)
        .unwrap();
    okm
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("x-wiz-internal-token")
        .is_some_and(|v| v.as_bytes() == bearer().as_bytes())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error":{"type":"authentication_error","code":"invalid_internal_token","message":"","request_id":""}})),
    )
        .into_response()
}

async fn keys(
    State(s): State<Arc<FakeState>>,
    Query(q): Query<BTreeMap<String, u64>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    *s.key_requests.lock().unwrap() += 1;
    let since = q.get("since").copied().unwrap_or(0);
    let wait = Duration::from_millis(q.get("wait_ms").copied().unwrap_or(0).min(30_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = s.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let k = s.keys.lock().unwrap();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            if since == 0 {
                let all: Vec<Value> = k.keys.iter().map(|(_, v)| v.clone()).collect();
                return Json(json!({"version": k.version, "full": true, "server_time_ms": now_ms, "keys": all}))
                    .into_response();
            }
            let changed: Vec<Value> = k
                .keys
                .iter()
                .filter(|(v, _)| *v > since)
                .map(|(_, v)| v.clone())
                .collect();
            if !changed.is_empty() || tokio::time::Instant::now() >= deadline {
                return Json(json!({"version": k.version, "full": false, "server_time_ms": now_ms, "keys": changed}))
                    .into_response();
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn usage(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    s.usage_reports.lock().unwrap().push(body);
    StatusCode::NO_CONTENT.into_response()
}

/// Echoes the request so tests can inspect what the gateway forwarded.
async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let mut h = serde_json::Map::new();
    for (name, value) in headers.iter() {
        h.insert(
            name.as_str().to_owned(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    let status = if uri.path() == "/v1/too-many" {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"method": method.as_str(), "path": uri.path(), "headers": h})),
    )
        .into_response()
}
