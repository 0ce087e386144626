//! `GET /internal/keys?since=&wait_ms=`: the gateways' key table sync. A full snapshot for
//! `since` 0 (or a `since` this database never issued), else the keys changed after `since`,
//! held as a long poll until something changes or `wait_ms` passes.
//!
//! Changes made by this process wake the poll through `AppState::key_version`; changes made by
//! another process on the same database (the `accounts` CLI, other backends) are seen by
//! re-reading the version counter every `DB_POLL`.

use std::time::Duration;

use axum::{extract::State, Json};
use tokio::time::Instant;

use super::wire::{KeysQuery, KeysResponse, WireKey, WirePrevious, WireUsageToday, MAX_WAIT_MS};
use crate::routes::extract::QueryParams;
use crate::{
    clock::now_ms,
    error::ApiResult,
    keys::store::{self, utc_day, KeyRecord},
    state::AppState,
};

/// How often a waiting poll re-reads the version counter, for changes from other processes.
/// Well under the 1-second propagation promise.
const DB_POLL: Duration = Duration::from_millis(250);

pub fn to_wire(record: KeyRecord, day: &str, now_ms: i64) -> WireKey {
    WireKey {
        status: if record.status == "revoked" {
            "revoked".into()
        } else {
            "active".into()
        },
        previous: record
            .previous
            .filter(|p| p.valid_until_ms > now_ms)
            .map(|p| WirePrevious {
                key_hash: p.key_hash,
                secret_hash: p.secret_hash,
                valid_until_ms: p.valid_until_ms,
            }),
        id: record.id,
        account_id: record.account_id,
        prefix: record.prefix,
        key_hash: record.key_hash,
        secret_hash: record.secret_hash,
        expires_at_ms: record.expires_at,
        plan: record.plan,
        rate_limit_per_minute: record.rate_limit_per_minute,
        daily_limit: record.daily_limit,
        ip_whitelist: record.ip_whitelist,
        usage_today: WireUsageToday {
            day: day.to_string(),
            count: record.usage_today,
        },
    }
}

/// Reads the answer if there is one to give now: `None` means "nothing changed after `since`".
async fn answer(state: &AppState, since: i64) -> ApiResult<Option<KeysResponse>> {
    // The connection is held only for these reads, never while waiting: SQLite has one.
    let mut conn = state.db.acquire().await?;
    let current = store::current_version(&mut conn).await?;
    let full = since <= 0 || since > current;
    if !full && current == since {
        return Ok(None);
    }
    let now = now_ms();
    let day = utc_day(now);
    let records = store::changed_since(&mut conn, if full { 0 } else { since }, &day).await?;
    // A row committed after the counter was read may carry a newer version; everything below
    // it has committed too (versions commit in order), so answering with it is safe.
    let version = records.iter().map(|r| r.version).fold(current, i64::max);
    Ok(Some(KeysResponse {
        version,
        full,
        server_time_ms: now,
        keys: records.into_iter().map(|r| to_wire(r, &day, now)).collect(),
    }))
}

