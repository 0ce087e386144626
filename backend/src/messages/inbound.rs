//! A customer's message arriving, from any channel (the sandbox, the WhatsApp Cloud API's
//! callbacks): stored `received` with its `message.received` event, the contact created if new,
//! and fed to the chatbot — all in the caller's unit of work.

use super::{
    store::{self, NewMessage},
    Content, Direction, Message, MessageError,
};
use crate::{
    chatbot::engine::{self, Ctx, Outcome},
    contacts,
    ids::new_id,
    unit_of_work::UnitOfWork,
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

/// Stores the message and runs the chatbot on it; the caller commits.
pub async fn receive(
    conn: &mut UnitOfWork,
    inbound: Inbound<'_>,
) -> Result<(Message, Outcome), MessageError> {
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
    .await
    .map_err(MessageError::Chatbot)?;
    Ok((message, outcome))
}
