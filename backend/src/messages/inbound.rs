//! A customer's message arriving, from any channel (the sandbox, the WhatsApp Cloud API's
//! callbacks): stored `received` with its `message.received` event, the contact created if new,
//! and fed to the chatbot — all on the caller's transaction.

use sqlx::AnyConnection;

use super::{
    store::{self, NewMessage},
    Content, Direction, Message, Status,
};
use crate::{
    chatbot::engine::{self, Ctx, Outcome},
    contacts,
    error::ApiError,
    ids::new_id,
    state::AppState,
};

/// One inbound message: where it came from and what it carries.
pub struct Inbound<'a> {
    pub account_id: &'a str,
    /// The channel it arrived on; the bot answers through the same one.
    pub channel: &'static str,
    /// E.164.
    pub from: &'a str,
    pub content: Content,
    /// The provider's id for it (Cloud API `wamid`), so a repeated callback is recognised.
    pub provider_message_id: Option<&'a str>,
}

/// Stores the message and runs the chatbot on it. The caller commits, then calls
/// [`after_commit`].
pub async fn receive(
    conn: &mut AnyConnection,
    inbound: Inbound<'_>,
) -> Result<(Message, Outcome), ApiError> {
    let (contact, _) = contacts::find_or_create(conn, inbound.account_id, inbound.from).await?;
    let message = store::insert(
        conn,
        NewMessage {
            id: new_id("msg"),
            account_id: inbound.account_id.to_string(),
            direction: Direction::Inbound,
            contact_id: Some(contact.id.clone()),
            phone: contact.phone.clone(),
            content: inbound.content.clone(),
            reference: None,
            flow_id: None,
            channel: inbound.channel,
        },
    )
    .await?;
    if let Some(provider_id) = inbound.provider_message_id {
        store::set_provider_id(conn, &message.id, provider_id).await?;
    }
    let (text, button) = match &inbound.content {
        Content::Text(t) => (Some(t.body.as_str()), None),
        Content::Button(b) => (None, Some(b)),
        // A picture or a document moves no flow, but its caption is what the customer said.
        Content::Media(m) => (m.caption.as_deref(), None),
        _ => (None, None),
    };
    let outcome = engine::on_inbound(
        conn,
        Ctx {
            account_id: inbound.account_id,
            channel: inbound.channel,
        },
        contact,
        text,
        button,
    )
    .await?;
    Ok((message, outcome))
}

/// After the transaction of one or more [`receive`] calls committed: wake the event sender and
/// the dispatcher (for the bot's answers) and count.
pub fn after_commit(state: &AppState, received: usize, outcomes: Vec<Outcome>) {
    state.events_written();
    let metrics = &state.messaging.metrics;
    metrics.messages_n(Status::Received, received as u64);
    let queued: usize = outcomes.iter().map(|o| o.messages.len()).sum();
    if queued > 0 {
        state.messaging.wake_dispatcher();
        metrics.messages_n(Status::Queued, queued as u64);
    }
    for outcome in outcomes {
        for happening in outcome.happenings {
            metrics.chatbot.with_label_values(&[happening]).inc();
        }
    }
}
