//! `/channels/whatsapp/webhook/{account_id}`: where Meta calls back for an account on the
//! WhatsApp Cloud API channel (public, through the gateway, without an API key). The account's
//! app secret authenticates every `POST` by its `X-Hub-Signature-256`, checked on the raw bytes
//! before anything is parsed; the `GET` handshake answers Meta's challenge when the verify token
//! matches. Formats: `channel::cloud::callbacks`.

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, QueryRejection},
        DefaultBodyLimit, Path, Query, State,
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{
    channel::{
        cloud::callbacks::{self, Payload},
        settings::{self, CloudSettings},
    },
    error::{ApiError, ApiResult},
    state::AppState,
};

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new().route(
        "/channels/whatsapp/webhook/{account_id}",
        get(handshake).post(callback).layer(DefaultBodyLimit::max(
            state.config.channel.whatsapp.webhook_max_body_bytes,
        )),
    )
}

/// The account's Cloud API settings; 404 when it has none (no secret to verify with).
async fn settings_of(state: &AppState, account_id: &str) -> ApiResult<CloudSettings> {
    let unknown = || ApiError::not_found("whatsapp channel");
    if account_id.len() > 64 || !account_id.starts_with("acc_") {
        return Err(unknown());
    }
    let mut conn = state.db.acquire().await?;
    let stored = settings::get(&mut conn, account_id)
        .await?
        .ok_or_else(unknown)?;
    stored
        .cloud(account_id, &state.secrets)?
        .ok_or_else(unknown)
}

#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's subscription check: `hub.mode=subscribe` with our verify token → the challenge as
/// plain text; anything else → 403.
async fn handshake(
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    query: Result<Query<Handshake>, QueryRejection>,
) -> ApiResult<Response> {
    let settings = settings_of(&state, &account_id).await?;
    let counter = &state.messaging.cloud.callbacks;
    let Ok(Query(q)) = query else {
        counter.with_label_values(&["handshake_refused"]).inc();
        return Err(ApiError::bad_request(
            "invalid_handshake",
            "expected hub.mode, hub.verify_token and hub.challenge",
        ));
    };
    let token_ok = q.verify_token.as_deref().is_some_and(|t| {
        !settings.verify_token.is_empty()
            && bool::from(t.as_bytes().ct_eq(settings.verify_token.as_bytes()))
    });
    let challenge = q.challenge.unwrap_or_default();
    if q.mode.as_deref() != Some("subscribe") || !token_ok {
        counter.with_label_values(&["handshake_refused"]).inc();
        return Err(ApiError::forbidden(
            "invalid_verify_token",
            "hub.mode must be subscribe and hub.verify_token the one shown in the console",
        ));
    }
    if challenge.is_empty()
        || challenge.len() > 256
        || !challenge.bytes().all(|b| b.is_ascii_graphic())
    {
        counter.with_label_values(&["handshake_refused"]).inc();
        return Err(ApiError::bad_request(
            "invalid_handshake",
            "hub.challenge: 1 to 256 printable characters",
        ));
    }
    counter.with_label_values(&["handshake_ok"]).inc();
    Ok((
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge,
    )
        .into_response())
}

async fn callback(
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    let settings = settings_of(&state, &account_id).await?;
    let counter = &state.messaging.cloud.callbacks;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !callbacks::signature_valid(&settings.app_secret, &body, signature) {
        counter.with_label_values(&["invalid_signature"]).inc();
        return Err(ApiError::unauthorized(
            "invalid_signature",
            "X-Hub-Signature-256 is missing or does not match the body and the app secret",
        ));
    }
    let payload: Payload = serde_json::from_slice(&body).map_err(|e| {
        counter.with_label_values(&["malformed"]).inc();
        ApiError::bad_request("invalid_body", format!("not a webhook payload: {e}"))
    })?;
    if payload.object != "whatsapp_business_account" {
        counter.with_label_values(&["ignored"]).inc();
        return Ok(StatusCode::OK);
    }
    let applied = callbacks::apply(&state, &settings, &payload).await?;
    counter.with_label_values(&["applied"]).inc();
    tracing::debug!(
        statuses = applied.statuses_applied,
        pending = applied.statuses_pending,
        received = applied.messages_received,
        ignored = applied.ignored,
        "whatsapp callback"
    );
    Ok(StatusCode::OK)
}
