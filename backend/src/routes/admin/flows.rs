//! `/admin/flows` (SPEC §6): the console manages the account's chatbot flows. A flow is
//! validated as a whole on every save (`chatbot::validate`).

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use utoipa::OpenApi;

use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::{
    auth::session::AdminSession,
    chatbot::{service::Flows, FlowInput, FlowList, FlowPatch, FlowView},
    error::ApiResult,
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

fn flows_of(state: &AppState) -> Flows<'_> {
    Flows { db: &state.db }
}

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
    let (flows, next_cursor) = flows_of(&state).list(&session.account_id, &page).await?;
    Ok(Json(FlowList::new(&flows, next_cursor)))
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
    let flow = flows_of(&state).create(&session.account_id, input).await?;
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
    let flow = flows_of(&state).get(&session.account_id, &id).await?;
    Ok(Json(flow.view()))
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
    let flow = flows_of(&state)
        .update(&session.account_id, &id, patch)
        .await?;
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
    flows_of(&state).delete(&session.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
