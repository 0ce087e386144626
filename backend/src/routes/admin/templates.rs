//! `/admin/templates` (SPEC §6): the console manages the account's message templates.

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::{
    auth::session::AdminSession,
    clock::now_ms,
    error::{ApiError, ApiResult},
    openapi::ErrorBody,
    routes::pagination::PageQuery,
    state::AppState,
    templates::{self, store, TemplateList, TemplateView},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/templates", get(list).post(create))
        .route(
            "/admin/templates/{id}",
            get(fetch).patch(patch).delete(remove),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, create, fetch, patch, remove),
    components(schemas(TemplateInput, TemplatePatch, TemplateView, TemplateList)),
    tags((name = "admin: templates", description = "Manage message templates (console session)"))
)]
pub struct ApiDoc;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// Lowercase letters, digits and `_`.
    #[schema(example = "order_update")]
    pub name: String,
    /// `en`, `es`, `pt_BR`, ...
    #[schema(example = "en")]
    pub language: String,
    /// 1 to 1024 characters with `{{variable}}` placeholders.
    #[schema(example = "Hi {{name}}, order {{order}} has shipped")]
    pub body: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePatch {
    pub name: Option<String>,
    pub language: Option<String>,
    pub body: Option<String>,
}

/// List templates
#[utoipa::path(
    get, path = "/admin/templates", operation_id = "listManagedTemplates", tag = "admin: templates",
    params(PageQuery),
    security(("session" = [])),
    responses((status = 200, body = TemplateList), (status = 401, body = ErrorBody))
)]
pub async fn list(
    State(state): State<AppState>,
    session: AdminSession,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<TemplateList>> {
    let page = query.page("tpl")?;
    let mut conn = state.db.acquire().await?;
    Ok(Json(
        templates::list_page(&mut conn, &session.account_id, &page).await?,
    ))
}

/// Create a template
///
/// 409 `template_exists` if the account has one with this name and language.
#[utoipa::path(
    post, path = "/admin/templates", operation_id = "createTemplate", tag = "admin: templates",
    request_body = TemplateInput,
    security(("session" = [])),
    responses(
        (status = 201, body = TemplateView),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    session: AdminSession,
    JsonBody(input): JsonBody<TemplateInput>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    templates::validate_name(&input.name)?;
    templates::validate_language(&input.language)?;
    templates::validate_body(&input.body)?;
    let mut tx = state.db.begin().await?;
    let template = store::insert(
        &mut tx,
        &session.account_id,
        &input.name,
        &input.language,
        &input.body,
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(template.view())))
}

/// Get a template
#[utoipa::path(
    get, path = "/admin/templates/{id}", operation_id = "getTemplate", tag = "admin: templates",
    params(("id" = String, Path, description = "`tpl_...`")),
    security(("session" = [])),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody))
)]
pub async fn fetch(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<TemplateView>> {
    let mut conn = state.db.acquire().await?;
    store::get(&mut conn, &session.account_id, &id)
        .await?
        .map(|t| Json(t.view()))
        .ok_or(ApiError::not_found("template"))
}

/// Change a template
///
/// Messages already accepted keep the text they were rendered with.
#[utoipa::path(
    patch, path = "/admin/templates/{id}", operation_id = "updateTemplate", tag = "admin: templates",
    params(("id" = String, Path, description = "`tpl_...`")),
    request_body = TemplatePatch,
    security(("session" = [])),
    responses(
        (status = 200, body = TemplateView),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
    JsonBody(patch): JsonBody<TemplatePatch>,
) -> ApiResult<Json<TemplateView>> {
    let mut tx = state.db.begin().await?;
    let mut template = store::get(&mut tx, &session.account_id, &id)
        .await?
        .ok_or(ApiError::not_found("template"))?;
    if let Some(name) = patch.name {
        templates::validate_name(&name)?;
        template.name = name;
    }
    if let Some(language) = patch.language {
        templates::validate_language(&language)?;
        template.language = language;
    }
    if let Some(body) = patch.body {
        templates::validate_body(&body)?;
        template.body = body;
    }
    template.updated_at = now_ms().max(template.updated_at);
    store::update(&mut tx, &template).await?;
    tx.commit().await?;
    Ok(Json(template.view()))
}

/// Delete a template
#[utoipa::path(
    delete, path = "/admin/templates/{id}", operation_id = "deleteTemplate", tag = "admin: templates",
    params(("id" = String, Path, description = "`tpl_...`")),
    security(("session" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody))
)]
pub async fn remove(
    State(state): State<AppState>,
    session: AdminSession,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let mut conn = state.db.acquire().await?;
    if store::delete(&mut conn, &session.account_id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("template"))
    }
}
