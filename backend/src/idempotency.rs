//! `Idempotency-Key` on every `/v1` POST (SPEC §7), per account, for 24 hours.
//!
//! The key is reserved with an INSERT that conflicts on (account, key): exactly one request
//! wins and runs; it then stores its answer (status + body). A retry with the same key and the
//! same request (method, path and body, hashed) gets that stored answer with
//! `Idempotent-Replayed: true`, and nothing is done twice. A retry racing the first one waits
//! for the stored answer (polling briefly) and gets 409 `idempotency_key_in_progress` if it does
//! not come in time. The same key with a different request is 422 `idempotency_key_reused`.
//! A 5xx answer is not stored (the reservation is released), so the client can retry.

use std::time::Duration;

use axum::{
    body::{to_bytes, Body},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::{auth::gateway::Caller, error::ApiError, ids::now_ms, state::AppState};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub const MAX_KEY_CHARS: usize = 255;
const TTL_MS: i64 = 24 * 3600 * 1000;
/// A reservation without an answer this old belongs to a request that died (requests time out
/// after 60 s); it may be taken over.
const ABANDONED_MS: i64 = 90 * 1000;
/// How long a concurrent retry waits for the first request's answer.
const WAIT_FOR_ANSWER: Duration = Duration::from_secs(10);
/// Stored answers larger than this are not replayable; the reservation is released instead.
const MAX_STORED_BODY: usize = 4 * 1024 * 1024;

enum Reservation {
    Ours,
    Stored { status: u16, body: String },
    Mismatch,
    InProgress,
}

/// The `/v1` middleware (inside the gateway-proof layer, so the caller's account is known).
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(raw) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match raw.to_str() {
        Ok(key) if valid_key(key) => key.to_string(),
        _ => {
            return ApiError::bad_request(
                "invalid_idempotency_key",
                format!("Idempotency-Key: 1 to {MAX_KEY_CHARS} printable ASCII characters"),
            )
            .into_response()
        }
    };
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        // Not vouched for by the gateway: the handler refuses it, nothing to remember.
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, state.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let hash = request_hash(&parts.method, &parts.uri, &bytes);
    let metrics = &state.messaging.metrics.idempotency;
    match reserve(&state, &caller.account_id, &key, &hash).await {
        Err(err) => return err.into_response(),
        Ok(Reservation::Mismatch) => {
            metrics.with_label_values(&["reused"]).inc();
            return ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request; use a new key",
            )
            .into_response();
        }
        Ok(Reservation::InProgress) => {
            metrics.with_label_values(&["in_progress"]).inc();
            return ApiError::conflict(
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still being processed; retry shortly",
            )
            .into_response();
        }
        Ok(Reservation::Stored { status, body }) => {
            metrics.with_label_values(&["replayed"]).inc();
            return replay(status, body);
        }
        Ok(Reservation::Ours) => {}
    }

    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (mut parts, body) = response.into_parts();
    let bytes = match to_bytes(body, MAX_STORED_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => {
            release(&state, &caller.account_id, &key).await;
            return ApiError::Internal(anyhow::anyhow!("response body unreadable")).into_response();
        }
    };
    if parts.status.is_server_error() {
        release(&state, &caller.account_id, &key).await;
    } else {
        let stored = store_answer(
            &state,
            &caller.account_id,
            &key,
            parts.status.as_u16(),
            &String::from_utf8_lossy(&bytes),
        )
        .await;
        match stored {
            Ok(()) => metrics.with_label_values(&["stored"]).inc(),
            Err(err) => tracing::warn!(error = %err, "storing an idempotent answer failed"),
        }
    }
    parts
        .headers
        .insert(REPLAYED_HEADER, HeaderValue::from_static("false"));
    Response::from_parts(parts, Body::from(bytes))
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_CHARS && key.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn request_hash(method: &Method, uri: &http::Uri, body: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(body);
    hex::encode(hasher.finalize())
}