pub async fn handler(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<KeysQuery>,
) -> ApiResult<Json<KeysResponse>> {
    let since = query.since.unwrap_or(0);
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let deadline = Instant::now() + wait;
    // Subscribe before the first read, so a change committed in between still wakes us.
    let mut changes = state.key_version.subscribe();
    let mut stopping = state.shutting_down.subscribe();
    loop {
        if let Some(response) = answer(&state, since).await? {
            return Ok(Json(response));
        }
        let now = Instant::now();
        // Out of time, or the backend is shutting down: "nothing changed" (the gateway keeps
        // its table and polls again).
        if now >= deadline || *stopping.borrow() {
            return Ok(Json(KeysResponse {
                version: since,
                full: false,
                server_time_ms: now_ms(),
                keys: Vec::new(),
            }));
        }
        let nap = (deadline - now).min(DB_POLL);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    // The sender lives in AppState; it only goes away at shutdown.
                    tokio::time::sleep(nap).await;
                }
            }
            _ = tokio::time::sleep(nap) => {}
            _ = stopping.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::{body::Body, http::Request, http::StatusCode};
    use serde_json::json;

    use crate::{accounts, testing::TestApp};

    #[tokio::test]
    async fn token_is_required() {
        let app = TestApp::new().await;
        for token in [None, Some("wrong-token-wrong-token-wrong-token")] {
            let mut request = Request::get("/internal/keys");
            if let Some(token) = token {
                request = request.header("x-wiz-internal-token", token);
            }
            let answer = app.send(request.body(Body::empty()).unwrap()).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
            assert_eq!(answer.code(), "invalid_internal_token");
        }
        let usage = app
            .send(
                Request::post("/internal/usage")
                    .header("content-type", "application/json")
                    .body(Body::from(r#"{"gateway_id":"x","entries":[]}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(usage.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn snapshots_deltas_and_an_idle_wait() {
        let app = TestApp::new().await;
        let empty = app.internal("GET", "/internal/keys", None).await;
        assert_eq!(empty.body["full"], json!(true));
        assert_eq!(empty.body["keys"], json!([]));
        let console = app.demo_console().await;
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let created = app
                .admin(&console, "POST", "/admin/keys", Some(json!({"name": name})))
                .await;
            ids.push(created.body["id"].as_str().unwrap().to_string());
        }
        let full = app.internal("GET", "/internal/keys?since=0", None).await;
        assert_eq!(full.body["full"], json!(true));
        assert_eq!(full.body["keys"].as_array().unwrap().len(), 2);
        let version = full.body["version"].as_i64().unwrap();

        app.admin(
            &console,
            "PATCH",
            &format!("/admin/keys/{}", ids[1]),
            Some(json!({"daily_limit": 7})),
        )
        .await;
        let delta = app
            .internal("GET", &format!("/internal/keys?since={version}"), None)
            .await;
        assert_eq!(delta.body["full"], json!(false));
        let keys = delta.body["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["id"], json!(ids[1]));
        assert_eq!(keys[0]["daily_limit"], json!(7));
        let latest = delta.body["version"].as_i64().unwrap();
        assert!(latest > version);

        let started = Instant::now();
        let idle = app
            .internal(
                "GET",
                &format!("/internal/keys?since={latest}&wait_ms=300"),
                None,
            )
            .await;
        assert!(started.elapsed() >= Duration::from_millis(290));
        assert_eq!(idle.body["keys"], json!([]));
        assert_eq!(idle.body["version"], json!(latest));
        assert_eq!(idle.body["full"], json!(false));

        // A version this database never issued (it was reset): start over with a snapshot.
        let future = app
            .internal(
                "GET",
                &format!("/internal/keys?since={}", latest + 100),
                None,
            )
            .await;
        assert_eq!(future.body["full"], json!(true));
        assert_eq!(future.body["keys"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn long_poll_returns_promptly_on_a_change() {
        let app = TestApp::new().await;
        let console = app.demo_console().await;
        // Even an empty key table has a version to wait on.
        let version = app.internal("GET", "/internal/keys", None).await.body["version"]
            .as_i64()
            .unwrap();
        assert!(version > 0);
        let router = app.router.clone();
        let poll = tokio::spawn(async move {
            let started = Instant::now();
            let response = tower::ServiceExt::oneshot(
                router,
                Request::get(format!("/internal/keys?since={version}&wait_ms=20000"))
                    .header("x-wiz-internal-token", crate::testing::internal_bearer())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                started.elapsed(),
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let created = app
            .admin(
                &console,
                "POST",
                "/admin/keys",
                Some(json!({"name": "new"})),
            )
            .await;
        let (elapsed, body) = poll.await.unwrap();
        // Woken by the change (~200 ms in), not by the 20 s deadline.
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
        assert_eq!(body["keys"][0]["id"], created.body["id"]);
    }

    #[tokio::test]
    async fn changes_from_another_process_are_seen_within_a_second() {
        let app = TestApp::new().await;
        let console = app.demo_console().await;
        let created = app
            .admin(&console, "POST", "/admin/keys", Some(json!({"name": "k"})))
            .await;
        let version = app.internal("GET", "/internal/keys", None).await.body["version"]
            .as_i64()
            .unwrap();
        let router = app.router.clone();
        let poll = tokio::spawn(async move {
            let response = tower::ServiceExt::oneshot(
                router,
                Request::get(format!("/internal/keys?since={version}&wait_ms=20000"))
                    .header("x-wiz-internal-token", crate::testing::internal_bearer())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                Instant::now(),
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            )
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // What the `accounts set-plan` CLI does: a database change and no in-process signal.
        let mut tx = app.state.db.begin().await.unwrap();
        accounts::set_plan(&mut tx, &console.account_id, accounts::Plan::Free)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
        let changed_at = Instant::now();
        let (answered_at, body) = poll.await.unwrap();
        assert!(
            answered_at.duration_since(changed_at) < Duration::from_secs(1),
            "{:?}",
            answered_at.duration_since(changed_at)
        );
        assert_eq!(body["keys"][0]["id"], created.body["id"]);
        assert_eq!(body["keys"][0]["plan"], json!("free"));
    }
}
