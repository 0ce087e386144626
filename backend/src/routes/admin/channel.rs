//! `/admin/channel`: the account's channel settings (simulated, or the WhatsApp Cloud API with
//! its ids and credentials) and the provider connection test. Credentials are write-only: the
//! answers show them masked.

use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use utoipa::OpenApi;

use crate::routes::extract::JsonBody;
use crate::{
    auth::session::AdminSession,
    channel::{
        cloud::ConnectionReport,
        settings::{self, ChannelInput, ChannelKind, ChannelView, SettingsError},
    },
    clock::now_ms,
    error::{ApiError, ApiResult},
    openapi::ErrorBody,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/channel", get(fetch).put(save))
        .route("/admin/channel/test", post(test))
}

#[derive(OpenApi)]
#[openapi(
    paths(fetch, save, test),
    components(schemas(ChannelInput, ChannelView, ChannelKind, ConnectionReport)),
    tags((name = "admin: channel", description = "The account's messaging channel (console session)"))
)]
pub struct ApiDoc;

/// The HTTP answer of a channel settings failure.
impl From<SettingsError> for ApiError {
    fn from(error: SettingsError) -> Self {
        match error {
            SettingsError::Refused(refusal) => refusal.into(),
            SettingsError::Db(e) => e.into(),
            unsealed @ SettingsError::Unsealed(_) => ApiError::Internal(unsealed.into()),
        }
    }
}

/// Get the channel settings
///
/// Credentials are masked: the access token as `••••` and its last four characters, the app
/// secret as `••••••••`.
#[utoipa::path(
    get, path = "/admin/channel", operation_id = "getChannelSettings", tag = "admin: channel",
    responses((status = 200, body = ChannelView), (status = 401, body = ErrorBody))
)]
pub async fn fetch(
    State(state): State<AppState>,
    session: AdminSession,
) -> ApiResult<Json<ChannelView>> {
    let mut conn = state.db.acquire().await?;
    let stored = settings::get(&mut conn, &session.account_id).await?;
    Ok(Json(settings::view(&session.account_id, stored.as_ref())))
}

/// Save the channel settings
///
/// `simulated` or `whatsapp_cloud`. Credentials left out keep their stored value; the first
/// `whatsapp_cloud` configuration needs all four fields. New outbound messages use the new
/// channel; messages already accepted finish on the one they were accepted for.
#[utoipa::path(
    put, path = "/admin/channel", operation_id = "saveChannelSettings", tag = "admin: channel",
    request_body = ChannelInput,
    responses(
        (status = 200, body = ChannelView),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`csrf_failed`", body = ErrorBody),
        (status = 422, description = "`invalid_channel_settings`", body = ErrorBody),
    )
)]
pub async fn save(
    State(state): State<AppState>,
    session: AdminSession,
    JsonBody(input): JsonBody<ChannelInput>,
) -> ApiResult<Json<ChannelView>> {
    let mut tx = state.db.begin().await?;
    let stored = settings::save(
        &mut tx,
        &state.secrets,
        &session.account_id,
        input,
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    state.messaging.cloud.invalidate(&session.account_id);
    tracing::info!(kind = stored.kind.as_str(), "channel settings saved");
    Ok(Json(settings::view(&session.account_id, Some(&stored))))
}

/// Test the connection to the provider
///
/// Reads the phone number's record from the WhatsApp Cloud API with the stored token and reports
/// what Meta answered (its error object when it refused).
#[utoipa::path(
    post, path = "/admin/channel/test", operation_id = "testChannelConnection", tag = "admin: channel",
    responses(
        (status = 200, body = ConnectionReport),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`csrf_failed`", body = ErrorBody),
        (status = 422, description = "`channel_not_configured`", body = ErrorBody),
    )
)]
pub async fn test(
    State(state): State<AppState>,
    session: AdminSession,
) -> ApiResult<Json<ConnectionReport>> {
    let cloud = {
        let mut conn = state.db.acquire().await?;
        settings::get(&mut conn, &session.account_id)
            .await?
            .map(|s| s.cloud(&session.account_id, &state.secrets))
            .transpose()?
            .flatten()
    };
    let Some(cloud) = cloud else {
        return Err(ApiError::unprocessable(
            "channel_not_configured",
            "save the WhatsApp Cloud API settings (phone number id, WABA id, token, app secret) first",
        ));
    };
    Ok(Json(state.messaging.cloud.test_connection(&cloud).await))
}
