//! `/admin/webhooks` and `/admin/deliveries` (SPEC §6, §8): the console manages its account's
//! webhook endpoints and reads their delivery log. A secret appears only in the answers of create
//! and rotate-secret. Every query is scoped to the session's account (another account's id is 404).

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::routes::pagination::{page_cursor, page_limit};
use crate::{
    auth::session::AdminSession,
    clock::rfc3339,
    error::{ApiError, ApiResult},
    openapi::ErrorBody,
    state::AppState,
    webhooks::{
        endpoints::{self, Endpoint, LogEntry},
        metrics::Outcome,
        outbox::{AttemptView, DeliveryView},
        service::{EndpointChanges, EndpointError, EndpointInput, Endpoints},
    },
};

/// Log lines shown with an endpoint.
const LOG_LINES: i64 = 20;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/webhooks", get(list).post(create))
        .route(
            "/admin/webhooks/{id}",
            get(fetch).patch(update).delete(remove),
        )
        .route("/admin/webhooks/{id}/rotate-secret", post(rotate_secret))
        .route("/admin/webhooks/{id}/test", post(test))
        .route("/admin/webhooks/{id}/deliveries", get(deliveries))
        .route("/admin/deliveries/{id}/retry", post(retry))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, fetch, update, remove, rotate_secret, test, deliveries, retry),
    components(schemas(
        CreateWebhook,
        UpdateWebhook,
        Endpoint,
        LogEntry,
        CreatedWebhook,
        WebhookDetail,
        WebhookList,
        RotatedSecret,
        TestOutcome,
        DeliveryList,
        DeliveryView,
        AttemptView
    )),
    tags((name = "webhooks", description = "Webhook endpoints and their delivery log (console)"))
)]
pub struct ApiDoc;

/// The HTTP answer of each refusal of the endpoint rules.
impl From<EndpointError> for ApiError {
    fn from(error: EndpointError) -> Self {
        match error {
            EndpointError::NotFound => ApiError::not_found("webhook"),
            EndpointError::DeliveryNotFound => ApiError::not_found("delivery"),
            e @ EndpointError::TestVanished => ApiError::Internal(e.into()),
            EndpointError::Refused(refusal) => refusal.into(),
            EndpointError::Db(e) => e.into(),
        }
    }
}

fn endpoints_of(state: &AppState) -> Endpoints<'_> {
    Endpoints {
        db: &state.db,
        secrets: &state.secrets,
        webhooks: &state.webhooks,
        config: &state.config.webhooks,
    }
}

fn all_events() -> Vec<String> {
    vec![endpoints::ALL_EVENTS.to_string()]
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed: http or https.
    #[schema(example = "https://crm.example.com/hooks/wiz")]
    pub url: String,
    /// Event types to receive, or `["*"]` (the default) for all.
    #[serde(default = "all_events")]
    #[schema(example = json!(["message.delivered", "message.read"]))]
    pub events: Vec<String>,
    /// At most 500 characters.
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// Only the fields present change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    /// `true` re-enables an endpoint the sender disabled (its paused deliveries resume).
    pub enabled: Option<bool>,
}

/// The created endpoint and its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_...`: verify deliveries with it (Standard Webhooks). Not shown again.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDetail {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// Newest first: disabled, enabled, secret rotated.
    pub log: Vec<LogEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub data: Vec<Endpoint>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub id: String,
    /// The new secret, shown this once.
    pub secret: String,
    /// Until then deliveries carry a signature with the previous secret too (RFC 3339).
    pub previous_secret_expires_at: String,
}

/// The outcome of a test delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestOutcome {
    pub delivery_id: String,
    pub event_id: String,
    /// A 2xx answer within the timeout.
    pub success: bool,
    /// `success`, `http_error`, `timeout`, `connect_error`, `blocked` or `gone`.
    pub outcome: String,
    pub status_code: Option<u16>,
    pub latency_ms: i64,
    /// The first 1 KiB of the response body.
    pub response: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub data: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1–200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// `pending`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// e.g. `message.read`.
    pub event_type: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/admin/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    params(PageParams),
    responses((status = 200, body = WebhookList)),
    security(("session" = []))
)]
async fn list(
    State(state): State<AppState>,
    session: AdminSession,
    QueryParams(query): QueryParams<PageParams>,
) -> ApiResult<Json<WebhookList>> {
    let limit = page_limit(query.limit)?;
    let cursor = page_cursor(query.cursor, "whk")?;
    let (data, next_cursor) = endpoints_of(&state)
        .list(&session.account_id, cursor.as_deref(), limit)
        .await?;
    Ok(Json(WebhookList { data, next_cursor }))
}

