//! `/admin/flows` (SPEC §6): the console manages the account's chatbot flows. A flow is
//! validated as a whole on every save (`chatbot::validate`).

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use utoipa::OpenApi;

use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::{
    auth::session::AdminSession,
    chatbot::{self, store, Definition, FlowInput, FlowList, FlowPatch, FlowView},
    clock::now_ms,
    error::{ApiError, ApiResult},
    openapi::ErrorBody,
    routes::pagination::PageQuery,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/flows", get(list).post(create))
        .route("/admin/flows/{id}", get(fetch).patch(patch).delete(remove))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, create, fetch, patch, remove),
    components(schemas(FlowInput, FlowPatch, FlowView, FlowList)),
    tags((name = "admin: flows", description = "Manage chatbot flows (console session)"))
)]
pub struct ApiDoc;

/// List flows
#[utoipa::path(
    get, path = "/admin/flows", operation_id = "listFlows", tag = "admin: flows",
    params(PageQuery),
    security(("session" = [])),
    responses((status = 200, body = FlowList), (status = 401, body = ErrorBody))
)]
pub async fn list(
    State(state): State<AppState>,
    session: AdminSession,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<FlowList>> {
    let page = query.page("flw")?;
    let mut conn = state.db.acquire().await?;
    Ok(Json(
        chatbot::list_page(&mut conn, &session.account_id, &page).await?,
    ))
}

/// Create a flow
///
/// 422 `invalid_flow` naming the problem: unknown start step, a transition or fallback to a
/// step that does not exist, too many buttons, a step with no way out, ...
#[utoipa::path(
    post, path = "/admin/flows", operation_id = "createFlow", tag = "admin: flows",
    request_body = FlowInput,
    security(("session" = [])),
    responses((status = 201, body = FlowView), (status = 422, body = ErrorBody))
)]
pub async fn create(
    State(state): State<AppState>,
    session: AdminSession,
    JsonBody(input): JsonBody<FlowInput>,
) -> ApiResult<(StatusCode, Json<FlowView>)> {
    chatbot::validate_name(&input.name)?;
    let definition = Definition {
        keywords: input.keywords,
        start: input.start,
        steps: input.steps,
    };
    chatbot::validate(&definition)?;
    let mut conn = state.db.acquire().await?;
    let flow = store::insert(
        &mut conn,
        &session.account_id,
        input.name.trim(),
        definition,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(flow.view())))
}

/// Get a flow
#[utoipa::path(
    get, path = "/admin/flows/{id}", operation_id = "getFlow", tag = "admin: flows",
    params(("id" = String, Path, description = "`flw_...`")),
    security(("session" = [])),
    responses((status = 200, body = FlowView), (status = 404, body = ErrorBody))
)]
pub async fn fetch(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<FlowView>> {
    let mut conn = state.db.acquire().await?;
    store::get(&mut conn, &session.account_id, &id)
        .await?
        .map(|f| Json(f.view()))
        .ok_or(ApiError::not_found("flow"))
}

/// Change a flow
///
/// Contacts in the flow continue from their current step; if it no longer exists, their next
/// reply ends the flow for them.
#[utoipa::path(
    patch, path = "/admin/flows/{id}", operation_id = "updateFlow", tag = "admin: flows",
    params(("id" = String, Path, description = "`flw_...`")),
    request_body = FlowPatch,
    security(("session" = [])),
    responses(
        (status = 200, body = FlowView),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
    JsonBody(patch): JsonBody<FlowPatch>,
) -> ApiResult<Json<FlowView>> {
    let mut tx = state.db.begin().await?;
    let mut flow = store::get(&mut tx, &session.account_id, &id)
        .await?
        .ok_or(ApiError::not_found("flow"))?;
    if let Some(name) = patch.name {
        chatbot::validate_name(&name)?;
        flow.name = name.trim().to_string();
    }
    if let Some(keywords) = patch.keywords {
        flow.definition.keywords = keywords;
    }
    if let Some(start) = patch.start {
        flow.definition.start = start;
    }
    if let Some(steps) = patch.steps {
        flow.definition.steps = steps;
    }
    chatbot::validate(&flow.definition)?;
    flow.updated_at = now_ms().max(flow.updated_at);
    store::update(&mut tx, &flow).await?;
    tx.commit().await?;
    Ok(Json(flow.view()))
}

/// Delete a flow
///
/// Contacts in it leave it (their `chatbot` becomes `null`).
#[utoipa::path(
    delete, path = "/admin/flows/{id}", operation_id = "deleteFlow", tag = "admin: flows",
    params(("id" = String, Path, description = "`flw_...`")),
    security(("session" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody))
)]
pub async fn remove(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let deleted = store::delete(&mut tx, &session.account_id, &id).await?;
    tx.commit().await?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("flow"))
    }
}
