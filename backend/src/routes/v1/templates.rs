//! `GET /v1/templates` (SPEC §7): the account's message templates (managed in `/admin/templates`).

use axum::{extract::State, routing::get, Json, Router};
use utoipa::OpenApi;

use crate::routes::extract::QueryParams;
use crate::routes::pagination::PageQuery;
use crate::{
    auth::gateway::Caller,
    error::ApiResult,
    openapi::ErrorBody,
    state::AppState,
    templates::{service::Templates, TemplateList, TemplateView},
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
    let page = query.page("tpl")?;
    let (templates, next_cursor) = Templates { db: &state.db }
        .list(&caller.account_id, &page)
        .await?;
    Ok(Json(TemplateList::new(&templates, next_cursor)))
}