#[utoipa::path(
    post, path = "/admin/webhooks", operation_id = "createWebhook", tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, body = CreatedWebhook),
        (status = 400, description = "`invalid_url`, `invalid_events`, `invalid_description`, `invalid_body`", body = ErrorBody),
        (status = 422, description = "`webhook_url_not_allowed`: an address of the IANA special-purpose registries (private, loopback, link-local, NAT64, 6to4, Teredo, documentation, reserved, ...) while the SSRF guard is on; `too_many_webhook_endpoints`: the account has `account_limits.max_webhook_endpoints` endpoints already (default 20)", body = ErrorBody),
    ),
    security(("session" = []))
)]
async fn create(
    State(state): State<AppState>,
    session: AdminSession,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<CreatedWebhook>)> {
    let CreateWebhook {
        url,
        events,
        description,
        enabled,
    } = body;
    let (endpoint, secret) = endpoints_of(&state)
        .create(
            &session.account_id,
            EndpointInput {
                url,
                events,
                description,
                enabled,
            },
            state.config.account_limits.max_webhook_endpoints,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            endpoint,
            secret: secret.expose().to_string(),
        }),
    ))
}

#[utoipa::path(
    get, path = "/admin/webhooks/{id}", operation_id = "getWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "whk_...")),
    responses((status = 200, body = WebhookDetail), (status = 404, body = ErrorBody)),
    security(("session" = []))
)]
async fn fetch(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<WebhookDetail>> {
    let (endpoint, log) = endpoints_of(&state)
        .get(&session.account_id, &id, LOG_LINES)
        .await?;
    Ok(Json(WebhookDetail { endpoint, log }))
}

#[utoipa::path(
    patch, path = "/admin/webhooks/{id}", operation_id = "updateWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "whk_...")),
    request_body = UpdateWebhook,
    responses((status = 200, body = Endpoint), (status = 404, body = ErrorBody)),
    security(("session" = []))
)]
async fn update(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<UpdateWebhook>,
) -> ApiResult<Json<Endpoint>> {
    let UpdateWebhook {
        url,
        events,
        description,
        enabled,
    } = body;
    let endpoint = endpoints_of(&state)
        .update(
            &session.account_id,
            &id,
            EndpointChanges {
                url,
                events,
                description,
                enabled,
            },
        )
        .await?;
    Ok(Json(endpoint))
}

#[utoipa::path(
    delete, path = "/admin/webhooks/{id}", operation_id = "deleteWebhook", tag = "webhooks",
    params(("id" = String, Path, description = "whk_...")),
    responses((status = 204, description = "deleted with its delivery log"), (status = 404, body = ErrorBody)),
    security(("session" = []))
)]
async fn remove(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    endpoints_of(&state)
        .delete(&session.account_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/admin/webhooks/{id}/rotate-secret", operation_id = "rotateWebhookSecret", tag = "webhooks",
    params(("id" = String, Path, description = "whk_...")),
    responses((status = 200, body = RotatedSecret), (status = 404, body = ErrorBody)),
    security(("session" = []))
)]
async fn rotate_secret(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<RotatedSecret>> {
    let (secret, until) = endpoints_of(&state)
        .rotate_secret(&session.account_id, &id)
        .await?;
    Ok(Json(RotatedSecret {
        id,
        secret: secret.expose().to_string(),
        previous_secret_expires_at: rfc3339(until),
    }))
}

#[utoipa::path(
    post, path = "/admin/webhooks/{id}/test", operation_id = "sendWebhookTestEvent", tag = "webhooks",
    params(("id" = String, Path, description = "whk_...")),
    responses(
        (status = 200, description = "the attempt was made (see `success`)", body = TestOutcome),
        (status = 404, body = ErrorBody),
        (status = 429, description = "`endpoint_busy`: the endpoint already has \
            `webhooks.max_in_flight_per_endpoint` attempts in flight", body = ErrorBody),
    ),
    security(("session" = []))
)]
async fn test(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<TestOutcome>> {
    let attempt = endpoints_of(&state).test(&session.account_id, &id).await?;
    let result = attempt.result;
    Ok(Json(TestOutcome {
        delivery_id: attempt.delivery_id,
        event_id: attempt.event_id,
        success: result.outcome == Outcome::Success,
        outcome: result.outcome.as_str().to_string(),
        status_code: result.status_code,
        latency_ms: result.latency_ms,
        response: result.response,
        error: result.error,
    }))
}

#[utoipa::path(
    get, path = "/admin/webhooks/{id}/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks",
    params(("id" = String, Path, description = "whk_..."), DeliveryParams),
    responses((status = 200, body = DeliveryList), (status = 404, body = ErrorBody)),
    security(("session" = []))
)]
async fn deliveries(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<DeliveryParams>,
) -> ApiResult<Json<DeliveryList>> {
    let endpoints = endpoints_of(&state);
    let log = endpoints
        .delivery_log(&session.account_id, &id, query.status, query.event_type)
        .await?;
    let (data, next_cursor) = endpoints
        .deliveries(
            log,
            page_cursor(query.cursor, "dlv")?,
            page_limit(query.limit)?,
        )
        .await?;
    Ok(Json(DeliveryList { data, next_cursor }))
}

#[utoipa::path(
    post, path = "/admin/deliveries/{id}/retry", operation_id = "retryWebhookDelivery", tag = "webhooks",
    params(("id" = String, Path, description = "dlv_...")),
    responses(
        (status = 202, description = "a new attempt is due now", body = DeliveryView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`endpoint_disabled`", body = ErrorBody),
    ),
    security(("session" = []))
)]
async fn retry(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<(StatusCode, Json<DeliveryView>)> {
    let view = endpoints_of(&state).retry(&session.account_id, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}
