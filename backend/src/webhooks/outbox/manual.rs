//! Deliveries made by hand: a test event to one endpoint, and a manual retry.

use std::time::Duration;

use super::event_body;
use crate::{clock::now_ms, db::Db, ids::new_id, webhooks::TEST_EVENT_TYPE};

/// Creates the delivery row of a test event for one endpoint, leased so that the worker leaves
/// it alone while the test route sends it (and picks it up if this process dies meanwhile).
pub async fn create_test_delivery(
    db: &Db,
    account_id: &str,
    endpoint_id: &str,
    lease: Duration,
) -> Result<String, sqlx::Error> {
    let now = now_ms();
    let event_id = new_id("evt");
    let delivery_id = new_id("dlv");
    let body = event_body(
        &event_id,
        TEST_EVENT_TYPE,
        now,
        account_id,
        &serde_json::json!({
            "endpoint_id": endpoint_id,
            "message": "A test event from WizMessage Edge",
        })
        .to_string(),
    );
    let until = now + lease.as_millis() as i64;
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, event_id, event_type, \
         payload, status, attempt_count, next_attempt_at, locked_until, locked_by, created_at, \
         updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7, 'test', $8, $8)",
    )
    .bind(&delivery_id)
    .bind(account_id)
    .bind(endpoint_id)
    .bind(&event_id)
    .bind(TEST_EVENT_TYPE)
    .bind(body)
    .bind(until)
    .bind(now)
    .execute(db)
    .await?;
    Ok(delivery_id)
}

/// Makes a delivery due now, whatever its state (SPEC §6 manual retry). `None` if it is not the
/// account's.
pub async fn retry_now(
    db: &Db,
    account_id: &str,
    delivery_id: &str,
) -> Result<Option<()>, sqlx::Error> {
    let now = now_ms();
    let updated = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, updated_at = $1 \
         WHERE id = $2 AND account_id = $3",
    )
    .bind(now)
    .bind(delivery_id)
    .bind(account_id)
    .execute(db)
    .await?
    .rows_affected();
    Ok((updated > 0).then_some(()))
}
