//! The event log. Every state change customers can subscribe to is written here inside the same
//! transaction as the change, so an event exists if and only if the change committed. The webhook
//! sender reads this table; nothing else sends events.

use serde_json::Value;

use crate::{clock::now_ms, ids::new_id, unit_of_work::UnitOfWork};

/// Every event type a webhook endpoint can subscribe to (SPEC §8).
pub const EVENT_TYPES: &[&str] = &[
    "message.received",
    "message.sent",
    "message.delivered",
    "message.read",
    "message.failed",
    "batch.completed",
    "contact.created",
    "contact.updated",
    "chatbot.handover",
];

/// Writes one event in the operation's unit of work and returns its `evt_` id; the unit's
/// commit wakes the webhook sender.
pub async fn emit(
    work: &mut UnitOfWork,
    account_id: &str,
    event_type: &str,
    data: Value,
) -> Result<String, sqlx::Error> {
    debug_assert!(
        EVENT_TYPES.contains(&event_type),
        "unknown event type {event_type}"
    );
    let id = new_id("evt");
    sqlx::query(
        "INSERT INTO events (id, account_id, type, data, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(account_id)
    .bind(event_type)
    .bind(data.to_string())
    .bind(now_ms())
    .execute(&mut **work)
    .await?;
    work.event_written();
    // Inside the operation's span (a message's id, a batch's), this line links the two; the
    // webhook fan-out's "delivery created" line links the event to its deliveries.
    tracing::debug!(event_id = %id, event_type, account_id, "event written");
    Ok(id)
}
