//! Messaging operations behind `/v1/messages` and `/v1/sandbox/inbound`: a request is checked
//! before any transaction starts (`check`), then acted on in the caller's unit of work, which the
//! caller commits (through the request's idempotency claim).

use serde::Deserialize;
use serde_json::{Map, Value};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::{
    inbound,
    render::TemplateSource,
    store::{self, ListFilter, NewMessage},
    ButtonReply, Content, Direction, MediaContent, Message, MessageError, TextContent,
};
use crate::{
    channel::{window, Messaging},
    contacts::{self, Contact},
    ids::new_id,
    refusal::Refusal,
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
) -> Result<Contact, MessageError> {
    let id = match (to, contact_id) {
        (Some(_), Some(_)) => {
            return Err(Refusal::invalid(
                "invalid_body",
                "give either `to` or `contact_id`, not both",
            )
            .into())
        }
        (None, None) => {
            return Err(Refusal::invalid(
                "invalid_body",
                "missing recipient: give `to` (E.164) or `contact_id`",
            )
            .into())
        }
        (Some(to), None) if !to.starts_with("con_") => {
            contacts::validate_phone_field("to", to)?;
            let (contact, _) = contacts::find_or_create(conn, account_id, to).await?;
            return Ok(contact);
        }
        (Some(id), None) | (None, Some(id)) => id,
    };
    contacts::get(conn, account_id, id).await?.ok_or_else(|| {
        Refusal::unacceptable("contact_not_found", format!("no contact with id {id:?}")).into()
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
fn check_body_matches_type(req: &SendMessage) -> Result<(), Refusal> {
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
            return Err(Refusal::invalid(
                "invalid_body",
                format!("type {wanted} needs a `{wanted}` object"),
            ));
        }
        if name != wanted && present {
            return Err(Refusal::invalid(
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

/// A message to send that passed the checks that need no database.
#[derive(Debug)]
pub struct CheckedSend {
    to: Option<String>,
    contact_id: Option<String>,
    body: Body,
    reference: Option<String>,
}

/// A message's content, or the template it is rendered from once the template is read.
#[derive(Debug)]
enum Body {
    Ready(Content),
    Template(TemplateRequest),
}

impl SendMessage {
    /// The request, or the first rule it breaks: the type against the bodies given, then the
    /// reference, then the text or media. Checked before any transaction starts.
    pub fn check(self) -> Result<CheckedSend, Refusal> {
        check_body_matches_type(&self)?;
        if let Some(reference) = &self.reference {
            super::validate_reference("reference", reference)?;
        }
        match (&self.text, &self.media) {
            (Some(text), _) => super::validate_text("text.body", &text.body)?,
            (_, Some(media)) => super::validate_media(media)?,
            _ => {}
        }
        let body = match (self.text, self.template, self.media) {
            (Some(text), _, _) => Body::Ready(Content::Text(text)),
            (_, _, Some(media)) => Body::Ready(Content::Media(media)),
            (_, Some(template), _) => Body::Template(template),
            (None, None, None) => {
                return Err(Refusal::invalid("invalid_body", "missing message body"))
            }
        };
        Ok(CheckedSend {
            to: self.to,
            contact_id: self.contact_id,
            body,
            reference: self.reference,
        })
    }
}

/// Sends one message (`POST /v1/messages`): the template rendered, the recipient resolved (an
/// opted-out contact refused, the customer-service window checked), the message queued.
pub async fn send(
    work: &mut UnitOfWork,
    messaging: &Messaging,
    account_id: &str,
    req: CheckedSend,
) -> Result<Message, MessageError> {
    let content = match req.body {
        Body::Ready(content) => content,
        Body::Template(t) => {
            let template =
                templates::service::find(work, account_id, &t.name, t.language.as_deref()).await?;
            Content::Template(TemplateSource::new(template)?.render(&t.variables)?)
        }
    };
    let contact = resolve_contact(
        work,
        account_id,
        req.to.as_deref(),
        req.contact_id.as_deref(),
    )
    .await?;
    if !contact.opted_in {
        return Err(Refusal::unacceptable(
            "contact_opted_out",
            "the contact opted out of messages",
        )
        .into());
    }
    let channel = messaging.channel_for(work, account_id).await?;
    window::check(work, account_id, channel, &contact.phone, &content).await?;
    let message = store::insert(
        work,
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
    Ok(message)
}

/// A simulated inbound message that passed its checks.
#[derive(Debug)]
pub struct CheckedInbound {
    from: String,
    content: Content,
}

impl InboundRequest {
    /// The message, or the first rule it breaks (the number, then the text or the button).
    pub fn check(self) -> Result<CheckedInbound, Refusal> {
        contacts::validate_phone_field("from", &self.from)?;
        let content = match (self.text, self.button) {
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
                    return Err(Refusal::unacceptable(
                        "invalid_button",
                        "button: give its `id` or its `text` (1 to 256 characters)",
                    ));
                }
                Content::Button(button)
            }
            _ => {
                return Err(Refusal::invalid(
                    "invalid_body",
                    "give exactly one of `text` or `button`",
                ))
            }
        };
        Ok(CheckedInbound {
            from: self.from,
            content,
        })
    }
}

/// Stores a simulated inbound message (`POST /v1/sandbox/inbound`) and feeds it to the chatbot.
pub async fn receive_sandbox(
    work: &mut UnitOfWork,
    messaging: &Messaging,
    account_id: &str,
    req: CheckedInbound,
) -> Result<Message, MessageError> {
    let channel = messaging.channel_for(work, account_id).await?;
    let (message, _) = inbound::receive(
        work,
        inbound::Inbound {
            account_id,
            channel,
            from: &req.from,
            content: req.content,
            provider_message_id: None,
        },
    )
    .await?;
    Ok(message)
}

/// The message, or `NotFound`.
pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Message, MessageError> {
    store::get(conn, account_id, id)
        .await?
        .ok_or(MessageError::NotFound)
}

/// One page of the account's messages, newest first, and the cursor of the next.
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    filter: &ListFilter,
) -> Result<(Vec<Message>, Option<String>), MessageError> {
    Ok(store::list(conn, account_id, filter).await?)
}
