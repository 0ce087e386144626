//! `/v1/contacts` (SPEC §7): the caller's account's contacts, nothing else.

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::routes::pagination::{page_cursor, page_limit};
use crate::{
    auth::gateway::Caller,
    contacts::{
        service::{self, ContactInput},
        ChatbotState, Contact, ContactError, ContactList, ContactPatch, ContactView,
    },
    db::Page,
    error::{ApiError, ApiResult},
    idempotency::Idempotency,
    openapi::ErrorBody,
    state::AppState,
    unit_of_work::UnitOfWork,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/contacts", get(list).post(create))
        .route("/v1/contacts/{id}", get(fetch).patch(patch).delete(remove))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, create, fetch, patch, remove),
    components(schemas(ContactView, ChatbotState, ContactList, CreateBody, PatchBody)),
    tags((name = "contacts", description = "The account's contacts, one per E.164 number"))
)]
pub struct ApiDoc;

/// The HTTP answer of each contact error.
impl From<ContactError> for ApiError {
    fn from(error: ContactError) -> Self {
        match error {
            ContactError::NotFound => ApiError::not_found("contact"),
            ContactError::Refused(refusal) => refusal.into(),
            e @ ContactError::Vanished => ApiError::Internal(e.into()),
            ContactError::Db(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only contacts with this tag.
    tag: Option<String>,
    /// Case-insensitive substring of the name or the phone number.
    q: Option<String>,
    /// 1 to 200, default 50.
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List contacts (creation order)
#[utoipa::path(
    get, path = "/v1/contacts", operation_id = "listContacts", tag = "contacts",
    params(ListQuery),
    responses((status = 200, body = ContactList), (status = 400, body = ErrorBody))
)]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<ListQuery>,
) -> ApiResult<Json<ContactList>> {
    let page = Page {
        limit: page_limit(query.limit)?,
        cursor: page_cursor(query.cursor, "con")?,
    };
    let mut conn = state.db.acquire().await?;
    let list = service::list(&mut conn, &caller.account_id, query.tag, query.q, page).await?;
    Ok(Json(list))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ContactCreate)]
pub struct CreateBody {
    /// E.164: `+` then 8 to 15 digits.
    #[schema(example = "+14155550101")]
    phone: String,
    /// At most 200 characters.
    #[serde(default)]
    name: Option<String>,
    /// At most 50 tags of 1 to 64 characters.
    #[serde(default)]
    tags: Vec<String>,
    /// At most 50 string, number or boolean values.
    #[serde(default)]
    #[schema(value_type = Object)]
    attributes: Map<String, Value>,
    /// Default `true`.
    #[serde(default)]
    opted_in: Option<bool>,
}

impl From<CreateBody> for ContactInput {
    fn from(body: CreateBody) -> Self {
        ContactInput {
            phone: body.phone,
            name: body.name,
            tags: body.tags,
            attributes: body.attributes,
            opted_in: body.opted_in,
        }
    }
}

/// Create a contact
#[utoipa::path(
    post, path = "/v1/contacts", operation_id = "createContact", tag = "contacts",
    request_body = CreateBody,
    responses(
        (status = 201, body = ContactView),
        (status = 400, body = ErrorBody),
        (status = 409, description = "`contact_exists`", body = ErrorBody),
        (status = 422, description = "`invalid_phone`, `invalid_name`, `invalid_tags`, `invalid_attributes`", body = ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult<(StatusCode, Json<Contact>)> {
    let new = ContactInput::from(body).check()?;
    let mut tx = idem.begin(&state).await?;
    let contact = service::create(&mut tx, &caller.account_id, new).await?;
    idem.commit(tx, StatusCode::CREATED, &contact).await?;
    Ok((StatusCode::CREATED, Json(contact)))
}

/// Get a contact
#[utoipa::path(
    get, path = "/v1/contacts/{id}", operation_id = "getContact", tag = "contacts",
    params(("id" = String, Path, description = "`con_...`")),
    responses((status = 200, body = ContactView), (status = 404, body = ErrorBody))
)]
async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Contact>> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(
        service::get(&mut conn, &caller.account_id, &id).await?,
    ))
}

/// `Some(None)` for an explicit `null`, `None` (via `default`) for an absent field.
fn explicit_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ContactPatch)]
pub struct PatchBody {
    #[serde(default)]
    phone: Option<String>,
    /// `null` removes the name.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    /// Replaces the tags.
    #[serde(default)]
    tags: Option<Vec<String>>,
    /// Merged into the attributes; a `null` value removes that attribute.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    attributes: Option<Map<String, Value>>,
    #[serde(default)]
    opted_in: Option<bool>,
}

impl PatchBody {
    /// The patch and the new phone number, which the patch type leaves out (only the HTTP
    /// PATCH may change a number).
    fn into_patch(self) -> (ContactPatch, Option<String>) {
        let patch = ContactPatch {
            name: self.name,
            tags: self.tags,
            attributes: self.attributes,
            opted_in: self.opted_in,
        };
        (patch, self.phone)
    }
}

/// Update a contact (absent fields stay as they are)
#[utoipa::path(
    patch, path = "/v1/contacts/{id}", operation_id = "updateContact", tag = "contacts",
    params(("id" = String, Path, description = "`con_...`")),
    request_body = PatchBody,
    responses(
        (status = 200, body = ContactView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`contact_exists`", body = ErrorBody),
        (status = 422, body = ErrorBody),
    )
)]
async fn patch(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PatchBody>,
) -> ApiResult<Json<Contact>> {
    let (patch, phone) = body.into_patch();
    let mut tx = UnitOfWork::begin(&state).await?;
    let contact =
        service::update_with_phone(&mut tx, &caller.account_id, &id, patch, phone).await?;
    tx.commit().await?;
    Ok(Json(contact))
}

/// Delete a contact
#[utoipa::path(
    delete, path = "/v1/contacts/{id}", operation_id = "deleteContact", tag = "contacts",
    params(("id" = String, Path, description = "`con_...`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`contact_in_use`: messages refer to it", body = ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    service::delete(&mut tx, &caller.account_id, &id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
