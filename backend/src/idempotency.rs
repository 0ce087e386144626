//! `Idempotency-Key` on every `/v1` POST (SPEC §7), per account, for 24 hours.
//!
//! The record of a key commits in the same transaction as the effect it records, so no crash,
//! timeout or error can make a request run twice or leave a key stuck:
//!
//! - the middleware (`layer`) looks the key up first: the same request (method, path and body,
//!   hashed) done before gets the stored answer with `Idempotent-Replayed: true`; another request
//!   under the key is 422 `idempotency_key_reused`. Otherwise it hands the handler a `Claim`
//!   (request extension, read with the `Idempotency` extractor);
//! - the handler opens its transaction with `Idempotency::begin`, which first inserts the key's
//!   row inside it, and ends with `Idempotency::commit`, which writes the answer into that row and
//!   commits effect and record together. A duplicate racing it blocks on that row (PostgreSQL's
//!   unique index; SQLite has one writer) until the first commits, then finds the key taken and
//!   is answered with the stored answer, or proceeds if the first rolled back;
//! - an error, a crash or a dropped connection before the commit rolls the row back with the
//!   effect: nothing is remembered and a retry runs once. Answers without an effect (errors, a
//!   bulk `dry_run`) are not stored.
//!
//! Rows are swept after 24 h by the messaging housekeeping (a plain `DELETE` by age, safe when
//! several backends run it at once), and a row past 24 h is taken over by a new request anyway.

use std::convert::Infallible;

use axum::{
    body::{to_bytes, Body},
    extract::{FromRequestParts, Request, State},
    http::{request::Parts, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::IntCounterVec;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::{
    auth::gateway::Caller, clock::now_ms, error::ApiError, state::AppState,
    unit_of_work::UnitOfWork,
};

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub const MAX_KEY_CHARS: usize = 255;
const TTL_MS: i64 = 24 * 3600 * 1000;

/// A key the handler must record in its effect's transaction.
#[derive(Clone)]
pub struct Claim {
    account_id: String,
    key: String,
    hash: String,
    metrics: IntCounterVec,
}

/// The request's `Claim`, if it carried an `Idempotency-Key`: every `/v1` POST handler with an
/// effect opens and commits its transaction through this.
#[derive(Clone, Default)]
pub struct Idempotency(Option<Claim>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Idempotency(parts.extensions.get::<Claim>().cloned()))
    }
}

impl Idempotency {
    /// Begins the effect's unit of work, its first statement claiming the key.
    pub async fn begin(&self, state: &AppState) -> Result<UnitOfWork, ApiError> {
        let mut work = UnitOfWork::begin(state).await?;
        if let Some(claim) = &self.0 {
            claim.take(&mut work).await?;
        }
        Ok(work)
    }

    /// Stores the answer in the unit of work and commits effect and record at once. `body` is
    /// what the handler answers (as `Json(body)`), so a replay is byte for byte the first answer.
    pub async fn commit<T: Serialize>(
        &self,
        mut work: UnitOfWork,
        status: StatusCode,
        body: &T,
    ) -> Result<(), ApiError> {
        if let Some(claim) = &self.0 {
            let body = serde_json::to_string(body)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("serialising the answer: {e}")))?;
            sqlx::query(
                "UPDATE idempotency_keys SET status_code = $1, response_body = $2 \
                 WHERE account_id = $3 AND idem_key = $4",
            )
            .bind(i64::from(status.as_u16()))
            .bind(body)
            .bind(&claim.account_id)
            .bind(&claim.key)
            .execute(&mut *work)
            .await?;
            work.commit().await?;
            claim.metrics.with_label_values(&["stored"]).inc();
        } else {
            work.commit().await?;
        }
        Ok(())
    }
}

