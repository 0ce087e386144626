//! `/v1/chatbot/...` and `/v1/contacts/{id}/chatbot/{pause,resume}` (SPEC §7): list flows,
//! start one for a contact, and hand a conversation to a human and back.

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{OpenApi, ToSchema};

use crate::messages::service::resolve_contact;
use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::routes::pagination::PageQuery;
use crate::{
    auth::gateway::Caller,
    channel::window,
    chatbot::{
        engine::{self, Ctx},
        service::{self, Flows},
        Action, BotMessage, ChatbotError, End, FlowList, FlowView, Step, Transition,
    },
    contacts::{self, ChatbotState},
    error::{ApiError, ApiResult},
    idempotency::Idempotency,
    messages::ReplyButton,
    openapi::ErrorBody,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chatbot/flows", get(list))
        .route("/v1/chatbot/flows/{id}/trigger", post(trigger))
        .route("/v1/contacts/{id}/chatbot/pause", post(pause))
        .route("/v1/contacts/{id}/chatbot/resume", post(resume))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, trigger, pause, resume),
    components(schemas(
        FlowView, FlowList, Step, BotMessage, ReplyButton, Action, Transition, End,
        TriggerRequest, TriggerAnswer, ChatbotState
    )),
    tags((name = "chatbot", description = "Chatbot flows and human handover"))
)]
pub struct ApiDoc;

/// The HTTP answer of each refusal of the chatbot's rules (for `/admin/flows` too).
impl From<ChatbotError> for ApiError {
    fn from(error: ChatbotError) -> Self {
        match error {
            ChatbotError::FlowNotFound => ApiError::not_found("flow"),
            ChatbotError::Refused(refusal) => refusal.into(),
            ChatbotError::Contact(e) => e.into(),
            ChatbotError::Db(e) => e.into(),
        }
    }
}

/// List chatbot flows
#[utoipa::path(
    get, path = "/v1/chatbot/flows", operation_id = "listChatbotFlows", tag = "chatbot",
    params(PageQuery),
    responses((status = 200, body = FlowList), (status = 400, body = ErrorBody))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<FlowList>> {
    let page = query.page("flw")?;
    let (flows, next_cursor) = Flows { db: &state.db }
        .list(&caller.account_id, &page)
        .await?;
    Ok(Json(FlowList::new(&flows, next_cursor)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    pub contact_id: Option<String>,
    /// E.164 (the contact is created if new), instead of `contact_id`.
    #[schema(example = "+14155550101")]
    pub to: Option<String>,
    /// Values for the flow texts' `{{variables}}` (strings, numbers, booleans).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: Map<String, Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerAnswer {
    pub flow_id: String,
    pub contact_id: String,
    /// The contact's state afterwards (`null` if the flow ended at once).
    pub chatbot: Option<ChatbotState>,
    /// The bot messages queued.
    pub messages: Vec<String>,
}

/// Start a flow for a contact
///
/// The contact enters the flow's start step (replacing any flow it was in) and gets its first
/// message. 409 `chatbot_paused` while a human has the conversation.
#[utoipa::path(
    post, path = "/v1/chatbot/flows/{id}/trigger", operation_id = "triggerChatbotFlow", tag = "chatbot",
    params(("id" = String, Path, description = "`flw_...`")),
    request_body = TriggerRequest,
    responses(
        (status = 202, body = TriggerAnswer),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    PathParams(id): PathParams<String>,
    JsonBody(req): JsonBody<TriggerRequest>,
) -> ApiResult<(StatusCode, Json<TriggerAnswer>)> {
    service::check_variables(&req.variables)?;
    let account_id = caller.account_id.as_str();
    let mut tx = idem.begin(&state).await?;
    let flow = service::flow(&mut tx, account_id, &id).await?;
    let contact = resolve_contact(
        &mut tx,
        account_id,
        req.to.as_deref(),
        req.contact_id.as_deref(),
    )
    .await?;
    let contact_id = contact.id.clone();
    let channel = state.messaging.channel_for(&mut tx, account_id).await?;
    // A flow's messages are free-form (text and reply buttons): outside WhatsApp's
    // customer-service window the Cloud API would refuse every one of them.
    window::check(
        &mut tx,
        account_id,
        channel,
        &contact.phone,
        &window::FREE_FORM,
    )
    .await?;
    let ctx = Ctx {
        account_id,
        channel,
    };
    let outcome = engine::trigger(&mut tx, ctx, contact, &flow, req.variables).await?;
    let answer = TriggerAnswer {
        flow_id: flow.id,
        contact_id,
        chatbot: outcome.state.clone(),
        messages: outcome.messages.clone(),
    };
    idem.commit(tx, StatusCode::ACCEPTED, &answer).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

async fn pause_or_resume(
    state: &AppState,
    idem: &Idempotency,
    account_id: &str,
    contact_id: &str,
    pause: bool,
) -> ApiResult<Json<Value>> {
    let mut tx = idem.begin(state).await?;
    let contact = contacts::get(&mut tx, account_id, contact_id)
        .await?
        .ok_or(ApiError::not_found("contact"))?;
    let ctx = Ctx {
        account_id,
        channel: state.messaging.channel_for(&mut tx, account_id).await?,
    };
    if pause {
        engine::pause(&mut tx, ctx, &contact).await?;
    } else {
        engine::resume(&mut tx, ctx, &contact).await?;
    }
    let contact = contacts::get(&mut tx, account_id, contact_id)
        .await?
        .ok_or(ApiError::not_found("contact"))?
        .to_json();
    idem.commit(tx, StatusCode::OK, &contact).await?;
    Ok(Json(contact))
}

/// Pause the bot for a contact (human handover)
///
/// While paused the bot stays silent; emits `chatbot.handover`. Answers the contact.
/// 409 `chatbot_not_active` if the contact is in no flow.
#[utoipa::path(
    post, path = "/v1/contacts/{id}/chatbot/pause", operation_id = "pauseContactChatbot", tag = "chatbot",
    params(("id" = String, Path, description = "`con_...`")),
    responses(
        (status = 200, description = "The contact, with its `chatbot` state", body = Object),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    pause_or_resume(&state, &idem, &caller.account_id, &id, true).await
}

/// Resume the bot for a contact
///
/// The bot continues at the step it was on, waiting for the contact's reply; after a flow's
/// handover step the flow ends instead. Answers the contact.
#[utoipa::path(
    post, path = "/v1/contacts/{id}/chatbot/resume", operation_id = "resumeContactChatbot", tag = "chatbot",
    params(("id" = String, Path, description = "`con_...`")),
    responses(
        (status = 200, description = "The contact, with its `chatbot` state", body = Object),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Value>> {
    pause_or_resume(&state, &idem, &caller.account_id, &id, false).await
}