fn replay(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

async fn reserve(
    state: &AppState,
    account_id: &str,
    key: &str,
    hash: &str,
) -> Result<Reservation, ApiError> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_ANSWER;
    let mut pause = Duration::from_millis(10);
    loop {
        let now = now_ms();
        {
            let mut conn = state.db.acquire().await?;
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (account_id, idem_key, request_hash, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (account_id, idem_key) DO NOTHING",
            )
            .bind(account_id)
            .bind(key)
            .bind(hash)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                return Ok(Reservation::Ours);
            }
            let row: Option<(String, Option<i64>, Option<String>, i64)> = sqlx::query_as(
                "SELECT request_hash, status_code, response_body, created_at FROM idempotency_keys \
                 WHERE account_id = $1 AND idem_key = $2",
            )
            .bind(account_id)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await?;
            match row {
                // Released between our INSERT and SELECT: try again at once.
                None => continue,
                Some((_, _, _, created_at)) if created_at < now - TTL_MS => {
                    delete_if_created(&mut conn, account_id, key, created_at).await?;
                    continue;
                }
                Some((stored_hash, _, _, _)) if stored_hash != hash => {
                    return Ok(Reservation::Mismatch)
                }
                Some((_, Some(status), body, _)) => {
                    return Ok(Reservation::Stored {
                        status: status as u16,
                        body: body.unwrap_or_default(),
                    })
                }
                Some((_, None, _, created_at)) if created_at < now - ABANDONED_MS => {
                    delete_if_created(&mut conn, account_id, key, created_at).await?;
                    continue;
                }
                Some(_) => {}
            }
        }
        if tokio::time::Instant::now() + pause > deadline {
            return Ok(Reservation::InProgress);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Deletes a reservation only if it is still the one we looked at (another waiter may have
/// replaced it already).
async fn delete_if_created(
    conn: &mut AnyConnection,
    account_id: &str,
    key: &str,
    created_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE account_id = $1 AND idem_key = $2 AND created_at = $3",
    )
    .bind(account_id)
    .bind(key)
    .bind(created_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn store_answer(
    state: &AppState,
    account_id: &str,
    key: &str,
    status: u16,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status_code = $1, response_body = $2 \
         WHERE account_id = $3 AND idem_key = $4",
    )
    .bind(i64::from(status))
    .bind(body)
    .bind(account_id)
    .bind(key)
    .execute(&state.db)
    .await?;
    Ok(())
}

async fn release(state: &AppState, account_id: &str, key: &str) {
    let result = sqlx::query(
        "DELETE FROM idempotency_keys WHERE account_id = $1 AND idem_key = $2 \
         AND status_code IS NULL",
    )
    .bind(account_id)
    .bind(key)
    .execute(&state.db)
    .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "releasing an idempotency key failed");
    }
}

/// Deletes keys older than 24 h (housekeeping).
pub async fn sweep(conn: &mut AnyConnection, now: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(now - TTL_MS)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::messages::testkit::{signed, start};

    #[test]
    fn keys_and_hashes() {
        assert!(valid_key("a"));
        assert!(valid_key(&"k".repeat(255)));
        assert!(!valid_key(&"k".repeat(256)));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        let uri: http::Uri = "/v1/messages".parse().unwrap();
        let a = request_hash(&Method::POST, &uri, b"{}");
        assert_eq!(a, request_hash(&Method::POST, &uri, b"{}"));
        assert_ne!(a, request_hash(&Method::POST, &uri, b"{ }"));
        let other: http::Uri = "/v1/messages/bulk".parse().unwrap();
        assert_ne!(a, request_hash(&Method::POST, &other, b"{}"));
    }

    async fn count_messages(db: &crate::db::Db) -> i64 {
        let (n,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM messages")
            .fetch_one(db)
            .await
            .unwrap();
        n
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_retries_do_it_once() {
        let m = start(1000).await;
        let body = json!({"to": "+14155550101", "type": "text", "text": {"body": "once"}});
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let router = m.app.router.clone();
                let request = signed(
                    &m.account,
                    "POST",
                    "/v1/messages",
                    Some(&body),
                    &[(HEADER, "order-42")],
                );
                tokio::spawn(async move {
                    let response = router.oneshot(request).await.unwrap();
                    let status = response.status();
                    let replayed = response.headers().get(REPLAYED_HEADER).cloned();
                    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
                    (
                        status,
                        replayed,
                        serde_json::from_slice::<Value>(&bytes).unwrap(),
                    )
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        let first = &answers[0].2;
        for (status, replayed, body) in &answers {
            assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
            assert_eq!(body["id"], first["id"]);
            assert!(replayed.is_some());
        }
        let replays = answers
            .iter()
            .filter(|(_, r, _)| r.as_ref().is_some_and(|v| v == "true"))
            .count();
        assert_eq!(replays, 19);
        assert_eq!(count_messages(&m.app.state.db).await, 1);
        assert_eq!(m.count_events("contact.created").await, 1);

        // Same key, another body: refused, nothing done.
        let other = json!({"to": "+14155550101", "type": "text", "text": {"body": "twice"}});
        let reused = m.post_with_key("/v1/messages", &other, "order-42").await;
        assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reused.code(), "idempotency_key_reused");
        // Same key on another endpoint: a different request too.
        let bulk =
            json!({"type": "text", "text": {"body": "x"}, "recipients": [{"to": "+14155550101"}]});
        assert_eq!(
            m.post_with_key("/v1/messages/bulk", &bulk, "order-42")
                .await
                .code(),
            "idempotency_key_reused"
        );
        // The key is per account.
        let other_account = m
            .app
            .create_account(
                "Other",
                crate::accounts::Plan::WizPro,
                "o@o.test",
                "password-o",
            )
            .await;
        let elsewhere = m
            .app
            .send(signed(
                &other_account,
                "POST",
                "/v1/messages",
                Some(&body),
                &[(HEADER, "order-42")],
            ))
            .await;
        assert_eq!(elsewhere.status, StatusCode::ACCEPTED);
        assert_ne!(elsewhere.body["id"], first["id"]);
        assert_eq!(count_messages(&m.app.state.db).await, 2);

        // Errors are answers too: replayed, not redone.
        let bad = json!({"to": "+14155550101", "type": "template", "template": {"name": "nope"}});
        let a = m.post_with_key("/v1/messages", &bad, "bad-1").await;
        let b = m.post_with_key("/v1/messages", &bad, "bad-1").await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!((b.status, &b.body), (a.status, &a.body));
        assert_eq!(b.headers[REPLAYED_HEADER], "true");

        let too_long = m
            .post_with_key("/v1/messages", &body, &"k".repeat(256))
            .await;
        assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
        assert_eq!(too_long.code(), "invalid_idempotency_key");
        // Without a key, every POST counts.
        m.v1("POST", "/v1/messages", Some(body.clone())).await;
        m.v1("POST", "/v1/messages", Some(body)).await;
        assert_eq!(count_messages(&m.app.state.db).await, 4);
    }

    #[tokio::test]
    async fn bulk_retries_create_one_batch() {
        let m = start(1000).await;
        let body = json!({"type": "text", "text": {"body": "Hi {{name}}"},
            "recipients": [{"to": "+14155550101", "variables": {"name": "A"}},
                           {"to": "+14155550102", "variables": {"name": "B"}}]});
        let a = m.post_with_key("/v1/messages/bulk", &body, "bulk-1").await;
        let b = m.post_with_key("/v1/messages/bulk", &body, "bulk-1").await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
        assert_eq!(a.body, b.body);
        let (batches,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM batches")
            .fetch_one(&m.app.state.db)
            .await
            .unwrap();
        assert_eq!(batches, 1);
        assert_eq!(count_messages(&m.app.state.db).await, 2);
    }
}