impl Claim {
    /// Inserts the key's row, or takes over one older than 24 h (or one committed without an
    /// answer, which only a handler that bypassed `commit` could leave). A row of a transaction
    /// still running blocks this statement until that transaction ends.
    async fn take(&self, conn: &mut AnyConnection) -> Result<(), ApiError> {
        let now = now_ms();
        let taken = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, idem_key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account_id, idem_key) DO UPDATE SET \
               request_hash = excluded.request_hash, created_at = excluded.created_at, \
               status_code = NULL, response_body = NULL \
             WHERE idempotency_keys.created_at < $5 OR idempotency_keys.status_code IS NULL",
        )
        .bind(&self.account_id)
        .bind(&self.key)
        .bind(&self.hash)
        .bind(now)
        .bind(now - TTL_MS)
        .execute(conn)
        .await?
        .rows_affected();
        if taken == 0 {
            // A duplicate committed first. The middleware replaces this answer with the stored one
            // (or with 422 if it was another request under the same key).
            return Err(in_progress());
        }
        Ok(())
    }
}

fn in_progress() -> ApiError {
    ApiError::conflict(
        "idempotency_key_in_progress",
        "a request with this Idempotency-Key is still being processed; retry shortly",
    )
}

/// What is stored under a key, if anything live.
enum Stored {
    Answer { status: u16, body: String },
    OtherRequest,
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
    let (mut parts, body) = request.into_parts();
    let bytes = match to_bytes(body, state.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let hash = request_hash(&parts.method, &parts.uri, &bytes);
    let metrics = state.messaging.metrics.idempotency.clone();
    match lookup(&state.db, &caller.account_id, &key, &hash).await {
        Err(err) => return err.into_response(),
        Ok(Some(stored)) => return answer_stored(&metrics, stored),
        Ok(None) => {}
    }
    parts.extensions.insert(Claim {
        account_id: caller.account_id.clone(),
        key: key.clone(),
        hash: hash.clone(),
        metrics: metrics.clone(),
    });
    let mut response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if !response.status().is_success() {
        // This request's effect rolled back. If that is because a duplicate committed while it
        // ran (the key's row, or a row the duplicate created, such as the contact), the
        // duplicate's answer is this request's answer too.
        match lookup(&state.db, &caller.account_id, &key, &hash).await {
            Ok(Some(stored)) => return answer_stored(&metrics, stored),
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "re-reading an idempotency key failed"),
        }
    }
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("false"));
    response
}

fn answer_stored(metrics: &IntCounterVec, stored: Stored) -> Response {
    match stored {
        Stored::OtherRequest => {
            metrics.with_label_values(&["reused"]).inc();
            ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request; use a new key",
            )
            .into_response()
        }
        Stored::Answer { status, body } => {
            metrics.with_label_values(&["replayed"]).inc();
            replay(status, body)
        }
    }
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

/// The committed record of a key, younger than 24 h. Rows without an answer are no record.
async fn lookup(
    db: &crate::db::Db,
    account_id: &str,
    key: &str,
    hash: &str,
) -> Result<Option<Stored>, ApiError> {
    let row: Option<(String, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT request_hash, status_code, response_body FROM idempotency_keys \
         WHERE account_id = $1 AND idem_key = $2 AND created_at >= $3",
    )
    .bind(account_id)
    .bind(key)
    .bind(now_ms() - TTL_MS)
    .fetch_optional(db)
    .await?;
    Ok(match row {
        Some((_, None, _)) | None => None,
        Some((stored_hash, Some(_), _)) if stored_hash != hash => Some(Stored::OtherRequest),
        Some((_, Some(status), body)) => Some(Stored::Answer {
            status: status as u16,
            body: body.unwrap_or_default(),
        }),
    })
}

