//! `/v1/messages` and `/v1/sandbox/inbound` (SPEC §7): send one message, read messages, and
//! simulate a customer writing in.

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::routes::pagination::{page_cursor, page_limit};
use crate::{
    auth::gateway::Caller,
    error::{ApiError, ApiResult},
    idempotency::Idempotency,
    messages::{
        self,
        service::{self, InboundRequest, SendKind, SendMessage, TemplateRequest},
        store::ListFilter,
        ButtonReply, Content, Direction, MediaContent, Message, MessageError, MessageView, Status,
        TemplateContent, TextContent,
    },
    openapi::ErrorBody,
    state::AppState,
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

/// The HTTP answer of each messaging error.
impl From<MessageError> for ApiError {
    fn from(error: MessageError) -> Self {
        match error {
            MessageError::NotFound => ApiError::not_found("message"),
            MessageError::Refused(refusal) => refusal.into(),
            MessageError::Contact(e) => e.into(),
            MessageError::Template(e) => e.into(),
            e @ MessageError::BrokenTemplate(_) => ApiError::Internal(e.into()),
            MessageError::Chatbot(e) => e.into(),
            MessageError::Db(e) => e.into(),
        }
    }
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
    let req = req.check()?;
    let mut work = idem.begin(&state).await?;
    let view = service::send(&mut work, &state.messaging, &caller.account_id, req)
        .await?
        .view();
    idem.commit(work, StatusCode::ACCEPTED, &view).await?;
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
    let message = service::get(&mut conn, &caller.account_id, &id).await?;
    Ok(Json(message.view()))
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

impl ListQuery {
    /// The filter the query asks for, or the first parameter that is wrong (`direction`,
    /// `status`, `cursor`, `limit`, in that order); an empty parameter filters nothing.
    fn filter(self) -> Result<ListFilter, ApiError> {
        let direction = self
            .direction
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|d| {
                Direction::parse(d).ok_or_else(|| {
                    ApiError::bad_request("invalid_query", "direction: outbound or inbound")
                })
            })
            .transpose()?;
        Ok(ListFilter {
            contact_id: self.contact_id.filter(|s| !s.is_empty()),
            status: parse_status(self.status.as_deref())?,
            direction,
            batch_id: self.batch_id.filter(|s| !s.is_empty()),
            cursor: page_cursor(self.cursor, "msg")?,
            limit: page_limit(self.limit)?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub data: Vec<MessageView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl MessageList {
    pub fn new(messages: &[Message], next_cursor: Option<String>) -> Self {
        Self {
            data: messages.iter().map(Message::view).collect(),
            next_cursor,
        }
    }
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
    let filter = query.filter()?;
    let mut conn = state.db.acquire().await?;
    let (messages, next_cursor) = service::list(&mut conn, &caller.account_id, &filter).await?;
    Ok(Json(MessageList::new(&messages, next_cursor)))
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
    let req = req.check()?;
    let mut work = idem.begin(&state).await?;
    let view = service::receive_sandbox(&mut work, &state.messaging, &caller.account_id, req)
        .await?
        .view();
    idem.commit(work, StatusCode::ACCEPTED, &view).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
