//! `/v1/messages` and `/v1/sandbox/inbound` (SPEC §7): send one message, read messages, and
//! simulate a customer writing in.

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::routes::pagination::{page_cursor, page_limit};
use crate::{
    auth::gateway::Caller,
    channel::window,
    contacts::{self, Contact},
    error::{ApiError, ApiResult},
    idempotency::Idempotency,
    ids::new_id,
    messages::{
        self, inbound,
        store::{self, ListFilter, NewMessage},
        ButtonReply, Content, Direction, MediaContent, MessageView, Status, TemplateContent,
        TextContent,
    },
    openapi::ErrorBody,
    state::AppState,
    templates,
    unit_of_work::UnitOfWork,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(send).get(list))
        .route("/v1/messages/{id}", get(fetch))
        .route("/v1/sandbox/inbound", post(inbound))
}

#[derive(OpenApi)]
#[openapi(
    paths(send, fetch, list, inbound),
    components(schemas(
        SendMessage, SendKind, TemplateRequest, InboundRequest, MessageView, MessageList,
        Content, TextContent, TemplateContent, MediaContent, messages::MediaKind,
        messages::InteractiveContent, messages::ReplyButton, ButtonReply, messages::ErrorInfo,
        messages::HistoryEntry, Status, Direction
    )),
    tags((name = "messages", description = "Send messages and follow their status"))
)]
pub struct ApiDoc;

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

/// Send one message
///
/// Validates, renders and queues the message; the channel then moves it through
/// `sent → delivered → read` (or `failed`), each step a `message.*` event.
#[utoipa::path(
    post, path = "/v1/messages", operation_id = "sendMessage", tag = "messages",
    request_body = SendMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body get the first answer (24 h)")),
    responses(
        (status = 202, description = "Queued", body = MessageView),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 422, description = "`template_not_found`, `missing_variables`, `unexpected_variables`, `contact_opted_out`, `invalid_phone`, `outside_customer_service_window` (WhatsApp Cloud API: free-form text or media to a number that has not written in 24 hours; send a template), ...", body = ErrorBody),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBody(req): JsonBody<SendMessage>,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    check_body_matches_type(&req)?;
    if let Some(reference) = &req.reference {
        messages::validate_reference("reference", reference)?;
    }
    match (&req.text, &req.media) {
        (Some(text), _) => messages::validate_text("text.body", &text.body)?,
        (_, Some(media)) => messages::validate_media(media)?,
        _ => {}
    }
    let account_id = caller.account_id.as_str();
    let mut tx = idem.begin(&state).await?;
    let content = match (req.text, req.template, req.media) {
        (Some(text), _, _) => Content::Text(text),
        (_, _, Some(media)) => Content::Media(media),
        (_, Some(t), _) => {
            let template =
                templates::store::find(&mut tx, account_id, &t.name, t.language.as_deref()).await?;
            let compiled = templates::compile(&template.body).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("stored template does not compile: {e}"))
            })?;
            let body = compiled.render(&t.variables)?;
            messages::validate_text("template body (rendered)", &body)?;
            let variables = t
                .variables
                .iter()
                .map(|(k, v)| Ok((k.clone(), templates::variable_text(k, v)?)))
                .collect::<Result<_, ApiError>>()?;
            Content::Template(TemplateContent {
                name: template.name,
                language: template.language,
                variables,
                body,
            })
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
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Get a message
///
/// With its status `history` and, once failed, its `error`.
#[utoipa::path(
    get, path = "/v1/messages/{id}", operation_id = "getMessage", tag = "messages",
    params(("id" = String, Path, description = "`msg_...`")),
    responses(
        (status = 200, body = MessageView),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<MessageView>> {
    let mut conn = state.db.acquire().await?;
    store::get(&mut conn, &caller.account_id, &id)
        .await?
        .map(|m| Json(m.view()))
        .ok_or(ApiError::not_found("message"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub contact_id: Option<String>,
    /// `queued`, `sent`, `delivered`, `read`, `failed` or `received`.
    pub status: Option<String>,
    /// `outbound` or `inbound`.
    pub direction: Option<String>,
    pub batch_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub data: Vec<MessageView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

pub fn parse_status(status: Option<&str>) -> Result<Option<Status>, ApiError> {
    status
        .filter(|s| !s.is_empty())
        .map(|s| {
            Status::parse(s).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    "status: one of queued, sent, delivered, read, failed, received",
                )
            })
        })
        .transpose()
}

/// List messages
///
/// Newest first.
#[utoipa::path(
    get, path = "/v1/messages", operation_id = "listMessages", tag = "messages",
    params(ListQuery),
    responses(
        (status = 200, body = MessageList),
        (status = 400, body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<MessageList>> {
    let direction = query
        .direction
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|d| {
            Direction::parse(d).ok_or_else(|| {
                ApiError::bad_request("invalid_query", "direction: outbound or inbound")
            })
        })
        .transpose()?;
    let filter = ListFilter {
        contact_id: query.contact_id.filter(|s| !s.is_empty()),
        status: parse_status(query.status.as_deref())?,
        direction,
        batch_id: query.batch_id.filter(|s| !s.is_empty()),
        cursor: page_cursor(query.cursor, "msg")?,
        limit: page_limit(query.limit)?,
    };
    let mut conn = state.db.acquire().await?;
    let (messages, next_cursor) = store::list(&mut conn, &caller.account_id, &filter).await?;
    Ok(Json(MessageList {
        data: messages.iter().map(|m| m.view()).collect(),
        next_cursor,
    }))
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

/// Simulate an inbound message
///
/// Stores the message (`received`), emits `message.received` and feeds the chatbot: a reply
/// moves the contact along its flow, a flow keyword starts one.
#[utoipa::path(
    post, path = "/v1/sandbox/inbound", operation_id = "simulateInboundMessage", tag = "messages",
    request_body = InboundRequest,
    responses(
        (status = 202, description = "Stored", body = MessageView),
        (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn inbound(
    State(state): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBody(req): JsonBody<InboundRequest>,
) -> ApiResult<(StatusCode, Json<MessageView>)> {
    contacts::validate_phone_field("from", &req.from)?;
    let content = match (req.text, req.button) {
        (Some(text), None) => {
            messages::validate_text("text", &text)?;
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
    let account_id = caller.account_id.as_str();
    let mut tx = idem.begin(&state).await?;
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
    Ok((StatusCode::ACCEPTED, Json(view)))
}