/// Deletes keys older than 24 h (housekeeping). A plain DELETE by age: several backends running
/// it at once delete the same rows, one of them each.
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

        // An error rolled its effect back and left no record: the same key runs again, with
        // this body or another.
        let bad = json!({"to": "+14155550101", "type": "template", "template": {"name": "nope"}});
        let a = m.post_with_key("/v1/messages", &bad, "bad-1").await;
        let b = m.post_with_key("/v1/messages", &bad, "bad-1").await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!((b.status, &b.body), (a.status, &a.body));
        assert_eq!(b.headers[REPLAYED_HEADER], "false");
        let fixed = json!({"to": "+14155550101", "type": "text", "text": {"body": "fixed"}});
        assert_eq!(
            m.post_with_key("/v1/messages", &fixed, "bad-1")
                .await
                .status,
            StatusCode::ACCEPTED
        );
        assert_eq!(count_messages(&m.app.state.db).await, 3);

        let too_long = m
            .post_with_key("/v1/messages", &body, &"k".repeat(256))
            .await;
        assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
        assert_eq!(too_long.code(), "invalid_idempotency_key");
        // Without a key, every POST counts.
        m.v1("POST", "/v1/messages", Some(body.clone())).await;
        m.v1("POST", "/v1/messages", Some(body)).await;
        assert_eq!(count_messages(&m.app.state.db).await, 5);
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

    /// The effect fails after part of it was written (the contact, its `contact.created` event):
    /// the key's record rolls back with it, and the retries that follow run once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failure_after_partial_work_leaves_nothing_and_a_retry_runs_once() {
        let m = start(1000).await;
        let db = &m.app.state.db;
        sqlx::query(
            "CREATE TRIGGER injected_failure BEFORE INSERT ON messages \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        )
        .execute(db)
        .await
        .unwrap();
        let body = json!({"to": "+14155550177", "type": "text", "text": {"body": "once"}});
        let failed = m.post_with_key("/v1/messages", &body, "flaky-1").await;
        assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
        let (keys, contacts): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT CAST(COUNT(*) AS BIGINT) FROM idempotency_keys), \
                    (SELECT CAST(COUNT(*) AS BIGINT) FROM contacts WHERE phone = '+14155550177')",
        )
        .fetch_one(db)
        .await
        .unwrap();
        assert_eq!(
            (keys, contacts),
            (0, 0),
            "the failed request left something behind"
        );
        assert_eq!(m.count_events("contact.created").await, 0);

        sqlx::query("DROP TRIGGER injected_failure")
            .execute(db)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let router = m.app.router.clone();
                let request = signed(
                    &m.account,
                    "POST",
                    "/v1/messages",
                    Some(&body),
                    &[(HEADER, "flaky-1")],
                );
                tokio::spawn(async move {
                    let response = router.oneshot(request).await.unwrap();
                    let status = response.status();
                    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
                    (status, serde_json::from_slice::<Value>(&bytes).unwrap())
                })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        for answer in &answers {
            assert_eq!(answer, &answers[0]);
        }
        assert_eq!(answers[0].0, StatusCode::ACCEPTED);
        assert_eq!(count_messages(db).await, 1);
        assert_eq!(m.count_events("contact.created").await, 1);
    }

    /// Records older than 24 h are swept; a key whose record expired runs again.
    #[tokio::test]
    async fn records_expire_after_a_day() {
        let m = start(1000).await;
        let db = &m.app.state.db;
        let body = json!({"to": "+14155550178", "type": "text", "text": {"body": "a"}});
        let first = m.post_with_key("/v1/messages", &body, "old-1").await;
        assert_eq!(first.status, StatusCode::ACCEPTED);
        sqlx::query("UPDATE idempotency_keys SET created_at = created_at - $1")
            .bind(TTL_MS + 1)
            .execute(db)
            .await
            .unwrap();
        // Past 24 h, not swept yet: the key is free again.
        let second = m.post_with_key("/v1/messages", &body, "old-1").await;
        assert_eq!(second.status, StatusCode::ACCEPTED);
        assert_ne!(second.body["id"], first.body["id"]);
        sqlx::query("UPDATE idempotency_keys SET created_at = created_at - $1")
            .bind(TTL_MS + 1)
            .execute(db)
            .await
            .unwrap();
        let mut conn = db.acquire().await.unwrap();
        assert_eq!(sweep(&mut conn, now_ms()).await.unwrap(), 1);
    }
}
