//! Messaging operations behind `/v1/messages` and `/v1/sandbox/inbound`: each validates, runs in
//! one unit of work (through the request's idempotency claim) and returns the message's view.

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    inbound,
    render::TemplateSource,
    store::{self, NewMessage},
    ButtonReply, Content, Direction, MediaContent, MessageView, TextContent,
};
use crate::{
    channel::window,
    contacts::{self, Contact},
    error::ApiError,
    idempotency::Idempotency,
    ids::new_id,
    state::AppState,
    templates,
    unit_of_work::UnitOfWork,
};

/// The contact a request addresses: `to` (an E.164 number, the contact created if new, or a
/// contact id) or `contact_id`. Emits `contact.created` on `conn` for a new number.
pub async fn resolve_contact(
    conn: &mut UnitOfWork,
    account_id: &str,
    to: Option<&str>,
    contact_id: Option<&str>,
) -> Result<Contact, ApiError> {
    let id = match (to, contact_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give either `to` or `contact_id`, not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "missing recipient: give `to` (E.164) or `contact_id`",
            ))
        }
        (Some(to), None) if !to.starts_with("con_") => {
            contacts::validate_phone_field("to", to)?;
            let (contact, _) = contacts::find_or_create(conn, account_id, to).await?;
            return Ok(contact);
        }
        (Some(id), None) | (None, Some(id)) => id,
    };
    contacts::get(conn, account_id, id).await?.ok_or_else(|| {
        ApiError::unprocessable("contact_not_found", format!("no contact with id {id:?}"))
    })
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SendKind {
    Text,
    Template,
    Media,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    #[schema(example = "order_update")]
    pub name: String,
    /// Optional when the account has the template in one language only.
    #[schema(example = "en")]
    pub language: Option<String>,
    /// A value for each `{{variable}}` of the template, no more, no less.
    #[serde(default)]
    #[schema(value_type = Object, example = json!({"name": "Ada", "order": "A-1"}))]
    pub variables: Map<String, Value>,
}

/// `POST /v1/messages`: a recipient (`to` or `contact_id`), a `type` and that type's body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// E.164 number (the contact is created if new), or a contact id.
    #[schema(example = "+14155550101")]
    pub to: Option<String>,
    pub contact_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: SendKind,
    pub text: Option<TextContent>,
    pub template: Option<TemplateRequest>,
    pub media: Option<MediaContent>,
    /// Your reference, 1 to 128 characters, shown on the message and its events.
    pub reference: Option<String>,
}

/// Checks the type against the bodies given: exactly the one the type names.
fn check_body_matches_type(req: &SendMessage) -> Result<(), ApiError> {
    let given = [
        ("text", req.text.is_some()),
        ("template", req.template.is_some()),
        ("media", req.media.is_some()),
    ];
    let wanted = match req.kind {
        SendKind::Text => "text",
        SendKind::Template => "template",
        SendKind::Media => "media",
    };
    for (name, present) in given {
        if name == wanted && !present {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("type {wanted} needs a `{wanted}` object"),
            ));
        }
        if name != wanted && present {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("`{name}` does not go with type {wanted}"),
            ));
        }
    }
    Ok(())
}

/// `POST /v1/sandbox/inbound`: a text, or a tap on a reply button.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundRequest {
    /// The customer's number (E.164); the contact is created if new.
    #[schema(example = "+14155550101")]
    pub from: String,
    pub text: Option<String>,
    pub button: Option<ButtonReply>,
}

/// Sends one message (`POST /v1/messages`): validated, rendered and queued.
pub async fn send(
    state: &AppState,
    idem: &Idempotency,
    account_id: &str,
    req: SendMessage,
) -> Result<MessageView, ApiError> {
    check_body_matches_type(&req)?;
    if let Some(reference) = &req.reference {
        super::validate_reference("reference", reference)?;
    }
    match (&req.text, &req.media) {
        (Some(text), _) => super::validate_text("text.body", &text.body)?,
        (_, Some(media)) => super::validate_media(media)?,
        _ => {}
    }
    let mut tx = idem.begin(state).await?;
    let content = match (req.text, req.template, req.media) {
        (Some(text), _, _) => Content::Text(text),
        (_, _, Some(media)) => Content::Media(media),
        (_, Some(t), _) => {
            let template =
                templates::service::find(&mut tx, account_id, &t.name, t.language.as_deref())
                    .await?;
            Content::Template(TemplateSource::new(template)?.render(&t.variables)?)
        }
        (None, None, None) => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "missing message body",
            ))
        }
    };
    let contact = resolve_contact(
        &mut tx,
        account_id,
        req.to.as_deref(),
        req.contact_id.as_deref(),
    )
    .await?;
    if !contact.opted_in {
        return Err(ApiError::unprocessable(
            "contact_opted_out",
            "the contact opted out of messages",
        ));
    }
    let channel = state.messaging.channel_for(&mut tx, account_id).await?;
    window::check(&mut tx, account_id, channel, &contact.phone, &content).await?;
    let message = store::insert(
        &mut tx,
        NewMessage {
            id: new_id("msg"),
            account_id: account_id.to_string(),
            direction: Direction::Outbound,
            contact_id: Some(contact.id.clone()),
            phone: contact.phone.clone(),
            content,
            reference: req.reference,
            flow_id: None,
            channel,
        },
    )
    .await?;
    let view = message.view();
    idem.commit(tx, StatusCode::ACCEPTED, &view).await?;
    Ok(view)
}

/// Stores a simulated inbound message (`POST /v1/sandbox/inbound`) and feeds it to the chatbot.
pub async fn receive_sandbox(
    state: &AppState,
    idem: &Idempotency,
    account_id: &str,
    req: InboundRequest,
) -> Result<MessageView, ApiError> {
    contacts::validate_phone_field("from", &req.from)?;
    let content = match (req.text, req.button) {
        (Some(text), None) => {
            super::validate_text("text", &text)?;
            Content::Text(TextContent { body: text })
        }
        (None, Some(button)) => {
            let id_ok = button
                .id
                .as_deref()
                .is_some_and(|s| !s.is_empty() && s.chars().count() <= 256);
            let text_ok = button
                .text
                .as_deref()
                .is_some_and(|s| !s.trim().is_empty() && s.chars().count() <= 256);
            if !id_ok && !text_ok {
                return Err(ApiError::unprocessable(
                    "invalid_button",
                    "button: give its `id` or its `text` (1 to 256 characters)",
                ));
            }
            Content::Button(button)
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give exactly one of `text` or `button`",
            ))
        }
    };
    let mut tx = idem.begin(state).await?;
    let channel = state.messaging.channel_for(&mut tx, account_id).await?;
    let (message, _) = inbound::receive(
        &mut tx,
        inbound::Inbound {
            account_id,
            channel,
            from: &req.from,
            content,
            provider_message_id: None,
        },
    )
    .await?;
    let view = message.view();
    idem.commit(tx, StatusCode::ACCEPTED, &view).await?;
    Ok(view)
}
