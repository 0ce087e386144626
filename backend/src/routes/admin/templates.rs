//! `/admin/templates` (SPEC §6): the console manages the account's message templates.

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde::Deserialize;
use utoipa::{OpenApi, ToSchema};

use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::{
    auth::session::AdminSession,
    error::{ApiError, ApiResult},
    openapi::ErrorBody,
    routes::pagination::PageQuery,
    state::AppState,
    templates::{
        service::{NewTemplate, TemplateChanges, TemplateError, Templates},
        TemplateList, TemplateView,
    },
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

/// The HTTP answer of each refusal of the template rules.
impl From<TemplateError> for ApiError {
    fn from(error: TemplateError) -> Self {
        match error {
            TemplateError::NotFound => ApiError::not_found("template"),
            e @ TemplateError::Exists { .. } => {
                ApiError::conflict("template_exists", e.to_string())
            }
            TemplateError::Refused(refusal) => refusal.into(),
            TemplateError::Db(e) => e.into(),
        }
    }
}

fn templates_of(state: &AppState) -> Templates<'_> {
    Templates { db: &state.db }
}

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
    let (templates, next_cursor) = templates_of(&state)
        .list(&session.account_id, &page)
        .await?;
    Ok(Json(TemplateList::new(&templates, next_cursor)))
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
    let TemplateInput {
        name,
        language,
        body,
    } = input;
    let template = templates_of(&state)
        .create(
            &session.account_id,
            NewTemplate {
                name,
                language,
                body,
            },
        )
        .await?;
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
    let template = templates_of(&state).get(&session.account_id, &id).await?;
    Ok(Json(template.view()))
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
    let TemplatePatch {
        name,
        language,
        body,
    } = patch;
    let template = templates_of(&state)
        .update(
            &session.account_id,
            &id,
            TemplateChanges {
                name,
                language,
                body,
            },
        )
        .await?;
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
    templates_of(&state)
        .delete(&session.account_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
