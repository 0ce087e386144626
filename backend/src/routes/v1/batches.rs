//! `/v1/messages/bulk` and `/v1/batches/...` (SPEC §7): bulk sends and their progress.

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use super::messages::{parse_status, MessageList};
use crate::routes::extract::{JsonBody, PathParams, QueryParams};
use crate::routes::pagination::{page_cursor, page_limit};
use crate::{
    auth::gateway::Caller,
    batches::{
        service, BatchError, BatchStatus, BatchView, BulkAccepted, BulkKind, BulkRequest,
        BulkTemplate, BulkText, Counts, Recipient, Rejection,
    },
    db::Page,
    error::{ApiError, ApiResult},
    idempotency::Idempotency,
    messages::Status,
    openapi::ErrorBody,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/messages/bulk", post(bulk))
        .route("/v1/batches/{id}", get(fetch))
        .route("/v1/batches/{id}/messages", get(batch_messages))
        .route("/v1/batches/{id}/cancel", post(cancel))
}

#[derive(OpenApi)]
#[openapi(
    paths(bulk, fetch, batch_messages, cancel),
    components(schemas(
        BulkRequest, BulkKind, BulkText, BulkTemplate, Recipient, BulkAccepted, Rejection,
        BatchView, BatchStatus, Counts
    )),
    tags((name = "bulk", description = "Send one message to up to 10,000 recipients"))
)]
pub struct ApiDoc;

/// The HTTP answer of each batch error.
impl From<BatchError> for ApiError {
    fn from(error: BatchError) -> Self {
        match error {
            BatchError::NotFound => ApiError::not_found("batch"),
            BatchError::Refused(refusal) => refusal.into(),
            BatchError::Template(e) => e.into(),
            BatchError::Message(e) => e.into(),
            BatchError::Db(e) => e.into(),
        }
    }
}

/// Send in bulk
///
/// Validates every recipient first: the valid ones are accepted (stored with their rendered
/// content, then sent at the channel's pace), each invalid one is reported by index. With
/// `dry_run` nothing is stored (answer 200, `batch_id` null). If every recipient is rejected the
/// answer is 422 `no_valid_recipients`.
#[utoipa::path(
    post, path = "/v1/messages/bulk", operation_id = "sendBulkMessages", tag = "bulk",
    request_body = BulkRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body get the first answer (24 h)")),
    responses(
        (status = 202, description = "Batch accepted", body = BulkAccepted),
        (status = 200, description = "Dry run: validation only", body = BulkAccepted),
        (status = 400, body = ErrorBody),
        (status = 422, description = "`no_recipients`, `too_many_recipients`, `template_not_found`, `no_valid_recipients`, ...", body = ErrorBody),
    )
)]
pub async fn bulk(
    State(state): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    JsonBody(req): JsonBody<BulkRequest>,
) -> ApiResult<(StatusCode, Json<BulkAccepted>)> {
    let req = service::prepare(&state.db, &caller.account_id, req).await?;
    let mut work = idem.begin(&state).await?;
    let answer = service::accept(&mut work, &state.messaging, &caller.account_id, req).await?;
    if answer.dry_run {
        // Nothing is stored, not even the idempotency key: a dry run can be repeated freely.
        work.rollback().await?;
        return Ok((StatusCode::OK, Json(answer)));
    }
    idem.commit(work, StatusCode::ACCEPTED, &answer).await?;
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

/// Get a batch
///
/// Status, total and counts by message status (they always add up to `total`; cancelled
/// messages count as `failed`), progress and times.
#[utoipa::path(
    get, path = "/v1/batches/{id}", operation_id = "getBatch", tag = "bulk",
    params(("id" = String, Path, description = "`bat_...`")),
    responses((status = 200, body = BatchView), (status = 404, body = ErrorBody))
)]
pub async fn fetch(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<BatchView>> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(
        service::view(&mut conn, &caller.account_id, &id).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchMessagesQuery {
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Only messages in this status.
    pub status: Option<String>,
}

impl BatchMessagesQuery {
    /// The status and the page asked for, or the first parameter that is wrong (limit, cursor,
    /// status, in that order).
    fn page(self) -> Result<(Option<Status>, Page), ApiError> {
        let limit = page_limit(self.limit)?;
        let cursor = page_cursor(self.cursor, "msg")?;
        let status = parse_status(self.status.as_deref())?;
        Ok((status, Page { limit, cursor }))
    }
}

/// List a batch's messages
///
/// In recipient order, each with its `index` in the request and your `reference`.
#[utoipa::path(
    get, path = "/v1/batches/{id}/messages", operation_id = "listBatchMessages", tag = "bulk",
    params(("id" = String, Path, description = "`bat_...`"), BatchMessagesQuery),
    responses(
        (status = 200, body = MessageList),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn batch_messages(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    QueryParams(query): QueryParams<BatchMessagesQuery>,
) -> ApiResult<Json<MessageList>> {
    let (status, page) = query.page()?;
    let mut conn = state.db.acquire().await?;
    let (messages, next_cursor) =
        service::messages_page(&mut conn, &caller.account_id, &id, status, &page).await?;
    Ok(Json(MessageList::new(&messages, next_cursor)))
}

/// Cancel a batch
///
/// Every message not yet handed to the channel becomes `failed` with error
/// `batch_cancelled` (one `message.failed` each); messages already handed over finish
/// normally. The batch becomes `cancelled` and `batch.completed` is emitted with that status.
/// Cancelling a cancelled batch changes nothing; a completed one is 409 `batch_completed`.
#[utoipa::path(
    post, path = "/v1/batches/{id}/cancel", operation_id = "cancelBatch", tag = "bulk",
    params(("id" = String, Path, description = "`bat_...`")),
    responses(
        (status = 200, body = BatchView),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    idem: Idempotency,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<BatchView>> {
    let mut work = idem.begin(&state).await?;
    let view = service::cancel(&mut work, &caller.account_id, &id).await?;
    idem.commit(work, StatusCode::OK, &view).await?;
    Ok(Json(view))
}
