//! WhatsApp's customer-service window: a business may send free-form messages (text, media,
//! interactive) to a number only within 24 hours of that number's last message to it; outside
//! the window only approved templates go through, and Meta refuses anything else with 131047
//! (https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-messages#customer-service-windows).
//! On the Cloud API channel such a message is refused up front (422), so the client learns it
//! at once instead of from a `message.failed` later. The window opens with the newest inbound
//! message that arrived through the Cloud API (sandbox messages are simulations and open none).

use sqlx::AnyConnection;

use crate::{
    clock::now_ms,
    messages::{store, Content, MessageError},
    refusal::Refusal,
};

pub const WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Stands for "a free-form message" where the content is not known yet (a chatbot flow).
pub const FREE_FORM: Content = Content::Text(crate::messages::TextContent {
    body: String::new(),
});

/// Whether the content is free-form (anything but a template).
fn free_form(content: &Content) -> bool {
    !matches!(content, Content::Template(_))
}

/// 422 `outside_customer_service_window` for a free-form message on the Cloud API channel to a
/// number that has not written within 24 hours.
pub async fn check(
    conn: &mut AnyConnection,
    account_id: &str,
    channel: &str,
    phone: &str,
    content: &Content,
) -> Result<(), MessageError> {
    if channel != super::cloud::NAME || !free_form(content) {
        return Ok(());
    }
    let last = store::last_inbound_at(conn, account_id, phone, super::cloud::NAME).await?;
    if last.is_some_and(|at| now_ms() - at < WINDOW_MS) {
        return Ok(());
    }
    Err(outside().into())
}

pub fn outside() -> Refusal {
    Refusal::unacceptable(
        "outside_customer_service_window",
        "the recipient has not written in the last 24 hours, so WhatsApp only accepts an \
         approved template message (type template)",
    )
}

/// For a bulk send: the numbers inside the window on the Cloud API channel (one query, bounded
/// by the last day's inbound traffic), or `None` when the channel has no window.
pub async fn open_phones(
    conn: &mut AnyConnection,
    account_id: &str,
    channel: &str,
) -> Result<Option<std::collections::HashSet<String>>, sqlx::Error> {
    if channel != super::cloud::NAME {
        return Ok(None);
    }
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT phone FROM messages WHERE account_id = $1 AND direction = 'inbound' \
         AND channel = $2 AND created_at > $3",
    )
    .bind(account_id)
    .bind(channel)
    .bind(now_ms() - WINDOW_MS)
    .fetch_all(conn)
    .await?;
    Ok(Some(rows.into_iter().map(|(p,)| p).collect()))
}
