//! `GET /v1/templates` (SPEC §7): the account's message templates (managed in `/admin/templates`).

use axum::{extract::State, routing::get, Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::routes::extract::QueryParams;
use crate::routes::pagination::{page_cursor, page_limit};
use crate::{
    auth::gateway::Caller,
    error::ApiResult,
    openapi::ErrorBody,
    state::AppState,
    templates::{store, TemplateView},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/templates", get(list))
}

#[derive(OpenApi)]
#[openapi(
    paths(list),
    components(schemas(TemplateView, TemplateList)),
    tags((name = "templates", description = "Message templates with {{variables}}"))
)]
pub struct ApiDoc;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub data: Vec<TemplateView>,
    pub next_cursor: Option<String>,
}

/// The account's templates in creation order (shared by `/v1` and `/admin`).
pub async fn list_for(
    state: &AppState,
    account_id: &str,
    query: PageQuery,
) -> ApiResult<Json<TemplateList>> {
    let limit = page_limit(query.limit)?;
    let cursor = page_cursor(query.cursor, "tpl")?;
    let mut conn = state.db.acquire().await?;
    let (templates, next_cursor) =
        store::list(&mut conn, account_id, cursor.as_deref(), limit).await?;
    Ok(Json(TemplateList {
        data: templates.iter().map(|t| t.view()).collect(),
        next_cursor,
    }))
}

/// List templates
#[utoipa::path(
    get, path = "/v1/templates", operation_id = "listTemplates", tag = "templates",
    params(PageQuery),
    responses((status = 200, body = TemplateList), (status = 400, body = ErrorBody))
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<TemplateList>> {
    list_for(&state, &caller.account_id, query).await
}
